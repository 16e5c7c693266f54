"""Broken inputs (made from copies of real files in tmp dirs) give errors naming the file and the problem."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image
from conftest import data_dir

from bsa_jax import config_lib
from bsa_jax import data
from bsa_jax.data import check
from bsa_jax.data import registry


def _kvasir_ids(n):
  kv = data_dir("kvasir_seg")
  return kv, sorted(os.listdir(os.path.join(kv, "images")))[:n]


@pytest.fixture
def broken_kvasir(tmp_path):
  """A kvasir_seg folder: 2 good pairs (symlinks), then one of each problem."""
  kv, names = _kvasir_ids(7)
  root = tmp_path / "kvasir_seg"
  img_dir, mask_dir = root / "images", root / "masks"
  os.makedirs(img_dir)
  os.makedirs(mask_dir)
  truncated, wrong_size, no_mask, grey_mask = names[2:6]
  for n in names[:6]:
    if n != truncated:
      os.symlink(os.path.join(kv, "images", n), img_dir / n)
    if n != no_mask and n != wrong_size and n != grey_mask:
      os.symlink(os.path.join(kv, "masks", n), mask_dir / n)
  with open(os.path.join(kv, "images", truncated), "rb") as f:
    blob = f.read()
  (img_dir / truncated).write_bytes(blob[: len(blob) // 3])  # a JPEG cut short
  mask = Image.open(os.path.join(kv, "masks", wrong_size))
  mask.resize((mask.width // 2, mask.height // 2)).save(mask_dir / wrong_size)
  shutil.copy(os.path.join(kv, "images", grey_mask), mask_dir / grey_mask)  # an image used as its mask
  os.symlink(os.path.join(kv, "masks", names[6]), mask_dir / names[6])  # a mask without image
  (img_dir / "notes.db").write_text("not an image")
  return root, {"truncated": truncated, "wrong_size": wrong_size, "no_mask": no_mask,
                "grey_mask": grey_mask, "extra": names[6]}


def test_check_reports_every_problem_at_once(broken_kvasir, run_command):
  root, bad = broken_kvasir
  report = check.check(str(root))
  text = report.format()
  assert not report.ok and "FAILED" in text
  assert any(bad["truncated"] in e and "cannot decode" in e for e in report.errors)
  assert any(bad["wrong_size"] in e and "WxH" in e for e in report.errors)
  assert any(bad["no_mask"] in e and "has no mask" in e for e in report.errors)
  assert any(bad["extra"] in e and "has no image" in e for e in report.errors)
  assert any(bad["grey_mask"] in e and "not binary" in e for e in report.errors)
  assert any("notes.db" in w for w in report.warnings)
  assert len(report.errors) == 5
  assert run_command("bsa_jax.data.check", str(root))[0] == 1


def test_check_passes_real_data_and_flags_empty_folder(tmp_path):
  assert check.check(data_dir("ph2_subset")).ok
  os.makedirs(tmp_path / "empty" / "images")
  report = check.check(str(tmp_path / "empty"))
  assert not report.ok and "empty" in report.errors[0]


def _cfg(root, **kw):
  c = config_lib.base_config().data
  c.root = str(root)
  c.test = ("kvasir_seg:all",)
  for k, v in kw.items():
    c[k] = v
  return c


def test_build_time_errors_name_the_files(broken_kvasir):
  root, bad = broken_kvasir
  with pytest.raises(data.DataError, match=r"1 image\(s\) without a mask: .*" + bad["no_mask"]):
    data.eval_sets(_cfg(root.parent), "test")
  os.remove(root / "images" / bad["no_mask"])
  registry._find_examples.cache_clear()
  with pytest.raises(data.DataError, match=r"1 mask\(s\) without an image: .*" + bad["extra"]):
    data.eval_sets(_cfg(root.parent), "test")
  os.remove(root / "masks" / bad["extra"])
  registry._find_examples.cache_clear()
  with pytest.raises(data.DataError, match=r"(?s)unusable.*" + bad["wrong_size"][:-4] + r".*WxH"):
    data.eval_sets(_cfg(root.parent), "test")  # headers: the size mismatch is found without decoding
  os.remove(root / "masks" / bad["wrong_size"])
  os.remove(root / "images" / bad["wrong_size"])
  registry._find_examples.cache_clear()
  with pytest.raises(data.DataError, match=bad["truncated"] + ": cannot decode"):
    data.eval_sets(_cfg(root.parent, verify="full"), "test")  # full: truncation found at build time


def test_decode_errors_inside_the_pipeline_name_the_file(broken_kvasir):
  root, bad = broken_kvasir
  with pytest.raises(data.DataError, match=bad["truncated"] + ".*truncated"):
    data.load_image(str(root / "images" / bad["truncated"]))
  with pytest.raises(data.DataError, match="file not found"):
    data.load_mask(str(root / "masks" / "nope.png"))


def test_empty_dataset_folder(tmp_path):
  os.makedirs(tmp_path / "kvasir_seg" / "images")
  os.makedirs(tmp_path / "kvasir_seg" / "masks")
  with pytest.raises(data.DataError, match="no image/mask files"):
    data.eval_sets(_cfg(tmp_path), "test")


def test_mask_encodings_binarise(tmp_path):
  grey = np.zeros((8, 8), np.uint8)
  grey[2:5, 2:5] = 255
  grey[0, 0] = 100  # JPEG-like noise below the threshold
  Image.fromarray(grey).save(tmp_path / "l.png")
  Image.fromarray(grey > 0).save(tmp_path / "one_bit.bmp")
  Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "rgb.png")
  Image.fromarray((grey == 255).astype(np.uint8)).save(tmp_path / "zero_one.png")  # 0/1-coded
  want = grey == 255
  np.testing.assert_array_equal(data.load_mask(str(tmp_path / "l.png")), want)
  np.testing.assert_array_equal(data.load_mask(str(tmp_path / "rgb.png")), want)
  np.testing.assert_array_equal(data.load_mask(str(tmp_path / "zero_one.png")), want)
  np.testing.assert_array_equal(data.load_mask(str(tmp_path / "one_bit.bmp")), grey > 0)
