"""Grouped convolutions: every implementation equals XLA's native grouped conv, values and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bsa_jax.models import resnext


@pytest.mark.parametrize("impl", ["block_diagonal", "per_group"])
@pytest.mark.parametrize("cin,cout,groups,strides", [(16, 16, 8, 1), (24, 48, 4, 2), (96, 96, 8, 1)])
def test_impl_equals_native_grouped_conv(impl, cin, cout, groups, strides):
  x = jax.random.normal(jax.random.key(0), (2, 10, 10, cin))  # (B, H, W, C)
  native = resnext.GroupedConv(cout, 3, strides, groups, impl="native")
  other = resnext.GroupedConv(cout, 3, strides, groups, impl=impl)
  params = native.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, other.init(jax.random.key(1), x))

  def loss(module, p, x):
    return jnp.sum(jnp.sin(module.apply(p, x)))

  y_ref, y = native.apply(params, x), other.apply(params, x)
  assert y.shape == y_ref.shape == (2, 10 // strides, 10 // strides, cout)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  g_ref = jax.grad(lambda p, x: loss(native, p, x), argnums=(0, 1))(params, x)
  g = jax.grad(lambda p, x: loss(other, p, x), argnums=(0, 1))(params, x)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_same_parameter_and_initial_values_as_flax_grouped_conv():
  """Checkpoints and timm ports written for nn.Conv(feature_group_count=g) load unchanged."""
  x = jnp.ones((1, 8, 8, 32))
  ours = resnext.GroupedConv(64, 3, 1, 8).init(jax.random.key(3), x)
  flax_conv = nn.Conv(64, (3, 3), padding=((1, 1), (1, 1)), feature_group_count=8, use_bias=False,
                      kernel_init=resnext._conv_init).init(jax.random.key(3), x)
  assert jax.tree.structure(ours) == jax.tree.structure(flax_conv)
  np.testing.assert_array_equal(ours["params"]["kernel"], flax_conv["params"]["kernel"])


def test_auto_picks_a_dense_form_on_cpu_and_rejects_unknown_names():
  assert jax.default_backend() == "cpu"
  assert resnext.grouped_conv_impl("auto", 16) == "block_diagonal"
  assert resnext.grouped_conv_impl("auto", 192) == "per_group"
  with pytest.raises(ValueError, match="use one of auto, native"):
    resnext.grouped_conv_impl("winograd", 16)
