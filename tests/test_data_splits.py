"""Dataset discovery, pairing and the published splits, on the real data (skipped when absent)."""

import os
import re

import numpy as np
import pytest
from conftest import DATA_ROOT, data_dir

from bsa_jax import config_lib
from bsa_jax import data
from bsa_jax.data import registry
from bsa_jax.data import split_lists


@pytest.mark.parametrize("name,folder,count", [
    ("kvasir_seg", "kvasir_seg", 1000), ("cvc_clinicdb", "cvc_clinicdb_pranet_train", 550),
    ("cvc_colondb", "cvc_colondb_subset", 60), ("ph2", "ph2_subset", 10), ("ham10000", "ham10000_mini", 5)])
def test_counts_and_pairing_on_real_data(name, folder, count):
  data_dir(folder)
  examples = registry.find_examples(name, DATA_ROOT)
  assert len(examples) == count
  for e in examples:
    stem = lambda p: os.path.splitext(os.path.basename(p))[0]
    assert stem(e.image) == e.id and stem(e.mask) in registry.mask_stems(e.id)
  if name == "cvc_colondb":  # N.tiff (or N.tif) <-> pN.tiff
    assert {os.path.basename(e.mask) for e in examples if e.id == "77"} == {"p77.tiff"}
  if name == "ph2":
    assert os.path.basename(examples[0].mask) == f"{examples[0].id}_lesion.bmp"


@pytest.mark.parametrize("name,folder", [
    ("kvasir_seg", "kvasir_seg"), ("cvc_clinicdb", "cvc_clinicdb_pranet_train"),
    ("cvc_colondb", "cvc_colondb_subset"), ("ph2", "ph2_subset"), ("ham10000", "ham10000_mini")])
def test_masks_are_binary_after_decoding(name, folder):
  data_dir(folder)
  examples = registry.find_examples(name, DATA_ROOT)
  for e in examples[:2] + examples[-1:]:  # few decodes: keep the suite fast
    mask = data.load_mask(e.mask)
    image = data.load_image(e.image)
    assert mask.dtype == bool and image.dtype == np.uint8 and image.shape == mask.shape + (3,)
    assert 0 < mask.mean() < 1
  if name == "ph2":  # IMD002's mask is the 24-bit RGB quirk
    e = next(e for e in examples if e.id == "IMD002")
    assert data.load_mask(e.mask).ndim == 2


def test_pranet_kvasir_split_is_exact():
  splits = split_lists.load_committed("kvasir_seg")
  test = splits["pranet_test"]
  assert len(test) == 100 and set(test) == set(split_lists.PRANET_KVASIR_TEST)
  assert "cju0u82z3cuma0835wlxrnrjv" in test and "cju8dqkrqu83i0818ev74qpxq" in test
  train, val, trainval = splits["pranet_train"], splits["pranet_val"], splits["pranet_trainval"]
  assert (len(train), len(val), len(trainval)) == (810, 90, 900)
  assert set(train) | set(val) == set(trainval) and not set(train) & set(val)
  assert not set(trainval) & set(test) and len(set(trainval) | set(test)) == 1000
  assert [len(splits[f"paper712_{s}"]) for s in ("train", "val", "test")] == [700, 100, 200]


def test_pranet_clinicdb_and_paper_split_sizes():
  clinic = split_lists.load_committed("cvc_clinicdb")
  assert len(clinic["pranet_test"]) == 62 and "14" in clinic["pranet_test"]
  assert (len(clinic["pranet_train"]), len(clinic["pranet_val"])) == (495, 55)
  sizes = {d: [len(split_lists.load_committed(d)[f"paper712_{s}"]) for s in ("train", "val", "test")]
           for d in ("kvasir_seg", "cvc_colondb", "etis", "cvc_clinicdb")}
  assert sizes == {"kvasir_seg": [700, 100, 200], "cvc_colondb": [266, 38, 76], "etis": [137, 20, 39],
                   "cvc_clinicdb": [428, 61, 123]}


def test_committed_split_files_regenerate_byte_for_byte():
  for dataset in split_lists.COMMITTED:
    committed = split_lists.load_committed(dataset)
    regenerated = split_lists.to_json(dataset, split_lists.make_splits(dataset, committed["all"]))
    with open(split_lists.split_file(dataset)) as f:
      assert f.read() == regenerated, dataset
  # Input order does not matter; another seed changes the seeded parts only.
  ids = [str(i) for i in range(1, 197)]
  assert split_lists.make_splits("etis", ids[::-1]) == split_lists.make_splits("etis", ids)
  other = split_lists.make_splits("etis", ids, seed=1)
  assert other["paper712_test"] != split_lists.make_splits("etis", ids)["paper712_test"]


def test_split_ids_on_the_fly_for_uncommitted_datasets():
  ids = [f"synth_{i:03d}" for i in range(240)]
  splits = split_lists.make_splits("synthetic_polyps", ids)
  assert [len(splits[f"paper712_{s}"]) for s in ("train", "val", "test")] == [168, 24, 48]
  assert "pranet_train" not in splits


def _cfg(**kw):
  c = config_lib.base_config().data
  c.root = DATA_ROOT
  for k, v in kw.items():
    c[k] = v
  return c


def test_split_ids_missing_on_disk_is_a_clear_error():
  data_dir("cvc_clinicdb_pranet_train")
  c = _cfg(test=("cvc_clinicdb:pranet_test",))
  with pytest.raises(data.DataError, match=r"62 of the split's 62 ids are not on disk.*cvc_clinicdb:all"):
    data.eval_sets(c, "test")
  data_dir("cvc_colondb_subset")
  with pytest.raises(data.DataError, match="320 of the split's 380 ids"):
    data.eval_sets(_cfg(test=("cvc_colondb:pranet_test",)), "test")
  assert data.num_examples(_cfg(test=("cvc_colondb:all",)), "test") == 60


