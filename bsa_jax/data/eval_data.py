"""Evaluation sets: fixed-order, padded batches that also carry the original-size ground truth.

Every image is scored exactly once: the last batch is padded with zero rows marked `valid=False`
(big_vision's eval convention), and metrics use `mask_orig` at the original resolution.
"""

from __future__ import annotations

from concurrent import futures
from typing import Any, Iterator

import numpy as np

from bsa_jax.data import enhance as enhance_lib
from bsa_jax.data import preprocess
from bsa_jax.data import readers
from bsa_jax.data import sources
from bsa_jax.data import volumes


class EvalSet:
  """One '<dataset>:<split>' entry, read in split order."""

  def __init__(self, name: str, reader: Any, *, image_size: int, normalize: str, num_threads: int = 2,
               enhance: dict | None = None):
    self.name = name
    self.reader = reader
    self.ids: list[str] = list(reader.ids)
    self.image_size = image_size
    self.normalize = normalize
    self.num_threads = num_threads
    self.enhance = enhance  # bsa_jax.enhance options: batches also carry 'image_enhanced'

  def __len__(self) -> int:
    return len(self.reader)

  def __repr__(self) -> str:
    return f"EvalSet({self.name!r}, {len(self)} images, {self.image_size}px)"

  def _load(self, i: int) -> dict:
    example = self.reader.read(i)
    out = readers.to_model_input(example, size=self.image_size, normalize=self.normalize,
                                 num_classes=self.reader.num_classes)
    out["id"] = example["id"]
    out["mask_orig"] = example["mask"]
    out["image_orig"] = example["image"]
    return out

  def batches(self, batch_size: int, *, with_original_images: bool = False) -> Iterator[dict]:
    """Yields {'image' (B,S,S,3) f32, 'mask' (B,S,S,1) f32, 'valid' (B,) bool, 'id' list[str],
    'mask_orig' list[bool (H0,W0)], and 'image_orig' list[uint8 (H0,W0,3)] if asked}.

    Padding rows (after the last image) are zeros with valid=False, id '' and an empty (0, 0) mask_orig.
    The next batch is decoded in background threads while the caller uses the current one.
    """
    n, size = len(self), self.image_size
    starts = list(range(0, n, batch_size))
    with futures.ThreadPoolExecutor(self.num_threads) as pool:
      pending = [pool.submit(self._load, i) for i in range(starts[0], min(starts[0] + batch_size, n))] \
          if starts else []
      for bi, start in enumerate(starts):
        current = [f.result() for f in pending]
        if bi + 1 < len(starts):
          nxt = starts[bi + 1]
          pending = [pool.submit(self._load, i) for i in range(nxt, min(nxt + batch_size, n))]
        batch = self._collate(current, batch_size, size, with_original_images)
        if self.enhance:
          batch = enhance_lib.add_enhanced(batch, normalize=self.normalize, **self.enhance)
        yield batch

  def volumes(self) -> Iterator[dict]:
    """Yields {'id', 'image': float32 (Z, H0, W0) in [0, 1], 'label': int32 (Z, H0, W0)} per volume.

    Only for volume test sets (acdc/synapse ':test'); feed slices to the network with
    `volume_to_model_input` and score in 3D (docs/DECISIONS.md#r2).
    """
    files = getattr(self.reader, "volume_files", None)
    if not files:
      raise ValueError(f"{self.name} is not a volume set (only acdc/synapse test/val volumes are).")
    for path in files:
      image, label = volumes.load_volume(self.reader.dataset, path)
      yield {"id": volumes.file_id(path), "image": image, "label": label}

  def _collate(self, items: list[dict], batch_size: int, size: int, with_images: bool) -> dict:
    pad = batch_size - len(items)
    mask_shape = items[0]["mask"].shape[2:]  # (1,) binary or () multi-class
    image = np.zeros((batch_size, size, size, 3), np.float32)
    mask = np.zeros((batch_size, size, size) + mask_shape, items[0]["mask"].dtype)
    for i, it in enumerate(items):
      image[i], mask[i] = it["image"], it["mask"]
    batch = {
        "image": image,
        "mask": mask,
        "valid": np.array([True] * len(items) + [False] * pad),
        "id": [it["id"] for it in items] + [""] * pad,
        "mask_orig": [it["mask_orig"] for it in items] + [np.zeros((0, 0), bool)] * pad,
    }
    if with_images:
      batch["image_orig"] = [it["image_orig"] for it in items] + [np.zeros((0, 0, 3), np.uint8)] * pad
    return batch


def volume_to_model_input(image: np.ndarray, *, size: int, normalize: str) -> np.ndarray:
  """float32 (Z, H, W) in [0, 1] -> (Z, S, S, 3): each slice zoomed (order 3) and normalised."""
  return np.stack([readers.finalize(preprocess.resize_image(sl, size), np.zeros((1, 1), np.int32),
                                    normalize=normalize, num_classes=2)["image"] for sl in image])


def eval_sets(data_config, which: str) -> dict[str, EvalSet]:
  """{'<dataset>:<split>': EvalSet} for config.data.val ('val') or config.data.test ('test').

  Under data.missing='skip' an entry whose datasets are all absent is left out, with a warning
  (`sources.skipped_entries` names it and why; the tables mark it "not run").
  """
  if which not in ("val", "test", "train"):
    raise ValueError(f"which={which!r} must be 'train', 'val' or 'test'.")
  limit = int(data_config.get("max_eval_examples", -1))
  out = {}
  for entry in sources.usable_entries(data_config, which):
    reader = sources.reader_for(data_config, entry)
    if 0 < limit < len(reader):
      reader = reader.subset(range(limit))
    out[entry] = EvalSet(entry, reader, image_size=int(data_config.image_size),
                         normalize=data_config.normalize,
                         enhance=enhance_lib.options_from_config(data_config))
  return out


def num_eval_examples(data_config, which: str) -> int:
  return sum(len(s) for s in eval_sets(data_config, which).values())
