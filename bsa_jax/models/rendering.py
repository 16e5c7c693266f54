"""Attention Rendering Module (ARM): refines the decoder's coarse logits where they are uncertain.

The BSA-Net paper only says the ARM "draws on the optimization idea of rendering" to sharpen edges; we
read it as a PointRend head (Kirillov et al., "PointRend: Image Segmentation as Rendering"; DECISIONS D1,
detectron2 `projects/PointRend` semantic-segmentation configuration):

- training: pick N points per image, β·N of them the most uncertain among k·N uniform candidates and
  (1-β)·N uniform, then predict their logits with an MLP over bilinear samples of fine features and of
  the coarse logits; the trainer supervises those point logits with the GT sampled at the same points;
- inference: adaptive subdivision — upsample ×2, recompute the N most uncertain grid points, scatter
  them back, repeat; every other pixel keeps its bilinear value.

Everything has static shapes (fixed N, `jax.lax.top_k`, flat-index gathers and scatters), so one
compilation serves every batch. Points are (y, x) in [0, 1] image coordinates with the
align_corners=False convention: pixel i of an n-pixel axis covers [i/n, (i+1)/n), centre (i+0.5)/n.

`DenseEdgeARM` is the cheaper alternative of DECISIONS D1: out = L + Conv(F·w), with the edge weight
w = 1 - (p_top1 - p_top2) (= 1 - |2σ(L) - 1| for one binary logit).
"""

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn


# ----------------------------------------------------------------------------------------------------
# Point utilities (pure functions).

def point_sample(features: jax.Array, coords: jax.Array) -> jax.Array:
  """Bilinear samples of `features` (B, h, w, C) at `coords` (B, N, 2) (y, x) in [0, 1] -> (B, N, C).

  align_corners=False pixel centres (pixel p = u·n - 0.5). Outside the outermost centres the nearest
  edge value is used (torch's grid_sample pads with zeros instead, which would pull border logits
  towards 0); with this choice sampling at the centres of a ×2 grid equals bilinear ×2 upsampling.
  """
  b, h, w, c = features.shape
  coords = coords.astype(jnp.float32)
  y = jnp.clip(coords[..., 0] * h - 0.5, 0.0, h - 1.0)  # (B, N) in pixel units
  x = jnp.clip(coords[..., 1] * w - 0.5, 0.0, w - 1.0)
  y0 = jnp.floor(y)
  x0 = jnp.floor(x)
  wy = (y - y0)[..., None].astype(features.dtype)  # (B, N, 1)
  wx = (x - x0)[..., None].astype(features.dtype)
  y0 = y0.astype(jnp.int32)
  x0 = x0.astype(jnp.int32)
  y1 = jnp.minimum(y0 + 1, h - 1)
  x1 = jnp.minimum(x0 + 1, w - 1)
  flat = features.reshape(b, h * w, c)
  gather = jax.vmap(lambda f, i: f[i])  # (hw, C), (N,) -> (N, C)
  top = (1 - wx) * gather(flat, y0 * w + x0) + wx * gather(flat, y0 * w + x1)
  bottom = (1 - wx) * gather(flat, y1 * w + x0) + wx * gather(flat, y1 * w + x1)
  return (1 - wy) * top + wy * bottom  # (B, N, C)


def uncertainty(logits: jax.Array) -> jax.Array:
  """PointRend's uncertainty (..., K) -> (...): -|logit| for one binary logit, else -(top1 - top2)."""
  logits = logits.astype(jnp.float32)
  if logits.shape[-1] == 1:
    return -jnp.abs(logits[..., 0])
  top2, _ = jax.lax.top_k(logits, 2)
  return top2[..., 1] - top2[..., 0]


