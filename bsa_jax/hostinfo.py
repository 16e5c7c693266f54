"""Which CPU a timing was measured on, in one line a reader can compare across results.

Machines that share a name differ: two "AMD EPYC" 2-core VMs of this project measured 330 and 112
GFLOP/s in float32 matmul (AVX-512 by that peak, and AVX2), and every wall time scales with that. Results and
benchmark reports carry this line so a figure is read against the machine that produced it.
"""

from __future__ import annotations

import os
import platform

# Widest first: the first of these in the CPU's flags names its vector width.
_VECTOR_EXTENSIONS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"),
                      ("sve", "SVE"), ("asimd", "NEON"))


def cpuinfo_fields(path: str = "/proc/cpuinfo") -> dict[str, str]:
  """The first processor's `key: value` lines of /proc/cpuinfo ({} where there is none)."""
  fields: dict[str, str] = {}
  try:
    with open(path) as f:
      for line in f:
        if not line.strip():
          if fields:
            break  # the first processor's block only; the others repeat it
          continue
        key, sep, value = line.partition(":")
        if sep:
          fields.setdefault(key.strip(), value.strip())
  except OSError:
    pass
  return fields


def vector_extension(flags: str) -> str:
  """'AVX-512', 'AVX2', ... : the widest SIMD extension among the CPU's flags ('' if none known)."""
  present = set(flags.split())
  return next((name for flag, name in _VECTOR_EXTENSIONS if flag in present), "")


def cpu_description(path: str = "/proc/cpuinfo") -> str:
  """E.g. 'AMD EPYC (family 25, model 1; AVX2)'."""
  fields = cpuinfo_fields(path)
  name = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
  detail = [f"family {fields['cpu family']}, model {fields['model']}"] if (
      "cpu family" in fields and "model" in fields) else []
  vector = vector_extension(fields.get("flags", fields.get("Features", "")))
  if vector:
    detail.append(vector)
  inside = f" ({'; '.join(detail)})" if detail else ""
  return f"{name}{inside}"


def machine_line() -> str:
  """E.g. 'AMD EPYC (family 25, model 1; AVX2), 2 cores': what a result's wall time was measured on."""
  return f"{cpu_description()}, {os.cpu_count()} cores"
