"""Bilinear resizing equal to torch's `F.interpolate(mode='bilinear')`, as two small matrix products.

SANet and LDNet resize with both of torch's conventions (align_corners=True in their decoders and
losses, False in LDNet's head updater) and in both directions (LDNet halves its masks). Each axis is a
constant (out, in) matrix built in numpy from torch's source-index rule, so the op is exact for any
sizes, cheap to compile and differentiable as plain `einsum`s.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=None)
def interpolation_matrix(size_in: int, size_out: int, align_corners: bool) -> np.ndarray:
  """(size_out, size_in) float32 weights of torch's 1-D linear interpolation (no antialiasing).

  Output i samples s = i·(in−1)/(out−1) (align_corners) or s = max((i + ½)·in/out − ½, 0) and mixes
  inputs ⌊s⌋ and min(⌊s⌋ + 1, in − 1) with weights 1 − (s − ⌊s⌋) and s − ⌊s⌋.
  """
  out = np.arange(size_out, dtype=np.float64)
  if align_corners:
    source = out * ((size_in - 1) / (size_out - 1)) if size_out > 1 else np.zeros_like(out)
  else:
    source = np.maximum((out + 0.5) * (size_in / size_out) - 0.5, 0.0)
  low = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
  high = np.minimum(low + 1, size_in - 1)
  frac = source - low
  weights = np.zeros((size_out, size_in), np.float64)
  np.add.at(weights, (np.arange(size_out), low), 1.0 - frac)
  np.add.at(weights, (np.arange(size_out), high), frac)
  return weights.astype(np.float32)


def resize(x: jax.Array, height: int, width: int, *, align_corners: bool) -> jax.Array:
  """(B, H, W, C) -> (B, height, width, C), bilinear, torch's convention per `align_corners`."""
  _, h, w, _ = x.shape
  if (h, w) == (height, width):
    return x
  rows = jnp.asarray(interpolation_matrix(h, height, align_corners), x.dtype)  # (height, H)
  cols = jnp.asarray(interpolation_matrix(w, width, align_corners), x.dtype)  # (width, W)
  return jnp.einsum("ih,jw,bhwc->bijc", rows, cols, x)
