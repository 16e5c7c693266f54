"""Train and evaluate a segmentation model from an ml_collections config.

  python launch.py --config=configs/kvasir.py --workdir=workdirs/kvasir
  python launch.py --config=configs/kvasir.py:small --workdir=/tmp/k --config.train.lr=3e-4

Rerunning the same command resumes from the workdir's latest checkpoint. Multi-host: run one process per
host with --distributed (cluster auto-detection), or give --coordinator_address/--num_processes/
--process_id explicitly.
"""

import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, optionally with ':arg' (e.g. configs/kvasir.py:small).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and results are written.")
_SEEDS = flags.DEFINE_list(
    "seeds", None, "Train once per seed (e.g. 0,1,2) into <workdir>/seed_<k> and write "
    "<workdir>/seeds_summary.{md,csv,json} with mean ± std of the test metrics.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() (auto-detects SLURM/TPU/GPU clusters).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Total number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def _init_distributed():
  import jax
  if _COORDINATOR.value:
    # Cross-process collectives for CPU devices (harmless on GPU/TPU, whose own collectives are used).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  elif _DISTRIBUTED.value:
    jax.distributed.initialize()


def _quiet_libraries(record) -> bool:
  """Keeps INFO lines of bsa_jax; library INFO chatter (Orbax logs every file it renames) is dropped."""
  return record.levelno >= std_logging.WARNING or f"{os.sep}bsa_jax{os.sep}" in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None or _WORKDIR.value is None:
    raise app.UsageError("Both --config and --workdir are required, e.g. "
                         "python launch.py --config=configs/demo.py --workdir=workdirs/demo")
  _init_distributed()
  from bsa_jax import train  # after distributed init, which must precede any JAX computation
  logging.set_verbosity(logging.INFO)
  # Library modules log through the 'absl' Python logger; filter there (handler filters miss them).
  std_logging.getLogger("absl").addFilter(_quiet_libraries)
  if _SEEDS.value:
    from bsa_jax import seeds
    paths = seeds.run(_CONFIG.value, _WORKDIR.value, [int(s) for s in _SEEDS.value])
    logging.info("Seed summary: %s", ", ".join(paths))
  else:
    train.main(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  from bsa_jax import config_lib  # light: ml_collections only
  config_lib.check_overrides(sys.argv[1:])
  app.run(main)
