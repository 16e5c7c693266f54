"""Measures train-pipeline throughput (decode + resize + normalise) in images/s.

  python -m bsa_jax.data.benchmark [--train=kvasir_seg:pranet_train] [--image_size=352] [--batch=16]
                                   [--batches=20] [--workers=0,2] [--augment]

Prints one JSON line per worker count. The first batch (worker start-up, first epoch permutation) is
excluded from the timing and reported separately.
"""

from __future__ import annotations

import json
import time

from absl import flags

from bsa_jax import cli
from bsa_jax import config_lib
from bsa_jax import data

FLAGS = flags.FLAGS


def measure(data_config, *, batch_size: int, num_batches: int, num_workers: int) -> dict:
  data_config.num_workers = num_workers
  start = time.perf_counter()
  it = data.train_iterator(data_config, global_batch_size=batch_size, seed=0)
  next(it)
  first = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(num_batches):
    next(it)
  elapsed = time.perf_counter() - start
  it.close()
  return {"train": list(data_config.train), "image_size": data_config.image_size,
          "num_workers": num_workers, "batch_size": batch_size, "batches": num_batches,
          "images_per_sec": round(num_batches * batch_size / elapsed, 1),
          "first_batch_sec": round(first, 2)}


def define_flags() -> None:
  """The command's flags, defined only when it runs as one (importing the library defines none)."""
  flags.DEFINE_list("train", ["kvasir_seg:pranet_train"], "Dataset entries '<dataset>:<split>'.")
  flags.DEFINE_string("root", "", "Data root ('' = $BSA_DATA_DIR, else <repo>/data).")
  flags.DEFINE_integer("image_size", 352, "Network input size.")
  flags.DEFINE_integer("batch", 16, "Batch size.")
  flags.DEFINE_integer("batches", 20, "Timed batches per worker count.")
  flags.DEFINE_list("workers", ["0", "2"], "grain worker counts to measure, e.g. 0,2.")
  flags.DEFINE_bool("augment", False, "Include the training augmentations.")


def main(argv) -> int:
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments {argv[1:]}; flags look like --name=value.")
  try:
    workers = [int(w) for w in FLAGS.workers]
  except ValueError:
    raise cli.UserError(f"--workers={','.join(FLAGS.workers)}: give integers, e.g. 0,2") from None
  c = config_lib.base_config().data
  c.root, c.image_size, c.train = FLAGS.root, FLAGS.image_size, tuple(FLAGS.train)
  c.augment.enabled = FLAGS.augment
  for n in workers:
    print(json.dumps(measure(c, batch_size=FLAGS.batch, num_batches=FLAGS.batches, num_workers=n)),
          flush=True)
  return 0


if __name__ == "__main__":
  define_flags()
  cli.run(main, prog="python -m bsa_jax.data.benchmark")
