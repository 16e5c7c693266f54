"""Dataset integrity check (like nnU-Net's): reports every problem in a folder at once.

  python -m bsa_jax.data.check DIR [--dataset kvasir_seg] [--threads 2]

DIR is one dataset's folder (e.g. $BSA_DATA_DIR/kvasir_seg, a Kvasir-SEG download, an ACDC folder).
Every file is fully decoded. Errors: unreadable/truncated files, images without a mask, masks without an
image, duplicate ids, image/mask size mismatch, non-binary masks, an empty folder; for .h5/.npz volumes:
missing arrays, shape mismatch, NaN, labels out of range. Warnings: empty masks, ignored non-image files.
Exit status 1 if there is any error.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from concurrent import futures

import numpy as np
from absl import flags

from bsa_jax import cli
from bsa_jax.data import io
from bsa_jax.data import registry
from bsa_jax.data import volumes


@dataclasses.dataclass
class Report:
  folder: str
  num_items: int = 0
  errors: list[str] = dataclasses.field(default_factory=list)
  warnings: list[str] = dataclasses.field(default_factory=list)

  @property
  def ok(self) -> bool:
    return not self.errors

  def format(self) -> str:
    lines = [f"ERROR   {e}" for e in self.errors] + [f"WARNING {w}" for w in self.warnings]
    verdict = "OK" if self.ok else "FAILED"
    lines.append(f"{verdict}: {self.folder}: {self.num_items} item(s) checked, {len(self.errors)} "
                 f"error(s), {len(self.warnings)} warning(s).")
    return "\n".join(lines)


def _check_pair(e: registry.Example, max_pixels: int | None = io.DEFAULT_MAX_PIXELS
                ) -> tuple[list[str], list[str]]:
  """(errors, warnings) of one image/mask pair, decoding both files (the mask by io.MASK_RULE)."""
  errors, warnings = [], []
  size = mask = None
  try:
    # Every byte is decoded (a JPEG in draft mode), but no full-size array is kept.
    size = io.verify_file(e.image, max_pixels=max_pixels, min_side=1)
  except io.DataError as err:
    errors.append(str(err))
  try:
    mask = io.load_mask(e.mask, max_pixels=max_pixels)
  except io.DataError as err:
    errors.append(str(err))
  if size is not None and mask is not None and size != mask.shape:
    errors.append(f"{e.mask}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
                  f"{os.path.basename(e.image)} is {size[1]}x{size[0]}")
  if mask is not None and not mask.any():
    warnings.append(f"{e.mask}: the mask is empty (all background)")
  return errors, warnings


def _stray_files(folder: str, layout: registry.Layout) -> list[str]:
  """Files in the layout's folders that are not images (ignored by the readers)."""
  out = []
  for pattern in dict.fromkeys((layout.image_glob, layout.mask_glob)):
    for path in sorted(glob.glob(os.path.join(glob.escape(folder), pattern))):
      name = os.path.basename(path)
      if os.path.isfile(path) and not io.is_image_file(name) and not name.startswith(".") \
          and not name.lower().endswith((".txt", ".md", ".csv", ".json", ".list", ".xlsx")):
        out.append(f"{path}: not an image file ({', '.join(io.IMAGE_EXTENSIONS)}); ignored")
  return out


def _guess_spec(folder: str, dataset: str | None) -> registry.DatasetSpec:
  if dataset:
    return registry.spec(dataset)
  base = os.path.basename(os.path.normpath(folder))
  for s in registry.DATASETS.values():
    if base in {os.path.basename(d) for d in s.dirs}:
      return s
  for s in registry.DATASETS.values():  # the first release layout with files in it
    for layout in s.layouts:
      if registry.layout_exists(folder, layout) and registry.list_files(
          folder, layout.image_glob, layout.image_re, duplicates=[]):
        return s
  return registry.DATASETS["kvasir_seg"]  # the common images/ + masks/ layout


