"""Shared pieces of the benchmark: timing, worker subprocesses, machine facts, synthetic batches.

The parent process (`python -m bsa_jax.bench`) never imports jax or torch: every measurement runs in
a fresh `python -m bench._worker` subprocess that prints one JSON line (marked with
`RESULT_MARK`) holding its results and its peak RSS. That isolates memory, XLA flags (the 8-device
run) and thread settings per configuration.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

from bsa_jax import hostinfo

RESULT_MARK = "BENCH_RESULT "
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # bench/ is at the top


# ------------------------------------------------------------------------------------------------
# Timing.
# ------------------------------------------------------------------------------------------------
def time_calls(fn: Callable[[], Any], *, warmup: int, repeats: int) -> dict[str, Any]:
  """Calls `fn` (which must block until its work is done) warmup + repeats times.

  Returns {'median_s', 'min_s', 'times_s', 'first_s'}: statistics over the repeats only; `first_s`
  is the first warm-up call (it includes lazy initialisation, e.g. torch.compile).
  """
  first = None
  for i in range(warmup):
    start = time.perf_counter()
    fn()
    if i == 0:
      first = time.perf_counter() - start
  times = []
  for _ in range(max(1, repeats)):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times,
          "first_s": first if first is not None else times[0]}


def max_rss_mb() -> float:
  """This process's peak resident set size in MiB (ru_maxrss is KiB on Linux)."""
  import resource
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------
# Synthetic batches: the input pipeline is measured on its own (section 5).
# ------------------------------------------------------------------------------------------------
def synthetic_batch(batch: int, size: int, seed: int = 0):
  """Deterministic NHWC image (B, S, S, 3) float32 and disc masks (B, S, S, 1) float32 in {0, 1}."""
  import numpy as np
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:size, :size]
  centres = rng.uniform(0.3 * size, 0.7 * size, size=(batch, 2))
  radii = rng.uniform(0.1 * size, 0.25 * size, size=(batch, 1, 1))
  mask = ((yy[None] - centres[:, :1, None]) ** 2 + (xx[None] - centres[:, 1:, None]) ** 2
          < radii ** 2).astype(np.float32)[..., None]  # (B, S, S, 1)
  image = rng.normal(size=(batch, size, size, 3)).astype(np.float32) + mask  # (B, S, S, 3)
  return image, mask


# ------------------------------------------------------------------------------------------------
# Worker subprocesses.
# ------------------------------------------------------------------------------------------------
def worker_command(spec: dict) -> list[str]:
  return [sys.executable, "-m", "bench._worker", json.dumps(spec)]


def start_worker(spec: dict) -> subprocess.Popen:
  """Starts one worker; its environment is the parent's, plus the repo on PYTHONPATH."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH", "")) if p)
  return subprocess.Popen(worker_command(spec), cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def finish_worker(proc: subprocess.Popen, spec: dict, timeout: float, started: float) -> dict:
  """Waits for `proc` and returns its result dict, or {'error': ...} naming what went wrong."""
  try:
    out, err = proc.communicate(timeout=max(1.0, timeout - (time.perf_counter() - started)))
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.communicate()
    return {"error": f"timed out after {timeout:.0f} s", "spec": spec}
  for line in reversed(out.splitlines()):
    if line.startswith(RESULT_MARK):
      result = json.loads(line[len(RESULT_MARK):])
      result.setdefault("spec", spec)
      return result
  tail = " | ".join(l for l in err.strip().splitlines()[-4:])
  return {"error": f"worker exited with code {proc.returncode}: {tail[-600:]}", "spec": spec}


def run_workers(specs: list[dict], *, jobs: int = 1, timeout: float = 3600.0,
                log: Callable[[str], None] = print) -> list[dict]:
  """Runs every spec in its own worker, at most `jobs` at a time; results in the order of `specs`."""
  results: list[dict | None] = [None] * len(specs)
  pending = list(enumerate(specs))
  running: list[tuple[int, subprocess.Popen, float]] = []
  while pending or running:
    while pending and len(running) < jobs:
      i, spec = pending.pop(0)
      log(f"[bench] start {describe(spec)}")
      running.append((i, start_worker(spec), time.perf_counter()))
    i, proc, started = running[0]
    if jobs > 1:  # the first that finishes
      while all(p.poll() is None for _, p, _ in running):
        time.sleep(0.05)
      i, proc, started = next(r for r in running if r[1].poll() is not None)
    results[i] = finish_worker(proc, specs[i], timeout, started)
    running = [r for r in running if r[0] != i]
    status = results[i].get("error") or f"{time.perf_counter() - started:.1f} s"
    log(f"[bench] done  {describe(specs[i])}: {status}")
  return results  # type: ignore[return-value]


def describe(spec: dict) -> str:
  """A short human label of a worker spec."""
  keys = ("framework", "mode", "size", "batch", "dtype", "devices", "n")
  parts = [f"{k}={spec[k]}" for k in keys if k in spec]
  return f"{spec['kind']}({', '.join(parts)})"


# ------------------------------------------------------------------------------------------------
# Machine facts (without importing jax or torch in the parent).
# ------------------------------------------------------------------------------------------------
def memory_gib() -> float | None:
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemTotal:"):
          return round(int(line.split()[1]) / 2**20, 1)
  except OSError:
    pass
  return None


def package_version(name: str) -> str:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return "not installed"


def git_commit() -> str:
  """HEAD commit, '+dirty' if tracked files changed; 'unknown' outside a git checkout."""
  try:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                           capture_output=True, text=True).stdout.strip()
    return head + ("+dirty" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def machine_info(threads: int) -> dict[str, Any]:
  return {
      "cpu": hostinfo.cpu_description(),  # name, family/model and vector width: VMs of one name differ
      "cores": os.cpu_count(),
      "threads_used": threads,
      "memory_gib": memory_gib(),
      "python": platform.python_version(),
      "jax": package_version("jax"),
      "jaxlib": package_version("jaxlib"),
      "flax": package_version("flax"),
      "torch": package_version("torch"),
      "pysodmetrics": package_version("pysodmetrics"),
      "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
      "git_commit": git_commit(),
      "load_average": [round(x, 2) for x in os.getloadavg()],
  }
