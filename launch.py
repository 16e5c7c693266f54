"""Train and evaluate a segmentation model from an ml_collections config.

  python launch.py --config=configs/kvasir.py --workdir=workdirs/kvasir
  python launch.py --config=configs/kvasir.py:small --workdir=/tmp/k --config.train.lr=3e-4

Rerunning the same command resumes from the workdir's latest checkpoint. Multi-host: run one process per
host with --distributed (cluster auto-detection), or give --coordinator_address/--num_processes/
--process_id explicitly.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, optionally with ':arg' (e.g. configs/kvasir.py:small).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and results are written.")
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None or _WORKDIR.value is None:
    raise app.UsageError("Both --config and --workdir are required, e.g. "
                         "python launch.py --config=configs/demo.py --workdir=workdirs/demo")
  _init_distributed()
  from bsa_jax import train  # after distributed init, which must precede any JAX computation
  logging.set_verbosity(logging.INFO)
  train.main(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
