"""From a config entry '<dataset>:<split>' to a reader over exactly that split's examples.

`config.data.source` picks folders on disk ('folder', default) or prepared tfds array_record datasets
('tfds'). The cardiac/CT datasets (`acdc`, `synapse`) always read their own HDF5/npz layouts.

`cvc_endoscene` is a dataset the BSA-Net paper names that is two releases (CVC-EndoScene =
CVC-ClinicDB + CVC-300): its split is each member's split of that name, concatenated (each release is
split on its own, DECISIONS D5), ids prefixed with the member's name.

`config.data.missing` says what a dataset that is not on disk does: 'error' (default) stops the run
naming where it was expected; 'skip' (the paper-protocol config) leaves out an entry whose datasets
are all absent (a test entry becomes a "not run" cell of the tables), the absent member of a
composite, and the split's ids that are not on disk, each with a logged warning; `coverage` and
`skipped_entries` say afterwards what was left out. Training or validation with nothing left is
still an error.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

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
                   max_pixels: int | None = io.DEFAULT_MAX_PIXELS,
                   allow_missing: bool = False) -> readers.FolderReader:
  dataset, split = split_lists.parse_entry(entry)
  examples = registry.find_examples(dataset, root)
  ids = split_lists.split_ids(dataset, split, examples, seed=split_seed)
  where = registry.dataset_dir(dataset, root)
  if allow_missing:  # data.missing='skip': keep the split's ids that are on disk, say how many
    on_disk = {e.id for e in examples}
    present = [i for i in ids if i in on_disk]
    if len(present) < len(ids):
      logging.warning("%s: only %d of the split's %d images are on disk in %s (data.missing=skip "
                      "uses those; the tables say so)", entry, len(present), len(ids), where)
    ids = present
  reader = readers.FolderReader(tuple(split_lists.select(examples, ids, where, entry)),
                                max_pixels=max_pixels)
  stats = reader.verify(verify)  # before anything compiles: a bad file fails here, named
  if verify != "none":
    logging.info("data.verify=%s: %d pairs of %s are usable (%d files checked, %d known from the "
                 "cache) in %.1f s", verify, stats["pairs"], entry, stats["checked"], stats["cached"],
                 stats["seconds"])
  return reader


def reader_for(data_config, entry: str):
  """A reader over `entry`'s examples in split order (cached per process)."""
  dataset, _ = split_lists.parse_entry(entry)
  if dataset in COMPOSITE_DATASETS:
    parts = [(split_lists.parse_entry(m)[0], reader_for(data_config, m))
             for m in member_entries(entry) if not _absent(data_config, m)]
    if not parts:  # data.missing='error' never gets here: the first member raised
      raise io.DataError(f"'{entry}': none of {', '.join(COMPOSITE_DATASETS[dataset])} was found "
                         f"under {split_lists.data_root(data_config)}.")
    return CompositeReader(tuple(parts))
  root = split_lists.data_root(data_config)
  split_seed = int(_cfg(data_config, "split_seed", split_lists.SEED))
  if dataset in VOLUME_DATASETS:
    return volumes.slice_reader(dataset, root, entry, split_seed)
  source = _cfg(data_config, "source", "folder")
  if source == "folder" or registry.is_own_folder(dataset):
    return _folder_reader(root, entry, split_seed, _cfg(data_config, "verify", "full"),
                          _max_pixels(data_config), skip_missing(data_config))
  if source == "tfds":
    from bsa_jax.data import tfds_source  # imports tensorflow_datasets: only for source=tfds
    return tfds_source.reader(data_config, entry)
  raise ValueError(f"--config.data.source={source!r} must be 'folder' or 'tfds'.")


# ------------------------------------------------------------------ composites and absent datasets

# Datasets named by a paper that are several releases: {name: member datasets}.
COMPOSITE_DATASETS = {"cvc_endoscene": ("cvc_clinicdb", "cvc_300")}
MISSING_POLICIES = ("error", "skip")


def known_dataset(name: str) -> bool:
  """A dataset name an entry may use (registry, composite or volume dataset)."""
  return name in COMPOSITE_DATASETS or name in VOLUME_DATASETS or name in registry.DATASETS


def member_entries(entry: str) -> list[str]:
  """'cvc_endoscene:paper712_test' -> its members' entries; any other entry -> [entry]."""
  dataset, split = split_lists.parse_entry(entry)
  if dataset in COMPOSITE_DATASETS:
    return [f"{m}:{split}" for m in COMPOSITE_DATASETS[dataset]]
  return [entry]


def skip_missing(data_config) -> bool:
  """config.data.missing == 'skip' (checked against MISSING_POLICIES)."""
  policy = _cfg(data_config, "missing", "error")
  if policy not in MISSING_POLICIES:
    raise ValueError(f"--config.data.missing={policy!r} must be one of {', '.join(MISSING_POLICIES)}.")
  return policy == "skip"


