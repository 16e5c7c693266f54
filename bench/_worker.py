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

from bsa_jax import xla_defaults


def xla_flags(spec: dict, inherited: str) -> str:
  """XLA_FLAGS of the worker: the inherited ones, the run's `--xla_flags`, the flag study's set,
  and the simulated host device count (`devices`; 'all' devices = 1 host device). The project's
  defaults come first unless `spec['xla_defaults']` is False (XLA's own, as BSA_XLA_DEFAULTS=off)."""
  devices = max(1, int(spec.get("devices", 1)))
  flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", inherited)
  if spec.get("xla_defaults", True):
    flags = xla_defaults.with_defaults(flags)  # what the commands run with (BSA_XLA_DEFAULTS=off: not)
  else:  # XLA's own, even when the harness's own process (cli.run) put ours in XLA_FLAGS
    flags = xla_defaults.without_defaults(flags)
  parts = [flags, spec.get("xla_flags", ""), spec.get("study_flags", ""),
           f"--xla_force_host_platform_device_count={devices}"]
  return " ".join(p.strip() for p in parts if p.strip())


def limit_accelerators(devices: int) -> None:
  """Only the first `devices` GPUs are visible (0 = all of them), so one-GPU runs use one GPU."""
  if devices <= 0:
    return
  for name in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"):
    visible = [d for d in os.environ.get(name, "").split(",") if d.strip()]
    os.environ[name] = ",".join(visible[:devices] if visible else map(str, range(devices)))


def configure(spec: dict) -> None:
  """XLA flags and device count, platform and thread count; must run before jax/torch are imported."""
  os.environ["XLA_FLAGS"] = xla_flags(spec, os.environ.get("XLA_FLAGS", ""))
  platform = spec.get("platform", "cpu")
  if platform == "auto":  # the gpu plan: JAX picks (JAX_PLATFORMS, if set, still rules)
    limit_accelerators(int(spec.get("devices", 1)))
  else:
    os.environ["JAX_PLATFORMS"] = platform
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
  if kind in ("startup", "startup_step"):
    from bench import startup_bench
    return startup_bench.run(spec) if kind == "startup" else startup_bench.run_step(spec)
  if kind == "profile":
    from bench import profile_step
    return profile_step.run(spec)
  if kind == "flags":
    from bench import flag_bench
    return flag_bench.run(spec)
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
