"""tfds builds (offline, from a manual dir of symlinks to real files) read back identically to folders."""

import os

import numpy as np
import pytest
from conftest import data_dir

from bsa_jax import config_lib
from bsa_jax import data
from bsa_jax.data import sources
from bsa_jax.data import tfds_builders


def _manual_dir(tmp_path, src_folder, release_dir, names, mask_name=lambda n: n):
  """`<tmp>/manual/<release_dir>/{images,masks}` holding symlinks to a few real pairs."""
  root = tmp_path / "manual"
  for sub in ("images", "masks"):
    os.makedirs(root / release_dir / sub, exist_ok=True)
  for n in names:
    os.symlink(os.path.join(src_folder, "images", n), root / release_dir / "images" / n)
    m = mask_name(n)
    os.symlink(os.path.join(src_folder, "masks", m), root / release_dir / "masks" / m)
  return str(root)


def _configs(manual, tfds_dir, entry):
  folder = config_lib.base_config().data
  folder.root, folder.image_size, folder.train, folder.test = manual, 32, (entry,), (entry,)
  tfds_cfg = config_lib.base_config().data
  tfds_cfg.source, tfds_cfg.tfds_data_dir = "tfds", tfds_dir
  tfds_cfg.image_size, tfds_cfg.train, tfds_cfg.test = 32, (entry,), (entry,)
  return folder, tfds_cfg


def test_kvasir_tfds_build_reads_back_identically(tmp_path):
  kv = data_dir("kvasir_seg")
  names = sorted(os.listdir(os.path.join(kv, "images")))[:5]
  manual = _manual_dir(tmp_path, kv, "Kvasir-SEG", names)
  tfds_dir = str(tmp_path / "tfds")
  builder = tfds_builders.build("kvasir_seg", data_dir=tfds_dir, manual_dir=manual)
  assert builder.info.splits["full"].num_examples == 5
  assert any(f.endswith(".array_record-00000-of-00001") for f in os.listdir(builder.data_dir))
  folder_cfg, tfds_cfg = _configs(manual, tfds_dir, "kvasir_seg:all")
  from_folder = sources.reader_for(folder_cfg, "kvasir_seg:all")
  from_tfds = sources.reader_for(tfds_cfg, "kvasir_seg:all")
  assert from_tfds.ids == from_folder.ids == [n[:-4] for n in names]
  for i in range(5):
    a, b = from_folder.read(i), from_tfds.read(i)
    np.testing.assert_array_equal(a["image"], b["image"])  # original JPEG bytes, same decoder
    np.testing.assert_array_equal(a["mask"], b["mask"])
  batch_f = next(data.train_iterator(folder_cfg, global_batch_size=4, seed=0))
  batch_t = next(data.train_iterator(tfds_cfg, global_batch_size=4, seed=0))
  np.testing.assert_array_equal(batch_f["image"], batch_t["image"])
  # The split JSONs apply to tfds too: the PraNet test split is not in this 5-image build.
  with pytest.raises(data.DataError, match="of the split's 100 ids are not on disk"):
    sources.reader_for(tfds_cfg, "kvasir_seg:pranet_test")


def test_tiff_release_is_stored_losslessly(tmp_path):
  colon = data_dir("cvc_colondb_subset")
  manual = _manual_dir(tmp_path, colon, "CVC-ColonDB", ["1.tiff", "77.tif"], lambda n: f"p{n.split('.')[0]}.tiff")
  tfds_dir = str(tmp_path / "tfds")
  tfds_builders.build("cvc_colondb", data_dir=tfds_dir, manual_dir=manual)
  folder_cfg, tfds_cfg = _configs(manual, tfds_dir, "cvc_colondb:all")
  a, b = sources.reader_for(folder_cfg, "cvc_colondb:all"), sources.reader_for(tfds_cfg, "cvc_colondb:all")
  assert a.ids == b.ids == ["1", "77"]
  for i in range(2):
    np.testing.assert_array_equal(a.read(i)["image"], b.read(i)["image"])
    np.testing.assert_array_equal(a.read(i)["mask"], b.read(i)["mask"])


def test_missing_build_and_manual_only_datasets_explain_what_to_do(tmp_path):
  _, tfds_cfg = _configs(str(tmp_path), str(tmp_path / "tfds"), "etis:all")
  with pytest.raises(data.DataError, match="python -m bsa_jax.data.tfds_builders etis"):
    sources.reader_for(tfds_cfg, "etis:all")
  with pytest.raises(Exception, match="no public download URL"):
    tfds_builders.build("etis", data_dir=str(tmp_path / "tfds"))
