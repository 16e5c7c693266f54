"""Scores saved predictions against ground-truth masks with the PraNet-toolbox metrics.

  python -m bsa_jax.eval --pred_dir=results/Kvasir --gt_dir=$BSA_DATA_DIR/kvasir_seg/masks
      [--name=Kvasir] [--pred_dir=P2 --gt_dir=G2 --name=N2 ...] [--out=results/metrics] [--per_image]

Predictions pair with masks by file stem, also the image stems of the public releases (ColonDB mask
`p12` <- prediction `12`, PH2 `IMD003_lesion` <- `IMD003`). A dataset root holding `masks/` may be
given as --gt_dir. Predictions of another size are resized bilinearly (align_corners=False) to the
mask's size; the toolbox would use MATLAB's bicubic imresize. Prints one Markdown row per dataset
and writes OUT.csv and OUT.json (and OUT_per_image.csv with --per_image).
"""

from __future__ import annotations

import csv
import json
import os
import sys

import numpy as np
from absl import flags
from tqdm import tqdm

from bsa_jax import cli
from bsa_jax.eval import io, metrics, tables

PER_IMAGE_FIELDS = ("dice_mean", "iou_mean", "s_alpha", "fw", "em_mean", "em_adaptive", "mae",
                    "dice@0.5", "iou@0.5")


def define_flags() -> None:
  """The command's flags, defined only when it runs as one (importing this module defines none)."""
  flags.DEFINE_multi_string(
      "pred_dir", None, "Folder of predicted maps (8-bit, 16-bit or float [0,1] images); repeat "
      "with --gt_dir for several datasets.")
  flags.DEFINE_multi_string("gt_dir", None,
                            "Folder of ground-truth masks, or a dataset root with masks/.")
  flags.DEFINE_multi_string("name", None,
                            "Dataset name per --pred_dir (default: the GT folder's name).")
  flags.DEFINE_string("out", "polyp_metrics",
                      "Output path without extension (a .csv/.json suffix is dropped).")
  flags.DEFINE_bool("per_image", False, "Also write OUT_per_image.csv.")
  flags.DEFINE_bool("quiet", False, "No progress bar.")
  flags.DEFINE_integer("max_pixels", 0, "Prediction and mask files above this many pixels are "
                       "refused, naming the file (<= 0: only PIL's decompression-bomb limit).")


def default_name(gt_dir: str) -> str:
  """The dataset folder's name ('kvasir_seg' for .../kvasir_seg/masks)."""
  path = os.path.normpath(os.path.abspath(gt_dir))
  base = os.path.basename(path)
  return os.path.basename(os.path.dirname(path)) if base.lower() in ("masks", "gt") else base


def score_pair(pair: io.Pair, max_pixels: int | None = None) -> tuple[dict, bool]:
  """The record of one (prediction, mask) file pair and whether the prediction was resized.

  Scored at the mask's size, one pair at a time: at most the mask, the prediction and the metrics'
  working maps of this pair are in memory. Files above `max_pixels` (None: PIL's decompression-bomb
  limit) are refused with an EvalInputError naming the file.
  """
  gt = io.read_gt(pair.gt_path, max_pixels)
  pred = io.read_prediction(pair.pred_path, max_pixels)
  if pred.shape != gt.shape:
    # The resized map is this function's own: it is normalised in place, one full-size float map.
    return metrics.pixel_image_scores(_resize_in_bands(pred, gt.shape), gt, in_place=True), True
  return metrics.image_scores(pred, gt), False


def _resize_in_bands(pred: np.ndarray, shape: tuple[int, int], rows: int = 256) -> np.ndarray:
  """`np.clip(metrics.resize_prediction(pred, shape), 0, 1)`, the same bits, one band of output rows
  at a time: one full-size float64 map instead of three."""
  out = np.empty(shape, np.float64)
  for a in range(0, shape[0], rows):
    out[a:a + rows] = metrics.resize_rows(pred, shape, a, min(shape[0], a + rows))
  return np.clip(out, 0, 1, out=out)


