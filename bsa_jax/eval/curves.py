"""Training curves of a run: loss, validation scores and learning rate against epochs, as one PNG.

  python -m bsa_jax.eval.curves --workdir=workdirs/kvasir      # -> workdirs/kvasir/training_curves.png

Reads the run's `metrics.jsonl`. A resumed run appends the steps it replays after its last checkpoint
again; the later record of a step wins, so the curve is the one the surviving run followed. A line
torn by a kill mid-write is skipped with a warning.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
from absl import flags

from bsa_jax import cli

LOSS_KEYS = ("loss", "loss_main", "loss_side", "loss_points")
VAL_KEYS = ("val/mDSC", "val/mIoU")


def load_curves(metrics_path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{scalar name: (steps, values)} sorted by step, the last record of a repeated step kept."""
  by_key: dict[str, dict[int, float]] = {}
  with open(metrics_path) as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError:  # a run killed mid-write leaves a torn line; its resume goes on
        logging.warning("%s:%d is not JSON (torn by an interrupted write?); skipped.",
                        metrics_path, line_no)
        continue
      step = int(record.pop("step"))
      for key, value in record.items():
        if isinstance(value, (int, float)):
          by_key.setdefault(key, {})[step] = float(value)
  curves = {}
  for key, points in by_key.items():
    steps = np.array(sorted(points), np.int64)
    curves[key] = (steps, np.array([points[s] for s in steps], np.float64))
  return curves


def steps_per_epoch(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> float | None:
  """From the logged (step, epoch) pairs; None when the run logged no epochs."""
  if "epoch" not in curves:
    return None
  steps, epochs = curves["epoch"]
  keep = epochs > 0
  return float(np.median(steps[keep] / epochs[keep])) if keep.any() else None


def plot_training_curves(workdir: str, out_path: str | None = None, title: str | None = None) -> str:
  """Writes the three-panel curve PNG (losses, validation scores, learning rate); returns its path."""
  import matplotlib  # plotting: only when a curve is drawn
  matplotlib.use("Agg")  # files only; no display on servers
  from matplotlib import pyplot as plt  # plotting: only when a curve is drawn

  metrics_path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(metrics_path):
    raise FileNotFoundError(f"{metrics_path} not found: is {workdir} a training workdir?")
  curves = load_curves(metrics_path)
  per_epoch = steps_per_epoch(curves)
  to_x = (lambda s: s / per_epoch) if per_epoch else (lambda s: s)
  x_label = "epoch" if per_epoch else "step"

  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  ax_loss, ax_val, ax_lr = axes
  for key in LOSS_KEYS:
    if key in curves:
      steps, values = curves[key]
      ax_loss.plot(to_x(steps), values, label=key, linewidth=1.8 if key == "loss" else 1.0)
  ax_loss.set_title("training loss")
  ax_loss.set_yscale("log")

  val_keys = [k for k in VAL_KEYS if k in curves]
  for key in val_keys:
    steps, values = curves[key]
    ax_val.plot(to_x(steps), values, marker="o", markersize=3, label=key.removeprefix("val/"))
  if val_keys:
    steps, values = curves[val_keys[0]]
    best = int(np.argmax(values))
    ax_val.axvline(to_x(steps[best]), color="grey", linestyle="--", linewidth=0.8)
    ax_val.annotate(f"best {values[best]:.3f} @ step {steps[best]}", (to_x(steps[best]), values[best]),
                    textcoords="offset points", xytext=(-10, -14), ha="right", fontsize=8)
  else:
    ax_val.text(0.5, 0.5, "no validation scores logged", ha="center", va="center",
                transform=ax_val.transAxes)
  ax_val.set_title("validation (selects the checkpoint)")

  if "learning_rate" in curves:
    steps, values = curves["learning_rate"]
    ax_lr.plot(to_x(steps), values)
  ax_lr.set_title("learning rate")
  ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))

  for ax in axes:
    ax.set_xlabel(x_label)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
  fig.suptitle(title or os.path.basename(os.path.normpath(workdir)))
  fig.tight_layout()
  out_path = out_path or os.path.join(workdir, "training_curves.png")
  fig.savefig(out_path, dpi=100)
  plt.close(fig)
  return out_path


def define_flags() -> None:
  """The command's flags, defined only when it runs as one (importing the library defines none)."""
  flags.DEFINE_string("workdir", None, "A run's workdir (holds metrics.jsonl).")
  flags.DEFINE_string("out", None, "PNG path (default <workdir>/training_curves.png).")


def main(argv) -> int:
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments {argv[1:]}; flags look like --name=value.")
  if not flags.FLAGS.workdir:
    raise cli.UserError("--workdir is required, e.g. --workdir=workdirs/kvasir")
  print(plot_training_curves(flags.FLAGS.workdir, flags.FLAGS.out))
  return 0


if __name__ == "__main__":
  define_flags()
  cli.run(main, prog="python -m bsa_jax.eval.curves")
