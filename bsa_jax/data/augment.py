"""Training augmentation (off in the paper's protocol): flips, rot90, scale, colour jitter.

Geometric ops are applied identically to image and mask. Everything runs on the already resized uint8
image (S, S, 3) and its (S, S) mask, with a numpy Generator seeded per example by the pipeline, so a
batch is the same whichever process or worker computes it.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from bsa_jax.data import preprocess


def _scale(image: np.ndarray, mask: np.ndarray, factor: float, rng: np.random.Generator):
  """Zooms by `factor` and crops (zoom in) or zero-pads (zoom out) back to (S, S) at a random offset."""
  size = image.shape[0]
  new = max(1, int(round(size * factor)))
  if new == size:
    return image, mask
  image = preprocess.resize_image(image, new)
  mask = preprocess.resize_mask(mask, new)
  if new > size:
    y, x = rng.integers(0, new - size + 1, size=2)
    return image[y:y + size, x:x + size], mask[y:y + size, x:x + size]
  y, x = rng.integers(0, size - new + 1, size=2)
  out_img = np.zeros((size, size, 3), image.dtype)
  out_mask = np.zeros((size, size), mask.dtype)
  out_img[y:y + new, x:x + new] = image
  out_mask[y:y + new, x:x + new] = mask
  return out_img, out_mask


def _color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
  """Brightness, contrast and saturation each scaled by a factor in [1 - strength, 1 + strength]."""
  x = image.astype(np.float32)
  b, c, s = rng.uniform(1 - strength, 1 + strength, size=3)
  x = x * b
  x = (x - x.mean()) * c + x.mean()
  grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
  x = (x - grey[..., None]) * s + grey[..., None]
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def augment(image: np.ndarray, mask: np.ndarray, cfg: Mapping,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """uint8 (S, S, 3), mask (S, S) -> the same shapes, randomly transformed per `cfg` (config.data.augment)."""
  if rng.random() < cfg["hflip"]:
    image, mask = image[:, ::-1], mask[:, ::-1]
  if rng.random() < cfg["vflip"]:
    image, mask = image[::-1], mask[::-1]
  if cfg["rotate90"]:
    k = int(rng.integers(0, 4))
    image, mask = np.rot90(image, k), np.rot90(mask, k)
  lo, hi = cfg["scale_min"], cfg["scale_max"]
  if hi > lo or lo != 1.0:
    image, mask = _scale(np.ascontiguousarray(image), np.ascontiguousarray(mask),
                         float(rng.uniform(lo, hi)), rng)
  if cfg["color_jitter"] > 0:
    image = _color_jitter(image, cfg["color_jitter"], rng)
  return np.ascontiguousarray(image), np.ascontiguousarray(mask)
