"""Several seeds of one config, and their test results as mean ± std (sample std).

  python -m bsa_jax.seeds --config=configs/kvasir.py --workdir=workdirs/kvasir --seeds=0,1,2

The same runs as `python launch.py ... --seeds=0,1,2` (which also runs on several hosts): each seed
trains in `<workdir>/seed_<k>` (resumable; a finished seed is only re-scored) and the summary goes to
`<workdir>/seeds_summary.{md,csv,json}` with every seed's provenance.

  python -m bsa_jax.seeds --workdir=workdirs/kvasir --seeds=0,1,2 --summary_only

writes the summary from seeds that finished separately (on other machines or days: each
`seed_<k>/` holding its `config.json` and `results/`), without training; seeds whose configs differ in
more than the seed, or that were tested on other data, are refused.
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from bsa_jax import cli
from bsa_jax import config_lib
from bsa_jax.tools import launch

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, optionally with ':arg' (e.g. configs/kvasir.py:small).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Gets seed_<k>/ runs and seeds_summary.*.")
_SEEDS = flags.DEFINE_list("seeds", None, "The seeds, e.g. 0,1,2.")
_SUMMARY_ONLY = flags.DEFINE_bool(
    "summary_only", False, "Only summarize finished seeds (seed_<k>/config.json and results/); no "
    "training, no --config.")


def _parse_seeds(values: list[str]) -> list[int]:
  try:
    return [int(s) for s in values]
  except ValueError:
    raise cli.UserError(f"--seeds={','.join(values)}: give integers, e.g. --seeds=0,1,2") from None


def main(argv) -> int:
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments {argv[1:]}; flags look like --name=value.")
  if _SUMMARY_ONLY.value:
    if _WORKDIR.value is None or not _SEEDS.value:
      raise cli.UserError("--summary_only needs --workdir and --seeds, e.g. --workdir=workdirs/kvasir "
                          "--seeds=0,1,2")
    from bsa_jax.tools import seeds as seeds_lib  # imports the trainer: only on this path
    paths = seeds_lib.summarize(_WORKDIR.value, _parse_seeds(_SEEDS.value))
    print("Seed summary:", ", ".join(paths))
    return 0
  if _CONFIG.value is None or _WORKDIR.value is None or not _SEEDS.value:
    raise cli.UserError("--config, --workdir and --seeds are required, e.g. --config=configs/demo.py "
                        "--workdir=workdirs/demo --seeds=0,1,2")
  launch.run(_CONFIG.value, _WORKDIR.value, seeds=_parse_seeds(_SEEDS.value),
             overridden=config_flags.get_override_values(flags.FLAGS["config"]))
  return 0


if __name__ == "__main__":
  cli.run(main, prog="python -m bsa_jax.seeds", check_argv=config_lib.check_overrides)
