"""Measures train-pipeline throughput (decode + resize + normalise) in images/s.

  python -m bsa_jax.data.benchmark [--train kvasir_seg:pranet_train] [--image_size 352] [--batch 16]
                                   [--batches 20] [--workers 0 2]

Prints one JSON line per worker count. The first batch (worker start-up, first epoch permutation) is
excluded from the timing and reported separately.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def measure(data_config, *, batch_size: int, num_batches: int, num_workers: int) -> dict:
  from bsa_jax import data
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


def main(argv=None) -> int:
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(sys.argv[:1])  # grain workers read absl flags (ENV_NOTES)
  from bsa_jax import config_lib
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--train", nargs="+", default=["kvasir_seg:pranet_train"])
  parser.add_argument("--root", default="")
  parser.add_argument("--image_size", type=int, default=352)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
  parser.add_argument("--augment", action="store_true")
  args = parser.parse_args(argv)
  c = config_lib.base_config().data
  c.root, c.image_size, c.train = args.root, args.image_size, tuple(args.train)
  c.augment.enabled = args.augment
  for workers in args.workers:
    print(json.dumps(measure(c, batch_size=args.batch, num_batches=args.batches, num_workers=workers)),
          flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
