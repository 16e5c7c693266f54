"""Prediction overlays: a tint over the predicted region, its contour, and the GT contour if known."""

from __future__ import annotations

import html
import os
import urllib.parse
from typing import Sequence

import numpy as np
from PIL import Image

PRED_COLOR = np.array([255, 215, 0], np.float32)  # yellow: prediction
GT_COLOR = np.array([0, 220, 90], np.float32)  # green: ground truth


def contour(mask: np.ndarray, thickness: int = 2) -> np.ndarray:
  """Pixels of `mask` (H, W) bool within `thickness` of its border."""
  eroded = mask.copy()
  for _ in range(thickness):
    padded = np.pad(eroded, 1, mode="edge")
    eroded = (eroded & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
  return mask & ~eroded


def contour_thickness(shape: tuple[int, ...]) -> int:
  """Contour width in pixels for an image of this (H, W[, C]) shape: about 1/300 of its long side."""
  return max(1, round(max(shape[:2]) / 300))


def overlay(image: np.ndarray, prob: np.ndarray, gt: np.ndarray | None = None,
            threshold: float = 0.5, alpha: float = 0.35) -> np.ndarray:
  """Draws the prediction (tint + contour) and optional GT contour on `image` (H, W, 3) uint8."""
  pred = prob >= threshold
  thickness = contour_thickness(image.shape)
  gt_edges = None if gt is None else contour(gt.astype(bool), thickness)
  return paint(image, pred, contour(pred, thickness), gt_edges, alpha)


def paint(image: np.ndarray, pred: np.ndarray, edges: np.ndarray,
          gt_edges: np.ndarray | None = None, alpha: float = 0.35) -> np.ndarray:
  """The overlay's pixels from the prediction, its contour and the GT's contour (all bool (H, W)).

  Pixel by pixel, so it can draw any band of rows of a large image (`predict` does) given the
  contours of that band.
  """
  out = image.astype(np.float32)
  out[pred] = (1 - alpha) * out[pred] + alpha * PRED_COLOR
  out[edges] = PRED_COLOR
  if gt_edges is not None:
    out[gt_edges] = GT_COLOR
  return out.clip(0, 255).astype(np.uint8)


def save_overlay(out_dir: str, image_id: str, image: np.ndarray, prob: np.ndarray,
                 gt: np.ndarray | None = None, threshold: float = 0.5) -> tuple[str, float]:
  """Writes `<id>_overlay.png`; returns (file name, predicted area as a fraction of the image)."""
  name = f"{image_id}_overlay.png"
  Image.fromarray(overlay(image, prob, gt, threshold)).save(os.path.join(out_dir, name))
  return name, float((prob >= threshold).mean())


def _url(relative_path: str) -> str:
  """A file name as a relative URL: `#`, `?`, `%` and spaces in a name would break the link."""
  return html.escape(urllib.parse.quote(relative_path), quote=True)


def write_index(out_dir: str, entries: Sequence[tuple[str, str, float]], with_gt: bool) -> str:
  """`index.html` with a thumbnail and the predicted area for each (id, file name, area) entry."""
  rows = [f'<figure><a href="{_url(name)}"><img src="{_url(name)}" width="240"></a>'
          f'<figcaption>{html.escape(str(image_id))}: predicted area {100 * area:.1f}%</figcaption>'
          "</figure>" for image_id, name, area in entries]
  legend = ("yellow: prediction (tint and contour)" +
            ("; green: ground-truth contour" if with_gt else ""))
  page = ("<!doctype html><meta charset='utf-8'><title>bsa_jax predictions</title>"
          "<style>figure{display:inline-block;margin:6px;font:12px sans-serif}</style>"
          f"<p>{legend}</p>" + "\n".join(rows))
  path = os.path.join(out_dir, "index.html")
  with open(path, "w") as f:
    f.write(page)
  return path


def write_overlay_page(out_dir: str, items: Sequence[tuple], threshold: float = 0.5) -> str:
  """Saves overlays for (id, image, prob, gt-or-None) items and their `index.html`."""
  os.makedirs(out_dir, exist_ok=True)
  entries = [(image_id, *save_overlay(out_dir, image_id, image, prob, gt, threshold))
             for image_id, image, prob, gt in items]
  return write_index(out_dir, entries, with_gt=any(it[3] is not None for it in items))


# Piecewise-linear "hot" colour ramp: black → red → yellow → white (no plotting dependency needed).
_RAMP = np.array([[0, 0, 0], [180, 0, 0], [255, 140, 0], [255, 240, 60], [255, 255, 255]],
                 np.float32)


def colorize(heat: np.ndarray) -> np.ndarray:
  """(H, W) values in [0, 1] → (H, W, 3) uint8 on the hot ramp."""
  pos = np.clip(heat, 0, 1) * (len(_RAMP) - 1)
  lo = np.floor(pos).astype(int).clip(0, len(_RAMP) - 2)
  frac = (pos - lo)[..., None]
  return ((1 - frac) * _RAMP[lo] + frac * _RAMP[lo + 1]).astype(np.uint8)


def feature_energy(features: np.ndarray) -> np.ndarray:
  """Mean squared activation per pixel of (h, w, C) features, min–max normalised to [0, 1]."""
  energy = np.mean(np.square(features.astype(np.float32)), axis=-1)
  span = energy.max() - energy.min()
  return (energy - energy.min()) / span if span > 0 else np.zeros_like(energy)


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
  """Blends a [0, 1] heat map (any size; resized bilinearly) over `image` (H, W, 3) uint8."""
  h, w = image.shape[:2]
  return blend_heat(image, np.asarray(heat_at_size(heat, (h, w))), alpha)


def heat_at_size(heat: np.ndarray, shape: tuple[int, int]) -> Image.Image:
  """A [0, 1] heat map as an 8-bit PIL image resized bilinearly to `shape` (H, W)."""
  h, w = shape
  return Image.fromarray(np.uint8(np.clip(heat, 0, 1) * 255)).resize((w, h), Image.BILINEAR)


def blend_heat(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
  """`image` (H, W, 3) uint8 blended with the hot colours of `heat_at_size`'s uint8 levels (H, W),
  pixel by pixel (any band of rows gives that band of the whole overlay)."""
  colored = colorize(np.asarray(heat, np.float32) / 255).astype(np.float32)
  return ((1 - alpha) * image.astype(np.float32) + alpha * colored).clip(0, 255).astype(np.uint8)
