"""The PyTorch twin of BSA-Net (bench/torch_bsanet.py) is the same network as the Flax model.

Proof by numbers: equal parameter counts, equal eval outputs with Flax weights loaded, and an equal
training loss, gradients and BatchNorm update on equal inputs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bsa_jax import config_lib
from bsa_jax.train import losses
from bench import torch_bsanet
from bsa_jax.models import bsanet
from bsa_jax.models import rendering
from tests.test_attention import fast_jit

GOLDEN_PARAMS = {"paper": 6_369_367, "tiny": 156_967}


def _flax_shapes(model, size):
  """Variable shapes of a Flax model on (1, size, size, 3) inputs, without running anything."""
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)),
                                           train=False))


def _count(params) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


def _variables(model, size, seed=0):
  """Random Flax variables with nothing trivial in them (no compile of the Flax initialisers).

  Kernels He-scaled (activations keep their scale through the ReLUs; the ARM predictor then moves
  the refined logits visibly), biases and BatchNorm scale/bias/statistics all random, so a swapped
  or untransposed tensor cannot hide.
  """
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name, shape = path[-1].key, leaf.shape
    if name == "kernel":
      value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
    elif name == "scale":
      value = 1.0 + rng.normal(0.0, 0.1, shape)
    elif name == "var":
      value = rng.uniform(0.5, 1.5, shape)
    elif name in ("bias", "mean"):
      value = rng.normal(0.0, 0.1, shape)
    else:  # relative-position tables
      value = rng.normal(0.0, 0.02, shape)
    return jnp.asarray(value, jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, _flax_shapes(model, size))


def _torch_twin(variant, variables, **overrides):
  model = torch_bsanet.build_model(variant, **overrides)
  torch_bsanet.load_flax_variables(model, variables)
  return model


def _nchw(x) -> np.ndarray:
  return np.asarray(x).transpose(0, 3, 1, 2)


def _assert_close(name, torch_value, flax_value, rel=1e-4):
  """max |torch − flax| within `rel` of the Flax tensor's largest magnitude (at least 1)."""
  got, want = torch_value.detach().numpy(), np.asarray(flax_value)
  assert got.shape == want.shape, (name, got.shape, want.shape)
  scale = max(1.0, float(np.abs(want).max()))
  err = float(np.abs(got - want).max())
  assert err <= rel * scale, f"{name}: max |diff| {err:.3g} > {rel} × {scale:.3g}"


def _assert_grad_close(name, torch_grad, flax_grad, rel, floor=1e-8):
  """max |torch − flax| within `rel` of this gradient's own largest magnitude (plus a tiny floor).

  Relative to each tensor's scale, not to max(1, scale): a gradient of 1e-4 that came out zero or
  with its sign flipped fails. An all-zero gradient passes only if the other one is zero too.
  """
  got, want = torch_grad.detach().numpy(), np.asarray(flax_grad)
  assert got.shape == want.shape, (name, got.shape, want.shape)
  assert np.all(np.isfinite(got)) and np.all(np.isfinite(want)), name
  assert np.any(got != 0) == np.any(want != 0), (
      f"{name}: torch max |grad| {np.abs(got).max():.3g}, flax max |grad| {np.abs(want).max():.3g}")
  scale = float(np.abs(want).max())
  err = float(np.abs(got - want).max())
  assert err <= rel * scale + floor, f"{name}: max |diff| {err:.3g} > {rel} × {scale:.3g} + {floor}"


# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["paper", "tiny"])
def test_parameter_count_equals_flax(variant):
  flax_count = _count(_flax_shapes(bsanet.Model(variant=variant), 64)["params"])
  assert flax_count == GOLDEN_PARAMS[variant]
  assert torch_bsanet.num_params(torch_bsanet.build_model(variant)) == flax_count


@pytest.mark.parametrize("arm", ["dense", "none"])
def test_parameter_count_equals_flax_for_the_other_arm_modes(arm):
  flax_count = _count(_flax_shapes(bsanet.Model(variant="tiny", arm=arm), 64)["params"])
  assert torch_bsanet.num_params(torch_bsanet.build_model("tiny", arm=arm)) == flax_count


