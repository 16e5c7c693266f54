"""Scoring a model on evaluation sets at the original mask resolution, and writing result files.

The network predicts at its training resolution; logits are resized bilinearly to each ground truth's
original size (PraNet convention) before the polyp metrics of `bsa_jax.eval` are computed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from typing import Callable, Mapping

import jax
import numpy as np

from bsa_jax import config_lib
from bsa_jax import hostinfo
from bsa_jax.eval import overlays as viz
from bsa_jax.data import checksums
from bsa_jax.data import sources
from bsa_jax.eval import metrics as metrics_lib
from bsa_jax.eval import multiclass as evaluate_multiclass
from bsa_jax.eval import tables


def set_dir_name(set_name: str) -> str:
  """A data set entry as one folder name: 'kvasir_seg:pranet_test' → 'kvasir_seg_pranet_test', and a
  'folder:/abs/path_val' entry stays one folder instead of nesting."""
  return re.sub(r"[^\w.-]+", "_", set_name).strip("_")


def sigmoid(x: np.ndarray) -> np.ndarray:
  return 1.0 / (1.0 + np.exp(-x))


def get_evaluator(kind: str) -> Callable:
  """`config.eval.kind` → evaluate_sets-like function: 'polyp' (binary) or 'multiclass' (DSC/HD95)."""
  if kind == "polyp":
    return evaluate_sets
  if kind == "multiclass":
    return evaluate_multiclass.evaluate_sets
  raise ValueError(f"Unknown --config.eval.kind={kind!r}; use 'polyp' or 'multiclass'.")


def evaluate_sets(predict: Callable[[dict], np.ndarray], eval_sets: Mapping, *,
                  batch_size: int, progress: bool = False, overlay_dir: str | None = None,
                  num_overlays: int = 0) -> dict[str, float]:
  """Scores `predict` ({'image': (B,S,S,3), ...} → logits (B,S,S,1)) on all of `eval_sets`, pooled.

  `predict` may also return {'logits': ..., 'coarse': ...} (`train.predict_step(with_coarse=True)`):
  the coarse prediction (BSA-Net before its Attention Rendering Module) is then scored too, as
  'mDSC_coarse' and 'mIoU_coarse' beside the refined prediction's metrics.

  Returns the dataset-level metrics (`metrics_lib.METRIC_NAMES` and extras) plus `num_images`.
  Writes up to `num_overlays` overlay pictures and an index page to `overlay_dir` if given.
  """
  from bsa_jax.eval import metrics as metrics_lib  # scipy-heavy; only needed when scoring
  accumulator = metrics_lib.PolypMetrics()
  coarse_accumulator = metrics_lib.CurveMetrics()
  overlays = []
  want_images = bool(overlay_dir) and num_overlays > 0
  for eval_set in eval_sets.values():
    batches = eval_set.batches(batch_size, with_original_images=want_images)
    if progress:
      from tqdm import tqdm  # the optional progress bar: only when asked for
      batches = tqdm(batches, total=-(-len(eval_set) // batch_size), desc=f"eval {eval_set.name}",
                     unit="batch", leave=False)
    for batch in batches:
      inputs = {k: v for k, v in batch.items() if k.startswith("image") and k != "image_orig"}
      out = predict(inputs)
      coarse = None
      if isinstance(out, dict):
        out, coarse = out["logits"], np.asarray(out["coarse"], np.float32)[..., 0]
      logits = np.asarray(out, np.float32)[..., 0]  # (B, S, S)
      for i, valid in enumerate(batch["valid"]):
        if not valid:
          continue
        gt = batch["mask_orig"][i]
        prob = sigmoid(metrics_lib.resize_prediction(logits[i], gt.shape))  # (H0, W0)
        accumulator.update(prob, gt)
        if coarse is not None:
          coarse_accumulator.update(sigmoid(metrics_lib.resize_prediction(coarse[i], gt.shape)), gt)
        if want_images and len(overlays) < num_overlays:
          overlays.append((batch["id"][i], batch["image_orig"][i], prob, gt))
  result = dict(accumulator.result())
  if coarse_accumulator.num_images:
    result.update({f"{k}_coarse": v for k, v in coarse_accumulator.result().items()})
  result["num_images"] = accumulator.num_images
  if overlays:
    viz.write_overlay_page(overlay_dir, overlays)
  return result


def markdown_summary(results: dict[str, dict[str, float]]) -> str:
  """One Markdown row per evaluated set: the six polyp metrics (or, for other kinds, every metric)."""
  first = next(iter(results.values()), {})
  names = [n for n in metrics_lib.METRIC_NAMES if n in first] or sorted(
      k for k in first if k != "num_images")
  lines = ["| test set | images | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
  for set_name, values in results.items():
    lines.append(f"| {set_name} | {int(values['num_images'])} | " +
                 " | ".join(f"{values[n]:.3f}" for n in names) + " |")
  return "\n".join(lines)


def git_commit() -> str:
  """The repository's HEAD commit (with '+dirty' if it has uncommitted changes), or 'unknown'."""
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=config_lib.REPO_ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           cwd=config_lib.REPO_ROOT, capture_output=True, text=True).stdout.strip()
    return commit + ("+dirty" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def init_description(config) -> str:
  """How the run's weights started: ImageNet (which checkpoint) or from scratch."""
  from bsa_jax.models import pretrained  # imports flax/orbax: only when results are written
  return pretrained.describe(config.get("model_init", ""), config.get("resume", ""))


def provenance(config, *, checkpoint_step: int, selection: str) -> dict:
  """What produced a result row: code commit, config hash, data checksums, model, its
  initialisation, checkpoint and how it was chosen (MANIFEST.md-style content sha256 per dataset
  folder), and under data.missing='skip' what of the configured data was not on disk."""
  prov = {
      "commit": git_commit(),
      "config_hash": config_lib.config_hash(config),
      "datasets_sha256": checksums.config_checksums(config.data),
      "checkpoint_step": int(checkpoint_step),
      "model": config.model_name,
      "init": init_description(config),
      "selection": selection,
      "machine": f"{hostinfo.machine_line()}; {jax.device_count()} {jax.devices()[0].device_kind} "
                 "device(s)",  # wall times and speeds depend on it
  }
  if config.train.get("ema_decay", 0.0) > 0:  # stated only when used, so older tables read the same
    prov["weights"] = f"exponential moving average, decay {config.train.ema_decay:g}"
  if config.eval.get("tta", "none") != "none":
    prov["tta"] = f"{config.eval.tta} (logits averaged over flipped inputs)"
  left_out = data_left_out(config.data)
  if left_out:
    prov["data_left_out"] = left_out
  return prov


def coverage_note(cov: dict | None) -> str:
  """'13 of the split's 76 on disk' or 'cvc_clinicdb: 105 of the split's 123 on disk; without
  cvc_300 (not on disk)' for a partly present entry (`sources.coverage`), else ''."""
  if not cov:
    return ""
  parts = []
  if cov["absent"] or len(cov["partial"]) > 1 or cov["listed"] is None:  # say which member
    parts += [f"{name}: {found} of the split's {listed} on disk"
              for name, found, listed in cov["partial"]]
  elif cov["present"] < cov["listed"]:
    parts.append(f"{cov['present']} of the split's {cov['listed']} on disk")
  if cov["absent"]:
    parts.append(f"without {', '.join(cov['absent'])} (not on disk)")
  return "; ".join(parts)


def data_left_out(data_config) -> str:
  """Under data.missing='skip': what of train/val/test was not on disk, one clause per entry."""
  if not sources.skip_missing(data_config):
    return ""
  clauses = []
  for which in ("train", "val", "test"):
    skipped = sources.skipped_entries(data_config, which)
    for entry in data_config[which]:
      if entry in skipped:
        clauses.append(f"{which} {entry}: not run (not on disk)")
        continue
      note = coverage_note(sources.coverage(data_config, entry))
      if note:
        clauses.append(f"{which} {entry}: {note}")
  return "; ".join(clauses)


def summary_table(results: dict, kind: str) -> str:
  """The Markdown summary for `config.eval.kind`."""
  if kind == "multiclass":
    return evaluate_multiclass.markdown_summary(results)
  return markdown_summary(results)


def write_results(workdir: str, results: dict[str, dict[str, float]], *, config,
                  checkpoint_step: int, selection: str) -> list[str]:
  """Writes `results/test_metrics.{json,md}` and the kind's tables (paper Tables 1–4 for polyps,
  DIN-style for multi-class); returns the paths."""
  out_dir = os.path.join(workdir, "results")
  os.makedirs(out_dir, exist_ok=True)
  prov = provenance(config, checkpoint_step=checkpoint_step, selection=selection)
  if config.eval.kind == "multiclass":
    prov["protocol"] = evaluate_multiclass.PROTOCOL
  path = os.path.join(out_dir, "test_metrics.json")
  with open(path, "w") as f:
    json.dump({"results": results, "provenance": prov}, f, indent=2)
  summary_path = os.path.join(out_dir, "test_metrics.md")
  not_run = sources.skipped_entries(config.data, "test")
  with open(summary_path, "w") as f:
    f.write("".join(line + "\n" for line in tables.init_line(prov))
            + summary_table(results, config.eval.kind) + "\n\n"
            + "".join(f"Not run: {k}: {v}\n\n" for k, v in not_run.items())
            + "; ".join(f"{k}: {v}" for k, v in prov.items()) + "\n")
  paths = [path, summary_path]
  if config.eval.kind == "multiclass":
    paths.append(evaluate_multiclass.write_tables_csv(out_dir, results))
  else:
    notes = ({name: coverage_note(sources.coverage(config.data, name)) for name in results}
             if sources.skip_missing(config.data) else {})
    paths += list(tables.write_tables(results, out_dir, prov, notes=notes,
                                      not_run=not_run))
  return paths
