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


@pytest.fixture(scope="module")
def reference(timm_res2net):
  return parity.timm_features(timm_res2net, _image())


@pytest.fixture(scope="module")
def ours(converted):
  """Our features (float32, eval mode) for any variables of the converted tree, compiled once."""
  import jax
  model = converted.model()
  apply = jax.jit(lambda variables, x: model.apply(variables, x, train=False))
  return lambda variables: {k: np.asarray(v) for k, v in apply(variables, _image()).items()}


def test_family_and_config_are_read_off_the_state_dict(converted):
  assert converted.family == "res2net"
  assert converted.config == dict(res2net.VARIANTS["res2net50_26w_4s"], widths=(64, 128, 256, 512),
                                  stem_width=64)
  params = converted.variables["params"]
  assert params["layer2_0"]["convs_2"]["kernel"].shape == (3, 3, 52, 52)  # 26w at planes 128
  assert "fc" not in params  # the classifier is skipped


def test_every_stage_matches_timm(converted, reference, ours):
  """Random init with randomised BN affines and statistics (`parity.randomize_`), eval mode, 64 px."""
  diffs = parity.compare(reference, ours(converted.variables))
  print({k: f"{d['max_abs_diff']:.2e} (scale {d['scale']:.1f})" for k, d in diffs.items()})
  assert list(diffs) == ["stem", "stage1", "stage2", "stage3", "stage4"]
  for name, d in diffs.items():
    assert d["max_abs_diff"] <= 1e-4 * max(1.0, d["scale"]), (name, d)


def test_parity_catches_a_swapped_group_conv(converted, reference, ours):
  """The hierarchy is order-sensitive: exchanging two group convs of one block must break parity."""
  params = converted.variables["params"]
  block = dict(params["layer3_1"])
  block["convs_0"], block["convs_1"] = block["convs_1"], block["convs_0"]
  diffs = parity.compare(reference, ours({**converted.variables,
                                          "params": {**params, "layer3_1": block}}))
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


def test_pranet_loads_the_converted_backbone_strictly(converted):
  """The trainer's path: `merge_pretrained` with `pranet.pretrained_mapping` fills exactly `backbone`."""
  import jax
  import jax.numpy as jnp
  from bsa_jax.models import pranet
  model = pranet.Model(variant="paper")
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  params, batch_stats = convert.merge_pretrained(
      shapes["params"], shapes["batch_stats"], converted.variables,
      mapping=pranet.pretrained_mapping(None))
  loaded = convert.common.flatten(converted.variables["params"])
  merged = convert.common.flatten(params["backbone"])
  assert set(merged) == set(loaded)
  assert all(np.array_equal(merged[k], v) for k, v in loaded.items())
  assert np.array_equal(batch_stats["backbone"]["layer4_2"]["bns_1"]["var"],
                        converted.variables["batch_stats"]["layer4_2"]["bns_1"]["var"])
  assert not isinstance(params["decoder"]["conv5"]["kernel"], np.ndarray)  # heads keep their init
  with pytest.raises(convert.ConversionError):  # the tiny variant's backbone is not Res2Net-50
    tiny = jax.eval_shape(pranet.Model(variant="tiny").init, jax.random.key(0),
                          jnp.zeros((1, 64, 64, 3)))
    convert.merge_pretrained(tiny["params"], tiny["batch_stats"], converted.variables,
                             mapping=pranet.pretrained_mapping(None))
