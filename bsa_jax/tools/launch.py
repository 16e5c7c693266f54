"""Running a config: the library behind `python launch.py` and `python -m bsa_jax.seeds`."""

from __future__ import annotations

import logging as std_logging
import os
from typing import Collection, Sequence

from absl import logging

from bsa_jax import compile_cache
from bsa_jax.data import split_lists


def init_distributed(*, coordinator_address: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None, auto: bool = False) -> None:
  """`jax.distributed.initialize` with an explicit coordinator, or cluster auto-detection (`auto`)."""
  import jax  # heavy: only when a run starts, not for `launch.py --help`
  if coordinator_address:
    # Cross-process collectives for CPU devices (harmless on GPU/TPU, whose own collectives are used).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  elif auto:
    jax.distributed.initialize()


def quiet_libraries(record) -> bool:
  """Keeps INFO lines of bsa_jax; library INFO chatter (Orbax logs every file it renames) is dropped."""
  return record.levelno >= std_logging.WARNING or f"{os.sep}bsa_jax{os.sep}" in record.pathname


def run(config, workdir: str, *, seeds: Sequence[int] = (), overridden: Collection[str] = (),
        allow_config_change: bool = False, **distributed) -> None:
  """Trains, validates and tests `config` in `workdir` (resuming it), or once per seed.

  Args:
    config: the resolved experiment config (`--config` with its overrides).
    workdir: the run's folder; with `seeds`, `<workdir>/seed_<k>` and the seeds' summary.
    seeds: train once per seed (`tools/seeds.py`); empty = one run with `config.seed`.
    overridden: the config keys given on the command line (what a `folder:` train entry leaves to
      its defaults, see `split_lists.resolve_folder_entries`).
    allow_config_change: continue a run whose stored config differs (recorded, see
      `workdir/identity.py`).
    **distributed: `init_distributed`'s arguments.
  """
  notes = split_lists.resolve_folder_entries(config.data, overridden)
  init_distributed(**distributed)
  compile_cache.enable()  # a resumed run reads its compiled steps from disk
  from bsa_jax import train  # after distributed init, which must precede any JAX computation
  from bsa_jax.tools import seeds as seeds_lib  # imports the trainer too: after distributed init
  logging.set_verbosity(logging.INFO)
  # Library modules log through the 'absl' Python logger; filter there (handler filters miss them).
  std_logging.getLogger("absl").addFilter(quiet_libraries)
  for note in notes:
    logging.info("%s", note)
  if seeds:
    paths = seeds_lib.run(config, workdir, list(seeds), allow_config_change=allow_config_change)
    logging.info("Seed summary: %s", ", ".join(paths))
  else:
    train.main(config, workdir, allow_config_change=allow_config_change)
