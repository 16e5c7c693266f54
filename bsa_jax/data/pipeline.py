"""The grain training pipeline: an infinite, epoch-shuffled, per-process batch stream with a resumable state.

Global batch k (what one process would see with process_count=1) is fixed by (seed, k) alone:
  epoch e = k // steps_per_epoch, position j = k % steps_per_epoch,
  rows = permutation(seed, e)[j*B:(j+1)*B]   (B = global batch; the epoch's remainder is dropped).
Process p decodes only rows [p*b:(p+1)*b] (b = B // process_count), so two processes together reproduce
one exactly, and the batch never depends on the number of worker processes (grain hands whole batches
to workers round-robin). Augmentation is seeded per (seed, epoch, position in epoch) for the same reason.
The iterator is a `grain.DatasetIterator` whose state is the next global batch index, so grain's Orbax
handlers (`grain.checkpoint.CheckpointSave/CheckpointRestore`) store and restore its position.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grain
import numpy as np

from bsa_jax.data import enhance as enhance_lib
from bsa_jax.data import augment as augment_lib
from bsa_jax.data import io
from bsa_jax.data import preprocess
from bsa_jax.data import readers
from bsa_jax.data import sources

_MAX_BATCHES = 2 ** 62  # "infinite": a MapDataset needs a length


def train_reader(data_config):
  """The concatenated reader over config.data.train, trimmed to max_train_examples if set."""
  entries = tuple(sources.usable_entries(data_config, "train"))  # data.missing='skip' drops absent ones
  if not entries:
    raise ValueError("config.data.train is empty; name at least one '<dataset>:<split>'.")
  parts = tuple(_reduced_decoding(sources.reader_for(data_config, e), int(data_config.image_size))
                for e in entries)
  reader = parts[0] if len(parts) == 1 else readers.ConcatReader(parts)
  limit = int(data_config.get("max_train_examples", -1))
  if 0 < limit < len(reader):
    # "The first N of the shuffled train set": a fixed draw, independent of the training seed.
    keep = np.sort(np.random.default_rng(0).permutation(len(reader))[:limit])
    reader = _SubsetReader(reader, tuple(int(i) for i in keep))
  return reader


def decode_min_side(image_size: int) -> int:
  """Short side a training image keeps when decoded reduced: 1024 px, or twice the network's input.

  Only files with a short side of at least twice this (2048 px at image_size <= 512) are reduced, so
  the benchmark frames (short side <= 1072) decode exactly as before; a 12000 px photo is decoded at
  1/8 (JPEG draft mode) instead of holding every pixel.
  """
  return max(1024, 2 * image_size)


def _reduced_decoding(reader, image_size: int):
  if isinstance(reader, readers.FolderReader):
    return dataclasses.replace(reader, min_side=decode_min_side(image_size))
  return reader


@dataclasses.dataclass(frozen=True)
class _SubsetReader:
  reader: Any
  indices: tuple[int, ...]

  @property
  def num_classes(self) -> int:
    return self.reader.num_classes

  @property
  def ids(self) -> list[str]:
    all_ids = self.reader.ids
    return [all_ids[i] for i in self.indices]

  def __len__(self) -> int:
    return len(self.indices)

  def read(self, i: int) -> dict:
    return self.reader.read(self.indices[i])


@dataclasses.dataclass
class BatchMaker:
  """Local batch index k -> this process's rows of global batch k (picklable, for grain workers)."""
  reader: Any
  global_batch_size: int
  process_index: int
  process_count: int
  seed: int
  image_size: int
  normalize: str
  augment: dict | None  # config.data.augment as a dict, or None when disabled
  enhance: dict | None = None  # bsa_jax.enhance options (config.data.enhance), None when off

  def __post_init__(self):
    n = len(self.reader)
    if self.global_batch_size > n:
      raise ValueError(f"global batch {self.global_batch_size} is larger than the {n} training images; "
                       "lower --config.train.batch_size or add data.")
    self.steps_per_epoch = n // self.global_batch_size
    self.local_batch_size = self.global_batch_size // self.process_count
    self._perm_cache = (-1, None)  # (epoch, permutation); replaced as one tuple, safe across threads

  def global_rows(self, k: int) -> tuple[int, np.ndarray]:
    """(epoch, example indices of global batch k) — the whole batch, all processes."""
    epoch, j = divmod(int(k), self.steps_per_epoch)
    cached_epoch, perm = self._perm_cache
    if cached_epoch != epoch:
      perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.reader))
      self._perm_cache = (epoch, perm)
    start = j * self.global_batch_size
    return epoch, perm[start:start + self.global_batch_size]

  def _reference_image(self, rng: np.random.Generator) -> np.ndarray:
    """A training image drawn with `rng`, at the network size (SANet's colour exchange)."""
    example = self.reader.read(int(rng.integers(len(self.reader))))
    return preprocess.resize_image(example["image"], self.image_size)

  def __call__(self, k: int) -> dict[str, np.ndarray]:
    epoch, rows = self.global_rows(k)
    b, p = self.local_batch_size, self.process_index
    j = int(k) % self.steps_per_epoch
    images, masks = [], []
    for r in range(p * b, (p + 1) * b):
      example = self.reader.read(int(rows[r]))
      if self.augment is not None:
        image = preprocess.resize_image(example["image"], self.image_size)
        mask = preprocess.resize_mask(example["mask"], self.image_size)
        rng = np.random.default_rng([self.seed, epoch, j * self.global_batch_size + r, 1])
        image, mask = augment_lib.augment(image, mask, self.augment, rng, self._reference_image)
        out = readers.finalize(image, mask, normalize=self.normalize,
                               num_classes=self.reader.num_classes)
      else:
        out = readers.to_model_input(example, size=self.image_size, normalize=self.normalize,
                                     num_classes=self.reader.num_classes)
      images.append(out["image"])
      masks.append(out["mask"])
    # image (b, S, S, 3) float32; mask (b, S, S, 1) float32 or (b, S, S) int32
    batch = {"image": np.stack(images), "mask": np.stack(masks)}
    if self.enhance:  # DIN's second input, 'image_enhanced' (b, S, S, 3)
      batch = enhance_lib.add_enhanced(batch, normalize=self.normalize, **self.enhance)
    return batch


