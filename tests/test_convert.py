"""The strict timm -> Flax converter: mapping rules, error reports, layouts, file formats, CLI."""

import argparse
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from timm.models import swin_transformer as timm_swin  # noqa: E402

from bsa_jax.models import convert, swin  # noqa: E402
from bsa_jax.models.convert import common, parity  # noqa: E402
from conftest import run_in_process  # noqa: E402

# A narrow Swin with every key kind (stage-0 has no downsample, stages 1-3 do), built at 64 px so the
# last two stages have timm-shrunk windows (4x4 and 2x2) as well.
SWIN_KWARGS = dict(embed_dim=16, num_heads=[1, 2, 2, 4], depths=[1, 1, 2, 1], img_size=64)
RESNET_KWARGS = dict(channels=[8, 16, 32, 64])


def numpy_state_dict(model) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def timm_swin_model():
  torch.manual_seed(0)
  return parity.randomize_(timm.create_model("swin_tiny_patch4_window7_224", **SWIN_KWARGS)).eval()


@pytest.fixture(scope="module")
def swin_state_dict(timm_swin_model):
  return numpy_state_dict(timm_swin_model)


def flat(tree):
  return common.flatten(tree)


def assert_trees_equal(a, b):
  fa, fb = flat(a), flat(b)
  assert fa.keys() == fb.keys()
  for k in fa:
    np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


# ----------------------------------------------------------------------------- mapping rules ----

def test_mechanical_leaf_rules():
  conv = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # OIHW
  assert common.map_leaf("layer1.0.conv2.weight", conv)[:2] == ("params", "layer1_0/conv2/kernel")
  np.testing.assert_array_equal(common.map_leaf("c.weight", conv)[2], conv.transpose(2, 3, 1, 0))
  dense = np.ones((6, 4), np.float32)
  assert common.map_leaf("layers.2.blocks.10.attn.qkv.weight", dense)[1] == (
      "layers_2/blocks_10/attn/qkv/kernel")
  assert common.map_leaf("x.weight", dense)[2].shape == (4, 6)
  assert common.map_leaf("norm.weight", np.ones(3))[1] == "norm/scale"
  assert common.map_leaf("bn1.running_var", np.ones(3))[:2] == ("batch_stats", "bn1/var")
  assert common.map_leaf("bn1.running_mean", np.ones(3))[:2] == ("batch_stats", "bn1/mean")
  assert common.map_leaf("layers.0.blocks.0.attn.relative_position_bias_table",
                         np.ones((169, 3)))[1] == "layers_0/blocks_0/attn/relative_position_bias_table"
  assert convert.resnet.rename("layer2.0.downsample.1.weight") == "layer2.0.downsample_bn.weight"


