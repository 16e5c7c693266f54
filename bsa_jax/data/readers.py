"""Random-access readers: index -> one decoded example at its original size (the training reader may
decode a very large file reduced by a power of two, see `FolderReader.min_side`).

A reader is what the grain pipeline and the eval sets index into; it is small and picklable (paths
only), so grain worker processes can rebuild it. `read(i)` returns
  {'id': str, 'image': uint8 (H, W, 3) or float32 (H, W) in [0, 1], 'mask': bool or int32 (H, W)}.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from bsa_jax.data import io
from bsa_jax.data import preprocess
from bsa_jax.data import registry
from bsa_jax.data import verify as verify_lib


@dataclasses.dataclass(frozen=True)
class FolderReader:
  """Binary image/mask pairs on disk (one per `registry.Example`)."""
  examples: tuple[registry.Example, ...]
  num_classes: int = 1  # binary: 'mask' is bool
  max_pixels: int | None = io.DEFAULT_MAX_PIXELS  # larger files are refused, naming the file
  # >0 (the training reader): a large file is decoded reduced by a power of two that keeps this many
  # pixels on its short side (io.load_image); 0 (eval sets, scored at the mask's size): full size.
  min_side: int = 0

  def __len__(self) -> int:
    return len(self.examples)

  @property
  def ids(self) -> list[str]:
    return [e.id for e in self.examples]

  def read(self, i: int) -> dict:
    e = self.examples[i]
    image = io.load_image(e.image, max_pixels=self.max_pixels, min_side=self.min_side)  # (H, W, 3)
    mask = io.load_mask(e.mask, max_pixels=self.max_pixels, min_side=self.min_side)  # (H, W) bool
    preprocess.check_same_size(image, mask, e.image, e.mask)
    return {"id": e.id, "image": image, "mask": mask}

  def subset(self, indices: Sequence[int]) -> "FolderReader":
    return dataclasses.replace(self, examples=tuple(self.examples[i] for i in indices))

  def verify(self, level: str = "full", **kwargs) -> dict:
    """Checks every pair before training (`verify.verify_examples`); DataError names each bad file."""
    return verify_lib.verify_examples(self.examples, level, max_pixels=self.max_pixels, **kwargs)


def concat_ids(readers: Sequence) -> list[str]:
  return [i for r in readers for i in r.ids]


@dataclasses.dataclass(frozen=True)
class ConcatReader:
  """Several readers read as one (the train entries of config.data.train are concatenated)."""
  readers: tuple

  def __post_init__(self):
    classes = {r.num_classes for r in self.readers}
    if len(classes) != 1:
      raise ValueError(f"cannot mix binary and multi-class datasets in one split (num_classes {classes}).")

  @property
  def num_classes(self) -> int:
    return self.readers[0].num_classes

  @property
  def ids(self) -> list[str]:
    return concat_ids(self.readers)

  def __len__(self) -> int:
    return sum(len(r) for r in self.readers)

  def read(self, i: int) -> dict:
    for r in self.readers:
      if i < len(r):
        return r.read(i)
      i -= len(r)
    raise IndexError(i)


def to_model_input(example: dict, *, size: int, normalize: str, num_classes: int) -> dict:
  """Decoded example -> {'image': float32 (S, S, 3), 'mask': float32 (S, S, 1) or int32 (S, S)}."""
  image, mask = example["image"], example["mask"]
  image = preprocess.resize_image(image, size)
  mask = preprocess.resize_mask(mask, size)
  return finalize(image, mask, normalize=normalize, num_classes=num_classes)


def finalize(image: np.ndarray, mask: np.ndarray, *, normalize: str, num_classes: int) -> dict:
  """Resized image/mask -> the dtypes and layouts the model consumes."""
  if image.ndim == 2:  # grayscale float slices (ACDC/Synapse): 3 identical channels
    image = np.repeat(image[..., None], 3, axis=-1)
  if image.dtype == np.uint8:
    image = preprocess.normalize(image, normalize)
  else:
    image = preprocess.normalize_float(image, normalize)
  if num_classes == 1:
    mask = mask.astype(np.float32)[..., None]  # (S, S, 1) in {0, 1}
  else:
    mask = mask.astype(np.int32)  # (S, S)
  return {"image": image.astype(np.float32), "mask": mask}
