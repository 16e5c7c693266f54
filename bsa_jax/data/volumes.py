"""ACDC (cardiac MRI) and Synapse (abdominal CT): multi-class 2D slices for training, volumes for testing.

Layouts read (docs/DECISIONS.md#r1):
  ACDC, SSL4MIS:   <dir>/data/[slices/]patientXXX_frameYY_slice_K.h5 (train slices) and
                   <dir>/data/patientXXX_frameYY.h5 (volumes); optional <dir>/{train_slices,val,test}.list.
  ACDC, MT-UNet:   <dir>/{train,valid}/*.npz (slices, keys 'img' | 'image', 'label'),
                   <dir>/test/*.npz (volumes).
  Synapse, TransUNet: <dir>/train_npz/caseXXXX_sliceNNN.npz, <dir>/test_vol_h5/caseXXXX.npy.h5.
Images are float in [0, 1]; raw CT (HU values) is windowed to [-125, 275] and mapped with (x + 125) / 400.
Raw 14-class BTCV labels are remapped to TransUNet's 8 organs (5, 9, 10, 12, 13 -> 0; 11 -> 5).
Splits: '<dataset>:train' (slices), ':val' (ACDC val.list / MT-UNet valid), ':test' (volumes).
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import os
import re

import numpy as np

from bsa_jax.data import io
from bsa_jax.data import registry

NUM_CLASSES = {"acdc": 4, "synapse": 9}
DIRS = {"acdc": ("acdc", "acdc_ssl4mis_subset", "ACDC"),
        "synapse": ("synapse", "Synapse", "project_TransUNet/data/Synapse", "data/Synapse")}
# TransUNet/MERIT split (DECISIONS R1): 18 train and 12 test CT volumes.
SYNAPSE_TRAIN_CASES = (5, 6, 7, 9, 10, 21, 23, 24, 26, 27, 28, 30, 31, 33, 34, 37, 39, 40)
SYNAPSE_TEST_CASES = (1, 2, 3, 4, 8, 22, 25, 29, 32, 35, 36, 38)
HU_WINDOW = (-125.0, 275.0)
_SYNAPSE_REMAP = np.array([0, 1, 2, 3, 4, 0, 6, 7, 8, 0, 0, 5, 0, 0], np.int32)  # raw BTCV 0..13 -> 0..8


def window_ct(image: np.ndarray) -> np.ndarray:
  """HU -> [0, 1] with TransUNet's abdomen window; images already in [0, 1] are returned unchanged."""
  image = image.astype(np.float32)
  if image.min() >= -1e-3 and image.max() <= 1 + 1e-3:
    return image
  lo, hi = HU_WINDOW
  return (np.clip(image, lo, hi) - lo) / (hi - lo)


def remap_synapse_labels(label: np.ndarray, path: str) -> np.ndarray:
  """Raw 14-class BTCV labels -> TransUNet's 9 (bg + 8 organs); 9-class labels pass unchanged."""
  top = int(label.max()) if label.size else 0
  if top > 13 or label.min() < 0:
    raise io.DataError(f"{path}: label values {int(label.min())}..{top} are neither Synapse's 0..8 nor "
                       "BTCV's raw 0..13.")
  return _SYNAPSE_REMAP[label.astype(np.int64)] if top > 8 else label.astype(np.int32)


