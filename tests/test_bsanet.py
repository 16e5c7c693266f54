"""BSA-Net: the model contract, variants and their parameter budgets, Swin init mapping, BN modes."""

import functools
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bsa_jax import config_lib
from bsa_jax.train import losses
from bsa_jax.models import bsanet
from bsa_jax.models import convert
from bsa_jax.models import summary
from bsa_jax.models import swin
from tests.test_attention import fast_jit
from tests.test_attention import numpy_init

PAPER_PARAMS = 6_360_000  # the paper's section 4.1
GOLDEN_PARAMS = {"paper": 6_369_367, "swin_t_stage3": 16_378_083, "tiny": 156_967}
KEYS_EVAL = {"encoder/stem", "encoder/stage0", "encoder/stage1", "encoder/stage2", "encoder/stage3",
             "isam/out", "fsam/alpha", "fsam/out", "decoder/fused", "coarse_logits", "side_outputs"}


def _shapes(model, image_shape, train):
  """(logits, aux) shape structs of `model` in train or eval mode, without compiling anything."""
  image = jax.ShapeDtypeStruct(image_shape, jnp.float32)

  def run(x):
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    rngs = {"dropout": jax.random.PRNGKey(1), "points": jax.random.PRNGKey(2)}
    if train:
      return model.apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])[0]
    return model.apply(variables, x, train=False)

  return jax.eval_shape(run, image)


@functools.lru_cache(maxsize=None)
def _param_shapes(variant):
  """{path: shape} of a variant at 256×256 (traced once per variant)."""
  return summary.param_shapes("bsanet", {"variant": variant}, 256)


# ----------------------------------------------------------------------------------------------------
# Shapes and the aux contract (traced only).

@pytest.mark.parametrize("arm", ["pointrend", "dense", "none"])
@pytest.mark.parametrize("train", [False, True])
def test_tiny_contract_for_every_arm_mode(arm, train):
  model = bsanet.Model(variant="tiny", num_classes=2, arm=arm)
  logits, aux = _shapes(model, (2, 64, 96, 3), train)
  assert logits.shape == (2, 64, 96, 2) and logits.dtype == jnp.float32
  expected_keys = KEYS_EVAL | ({"arm"} if train and arm == "pointrend" else set())
  assert set(aux) == expected_keys
  assert [s.shape for s in aux["side_outputs"]] == [(2, 2, 3, 2), (2, 4, 6, 2), (2, 8, 12, 2),
                                                    (2, 16, 24, 2)]
  assert all(s.dtype == jnp.float32 for s in aux["side_outputs"])
  assert aux["coarse_logits"].shape == (2, 16, 24, 2)
  assert aux["fsam/alpha"].shape == (2, 1, 1, 32) and aux["isam/out"].shape == (2, 8, 12, 32)
  if "arm" in aux:
    n = bsanet.VARIANTS["tiny"]["arm_train_points"]
    assert aux["arm"]["coords"].shape == (2, n, 2) and aux["arm"]["logits"].shape == (2, n, 2)
    assert aux["arm"]["logits"].dtype == jnp.float32


@pytest.mark.parametrize("variant,image_hw", [("paper", (256, 256)), ("paper", (352, 288)),
                                              ("swin_t_stage3", (256, 256))])
