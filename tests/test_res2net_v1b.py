"""Res2Net v1b (SANet's and LDNet's backbone): timm `res2net50d` converts strictly and matches per stage,
loads into both models' backbones, and the plain-stem alternative loads through the stock converter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

timm = pytest.importorskip("timm")
torch = pytest.importorskip("torch")

from bsa_jax.models import convert
from bsa_jax.models import ldnet
from bsa_jax.models import res2net_v1b
from bsa_jax.models import sanet
from bsa_jax.models.convert import parity
from bsa_jax.models.convert import res2net_v1b as v1b_rules

V1B_BACKBONE = 23_669_352  # official res2net50_v1b_26w_4s without its 2,049,000-parameter classifier


def _image(size=64, seed=0):
  return np.random.default_rng(seed).normal(size=(2, size, size, 3)).astype(np.float32)


def _state_dict(model):
  return {k: convert.common.to_numpy(v) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def timm_v1b():
  torch.manual_seed(0)
  return parity.randomize_(timm.create_model("res2net50d")).eval()


@pytest.fixture(scope="module")
def converted(timm_v1b):
  variables, config = v1b_rules.convert(_state_dict(timm_v1b))
  return convert.Converted(v1b_rules.FAMILY, config, variables)


def _shapes(model):
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))


def test_config_is_read_off_the_state_dict(converted):
  assert converted.family == "res2net_v1b"
  assert converted.config == dict(res2net_v1b.VARIANTS["res2net50_v1b_26w_4s"],
                                  widths=(64, 128, 256, 512), stem_width=32, stem_out=64)
  params = converted.variables["params"]
  assert params["stem_conv1"]["kernel"].shape == (3, 3, 3, 32)
  assert params["layer2_0"]["downsample_conv"]["kernel"].shape == (1, 1, 256, 512)
  assert "fc" not in params
  count = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params))
  assert count == V1B_BACKBONE


def test_every_stage_matches_timm_res2net50d(timm_v1b, converted):
  """Random init with randomised BN affines and statistics, eval mode, 64 px: stem and stages 1-4."""
  model = res2net_v1b.Res2NetV1b(**converted.config)
  ours = jax.jit(lambda v, x: model.apply(v, x, train=False))(converted.variables, _image())
  diffs = parity.compare(parity.timm_features(timm_v1b, _image()),
                         {k: np.asarray(v) for k, v in ours.items()})
  print({k: f"{d['max_abs_diff']:.2e} (scale {d['scale']:.1f})" for k, d in diffs.items()})
  assert list(diffs) == ["stem", "stage1", "stage2", "stage3", "stage4"]
  for name, d in diffs.items():
    assert d["max_abs_diff"] <= 1e-5 * max(1.0, d["scale"]), (name, d)


def test_shortcut_pool_is_torch_avgpool_with_ceil_mode():
  """AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False): 2×2 means; a partial last window
  averages only its real pixels."""
  x = np.random.default_rng(1).normal(size=(1, 8, 8, 4)).astype(np.float32)
  pooled = np.asarray(res2net_v1b.avg_down(jnp.asarray(x), 2))
  assert np.allclose(pooled, x.reshape(1, 4, 2, 4, 2, 4).mean(axis=(2, 4)), atol=1e-6)
  odd = np.asarray(res2net_v1b.avg_down(jnp.asarray(x[:, :7, :7]), 2))  # ceil_mode, pad not counted
  assert odd.shape == (1, 4, 4, 4) and np.allclose(odd[0, 3, 3], x[0, 6, 6], atol=1e-6)


def test_a_plain_stem_state_dict_is_refused():
  plain = _state_dict(timm.create_model("res2net50_26w_4s"))
  assert not v1b_rules.is_deep_stem(plain)
  with pytest.raises(convert.ConversionError, match="deep-stem"):
    v1b_rules.convert(plain)


@pytest.mark.parametrize("module", [sanet, ldnet], ids=["sanet", "ldnet"])
def test_paper_variants_load_the_converted_backbone_strictly(module, converted):
  """The trainer's path (`merge_pretrained` + `pretrained_mapping`) fills exactly `backbone`."""
  shapes = _shapes(module.Model(variant="paper"))
  params, batch_stats = convert.merge_pretrained(
      shapes["params"], shapes["batch_stats"], converted.variables,
      mapping=module.pretrained_mapping(None))
  loaded = convert.common.flatten(converted.variables["params"])
  merged = convert.common.flatten(params["backbone"])
  assert set(merged) == set(loaded)  # the backbone's tree is exactly the converter's
  assert all(np.array_equal(merged[k], v) for k, v in loaded.items())
  assert np.array_equal(batch_stats["backbone"]["stem_bn2"]["var"],
                        converted.variables["batch_stats"]["stem_bn2"]["var"])
  heads = [k for k in params if k != "backbone"]
  assert heads and not any(isinstance(leaf, np.ndarray)  # the heads keep their init
                           for k in heads for leaf in jax.tree.leaves(params[k]))


