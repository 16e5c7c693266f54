"""Dataset folder checksums for provenance (convention: docs/DECISIONS.md#r8).

names:   sha256 of the sorted (C locale) relative file paths, one per line, newline-terminated;
content: sha256 of `sha256sum` output ("<hex>  <path>\\n") over that same sorted list.
So a result row can be traced to the exact files it was computed from.
"""

from __future__ import annotations

import functools
import hashlib
import os

from bsa_jax.data import registry
from bsa_jax.data import sources
from bsa_jax.data import split_lists
from bsa_jax.data import volumes


def _relative_files(folder: str) -> list[str]:
  paths = []
  for dirpath, _, filenames in os.walk(folder):
    for name in filenames:
      paths.append(os.path.relpath(os.path.join(dirpath, name), folder))
  return sorted(paths, key=lambda p: p.encode())  # C-locale byte order


def file_sha256(path: str) -> str:
  """Hex sha256 of a file's bytes, read in 1 MiB blocks (what `sha256sum` prints)."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


@functools.lru_cache(maxsize=32)
def folder_checksums(folder: str) -> dict[str, str]:
  """{'names_sha256', 'content_sha256'} of every file under `folder` (cached per process)."""
  files = _relative_files(folder)
  names = "".join(f"{p}\n" for p in files)
  content = "".join(f"{file_sha256(os.path.join(folder, p))}  {p}\n" for p in files)
  return {"names_sha256": hashlib.sha256(names.encode()).hexdigest(),
          "content_sha256": hashlib.sha256(content.encode()).hexdigest()}


def config_checksums(data_config) -> str:
  """'dataset:content_sha256;...' for every dataset the config trains, validates or tests on."""
  root = split_lists.data_root(data_config)
  names = sorted({split_lists.parse_entry(m)[0] for which in ("train", "val", "test")
                  for e in data_config[which] for m in sources.member_entries(e)})
  parts = []
  for name in names:
    if name in sources.VOLUME_DATASETS:  # ACDC, Synapse: folders known to the volume reader
      folder = next((os.path.join(root, d) for d in volumes.DIRS[name]
                     if os.path.isdir(os.path.join(root, d))), None)
    elif sources.skip_missing(data_config) and sources.absence_reason(data_config, name):
      folder = None  # left out by data.missing='skip'
    else:
      folder = registry.dataset_dir(name, root)
    parts.append(f"{name}:{folder_checksums(folder)['content_sha256'] if folder else 'not-found'}")
  return ";".join(parts)