def test_full_variants_at_256_and_non_square(variant, image_hw):
  logits, aux = _shapes(bsanet.Model(variant=variant), (1, *image_hw, 3), train=True)
  h, w = image_hw
  assert logits.shape == (1, h, w, 1)
  assert [s.shape[1:3] for s in aux["side_outputs"]] == [
      (-(-h // s), -(-w // s)) for s in (32, 16, 8, 4)]
  n = bsanet.VARIANTS[variant]["arm_train_points"]
  assert aux["arm"]["coords"].shape == (1, n, 2)
  isam_stride = 2 ** (bsanet.VARIANTS[variant]["isam_stage"] + 2)
  assert aux["isam/out"].shape[1:3] == (h // isam_stride, w // isam_stride)


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model = bsanet.Model(variant="tiny", dtype=jnp.bfloat16)
  image = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), image)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  logits, aux = _shapes(model, (1, 64, 64, 3), train=False)
  assert logits.dtype == jnp.float32 and aux["isam/out"].dtype == jnp.bfloat16


def test_unknown_variant_and_override_fail_loudly():
  with pytest.raises(ValueError, match="variant"):
    bsanet.resolve_hparams("huge")
  with pytest.raises(ValueError, match="arm="):
    bsanet.resolve_hparams("tiny", arm="pointrender")
  with pytest.raises(ValueError, match="Unknown BSA-Net hyper-parameters"):
    bsanet.resolve_hparams("tiny", isam_width=3)


# ----------------------------------------------------------------------------------------------------
# Parameter budget.

@pytest.mark.parametrize("variant", sorted(GOLDEN_PARAMS))
def test_golden_parameter_counts(variant):
  total = sum(summary.count_by_prefix(_param_shapes(variant)).values())
  assert total == GOLDEN_PARAMS[variant]
  if variant == "paper":  # +0.15 %; the ARM alone is 2.5 %, so a missing module cannot hide here
    assert abs(total / PAPER_PARAMS - 1) <= 0.002, f"{total:,} vs the paper's {PAPER_PARAMS:,}"


@pytest.mark.parametrize("variant,dim,heads", [("paper", 192, 6), ("swin_t_stage3", 384, 12)])
def test_isam_swin_blocks_match_the_spec_budget_arithmetic(variant, dim, heads):
  blocks = summary.count_by_prefix(_param_shapes(variant), depth=2)
  swin_blocks = [n for name, n in blocks.items() if name.startswith("isam/blocks_")]
  # docs/DECISIONS.md#r6: one Swin block = 12C² + 13C + 169·heads (window 7).
  assert swin_blocks == [12 * dim**2 + 13 * dim + 169 * heads] * 6


# ----------------------------------------------------------------------------------------------------
# Swin initialisation mapping.

def test_swin_init_mapping_tables():
  assert bsanet.swin_init_mapping("paper") == {
      f"isam/blocks_{j}": f"layers_1/blocks_{j % 2}" for j in range(6)}
  assert bsanet.swin_init_mapping("swin_t_stage3") == {
      f"isam/blocks_{j}": f"layers_2/blocks_{j}" for j in range(6)}
  assert bsanet.swin_init_mapping("tiny") == {}
  config = config_lib.base_config()
  assert bsanet.pretrained_mapping(config.model) == bsanet.swin_init_mapping("paper")
  config.model.variant = "tiny"
  with pytest.raises(ValueError, match="no pretrained ISAM source"):
    bsanet.pretrained_mapping(config.model)


def _subtree(shapes, prefix):
  prefix = tuple(prefix.split("/"))
  return {path[len(prefix):]: shape for path, shape in shapes.items() if path[:len(prefix)] == prefix}


@pytest.mark.parametrize("variant", ["paper", "swin_t_stage3"])
def test_swin_init_mapping_targets_match_swin_t_source_shapes(variant):
  ours = _param_shapes(variant)
  swin_t = swin.swin_from_variant("tiny")
  image = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  source = jax.eval_shape(lambda x: swin_t.init(jax.random.PRNGKey(0), x), image)["params"]
  source = {tuple(p.key for p in path): leaf.shape
            for path, leaf in jax.tree_util.tree_leaves_with_path(source)}
  for target, src in bsanet.swin_init_mapping(variant).items():
    assert _subtree(ours, target) and _subtree(ours, target) == _subtree(source, src), (target, src)


def test_swin_t_weights_merge_into_isam_through_the_converter():
  model = bsanet.Model(variant="paper")
  ours = numpy_init(model, jnp.zeros((1, 64, 64, 3)), train=False)  # shapes do not depend on size
  swin_t = numpy_init(swin.swin_from_variant("tiny"), jnp.zeros((1, 64, 64, 3)), seed=1)
  params, batch_stats = convert.merge_pretrained(
      ours["params"], ours["batch_stats"], {"params": swin_t["params"]},
      mapping=bsanet.swin_init_mapping("paper"))
  for j in range(6):
    source = swin_t["params"]["layers_1"][f"blocks_{j % 2}"]
    jax.tree.map(np.testing.assert_array_equal, params["isam"][f"blocks_{j}"], source)
  jax.tree.map(np.testing.assert_array_equal, params["fsam"], ours["params"]["fsam"])
  jax.tree.map(np.testing.assert_array_equal, batch_stats, ours["batch_stats"])


# ----------------------------------------------------------------------------------------------------
# Compiled tiny model: training step pieces, BN modes, no recompilation.

_TINY = bsanet.Model(variant="tiny", isam_drop_path=0.0)  # no dropped blocks: every grad is non-zero
_TRACES = []


@functools.lru_cache(maxsize=None)
def _tiny_variables():
  return numpy_init(_TINY, jnp.zeros((2, 64, 64, 3)), train=False)


@fast_jit
def _tiny_eval(variables, image):
  _TRACES.append("eval")
  return _TINY.apply(variables, image, train=False)


@fast_jit
def _tiny_train_grads(params, batch_stats, image, mask, rng):
  """The trainer's loss (structure + side outputs + points) and its gradient in training mode."""
  _TRACES.append("train")
  dropout_rng, points_rng = jax.random.split(rng)
  train_config = config_lib.base_config().train

  def loss_fn(params):
    (logits, aux), new_vars = _TINY.apply(
        {"params": params, "batch_stats": batch_stats}, image, train=True, mutable=["batch_stats"],
        rngs={"dropout": dropout_rng, "points": points_rng})
    loss, _ = losses.segmentation_loss(logits, aux, mask, train_config)
    return loss, (logits, aux, new_vars["batch_stats"])

  return jax.value_and_grad(loss_fn, has_aux=True)(params)


def _batch(seed):
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:64, :64]
  mask = ((yy - 32) ** 2 + (xx - 20 - 8 * seed) ** 2 < 150).astype(np.float32)
  image = rng.normal(size=(2, 64, 64, 3)).astype(np.float32) + 2 * mask[None, :, :, None]
  return jnp.asarray(image), jnp.asarray(np.broadcast_to(mask[None, :, :, None], (2, 64, 64, 1)))


def test_every_parameter_gets_a_gradient_from_the_training_loss():
  variables = _tiny_variables()
  image, mask = _batch(0)
  (loss, (logits, aux, _)), grads = _tiny_train_grads(variables["params"], variables["batch_stats"],
                                                      image, mask, jax.random.PRNGKey(0))
  assert np.isfinite(float(loss)) and logits.shape == (2, 64, 64, 1)
  coords = aux["arm"]["coords"]
  assert bool(jnp.all((coords > 0) & (coords < 1)))
  leaves = jax.tree_util.tree_leaves_with_path(grads)
  non_finite = [jax.tree_util.keystr(path) for path, g in leaves if not bool(jnp.all(jnp.isfinite(g)))]
  assert not non_finite, f"non-finite gradients: {non_finite}"
  dead = [jax.tree_util.keystr(path) for path, g in leaves if not bool(jnp.any(g != 0))]
  assert not dead, f"parameters without gradient: {dead}"


def test_batchnorm_uses_batch_statistics_in_training_and_running_ones_in_eval():
  variables = _tiny_variables()
  params, stats = variables["params"], variables["batch_stats"]
  image, mask = _batch(1)
  other = image.at[1].multiply(3.0)  # changes only the second image
  rng = jax.random.PRNGKey(0)
  (_, (train_a, _, new_stats)), _ = _tiny_train_grads(params, stats, image, mask, rng)
  (_, (train_b, _, _)), _ = _tiny_train_grads(params, stats, other, mask, rng)
  # Training: batch statistics couple the images, and the running statistics move.
  assert float(jnp.abs(train_a[0] - train_b[0]).max()) > 1e-4
  stem_mean = new_stats["stem1"]["bn"]["mean"]
  assert float(jnp.abs(stem_mean - stats["stem1"]["bn"]["mean"]).max()) > 1e-3
  # Eval: running statistics, so each image's logits depend on that image only.
  eval_a, _ = _tiny_eval(variables, image)
  eval_b, _ = _tiny_eval(variables, other)
  np.testing.assert_array_equal(eval_a[0], eval_b[0])
  assert float(jnp.abs(eval_a[1] - eval_b[1]).max()) > 1e-4


def test_no_recompilation_across_calls():
  variables = _tiny_variables()
  for seed in range(2):
    image, mask = _batch(seed)
    logits, aux = _tiny_eval(variables, image)
    assert "arm" not in aux and bool(jnp.all(jnp.isfinite(logits)))
    _tiny_train_grads(variables["params"], variables["batch_stats"], image, mask,
                      jax.random.PRNGKey(seed))
  assert sorted(_TRACES) == ["eval", "train"]


# ----------------------------------------------------------------------------------------------------
# Summary CLI.

def test_summary_table_and_cli_total():
  counts = summary.count_by_prefix(summary.param_shapes("bsanet", {"variant": "tiny"}, 64))
  assert list(counts)[:3] == ["stem1", "stem2", "stage0"] and "isam" in counts and "arm" in counts
  table = summary.markdown_table(counts)
  assert table.splitlines()[-1] == f"| **total** | **{GOLDEN_PARAMS['tiny']:,}** | 100 % |"
  out = subprocess.run([sys.executable, "-m", "bsa_jax.models.summary",
                        "--config=configs/kvasir.py:small"], capture_output=True, text=True,
                       check=True, cwd=config_lib.REPO_ROOT).stdout
  assert out.strip().splitlines()[-1] == f"total_params: {GOLDEN_PARAMS['tiny']}"
