"""Several seeds of one config, and their test results as mean ± std (sample std).

  python -m bsa_jax.seeds --config=configs/kvasir.py --workdir=workdirs/kvasir --seeds=0,1,2

The same runs as `python launch.py ... --seeds=0,1,2` (which also runs on several hosts): each seed
trains in `<workdir>/seed_<k>` (resumable; a finished seed is only re-scored) and the summary goes to
`<workdir>/seeds_summary.{md,csv,json}` with every seed's provenance.
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


def main(argv) -> int:
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments {argv[1:]}; flags look like --name=value.")
  if _CONFIG.value is None or _WORKDIR.value is None or not _SEEDS.value:
    raise cli.UserError("--config, --workdir and --seeds are required, e.g. --config=configs/demo.py "
                        "--workdir=workdirs/demo --seeds=0,1,2")
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    raise cli.UserError(f"--seeds={','.join(_SEEDS.value)}: give integers, e.g. --seeds=0,1,2") from None
  launch.run(_CONFIG.value, _WORKDIR.value, seeds=seeds,
             overridden=config_flags.get_override_values(flags.FLAGS["config"]))
  return 0


if __name__ == "__main__":
  cli.run(main, prog="python -m bsa_jax.seeds", check_argv=config_lib.check_overrides)
