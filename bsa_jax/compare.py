"""One command for a whole comparison table: BSA-Net and the baselines, same data, same budget.

  python -m bsa_jax.compare --workdir=workdirs/compare                              # paper budget (GPU)
  python -m bsa_jax.compare --workdir=workdirs/compare_cpu --budget=cpu --epochs=3  # CPU budget
  python -m bsa_jax.compare --workdir=W --seeds=0,1,2 --pranet.config.model_init=ckpt/res2net50
  python -m bsa_jax.compare --workdir=workdirs/compare_20min --budget=cpu --minutes=20  # equal wall clock

Each model trains in `<workdir>/<model>` in its own `launch.py` process (log: `<model>/compare.log`);
rerunning the command resumes unfinished runs and only re-reads finished ones. `--config.<key>=v`
overrides every model's config, `--<model>.config.<key>=v` one model's. The table goes to
`<workdir>/comparison.{md,csv,json}` (see `bsa_jax/tools/compare.py`).
"""

from __future__ import annotations

from absl import flags

from bsa_jax import cli
from bsa_jax.tools import compare

_WORKDIR = flags.DEFINE_string("workdir", None, "Gets <model>/ runs and comparison.{md,csv,json}.")
_BUDGET = flags.DEFINE_enum("budget", "paper", sorted(compare.BUDGETS),
                            "paper (the configs as they are), cpu (their :cpu recipe) or small.")
_MODELS = flags.DEFINE_list("models", list(compare.MODEL_CONFIGS),
                            f"Rows of the table, from {','.join(compare.MODEL_CONFIGS)}.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "e.g. 0 or 0,1,2 (several: launch.py --seeds).")
_EPOCHS = flags.DEFINE_float(
    "epochs", None, "train.num_epochs of every model (default: 3 for cpu, else the config's).")
_MINUTES = flags.DEFINE_float(
    "minutes", None, "A wall-clock budget of training per model: each model's steps are fixed by a "
    "timed calibration of its own run (run it on a quiet machine), reused by reruns.")


def main(argv) -> int:
  if not _WORKDIR.value:
    raise cli.UserError("--workdir is required, e.g. --workdir=workdirs/compare")
  try:
    seeds = [int(s) for s in _SEEDS.value if s.strip()]
  except ValueError:
    raise cli.UserError(f"--seeds={','.join(_SEEDS.value)}: give integers, e.g. 0,1,2") from None
  common, per_model = compare.split_overrides(argv[1:])  # the withheld --[<model>.]config.k=v
  return compare.run(_WORKDIR.value, models=_MODELS.value, budget=_BUDGET.value, seeds=seeds,
                     epochs=_EPOCHS.value, common=common, per_model=per_model,
                     minutes=_MINUTES.value)


if __name__ == "__main__":
  cli.run(main, prog="python -m bsa_jax.compare", passthrough=compare.is_override)
