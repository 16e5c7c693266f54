"""JAX's persistent compilation cache, on by default for the commands that compile a model.

A resumed run, a second `python -m bsa_jax.predict` or `python -m bsa_jax.eval.workdir` reads its
compiled executables (parameter init, train step, eval step) from disk instead of compiling them
again: BSA-Net's train step alone takes ~20 s to compile on a 2-core CPU (`bench/NOTES.md`).

Where: `$BSA_CACHE_DIR/jax_cache/<tag>` (default `~/.cache/bsa_jax/jax_cache/<tag>`), with `<tag>` =
`jax<version>-jaxlib<version>-<backend>-<device kind>[-cpu<hash of the CPU's model and flags>]`.
Another JAX version, accelerator or CPU never reads these entries, so the folder is safe to share
(e.g. a home directory mounted on several machines) and safe to delete at any time. JAX's own cache
key adds the XLA flags, the compile options and the program.

`BSA_COMPILATION_CACHE` (the one switch): unset or `on` → the default folder; `off` (also `0`,
`false`, `no`, `none`) → no persistent cache; any other value → that folder (a `<tag>` sub-folder is
still used). A cache folder already given to JAX (`JAX_COMPILATION_CACHE_DIR`) is left as it is.
"""

from __future__ import annotations

import hashlib
import os
import re

from absl import logging

ENV = "BSA_COMPILATION_CACHE"
OFF = ("off", "0", "false", "no", "none")
# Executables that compile faster than this are not written (JAX's default: 1 s); BSA-Net's init
# (-O0), train and eval steps all take longer.
MIN_COMPILE_TIME_S = 1.0


def cache_root(environ=None) -> str | None:
  """The folder that holds one sub-folder per `cache_tag`, or None when the cache is turned off."""
  environ = os.environ if environ is None else environ
  value = environ.get(ENV, "").strip()
  if value.lower() in OFF:
    return None
  if value and value.lower() != "on":
    return os.path.expanduser(value)
  base = environ.get("BSA_CACHE_DIR") or os.path.expanduser("~/.cache/bsa_jax")
  return os.path.join(base, "jax_cache")


def cpu_fingerprint(cpuinfo: str = "/proc/cpuinfo") -> str:
  """8 hex digits of the CPU's model name and instruction-set flags ('' if they cannot be read).

  XLA:CPU compiles for the host's instruction set; a cache shared by machines with different CPUs
  must not hand one of them code built for the other.
  """
  try:
    with open(cpuinfo) as f:
      text = f.read()
  except OSError:
    return ""
  keep = [line for line in text.splitlines()
          if line.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")]
  return hashlib.sha256("\n".join(sorted(set(keep))).encode()).hexdigest()[:8] if keep else ""


def cache_tag(jax_version: str, jaxlib_version: str, backend: str, device_kind: str,
              cpu: str = "") -> str:
  """The sub-folder of one software/hardware pair: `jax0.10.2-jaxlib0.10.2-gpu-nvidia_a100_sxm4_80gb`,
  `jax0.10.2-jaxlib0.10.2-cpu-4da5fa5b` (the CPU's fingerprint)."""
  kind = re.sub(r"[^a-z0-9.]+", "_", device_kind.lower()).strip("_")
  parts = [f"jax{jax_version}", f"jaxlib{jaxlib_version}", backend,
           kind if kind != backend else "", cpu if backend == "cpu" else ""]
  return "-".join(p for p in parts if p)


def enable(*, min_compile_time_s: float = MIN_COMPILE_TIME_S) -> str | None:
  """Turns the persistent cache on (idempotent); returns its folder, or None when it is off.

  Call it once a command knows it will compile, after `jax.distributed.initialize` (it asks JAX for
  the backend, which starts it).
  """
  import jax  # heavy: only the commands that compile import it, not their `--help`
  import jaxlib  # with jax: its version names the cache folder
  if jax.config.jax_compilation_cache_dir:  # the user's own choice (JAX_COMPILATION_CACHE_DIR)
    return jax.config.jax_compilation_cache_dir
  root = cache_root()
  if root is None:
    return None
  device = jax.devices()[0]
  path = os.path.join(root, cache_tag(jax.__version__, jaxlib.__version__, jax.default_backend(),
                                      device.device_kind, cpu_fingerprint()))
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # no size limit
  logging.info("JAX compilation cache: %s (%s=off turns it off)", path, ENV)
  return path
