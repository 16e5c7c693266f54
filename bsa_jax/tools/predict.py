"""Segmenting a user's own images with a trained workdir: the library behind `python -m bsa_jax.predict`."""

from __future__ import annotations

import os
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from bsa_jax import compile_cache
from bsa_jax.data import preprocess
from bsa_jax.data.io import DEFAULT_MAX_PIXELS, DataError, decode_rgb, rgb_rows
from bsa_jax.eval import overlays as viz
from bsa_jax.tools import video
from bsa_jax.tools.png_rows import PngRows
from bsa_jax.tools.segment import predict_logits, probability_rows
from bsa_jax.workdir import load as inference

# Outputs are computed and written this many pixels (whole rows) at a time: a band's float64
# probabilities, float32 overlay and their temporaries stay near 75 MB whatever the image's size.
BAND_PIXELS = 1 << 20
# Images waiting for their batch stay decoded up to this many pixels in all (and the first, whatever
# its size); the others are decoded again when their outputs are written (until then the network
# needs only their resized copy).
HOLD_PIXELS = 64_000_000


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
                max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Iterator[tuple[str, Image.Image]]:
  """Yields (path, decoded RGB PIL image); files PIL cannot read go to `skipped` with the reason.

  Images stay in PIL's buffer (no array copy); `rgb_rows` reads bands of them.
  """
  for path in paths:
    try:
      image = decode_rgb(path, max_pixels=max_pixels)
    except (DataError, OSError) as e:
      skipped.append((path, str(e)))
      continue
    yield path, image


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


def band_rows(width: int) -> int:
  """Rows per band of an image `width` pixels wide (BAND_PIXELS pixels, at least one row)."""
  return max(1, BAND_PIXELS // max(1, width))


def write_outputs(out_dir: str, stem: str, image: Image.Image, logits: np.ndarray,
                  threshold: float) -> tuple[str, str, float]:
  """Mask, probability map and overlay of one image; returns its index entry (stem, path, area).

  `masks/` and `probabilities/` hold `<stem>.png`, so `python -m bsa_jax.eval
  --pred_dir=OUT/probabilities --gt_dir=...` scores them directly. All three are made from the
  network's logits (S, S) at the image's size a band of rows at a time, and streamed to their
  files: memory follows the band, not the image (12000x12000: 5.9 GB before). The pixels are
  those of the whole-image computation (`segment.predict_probabilities` and `overlays.overlay`):
  every step is pixel by pixel except the contour, whose band is computed with `thickness` rows
  above and below it, which is all the erosion reads.
  """
  w, h = image.size
  thickness = viz.contour_thickness((h, w))
  name = f"{stem}_overlay.png"
  foreground = 0
  with PngRows(os.path.join(out_dir, "masks", f"{stem}.png"), w, h, "L") as masks, \
      PngRows(os.path.join(out_dir, "probabilities", f"{stem}.png"), w, h, "L") as probs, \
      PngRows(os.path.join(out_dir, "overlays", name), w, h, "RGB") as overlays:
    step = band_rows(w)
    for start in range(0, h, step):
      stop = min(h, start + step)
      top, bottom = max(0, start - thickness), min(h, stop + thickness)  # the contour's context
      prob = probability_rows(logits, (h, w), top, bottom)
      pred = prob >= threshold
      core = slice(start - top, stop - top)
      masks.write(pred[core].astype(np.uint8) * 255)
      probs.write(np.round(prob[core] * 255).astype(np.uint8))
      edges = viz.contour(pred, thickness)[core]
      overlays.write(viz.paint(rgb_rows(image, start, stop), pred[core], edges))
      foreground += int(np.count_nonzero(pred[core]))
  return stem, f"overlays/{name}", foreground / (h * w)


def write_heatmap(path: str, image: Image.Image, energy: np.ndarray) -> None:
  """`overlays.heatmap_overlay(image, energy)` written to `path` a band of rows at a time."""
  w, h = image.size
  heat = viz.heat_at_size(energy, (h, w))  # one byte per pixel
  step = band_rows(w)
  with PngRows(path, w, h, "RGB") as out:
    for start in range(0, h, step):
      stop = min(h, start + step)
      out.write(viz.blend_heat(rgb_rows(image, start, stop),
                               np.asarray(heat.crop((0, start, w, stop)))))


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
  trained = inference.load_trained(workdir, step, tta=tta)
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
  entries, pending = [], []  # index entries; (path, network input, image or None) awaiting a batch
  held = 0  # pixels of the decoded images in `pending`

  def flush():
    logits, maps = predict_logits(trained, [resized for _, resized, _ in pending], attention)
    for i, (path, _, image) in enumerate(pending):
      if image is None:  # not kept while the batch filled: the same pixels, decoded again
        image = decode_rgb(path, max_pixels=max_pixels)
      stem = names[path]
      entries.append(write_outputs(output, stem, image, logits[i], threshold))
      for name, features in maps.items():  # e.g. 'isam/out' -> <stem>_isam.png
        write_heatmap(os.path.join(output, "attention", f"{stem}_{name.split('/')[0]}.png"), image,
                      viz.feature_energy(features[i]))
      image.close()
    pending.clear()

  for path, image in tqdm(read_images(paths, skipped, max_pixels), total=len(paths), desc="predict",
                          unit="img"):
    resized = preprocess.resize_pil(image, trained.image_size)  # what the network sees
    pixels = image.size[0] * image.size[1]
    if held and held + pixels > HOLD_PIXELS:  # the batch's first image is always kept
      image.close()
      image = None
    else:
      held += pixels
    pending.append((path, resized, image))
    if len(pending) == batch_size:
      flush()
      held = 0
  if pending:
    flush()
  page = viz.write_index(output, entries, with_gt=False) if entries else None
  return {"predicted": len(entries) + frame_count, "skipped": skipped,
          "skip_reasons": skip_reasons(skipped), "index": page, "step": trained.step,
          "tta": trained.tta,
          "names": {p: names[p] for p in paths}, "streams": streamed["streams"]}
