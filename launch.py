"""Train and evaluate a segmentation model from an ml_collections config.

  python launch.py --config=configs/kvasir.py --workdir=workdirs/kvasir
  python launch.py --config=configs/kvasir.py:small --workdir=/tmp/k --config.train.lr=3e-4
  python launch.py --config=configs/kvasir.py --workdir=W --config.data.train=folder:/path/to/dataset

Rerunning the same command resumes from the workdir's latest checkpoint. Multi-host: run one process per
host with --distributed (cluster auto-detection), or give --coordinator_address/--num_processes/
--process_id explicitly.
"""

from absl import flags
from ml_collections import config_flags

from bsa_jax import cli
from bsa_jax import config_lib
from bsa_jax.tools import launch

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, optionally with ':arg' (e.g. configs/kvasir.py:small).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and results are written.")
_SEEDS = flags.DEFINE_list(
    "seeds", None, "Train once per seed (e.g. 0,1,2) into <workdir>/seed_<k> and write "
    "<workdir>/seeds_summary.{md,csv,json} with mean ± std of the test metrics.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Continue a run in --workdir although its stored config.json "
    "differs in keys that change results; the change is recorded in config_history.jsonl.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() (auto-detects SLURM/TPU/GPU clusters).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Total number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments {argv[1:]}; flags look like --name=value.")
  if _CONFIG.value is None or _WORKDIR.value is None:
    raise cli.UserError("both --config and --workdir are required, e.g. "
                        "python launch.py --config=configs/demo.py --workdir=workdirs/demo")
  try:
    seeds = [int(s) for s in _SEEDS.value or []]
  except ValueError:
    raise cli.UserError(f"--seeds={','.join(_SEEDS.value)}: give integers, e.g. --seeds=0,1,2") from None
  launch.run(_CONFIG.value, _WORKDIR.value, seeds=seeds,
             allow_config_change=_ALLOW_CONFIG_CHANGE.value,
             overridden=config_flags.get_override_values(flags.FLAGS["config"]),
             coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
             process_id=_PROCESS_ID.value, auto=_DISTRIBUTED.value)


if __name__ == "__main__":
  # A missing config file or a mistyped key stops here, before anything is created.
  cli.run(main, prog="python launch.py", check_argv=config_lib.check_overrides)