def flat_index_to_coords(index: jax.Array, height: int, width: int) -> jax.Array:
  """Centres (..., 2) as (y, x) of the pixels with row-major flat `index` (...) on a height×width grid."""
  y = (index // width).astype(jnp.float32) + 0.5
  x = (index % width).astype(jnp.float32) + 0.5
  return jnp.stack([y / height, x / width], axis=-1)


def sample_training_points(rng: jax.Array, coarse_logits: jax.Array, grid_hw: tuple[int, int],
                           num_points: int, oversample: int, importance: float) -> jax.Array:
  """PointRend's training points: the β·N most uncertain of k·N uniform candidates plus (1-β)·N uniform.

  Candidates are centres of `grid_hw` pixels (the output grid), so the GT label of each point is the
  label of one output pixel. Returns (B, N, 2) (y, x) coordinates in [0, 1]; no gradient flows.
  """
  b = coarse_logits.shape[0]
  height, width = grid_hw
  num_uncertain = int(round(importance * num_points))
  num_uniform = num_points - num_uncertain
  rng_candidates, rng_uniform = jax.random.split(rng)
  candidate_index = jax.random.randint(rng_candidates, (b, oversample * num_points), 0, height * width)
  candidates = flat_index_to_coords(candidate_index, height, width)  # (B, kN, 2)
  scores = uncertainty(point_sample(jax.lax.stop_gradient(coarse_logits), candidates))  # (B, kN)
  _, top = jax.lax.top_k(scores, num_uncertain)  # (B, βN)
  chosen = jnp.take_along_axis(candidates, top[..., None], axis=1)  # (B, βN, 2)
  uniform = flat_index_to_coords(
      jax.random.randint(rng_uniform, (b, num_uniform), 0, height * width), height, width)
  return jnp.concatenate([chosen, uniform], axis=1)  # (B, N, 2)


def subdivision_step(logits: jax.Array, target_hw: tuple[int, int], num_points: int,
                     predict_points: Callable[[jax.Array], jax.Array]) -> tuple[jax.Array, jax.Array]:
  """One adaptive-subdivision step: bilinear upsample to `target_hw`, re-predict the N most uncertain.

  Args:
    logits: (B, h, w, K) current prediction.
    target_hw: output grid (at most ×2 of the input one in PointRend; any size works).
    num_points: N; clipped to the number of output pixels.
    predict_points: maps coords (B, N, 2) to point logits (B, N, K).

  Returns:
    The refined (B, H, W, K) logits and the flat indices (B, N) of the recomputed pixels; every other
    pixel holds exactly its bilinear value.
  """
  b, _, _, k = logits.shape
  height, width = target_hw
  up = jax.image.resize(logits, (b, height, width, k), "bilinear")  # half-pixel centres
  n = min(num_points, height * width)
  _, index = jax.lax.top_k(uncertainty(up).reshape(b, height * width), n)  # (B, N)
  point_logits = predict_points(flat_index_to_coords(index, height, width)).astype(up.dtype)
  scatter = jax.vmap(lambda flat, i, v: flat.at[i].set(v))  # (HW, K), (N,), (N, K)
  refined = scatter(up.reshape(b, height * width, k), index, point_logits)
  return refined.reshape(b, height, width, k), index


def edge_weight(logits: jax.Array) -> jax.Array:
  """Dense edge attention (B, h, w, K) -> (B, h, w, 1): 1 at even odds, 0 where one class is sure."""
  logits = logits.astype(jnp.float32)
  if logits.shape[-1] == 1:
    return 1.0 - jnp.abs(2.0 * jax.nn.sigmoid(logits) - 1.0)
  top2, _ = jax.lax.top_k(jax.nn.softmax(logits, axis=-1), 2)
  return (1.0 - (top2[..., 0] - top2[..., 1]))[..., None]


# ----------------------------------------------------------------------------------------------------
# Modules.

class PointHead(nn.Module):
  """PointRend's point head: FC-ReLU layers with the coarse logit re-concatenated before each layer.

  Attributes:
    num_classes: K, the logits per point.
    fc_dim: width of each hidden layer (256 in PointRend).
    num_fc: number of hidden layers (3 in PointRend).
    dtype: compute dtype.
  """
  num_classes: int
  fc_dim: int = 256
  num_fc: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, fine: jax.Array, coarse: jax.Array) -> jax.Array:
    """(B, N, C) fine features and (B, N, K) coarse logits -> (B, N, K) float32 point logits."""
    coarse = coarse.astype(self.dtype)
    x = fine.astype(self.dtype)
    for i in range(self.num_fc):
      x = jnp.concatenate([x, coarse], axis=-1)  # (B, N, C_i + K)
      x = nn.relu(nn.Dense(self.fc_dim, kernel_init=nn.initializers.he_normal(), dtype=self.dtype,
                           name=f"fc{i + 1}")(x))
    x = jnp.concatenate([x, coarse], axis=-1)
    # A tiny initial output (detectron2 uses std 0.001) so early point logits follow the coarse ones.
    x = nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(1e-3), dtype=self.dtype,
                 name="predictor")(x)
    return x.astype(jnp.float32)


