"""Start-up (issue #15 item 5): seconds from launching a process to the end of its first train step,
with a cold and then a warm persistent compilation cache (`bsa_jax/compile_cache.py`).

The `startup` worker runs two `startup_step` workers one after the other on a fresh, empty cache
folder: the first compiles and writes (cold), the second reads (warm). Each is the throughput
section's JAX worker (`jax_step.run`, one timed step) with the commands' cache turned on; the time
counts the interpreter start, imports, model build, parameter init, compiles and the first step.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from bench import common

CACHE_EVENTS = ("/jax/compilation_cache/cache_hits", "/jax/compilation_cache/cache_misses")


def run(spec: dict) -> dict:
  """Worker entry (`kind='startup'`): the cold and the warm run, in that order."""
  cache = tempfile.mkdtemp(prefix="bsa_bench_jax_cache_")
  step = {k: v for k, v in spec.items() if k != "kind"}
  step.update({"kind": "startup_step", "compile_cache": cache, "predict": False, "warmup": 1,
               "repeats": 1})
  out = {}
  try:
    for label in ("cold", "warm"):
      launched = time.time()
      result = common.run_workers([{**step, "launched_at": launched}], jobs=1,
                                  log=lambda _: None)[0]
      if "error" in result:
        return {"error": f"{label} run: {result['error']}"}
      out[label] = summarise(result, launched)
    out["cache_files"] = sum(len(files) for _, _, files in os.walk(cache))
    out["cache_mb"] = sum(os.path.getsize(os.path.join(d, f))
                          for d, _, files in os.walk(cache) for f in files) / 2**20
  finally:
    shutil.rmtree(cache, ignore_errors=True)
  out["warm_over_cold"] = out["warm"]["to_first_step_s"] / out["cold"]["to_first_step_s"]
  return out


def summarise(result: dict, launched: float) -> dict:
  """The start-up figures of one `startup_step` result."""
  return {"to_first_step_s": result["first_step"]["at"] - launched,
          "lower_s": result["train_compile"]["lower_s"],
          "compile_s": result["train_compile"]["compile_s"],
          "first_step_s": result["first_step"]["time_s"],
          "cache_hits": result["cache_events"].get(CACHE_EVENTS[0], 0),
          "cache_misses": result["cache_events"].get(CACHE_EVENTS[1], 0),
          "peak_rss_mb": result["peak_rss_mb"]}


def run_step(spec: dict) -> dict:
  """Worker entry (`kind='startup_step'`): `jax_step.run` with the commands' compilation cache on
  in `spec['compile_cache']`, counting the cache's hits and misses."""
  os.environ["BSA_COMPILATION_CACHE"] = spec["compile_cache"]
  import jax  # heavy: after `_worker.configure`
  from bsa_jax import compile_cache  # imports jax
  from bench import jax_step  # imports jax
  events: dict[str, int] = {}

  def count(name, **_):
    if name in CACHE_EVENTS:
      events[name] = events.get(name, 0) + 1

  jax.monitoring.register_event_listener(count)
  out = {"cache_dir": compile_cache.enable()}
  out.update(jax_step.run(spec))
  out["cache_events"] = events
  return out
