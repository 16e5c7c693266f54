"""Build-time verification of image/mask pairs: every file decoded, in parallel, remembered by content.

Levels (`config.data.verify`):
  none     nothing is opened before training.
  headers  sizes from the file headers only (~1 ms/pair): size mismatches and the pixel limit, but a
           truncated file passes and fails later, inside the training loop.
  full     (default) every image is decoded (a JPEG in draft mode, which still reads its whole stream)
           and every mask goes through the mask rule (`io.MASK_RULE`), on a thread pool. Each file that
           passes is recorded in `$BSA_CACHE_DIR/verified/<folder hash>.json` (default
           ~/.cache/bsa_jax) under its path, byte size and mtime, so building the same folder again
           costs one `stat` per file; a changed or new file is decoded again.

Every problem of every pair is collected, then one DataError names each file (the first ten) and the fix.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from concurrent import futures
from typing import Sequence

from bsa_jax.data import io

LEVELS = ("none", "headers", "full")
# Bump when decoding or io.MASK_RULE changes, so files verified under the old rules are checked again.
CACHE_VERSION = 1


def cache_dir() -> str:
  return os.environ.get("BSA_CACHE_DIR") or os.path.expanduser("~/.cache/bsa_jax")


def _cache_path(folder: str) -> str:
  key = hashlib.sha256(os.path.realpath(folder).encode()).hexdigest()[:16]
  return os.path.join(cache_dir(), "verified", f"{key}.json")


def _load_cache(path: str, folder: str) -> dict[str, list]:
  try:
    with open(path) as f:
      blob = json.load(f)
  except (OSError, ValueError):
    return {}
  if blob.get("version") != CACHE_VERSION or blob.get("folder") != os.path.realpath(folder):
    return {}
  return blob.get("files", {})


def _forget_deleted_folders(path: str) -> None:
  """Deletes the cache files (beside `path`) of folders that are gone, so the cache never outgrows
  the data a user keeps."""
  for name in os.listdir(os.path.dirname(path)):
    other = os.path.join(os.path.dirname(path), name)
    if other == path or not name.endswith(".json"):
      continue
    try:
      with open(other) as f:
        gone = not os.path.isdir(json.load(f).get("folder", ""))
    except (OSError, ValueError, AttributeError):
      gone = True  # unreadable: it would never be used again
    if gone:
      with contextlib.suppress(OSError):
        os.remove(other)


def _save_cache(path: str, folder: str, files: dict[str, list]) -> None:
  """Atomic write (tmp + rename), so concurrent builds never read a half-written file."""
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _forget_deleted_folders(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
      json.dump({"version": CACHE_VERSION, "folder": os.path.realpath(folder), "files": files}, f)
    os.replace(tmp, path)
  except OSError:
    pass  # the cache is an optimisation; a read-only home must not stop training


def _stamp(path: str, kind: str) -> list | None:
  """[kind, byte size, mtime in ns] of `path` (symlinks followed), None if it cannot be stat'ed."""
  try:
    st = os.stat(path)
  except OSError:
    return None
  return [kind, st.st_size, st.st_mtime_ns]


def _check_file(path: str, kind: str, level: str, max_pixels: int | None) -> tuple[int, int]:
  """(height, width) of one file, decoding it at level 'full'; DataError names it if unusable."""
  if level == "headers":
    with io.open_lazy(path, max_pixels) as img:
      w, h = img.size
    return h, w
  # min_side=1: JPEG images at 1/8 scale; masks are always decoded at full size for the rule.
  return io.verify_file(path, mask=kind == "mask", max_pixels=max_pixels, min_side=1)


def verify_examples(examples: Sequence, level: str = "full", *,
                    max_pixels: int | None = io.DEFAULT_MAX_PIXELS, num_threads: int | None = None,
                    use_cache: bool = True) -> dict:
  """Checks every (image, mask) pair of `examples` (`registry.Example`s) before training.

  Args:
    examples: objects with `.image` and `.mask` paths.
    level: 'none', 'headers' or 'full' (see the module docstring).
    max_pixels: files with more pixels are refused (io.load_image's limit).
    num_threads: decoding threads (default: the number of CPU cores, at most 8).
    use_cache: at level 'full', skip files recorded as verified with the same size and mtime.

  Returns:
    {'pairs': n, 'checked': files opened now (decoded at 'full'), 'cached': files known from the
    cache, 'seconds': t}.

  Raises:
    io.DataError listing every unusable pair (file named, problem stated), if any.
  """
  if level not in LEVELS:
    raise ValueError(f"--config.data.verify={level!r} must be one of {', '.join(LEVELS)}.")
  start = time.perf_counter()
  stats = {"pairs": len(examples), "checked": 0, "cached": 0, "seconds": 0.0}
  if level == "none" or not examples:
    return stats
  files = [(e.image, "image") for e in examples] + [(e.mask, "mask") for e in examples]
  folder = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p, _ in files])
  cache_file = _cache_path(folder)
  cached = _load_cache(cache_file, folder) if use_cache and level == "full" else {}
  stamps = {p: _stamp(p, kind) for p, kind in files}
  sizes: dict[str, tuple[int, int]] = {}
  errors: dict[str, str] = {}
  todo = []
  for path, kind in files:
    entry = cached.get(os.path.relpath(path, folder))
    if stamps[path] is not None and entry is not None and entry[:3] == stamps[path]:
      h, w = entry[3:5]
      if max_pixels and w * h > max_pixels:
        errors[path] = io.pixel_limit_message(path, w, h, max_pixels)
      sizes[path] = (h, w)
      stats["cached"] += 1
    else:
      todo.append((path, kind))

  def run(item):
    path, kind = item
    try:
      return path, _check_file(path, kind, level, max_pixels), None
    except io.DataError as err:
      return path, None, str(err)

  threads = num_threads or min(8, os.cpu_count() or 1)
  with futures.ThreadPoolExecutor(threads) as pool:
    for path, size, error in pool.map(run, todo):
      if error:
        errors[path] = error
      else:
        sizes[path] = size
  stats["checked"] = len(todo)

  problems, bad_pairs = [], 0
  for e in examples:
    found = [errors[p] for p in (e.image, e.mask) if p in errors]
    if e.image in sizes and e.mask in sizes and sizes[e.image] != sizes[e.mask]:
      (ih, iw), (mh, mw) = sizes[e.image], sizes[e.mask]
      found.append(f"{e.mask}: mask is {mw}x{mh} (WxH) but its image "
                   f"{os.path.basename(e.image)} is {iw}x{ih}")
    problems += found
    bad_pairs += bool(found)
  gone = [rel for rel in cached if not os.path.exists(os.path.join(folder, rel))]
  for rel in gone:  # deleted files leave the cache
    del cached[rel]
  if level == "full" and use_cache and (todo or gone):
    for path, kind in files:
      if path in sizes and path not in errors and stamps[path] is not None:
        cached[os.path.relpath(path, folder)] = stamps[path] + list(sizes[path])
    _save_cache(cache_file, folder, cached)
  stats["seconds"] = time.perf_counter() - start
  if problems:
    shown = "\n  ".join(problems[:10])
    more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
    raise io.DataError(f"{bad_pairs} of {len(examples)} image/mask pairs under {folder} are unusable "
                       f"(data.verify={level}):\n  {shown}{more}\nFix or remove these files (each "
                       "image needs a same-size binary mask); `python -m bsa_jax.data.check <dir>` "
                       "lists every problem.")
  return stats