def absence_reason(data_config, dataset: str) -> str | None:
  """Why `dataset`'s folder cannot be used (registry's error, naming where it was looked for), or
  None when it is there. Only folder datasets are checked (volumes and tfds report their own)."""
  if (dataset in VOLUME_DATASETS or registry.is_own_folder(dataset)
      or _cfg(data_config, "source", "folder") != "folder"):
    return None
  try:
    registry.dataset_dir(dataset, split_lists.data_root(data_config))
  except io.DataError as e:
    return str(e)
  return None


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
  """A warning logged once per process (the readers are built more than once per run)."""
  if message not in _WARNED:
    _WARNED.add(message)
    logging.warning("%s", message)


def _absent(data_config, member: str) -> bool:
  """With data.missing='skip', whether the member entry's dataset is absent (logged)."""
  if not skip_missing(data_config):
    return False
  reason = absence_reason(data_config, split_lists.parse_entry(member)[0])
  if reason:
    _warn_once(f"data.missing=skip: leaving out {member}: {reason}")
  return reason is not None


def skipped_entries(data_config, which: str) -> dict[str, str]:
  """{entry: why} of config.data.<which> entries left out under data.missing='skip' (every dataset
  of the entry absent); empty under 'error'."""
  if not skip_missing(data_config):
    return {}
  out = {}
  for entry in data_config[which]:
    reasons = [absence_reason(data_config, split_lists.parse_entry(m)[0]) for m in member_entries(entry)]
    if all(reasons):
      out[entry] = " ".join(reasons)
  return out


def usable_entries(data_config, which: str) -> list[str]:
  """config.data.<which> without the entries `skipped_entries` leaves out (warned about).

  Raises:
    io.DataError: `which` is 'train' or 'val', it names datasets, and none of them is on disk.
  """
  entries = list(data_config[which])
  skipped = skipped_entries(data_config, which)
  for entry, reason in skipped.items():
    _warn_once(f"data.missing=skip: config.data.{which} entry {entry} is not run: {reason}")
  kept = [e for e in entries if e not in skipped]
  if entries and not kept and which in ("train", "val"):
    first = next(iter(skipped.values()))
    raise io.DataError(f"none of the datasets of config.data.{which} ({', '.join(entries)}) is on "
                       f"disk, so there is nothing to {'train' if which == 'train' else 'validate'} "
                       f"on (data.missing=skip leaves out only some). The first: {first}")
  return kept


def coverage(data_config, entry: str) -> dict | None:
  """How much of `entry`'s split is on disk: {'listed': ids the split names (None when unknown, e.g.
  an absent dataset without a committed list), 'present': of them on disk, 'absent': member datasets
  not found, 'partial': [(member dataset, present, listed)] of members found with ids missing}.
  None for volume datasets, one's own folders and tfds sources."""
  if _cfg(data_config, "source", "folder") != "folder":
    return None
  root = split_lists.data_root(data_config)
  seed = int(_cfg(data_config, "split_seed", split_lists.SEED))
  listed, present, absent, partial = 0, 0, [], []
  for member in member_entries(entry):
    dataset, split = split_lists.parse_entry(member)
    if dataset in VOLUME_DATASETS or registry.is_own_folder(dataset):
      return None
    if absence_reason(data_config, dataset):
      absent.append(dataset)
      committed = split_lists.load_committed(dataset) if seed == split_lists.SEED else None
      ids = (committed or {}).get(split)
      if ids is None and dataset in split_lists.KNOWN_IDS:
        ids = split_lists.make_splits(dataset, split_lists.KNOWN_IDS[dataset], seed).get(split)
      listed = None if ids is None or listed is None else listed + len(ids)
      continue
    examples = registry.find_examples(dataset, root)
    ids = split_lists.split_ids(dataset, split, examples, seed=seed)
    on_disk = {e.id for e in examples}
    found = sum(i in on_disk for i in ids)
    if found < len(ids):
      partial.append((dataset, found, len(ids)))
    present += found
    listed = None if listed is None else listed + len(ids)
  return {"listed": listed, "present": present, "absent": absent, "partial": partial}


@dataclasses.dataclass(frozen=True)
class CompositeReader:
  """The readers of a composite dataset's members, read as one; ids become '<member>_<id>' (both
  CVC-ClinicDB and CVC-300 number their frames from 1)."""
  parts: tuple[tuple[str, Any], ...]  # (member dataset, reader)

  @property
  def num_classes(self) -> int:
    return self.parts[0][1].num_classes

  @property
  def ids(self) -> list[str]:
    return [f"{name}_{i}" for name, r in self.parts for i in r.ids]

  def __len__(self) -> int:
    return sum(len(r) for _, r in self.parts)

  def read(self, i: int) -> dict:
    for name, r in self.parts:
      if i < len(r):
        example = dict(r.read(i))
        example["id"] = f"{name}_{example['id']}"
        return example
      i -= len(r)
    raise IndexError(i)

  def subset(self, indices) -> "CompositeReader":
    """The examples at `indices` (in increasing order), as the eval sets' max_eval_examples needs."""
    parts, offset, indices = [], 0, sorted(indices)
    for name, r in self.parts:
      local = [i - offset for i in indices if offset <= i < offset + len(r)]
      if local:
        parts.append((name, r.subset(local)))
      offset += len(r)
    return CompositeReader(tuple(parts))
