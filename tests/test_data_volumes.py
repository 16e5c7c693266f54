"""ACDC (real SSL4MIS subset) and Synapse (a tiny TransUNet-layout folder written here) loaders."""

import os

import h5py
import numpy as np
import pytest
from conftest import DATA_ROOT, data_dir

from bsa_jax import config_lib
from bsa_jax import data
from bsa_jax.data import check
from bsa_jax.data import eval_data
from bsa_jax.data import volumes


def _cfg(root, train, test, size=32):
  c = config_lib.base_config().data
  c.root, c.image_size = str(root), size
  c.train, c.val, c.test = train, (), test
  return c


def test_acdc_slices_train_and_volumes_test():
  data_dir("acdc_ssl4mis_subset")
  c = _cfg(DATA_ROOT, ("acdc:train",), ("acdc:test",))
  c.normalize = "unit"
  assert data.num_examples(c, "train") == 84
  assert data.num_examples(c, "test") == 2 * (10 + 7 + 8 + 10 + 17)  # slices of the 10 volumes
  batch = next(data.train_iterator(c, global_batch_size=8, seed=0))
  assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.float32
  assert batch["mask"].shape == (8, 32, 32) and batch["mask"].dtype == np.int32
  np.testing.assert_array_equal(batch["image"][..., 0], batch["image"][..., 2])  # grey -> 3 channels
  assert -0.25 <= batch["image"].min() and batch["image"].max() <= 1.25  # order-3 zoom overshoots
  assert set(np.unique(batch["mask"])) <= {0, 1, 2, 3}
  test = data.eval_sets(c, "test")["acdc:test"]
  vol = next(test.volumes())
  assert vol["id"] == "patient001_frame01" and vol["image"].shape == (10, 256, 216)
  assert set(np.unique(vol["label"])) == {0, 1, 2, 3} and 0 <= vol["image"].min() <= vol["image"].max() <= 1
  first = next(test.batches(4))
  assert first["id"][0] == "patient001_frame01/slice_000" and first["mask_orig"][0].shape == (256, 216)
  net_in = eval_data.volume_to_model_input(vol["image"], size=32, normalize="unit")
  assert net_in.shape == (10, 32, 32, 3)


def test_acdc_val_without_list_is_explained():
  data_dir("acdc_ssl4mis_subset")
  with pytest.raises(data.DataError, match="val.list"):
    data.eval_sets(_cfg(DATA_ROOT, ("acdc:train",), ("acdc:val",)), "test")


def _write_synapse(root):
  """TransUNet layout with raw HU images and raw 14-class BTCV labels (to exercise window + remap)."""
  rng = np.random.default_rng(0)
  os.makedirs(root / "Synapse" / "train_npz")
  os.makedirs(root / "Synapse" / "test_vol_h5")
  for case in (5, 6, 99):  # 99 is not a TransUNet train case: ignored
    for k in range(2):
      label = rng.integers(0, 14, (16, 16)).astype(np.uint8)
      np.savez(root / "Synapse" / "train_npz" / f"case{case:04d}_slice{k:03d}.npz",
               image=rng.uniform(-1000, 1000, (16, 16)).astype(np.float32), label=label)
  for case in volumes.SYNAPSE_TEST_CASES:
    with h5py.File(root / "Synapse" / "test_vol_h5" / f"case{case:04d}.npy.h5", "w") as f:
      f["image"] = rng.uniform(0, 1, (3, 16, 16)).astype(np.float32)  # already windowed
      f["label"] = rng.integers(0, 9, (3, 16, 16)).astype(np.uint8)


def test_synapse_window_remap_and_split(tmp_path):
  _write_synapse(tmp_path)
  c = _cfg(tmp_path, ("synapse:train",), ("synapse:test",), size=16)
  assert data.num_examples(c, "train") == 4 and data.num_examples(c, "test") == 36
  reader = volumes.slice_reader("synapse", str(tmp_path), "synapse:train")
  ex = reader.read(0)
  with np.load(reader.items[0][0]) as f:
    raw_image, raw_label = f["image"], f["label"]
  np.testing.assert_allclose(ex["image"], (np.clip(raw_image, -125, 275) + 125) / 400, rtol=1e-6)
  assert ex["mask"].max() <= 8
  assert np.all(ex["mask"][raw_label == 11] == 5) and np.all(ex["mask"][np.isin(raw_label, [5, 9, 10, 12, 13])] == 0)
  np.testing.assert_array_equal(ex["mask"][raw_label == 7], 7)
  batch = next(data.train_iterator(c, global_batch_size=2, seed=0))
  assert batch["mask"].shape == (2, 16, 16)
  with pytest.raises(data.DataError, match="only train .* and test"):
    data.eval_sets(_cfg(tmp_path, ("synapse:train",), ("synapse:val",)), "test")


def test_broken_volume_files_are_named(tmp_path):
  src = data_dir("acdc_ssl4mis_subset", "data", "patient003_frame01_slice_1.h5")
  folder = tmp_path / "acdc" / "data"
  os.makedirs(folder)
  blob = open(src, "rb").read()
  (folder / "patient003_frame01_slice_1.h5").write_bytes(blob[: len(blob) // 2])
  with h5py.File(folder / "patient003_frame01_slice_2.h5", "w") as f:  # labels out of ACDC's range
    f["image"] = np.zeros((8, 8), np.float32)
    f["label"] = np.full((8, 8), 7, np.uint8)
  report = check.check(str(tmp_path / "acdc"))
  assert len(report.errors) == 2
  assert "slice_1.h5: cannot read" in report.errors[0] and "slice_2.h5: label values up to 7" in report.errors[1]
