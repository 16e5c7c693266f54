"""The trained model on a user's images: preprocessing exactly as in evaluation, probabilities at
each image's original size. Shared by `predict` (still images), `video` (streams) and `serve`."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from bsa_jax.data import enhance
from bsa_jax.data import preprocess
from bsa_jax.eval.metrics import resize_prediction


def predict_probabilities(trained, images: Sequence[np.ndarray], tta: bool,
                          with_maps: bool = False) -> tuple[list[np.ndarray], dict]:
  """Foreground probability (H0, W0) per image at its original size, and the attention features."""
  size, norm = trained.image_size, trained.config.data.normalize
  batch = np.stack([preprocess.normalize(preprocess.resize_image(im, size), norm) for im in images])
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
  if tta:
    flipped = trained.predict(inputs(np.ascontiguousarray(batch[:, :, ::-1])))[..., 0][:, :, ::-1]
    logits = (logits + flipped) / 2
  probs = [1 / (1 + np.exp(-resize_prediction(l, im.shape[:2]))) for l, im in zip(logits, images)]
  return probs, maps
