"""SANet's colour exchange (Wei et al., MICCAI 2021): a training image re-coloured with another
training image's Lab statistics, so the network cannot lean on one hospital's colours.

The 8-bit Lab conversion follows OpenCV's constants and scaling (the official code uses
`cv2.cvtColor`); tests/test_sanet.py holds ours within OpenCV's own rounding.
"""

from __future__ import annotations

import numpy as np

# sRGB (D65) <-> XYZ, OpenCV's constants; X and Z are divided by the white point before Lab.
_RGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423],
                        [0.212671, 0.715160, 0.072169],
                        [0.019334, 0.119193, 0.950227]])
_WHITE = np.array([0.950456, 1.0, 1.088754])
_EPSILON, _KAPPA = 0.008856, 903.3


def rgb_to_lab8(rgb: np.ndarray) -> np.ndarray:
  """uint8 RGB (..., 3) -> float64 Lab in OpenCV's 8-bit scaling (L·255/100, a + 128, b + 128)."""
  x = rgb.astype(np.float64) / 255.0
  linear = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
  xyz = linear @ _RGB_TO_XYZ.T / _WHITE  # (..., 3)
  f = np.where(xyz > _EPSILON, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
  y = xyz[..., 1]
  lightness = np.where(y > _EPSILON, 116.0 * f[..., 1] - 16.0, _KAPPA * y)
  a = 500.0 * (f[..., 0] - f[..., 1])
  b = 200.0 * (f[..., 1] - f[..., 2])
  return np.stack([lightness * 255.0 / 100.0, a + 128.0, b + 128.0], axis=-1)


def lab8_to_rgb(lab: np.ndarray) -> np.ndarray:
  """Inverse of `rgb_to_lab8` -> uint8 RGB (rounded, clipped)."""
  lightness = lab[..., 0] * 100.0 / 255.0
  a, b = lab[..., 1] - 128.0, lab[..., 2] - 128.0
  small = lightness <= _EPSILON * _KAPPA
  y = np.where(small, lightness / _KAPPA, ((lightness + 16.0) / 116.0) ** 3)
  fy = np.where(small, 7.787 * y + 16.0 / 116.0, (lightness + 16.0) / 116.0)
  f = np.stack([fy + a / 500.0, fy, fy - b / 200.0], axis=-1)
  xyz = np.where(f > np.cbrt(_EPSILON), f ** 3, (f - 16.0 / 116.0) / 7.787)
  xyz[..., 1] = y
  linear = np.clip(xyz * _WHITE @ np.linalg.inv(_RGB_TO_XYZ).T, 0.0, 1.0)
  x = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
  return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def color_exchange(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
  """SANet's colour exchange: `image` re-coloured with `reference`'s per-channel Lab mean and std.

  Both uint8 RGB, (H, W, 3) and (h, w, 3). As the official `Data.__getitem__`: both go to 8-bit Lab
  (integer values), lab' = (lab − μ) / σ · σ_ref + μ_ref, truncated to uint8, back to RGB. The official
  casts with `np.uint8` unclipped, which wraps values outside [0, 255]; we clip first. A constant
  channel (σ = 0) keeps its value shifted to μ_ref instead of the official NaN.
  """
  lab = np.round(rgb_to_lab8(image))
  ref = np.round(rgb_to_lab8(reference))
  mean, std = lab.mean(axis=(0, 1)), lab.std(axis=(0, 1))
  ref_mean, ref_std = ref.mean(axis=(0, 1)), ref.std(axis=(0, 1))
  moved = (lab - mean) / np.where(std > 0, std, 1.0) * ref_std + ref_mean
  return lab8_to_rgb(np.floor(np.clip(moved, 0.0, 255.0)))
