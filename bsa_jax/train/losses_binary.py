"""Training losses for binary polyp/lesion segmentation.

`structure_loss` is PraNet's weighted BCE + weighted IoU (DengPingFan/PraNet:MyTrain.py, restated in
DECISIONS D6): pixels near the mask's edges get up to 6× weight. Deep supervision adds the same loss on
every side output (upsampled to the mask size) and the Attention Rendering Module adds a point loss.
Everything is computed in float32.
"""

import jax
import jax.numpy as jnp
import ml_collections as mlc
import optax


def edge_weight(mask: jax.Array, kernel: int = 31) -> jax.Array:
  """1 + 5·|avgpool(mask) − mask|; avg-pool counts zero padding like torch's default.

  The k×k box sum runs as a k×1 then a 1×k sum: XLA:CPU loops over every window element, so the
  separable form does 2k instead of k² adds (389 → 10 ms at 256² batch 16, bench/NOTES.md). On 0/1
  masks every partial sum is an integer, so the result is bit-identical to the k×k window.
  """
  pad = kernel // 2
  column_sums = jax.lax.reduce_window(  # (B, H, W, C): sums over k rows
      mask, 0.0, jax.lax.add, (1, kernel, 1, 1), (1, 1, 1, 1), ((0, 0), (pad, pad), (0, 0), (0, 0)))
  box_sums = jax.lax.reduce_window(  # (B, H, W, C): then over k columns
      column_sums, 0.0, jax.lax.add, (1, 1, kernel, 1), (1, 1, 1, 1), ((0, 0), (0, 0), (pad, pad), (0, 0)))
  pooled = box_sums / (kernel * kernel)
  return 1.0 + 5.0 * jnp.abs(pooled - mask)


def structure_loss(logits: jax.Array, mask: jax.Array) -> jax.Array:
  """Weighted BCE + weighted IoU, averaged over the batch.

  Args:
    logits: (B, H, W, 1) float.
    mask: (B, H, W, 1) float in {0, 1}.
  """
  logits = logits.astype(jnp.float32)
  weight = edge_weight(mask)  # (B, H, W, 1)
  bce = optax.sigmoid_binary_cross_entropy(logits, mask)
  wbce = (weight * bce).sum(axis=(1, 2, 3)) / weight.sum(axis=(1, 2, 3))
  prob = jax.nn.sigmoid(logits)
  inter = (prob * mask * weight).sum(axis=(1, 2, 3))
  union = ((prob + mask) * weight).sum(axis=(1, 2, 3))
  wiou = 1.0 - (inter + 1.0) / (union - inter + 1.0)
  return (wbce + wiou).mean()


def resize_logits(logits: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear resize (half-pixel centres, like torch align_corners=False) to (height, width)."""
  n, h, w, c = logits.shape
  if (h, w) == (height, width):
    return logits
  return jax.image.resize(logits, (n, height, width, c), method="bilinear", antialias=False)


def sample_nearest(mask: jax.Array, coords: jax.Array) -> jax.Array:
  """Samples `mask` (B, H, W, C) at `coords` (B, N, 2) = (y, x) in [0, 1] → (B, N, C)."""
  _, h, w, _ = mask.shape
  rows = jnp.clip(jnp.floor(coords[..., 0] * h), 0, h - 1).astype(jnp.int32)  # (B, N)
  cols = jnp.clip(jnp.floor(coords[..., 1] * w), 0, w - 1).astype(jnp.int32)
  return jax.vmap(lambda m, r, c: m[r, c])(mask, rows, cols)


def binary_loss(logits: jax.Array, aux: dict, mask: jax.Array,
                train_config: mlc.ConfigDict) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Structure loss on the main output + deep supervision + the ARM's point loss; (loss, parts)."""
  _, height, width, _ = mask.shape
  parts = {"loss_main": structure_loss(resize_logits(logits, height, width), mask)}
  total = parts["loss_main"]
  side_outputs = aux.get("side_outputs", ())
  if side_outputs and train_config.deep_supervision_weight:
    side = sum(structure_loss(resize_logits(s, height, width), mask) for s in side_outputs)
    parts["loss_side"] = side / len(side_outputs)
    total = total + train_config.deep_supervision_weight * side
  if "arm" in aux and train_config.point_loss_weight:
    point_logits = aux["arm"]["logits"].astype(jnp.float32)  # (B, N, 1)
    point_labels = sample_nearest(mask, aux["arm"]["coords"])  # (B, N, 1)
    parts["loss_points"] = optax.sigmoid_binary_cross_entropy(point_logits, point_labels).mean()
    total = total + train_config.point_loss_weight * parts["loss_points"]
  return total, parts
