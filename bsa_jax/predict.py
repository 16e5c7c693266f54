"""Segment a user's own images with a trained workdir: masks, probability maps, overlays, a web page.

  python -m bsa_jax.predict --workdir workdirs/kvasir --input my_images/ --output predictions/
  python -m bsa_jax.predict --workdir W --input a.jpg b.png --output out/ --tta

For each image (any size, any format PIL reads) it writes, at the original size, `masks/<stem>.png`
(binary), `probabilities/<stem>.png` (8-bit), `overlays/<stem>_overlay.png`, and an `index.html` with
thumbnails and the predicted area; with --attention also `attention/<stem>_{isam,fsam}.png`, heat maps
of the energy of the Image- and Feature-Space Attention Modules' outputs. A corrupt or unreadable file is reported and skipped, and the count is printed.
"""

from __future__ import annotations

import os
import sys
from typing import Iterator, Sequence

import numpy as np
from absl import app
from absl import flags
from PIL import Image

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run's workdir (holds config.json).")
_INPUT = flags.DEFINE_multi_string("input", None, "Image files and/or folders of images.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder for masks, probability maps and overlays.")
_STEP = flags.DEFINE_string("step", "best", "Checkpoint: best (on validation), latest, or a step.")
_TTA = flags.DEFINE_bool("tta", False, "Average with the horizontally flipped prediction.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Images per forward pass.")
_THRESHOLD = flags.DEFINE_float("threshold", 0.5, "Probability threshold for the binary mask.")
_ATTENTION = flags.DEFINE_bool(
    "attention", False, "Also write heat maps of the attention modules' outputs (ISAM, FSAM energy).")


def list_inputs(inputs: Sequence[str]) -> list[str]:
  """Files as given plus the image files inside given folders (sorted, not recursive)."""
  from bsa_jax.data.io import is_image_file
  paths = []
  for item in inputs:
    if os.path.isdir(item):
      paths += sorted(os.path.join(item, n) for n in os.listdir(item) if is_image_file(n))
    elif os.path.exists(item):
      paths.append(item)
    else:
      raise FileNotFoundError(f"--input {item}: no such file or folder.")
  if not paths:
    raise FileNotFoundError(f"No image files found in --input {list(inputs)}.")
  return paths


def read_images(paths: Sequence[str], skipped: list[tuple[str, str]]) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (path, uint8 (H, W, 3)); unreadable files go to `skipped` with the reason."""
  from bsa_jax.data.io import DataError, load_image
  for path in paths:
    try:
      yield path, load_image(path)
    except (DataError, OSError) as e:
      skipped.append((path, str(e)))


def predict_probabilities(trained, images: Sequence[np.ndarray], tta: bool,
                          with_maps: bool = False) -> tuple[list[np.ndarray], dict]:
  """Foreground probability (H0, W0) per image at its original size, and the attention features."""
  from bsa_jax.data import preprocess
  from bsa_jax.eval.metrics import resize_prediction
  size, norm = trained.image_size, trained.config.data.normalize
  from bsa_jax import enhance
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


def write_outputs(out_dir: str, stem: str, image: np.ndarray, prob: np.ndarray,
                  threshold: float) -> tuple[str, str, float]:
  """Mask, probability map and overlay of one image; returns its index entry (stem, path, area).

  `masks/` and `probabilities/` hold `<stem>.png`, so `python -m bsa_jax.eval --pred-dir
  OUT/probabilities --gt-dir ...` scores them directly.
  """
  from bsa_jax import viz
  Image.fromarray(((prob >= threshold) * 255).astype(np.uint8)).save(
      os.path.join(out_dir, "masks", f"{stem}.png"))
  Image.fromarray(np.round(prob * 255).astype(np.uint8)).save(
      os.path.join(out_dir, "probabilities", f"{stem}.png"))
  name, area = viz.save_overlay(os.path.join(out_dir, "overlays"), stem, image, prob, None, threshold)
  return stem, f"overlays/{name}", area


def run(workdir: str, inputs: Sequence[str], output: str, *, step: str = "best", tta: bool = False,
        batch_size: int = 8, threshold: float = 0.5, attention: bool = False) -> dict:
  """Predicts every readable input image; returns counts and the skipped files with reasons."""
  from tqdm import tqdm
  from bsa_jax import inference
  from bsa_jax import viz
  trained = inference.load_trained(workdir, step)
  paths = list_inputs(inputs)
  for sub in ("masks", "probabilities", "overlays") + (("attention",) if attention else ()):
    os.makedirs(os.path.join(output, sub), exist_ok=True)
  skipped: list[tuple[str, str]] = []
  entries, pending = [], []  # index entries; images waiting for a full batch
  stems = {}

  def flush():
    probs, maps = predict_probabilities(trained, [im for _, im in pending], tta, attention)
    for i, ((path, image), prob) in enumerate(zip(pending, probs)):
      stem = os.path.splitext(os.path.basename(path))[0]
      stems[stem] = stems.get(stem, 0) + 1
      if stems[stem] > 1:  # same stem from two folders: keep both
        stem = f"{stem}_{stems[stem]}"
      entries.append(write_outputs(output, stem, image, prob, threshold))
      for name, features in maps.items():  # e.g. 'isam/out' -> <stem>_isam.png
        heat = viz.heatmap_overlay(image, viz.feature_energy(features[i]))
        Image.fromarray(heat).save(
            os.path.join(output, "attention", f"{stem}_{name.split('/')[0]}.png"))
    pending.clear()

  for path, image in tqdm(read_images(paths, skipped), total=len(paths), desc="predict",
                          unit="img"):
    pending.append((path, image))
    if len(pending) == batch_size:
      flush()
  if pending:
    flush()
  page = viz.write_index(output, entries, with_gt=False) if entries else None
  return {"predicted": len(entries), "skipped": skipped, "index": page, "step": trained.step}


def main(argv):
  del argv
  if not (_WORKDIR.value and _INPUT.value and _OUTPUT.value):
    raise app.UsageError("--workdir, --input and --output are required.")
  result = run(_WORKDIR.value, _INPUT.value, _OUTPUT.value, step=_STEP.value, tta=_TTA.value,
               batch_size=_BATCH.value, threshold=_THRESHOLD.value, attention=_ATTENTION.value)
  for path, reason in result["skipped"]:
    print(f"skipped {path}: {reason}", file=sys.stderr)
  print(f"{result['predicted']} image(s) segmented with checkpoint step {result['step']}, "
        f"{len(result['skipped'])} skipped (unreadable); see {result['index']}")
  return 1 if result["skipped"] and not result["predicted"] else 0


if __name__ == "__main__":
  app.run(main)
