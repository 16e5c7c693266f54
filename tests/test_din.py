"""DIN: the model contract, golden parameter counts, DIFM direction symmetry, timm-shaped encoders,
and a few training steps on the real ACDC subset."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bsa_jax import config_lib
from bsa_jax.models import convert
from bsa_jax.models import din
from bsa_jax.models import resnext
from bsa_jax.models import summary
from bsa_jax.models import swin
from conftest import data_dir
from tests.helpers import first_batch
from tests.helpers import train_on_batch
from tests.test_attention import fast_jit
from tests.test_attention import numpy_init

# num_classes=4 at 256×256 (`python -m bsa_jax.models.summary --config=configs/acdc.py`).
GOLDEN_PARAMS = {"tiny": 54_980, "small": 1_013_556, "base": 64_533_908, "swin_t": 71_015_944}
SCALE_KEYS = ("merge_{k}/original", "merge_{k}/enhanced", "difm_{k}/i_from_e", "difm_{k}/e_from_i",
              "difm_{k}/i_from_e/gsa", "difm_{k}/e_from_i/gsa", "difm_{k}/out")


def _shapes(model, image_shape, train_mode):
  """(logits, aux) shape structs of `model` on (image, image_enhanced), without compiling."""
  x = jax.ShapeDtypeStruct(image_shape, jnp.float32)

  def run(image):
    variables = model.init(jax.random.PRNGKey(0), image, train=False)
    out = model.apply(variables, image=image, image_enhanced=image * 0.5, train=train_mode,
                      rngs={"dropout": jax.random.PRNGKey(1)},
                      mutable=["batch_stats"] if train_mode else False)
    return out[0] if train_mode else out

  return jax.eval_shape(run, x)


@pytest.mark.parametrize("backbone", ["resnext", "swin"])
@pytest.mark.parametrize("train_mode", [False, True])
def test_contract_shapes_and_named_intermediates(backbone, train_mode):
  model = din.Model(variant="tiny", num_classes=4, backbone=backbone)
  logits, aux = _shapes(model, (2, 64, 96, 3), train_mode)
  assert logits.shape == (2, 64, 96, 4) and logits.dtype == jnp.float32
  widths = din.VARIANTS["tiny"]["merge_widths"]
  for k in range(4):
    h, w = 64 // 2 ** (k + 2), 96 // 2 ** (k + 2)
    for key in SCALE_KEYS:
      channels = 1 if key.endswith("gsa") else widths[k]
      assert aux[key.format(k=k)].shape == (2, h, w, channels), key.format(k=k)
  assert [s.shape for s in aux["side_outputs"]] == [(2, 2, 3, 4), (2, 4, 6, 4), (2, 8, 12, 4),
                                                    (2, 16, 24, 4)]
  assert all(s.dtype == jnp.float32 for s in aux["side_outputs"])
  assert aux["coarse_logits"].shape == (2, 16, 24, 4)


def test_full_variants_at_256():
  logits, aux = _shapes(din.Model(variant="base", num_classes=9), (1, 256, 256, 3), True)
  assert logits.shape == (1, 256, 256, 9)
  assert aux["difm_0/out"].shape == (1, 64, 64, 64) and aux["difm_3/out"].shape == (1, 8, 8, 512)


@functools.lru_cache(maxsize=None)
def _param_shapes(variant, **overrides):
  return summary.param_shapes("din", {"variant": variant, "num_classes": 4, **overrides}, 256)


@pytest.mark.parametrize("variant", sorted(GOLDEN_PARAMS))
def test_golden_parameter_counts(variant):
  shapes = _param_shapes(variant)
  assert sum(int(np.prod(s)) for s in shapes.values()) == GOLDEN_PARAMS[variant]
  counts = summary.count_by_prefix(shapes)
  assert counts["encoder_original"] == counts["encoder_enhanced"]  # same shape, separate weights


def test_kv_pooling_has_no_parameters_and_bad_heads_fail():
  pooled, full = _param_shapes("tiny"), _param_shapes("tiny", difm_kv_pool=(1, 1, 1, 1))
  assert pooled == full
  with pytest.raises(ValueError, match="divisible"):
    din.resolve_hparams("tiny", difm_heads=(3, 1, 2, 2))
  with pytest.raises(ValueError, match="one entry per scale"):
    din.resolve_hparams("tiny", difm_kv_pool=(1, 1))
  with pytest.raises(ValueError, match="Unknown DIN variant"):
    din.resolve_hparams("huge")


def _subtree_shapes(tree, prefix):
  sub = convert.subtree(tree, prefix)
  return jax.tree.map(lambda x: x.shape, sub)


@pytest.mark.parametrize("variant,timm_model", [
    ("base", resnext.resnet_from_variant("resnext50_32x4d")),
    ("swin_t", swin.swin_from_variant("tiny", window_size=7)),
])
def test_encoders_have_the_timm_backbones_exact_parameter_tree(variant, timm_model):
  """So `pretrained_mapping` loads a converted ImageNet checkpoint into both encoders strictly."""
  x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  backbone = jax.eval_shape(lambda image: timm_model.init(jax.random.PRNGKey(0), image), x)
  model = din.Model(variant=variant)
  ours = jax.eval_shape(lambda image: model.init(jax.random.PRNGKey(0), image), x)
  for collection in ("params", "batch_stats"):
    for target in din.pretrained_mapping({"variant": variant}):
      assert _subtree_shapes(ours.get(collection, {}), target) == jax.tree.map(
          lambda t: t.shape, dict(backbone.get(collection, {}))), (collection, target)


def test_pretrained_mapping_loads_one_backbone_into_both_encoders():
  model = din.Model(variant="tiny")
  image = jnp.zeros((1, 32, 32, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), image))
  hp = din.VARIANTS["tiny"]
  backbone = resnext.ResNet(layers=hp["encoder_depths"], widths=hp["encoder_planes"],
                            stem_width=hp["stem_width"], cardinality=hp["cardinality"],
                            base_width=hp["base_width"])
  loaded = numpy_init(backbone, image, train=False, seed=3)
  init = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), variables)
  params, stats = convert.merge_pretrained(init["params"], init["batch_stats"], loaded,
                                           mapping=din.pretrained_mapping({}))
  for which in ("encoder_original", "encoder_enhanced"):
    jax.tree.map(np.testing.assert_array_equal, params[which], dict(loaded["params"]))
    jax.tree.map(np.testing.assert_array_equal, stats[which], dict(loaded["batch_stats"]))
  assert not np.any(params["difm_0"]["i_from_e"]["q"]["kernel"])  # the rest is left as initialised


def _swap_directions(tree):
  """Exchanges every 'original' and 'enhanced' weight and the two DIFM branches' weights."""
  out = {}
  for name, value in tree.items():
    parts = name.split("_")  # 'encoder_original', 'merge_enhanced_2', 'difm_1', 'decoder'
    if parts[0] in ("encoder", "merge"):
      parts[1] = {"original": "enhanced", "enhanced": "original"}[parts[1]]
    if parts[0] == "difm":
      value = {"i_from_e": value["e_from_i"], "e_from_i": value["i_from_e"]}
    out["_".join(parts)] = value
  return out