def test_swin_conversion_matches_our_tree(swin_state_dict):
  converted = convert.convert_state_dict(swin_state_dict)
  assert converted.family == "swin"
  assert converted.config["window_size"] == 7 and converted.config["depths"] == (1, 1, 2, 1)
  expected = jax.eval_shape(converted.model().init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  assert {k: v.shape for k, v in flat(converted.variables).items()} == {
      k: v.shape for k, v in flat(expected).items()}
  # Stage 3 ran with a 2x2 window in timm: its 3x3-row table sits in the centre of our 13x13 one.
  ours = converted.variables["params"]["layers_3"]["blocks_0"]["attn"]["relative_position_bias_table"]
  theirs = swin_state_dict["layers.3.blocks.0.attn.relative_position_bias_table"]
  np.testing.assert_array_equal(ours.reshape(13, 13, -1)[5:8, 5:8].reshape(9, -1), theirs)
  assert np.count_nonzero(ours) == theirs.size


# ------------------------------------------------------------------------- strict errors ----

def test_unmapped_keys_are_all_listed(swin_state_dict):
  state_dict = dict(swin_state_dict)
  state_dict["layers.1.blocks.0.attn.extra_scale"] = np.ones(2, np.float32)
  state_dict["layers.9.blocks.0.norm1.weight"] = np.ones(2, np.float32)
  with pytest.raises(convert.ConversionError) as e:
    convert.convert_state_dict(state_dict)
  message = str(e.value)
  assert "unmapped keys (no place in the target) (2)" in message
  assert "layers.1.blocks.0.attn.extra_scale -> params/layers_1/blocks_0/attn/extra_scale" in message
  assert "layers.9.blocks.0.norm1.weight" in message


def test_shape_mismatches_and_missing_keys_are_all_listed(swin_state_dict):
  state_dict = dict(swin_state_dict)
  state_dict["layers.2.blocks.1.attn.qkv.weight"] = np.ones((96, 31), np.float32)
  state_dict["layers.1.blocks.0.mlp.fc2.bias"] = np.ones(5, np.float32)
  del state_dict["norm.bias"]
  with pytest.raises(convert.ConversionError) as e:
    convert.convert_state_dict(state_dict)
  message = str(e.value)
  assert "shape mismatches (2)" in message
  assert ("layers.2.blocks.1.attn.qkv.weight -> params/layers_2/blocks_1/attn/qkv/kernel: "
          "got (31, 96), expected (64, 192)") in message
  assert "params/layers_1/blocks_0/mlp/fc2/bias: got (5,), expected (32,)" in message
  assert "missing keys (target has no source) (1):\n    params/norm/bias" in message


def test_dont_load_excuses_heads_only_when_asked(swin_state_dict):
  assert "head.fc.weight" in swin_state_dict
  convert.convert_state_dict(swin_state_dict)  # default: the classifier is excused
  with pytest.raises(convert.ConversionError, match=r"head\.fc\.weight -> params/head/fc/kernel"):
    convert.convert_state_dict(swin_state_dict, dont_load=())
  partial = convert.convert_state_dict(swin_state_dict, dont_load=[r"^head\.", r"^layers\.3\.",
                                                                   r"params/layers_3/"])
  assert "layers_3" not in partial.variables["params"] and "layers_2" in partial.variables["params"]


def test_checkpoint_must_match_the_named_architecture():
  resnet18 = numpy_state_dict(timm.create_model("resnet18", **RESNET_KWARGS))
  resnet34 = convert.convert_timm_model(timm.create_model("resnet34", **RESNET_KWARGS))
  with pytest.raises(convert.ConversionError) as e:
    convert.convert_state_dict(resnet18, config=resnet34.config)
  missing = re.findall(r"^    (params/layer\d_\d)/conv1/kernel$", str(e.value), re.M)
  assert missing == ["params/layer1_2", "params/layer2_2", "params/layer2_3", "params/layer3_2",
                     "params/layer3_3", "params/layer3_4", "params/layer3_5", "params/layer4_2"]


# ---------------------------------------------------------------- layouts and file formats ----

def microsoft_checkpoint(timm_model) -> dict[str, np.ndarray]:
  """The original layout: trailing downsample, stored buffers, `head.weight`, under 'model'."""
  state_dict = convert.swin.from_timm_layout_to_microsoft(numpy_state_dict(timm_model))
  for name, module in timm_model.named_modules():
    if isinstance(module, timm_swin.WindowAttention):
      state_dict[f"{name}.relative_position_index"] = module.relative_position_index.numpy()
    if getattr(module, "attn_mask", None) is not None:
      state_dict[f"{name}.attn_mask"] = module.attn_mask.numpy()
  return state_dict


def test_microsoft_layout(timm_swin_model, swin_state_dict, tmp_path):
  ms = microsoft_checkpoint(timm_swin_model)
  assert "layers.0.downsample.reduction.weight" in ms and "head.weight" in ms
  assert "layers.3.downsample.norm.weight" not in ms
  # Our synthetic file is what timm's own filter maps back to its layout...
  filtered = timm_swin.checkpoint_filter_fn({k: torch.from_numpy(v) for k, v in ms.items()},
                                            timm_swin_model)
  assert filtered.keys() == swin_state_dict.keys()
  # ...and it converts to exactly the same variables, read from a .pth with a 'model' container.
  path = tmp_path / "swin_ms.pth"
  torch.save({"model": {k: torch.from_numpy(v) for k, v in ms.items()}}, path)
  loaded = convert.load_state_dict(str(path))
  assert convert.swin.is_microsoft_layout(loaded)
  assert_trees_equal(convert.convert_state_dict(loaded).variables,
                     convert.convert_state_dict(swin_state_dict).variables)


def test_safetensors_and_weights_only_pth(swin_state_dict, tmp_path):
  from safetensors.numpy import save_file
  path = str(tmp_path / "model.safetensors")
  save_file(swin_state_dict, path)
  loaded = convert.load_state_dict(path)
  assert loaded.keys() == swin_state_dict.keys()
  np.testing.assert_array_equal(loaded["norm.weight"], swin_state_dict["norm.weight"])

  unsafe = str(tmp_path / "unsafe.pth")  # an arbitrary object: only full unpickling could load it
  torch.save({"model": {"w": torch.zeros(1)}, "extra": argparse.Namespace(x=1)}, unsafe)
  with pytest.raises(Exception, match="weights_only"):
    convert.load_state_dict(unsafe)


def test_save_and_load_converted_roundtrip(tmp_path):
  model = parity.randomize_(timm.create_model("resnet18", **RESNET_KWARGS))
  converted = convert.convert_timm_model(model)
  convert.save_converted(str(tmp_path / "r18"), converted, source={"timm_model": "resnet18"})
  loaded = convert.load_converted(str(tmp_path / "r18"))
  assert_trees_equal(loaded, converted.variables)
  meta = convert.read_metadata(str(tmp_path / "r18"))
  assert meta["timm_model"] == "resnet18" and meta["family"] == "resnet"
  assert convert.build_model(str(tmp_path / "r18")) == converted.model()


# ------------------------------------------------------------------------ merge_params ----

def _block_tree(dim=8, heads=2, window_size=4):
  block = swin.SwinBlock(dim=dim, num_heads=heads, window_size=window_size)
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                      jax.eval_shape(block.init, jax.random.key(0), jnp.zeros((1, 8, 8, dim))))