@pytest.mark.parametrize("module", [sanet, ldnet], ids=["sanet", "ldnet"])
def test_timm_variants_load_the_stock_res2net_converter(module):
  """Variant `timm` takes `bsa_jax.models.convert`'s plain-stem Res2Net; `paper` refuses it."""
  plain = convert.convert_timm_model(timm.create_model("res2net50_26w_4s"))
  shapes = _shapes(module.Model(variant="timm"))
  params, _ = convert.merge_pretrained(shapes["params"], shapes["batch_stats"], plain.variables,
                                       mapping=module.pretrained_mapping(None))
  assert set(convert.common.flatten(params["backbone"])) == set(
      convert.common.flatten(plain.variables["params"]))
  paper = _shapes(module.Model(variant="paper"))
  with pytest.raises(convert.ConversionError):
    convert.merge_pretrained(paper["params"], paper["batch_stats"], plain.variables,
                             mapping=module.pretrained_mapping(None))


def test_the_cli_writes_a_model_init_directory(tmp_path):
  """`python -m bsa_jax.models.convert --timm_model res2net50d` output is what `--config.model_init`
  reads (the converter detects the deep-stem family)."""
  from bsa_jax.models.convert import from_timm
  out = str(tmp_path / "res2net50d")
  from_timm.convert_to_dir("res2net50d", out)  # random init: offline
  meta = convert.read_metadata(out)
  assert meta["family"] == "res2net_v1b" and meta["config"]["stem_width"] == 32
  loaded = convert.load_converted(out)
  shapes = _shapes(sanet.Model(variant="paper"))
  params, _ = convert.merge_pretrained(shapes["params"], shapes["batch_stats"], loaded,
                                       mapping=sanet.pretrained_mapping(None))
  assert np.array_equal(params["backbone"]["layer4_2"]["conv3"]["kernel"],
                        loaded["params"]["layer4_2"]["conv3"]["kernel"])


def test_the_test_variant_roundtrips_through_the_converter():
  """`v1b_test` infers back to itself from its own (torch-layout) shapes."""
  shapes = _shapes(res2net_v1b.backbone_from_variant("v1b_test"))
  torch_names = {"stem_conv1": "conv1.0", "stem_conv2": "conv1.3", "stem_conv3": "conv1.6"}
  state_dict = {}
  for path, leaf in convert.common.flatten(shapes["params"]).items():
    if not path.endswith("kernel"):
      continue
    key = path[:-len("/kernel")].replace("/", ".")
    key = torch_names.get(key, key).replace("downsample_conv", "downsample.1")
    key = key.replace("convs_", "convs.")
    for stage in range(1, 5):
      key = key.replace(f"layer{stage}_", f"layer{stage}.")
    h, w, i, o = leaf.shape
    state_dict[key + ".weight"] = np.zeros((o, i, h, w), np.float32)
  assert v1b_rules.infer_config(state_dict) == dict(res2net_v1b.VARIANTS["v1b_test"])
