"""From a config entry '<dataset>:<split>' to a reader over exactly that split's examples.

`config.data.source` picks folders on disk ('folder', default) or prepared tfds array_record datasets
('tfds'). The cardiac/CT datasets (`acdc`, `synapse`) always read their own HDF5/npz layouts.
"""

from __future__ import annotations

import functools
import os

from bsa_jax import config_lib
from bsa_jax.data import io
from bsa_jax.data import readers
from bsa_jax.data import registry
from bsa_jax.data import split_lists

VOLUME_DATASETS = ("acdc", "synapse")


def parse_entry(entry: str) -> tuple[str, str]:
  dataset, sep, split = entry.partition(":")
  if not sep or not dataset or not split:
    raise io.DataError(f"dataset entry {entry!r} must look like '<dataset>:<split>', e.g. "
                       "'kvasir_seg:pranet_train'.")
  return dataset.strip(), split.strip()


def data_root(data_config) -> str:
  return os.path.abspath(os.path.expanduser(data_config.root or config_lib.default_data_root()))


def _cfg(data_config, key, default):
  return data_config.get(key, default) if hasattr(data_config, "get") else default


def select(examples: list[registry.Example], ids: list[str], where: str, entry: str) -> list:
  """The examples with `ids` in that order; ids missing on disk are an error naming them."""
  by_id = {e.id: e for e in examples}
  missing = [i for i in ids if i not in by_id]
  if missing:
    shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
    raise io.DataError(
        f"'{entry}': {len(missing)} of the split's {len(ids)} ids are not on disk in {where}: {shown}. "
        "The folder holds only part of the release (the shared data has e.g. only PraNet's ClinicDB "
        "train part and 60 ColonDB frames); download the full dataset, or use the split "
        f"'{entry.partition(':')[0]}:all' to take whatever is present.")
  return [by_id[i] for i in ids]


@functools.lru_cache(maxsize=64)
def _folder_reader(root: str, entry: str, split_seed: int, verify: str) -> readers.FolderReader:
  dataset, split = parse_entry(entry)
  examples = registry.find_examples(dataset, root)
  ids = split_lists.split_ids(dataset, split, examples, seed=split_seed)
  where = registry.dataset_dir(dataset, root)
  reader = readers.FolderReader(tuple(select(examples, ids, where, entry)))
  if verify == "headers":
    reader.verify_headers()
  elif verify == "full":
    for i in range(len(reader)):
      reader.read(i)
  elif verify != "none":
    raise ValueError(f"--config.data.verify={verify!r} must be 'none', 'headers' or 'full'.")
  return reader


def reader_for(data_config, entry: str):
  """A reader over `entry`'s examples in split order (cached per process)."""
  dataset, _ = parse_entry(entry)
  root = data_root(data_config)
  split_seed = int(_cfg(data_config, "split_seed", split_lists.SEED))
  if dataset in VOLUME_DATASETS:
    from bsa_jax.data import volumes
    return volumes.slice_reader(dataset, root, entry, split_seed)
  source = _cfg(data_config, "source", "folder")
  if source == "folder":
    return _folder_reader(root, entry, split_seed, _cfg(data_config, "verify", "headers"))
  if source == "tfds":
    from bsa_jax.data import tfds_source
    return tfds_source.reader(data_config, entry)
  raise ValueError(f"--config.data.source={source!r} must be 'folder' or 'tfds'.")
