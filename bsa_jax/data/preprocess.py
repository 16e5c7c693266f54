"""Resizing and normalisation shared by the train and eval pipelines (numpy in, numpy out).

Images are resized bilinearly (PraNet's `transforms.Resize`), masks with nearest neighbour so they stay
binary (or keep their class labels).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from bsa_jax.data import io

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
NORMALIZATIONS = ("imagenet", "unit")


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 (H, W, 3) -> uint8 (size, size, 3), bilinear; float (H, W[, C]) -> cubic spline (order 3).

  Float images are the grayscale MRI/CT slices, zoomed like TransUNet/MERIT (`scipy.ndimage.zoom`).
  """
  if image.shape[:2] == (size, size):
    return image
  if image.dtype != np.uint8:
    from scipy import ndimage  # scipy: only for the resize path that needs it
    h, w = image.shape[:2]
    factors = (size / h, size / w) + (1,) * (image.ndim - 2)
    return ndimage.zoom(image.astype(np.float32), factors, order=3)
  return resize_pil(Image.fromarray(image), size)


def resize_pil(img: Image.Image, size: int) -> np.ndarray:
  """uint8 (size, size, C) of a PIL image, bilinear: `resize_image` of its array, the same pixels.

  For an image already decoded into PIL (`predict` keeps large images there), without the array.
  """
  return np.asarray(img.resize((size, size), Image.BILINEAR))


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
  """bool or integer-label (H, W) -> same dtype (size, size), nearest neighbour."""
  if mask.shape[:2] == (size, size):
    return mask
  as_u8 = mask.astype(np.uint8)
  out = np.asarray(Image.fromarray(as_u8).resize((size, size), Image.NEAREST))
  return out.astype(mask.dtype)


def normalize(image: np.ndarray, mode: str) -> np.ndarray:
  """uint8 (..., 3) -> float32: 'imagenet' mean/std on [0, 1] values, or 'unit' = x / 255."""
  x = image.astype(np.float32) / 255.0
  if mode == "imagenet":
    return (x - IMAGENET_MEAN) / IMAGENET_STD
  if mode == "unit":
    return x
  raise ValueError(f"--config.data.normalize={mode!r} is not one of {NORMALIZATIONS}.")


def normalize_float(image: np.ndarray, mode: str) -> np.ndarray:
  """float (..., 3) already in [0, 1] (MRI/CT after windowing) -> float32 normalised like `normalize`."""
  x = image.astype(np.float32)
  if mode == "imagenet":
    return (x - IMAGENET_MEAN) / IMAGENET_STD
  if mode == "unit":
    return x
  raise ValueError(f"--config.data.normalize={mode!r} is not one of {NORMALIZATIONS}.")


def check_same_size(image: np.ndarray, mask: np.ndarray, image_path: str, mask_path: str) -> None:
  if image.shape[:2] != mask.shape[:2]:
    raise io.DataError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
                       f"{image_path} is {image.shape[1]}x{image.shape[0]}; they must match pixel for "
                       "pixel. Re-export the mask at the image's size or remove the pair.")
