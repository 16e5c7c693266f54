"""Returning the heap that XLA's compiler freed to the operating system before the first step runs.

Compiling the BSA-Net train step leaves about 1 GiB of freed-but-kept heap in the process (glibc keeps
freed pages for reuse); the step's own buffers then stack on top of it, so the process peak is 1 GiB
higher than the step needs (measured at 256² batch 16: 6.0 → 5.0 GiB, bench/NOTES.md).
`malloc_trim(0)` hands those pages back. Where the C library is not glibc, nothing happens.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any, Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
  try:
    return ctypes.CDLL("libc.so.6").malloc_trim
  except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
    return None


def release_free_heap() -> bool:
  """Returns freed heap pages to the OS; True if the C library did (glibc's malloc_trim)."""
  trim = _malloc_trim()
  return bool(trim(0)) if trim is not None else False


class CompiledOnFirstCall:
  """A jitted function compiled ahead of its first call, for the arguments of that call, with the
  compiler's freed heap released before it runs. Later calls must have the same shapes and
  shardings (the train step's batches do); the compiled executable is `self.compiled`."""

  def __init__(self, jitted):
    self.jitted = jitted
    self.compiled = None

  def __call__(self, *args: Any):
    if self.compiled is None:
      self.compiled = self.jitted.lower(*args).compile()
      release_free_heap()
    return self.compiled(*args)
