"""Evaluate a trained workdir on every configured test set and write the paper-style tables.

  python -m bsa_jax.eval.workdir --workdir workdirs/kvasir [--step best|latest|N] [--split test|val]

Uses the checkpoint selected on validation by default (never a test set), scores each set at the
original mask resolution, and writes `results/` (JSON, Markdown summary, paper Tables 1–4 as
Markdown/CSV with provenance), `overlays/<set>/` and `training_curves.png` in the workdir.
"""

from __future__ import annotations

import argparse
import os
import sys


def evaluate_workdir(workdir: str, *, step: str = "best", split: str = "test",
                     num_overlays: int | None = None, progress: bool = True) -> dict:
  """Scores the workdir's model on `config.data.<split>`; returns {set name: metrics}."""
  from bsa_jax import data as data_lib
  from bsa_jax import evaluate
  from bsa_jax import inference
  trained = inference.load_trained(workdir, step)
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
        progress=progress, overlay_dir=os.path.join(workdir, "overlays", name.replace(":", "_")),
        num_overlays=overlays)
  if split == "test":
    evaluate.write_results(workdir, results, config=config, checkpoint_step=trained.step,
                           selection=trained.selection)
  if os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    from bsa_jax.eval import curves
    print(f"Training curves: {curves.plot_training_curves(workdir)}")
  print(f"Checkpoint step {trained.step} ({trained.selection}) on {split}:\n"
        f"{evaluate.summary_table(results, config.eval.kind)}")
  return results


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="a run's workdir (holds config.json)")
  parser.add_argument("--step", default="best", help="best (on validation), latest, or a number")
  parser.add_argument("--split", default="test", choices=("test", "val"))
  parser.add_argument("--num-overlays", type=int, default=None)
  args = parser.parse_args(argv)
  evaluate_workdir(args.workdir, step=args.step, split=args.split, num_overlays=args.num_overlays)
  return 0


if __name__ == "__main__":
  sys.exit(main())