def test_merge_params_loads_a_subtree_strictly():
  block = _block_tree()["params"]
  init = {"isam": {"blocks_0": block, "conv": {"kernel": np.zeros((3, 3, 8, 8))}},
          "head": {"kernel": np.zeros((8, 1))}}
  loaded = jax.tree.map(np.ones_like, block)
  merged = convert.merge_params(init, {"blocks_0": loaded}, prefix="isam",
                                dont_load=[r"^conv/"])
  assert np.all(merged["isam"]["blocks_0"]["attn"]["qkv"]["kernel"] == 1)
  assert np.all(merged["isam"]["conv"]["kernel"] == 0) and np.all(merged["head"]["kernel"] == 0)
  assert np.all(init["isam"]["blocks_0"]["attn"]["qkv"]["kernel"] == 0)  # input untouched
  on_device = convert.merge_params(jax.tree.map(jnp.asarray, init), {"blocks_0": loaded},
                                   prefix="isam", dont_load=[r"^conv/"])
  assert isinstance(on_device["isam"]["blocks_0"]["norm1"]["scale"], jax.Array)  # explicit put

  bad = jax.tree.map(np.ones_like, block)
  bad["attn"]["qkv"]["kernel"] = np.ones((8, 5))
  del bad["norm2"]
  bad["extra"] = {"w": np.ones(1)}
  with pytest.raises(convert.ConversionError) as e:
    convert.merge_params(init, {"blocks_0": bad}, prefix="isam")
  message = str(e.value)
  for expected in ("unmapped keys (no place in the target) (1):\n    blocks_0/extra/w",
                   "blocks_0/norm2/bias", "blocks_0/norm2/scale", "conv/kernel",
                   "blocks_0/attn/qkv/kernel: got (8, 5), expected (8, 24)"):
    assert expected in message


