"""Res2Net port: timm `res2net50_26w_4s` converts strictly and matches per stage; the family is detected."""

import numpy as np
import pytest

timm = pytest.importorskip("timm")
torch = pytest.importorskip("torch")

from bsa_jax.models import convert
from bsa_jax.models import res2net
from bsa_jax.models.convert import parity
from bsa_jax.models.convert import res2net as res2net_rules


@pytest.fixture(scope="module")
def timm_res2net():
  torch.manual_seed(0)
  return parity.randomize_(timm.create_model("res2net50_26w_4s")).eval()


@pytest.fixture(scope="module")
def converted(timm_res2net):
  return convert.convert_timm_model(timm_res2net)


def _image(size=64, seed=0):
  return np.random.default_rng(seed).normal(size=(2, size, size, 3)).astype(np.float32)


def test_family_and_config_are_read_off_the_state_dict(converted):
  assert converted.family == "res2net"
  assert converted.config == dict(res2net.VARIANTS["res2net50_26w_4s"], widths=(64, 128, 256, 512),
                                  stem_width=64)
  params = converted.variables["params"]
  assert params["layer2_0"]["convs_2"]["kernel"].shape == (3, 3, 52, 52)  # 26w at planes 128
  assert "fc" not in params  # the classifier is skipped


def test_every_stage_matches_timm(timm_res2net, converted):
  diffs = parity.check(timm_res2net, converted, _image())
  print({k: f"{d['max_abs_diff']:.2e} (scale {d['scale']:.1f})" for k, d in diffs.items()})
  assert list(diffs) == ["stem", "stage1", "stage2", "stage3", "stage4"]
  for name, d in diffs.items():
    assert d["max_abs_diff"] <= 1e-4 * max(1.0, d["scale"]), (name, d)


def test_parity_catches_a_swapped_group_conv(timm_res2net, converted):
  """The hierarchy is order-sensitive: exchanging two group convs of one block must break parity."""
  params = converted.variables["params"]
  block = dict(params["layer3_1"])
  block["convs_0"], block["convs_1"] = block["convs_1"], block["convs_0"]
  broken = convert.Converted(converted.family, converted.config, {
      **converted.variables, "params": {**params, "layer3_1": block}})
  diffs = parity.check(timm_res2net, broken, _image())
  assert diffs["stage2"]["max_abs_diff"] <= 1e-4 * max(1.0, diffs["stage2"]["scale"])
  assert diffs["stage3"]["max_abs_diff"] > 1e-2 * diffs["stage3"]["scale"]


def test_a_resnet_state_dict_is_not_taken_for_res2net():
  state_dict = {k: v.numpy() for k, v in timm.create_model("resnet18").state_dict().items()}
  assert convert.detect_family(state_dict) == "resnet"
  with pytest.raises(convert.ConversionError, match="Res2Net"):
    res2net_rules.infer_config(state_dict)


def test_the_test_variant_roundtrips_through_the_converter():
  """Our small variant infers back to itself from its own (torch-layout) shapes."""
  import jax
  import jax.numpy as jnp
  model = res2net.res2net_from_variant("test")
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  flat = convert.common.flatten(shapes["params"])
  state_dict = {}
  for path, leaf in flat.items():  # back to torch names and layouts, enough for `infer_config`
    if path.endswith("kernel"):
      key = path[:-len("/kernel")].replace("/", ".")
      key = key.replace("_conv", ".0").replace("_bn", ".1")
      for stage in range(1, 5):
        key = key.replace(f"layer{stage}_", f"layer{stage}.")
      key = key.replace("convs_", "convs.")
      h, w, i, o = leaf.shape
      state_dict[key + ".weight"] = np.zeros((o, i, h, w), np.float32)
  assert res2net_rules.infer_config(state_dict) == dict(res2net.VARIANTS["test"])
