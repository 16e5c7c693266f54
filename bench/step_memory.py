"""Peak RSS of one train step of a config, each config in its own subprocess.

  python -m bench.step_memory configs/acdc.py configs/acdc.py:lowmem [--batch 2]

For each config: the model, optimizer and state the trainer builds (`models.build_model`,
`optim.make_optimizer`, `train.init_state`), one jitted `train.train_step` on a synthetic batch of
`--batch` images at the config's `data.image_size` (with DIN's enhanced copy when the config sets
`data.enhance`), on one CPU device. Prints one Markdown row per config: peak RSS of the process
(`ru_maxrss`, which includes compilation) and the step's XLA temporary buffers. The configs' `:lowmem`
memory figures come from this; on a machine shared with other jobs the times are only indicative,
the memory is not affected.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

MARK = "STEP_MEMORY_RESULT "
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(spec: str, batch: int) -> dict:
  """Runs in the worker: one compiled train step of `spec` at batch `batch`; returns the figures."""
  import resource

  import jax
  import numpy as np

  from bsa_jax import config_lib
  from bsa_jax import models
  from bsa_jax import train
  from bsa_jax.train import optim

  config = config_lib.load_config(os.path.join(REPO, spec) if not os.path.isabs(spec) else spec)
  size, classes = int(config.data.image_size), int(config.model.num_classes)
  model = models.build_model(config)
  tx, schedule = optim.make_optimizer(config.train, 100)
  state = jax.jit(lambda rng: train.init_state(model, tx, rng, image_size=size))(jax.random.key(0))
  rng = np.random.default_rng(0)
  batch_dict = {"image": rng.normal(size=(batch, size, size, 3)).astype(np.float32)}
  if config.data.enhance:
    batch_dict["image_enhanced"] = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
  if classes == 1:
    batch_dict["mask"] = (rng.uniform(size=(batch, size, size, 1)) > 0.8).astype(np.float32)
  else:
    batch_dict["mask"] = rng.integers(0, classes, size=(batch, size, size)).astype(np.int32)
  step = jax.jit(lambda s, b, r: train.train_step(s, b, r, model=model, tx=tx, schedule=schedule,
                                                  train_config=config.train), donate_argnums=(0,))
  start = time.perf_counter()
  compiled = step.lower(state, batch_dict, jax.random.key(1)).compile()
  compile_s = time.perf_counter() - start
  try:
    temp = float(compiled.memory_analysis().temp_size_in_bytes) / 2**30
  except Exception:  # not every backend reports it
    temp = float("nan")
  start = time.perf_counter()
  state, metrics = compiled(state, batch_dict, jax.random.key(1))
  loss = float(jax.device_get(metrics["loss"]))
  step_s = time.perf_counter() - start
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))
  return {"spec": spec, "batch": batch, "image_size": size, "params": params, "loss": loss,
          "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
          "xla_temp_gib": temp, "compile_s": compile_s, "step_s": step_s}


def run_worker(spec: str, batch: int) -> dict:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  proc = subprocess.run([sys.executable, "-m", "bench.step_memory", "--worker", spec,
                         f"--batch={batch}"], cwd=REPO, env=env, capture_output=True, text=True)
  for line in proc.stdout.splitlines():
    if line.startswith(MARK):
      return json.loads(line[len(MARK):])
  raise RuntimeError(f"{spec}: worker failed (status {proc.returncode}):\n{proc.stderr[-3000:]}")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m bench.step_memory", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("configs", nargs="+", help="config specs, e.g. configs/acdc.py:lowmem")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    print(MARK + json.dumps(measure(args.configs[0], args.batch)), flush=True)
    return 0
  print("| config | size | batch | params | peak RSS (GiB) | XLA temp (GiB) | compile (s) | step (s) |")
  print("|---|---|---|---|---|---|---|---|")
  for spec in args.configs:
    r = run_worker(spec, args.batch)
    print(f"| {r['spec']} | {r['image_size']} | {r['batch']} | {r['params']:,} | "
          f"{r['peak_rss_gib']:.2f} | {r['xla_temp_gib']:.2f} | {r['compile_s']:.0f} | "
          f"{r['step_s']:.1f} |", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