def test_loading_is_strict():
  model = bsanet.Model(variant="tiny")
  variables = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), _flax_shapes(model, 64))
  del variables["batch_stats"]["fsam"]["dconv"]
  with pytest.raises(KeyError, match="fsam.dconv.bn.running_mean"):
    torch_bsanet.load_flax_variables(torch_bsanet.build_model("tiny"), variables)
  with pytest.raises(KeyError, match="no such tensor"):  # a Flax model of another variant
    torch_bsanet.load_flax_variables(torch_bsanet.build_model("tiny", arm="none"),
                                     {"params": variables["params"]})


# 'paper' at 112 px: ISAM on a 14×14 map (2×2 windows of 7, shifted every other block), a 4×4 deepest
# map upsampled to 7×7 (non-integer scale), and ARM steps 28 → 56 (all 3,136 pixels re-predicted)
# → 112 (8,192 of 12,544). 'tiny' at 64 px: window 4 on 8×8, 256 of 1,024 and of 4,096 pixels.
@pytest.mark.parametrize("variant,size,batch", [("tiny", 64, 2), ("paper", 112, 1)])
def test_eval_outputs_match_flax(variant, size, batch):
  model = bsanet.Model(variant=variant)
  variables = _variables(model, size)
  image = np.random.default_rng(1).normal(size=(batch, size, size, 3)).astype(np.float32)
  logits, aux = fast_jit(lambda v, x: model.apply(v, x, train=False))(variables, image)

  twin = _torch_twin(variant, variables).eval()
  with torch.no_grad():
    t_logits, t_aux = twin(torch.from_numpy(_nchw(image)))

  assert set(t_aux) == set(aux)
  for name in ("encoder/stage3", "isam/out", "fsam/out", "decoder/fused", "coarse_logits"):
    _assert_close(name, t_aux[name], _nchw(aux[name]))
  _assert_close("fsam/alpha", t_aux["fsam/alpha"], _nchw(aux["fsam/alpha"]))
  for j, (t_side, side) in enumerate(zip(t_aux["side_outputs"], aux["side_outputs"])):
    _assert_close(f"side_outputs[{j}]", t_side, _nchw(side))
  _assert_close("logits", t_logits, _nchw(logits))
  # The ARM really changed pixels (else the comparison above would not test it).
  bilinear = torch.nn.functional.interpolate(t_aux["coarse_logits"], size=(size, size),
                                             mode="bilinear", align_corners=False)
  assert (t_logits - bilinear).abs().amax() > 0.1


def test_training_points_match_flax_on_equal_draws():
  """The ARM's point sampler: same candidates and uniform draws -> the same points (uncertain first)."""
  b, grid_hw, num_points, oversample, importance = 2, (32, 24), 64, 3, 0.75
  coarse = np.random.default_rng(2).normal(size=(b, 8, 6, 1)).astype(np.float32)
  rng = jax.random.PRNGKey(3)
  want = rendering.sample_training_points(rng, jnp.asarray(coarse), grid_hw, num_points, oversample,
                                          importance)
  # The draws rendering.sample_training_points makes from `rng`, repeated here.
  rng_candidates, rng_uniform = jax.random.split(rng)
  pixels = grid_hw[0] * grid_hw[1]
  candidates = jax.random.randint(rng_candidates, (b, oversample * num_points), 0, pixels)
  uniform = jax.random.randint(rng_uniform, (b, num_points - round(importance * num_points)), 0,
                               pixels)
  got = torch_bsanet.sample_training_points(
      torch.from_numpy(_nchw(coarse)), grid_hw, num_points, oversample, importance,
      candidate_index=torch.from_numpy(np.asarray(candidates, np.int64)),
      uniform_index=torch.from_numpy(np.asarray(uniform, np.int64)))
  np.testing.assert_allclose(got.numpy(), np.asarray(want), atol=1e-7)


