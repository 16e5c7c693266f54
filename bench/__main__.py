"""The issue #7 benchmark run: plans the workers, collects their results and writes the report.

  python -m bsa_jax.bench                      # the full benchmark (run it on a quiet machine)
  python -m bsa_jax.bench --quick              # a ~1-2 minute smoke run (tiny variant, toy sizes)
  python -m bsa_jax.bench --sections=torch,flops --repeats=3

The command's flags are in `bsa_jax/bench.py`; `python -m bench` runs the same command. Every
configuration runs in a fresh worker process (`bench/_worker.py`); this process only plans, collects
and reports (it imports neither jax nor torch).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time

from bench import common
from bench import plan as plan_lib
from bench import report
from bench import sections as sections_lib

PLANS = tuple(plan_lib.PLANS)  # full, short, quick, gpu, gpu_quick
TORCH_MODES = ("eager", "channels_last", "compile", "compile_channels_last")


@dataclasses.dataclass
class Options:
  """What to run; None keeps the plan's value. See `python -m bsa_jax.bench --help`."""
  plan: str = "full"  # full | short | quick | gpu | gpu_quick
  sections: tuple[str, ...] | None = None  # None: the plan's sections
  out: str = "bench/results.json"  # '' to skip
  md: str = "bench/RESULTS.md"  # '' to skip
  repeats: int | None = None
  warmup: int | None = None
  threads: int | None = None  # None: the cores divided by the jobs
  jobs: int | None = None
  torch_modes: tuple[str, ...] | None = None
  timeout: float | None = None
  report_only: str | None = None  # a saved results JSON to rebuild the report from
  xla_flags: str = ""  # added to every worker's XLA_FLAGS (e.g. one flag of the flag study)
  flag_sets: tuple[str, ...] | None = None  # the `flags` section's sets (the first is the baseline)


def make_plan(args: Options) -> plan_lib.Plan:
  """One of `plan_lib.PLANS` with the command-line overrides."""
  plan = plan_lib.PLANS[args.plan]
  overrides = {"repeats": args.repeats, "warmup": args.warmup, "jobs": args.jobs,
               "torch_modes": tuple(args.torch_modes) if args.torch_modes else None,
               "timeout_s": args.timeout,
               "flag_sets": tuple(args.flag_sets) if args.flag_sets else None}
  return dataclasses.replace(plan, **{k: v for k, v in overrides.items() if v is not None})


def run(args: Options) -> dict:
  """Runs every worker the plan needs and returns the results dict (as written to the JSON)."""
  plan = make_plan(args)
  names = [s for s in plan_lib.ALL_SECTIONS if s in (args.sections or plan.sections)]
  # Workers running side by side share the cores; oversubscribed OpenMP threads (torch) spin and
  # collapse (a 55 ms step took 10 s with 2 threads on a busy 2-core machine).
  threads = args.threads or max(1, (os.cpu_count() or 1) // plan.jobs)
  meta = {"machine": common.machine_info(threads), "plan": dataclasses.asdict(plan),
          "sections": names, "command": " ".join(["python -m bsa_jax.bench"] + sys.argv[1:]),
          "xla_flags": args.xla_flags}
  start = time.perf_counter()
  save_dir = tempfile.mkdtemp(prefix="bsa_bench_")
  try:
    specs = plan_lib.worker_specs(plan, names, threads=threads, save_dir=save_dir)
    if args.xla_flags:
      specs = [{**spec, "xla_flags": args.xla_flags} for spec in specs]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    raw = common.run_workers(specs, jobs=plan.jobs, timeout=plan.timeout_s, log=log)
    if "scaling" in names:
      raw.append(sections_lib.params_diff(raw, plan))
    if "flags" in names:
      raw.append(sections_lib.flags_diff(raw))
    meta["wall_s"] = time.perf_counter() - start
    # The measurements first: a bug in the report must not cost a long run (see --report_only).
    write(args.out, json.dumps(finite_or_none({"meta": meta, "raw": raw}), indent=2) + "\n")
    return finish(meta, raw)
  finally:
    shutil.rmtree(save_dir, ignore_errors=True)


def finish(meta: dict, raw: list[dict]) -> dict:
  """Sections and goals from the raw worker results; the results dict as written to the JSON."""
  plan = plan_lib.Plan(**{k: tuple(map(tuple, v)) if k.endswith("cells") else
                          tuple(v) if isinstance(v, list) else v
                          for k, v in meta["plan"].items()})
  built = sections_lib.build(raw, plan, meta["sections"])
  return {"meta": meta, "goals": sections_lib.goals(built), "sections": built, "raw": raw}


def finite_or_none(x):
  """The tree with NaN/inf floats as None, so the file is strict JSON."""
  if isinstance(x, float):
    return x if math.isfinite(x) else None
  if isinstance(x, dict):
    return {k: finite_or_none(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [finite_or_none(v) for v in x]
  return x


def none_to_nan(x):
  """Inverse of `finite_or_none` for re-reading a results file (raw results hold no real None)."""
  if x is None:
    return math.nan
  if isinstance(x, dict):
    return {k: none_to_nan(v) for k, v in x.items()}
  if isinstance(x, list):
    return [none_to_nan(v) for v in x]
  return x


def write(path: str, text: str) -> None:
  if not path:
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)


def main(args: Options) -> int:
  """Measures (or, with `report_only`, re-reads), prints the Markdown and writes both files."""
  if args.report_only:
    with open(args.report_only) as f:
      saved = json.load(f)
    results = finish(saved["meta"], none_to_nan(saved["raw"]))
  else:
    results = run(args)
  text = report.markdown(results)
  print(text)
  write(args.out, json.dumps(finite_or_none(results), indent=2, allow_nan=False) + "\n")
  write(args.md, text)
  return 0


if __name__ == "__main__":  # `python -m bench`: the same command as `python -m bsa_jax.bench`
  import runpy
  runpy.run_module("bsa_jax.bench", run_name="__main__", alter_sys=True)