def tiny_din_setup(batch_size: int):
  """(image, enhanced image, variables, apply) of a tiny 3-class DIN: two random (B, 32, 32, 3)
  inputs, its variables from numpy (seed 1) and `apply(variables, image, enhanced)`, jitted."""
  model = din.Model(variant="tiny", num_classes=3)
  rng = np.random.default_rng(0)
  image = jnp.asarray(rng.normal(size=(batch_size, 32, 32, 3)), jnp.float32)
  enhanced = jnp.asarray(rng.normal(size=(batch_size, 32, 32, 3)), jnp.float32)
  variables = numpy_init(model, image, train=False, seed=1)
  apply = fast_jit(lambda v, a, b: model.apply(v, image=a, image_enhanced=b, train=False))
  return image, enhanced, variables, apply


def test_swapping_inputs_and_weights_swaps_the_two_difm_directions_exactly():
  image, enhanced, variables, apply = tiny_din_setup(2)
  swapped = {c: _swap_directions(v) for c, v in variables.items()}
  logits, aux = apply(variables, image, enhanced)
  logits_s, aux_s = apply(swapped, enhanced, image)  # the enhanced image now goes in as 'image'
  for k in range(4):
    np.testing.assert_array_equal(aux_s[f"difm_{k}/i_from_e"], aux[f"difm_{k}/e_from_i"])
    np.testing.assert_array_equal(aux_s[f"difm_{k}/e_from_i"], aux[f"difm_{k}/i_from_e"])
    np.testing.assert_array_equal(aux_s[f"merge_{k}/original"], aux[f"merge_{k}/enhanced"])
    # The sum is symmetric up to rounding: XLA may fuse one product into the add as an FMA.
    np.testing.assert_allclose(aux_s[f"difm_{k}/out"], aux[f"difm_{k}/out"], rtol=1e-6, atol=1e-6)
    assert not np.allclose(aux[f"difm_{k}/i_from_e"], aux[f"difm_{k}/e_from_i"])
  np.testing.assert_allclose(logits_s, logits, rtol=1e-5, atol=1e-5)
  # The enhanced input matters: a different one changes the prediction.
  other, _ = apply(variables, image, enhanced * 0.5)
  assert not np.allclose(other, logits)


def test_initialisation_needs_only_the_image_but_apply_needs_both():
  model = din.Model(variant="tiny")
  image = jnp.zeros((1, 32, 32, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), image, train=False))
  with pytest.raises(ValueError, match="image_enhanced"):
    jax.eval_shape(lambda v: model.apply(v, image, train=False), variables)


def test_a_few_training_steps_on_the_acdc_subset_lower_the_loss():
  c = config_lib.load_config(os.path.join(config_lib.REPO_ROOT, "configs/acdc.py:small"))
  c.data.root = os.path.dirname(data_dir("acdc_ssl4mis_subset"))
  c.model.variant = "tiny"
  c.data.image_size = 64
  c.data.augment.enabled = False
  batch = first_batch(c.data)
  assert set(batch) == {"image", "image_enhanced", "mask"} and batch["mask"].dtype == np.int32
  history, _ = train_on_batch(c, batch, 8)  # the same batch: the loss must go down
  assert all(np.isfinite(h["loss"]) for h in history)
  assert {"loss_ce", "loss_dice", "loss_boundary", "loss_side"} <= set(history[0])
  # Seen here: 9.27, 8.86, 8.40, 8.11, 7.78, 7.58, 7.43, 7.29.
  assert history[-1]["loss"] < 0.9 * history[0]["loss"], [h["loss"] for h in history]
