"""Input-pipeline throughput (decode + resize + normalise, images/s) via `bsa_jax.data.benchmark`.

The parent compares it with the train step's consumption (images/s of the JAX train step at the same
image size and batch), measured in the same run.
"""

from __future__ import annotations

import sys


def run(spec: dict) -> dict:
  """Worker entry: one measurement per worker count in spec['workers']."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(sys.argv[:1])  # grain worker processes read absl flags (ENV_NOTES)
  from bsa_jax import config_lib
  from bsa_jax.data import benchmark
  data_config = config_lib.base_config().data
  data_config.image_size = int(spec["size"])
  data_config.train = tuple(spec["train"])
  rows = []
  for workers in spec["workers"]:
    try:
      rows.append(benchmark.measure(data_config, batch_size=int(spec["batch"]),
                                    num_batches=int(spec["batches"]), num_workers=int(workers)))
    except Exception as e:  # e.g. the dataset is absent
      return {"skipped": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
  return {"rows": rows}
