"""Benchmarks (issue #7): speed, memory and scaling of BSA-Net, side by side with PyTorch.

  python -m bsa_jax.bench                      # full run (~2 h on 2 quiet CPU cores)
  python -m bsa_jax.bench --plan=short         # same grid, 3 repeats, bf16/torch.compile at 128 only
                                               # (both: with the flag study and the step's profile)
  python -m bsa_jax.bench --quick              # smoke run of every section (~1.5 min)
  python -m bsa_jax.bench --sections=torch,flops --repeats=3
  python -m bsa_jax.bench --plan=gpu            # on a GPU machine: 256/352 px, batch 16/32 per GPU,
                                                # bf16/fp32, 1 and all GPUs, FLOP utilisation
  python -m bsa_jax.bench --plan=gpu --quick    # the same code paths in minutes (a CPU runs it too)
  python -m bsa_jax.bench --plan=short --sections=flags          # the XLA flag study at 128 px, b4
  python -m bsa_jax.bench --plan=short --sections=profile        # per-instruction step profiles
  python -m bsa_jax.bench --sections=throughput --xla_flags=--xla_cpu_use_onednn=true
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
    "plan", "full", [p for p in bench_main.PLANS if not p.endswith("_quick")],
    "full: every cell, 5 repeats; short: the same grid with 3 repeats, bfloat16 and torch.compile at "
    "128 px only; quick: tiny variant, toy sizes; gpu: the GPU grid with FLOP utilisation.")
_QUICK = flags.DEFINE_bool("quick", False, "A smoke test: --plan=quick, or with --plan=gpu the GPU "
                           "plan's tiny grid.")
_SECTIONS = flags.DEFINE_list(
    "sections", None, f"Sections to run (default: the plan's), from {','.join(plan_lib.ALL_SECTIONS)}; "
    f"{','.join(plan_lib.OPTIONAL_SECTIONS)} run only when named (or in the gpu plan: mfu).")
_XLA_FLAGS = flags.DEFINE_string(
    "xla_flags", "", "Added to every worker's XLA_FLAGS, e.g. --xla_flags=--xla_cpu_use_onednn=true.")
_FLAG_SETS = flags.DEFINE_multi_string(
    "flag_set", None, "The flags section's flag sets (repeat the flag; each is compared with the "
    "defaults). Default: bench/plan.py FLAG_SETS.")
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
  plan = _PLAN.value
  if _QUICK.value:
    plan = "gpu_quick" if plan == "gpu" else "quick"
  options = bench_main.Options(
      plan=plan,
      sections=_choose(_SECTIONS.value, plan_lib.ALL_SECTIONS, "sections") if _SECTIONS.value else None,
      xla_flags=_XLA_FLAGS.value, flag_sets=("",) + tuple(_FLAG_SETS.value) if _FLAG_SETS.value else None,
      out=_OUT.value,
      md=_MD.value, repeats=_REPEATS.value, warmup=_WARMUP.value, threads=_THREADS.value,
      jobs=_JOBS.value, timeout=_TIMEOUT.value, report_only=_REPORT_ONLY.value,
      torch_modes=(_choose(_TORCH_MODES.value, bench_main.TORCH_MODES, "torch_modes")
                   if _TORCH_MODES.value else None))
  return bench_main.main(options)


if __name__ == "__main__":
  cli.run(main, prog="python -m bsa_jax.bench")
