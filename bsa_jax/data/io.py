"""Decoding image and mask files into numpy arrays, with errors that name the file and the fix.

Masks come in many encodings: RGB JPEGs with compression noise (Kvasir-SEG), 1-bit PNG/BMP
(CVC-ClinicDB, PH2), 8-bit TIFF (CVC-ColonDB), 24-bit BMP (PH2's IMD002). All of them are binarised at
>= 128 of the per-pixel channel maximum, so a mask is foreground wherever any channel is bright.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

# Formats PIL opens that we accept as image/mask files when listing a folder.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


class DataError(ValueError):
  """A dataset file or folder that cannot be used; the message names it and says what to do."""


def _open(path: str) -> Image.Image:
  """Opens and fully decodes `path` (PIL is lazy, so truncation only shows on `load`)."""
  try:
    img = Image.open(path)
    img.load()
  except FileNotFoundError:
    raise DataError(f"{path}: file not found.") from None
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise DataError(f"{path}: cannot decode ({type(e).__name__}: {e}). The file is corrupt or "
                    "truncated; re-download it or remove the image and its mask.") from None
  return img


def load_image(path: str) -> np.ndarray:
  """Reads an image file as uint8 (H, W, 3) RGB (grayscale is repeated, alpha dropped)."""
  img = _open(path)
  if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
    # 16-bit/float images: scale the actual range to 0..255 rather than clipping.
    arr = np.asarray(img, np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
    return np.repeat(np.round(arr).astype(np.uint8)[..., None], 3, axis=-1)
  return np.asarray(img.convert("RGB"), np.uint8)  # (H, W, 3)


def load_mask_raw(path: str) -> np.ndarray:
  """Reads a mask file as uint8 (H, W): the per-pixel channel maximum (1-bit files become 0/255)."""
  img = _open(path)
  if img.mode == "1":
    return np.asarray(img, bool).astype(np.uint8) * 255
  if img.mode == "P":
    img = img.convert("RGB")
  elif img.mode in ("LA", "RGBA"):
    img = img.convert(img.mode[:-1])  # drop alpha; transparency is not a label
  elif img.mode not in ("L", "RGB"):
    arr = np.asarray(img).astype(np.float64)  # 16-bit / float masks: rescale 0..max to 0..255
    top = arr.max()
    return np.round(arr / top * 255).astype(np.uint8) if top > 0 else arr.astype(np.uint8)
  arr = np.asarray(img, np.uint8)
  return arr.max(axis=-1) if arr.ndim == 3 else arr


def binarize_mask(arr: np.ndarray) -> np.ndarray:
  """uint8 (H, W) -> bool (H, W): >= 128 is foreground; a 0/1-coded mask (max 1) keeps its ones."""
  if arr.dtype == bool:
    return arr
  if arr.ndim == 3:
    arr = arr.max(axis=-1)
  return arr >= (1 if arr.max() <= 1 else 128)


def load_mask(path: str) -> np.ndarray:
  """Reads a binary mask file as bool (H, W) (>= 128 is foreground; 1-bit, L, RGB, 0/1-coded work)."""
  return binarize_mask(load_mask_raw(path))


# JPEG-compressed masks (Kvasir-SEG) have up to ~2 % of pixels between 0 and 255; a grey-level image or a
# probability map put in the masks folder has far more.
_MAX_GREY_FRACTION = 0.05


def mask_values_problem(raw: np.ndarray) -> str | None:
  """Why a uint8 (H, W) raw mask is not a usable binary mask, or None if it is."""
  top = int(raw.max())
  if top == 0:
    return "the mask is empty (all background)"
  if top > 1:
    grey = float(np.mean((raw >= 32) & (raw < 224)))
    if grey > _MAX_GREY_FRACTION:
      return (f"the mask is not binary: {grey:.0%} of its pixels are grey (32..223); expected 0/255 "
              "(or 0/1). Is it an image or a soft/probability map?")
    values = np.unique(raw)
    if top < 128 and len(values) > 2:
      return (f"the mask holds the label values {values.tolist()[:8]}, not 0/255; it looks like a "
              "multi-class label map (use a multi-class loader or convert it to 0/255)")
  return None


def image_size(path: str) -> tuple[int, int]:
  """(height, width) from the file header without decoding pixels."""
  try:
    with Image.open(path) as img:
      w, h = img.size
  except FileNotFoundError:
    raise DataError(f"{path}: file not found.") from None
  except (OSError, SyntaxError, ValueError) as e:
    raise DataError(f"{path}: not a readable image ({type(e).__name__}: {e}).") from None
  return h, w


def is_image_file(name: str) -> bool:
  return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and not name.startswith(".")
