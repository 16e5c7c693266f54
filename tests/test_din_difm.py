"""DIN's DIFM is cross-image attention: a NumPy softmax(QKᵀ/√d)V reference for one branch, and the
original image's branch responding to the enhanced image (and to nothing else of it).

`tests/test_din.py` checks the I←E / E←I symmetry; that symmetry also holds if both branches
attend to their own image, so it cannot tell cross- from self-attention. These tests can.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from bsa_jax.models import din
from tests.test_attention import fast_jit
from tests.test_attention import numpy_init
from tests.test_din import tiny_din_setup


def _layer_norm(x, p, eps=1e-5):  # torch's epsilon, as swin.LayerNorm
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _dense(x, p):
  return x @ p["kernel"] + p["bias"]


def _avg_pool(x, p):
  """p×p average pool, stride p, a partial last window averaged over the pixels it holds."""
  b, h, w, c = x.shape
  out = np.zeros((b, -(-h // p), -(-w // p), c))
  for i in range(out.shape[1]):
    for j in range(out.shape[2]):
      out[:, i, j] = x[:, i * p:(i + 1) * p, j * p:(j + 1) * p].mean(axis=(1, 2))
  return out


def numpy_branch(params, query, context, num_heads, kv_pool):
  """The CrossImageBranch of din.py's docstring, written out in float64 NumPy."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  b, h, w, c = query.shape
  d = c // num_heads
  q = _dense(_layer_norm(query, p["norm_q"]), p["q"]).reshape(b, h * w, num_heads, d)
  kv = _layer_norm(context, p["norm_kv"])
  if kv_pool > 1:
    kv = _avg_pool(kv, kv_pool)
  k = _dense(kv, p["k"]).reshape(b, -1, num_heads, d)
  v = _dense(kv, p["v"]).reshape(b, -1, num_heads, d)
  scores = np.einsum("bnhd,bmhd->bhnm", q, k) / np.sqrt(d)  # (B, heads, N, M)
  attention = special.softmax(scores, axis=-1)
  attended = np.einsum("bhnm,bmhd->bnhd", attention, v).reshape(b, h, w, c)
  x = query + _dense(attended, p["out"])
  y = _dense(_layer_norm(x, p["norm_ffn"]), p["fc1"])
  y = _dense(0.5 * y * (1 + special.erf(y / np.sqrt(2))), p["fc2"])  # exact GELU
  gate = special.expit(y.mean(-1, keepdims=True))
  return y * gate, gate


@pytest.mark.parametrize("num_heads,kv_pool", [(1, 1), (2, 2)])
def test_cross_image_branch_equals_numpy_attention_over_the_other_image(num_heads, kv_pool):
  rng = np.random.default_rng(0)
  query = rng.normal(size=(2, 5, 6, 8)).astype(np.float32)  # one scale: a 5×6 map of width 8
  context = rng.normal(size=(2, 5, 6, 8)).astype(np.float32)
  branch = din.CrossImageBranch(num_heads=num_heads, kv_pool=kv_pool, mlp_ratio=2.0)
  variables = numpy_init(branch, query, context, seed=1)
  out, gate = fast_jit(branch.apply)(variables, query, context)
  want_out, want_gate = numpy_branch(variables["params"], query, context, num_heads, kv_pool)
  np.testing.assert_allclose(np.asarray(gate), want_gate, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(out), want_out, rtol=1e-4, atol=1e-5)
  # The keys and values really come from `context`: attending to the query itself is far off.
  self_out, _ = numpy_branch(variables["params"], query, query, num_heads, kv_pool)
  assert np.abs(self_out - want_out).max() > 1e-2


def test_the_original_images_branch_changes_when_only_the_enhanced_image_changes():
  image, enhanced, variables, apply = tiny_din_setup(1)
  _, aux = apply(variables, image, enhanced)
  _, other = apply(variables, image, jnp.flip(enhanced, axis=1))  # same values, other places
  for k in range(din.NUM_SCALES):
    # The original image's own features are untouched by the enhanced image...
    np.testing.assert_array_equal(other[f"merge_{k}/original"], aux[f"merge_{k}/original"])
    # ...but its DIFM branch (queries from the original, keys/values from the enhanced) moves.
    moved = float(np.abs(np.asarray(other[f"difm_{k}/i_from_e"]) - aux[f"difm_{k}/i_from_e"]).max())
    assert moved > 1e-3, f"scale {k}: I←E ignores the enhanced image (max change {moved:.2g})"