def _read_arrays(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(image, label) arrays of an .h5 or .npz file ('image'/'img' and 'label' keys)."""
  try:
    if path.endswith(".npz"):
      with np.load(path) as f:
        keys = set(f.files)
        image_key = "image" if "image" in keys else "img"
        return f[image_key], f["label"]
    import h5py  # HDF5: only for the ACDC/Synapse volume layouts
    with h5py.File(path, "r") as f:
      keys = set(f.keys())
      image_key = "image" if "image" in keys else "img"
      return f[image_key][()], f["label"][()]
  except KeyError:
    raise io.DataError(f"{path}: expected arrays 'image' (or 'img') and 'label', found {sorted(keys)}.") \
        from None
  except (OSError, ValueError, EOFError) as e:
    raise io.DataError(f"{path}: cannot read ({type(e).__name__}: {e}); the file is corrupt or "
                       "truncated, re-download or remove it.") from None


def _num_slices(path: str) -> int:
  """Depth of a volume file without reading its voxels (h5); npz volumes are loaded."""
  if path.endswith(".npz"):
    image, _ = _read_arrays(path)
    return image.shape[0]
  import h5py  # HDF5: only for the ACDC/Synapse volume layouts
  try:
    with h5py.File(path, "r") as f:
      return f["image" if "image" in f else "img"].shape[0]
  except (OSError, KeyError) as e:
    raise io.DataError(f"{path}: cannot read the volume's shape ({e}).") from None


@dataclasses.dataclass(frozen=True)
class SliceReader:
  """2D slices of .h5/.npz files: `items[i] = (path, z)` with z = -1 for a 2D slice file (picklable)."""
  dataset: str
  items: tuple[tuple[str, int], ...]

  @property
  def num_classes(self) -> int:
    return NUM_CLASSES[self.dataset]

  def __len__(self) -> int:
    return len(self.items)

  @property
  def ids(self) -> list[str]:
    return [_slice_id(p, z) for p, z in self.items]

  def subset(self, indices) -> "SliceReader":
    return dataclasses.replace(self, items=tuple(self.items[i] for i in indices))

  def read(self, i: int) -> dict:
    """{'id', 'image': float32 (H, W) in [0, 1], 'mask': int32 (H, W)} with windowing/remap applied."""
    path, z = self.items[i]
    if z >= 0:
      image, label = _processed_volume(self.dataset, path)
      image, label = image[z], label[z]
    else:
      image, label = load_volume(self.dataset, path)  # a 2D file: same checks, (H, W)
    return {"id": _slice_id(path, z), "image": image, "mask": label}

  @property
  def volume_files(self) -> list[str]:
    """The volume files in order of first appearance (empty for slice-file readers)."""
    return list(dict.fromkeys(p for p, z in self.items if z >= 0))


def _slice_id(path: str, z: int) -> str:
  stem = file_id(path)
  return stem if z < 0 else f"{stem}/slice_{z:03d}"


def file_id(path: str) -> str:
  """File name without its .h5 / .npy.h5 / .npz extension (the volume or slice id)."""
  name = os.path.basename(path)
  for ext in (".npy.h5", ".h5", ".npz"):
    if name.endswith(ext):
      return name[:-len(ext)]
  return os.path.splitext(name)[0]


def load_volume(dataset: str, path: str) -> tuple[np.ndarray, np.ndarray]:
  """(image float32 (Z, H, W) in [0, 1], label int32 (Z, H, W)) with the dataset's windowing/remap."""
  image, label = _read_arrays(path)
  if image.shape != label.shape:
    raise io.DataError(f"{path}: image {image.shape} and label {label.shape} differ in shape.")
  if not np.all(np.isfinite(image)):
    raise io.DataError(f"{path}: the image holds NaN/Inf values.")
  if dataset == "synapse":
    image, label = window_ct(image), remap_synapse_labels(label, path)
  label = label.astype(np.int32)
  top = int(label.max()) if label.size else 0
  if top >= NUM_CLASSES[dataset] or (label.size and label.min() < 0):
    raise io.DataError(f"{path}: label values up to {top}, but {dataset} has classes "
                       f"0..{NUM_CLASSES[dataset] - 1}.")
  return image.astype(np.float32), label


@functools.lru_cache(maxsize=4)
def _processed_volume(dataset: str, path: str) -> tuple[np.ndarray, np.ndarray]:
  # Slices of one volume are read consecutively at eval time: keep the last few volumes decoded.
  return load_volume(dataset, path)


def _read_list(path: str) -> list[str] | None:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return [line.strip() for line in f if line.strip()]


def _dataset_dir(dataset: str, root: str) -> str:
  for d in DIRS[dataset]:
    folder = os.path.join(root, d)
    if os.path.isdir(folder):
      return folder
  raise io.DataError(f"dataset '{dataset}' not found under the data root {root}: looked for "
                     f"{', '.join(DIRS[dataset])}. Set --config.data.root (or $BSA_DATA_DIR).")


def _files(pattern: str) -> list[str]:
  return sorted(glob.glob(pattern), key=lambda p: registry.natural_key(os.path.basename(p)))


def _filter(files: list[str], names: list[str] | None, where: str) -> list[str]:
  """Keeps the files named in a split list (by stem), erroring on names missing on disk."""
  if names is None:
    return files
  by_stem = {file_id(f): f for f in files}
  missing = [n for n in names if file_id(n) not in by_stem]
  if missing:
    raise io.DataError(f"{where}: {len(missing)} of {len(names)} listed files are not on disk "
                       f"(e.g. {', '.join(missing[:5])}); download the full dataset or remove the list.")
  return [by_stem[file_id(n)] for n in names]


def split_files(dataset: str, folder: str, split: str) -> tuple[list[str], bool]:
  """(files, are_volumes) of one split."""
  if dataset == "acdc":
    mtunet = os.path.isdir(os.path.join(folder, "train")) and os.path.isdir(os.path.join(folder, "test"))
    if mtunet:
      sub = {"train": "train", "val": "valid", "test": "test"}.get(split)
      if sub is None:
        raise io.DataError(f"'acdc:{split}': splits are train, val, test.")
      return _files(os.path.join(folder, sub, "*.npz")), split == "test"
    data = os.path.join(folder, "data")
    slices = _files(os.path.join(data, "slices", "*.h5")) or _files(os.path.join(data, "*_slice_*.h5"))
    volumes = [f for f in _files(os.path.join(data, "*.h5")) if "_slice_" not in os.path.basename(f)]
    if split == "train":
      return _filter(slices, _read_list(os.path.join(folder, "train_slices.list")), folder), False
    if split in ("val", "test"):
      names = _read_list(os.path.join(folder, f"{split}.list"))
      if names is None and split == "val":
        raise io.DataError(f"'acdc:val' needs {os.path.join(folder, 'val.list')} (SSL4MIS's list of "
                           "validation volumes); the shared subset has none, so leave config.data.val "
                           "empty or add the list.")
      if names is not None:  # SSL4MIS lists name patients (patient001); expand to their frames
        names = [os.path.basename(v) for v in volumes
                 if any(os.path.basename(v).startswith(n) for n in names)] or names
      return _filter(volumes, names, folder), True
    raise io.DataError(f"'acdc:{split}': splits are train, val, test.")
  # Synapse (TransUNet).
  case = lambda f: int(re.search(r"case0*(\d+)", os.path.basename(f)).group(1))
  if split == "train":
    files = _files(os.path.join(folder, "train_npz", "*.npz"))
    return [f for f in files if case(f) in SYNAPSE_TRAIN_CASES], False
  if split == "test":
    files = _files(os.path.join(folder, "test_vol_h5", "*.h5"))
    have = {case(f) for f in files}
    missing = [c for c in SYNAPSE_TEST_CASES if c not in have]
    if missing:
      raise io.DataError(f"{folder}/test_vol_h5: {len(missing)} of the 12 TransUNet test volumes are "
                         f"missing (cases {missing}); use the full preprocessed Synapse release.")
    return [f for f in files if case(f) in SYNAPSE_TEST_CASES], True
  raise io.DataError(f"'synapse:{split}': TransUNet defines only train (18 cases) and test (12 cases).")


@functools.lru_cache(maxsize=16)
def slice_reader(dataset: str, root: str, entry: str, split_seed: int = 0) -> SliceReader:
  """A reader over the 2D slices of `entry` (volumes are expanded into their slices)."""
  del split_seed  # ACDC/Synapse splits are fixed lists, not seeded
  split = entry.partition(":")[2]
  folder = _dataset_dir(dataset, root)
  files, are_volumes = split_files(dataset, folder, split)
  if not files:
    raise io.DataError(f"'{entry}': no .h5/.npz files found in {folder} for this split.")
  items = tuple((f, z) for f in files for z in range(_num_slices(f))) if are_volumes \
      else tuple((f, -1) for f in files)
  return SliceReader(dataset, items)
