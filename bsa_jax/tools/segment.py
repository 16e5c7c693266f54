"""The trained model on a user's images: preprocessing exactly as in evaluation, probabilities at
each image's original size. Shared by `predict` (still images), `video` (streams) and `serve`."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from bsa_jax.data import enhance
from bsa_jax.data import preprocess
from bsa_jax.eval.metrics import resize_rows


def predict_probabilities(trained, images: Sequence[np.ndarray],
                          with_maps: bool = False) -> tuple[list[np.ndarray], dict]:
  """Foreground probability (H0, W0) per image at its original size, and the attention features.
  Flip averaging, if any, is the loaded model's (`load_trained(..., tta=)`, `trained.tta`)."""
  resized = [preprocess.resize_image(im, trained.image_size) for im in images]
  logits, maps = predict_logits(trained, resized, with_maps)
  return [probability_rows(l, im.shape[:2]) for l, im in zip(logits, images)], maps


def predict_logits(trained, resized: Sequence[np.ndarray],
                   with_maps: bool = False) -> tuple[np.ndarray, dict]:
  """Foreground logits (B, S, S) of uint8 images already at the network's size S (bilinear,
  `preprocess.resize_image` or `resize_pil`), and the attention features if `with_maps`.

  Small whatever the images' size: `probability_rows` brings them to an image's size, a band of
  rows at a time if it is large.
  """
  norm = trained.config.data.normalize
  batch = np.stack([preprocess.normalize(im, norm) for im in resized])
  enhance_options = enhance.options_from_config(trained.config.data)

  def inputs(images_batch):  # DIN also takes the enhanced image, made exactly as in training
    if enhance_options:
      return enhance.add_enhanced({"image": images_batch}, normalize=norm, **enhance_options)
    return {"image": images_batch}

  maps = {}
  if with_maps:
    logits, maps = trained.predict_with_maps(inputs(batch))
    logits = np.asarray(logits)[..., 0]  # (B, S, S)
  else:
    logits = trained.predict(inputs(batch))[..., 0]
  return logits, maps


def probability_rows(logits: np.ndarray, shape: tuple[int, int], start: int = 0,
                     stop: int | None = None) -> np.ndarray:
  """Rows start:stop (default: all) of the probability at the original size `shape` (H0, W0):
  the sigmoid of the logits (S, S) resized bilinearly (align_corners=False), float64.

  Elementwise after the resize, so any band of rows has the bits of the whole map's rows.
  """
  rows = resize_rows(logits, shape, start, shape[0] if stop is None else stop)
  return 1 / (1 + np.exp(-rows))
