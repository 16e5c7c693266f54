"""From a config entry '<dataset>:<split>' to a reader over exactly that split's examples.

`config.data.source` picks folders on disk ('folder', default) or prepared tfds array_record datasets
('tfds'). The cardiac/CT datasets (`acdc`, `synapse`) always read their own HDF5/npz layouts.
"""

from __future__ import annotations

import functools

from absl import logging

from bsa_jax.data import io
from bsa_jax.data import readers
from bsa_jax.data import registry
from bsa_jax.data import split_lists
from bsa_jax.data import volumes

VOLUME_DATASETS = ("acdc", "synapse")


def _cfg(data_config, key, default):
  return data_config.get(key, default) if hasattr(data_config, "get") else default


def _max_pixels(data_config) -> int | None:
  """config.data.max_pixels; 0 or less means no limit of ours (PIL's bomb check still applies)."""
  limit = int(_cfg(data_config, "max_pixels", io.DEFAULT_MAX_PIXELS))
  return limit if limit > 0 else None


@functools.lru_cache(maxsize=64)
def _folder_reader(root: str, entry: str, split_seed: int, verify: str,
                   max_pixels: int | None = io.DEFAULT_MAX_PIXELS) -> readers.FolderReader:
  dataset, split = split_lists.parse_entry(entry)
  examples = registry.find_examples(dataset, root)
  ids = split_lists.split_ids(dataset, split, examples, seed=split_seed)
  where = registry.dataset_dir(dataset, root)
  reader = readers.FolderReader(tuple(split_lists.select(examples, ids, where, entry)),
                                max_pixels=max_pixels)
  stats = reader.verify(verify)  # before anything compiles: a bad file fails here, named
  if verify != "none":
    logging.info("data.verify=%s: %d pairs of %s are usable (%d files decoded, %d known from the "
                 "cache) in %.1f s", verify, stats["pairs"], entry, stats["decoded"], stats["cached"],
                 stats["seconds"])
  return reader


def reader_for(data_config, entry: str):
  """A reader over `entry`'s examples in split order (cached per process)."""
  dataset, _ = split_lists.parse_entry(entry)
  root = split_lists.data_root(data_config)
  split_seed = int(_cfg(data_config, "split_seed", split_lists.SEED))
  if dataset in VOLUME_DATASETS:
    return volumes.slice_reader(dataset, root, entry, split_seed)
  source = _cfg(data_config, "source", "folder")
  if source == "folder" or registry.is_own_folder(dataset):
    return _folder_reader(root, entry, split_seed, _cfg(data_config, "verify", "full"),
                          _max_pixels(data_config))
  if source == "tfds":
    from bsa_jax.data import tfds_source  # imports tensorflow_datasets: only for source=tfds
    return tfds_source.reader(data_config, entry)
  raise ValueError(f"--config.data.source={source!r} must be 'folder' or 'tfds'.")
