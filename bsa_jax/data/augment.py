"""Training augmentation (off in the paper's protocol): flips, rot90, scale, colour jitter, and the
photometric changes that separate hospitals (SANet's colour exchange, colour cast, gamma, blur,
specular highlights).

Geometric ops are applied identically to image and mask; photometric ones to the image only.
Everything runs on the already resized uint8 image (S, S, 3) and its (S, S) mask, with a numpy
Generator seeded per example by the pipeline, so a batch is the same whichever process or worker
computes it. An op whose strength is 0 draws no random number, so adding ops never changes the
batches of a config that leaves them off.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
from PIL import Image
from PIL import ImageFilter

from bsa_jax.data import color
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


def _channel_gain(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
  """A colour cast: each of R, G, B scaled by its own factor in [1 - strength, 1 + strength]."""
  gains = rng.uniform(1 - strength, 1 + strength, size=3).astype(np.float32)
  return np.clip(np.round(image.astype(np.float32) * gains), 0, 255).astype(np.uint8)


def _gamma(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
  """Intensities raised to exp(u), u in [-strength, strength]: darker or brighter mid-tones."""
  g = float(np.exp(rng.uniform(-strength, strength)))
  lut = np.clip(np.round(255.0 * (np.arange(256) / 255.0) ** g), 0, 255).astype(np.uint8)
  return lut[image]


def _blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """A Gaussian blur of radius 0.5-1.5 px at the network size: out-of-focus or motion-soft frames."""
  radius = float(rng.uniform(0.5, 1.5))
  return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


def _specular(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """1-3 soft white spots of radius 1-4 % of the side: the light's reflections on wet mucosa."""
  size = image.shape[0]
  yy, xx = np.mgrid[:size, :size].astype(np.float32)
  alpha = np.zeros((size, size), np.float32)
  for _ in range(int(rng.integers(1, 4))):
    cy, cx = rng.uniform(0, size, size=2)
    radius = rng.uniform(0.01, 0.04) * size
    alpha = np.maximum(alpha, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius ** 2)))
  out = image.astype(np.float32) * (1 - alpha[..., None]) + 255.0 * alpha[..., None]
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


def photometric(image: np.ndarray, cfg: Mapping, rng: np.random.Generator) -> np.ndarray:
  """The image-only ops of `cfg` in a fixed order; each skipped (no draw) when its strength is 0."""
  if cfg.get("color_jitter", 0) > 0:
    image = _color_jitter(image, cfg["color_jitter"], rng)
  if cfg.get("channel_gain", 0) > 0:
    image = _channel_gain(image, cfg["channel_gain"], rng)
  if cfg.get("gamma", 0) > 0:
    image = _gamma(image, cfg["gamma"], rng)
  if cfg.get("blur", 0) > 0 and rng.random() < cfg["blur"]:
    image = _blur(image, rng)
  if cfg.get("specular", 0) > 0 and rng.random() < cfg["specular"]:
    image = _specular(image, rng)
  return image


def augment(image: np.ndarray, mask: np.ndarray, cfg: Mapping, rng: np.random.Generator,
            reference: Callable[[np.random.Generator], np.ndarray] | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
  """uint8 (S, S, 3), mask (S, S) -> the same shapes, randomly transformed per `cfg` (config.data.augment).

  `reference(rng)` gives another training image (uint8 RGB) for the colour exchange.
  """
  if cfg.get("color_exchange", 0) > 0 and rng.random() < cfg["color_exchange"]:
    if reference is None:
      raise ValueError("data.augment.color_exchange needs the training set's other images; "
                       "it runs in the training pipeline only.")
    image = color.color_exchange(image, reference(rng))
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
  image = photometric(np.ascontiguousarray(image), cfg, rng)
  return np.ascontiguousarray(image), np.ascontiguousarray(mask)
