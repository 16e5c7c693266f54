"""DIN's training loss: 0.3·CE + 0.7·Dice + L_bnd, with deep supervision (docs/DECISIONS.md#d9).

- CE: softmax cross-entropy, mean over pixels.
- Dice: TransUNet/MERIT's `DiceLoss` (Beckschen/TransUNet:utils.py; DECISIONS D9): softmax
  probabilities p and one-hot labels g including the background; per class c, over the whole batch,
  1 − (2·Σ p_c g_c + 1e-5) / (Σ p_c² + Σ g_c² + 1e-5) (squared denominators); mean over all classes.
- L_bnd (DIN's multi-scale boundary loss, figure text): Σ_{i ∈ scales} mean |G(avgpool_i(p)) −
  G(avgpool_i(g))|, avgpool_i an i×i average pool of stride i, G a per-class gradient extractor.
  The paper leaves G, the reduction and the inputs open; we use p = softmax, g = one-hot, mean
  reduction and, by default, the Sobel gradient magnitude √(gx² + gy² + ε) on edge-padded maps
  (ε = 1e-12 keeps the gradient finite where both Sobel responses are 0; it cancels in the
  difference). Options: 'sobel_l1' (|gx| + |gy|) and 'laplacian' (|4-neighbour Laplacian|).

Weights, scales and operator come from `config.train` (ce_weight, dice_weight, boundary_weight,
boundary_scales, boundary_operator). Each side output gets the same loss after bilinear upsampling
to the label size, weighted by `deep_supervision_weight` (as `losses_binary.binary_loss` does for
BSA-Net).

Binary data (one logit per pixel, float masks (B, S, S, 1)) is handled as two classes with logits
(0, l): softmax over them is σ(l), so CE is exactly BCE and the polyp metrics still read one logit.
Everything is computed in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections as mlc
import optax

from bsa_jax.train.losses_binary import resize_logits

OPERATORS = ("sobel", "sobel_l1", "laplacian")
_MAGNITUDE_EPS = 1e-12


def as_multiclass(logits: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(logits (B, H, W, K≥2), labels int32 (B, H, W)); a single binary logit l becomes (0, l)."""
  logits = logits.astype(jnp.float32)
  if logits.shape[-1] == 1:
    logits = jnp.concatenate([jnp.zeros_like(logits), logits], axis=-1)
  if mask.ndim == 4:  # binary float mask (B, H, W, 1)
    mask = mask[..., 0] > 0.5
  return logits, mask.astype(jnp.int32)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy; logits (B, H, W, K), labels int (B, H, W)."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def dice_loss(probs: jax.Array, one_hot: jax.Array, smooth: float = 1e-5) -> jax.Array:
  """TransUNet's Dice loss: per class over the batch, squared denominators, mean over classes."""
  axes = (0, 1, 2)
  intersection = jnp.sum(probs * one_hot, axis=axes)  # (K,)
  denominator = jnp.sum(probs * probs, axis=axes) + jnp.sum(one_hot * one_hot, axis=axes)
  return jnp.mean(1.0 - (2.0 * intersection + smooth) / (denominator + smooth))


def gradient_map(x: jax.Array, operator: str = "sobel") -> jax.Array:
  """Per-channel gradient strength of (B, h, w, K) maps, edge-padded so flat borders give 0."""
  if operator not in OPERATORS:
    raise ValueError(f"--config.train.boundary_operator={operator!r}; choose from {OPERATORS}.")
  p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")  # (B, h+2, w+2, K)
  up, mid, down = p[:, :-2], p[:, 1:-1], p[:, 2:]  # row offsets -1, 0, +1
  if operator == "laplacian":
    lap = up[:, :, 1:-1] + down[:, :, 1:-1] + mid[:, :, :-2] + mid[:, :, 2:] - 4.0 * mid[:, :, 1:-1]
    return jnp.abs(lap)
  smooth_rows = up + 2.0 * mid + down  # (B, h, w+2, K): Sobel's [1, 2, 1] across rows
  gx = smooth_rows[:, :, 2:] - smooth_rows[:, :, :-2]
  left, centre, right = p[:, :, :-2], p[:, :, 1:-1], p[:, :, 2:]
  smooth_cols = left + 2.0 * centre + right  # (B, h+2, w, K)
  gy = smooth_cols[:, 2:] - smooth_cols[:, :-2]
  if operator == "sobel_l1":
    return jnp.abs(gx) + jnp.abs(gy)
  return jnp.sqrt(gx * gx + gy * gy + _MAGNITUDE_EPS)


def average_pool(x: jax.Array, size: int) -> jax.Array:
  """size×size average pool with stride `size` (VALID: a partial last row/column is dropped)."""
  if size == 1:
    return x
  return jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, size, size, 1), (1, size, size, 1),
                               "VALID") / (size * size)


def boundary_loss(probs: jax.Array, one_hot: jax.Array, scales=(1, 2, 4),
                  operator: str = "sobel") -> jax.Array:
  """L_bnd = Σ_scales mean |G(avgpool_s(probs)) − G(avgpool_s(one_hot))|; inputs (B, H, W, K)."""
  total = jnp.zeros((), jnp.float32)
  for s in scales:
    pred_edges = gradient_map(average_pool(probs, int(s)), operator)
    true_edges = gradient_map(average_pool(one_hot, int(s)), operator)
    total = total + jnp.mean(jnp.abs(pred_edges - true_edges))
  return total


def din_terms(logits: jax.Array, labels: jax.Array,
              train_config: mlc.ConfigDict) -> dict[str, jax.Array]:
  """{'ce', 'dice', 'boundary', 'total'} of logits (B, H, W, K≥2) against labels (B, H, W)."""
  probs = jax.nn.softmax(logits, axis=-1)
  one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
  terms = {
      "ce": cross_entropy(logits, labels),
      "dice": dice_loss(probs, one_hot),
      "boundary": boundary_loss(probs, one_hot, tuple(train_config.boundary_scales),
                                train_config.boundary_operator),
  }
  terms["total"] = (train_config.ce_weight * terms["ce"] + train_config.dice_weight * terms["dice"]
                    + train_config.boundary_weight * terms["boundary"])
  return terms


def din_loss(logits: jax.Array, aux: dict, mask: jax.Array,
             train_config: mlc.ConfigDict) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Total loss = DIN loss of the prediction + deep_supervision_weight · Σ over side outputs.

  Args:
    logits: (B, S, S, K) float at the label resolution (K = 1 for binary data, see the module doc).
    aux: the model's aux dict; its 'side_outputs' (B, h, w, K) are upsampled to S.
    mask: int32 labels (B, S, S), or a binary float mask (B, S, S, 1).
    train_config: config.train.

  Returns:
    (loss, parts): parts has 'loss_ce', 'loss_dice', 'loss_boundary' and 'loss_main' of the
    prediction, and 'loss_side' (mean over side outputs) when they are supervised.
  """
  logits, labels = as_multiclass(logits, mask)
  _, height, width = labels.shape
  main = din_terms(resize_logits(logits, height, width), labels, train_config)
  parts = {"loss_ce": main["ce"], "loss_dice": main["dice"], "loss_boundary": main["boundary"],
           "loss_main": main["total"]}
  total = main["total"]
  side_outputs = aux.get("side_outputs", ())
  if side_outputs and train_config.deep_supervision_weight:
    side = sum(din_terms(resize_logits(as_multiclass(s, mask)[0], height, width), labels,
                         train_config)["total"] for s in side_outputs)
    parts["loss_side"] = side / len(side_outputs)
    total = total + train_config.deep_supervision_weight * side
  return total, parts