def test_unknown_names_are_clear_errors():
  with pytest.raises(data.DataError, match="unknown dataset 'kvasir'.*kvasir_seg"):
    data.eval_sets(_cfg(test=("kvasir:all",)), "test")
  data_dir("kvasir_seg")
  with pytest.raises(data.DataError, match="unknown split 'kvasir_seg:pranet_tset'"):
    data.eval_sets(_cfg(test=("kvasir_seg:pranet_tset",)), "test")
  with pytest.raises(data.DataError, match="PraNet trains only on"):
    data.eval_sets(_cfg(test=("cvc_colondb:pranet_train",)), "test")
  with pytest.raises(data.DataError, match="not found under the data root"):
    data.eval_sets(_cfg(test=("etis:all",), root=str(DATA_ROOT) + "/kvasir_seg"), "test")


def test_official_folder_names_are_found(tmp_path):
  """Official download layouts, built from symlinks to real files (no copies)."""
  kv = data_dir("kvasir_seg")
  colon = data_dir("cvc_colondb_subset")
  ph2 = data_dir("ph2_subset")
  ids = sorted(os.listdir(os.path.join(kv, "images")))[:3]
  for sub in ("images", "masks"):
    os.makedirs(tmp_path / "Kvasir-SEG" / sub)
    for name in ids:
      os.symlink(os.path.join(kv, sub, name), tmp_path / "Kvasir-SEG" / sub / name)
  flat = tmp_path / "CVC-ColonDB"  # the original release: one flat folder with frames, masks, contours
  os.makedirs(flat)
  for name in ("1.tiff", "77.tif"):
    os.symlink(os.path.join(colon, "images", name), flat / name)
    os.symlink(os.path.join(colon, "masks", f"p{name.split('.')[0]}.tiff"), flat / f"p{name.split('.')[0]}.tiff")
  os.symlink(os.path.join(colon, "masks", "p1.tiff"), flat / "cp1.tiff")  # a contour file: ignored
  case = tmp_path / "PH2Dataset" / "PH2 Dataset images" / "IMD003"
  os.makedirs(case / "IMD003_Dermoscopic_Image")
  os.makedirs(case / "IMD003_lesion")
  os.symlink(os.path.join(ph2, "images", "IMD003.bmp"), case / "IMD003_Dermoscopic_Image" / "IMD003.bmp")
  os.symlink(os.path.join(ph2, "masks", "IMD003_lesion.bmp"), case / "IMD003_lesion" / "IMD003_lesion.bmp")
  root = str(tmp_path)
  assert [e.id for e in registry.find_examples("kvasir_seg", root)] == [i[:-4] for i in ids]
  assert [e.id for e in registry.find_examples("cvc_colondb", root)] == ["1", "77"]
  assert [e.id for e in registry.find_examples("ph2", root)] == ["IMD003"]


def _manifest_test_ids(text, heading):
  """The ids MANIFEST.md lists after `heading` (on the same line or the next one)."""
  match = re.search(re.escape(heading) + r"[ \t]*\n?[ \t]*([\w \t]+)\n", text)
  assert match, f"MANIFEST.md no longer has the line {heading!r}"
  return match.group(1).split()


def _same_ids(what, committed, published):
  missing, extra = set(published) - set(committed), set(committed) - set(published)
  assert not missing and not extra, f"{what}: not in ours {sorted(missing)}, not published {sorted(extra)}"
  assert len(committed) == len(set(committed)) == len(published), what


def test_published_pranet_lists_equal_manifest_md_id_for_id():
  """The committed split JSONs against the published source (shared/data/MANIFEST.md), every id."""
  with open(data_dir("MANIFEST.md")) as f:
    text = f.read()
  kvasir_test = _manifest_test_ids(text, "PraNet Kvasir test ids (append `.jpg`):")
  clinic_test = _manifest_test_ids(text, "PraNet CVC-ClinicDB test ids (not present here):")
  assert (len(kvasir_test), len(clinic_test)) == (100, 62)
  kvasir, clinic = split_lists.load_committed("kvasir_seg"), split_lists.load_committed("cvc_clinicdb")
  _same_ids("kvasir_seg:pranet_test", kvasir["pranet_test"], kvasir_test)
  _same_ids("cvc_clinicdb:pranet_test", clinic["pranet_test"], clinic_test)
  # PraNet trains on the rest: Kvasir's other 900 of the 1000 on disk; ClinicDB's frames 1..612
  # minus the 62, which are exactly the 550 staged files.
  kvasir_on_disk = [e.id for e in registry.find_examples("kvasir_seg", DATA_ROOT)]
  _same_ids("kvasir_seg:all", kvasir["all"], kvasir_on_disk)
  _same_ids("kvasir_seg:pranet_trainval", kvasir["pranet_trainval"],
            sorted(set(kvasir_on_disk) - set(kvasir_test)))
  _same_ids("cvc_clinicdb:all", clinic["all"], [str(i) for i in range(1, 613)])
  _same_ids("cvc_clinicdb:pranet_trainval", clinic["pranet_trainval"],
            [e.id for e in registry.find_examples("cvc_clinicdb", DATA_ROOT)])
  # ColonDB: PraNet tests on all 380 frames of the release.
  assert "CVC-ColonDB test set is all 380 frames" in " ".join(text.split())
  colon = split_lists.load_committed("cvc_colondb")
  _same_ids("cvc_colondb:pranet_test", colon["pranet_test"], [str(i) for i in range(1, 381)])
