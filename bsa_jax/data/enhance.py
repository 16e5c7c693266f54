"""Contrast enhancement for DIN's second input: CLAHE (default) or global histogram equalisation.

DIN (Jeong et al., Pattern Recognition Letters 2025) feeds an "enhanced" copy of each image to a
second encoder but does not say which enhancement; docs/DECISIONS.md#d7 picks CLAHE with clip limit
2.0 on an 8×8 tile grid over the [0, 1] image, with global histogram equalisation as the option.

Both work on 256 grey levels (images in [0, 1] are quantised with round(255·x) first), like OpenCV's
`createCLAHE` / `equalizeHist`. `clahe` restates OpenCV's algorithm and matches it exactly on real
ACDC and Kvasir images (tests/test_enhance.py): per-tile histograms of the image padded
(reflect-101) to a multiple of the grid, each clipped at max(1, ⌊clip·tile_area/256⌋) with the
excess spread evenly (the remainder one count at a time, every ⌊256/remainder⌋ bins), a rounded CDF
per tile as its lookup table, and bilinear interpolation between the four nearest tiles' tables.
Everything is vectorised numpy, no per-pixel Python loops. OpenCV is only a test reference (it
comes with pysodmetrics, a test dependency) and is never imported here.

  enhance(image, 'clahe' | 'histeq', clip_limit=2.0, tile_grid=8) -> same dtype and shape
  add_enhanced(batch, normalize=..., method=...) -> batch + 'image_enhanced' (the pipeline's hook)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bsa_jax.data import preprocess

METHODS = ("clahe", "histeq")
NUM_BINS = 256


def to_uint8(image: np.ndarray) -> np.ndarray:
  """uint8 passes through; float in [0, 1] -> round(255·x) clipped to [0, 255]."""
  if image.dtype == np.uint8:
    return image
  return np.clip(np.rint(np.asarray(image, np.float32) * 255.0), 0, 255).astype(np.uint8)


def _clip_histograms(hist: np.ndarray, limit: int) -> np.ndarray:
  """Clips (T, 256) integer histograms at `limit` and redistributes the excess (OpenCV's rule)."""
  excess = np.maximum(hist - limit, 0).sum(axis=1, keepdims=True)  # (T, 1)
  hist = np.minimum(hist, limit) + excess // NUM_BINS
  residual = excess % NUM_BINS  # (T, 1): one more count to every `step`-th bin, `residual` times
  step = np.maximum(NUM_BINS // np.maximum(residual, 1), 1)
  bins = np.arange(NUM_BINS)[None, :]
  extra = (bins % step == 0) & (bins // step < residual)
  return hist + extra


def clahe(image: np.ndarray, clip_limit: float = 2.0,
          tile_grid: int | tuple[int, int] = 8) -> np.ndarray:
  """Contrast-limited adaptive histogram equalisation of one grey image.

  Args:
    image: uint8 (H, W), or float (H, W) in [0, 1].
    clip_limit: relative clip limit (OpenCV's clipLimit); <= 0 disables clipping (plain AHE).
    tile_grid: tiles per axis, an int or (rows, cols).

  Returns:
    The enhanced image, uint8 for uint8 input and float32 in [0, 1] (multiples of 1/255) otherwise.
  """
  if image.ndim != 2:
    raise ValueError(f"clahe expects one (H, W) grey image, got shape {image.shape}.")
  src = to_uint8(image)
  h, w = src.shape
  rows, cols = (tile_grid, tile_grid) if isinstance(tile_grid, int) else tuple(tile_grid)
  # Pad bottom/right to a multiple of the grid; the padding only feeds the histograms. Like OpenCV,
  # once either axis needs padding both get `tiles - size % tiles` rows/cols (a whole extra tile row
  # or column on an axis that was already divisible), so the tile size matches OpenCV's exactly.
  if h % rows or w % cols:
    padded = np.pad(src, ((0, rows - h % rows), (0, cols - w % cols)), mode="reflect")
  else:
    padded = src
  tile_h, tile_w = padded.shape[0] // rows, padded.shape[1] // cols
  tile_area = tile_h * tile_w

  # Per-tile histograms in one bincount: bin index = tile * 256 + grey value.
  tiles = padded.reshape(rows, tile_h, cols, tile_w).transpose(0, 2, 1, 3).reshape(rows * cols, -1)
  offsets = (np.arange(rows * cols) * NUM_BINS)[:, None]
  hist = np.bincount((tiles.astype(np.int64) + offsets).ravel(),
                     minlength=rows * cols * NUM_BINS).reshape(rows * cols, NUM_BINS)
  if clip_limit > 0:
    hist = _clip_histograms(hist, max(int(clip_limit * tile_area / NUM_BINS), 1))
  scale = np.float32((NUM_BINS - 1) / tile_area)
  luts = np.clip(np.rint(np.cumsum(hist, axis=1).astype(np.float32) * scale), 0, 255)
  luts = luts.astype(np.float32).reshape(rows, cols, NUM_BINS)

  # Bilinear weights between tile centres (clamped at the borders), as float32 like OpenCV.
  def axis_weights(size, tile, count):
    pos = np.arange(size, dtype=np.float32) * np.float32(1.0 / tile) - np.float32(0.5)
    low = np.floor(pos).astype(np.int64)
    frac = (pos - low).astype(np.float32)
    return np.clip(low, 0, count - 1), np.clip(low + 1, 0, count - 1), frac

  y0, y1, fy = axis_weights(h, tile_h, rows)  # (H,)
  x0, x1, fx = axis_weights(w, tile_w, cols)  # (W,)
  y0, y1, fy = y0[:, None], y1[:, None], fy[:, None]
  top = luts[y0, x0, src] * (1 - fx) + luts[y0, x1, src] * fx  # (H, W)
  bottom = luts[y1, x0, src] * (1 - fx) + luts[y1, x1, src] * fx
  out = np.clip(np.rint(top * (1 - fy) + bottom * fy), 0, 255).astype(np.uint8)
  return out if image.dtype == np.uint8 else out.astype(np.float32) / 255.0


def equalize_histogram(image: np.ndarray) -> np.ndarray:
  """Global histogram equalisation of one grey image (OpenCV `equalizeHist`).

  lut(v) = round(255·(cdf(v) − cdf_min) / (N − cdf_min)), where cdf_min is the count of the darkest
  grey level present, so it maps to 0 and the brightest to 255; a constant image is returned
  unchanged. Same dtypes as `clahe`.
  """
  if image.ndim != 2:
    raise ValueError(f"equalize_histogram expects one (H, W) grey image, got shape {image.shape}.")
  src = to_uint8(image)
  hist = np.bincount(src.ravel(), minlength=NUM_BINS)
  cdf = np.cumsum(hist)
  cdf_min = hist[np.flatnonzero(hist)[0]]
  total = src.size
  if cdf_min == total:
    out = src
  else:
    scale = np.float32(255.0 / (total - cdf_min))
    lut = np.clip(np.rint((cdf - cdf_min).astype(np.float32) * scale), 0, 255).astype(np.uint8)
    out = lut[src]
  return out if image.dtype == np.uint8 else out.astype(np.float32) / 255.0


def enhance(image: np.ndarray, method: str = "clahe", **kwargs: Any) -> np.ndarray:
  """Enhances a grey (H, W) or multi-channel (H, W, C) image, channel by channel.

  Identical channels (grey slices repeated to RGB) are enhanced once. Colour images get per-channel
  equalisation, which can shift hues; DIN's datasets (ACDC, Synapse) are grey.

  Args:
    image: uint8, or float in [0, 1].
    method: 'clahe' (kwargs clip_limit=2.0, tile_grid=8) or 'histeq' (no kwargs).

  Returns:
    uint8 for uint8 input, float32 in [0, 1] otherwise; same shape.
  """
  if method == "clahe":
    fn = lambda x: clahe(x, **kwargs)
  elif method == "histeq":
    if kwargs:
      raise ValueError(f"histeq takes no options, got {sorted(kwargs)}.")
    fn = equalize_histogram
  else:
    raise ValueError(f"Unknown enhancement {method!r}; choose from {METHODS}.")
  if image.ndim == 2:
    return fn(image)
  if image.ndim != 3:
    raise ValueError(f"enhance expects (H, W) or (H, W, C), got shape {image.shape}.")
  first = image[..., 0]
  if all(np.array_equal(first, image[..., c]) for c in range(1, image.shape[-1])):
    out = fn(first)
    return np.repeat(out[..., None], image.shape[-1], axis=-1)
  return np.stack([fn(image[..., c]) for c in range(image.shape[-1])], axis=-1)


# --------------------------------------------------------------------------------------------------
# Pipeline hook: normalised batches in, batches with 'image_enhanced' out.
# --------------------------------------------------------------------------------------------------

def options_from_config(data_config) -> dict[str, Any] | None:
  """`enhance` keyword arguments from config.data ('' = off -> None)."""
  method = data_config.get("enhance", "") if hasattr(data_config, "get") else ""
  if not method:
    return None
  if method == "clahe":
    return {"method": "clahe", "clip_limit": float(data_config.enhance_clip_limit),
            "tile_grid": int(data_config.enhance_tile_grid)}
  if method == "histeq":
    return {"method": "histeq"}
  raise ValueError(f"--config.data.enhance={method!r} must be '' (off) or one of {METHODS}.")


def _normalisation(normalize: str, channels: int) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std) of `bsa_jax.data.preprocess.normalize` on [0, 1] values."""
  if normalize == "imagenet":
    return preprocess.IMAGENET_MEAN[:channels], preprocess.IMAGENET_STD[:channels]
  if normalize == "unit":
    return np.zeros(channels, np.float32), np.ones(channels, np.float32)
  raise ValueError(f"normalize={normalize!r} is not one of {preprocess.NORMALIZATIONS}.")


def add_enhanced(batch: dict, *, normalize: str, method: str = "clahe", **kwargs: Any) -> dict:
  """Returns `batch` plus 'image_enhanced': each normalised 'image' (B, S, S, C) enhanced.

  The network-input image is mapped back to [0, 1] (undoing `normalize`), quantised to 256 levels,
  enhanced, and normalised again, so the enhanced input is computed at the network resolution after
  any augmentation, in the same pipeline step for training, validation and test. For uint8 sources
  the round trip recovers the original grey levels exactly.
  """
  images = np.asarray(batch["image"], np.float32)  # (B, S, S, C)
  mean, std = _normalisation(normalize, images.shape[-1])
  unit = np.clip(images * std + mean, 0.0, 1.0)
  enhanced = np.stack([enhance(to_uint8(x), method, **kwargs) for x in unit])  # uint8 (B, S, S, C)
  out = dict(batch)
  out["image_enhanced"] = ((enhanced.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)
  return out