def evaluate_dir(pred_dir: str, gt_dir: str, name: str, progress: bool = True,
                 max_pixels: int | None = None):
  """Dataset-level scores, per-image rows and counts for one prediction folder.

  `max_pixels`: prediction and mask files above it are refused, naming the file (None: PIL's limit).
  """
  pairs, unused = io.match_pairs(pred_dir, gt_dir)
  records, per_image, num_resized = [], [], 0
  for pair in tqdm(pairs, desc=name, unit="img", disable=not progress, file=sys.stderr):
    record, resized = score_pair(pair, max_pixels)
    num_resized += resized
    records.append(record)
    per_image.append({"dataset": name, "name": pair.name, **_per_image_row(record)})
  summary = {"num_images": len(records), **metrics.aggregate(records), "num_resized": num_resized,
             "num_unused_predictions": len(unused), "pred_dir": os.path.abspath(pred_dir),
             "gt_dir": os.path.abspath(io.resolve_gt_dir(gt_dir))}
  return summary, per_image, unused


def _per_image_row(record: dict) -> dict:
  return {"dice_mean": float(record["dice_curve"].mean()),
          "iou_mean": float(record["iou_curve"].mean()),
          "em_mean": float(record["em_curve"].mean()),
          **{k: float(record[k]) for k in PER_IMAGE_FIELDS if k in record}}


def _out_stem(out: str) -> str:
  stem, ext = os.path.splitext(out)
  return stem if ext.lower() in (".csv", ".json") else out


def write_outputs(results: dict, per_image: list, out: str, with_per_image: bool) -> list[str]:
  """OUT.csv (one row per dataset), OUT.json (+ conventions), OUT_per_image.csv."""
  stem = _out_stem(out)
  os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
  fields = ["dataset", "num_images", *metrics.ALL_METRIC_NAMES, "num_resized",
            "num_unused_predictions", "pred_dir", "gt_dir"]
  paths = [stem + ".csv", stem + ".json"]
  with open(paths[0], "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    for name, summary in results.items():
      writer.writerow({"dataset": name, **summary})
  with open(paths[1], "w") as f:
    json.dump({"datasets": results, "metric_names": list(metrics.METRIC_NAMES),
               "extra_metric_names": list(metrics.EXTRA_METRIC_NAMES),
               "conventions": tables.CONVENTIONS}, f, indent=2)
  if with_per_image:
    paths.append(stem + "_per_image.csv")
    with open(paths[2], "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=["dataset", "name", *PER_IMAGE_FIELDS])
      writer.writeheader()
      writer.writerows(per_image)
  return paths


def markdown(results: dict) -> str:
  names = list(metrics.METRIC_NAMES) + ["Dice@0.5", "IoU@0.5"]
  rows = [[name, s["num_images"], *[s[k] for k in names]] for name, s in results.items()]
  return tables.markdown_table(["Dataset", "n", *names], rows)


def score_dirs(pred_dirs, gt_dirs, names, progress: bool = True,
               max_pixels: int | None = None) -> tuple[dict, list]:
  """{name: dataset scores} and the per-image rows of every (prediction, GT) folder pair."""
  results, per_image = {}, []
  for pred_dir, gt_dir, name in zip(pred_dirs, gt_dirs, names):
    summary, rows, unused = evaluate_dir(pred_dir, gt_dir, name, progress=progress,
                                         max_pixels=max_pixels)
    results[name], per_image = summary, per_image + rows
    if unused:
      print(f"warning: {len(unused)} prediction(s) in {pred_dir} have no mask, e.g. "
            f"{os.path.basename(unused[0])}; they were not scored", file=sys.stderr)
    if summary["num_resized"]:
      print(f"note: {summary['num_resized']} prediction(s) of {name} were resized to their "
            f"mask's size (bilinear)", file=sys.stderr)
  return results, per_image


def main(argv) -> int:
  f = flags.FLAGS
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments {argv[1:]}; give each folder with --pred_dir/--gt_dir.")
  if not f.pred_dir or not f.gt_dir or len(f.pred_dir) != len(f.gt_dir):
    raise cli.UserError("give one --gt_dir for every --pred_dir (at least one pair).")
  if f.name is not None and len(f.name) != len(f.pred_dir):
    raise cli.UserError("give one --name for every --pred_dir (or none).")
  names = f.name or [default_name(g) for g in f.gt_dir]
  try:
    results, per_image = score_dirs(f.pred_dir, f.gt_dir, names, progress=not f.quiet,
                                    max_pixels=f.max_pixels if f.max_pixels > 0 else None)
  except io.EvalInputError as e:  # a file or folder the user gave: named in the message
    raise cli.UserError(str(e)) from None
  print(markdown(results))
  for path in write_outputs(results, per_image, f.out, f.per_image):
    print(f"wrote {path}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  define_flags()
  cli.run(main, prog="python -m bsa_jax.eval")
