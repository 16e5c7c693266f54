"""ISAM and FSAM: shapes, the residual structure, shared pooling MLP, dilation and Swin alternation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from bsa_jax.models import attention
from bsa_jax.models.swin import SwinBlock


def _x(shape, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), shape)


# Test-only: XLA's CPU backend optimisations double the compile time and gain nothing at test sizes.
fast_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0,
                                                        "xla_llvm_disable_expensive_passes": True})


def numpy_init(module, *args, seed=0, **kwargs):
  """Variables of `module` filled from numpy (no XLA compile of the initialisers, which is slow on CPU).

  Kernels ~ N(0, 1/fan_in), biases ~ N(0, 0.1²), BatchNorm scale 1 and statistics (0, 1), anything
  else ~ N(0, 0.02²).
  """
  shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *args, **kwargs))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name, shape = path[-1].key, leaf.shape
    if name in ("scale", "var"):
      return jnp.ones(shape, leaf.dtype)
    if name == "mean":
      return jnp.zeros(shape, leaf.dtype)
    std = {"kernel": 1 / np.sqrt(np.prod(shape[:-1])), "bias": 0.1}.get(name, 0.02)
    return jnp.asarray(rng.normal(0.0, std, shape), leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _init(module, x):
  return numpy_init(module, x, train=False)


def _apply(module, variables, x, **kwargs):
  return fast_jit(lambda v, x: module.apply(v, x, train=False, **kwargs))(variables, x)


def _zero_bn(variables, path):
  """Copy of `variables` with the BatchNorm at `path` (tuple of names) outputting exactly 0."""
  variables = jax.tree.map(lambda v: v, variables)
  node = variables["params"]
  for name in path:
    node = node[name]
  node["scale"] = jnp.zeros_like(node["scale"])
  node["bias"] = jnp.zeros_like(node["bias"])
  return variables


# ----------------------------------------------------------------------------------------------------
# FSAM

FSAM = attention.FSAM(reduction=4)
_fsam_apply = fast_jit(lambda v, x: FSAM.apply(v, x, train=False))


def test_fsam_shapes_and_alpha_range():
  x = _x((2, 8, 8, 16))
  variables = _init(FSAM, x)
  out, alpha = _fsam_apply(variables, x)
  assert out.shape == x.shape and alpha.shape == (2, 1, 1, 16)
  assert bool(jnp.all((alpha > 0) & (alpha < 1)))
  mlp = variables["params"]["mlp"]  # one FC stack, shared by both pools
  assert mlp["fc1"]["kernel"].shape == (16, 4) and mlp["fc2"]["kernel"].shape == (4, 16)
  assert set(variables["params"]) == {"conv", "dconv", "mlp"}


def test_fsam_is_alpha_times_input_plus_conv():
  x = _x((2, 8, 8, 16))
  variables = _init(FSAM, x)
  # Conv branch zeroed: c = 0, so g = ReLU(bn bias of dconv) is constant and out = α·f exactly.
  zeroed = _zero_bn(variables, ("conv", "bn"))
  out, alpha = _fsam_apply(zeroed, x)
  np.testing.assert_allclose(out, alpha * x, atol=1e-6)
  # With the FC stack also zeroed, α = σ(0 + 0) = 1/2.
  zeroed["params"]["mlp"] = jax.tree.map(jnp.zeros_like, zeroed["params"]["mlp"])
  out, alpha = _fsam_apply(zeroed, x)
  np.testing.assert_allclose(alpha, 0.5)
  np.testing.assert_allclose(out, 0.5 * x, atol=1e-6)
  # With the real conv branch, out - α·f is the (non-negative, ReLU) conv block output.
  out, alpha = _fsam_apply(variables, x)
  residual = out - alpha * x
  assert float(residual.min()) > -1e-5 and float(residual.max()) > 0.1


def test_fsam_alpha_pools_the_dilated_conv_by_average_and_max_through_one_mlp():
  x = _x((2, 8, 8, 16), seed=3)
  variables = _init(FSAM, x)
  (_, alpha), state = fast_jit(lambda v, x: FSAM.apply(v, x, train=False,
                                                      capture_intermediates=True))(variables, x)
  g = state["intermediates"]["dconv"]["__call__"][0]  # (B, h, w, C)
  mlp = attention.ChannelMLP(4)
  mlp_params = {"params": variables["params"]["mlp"]}
  expected = jax.nn.sigmoid(mlp.apply(mlp_params, g.mean(axis=(1, 2), keepdims=True))
                            + mlp.apply(mlp_params, g.max(axis=(1, 2), keepdims=True)))
  np.testing.assert_allclose(alpha, expected, atol=1e-6)


def test_global_max_pool_routes_the_gradient_to_the_first_maximum():
  x = jnp.array([[1.0, 3.0], [3.0, 2.0]])[None, :, :, None] * jnp.array([1.0, -1.0])  # (1, 2, 2, 2)
  pooled = attention.global_max_pool(x)
  np.testing.assert_array_equal(pooled[0, 0, 0], [3.0, -1.0])
  grad = jax.grad(lambda x: jnp.sum(attention.global_max_pool(x) * jnp.array([2.0, 5.0])))(x)
  # Channel 0 ties at (0, 1) and (1, 0): all of it goes to the first in row-major order.
  np.testing.assert_array_equal(grad[0, :, :, 0], [[0.0, 2.0], [0.0, 0.0]])
  np.testing.assert_array_equal(grad[0, :, :, 1], [[5.0, 0.0], [0.0, 0.0]])


def test_fsam_training_gradient_is_finite_and_equal_under_unoptimised_xla():
  """Regression: with jnp.max, XLA -O0 recomputed g slightly differently, so the max's equality test
  matched no position and every gradient below FSAM was NaN."""
  x = _x((2, 4, 4, 64), seed=5)
  fsam = attention.FSAM()
  variables = numpy_init(fsam, x, train=False)

  def loss(params, x):
    (out, alpha), _ = fsam.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                                 train=True, mutable=["batch_stats"])
    return jnp.sum(alpha) + jnp.mean(out)

  grads_o0 = fast_jit(jax.grad(loss, argnums=(0, 1)))(variables["params"], x)
  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables["params"], x)
  for (path, g_o0), g in zip(jax.tree_util.tree_leaves_with_path(grads_o0),
                             jax.tree_util.tree_leaves(grads)):
    assert np.all(np.isfinite(g_o0)), f"non-finite gradient at {jax.tree_util.keystr(path)}"
    np.testing.assert_allclose(g_o0, g, rtol=1e-3, atol=1e-5, err_msg=jax.tree_util.keystr(path))


def test_dilated_conv_block_reaches_two_pixels_away():
  block = attention.ConvBNReLU(1, dilation=2)
  impulse = jnp.zeros((1, 9, 9, 1)).at[0, 4, 4, 0].set(1.0)
  variables = _init(block, impulse)
  variables["params"]["conv"]["kernel"] = jnp.ones_like(variables["params"]["conv"]["kernel"])
  variables["params"]["bn"]["bias"] = jnp.zeros_like(variables["params"]["bn"]["bias"])
  out = np.asarray(_apply(block, variables, impulse))[0, :, :, 0]
  taps = np.zeros((9, 9), bool)
  taps[2:7:2, 2:7:2] = True  # centre ± 2 in each axis
  assert np.all(out[taps] > 0.99) and np.all(out[~taps] == 0)


# ----------------------------------------------------------------------------------------------------
# ISAM

def test_isam_shapes_and_projection_only_when_widths_differ():
  x = _x((2, 8, 8, 16))
  same = attention.ISAM(dim=16, num_heads=2, depth=2, window_size=4)
  params = jax.eval_shape(lambda x: same.init(jax.random.PRNGKey(0), x, train=False), x)["params"]
  assert set(params) == {"blocks_0", "blocks_1", "conv"}
  wide = attention.ISAM(dim=32, num_heads=2, depth=2, window_size=4)
  params = jax.eval_shape(lambda x: wide.init(jax.random.PRNGKey(0), x, train=False), x)["params"]
  assert set(params) == {"proj_in", "blocks_0", "blocks_1", "proj_out", "conv"}
  assert params["proj_in"]["kernel"].shape == (16, 32)
  assert params["proj_out"]["kernel"].shape == (32, 16)
  assert params["conv"]["conv"]["kernel"].shape == (3, 3, 16, 16)  # Conv block at the encoder width


@functools.lru_cache(maxsize=None)
def _isam(dim: int):
  """(module, variables, jitted eval apply) for a two-block ISAM on 16 channels, built once."""
  isam = attention.ISAM(dim=dim, num_heads=2, depth=2, window_size=4)
  variables = _init(isam, _x((2, 8, 8, 16)))
  return isam, variables, fast_jit(lambda v, x: isam.apply(v, x, train=False))


def test_isam_is_identity_when_its_conv_block_is_zeroed():
  x = _x((2, 8, 8, 16))
  for dim in (16, 32):  # without and with projections
    _, variables, apply = _isam(dim)
    out = apply(variables, x)
    assert out.shape == x.shape
    assert float(jnp.abs(out - x).max()) > 1e-2  # the attention branch contributes
    assert float((out - x).min()) > -1e-5  # ... through the ReLU of the Conv block
    np.testing.assert_array_equal(apply(_zero_bn(variables, ("conv", "bn")), x), x)


def test_isam_alternates_regular_and_shifted_windows():
  x = _x((2, 8, 8, 16), seed=1)
  _, variables, apply = _isam(16)
  params = variables["params"]

  @fast_jit
  def by_hand(x):
    y = SwinBlock(16, 2, window_size=4, shift_size=0).apply({"params": params["blocks_0"]}, x)
    y = SwinBlock(16, 2, window_size=4, shift_size=2).apply({"params": params["blocks_1"]}, y)
    conv = {"params": params["conv"], "batch_stats": variables["batch_stats"]["conv"]}
    return x + attention.ConvBNReLU(16).apply(conv, y, train=False)

  np.testing.assert_allclose(apply(variables, x), by_hand(x), atol=1e-5)
