"""One benchmark measurement in a fresh process: `python -m bench._worker '<json spec>'`.

The environment (device count, threads) is fixed here before jax or torch is imported; the result is
printed as one JSON line after `common.RESULT_MARK`, with this process's peak RSS.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time


def configure(spec: dict) -> None:
  """XLA device count, CPU platform and thread count; must run before jax/torch are imported."""
  devices = int(spec.get("devices", 1))
  flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", os.environ.get("XLA_FLAGS", ""))
  os.environ["XLA_FLAGS"] = f"{flags.strip()} --xla_force_host_platform_device_count={devices}".strip()
  os.environ["JAX_PLATFORMS"] = "cpu"
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  # Cold torch.compile every time, as our XLA compiles are (no persistent cache on either side).
  os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")
  threads = int(spec.get("threads", 0))
  if threads:
    # XLA sizes its CPU thread pool from the affinity mask; torch takes the explicit count as well.
    cpus = sorted(os.sched_getaffinity(0))
    if threads < len(cpus):
      os.sched_setaffinity(0, cpus[:threads])
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
      os.environ[name] = str(threads)


def run(spec: dict) -> dict:
  """Dispatches on spec['kind']."""
  kind = spec["kind"]
  if kind == "jax_model":
    from bench import jax_step
    return jax_step.run(spec)
  if kind == "torch_model":
    from bench import torch_step
    return torch_step.run(spec)
  if kind == "peak":
    from bench import peak
    return peak.run(spec)
  if kind == "metrics":
    from bench import metrics_bench
    return metrics_bench.run(spec)
  if kind == "pipeline":
    from bench import pipeline_bench
    return pipeline_bench.run(spec)
  raise ValueError(f"unknown worker kind {kind!r}")


def main(argv: list[str]) -> int:
  spec = json.loads(argv[1])
  configure(spec)
  from bench import common
  start = time.perf_counter()
  result = run(spec)
  result["spec"] = spec
  result["worker_wall_s"] = time.perf_counter() - start
  result["peak_rss_mb"] = common.max_rss_mb()
  sys.stdout.flush()
  print(common.RESULT_MARK + json.dumps(result, default=float), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
