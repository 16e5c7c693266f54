"""ResNet/ResNeXt port: golden sizes, BatchNorm convention, and per-stage parity with timm (eval BN)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from bsa_jax.models import convert, resnext  # noqa: E402
from bsa_jax.models.convert import parity  # noqa: E402

# Max abs diff allowed, relative to the reference's max |x| when that exceeds 1 (README quotes it;
# measured at most 1.3e-6 for ResNet-18 and ResNeXt-50).
TOL = 1e-5


def param_shapes(model):
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))


@pytest.mark.parametrize("variant, expected", [
    ("resnet18", 11_689_512 - 513_000),  # timm/torchvision totals minus the ImageNet fc
    ("resnet50", 25_557_032 - 2_049_000),
    ("resnext50_32x4d", 25_028_904 - 2_049_000),
])
def test_param_counts(variant, expected):
  shapes = param_shapes(resnext.resnet_from_variant(variant))
  assert sum(np.prod(x.shape) for x in jax.tree.leaves(shapes["params"])) == expected


def test_names_and_grouped_kernel_shapes():
  shapes = param_shapes(resnext.resnet_from_variant("resnext50_32x4d"))
  block = shapes["params"]["layer1_0"]
  assert block["conv2"]["kernel"].shape == (3, 3, 4, 128)  # torch (128, 4, 3, 3), groups=32
  assert block["downsample_conv"]["kernel"].shape == (1, 1, 64, 256)
  assert set(shapes["batch_stats"]["layer1_0"]["downsample_bn"]) == {"mean", "var"}
  assert "downsample_conv" not in shapes["params"]["layer1_1"]  # identity shortcut


def test_batch_norm_is_torch_convention():
  """momentum 0.9 = torch 0.1; statistics live in 'batch_stats'; eps 1e-5."""
  bn = resnext.batch_norm(True, dtype=jnp.float32, name="bn")
  x = np.random.RandomState(0).randn(4, 3, 3, 2).astype(np.float32) + 5.0
  variables = bn.init(jax.random.key(0), x)
  _, updates = bn.apply(variables, x, mutable=["batch_stats"])
  np.testing.assert_allclose(updates["batch_stats"]["mean"], 0.1 * x.mean((0, 1, 2)), rtol=1e-5)
  assert bn.epsilon == 1e-5


def parity_report(timm_name: str, image_hw, **timm_kwargs) -> dict:
  model = timm.create_model(timm_name, pretrained=False, **timm_kwargs)
  parity.randomize_(model, seed=1).eval()  # non-trivial BN affine and running stats
  converted = convert.convert_timm_model(model)
  image = np.random.RandomState(0).randn(2, *image_hw, 3).astype(np.float32)
  report = parity.check(model, converted, image)
  print(timm_name, timm_kwargs, {k: f"{v['max_abs_diff']:.1e} (|x|<={v['scale']:.1f})"
                                 for k, v in report.items()})
  return report


@pytest.mark.parametrize("timm_name, image_hw, timm_kwargs", [
    ("resnet18", (64, 64), {}),
    ("resnext50_32x4d", (64, 80), {}),
    # Narrow widths at odd sizes: same code path as resnet50 / a scratch ResNeXt, much cheaper.
    ("resnet50", (61, 75), dict(channels=(16, 32, 64, 128), layers=(2, 1, 1, 1))),
    ("resnet26", (45, 37), dict(channels=(32, 64, 128, 256), layers=(1, 1, 1, 1), cardinality=8,
                                base_width=8)),
])
def test_parity_with_timm(timm_name, image_hw, timm_kwargs):
  report = parity_report(timm_name, image_hw, **timm_kwargs)
  for name, r in report.items():
    assert r["max_abs_diff"] <= TOL * max(1.0, r["scale"]), (name, report)


def test_parity_catches_wrong_running_stats():
  """The parity check is sensitive to BN statistics (timm's defaults 0/1 would hide a bad mapping)."""
  model = timm.create_model("resnet18", pretrained=False, channels=(8, 8, 8, 8))
  parity.randomize_(model, seed=1).eval()
  converted = convert.convert_timm_model(model)
  stats = converted.variables["batch_stats"]["layer1_0"]["bn1"]
  stats["mean"], stats["var"] = np.zeros_like(stats["mean"]), np.ones_like(stats["var"])
  report = parity.check(model, converted, np.ones((1, 32, 32, 3), np.float32))
  assert report["stage1"]["max_abs_diff"] > 1e-2