def check_images(folder: str, dataset: str | None = None, threads: int = 2,
                 max_pixels: int | None = io.DEFAULT_MAX_PIXELS) -> Report:
  """Checks a 2D image/mask dataset folder; returns every problem found.

  Files above `max_pixels` are reported, not decoded (None: only PIL's decompression-bomb limit).
  """
  report = Report(folder)
  s = _guess_spec(folder, dataset)
  examples: list[registry.Example] = []
  found_layout = False
  for layout in s.layouts:
    if not registry.layout_exists(folder, layout):
      continue
    dup: list[str] = []
    images = registry.list_files(folder, layout.image_glob, layout.image_re, duplicates=dup)
    masks = registry.list_files(folder, layout.mask_glob, layout.mask_re, duplicates=dup)
    if not images and not masks:
      continue
    found_layout = True
    report.errors += dup
    report.warnings += _stray_files(folder, layout)
    pairs, missing, extra = registry.match_files(images, masks, layout.official_split)
    for have, none, empty_glob, other_glob in ((masks, images, layout.image_glob, layout.mask_glob),
                                               (images, masks, layout.mask_glob, layout.image_glob)):
      if have and not none:  # one line for an empty folder, not one line per file of the other
        where, other = (os.path.join(folder, os.path.dirname(g)) for g in (empty_glob, other_glob))
        report.errors.append(
            f"{where}: the folder is empty (no {', '.join(io.IMAGE_EXTENSIONS)} files), so none of "
            f"the {len(have)} file(s) in {other} has a partner; put the files there, or check the "
            "folder names")
    if not images or not masks:
      missing, extra = [], []
    report.errors += [f"{p}: image has no mask (looked for "
                      f"{' / '.join(registry.mask_stems(os.path.splitext(os.path.basename(p))[0])[:5])})"
                      for p in missing]
    report.errors += [f"{p}: mask has no image" for p in extra]
    examples += pairs
    if not s.combine_layouts:
      break
  if not found_layout:
    report.errors.append(f"{folder}: empty, or no image/mask files in a known layout (expected e.g. "
                         f"{s.layouts[0].image_glob} and {s.layouts[0].mask_glob}; formats "
                         f"{', '.join(io.IMAGE_EXTENSIONS)})")
    return report
  report.num_items = len(examples)
  with futures.ThreadPoolExecutor(max(1, threads)) as pool:
    for errors, warnings in pool.map(lambda e: _check_pair(e, max_pixels), examples):
      report.errors += errors
      report.warnings += warnings
  return report


def check_volumes(folder: str, dataset: str | None = None) -> Report:
  """Checks every .h5/.npz file under `folder` (ACDC/Synapse layouts)."""
  report = Report(folder)
  files = sorted(glob.glob(os.path.join(glob.escape(folder), "**", "*.h5"), recursive=True) +
                 glob.glob(os.path.join(glob.escape(folder), "**", "*.npz"), recursive=True))
  if dataset is None:
    dataset = "synapse" if any("case" in os.path.basename(f) for f in files) else "acdc"
  report.num_items = len(files)
  for path in files:
    try:
      image, label = volumes.load_volume(dataset, path)
    except io.DataError as err:
      report.errors.append(str(err))
      continue
    if not np.any(label):
      report.warnings.append(f"{path}: the label is all background")
  if not files:
    report.errors.append(f"{folder}: no .h5/.npz files")
  return report


def check(folder: str, dataset: str | None = None, threads: int = 2,
          max_pixels: int | None = io.DEFAULT_MAX_PIXELS) -> Report:
  """Dispatches on the folder's content: volumes (.h5/.npz) or 2D image/mask files.

  `max_pixels`: image/mask files above it are reported, not decoded (training's data.max_pixels).
  """
  if not os.path.isdir(folder):
    report = Report(folder)
    report.errors.append(f"{folder}: not a directory")
    return report
  if dataset in ("acdc", "synapse") or (dataset is None and (
      glob.glob(os.path.join(glob.escape(folder), "**", "*.h5"), recursive=True)
      or glob.glob(os.path.join(glob.escape(folder), "**", "*.npz"), recursive=True))):
    return check_volumes(folder, dataset)
  return check_images(folder, dataset, threads, max_pixels)


def define_flags() -> None:
  """The command's flags, defined only when it runs as one (importing the library defines none)."""
  flags.DEFINE_string("dataset", None, f"Layout to expect: one of {', '.join(registry.DATASETS)}, "
                      "acdc, synapse (default: guessed from the folder).")
  flags.DEFINE_integer("threads", 2, "Files decoded at once.")
  flags.DEFINE_integer("max_pixels", io.DEFAULT_MAX_PIXELS,
                       "Files above this many pixels are refused, naming the file (<= 0: no limit).")


def main(argv) -> int:
  if len(argv) != 2:
    raise cli.UserError("give one dataset folder, e.g. python -m bsa_jax.data.check "
                        "$BSA_DATA_DIR/kvasir_seg")
  limit = flags.FLAGS.max_pixels
  report = check(argv[1], flags.FLAGS.dataset, flags.FLAGS.threads,
                 max_pixels=limit if limit > 0 else None)
  print(report.format())
  return 0 if report.ok else 1


if __name__ == "__main__":
  define_flags()
  cli.run(main, prog="python -m bsa_jax.data.check")