def test_training_loss_gradients_and_bn_update_match_flax():
  """One training step's work on 'tiny' at 64 px, batch 2.

  The two random parts of a training forward cannot draw the same numbers in both frameworks, so:
  stochastic depth is switched off in both (isam_drop_path=0), and the torch model is fed the ARM
  points the Flax forward sampled (`point_coords`), so the point loss is compared on identical points
  (the sampler itself is compared in the test above). Everything else is the trainer's loss as is.
  """
  overrides = {"isam_drop_path": 0.0}
  model = bsanet.Model(variant="tiny", **overrides)
  variables = _variables(model, 64, seed=4)
  rng = np.random.default_rng(5)
  image = rng.normal(size=(2, 64, 64, 3)).astype(np.float32)
  yy, xx = np.mgrid[:64, :64]
  mask = np.stack([(yy - 30) ** 2 + (xx - 34) ** 2 < r**2 for r in (12, 20)])[..., None]
  mask = mask.astype(np.float32)  # (2, 64, 64, 1) discs
  train_config = config_lib.base_config().train

  def loss_fn(params, batch_stats, image, mask):
    (logits, aux), new_vars = model.apply(
        {"params": params, "batch_stats": batch_stats}, image, train=True,
        mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(6),
                                       "points": jax.random.PRNGKey(7)})
    loss, _ = losses.segmentation_loss(logits, aux, mask, train_config)
    return loss, (aux["arm"]["coords"], new_vars["batch_stats"])

  (loss, (coords, new_stats)), grads = fast_jit(jax.value_and_grad(loss_fn, has_aux=True))(
      variables["params"], variables["batch_stats"], image, mask)

  twin = _torch_twin("tiny", variables, **overrides).train()
  t_loss = torch_bsanet.train_loss(twin, torch.from_numpy(_nchw(image)),
                                   torch.from_numpy(_nchw(mask)),
                                   point_coords=torch.tensor(np.asarray(coords)))
  t_loss.backward()
  np.testing.assert_allclose(t_loss.item(), float(loss), rtol=1e-5)
  assert np.isfinite(float(loss))

  # Flax gradients, mapped onto torch names/layouts by the loader itself, against torch's .grad.
  flax_grads = torch_bsanet.build_model("tiny", **overrides)
  torch_bsanet.load_flax_variables(flax_grads, {"params": grads, "batch_stats": new_stats})
  want = dict(flax_grads.named_parameters())
  # Measured: the worst tensor is within 4.9e-5 of its own scale (the smallest scale is 0.018).
  for name, param in twin.named_parameters():
    _assert_grad_close(f"grad {name}", param.grad, want[name].detach().numpy(), rel=1e-3)

  # BatchNorm update: means equal; torch's running_var takes the unbiased batch variance, Flax's
  # the biased one (the one documented difference), shown here on the stem's first BN.
  for name, buffer in twin.named_buffers():
    if name.endswith("running_mean"):
      _assert_close(name, buffer, dict(flax_grads.named_buffers())[name].numpy(), rel=1e-5)
  old_var = np.asarray(variables["batch_stats"]["stem1"]["bn"]["var"])
  biased = (np.asarray(new_stats["stem1"]["bn"]["var"]) - 0.9 * old_var) / 0.1
  n = 2 * 32 * 32  # values per channel at the stem's stride 2
  np.testing.assert_allclose(twin.stem1.bn.running_var.numpy(),
                             0.9 * old_var + 0.1 * biased * n / (n - 1), rtol=1e-4)


def test_channels_last_gives_the_same_outputs():
  """Benchmarks may run the twin channels_last; it must compute the same thing."""
  torch.manual_seed(0)
  model = torch_bsanet.build_model("tiny").eval()
  image = torch.randn(2, 3, 64, 48)
  with torch.no_grad():
    want, _ = model(image)
    model.to(memory_format=torch.channels_last)
    got, _ = model(image.to(memory_format=torch.channels_last))
  torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
