"""Segmenting a user's own images with a trained workdir: the library behind `python -m bsa_jax.predict`."""

from __future__ import annotations

import os
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from bsa_jax import compile_cache
from bsa_jax.data.io import DEFAULT_MAX_PIXELS, DataError, load_image
from bsa_jax.eval import overlays as viz
from bsa_jax.tools import video
from bsa_jax.tools.segment import predict_probabilities
from bsa_jax.workdir import load as inference


def list_inputs(inputs: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """(candidate files, skipped (path, reason)): files as given plus every non-hidden file inside given
  folders (sorted, not recursive). Whether PIL can read a file is decided when it is read."""
  paths, skipped = [], []
  for item in inputs:
    if os.path.isdir(item):
      for name in sorted(os.listdir(item)):
        path = os.path.join(item, name)
        if name.startswith("."):
          continue
        if os.path.isdir(path):
          skipped.append((path, "a folder inside an --input folder (not searched)"))
        else:
          paths.append(path)
    elif os.path.exists(item):
      paths.append(item)
    else:
      raise FileNotFoundError(f"--input {item}: no such file or folder.")
  if not paths:
    raise FileNotFoundError(f"No files found in --input {list(inputs)}.")
  return paths, skipped


def output_names(paths: Sequence[str]) -> dict[str, str]:
  """{path: output stem}, distinct for every input and stable for a given set of inputs.

  A file keeps its stem (`a.jpg` → `a`), so `python -m bsa_jax.eval` matches the outputs with
  ground truth by name. Files sharing a stem (`a.jpg`, `a.png`, or two folders) get their extension
  added (`a_jpg`, `a_png`), then `_2`, `_3`, ... in input order; every generated name is checked
  against all the others, so `a.png` can never overwrite the outputs of an input named `a_2.png`.
  """
  stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
  counts: dict[str, int] = {}
  for stem in stems:
    counts[stem.lower()] = counts.get(stem.lower(), 0) + 1
  wanted = []
  for path, stem in zip(paths, stems):
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    wanted.append(stem if counts[stem.lower()] == 1 or not ext else f"{stem}_{ext}")
  taken = {w.lower() for w, s in zip(wanted, stems) if counts[s.lower()] == 1}
  names = {}
  for path, stem, name in zip(paths, stems, wanted):
    if counts[stem.lower()] > 1:
      candidate, k = name, 1
      while candidate.lower() in taken:
        k += 1
        candidate = f"{name}_{k}"
      name = candidate
      taken.add(name.lower())
    names[path] = name
  return names


def read_images(paths: Sequence[str], skipped: list[tuple[str, str]],
                max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (path, uint8 (H, W, 3)); files PIL cannot read go to `skipped` with the reason."""
  for path in paths:
    try:
      yield path, load_image(path, max_pixels=max_pixels)
    except (DataError, OSError) as e:
      skipped.append((path, str(e)))


def skip_reasons(skipped: Sequence[tuple[str, str]]) -> dict[str, int]:
  """{reason kind: count} for the summary line: unreadable, not an image, too large, other."""
  kinds: dict[str, int] = {}
  for _, reason in skipped:
    low = reason.lower()
    kind = ("not searched" if "folder inside" in low else
            "too large" if "pixel" in low or "bomb" in low else
            "not an image" if "cannot identify" in low or "not an image" in low else "unreadable")
    kinds[kind] = kinds.get(kind, 0) + 1
  return kinds


def write_outputs(out_dir: str, stem: str, image: np.ndarray, prob: np.ndarray,
                  threshold: float) -> tuple[str, str, float]:
  """Mask, probability map and overlay of one image; returns its index entry (stem, path, area).

  `masks/` and `probabilities/` hold `<stem>.png`, so `python -m bsa_jax.eval
  --pred_dir=OUT/probabilities --gt_dir=...` scores them directly.
  """
  Image.fromarray(((prob >= threshold) * 255).astype(np.uint8)).save(
      os.path.join(out_dir, "masks", f"{stem}.png"))
  Image.fromarray(np.round(prob * 255).astype(np.uint8)).save(
      os.path.join(out_dir, "probabilities", f"{stem}.png"))
  name, area = viz.save_overlay(os.path.join(out_dir, "overlays"), stem, image, prob, None, threshold)
  return stem, f"overlays/{name}", area


def run(workdir: str, inputs: Sequence[str], output: str, *, step: str = "best", tta: bool = False,
        batch_size: int = 8, threshold: float = 0.5, attention: bool = False, frames: bool = False,
        ema: float = 0.0, write_masks: bool = False, fps: float | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS) -> dict:
  """Predicts every readable input image; returns counts and the skipped files with reasons.

  Video files, and with `frames` folders of frames, are segmented as streams by
  `bsa_jax.tools.video` (overlay video, per-frame CSV, frames/s; `ema`, `write_masks` and `fps`
  apply to them); their summaries are under "streams" and their frames count as predicted.
  """
  from tqdm import tqdm  # progress bar only; keeps the import of this module light
  compile_cache.enable()  # a second prediction reads the compiled forward pass from disk
  trained = inference.load_trained(workdir, step)
  streams = [i for i in inputs if video.is_video(i) or (frames and os.path.isdir(i))]
  streamed = video.run(workdir, streams, output, batch_size=batch_size, threshold=threshold,
                       ema=ema, write_masks=write_masks, tta=tta, fps=fps, trained=trained)
  frame_count = sum(s["frames"] for s in streamed["streams"].values())
  inputs = [i for i in inputs if i not in streams]
  if not inputs:
    first = next(iter(streamed["streams"].values()))
    return {"predicted": frame_count, "skipped": streamed["skipped"],
            "skip_reasons": skip_reasons(streamed["skipped"]), "step": trained.step, "names": {},
            "index": os.path.join(output, first["outputs"]["summary"]),
            "streams": streamed["streams"]}
  paths, skipped = list_inputs(inputs)
  skipped += streamed["skipped"]
  names = output_names(paths)
  for sub in ("masks", "probabilities", "overlays") + (("attention",) if attention else ()):
    os.makedirs(os.path.join(output, sub), exist_ok=True)
  entries, pending = [], []  # index entries; images waiting for a full batch

  def flush():
    probs, maps = predict_probabilities(trained, [im for _, im in pending], tta, attention)
    for i, ((path, image), prob) in enumerate(zip(pending, probs)):
      stem = names[path]
      entries.append(write_outputs(output, stem, image, prob, threshold))
      for name, features in maps.items():  # e.g. 'isam/out' -> <stem>_isam.png
        heat = viz.heatmap_overlay(image, viz.feature_energy(features[i]))
        Image.fromarray(heat).save(
            os.path.join(output, "attention", f"{stem}_{name.split('/')[0]}.png"))
    pending.clear()

  for path, image in tqdm(read_images(paths, skipped, max_pixels), total=len(paths), desc="predict",
                          unit="img"):
    pending.append((path, image))
    if len(pending) == batch_size:
      flush()
  if pending:
    flush()
  page = viz.write_index(output, entries, with_gt=False) if entries else None
  return {"predicted": len(entries) + frame_count, "skipped": skipped,
          "skip_reasons": skip_reasons(skipped), "index": page, "step": trained.step,
          "names": {p: names[p] for p in paths}, "streams": streamed["streams"]}
