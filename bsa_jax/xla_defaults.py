"""The XLA flags every command runs with unless told otherwise: the one place they are set.

`--xla_cpu_experimental_ynn_fusion_type=reduce`: XLA:CPU (jaxlib 0.10.2) hands single dots,
convolutions and reductions to the YNNPACK library by default; on BSA-Net's train step keeping only
the reductions there, and compiling dots and convolutions with XLA's own emitters, is 10-15 % faster
(1.50 → 1.31 s at 128² batch 16, 5.26 → 4.64 s at 256² batch 16; the flag study in bench/NOTES.md).
The gradients equal the library's to float32 summation noise (tests/test_xla_defaults.py). The flag
only concerns the CPU backend; GPU and TPU runs ignore it.

They are prepended to `XLA_FLAGS`, so a flag the user sets there wins (XLA reads the last value of a
repeated flag). `BSA_XLA_DEFAULTS=off` leaves `XLA_FLAGS` exactly as it is. Takes effect only before
JAX starts its backend: `cli.run` applies it before a command's `main`.
"""

from __future__ import annotations

import os

ENV = "BSA_XLA_DEFAULTS"
OFF = ("off", "0", "false", "no", "none")
CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=reduce",)


def flags(environ=None) -> tuple[str, ...]:
  """The default flags in force for `environ` (none when `BSA_XLA_DEFAULTS=off`)."""
  environ = os.environ if environ is None else environ
  return () if environ.get(ENV, "").strip().lower() in OFF else CPU_FLAGS


def with_defaults(xla_flags: str, environ=None) -> str:
  """`xla_flags` with the defaults put first; a flag whose name is already there is not added."""
  present = {f.split("=", 1)[0] for f in xla_flags.split()}
  missing = [f for f in flags(environ) if f.split("=", 1)[0] not in present]
  return " ".join([*missing, xla_flags.strip()]).strip()


def without_defaults(xla_flags: str) -> str:
  """`xla_flags` with the default flags (exactly as `CPU_FLAGS` spells them) taken out: XLA's own
  defaults, for a process whose parent already applied ours (the benchmark's workers)."""
  return " ".join(f for f in xla_flags.split() if f not in CPU_FLAGS)


def apply(environ=None) -> str:
  """Sets `XLA_FLAGS` in `environ` (default: this process's) to include the defaults; returns it."""
  environ = os.environ if environ is None else environ
  value = with_defaults(environ.get("XLA_FLAGS", ""), environ)
  if value:
    environ["XLA_FLAGS"] = value
  return value
