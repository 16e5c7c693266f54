"""Scores saved predictions against ground-truth masks with the PraNet-toolbox metrics.

  python -m bsa_jax.eval --pred-dir results/Kvasir --gt-dir ../shared/data/kvasir_seg/masks
      [--name Kvasir] [--pred-dir P2 --gt-dir G2 --name N2 ...] [--out results/metrics] [--per-image]

Predictions pair with masks by file stem, also the image stems of the public releases (ColonDB mask
`p12` <- prediction `12`, PH2 `IMD003_lesion` <- `IMD003`). A dataset root holding `masks/` may be
given as --gt-dir. Predictions of another size are resized bilinearly (align_corners=False) to the
mask's size; the toolbox would use MATLAB's bicubic imresize. Prints one Markdown row per dataset
and writes OUT.csv and OUT.json (and OUT_per_image.csv with --per-image).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

import numpy as np
from tqdm import tqdm

from bsa_jax.eval import io, metrics, tables

PER_IMAGE_FIELDS = ("dice_mean", "iou_mean", "s_alpha", "fw", "em_mean", "em_adaptive", "mae",
                    "dice@0.5", "iou@0.5")


def parse_args(argv):
  parser = argparse.ArgumentParser(prog="python -m bsa_jax.eval", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--pred-dir", action="append", required=True,
                      help="folder of predicted maps (8-bit, 16-bit or float [0,1] images); "
                           "repeat with --gt-dir for several datasets")
  parser.add_argument("--gt-dir", action="append", required=True,
                      help="folder of ground-truth masks, or a dataset root with masks/")
  parser.add_argument("--name", action="append", default=None,
                      help="dataset name per --pred-dir (default: the GT folder's name)")
  parser.add_argument("--out", default="polyp_metrics",
                      help="output path without extension (a .csv/.json suffix is dropped)")
  parser.add_argument("--per-image", action="store_true", help="also write OUT_per_image.csv")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  args = parser.parse_args(argv)
  if len(args.pred_dir) != len(args.gt_dir):
    parser.error("give one --gt-dir for every --pred-dir")
  if args.name is not None and len(args.name) != len(args.pred_dir):
    parser.error("give one --name for every --pred-dir (or none)")
  return args


def default_name(gt_dir: str) -> str:
  """The dataset folder's name ('kvasir_seg' for .../kvasir_seg/masks)."""
  path = os.path.normpath(os.path.abspath(gt_dir))
  base = os.path.basename(path)
  return os.path.basename(os.path.dirname(path)) if base.lower() in ("masks", "gt") else base


def score_pair(pair: io.Pair) -> tuple[dict, bool]:
  """The record of one (prediction, mask) file pair and whether the prediction was resized."""
  gt = io.read_gt(pair.gt_path)
  pred = io.read_prediction(pair.pred_path)
  resized = pred.shape != gt.shape
  if resized:
    pred = np.clip(metrics.resize_prediction(pred, gt.shape), 0, 1)
  return metrics.image_scores(pred, gt), resized


def evaluate_dir(pred_dir: str, gt_dir: str, name: str, progress: bool = True):
  """Dataset-level scores, per-image rows and counts for one prediction folder."""
  pairs, unused = io.match_pairs(pred_dir, gt_dir)
  records, per_image, num_resized = [], [], 0
  for pair in tqdm(pairs, desc=name, unit="img", disable=not progress, file=sys.stderr):
    record, resized = score_pair(pair)
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


def main(argv=None) -> dict:
  args = parse_args(argv)
  names = args.name or [default_name(g) for g in args.gt_dir]
  results, per_image = {}, []
  try:
    for pred_dir, gt_dir, name in zip(args.pred_dir, args.gt_dir, names):
      summary, rows, unused = evaluate_dir(pred_dir, gt_dir, name, progress=not args.quiet)
      results[name], per_image = summary, per_image + rows
      if unused:
        print(f"warning: {len(unused)} prediction(s) in {pred_dir} have no mask, e.g. "
              f"{os.path.basename(unused[0])}; they were not scored", file=sys.stderr)
      if summary["num_resized"]:
        print(f"note: {summary['num_resized']} prediction(s) of {name} were resized to their "
              f"mask's size (bilinear)", file=sys.stderr)
  except io.EvalInputError as e:
    sys.exit(f"error: {e}")
  print(markdown(results))
  for path in write_outputs(results, per_image, args.out, args.per_image):
    print(f"wrote {path}", file=sys.stderr)
  return results


if __name__ == "__main__":
  main()