def num_train_examples(data_config) -> int:
  return len(train_reader(data_config))


def make_batch_maker(data_config, *, global_batch_size: int, seed: int, process_index: int = 0,
                     process_count: int = 1) -> BatchMaker:
  if global_batch_size % process_count:
    raise ValueError(f"global batch {global_batch_size} is not divisible by {process_count} processes.")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count}).")
  aug = data_config.augment
  aug = aug.to_dict() if hasattr(aug, "to_dict") else dict(aug)
  return BatchMaker(
      reader=train_reader(data_config), global_batch_size=global_batch_size,
      process_index=process_index, process_count=process_count, seed=int(seed),
      image_size=int(data_config.image_size), normalize=data_config.normalize,
      augment=aug if aug.pop("enabled", False) else None,
      enhance=enhance_lib.options_from_config(data_config))


def batch_dataset(maker: BatchMaker, *, first_batch: int, num_workers: int,
                  prefetch: int) -> grain.IterDataset:
  """The grain IterDataset of local batches first_batch, first_batch + 1, ... (one element = a batch)."""
  ds = grain.MapDataset.range(first_batch, _MAX_BATCHES).map(maker)
  # In-process: two threads decode whole batches ahead (PIL releases the GIL while decoding).
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=2 if num_workers == 0 else 1,
                                            prefetch_buffer_size=max(1, prefetch)))
  if num_workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                     per_worker_buffer_size=max(1, prefetch)))
  return ds


class TrainIterator(grain.DatasetIterator):
  """Infinite iterator of local train batches whose state is just the next global batch index.

  The state {'next_batch': k, ...} does not depend on num_workers or prefetching, so a run may resume
  with a different number of worker processes and still get the identical next batch. Setting the
  state rebuilds the grain pipeline from batch k (worker processes restart lazily on the next batch).
  """

  def __init__(self, maker: BatchMaker, *, num_workers: int, prefetch: int):
    super().__init__()
    self.maker = maker
    self._num_workers, self._prefetch = num_workers, prefetch
    self._next_batch = 0
    self._inner = None

  @property
  def steps_per_epoch(self) -> int:
    return self.maker.steps_per_epoch

  def _ensure_inner(self):
    if self._inner is None:
      self._inner = iter(batch_dataset(self.maker, first_batch=self._next_batch,
                                       num_workers=self._num_workers, prefetch=self._prefetch))
    return self._inner

  def __next__(self) -> dict[str, np.ndarray]:
    self._assert_not_closed()
    try:
      batch = next(self._ensure_inner())
    except io.DataError as e:  # a file that broke after data.verify (or data.verify=none)
      self._close_inner()
      raise io.DataError(
          f"Training stopped before step {self._next_batch + 1}: a file of its batch cannot be "
          f"used.\n  {e}\nNo step ran on this batch, and the checkpoints saved so far are intact. "
          "Replace the file with a good copy and rerun the same command to resume (removing it "
          "changes the number of training images, so the run could not continue the same batch "
          "sequence; then start a new workdir, with --config.resume=<this run's checkpoints dir> to "
          "keep the weights).") from None
    self._next_batch += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    m = self.maker
    return {"next_batch": self._next_batch, "global_batch_size": m.global_batch_size,
            "num_examples": len(m.reader), "seed": m.seed}

  def set_state(self, state: dict[str, Any]) -> None:
    m = self.maker
    saved = (state.get("global_batch_size"), state.get("num_examples"), state.get("seed"))
    if saved != (m.global_batch_size, len(m.reader), m.seed):
      raise ValueError(
          f"The checkpointed data position is for (global batch, train images, seed) = {saved}, but "
          f"this run has {(m.global_batch_size, len(m.reader), m.seed)}; resuming would not continue "
          "the same batch sequence. Resume with the original config, or start a new workdir with "
          "--config.resume=<old checkpoints dir> to take only the weights.")
    if int(state["next_batch"]) != self._next_batch or self._inner is None:
      self._close_inner()
      self._next_batch = int(state["next_batch"])

  def start_prefetch(self) -> None:
    self._ensure_inner().start_prefetch()

  def _close_inner(self) -> None:
    if self._inner is not None:
      self._inner.close()
      self._inner = None

  def close(self) -> None:
    self._close_inner()
    super().close()

  def __str__(self) -> str:
    return (f"TrainIterator(next_batch={self._next_batch}, {len(self.maker.reader)} images, "
            f"local batch {self.maker.local_batch_size})")


def train_iterator(data_config, *, global_batch_size: int, seed: int, process_index: int = 0,
                   process_count: int = 1) -> TrainIterator:
  """Infinite iterator of this process's train batches (see the module docstring for the contract).

  Yields {'image': float32 (b, S, S, 3), 'mask': float32 (b, S, S, 1)} with b = global_batch_size //
  process_count ('mask' is int32 (b, S, S) for multi-class datasets). A `grain.DatasetIterator`:
  get_state()/set_state(), and grain.checkpoint.CheckpointSave/CheckpointRestore for Orbax.
  """
  maker = make_batch_maker(data_config, global_batch_size=global_batch_size, seed=seed,
                           process_index=process_index, process_count=process_count)
  return TrainIterator(maker, num_workers=int(data_config.num_workers),
                       prefetch=int(data_config.prefetch))
