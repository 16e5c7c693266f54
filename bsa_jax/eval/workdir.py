"""Evaluate a trained workdir on every configured test set and write the paper-style tables.

  python -m bsa_jax.eval.workdir --workdir=workdirs/kvasir [--step=best|latest|N] [--split=test|val]
  python -m bsa_jax.eval.workdir --workdir=W --split=val --tta=flips --weights=raw   # screening

Uses the checkpoint selected on validation by default (never a test set), scores each set at the
original mask resolution, and writes `results/` (JSON, Markdown summary, paper Tables 1–4 as
Markdown/CSV with provenance), `overlays/<set>/` and `training_curves.png` in the workdir.

`--tta` and `--weights` score the run with flip averaging or weights other than its own (e.g. the
live weights of a run that kept a moving average): a screening tool, so it reads the validation sets
only, and its overlays go to `overlays/<setting>/`, leaving the run's own untouched.
"""

from __future__ import annotations

import os

from absl import flags

from bsa_jax import cli
from bsa_jax import compile_cache
from bsa_jax import data as data_lib
from bsa_jax.eval import curves
from bsa_jax.eval import evaluate
from bsa_jax.workdir import load as inference


def evaluate_workdir(workdir: str, *, step: str = "best", split: str = "test",
                     num_overlays: int | None = None, progress: bool = True,
                     tta: str | None = None, weights: str = "run") -> dict:
  """Scores the workdir's model on `config.data.<split>`; returns {set name: metrics}. `tta` and
  `weights` other than the run's own (`load.load_trained`) are for validation only."""
  setting = "_".join(([f"tta-{tta}"] if tta is not None else []) +
                     ([f"weights-{weights}"] if weights != "run" else []))  # "" = the run's own
  if setting and split != "val":
    raise cli.UserError(f"--tta/--weights score a setting the run was not evaluated with ({setting}); "
                        "settings are chosen on validation: add --split=val. The test sets are "
                        "scored as the run was configured.")
  trained = inference.load_trained(workdir, step, flips=tta, weights=weights)
  config = trained.config
  eval_sets = data_lib.eval_sets(config.data, split)
  if not eval_sets:
    raise ValueError(f"config.data.{split} of {workdir} lists no datasets.")
  evaluator = evaluate.get_evaluator(config.eval.kind)
  overlays = config.eval.num_overlays if num_overlays is None else num_overlays
  results = {}
  for name, eval_set in eval_sets.items():
    results[name] = evaluator(
        trained.predict, {name: eval_set}, batch_size=int(config.eval.batch_size),
        progress=progress,
        overlay_dir=os.path.join(workdir, "overlays", setting, evaluate.set_dir_name(name)),
        num_overlays=overlays)
  if split == "test":
    evaluate.write_results(workdir, results, config=config, checkpoint_step=trained.step,
                           selection=trained.selection)
  if not setting and os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    print(f"Training curves: {curves.plot_training_curves(workdir)}")
  print(f"Checkpoint step {trained.step} ({trained.selection}) on {split}"
        f"{f' ({setting})' if setting else ''}:\n"
        f"{evaluate.summary_table(results, config.eval.kind)}")
  return results


def define_flags() -> None:
  """The command's flags, defined only when it runs as one (importing the library defines none)."""
  flags.DEFINE_string("workdir", None, "A run's workdir (holds config.json).")
  flags.DEFINE_string("step", "best", "best (on validation), latest, or a step number.")
  flags.DEFINE_enum("split", "test", ["test", "val"], "Which of config.data's lists to score.")
  flags.DEFINE_integer("num_overlays", None, "Overlays per set (default: the config's).")
  flags.DEFINE_enum("tta", None, ["none", "hflip", "flips"],
                    "Flip averaging instead of the run's config.eval.tta (with --split=val).")
  flags.DEFINE_enum("weights", "run", ["run", "raw", "ema"],
                    "run: what the run evaluates (its moving average if it keeps one); raw: the live "
                    "weights; ema: the moving average (with --split=val unless 'run').")


def main(argv) -> int:
  f = flags.FLAGS
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments {argv[1:]}; flags look like --name=value.")
  if not f.workdir:
    raise cli.UserError("--workdir is required, e.g. --workdir=workdirs/kvasir")
  compile_cache.enable()  # a second evaluation reads the compiled eval step from disk
  evaluate_workdir(f.workdir, step=f.step, split=f.split, num_overlays=f.num_overlays, tta=f.tta,
                   weights=f.weights)
  return 0


if __name__ == "__main__":
  define_flags()
  cli.run(main, prog="python -m bsa_jax.eval.workdir")