def test_merge_pretrained_maps_stage_blocks_into_a_module(swin_state_dict):
  converted = convert.convert_state_dict(swin_state_dict).variables
  block = _block_tree(dim=64, heads=2, window_size=7)["params"]  # like Swin stage 2 (C=64 here)
  params = {"isam": {"blocks_0": block, "blocks_1": block}}
  params, batch_stats = convert.merge_pretrained(
      params, {}, converted,
      mapping={"isam/blocks_0": "layers_2/blocks_0", "isam/blocks_1": "layers_2/blocks_1"})
  assert batch_stats == {}
  np.testing.assert_array_equal(params["isam"]["blocks_1"]["mlp"]["fc1"]["kernel"],
                                converted["params"]["layers_2"]["blocks_1"]["mlp"]["fc1"]["kernel"])
  with pytest.raises(convert.ConversionError, match="shape mismatches"):
    convert.merge_pretrained({"isam": {"blocks_0": block}}, {}, converted,
                             mapping={"isam/blocks_0": "layers_1/blocks_0"})


# --------------------------------------------------------------------------------- CLI ----

def run_cli(capsys, *argv) -> tuple[int, list[str]]:
  """`python -m bsa_jax.models.convert ARGV` in this process (older hyphenated flag names, as users'
  scripts write them): its exit status and stdout lines."""
  capsys.readouterr()
  code = run_in_process("bsa_jax.models.convert", *argv)
  return code, capsys.readouterr().out.strip().splitlines()


def test_cli_random_init_check(tmp_path, capsys):
  code, lines = run_cli(capsys, "--timm-model", "resnext50_32x4d", "--random-init",
                        "--out", str(tmp_path / "rx"), "--check", "--timm-kwargs",
                        json.dumps(dict(channels=[16, 32, 64, 128], layers=[1, 1, 1, 1])))
  print("\n".join(lines))
  assert code == 0
  assert [line.split(":")[0] for line in lines[1:]] == [
      "stem", "stage1", "stage2", "stage3", "stage4", "max_abs_diff"]
  assert float(lines[-1].split()[-1]) < 1e-4
  assert convert.read_metadata(str(tmp_path / "rx"))["config"]["cardinality"] == 32


def test_cli_microsoft_checkpoint(timm_swin_model, tmp_path, capsys):
  path = tmp_path / "swin_ms.pth"
  ms = microsoft_checkpoint(timm_swin_model)
  torch.save({"model": {k: torch.from_numpy(v) for k, v in ms.items()}}, path)
  out = tmp_path / "swin"
  code, _ = run_cli(capsys, "--timm-model", "swin_tiny_patch4_window7_224", "--checkpoint",
                    str(path), "--out", str(out), "--timm-kwargs", json.dumps(SWIN_KWARGS))
  assert code == 0
  assert convert.read_metadata(str(out))["layout"] == "microsoft"
  assert_trees_equal(convert.load_converted(str(out))["params"],
                     convert.convert_timm_model(timm_swin_model).variables["params"])


def test_cli_safetensors_checkpoint_check(tmp_path, capsys):
  """--check on a file: timm's own loader reads it for the reference side."""
  from safetensors.torch import save_file
  model = parity.randomize_(timm.create_model("resnet18", **RESNET_KWARGS))
  path = str(tmp_path / "model.safetensors")
  save_file(model.state_dict(), path)
  code, lines = run_cli(capsys, "--timm-model", "resnet18", "--checkpoint", path, "--out",
                        str(tmp_path / "r18"), "--check", "--timm-kwargs", json.dumps(RESNET_KWARGS))
  print("\n".join(lines))
  assert code == 0 and float(lines[-1].split()[-1]) < 1e-4
  assert lines[-2].startswith("stage4: max_abs_diff=")


def test_cli_rejects_a_checkpoint_of_another_architecture(tmp_path, capsys):
  from safetensors.torch import save_file
  path = str(tmp_path / "model.safetensors")
  save_file(timm.create_model("resnet18", **RESNET_KWARGS).state_dict(), path)
  code = run_in_process("bsa_jax.models.convert", "--timm_model", "resnet34", "--checkpoint", path,
                        "--out", str(tmp_path / "x"), "--timm_kwargs", json.dumps(RESNET_KWARGS))
  assert code == 2 and "missing keys" in capsys.readouterr().err
