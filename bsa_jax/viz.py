"""Prediction overlays: a tint over the predicted region, its contour, and the GT contour if known."""

from __future__ import annotations

import html
import os
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


def overlay(image: np.ndarray, prob: np.ndarray, gt: np.ndarray | None = None,
            threshold: float = 0.5, alpha: float = 0.35) -> np.ndarray:
  """Draws the prediction (tint + contour) and optional GT contour on `image` (H, W, 3) uint8."""
  pred = prob >= threshold
  out = image.astype(np.float32)
  out[pred] = (1 - alpha) * out[pred] + alpha * PRED_COLOR
  thickness = max(1, round(max(image.shape[:2]) / 300))
  out[contour(pred, thickness)] = PRED_COLOR
  if gt is not None:
    out[contour(gt.astype(bool), thickness)] = GT_COLOR
  return out.clip(0, 255).astype(np.uint8)


def write_overlay_page(out_dir: str, items: Sequence[tuple], threshold: float = 0.5) -> str:
  """Saves overlays for (id, image, prob, gt-or-None) items and an `index.html` of thumbnails."""
  os.makedirs(out_dir, exist_ok=True)
  rows = []
  for image_id, image, prob, gt in items:
    name = f"{image_id}_overlay.png"
    Image.fromarray(overlay(image, prob, gt, threshold)).save(os.path.join(out_dir, name))
    area = float((prob >= threshold).mean())
    rows.append(f'<figure><a href="{html.escape(name)}"><img src="{html.escape(name)}" '
                f'width="240"></a><figcaption>{html.escape(str(image_id))}: predicted area '
                f'{100 * area:.1f}%</figcaption></figure>')
  legend = ("yellow: prediction (tint and contour)" +
            ("; green: ground-truth contour" if any(it[3] is not None for it in items) else ""))
  page = ("<!doctype html><meta charset='utf-8'><title>bsa_jax predictions</title>"
          "<style>figure{display:inline-block;margin:6px;font:12px sans-serif}</style>"
          f"<p>{legend}</p>" + "\n".join(rows))
  path = os.path.join(out_dir, "index.html")
  with open(path, "w") as f:
    f.write(page)
  return path