class PointRendARM(nn.Module):
  """PointRend refinement of coarse logits using fine feature maps (docs/DECISIONS.md#d1).

  Attributes:
    num_classes: K.
    train_points: N points per image in training.
    oversample: k, candidates per training point.
    importance: β, the fraction of training points chosen by uncertainty.
    subdivision_points: N pixels recomputed per subdivision step at inference.
    subdivision_steps: number of ×2 subdivision steps at inference (a final bilinear resize reaches the
      output size if the steps stop short of it).
    fc_dim, num_fc: point-head MLP shape.
    dtype: compute dtype.
  """
  num_classes: int
  train_points: int = 2048
  oversample: int = 3
  importance: float = 0.75
  subdivision_points: int = 8192
  subdivision_steps: int = 2
  fc_dim: int = 256
  num_fc: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, coarse_logits: jax.Array, fine_features: Sequence[jax.Array],
               out_hw: tuple[int, int], *, train: bool = False):
    """Returns (B, H, W, K) float32 logits at `out_hw` and a dict of point outputs (training only).

    Args:
      coarse_logits: (B, h, w, K) decoder logits.
      fine_features: maps (B, h_i, w_i, C_i) sampled at every point and concatenated.
      out_hw: (H, W), the output (input-image) resolution.
      train: sample random points with the 'points' rng instead of subdividing.
    """
    head = PointHead(self.num_classes, self.fc_dim, self.num_fc, self.dtype, name="point_head")
    coarse_logits = coarse_logits.astype(jnp.float32)
    b, _, _, k = coarse_logits.shape

    def predict_points(coords):  # (B, N, 2) -> (B, N, K)
      fine = jnp.concatenate([point_sample(f, coords) for f in fine_features], axis=-1)
      return head(fine, point_sample(coarse_logits, coords))

    if train:
      coords = sample_training_points(self.make_rng("points"), coarse_logits, out_hw,
                                      self.train_points, self.oversample, self.importance)
      logits = jax.image.resize(coarse_logits, (b, *out_hw, k), "bilinear")
      return logits, {"coords": coords, "logits": predict_points(coords)}

    logits = coarse_logits
    for _ in range(self.subdivision_steps):
      h, w = logits.shape[1:3]
      target = (min(2 * h, out_hw[0]), min(2 * w, out_hw[1]))
      logits, _ = subdivision_step(logits, target, self.subdivision_points, predict_points)
    if logits.shape[1:3] != tuple(out_hw):
      logits = jax.image.resize(logits, (b, *out_hw, k), "bilinear")
    return logits, {}


class DenseEdgeARM(nn.Module):
  """Dense edge-attention refinement: out = L + Conv(F·w) at the finest feature resolution.

  Attributes:
    num_classes: K.
    kernel_size: the refinement convolution's kernel.
    dtype: compute dtype.
  """
  num_classes: int
  kernel_size: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, coarse_logits: jax.Array, fine_features: Sequence[jax.Array],
               out_hw: tuple[int, int], *, train: bool = False):
    """Same signature as `PointRendARM`; fine maps are resized to the first (finest) one's grid."""
    del train  # the same dense computation in training and inference
    b, h, w, _ = fine_features[0].shape
    k = coarse_logits.shape[-1]
    fine = jnp.concatenate(
        [f if f.shape[1:3] == (h, w) else jax.image.resize(f, (b, h, w, f.shape[-1]), "bilinear")
         for f in fine_features], axis=-1).astype(self.dtype)  # (B, h, w, ΣC)
    coarse = jax.image.resize(coarse_logits.astype(jnp.float32), (b, h, w, k), "bilinear")
    weighted = fine * edge_weight(coarse).astype(self.dtype)  # (B, h, w, ΣC)
    pad = self.kernel_size // 2
    delta = nn.Conv(k, (self.kernel_size, self.kernel_size), padding=((pad, pad), (pad, pad)),
                    dtype=self.dtype, name="refine")(weighted)
    logits = coarse + delta.astype(jnp.float32)  # (B, h, w, K)
    if (h, w) != tuple(out_hw):
      logits = jax.image.resize(logits, (b, *out_hw, k), "bilinear")
    return logits, {}
