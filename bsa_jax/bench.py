"""Benchmarks (issue #7): speed, memory and scaling of BSA-Net, side by side with PyTorch.

  python -m bsa_jax.bench                      # full run (~1.5 h on 2 quiet CPU cores)
  python -m bsa_jax.bench --plan=short         # same grid, 3 repeats, bf16/torch.compile at 128 only
  python -m bsa_jax.bench --quick              # smoke run of every section (~1.5 min)
  python -m bsa_jax.bench --sections=torch,flops --repeats=3
  python -m bsa_jax.bench --report_only=bench/results.json   # rebuild the report, measure nothing

Prints one Markdown document (also written to bench/RESULTS.md) and writes bench/results.json. The
harness lives beside the package, in `bench/` at the repository's root (see `bench/__init__.py`).
"""

from __future__ import annotations

from absl import flags

from bench import __main__ as bench_main
from bench import plan as plan_lib
from bsa_jax import cli

_PLAN = flags.DEFINE_enum(
    "plan", "full", list(bench_main.PLANS), "full: every cell, 5 repeats; short: the same grid with 3 "
    "repeats, bfloat16 and torch.compile at 128 px only; quick: tiny variant, toy sizes.")
_QUICK = flags.DEFINE_bool("quick", False, "Same as --plan=quick (a smoke test).")
_SECTIONS = flags.DEFINE_list("sections", list(plan_lib.SECTIONS),
                              f"Sections to run, from {','.join(plan_lib.SECTIONS)}.")
_OUT = flags.DEFINE_string("out", "bench/results.json", "JSON file ('' to skip).")
_MD = flags.DEFINE_string("md", "bench/RESULTS.md", "Markdown file ('' to skip).")
_REPEATS = flags.DEFINE_integer("repeats", None, "Timed calls per measurement (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", None, "Untimed calls before the timed ones.")
_THREADS = flags.DEFINE_integer(
    "threads", None, "CPU threads for each framework (default: the cores divided by --jobs).")
_JOBS = flags.DEFINE_integer("jobs", None, "Workers at once (default 1; --quick: 2).")
_TORCH_MODES = flags.DEFINE_list("torch_modes", None,
                                 f"PyTorch modes, from {','.join(bench_main.TORCH_MODES)}.")
_TIMEOUT = flags.DEFINE_float("timeout", None, "Seconds per worker.")
_REPORT_ONLY = flags.DEFINE_string(
    "report_only", None, "Re-build sections and Markdown from a saved results JSON (no measuring).")


def _choose(values, allowed, flag: str) -> tuple[str, ...]:
  unknown = [v for v in values if v not in allowed]
  if unknown:
    raise cli.UserError(f"--{flag}: unknown {unknown}; choose from {','.join(allowed)}")
  return tuple(values)


def main(argv) -> int:
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments {argv[1:]}; flags look like --name=value.")
  options = bench_main.Options(
      plan="quick" if _QUICK.value else _PLAN.value,
      sections=_choose(_SECTIONS.value, plan_lib.SECTIONS, "sections"), out=_OUT.value,
      md=_MD.value, repeats=_REPEATS.value, warmup=_WARMUP.value, threads=_THREADS.value,
      jobs=_JOBS.value, timeout=_TIMEOUT.value, report_only=_REPORT_ONLY.value,
      torch_modes=(_choose(_TORCH_MODES.value, bench_main.TORCH_MODES, "torch_modes")
                   if _TORCH_MODES.value else None))
  return bench_main.main(options)


if __name__ == "__main__":
  cli.run(main, prog="python -m bsa_jax.bench")
