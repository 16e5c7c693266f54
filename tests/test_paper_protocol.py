"""The paper's 7:1:2 protocol (configs/paper_protocol.py): ETIS and CVC-300 in both public layouts,
absent datasets left out (`data.missing='skip'`) as "not run" cells, CVC-EndoScene as ClinicDB +
CVC-300, and one tiny end-to-end run on fixtures built from the real images."""

import csv
import json
import os

import numpy as np
import pytest
from conftest import data_dir
from PIL import Image

from bsa_jax import config_lib
from bsa_jax import data
from bsa_jax.data import registry
from bsa_jax.data import sources
from bsa_jax.data import split_lists
from bsa_jax.eval import evaluate
from bsa_jax.eval import paper_results
from bsa_jax.eval import tables
from bsa_jax.workdir import metric_writer

PAPER_PROTOCOL = os.path.join(config_lib.REPO_ROOT, "configs", "paper_protocol.py")
SIZE = (96, 80)  # fixtures are the real images, shrunk (w, h): fast to decode and verify


def _real_pairs(n):
  """`n` real (image, mask) pairs of CVC-ColonDB and CVC-ClinicDB, as PIL images (mask mode 'L')."""
  pairs = []
  for folder, mask_name in (("cvc_colondb_subset", lambda stem: f"p{stem}.tiff"),
                            ("cvc_clinicdb_pranet_train", lambda stem: f"{stem}.png")):
    root = data_dir(folder)
    for name in sorted(os.listdir(os.path.join(root, "images")))[:n]:
      stem = os.path.splitext(name)[0]
      image = Image.open(os.path.join(root, "images", name)).convert("RGB").resize(SIZE)
      mask = Image.open(os.path.join(root, "masks", mask_name(stem))).convert("L").resize(SIZE,
                                                                                           Image.NEAREST)
      pairs.append((image, mask))
  return pairs[:n]


def _write(pairs, ids, image_path, mask_path):
  """Saves pairs under the names `image_path.format(id=...)`/`mask_path...` (format from the suffix)."""
  for (image, mask), i in zip(pairs, ids):
    for picture, pattern in ((image, image_path), (mask, mask_path)):
      path = pattern.format(id=i)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      picture.save(path)


def _pranet_layout(root, name, ids, pairs):
  """PraNet's TestDataset/<name>/{images,masks}/N.png."""
  folder = os.path.join(root, "TestDataset", name)
  _write(pairs, ids, os.path.join(folder, "images", "{id}.png"), os.path.join(folder, "masks", "{id}.png"))


def _etis_release_layout(root, ids, pairs):
  """The original ETIS release: ETIS-LaribPolypDB/N.tif, masks Ground Truth/pN.tif."""
  folder = os.path.join(root, "ETIS-LaribPolypDB")
  _write(pairs, ids, os.path.join(folder, "ETIS-LaribPolypDB", "{id}.tif"),
         os.path.join(folder, "Ground Truth", "p{id}.tif"))


def _data_config(root, **overrides):
  c = config_lib.load_config(PAPER_PROTOCOL).data
  c.root = str(root)
  c.verify = "headers"
  for k, v in overrides.items():
    c[k] = v
  return c


@pytest.mark.parametrize("layout", ["pranet", "release"])
def test_etis_in_both_public_layouts(tmp_path, layout):
  pairs = _real_pairs(4)
  ids = ["1", "2", "10", "196"]
  if layout == "pranet":
    _pranet_layout(tmp_path, "ETIS-LaribPolypDB", ids, pairs)
    where = tmp_path / "TestDataset" / "ETIS-LaribPolypDB"
  else:
    _etis_release_layout(tmp_path, ids, pairs)
    where = tmp_path / "ETIS-LaribPolypDB"
  assert registry.dataset_dir("etis", str(tmp_path)) == str(where)
  assert [e.id for e in registry.find_examples("etis", str(tmp_path))] == ids
  c = _data_config(tmp_path, test=("etis:pranet_test",))
  (eval_set,) = data.eval_sets(c, "test").values()
  assert eval_set.ids == ids  # 4 of the release's 196 frames: skip keeps what is there
  batch = next(eval_set.batches(4))
  assert batch["image"].shape == (4, 256, 256, 3) and batch["mask_orig"][0].shape == (80, 96)
  assert all(m.any() for m in batch["mask_orig"])
  assert sources.coverage(c, "etis:pranet_test") == {"listed": 196, "present": 4, "absent": [],
                                                     "partial": [("etis", 4, 196)]}


def test_cvc300_in_pranet_layout_and_endoscene_is_clinicdb_plus_cvc300(tmp_path):
  pairs = _real_pairs(14)
  _pranet_layout(tmp_path, "CVC-300", [str(150 + i) for i in range(10)], pairs[:10])
  committed = split_lists.load_committed("cvc_clinicdb")
  clinic_ids = committed["paper712_test"][:2] + committed["paper712_train"][:2]
  _pranet_layout(tmp_path, "CVC-ClinicDB", clinic_ids, pairs[10:])
  c = _data_config(tmp_path, test=("cvc_endoscene:paper712_test",))
  (eval_set,) = data.eval_sets(c, "test").values()
  cvc300_test = split_lists.make_splits("cvc_300", [str(150 + i) for i in range(10)])["paper712_test"]
  assert eval_set.ids == ([f"cvc_clinicdb_{i}" for i in clinic_ids[:2]]
                          + [f"cvc_300_{i}" for i in cvc300_test])
  assert next(eval_set.batches(8))["id"][:len(eval_set)] == eval_set.ids
  cov = sources.coverage(c, "cvc_endoscene:paper712_test")
  assert cov == {"listed": 123 + len(cvc300_test), "present": 2 + len(cvc300_test), "absent": [],
                 "partial": [("cvc_clinicdb", 2, 123)]}
  assert len(data.eval_sets(_data_config(tmp_path, test=("cvc_endoscene:paper712_test",),
                                         max_eval_examples=3), "test")["cvc_endoscene:paper712_test"]) == 3


def test_absent_datasets_are_errors_or_not_run_cells(tmp_path):
  pairs = _real_pairs(4)
  committed = split_lists.load_committed("cvc_clinicdb")
  _pranet_layout(tmp_path, "CVC-ClinicDB", committed["paper712_test"][:4], pairs)
  test = ("etis:pranet_test", "cvc_endoscene:paper712_test")
  strict = _data_config(tmp_path, test=test, missing="error")
  with pytest.raises(data.DataError, match=r"dataset 'etis' \(ETIS-LaribPolypDB\) not found under the "
                                           r"data root .*TestDataset/ETIS-LaribPolypDB"):
    data.eval_sets(strict, "test")
  with pytest.raises(data.DataError, match="119 of the split's 123 ids are not on disk"):
    data.eval_sets(_data_config(tmp_path, test=test[1:], missing="error"), "test")

  c = _data_config(tmp_path, test=test)
  skipped = sources.skipped_entries(c, "test")
  assert list(skipped) == ["etis:pranet_test"] and "ETIS-LaribPolypDB" in skipped["etis:pranet_test"]
  sets = data.eval_sets(c, "test")
  assert list(sets) == ["cvc_endoscene:paper712_test"] and len(sets[test[1]]) == 4
  cov = sources.coverage(c, test[1])
  assert cov == {"listed": None, "present": 4, "absent": ["cvc_300"], "partial": [("cvc_clinicdb", 4, 123)]}
  assert evaluate.coverage_note(cov) == ("cvc_clinicdb: 4 of the split's 123 on disk; without cvc_300 "
                                         "(not on disk)")
  with pytest.raises(data.DataError, match="none of the datasets of config.data.val"):
    data.eval_sets(_data_config(tmp_path, val=("etis:paper712_val",)), "val")


def test_tables_mark_not_run_and_partial_sets_and_say_the_init(tmp_path):
  results = {"kvasir_seg:paper712_test": {**{k: 0.5 for k in paper_results.COLUMNS}, "num_images": 200},
             "cvc_colondb:paper712_test": {**{k: 0.4 for k in paper_results.COLUMNS}, "num_images": 13}}
  md_path, csv_path = tables.write_tables(
      results, str(tmp_path), {"commit": "abc", "init": "none: trained from scratch, no ImageNet weights"},
      not_run={"etis:pranet_test": "dataset 'etis' not found under /data"},
      notes={"cvc_colondb:paper712_test": "13 of the split's 76 on disk"})
  md = open(md_path).read()
  assert md.startswith("# BSA-Net") and "**Initialisation: none: trained from scratch" in md
  assert "Not comparable with the paper's numbers" in md
  etis = md.split("## Table 2: ETIS")[1].split("## Table 3")[0]
  assert "| bsa_jax on etis:pranet_test | ours (bsa_jax, this run) | not run | not run |" in etis
  assert "_etis:pranet_test not run: dataset 'etis' not found under /data_" in etis
  assert "bsa_jax on cvc_colondb:paper712_test (n=13; 13 of the split's 76 on disk)" in md
  assert md.count("_No result of ours") == 1  # only CVC-EndoScene
  rows = list(csv.DictReader(open(csv_path)))
  not_run = [r for r in rows if r["dataset_key"] == "etis:pranet_test"]
  assert len(not_run) == 1 and not_run[0]["mDSC"] == "not run" and not_run[0]["init"].startswith("none")


def _fixture_root(tmp_path):
  """Kvasir (shared layout), CVC-ColonDB (original flat release), CVC-ClinicDB and CVC-300 (PraNet's
  TestDataset layout) with ids from every paper712 part; no ETIS."""
  kvasir = data_dir("kvasir_seg")
  kv = split_lists.load_committed("kvasir_seg")
  kv_ids = kv["paper712_train"][:10] + kv["paper712_val"][:2] + kv["paper712_test"][:3]
  for i in kv_ids:
    for sub, mode, resample in (("images", "RGB", Image.BILINEAR), ("masks", "L", Image.NEAREST)):
      os.makedirs(tmp_path / "kvasir_seg" / sub, exist_ok=True)
      Image.open(os.path.join(kvasir, sub, f"{i}.jpg")).convert(mode).resize(SIZE, resample).save(
          tmp_path / "kvasir_seg" / sub / f"{i}.png")
  pairs = _real_pairs(20)
  colon = split_lists.load_committed("cvc_colondb")
  colon_ids = colon["paper712_train"][:4] + colon["paper712_val"][:1] + colon["paper712_test"][:2]
  _write(pairs[:7], colon_ids, str(tmp_path / "CVC-ColonDB" / "{id}.tiff"),
         str(tmp_path / "CVC-ColonDB" / "p{id}.tiff"))
  clinic = split_lists.load_committed("cvc_clinicdb")
  clinic_ids = clinic["paper712_train"][:4] + clinic["paper712_val"][:1] + clinic["paper712_test"][:2]
  _pranet_layout(tmp_path, "CVC-ClinicDB", clinic_ids, pairs[7:14])
  _pranet_layout(tmp_path, "CVC-300", [str(150 + i) for i in range(6)], pairs[14:20])
  return tmp_path


@pytest.mark.slow
def test_paper_protocol_run_writes_the_four_tables(tmp_path, run_command):
  """`launch.py --config=configs/paper_protocol.py` on a small fixture: trains, validates with the
  coarse and refined mDSC side by side, and writes Tables 1–4 with ETIS "not run"."""
  root = _fixture_root(tmp_path / "data")
  workdir = tmp_path / "run"
  code, _, err = run_command(
      "launch.py", f"--config={PAPER_PROTOCOL}", f"--workdir={workdir}", f"--config.data.root={root}",
      "--config.model_init=none", "--config.model.variant=tiny", "--config.data.image_size=64",
      "--config.train.batch_size=8", "--config.train.num_steps=2", "--config.eval.batch_size=8",
      "--config.eval.num_overlays=0", "--config.train.progress_bar=False",
      "--config.data.verify=headers")
  assert code == 0, err[-3000:]
  md = (workdir / "results" / "paper_tables.md").read_text()
  assert "**Initialisation: none: trained from scratch, no ImageNet weights.**" in md
  sections = {title: md.split(f"## {title}")[1].split("## ")[0]
              for title in ("Table 1: Kvasir", "Table 2: ETIS", "Table 3: CVC-ColonDB",
                            "Table 4: CVC-EndoScene")}
  assert "bsa_jax on kvasir_seg:paper712_test (n=3; 3 of the split's 200 on disk)" in sections[
      "Table 1: Kvasir"]
  assert "| bsa_jax on etis:pranet_test | ours (bsa_jax, this run) | not run |" in sections[
      "Table 2: ETIS"]
  assert "bsa_jax on cvc_colondb:paper712_test (n=2; 2 of the split's 76 on disk)" in sections[
      "Table 3: CVC-ColonDB"]
  cvc300_test = split_lists.make_splits("cvc_300", [str(150 + i) for i in range(6)])["paper712_test"]
  assert (f"bsa_jax on cvc_endoscene:paper712_test (n={2 + len(cvc300_test)}; "
          f"{2 + len(cvc300_test)} of the split's {123 + len(cvc300_test)} on disk)") in sections[
              "Table 4: CVC-EndoScene"]
  saved = json.loads((workdir / "results" / "test_metrics.json").read_text())
  assert set(saved["results"]) == {"kvasir_seg:paper712_test", "cvc_colondb:paper712_test",
                                   "cvc_endoscene:paper712_test"}
  prov = saved["provenance"]
  assert prov["init"].startswith("none") and "test etis:pranet_test: not run" in prov["data_left_out"]
  assert "etis:not-found" in prov["datasets_sha256"]
  val = [r for r in metric_writer.read_jsonl(str(workdir / "metrics.jsonl")) if "val/mDSC" in r]
  assert val and all(np.isfinite(r["val/mDSC_coarse"]) for r in val)
  assert "mDSC_coarse" in saved["results"]["kvasir_seg:paper712_test"]


def test_paper_protocol_config_arguments():
  c = config_lib.load_config(PAPER_PROTOCOL)
  assert c.model_name == "bsanet" and c.data.missing == "skip"
  assert c.model_init == "timm:swin_tiny_patch4_window7_224" and c.data.image_size == 256
  assert [paper_results.table_for_dataset(e) for e in c.data.test] == [1, 2, 3, 4]
  small = config_lib.load_config(PAPER_PROTOCOL + ":small")
  assert small.model.variant == "tiny" and small.model_init == "" and small.data.test == c.data.test
  pranet = config_lib.load_config(PAPER_PROTOCOL + ":pranet")
  assert pranet.model_name == "pranet" and pranet.model_init == "timm:res2net50_26w_4s"
  unet = config_lib.load_config(PAPER_PROTOCOL + ":unet,cpu")
  assert unet.model_name == "unet" and unet.data.image_size == 112 and unet.data.train == c.data.train
  with pytest.raises(ValueError, match="argument"):
    config_lib.load_config(PAPER_PROTOCOL + ":vit")


def test_offline_the_imagenet_default_stops_before_the_workdir_with_the_commands(tmp_path, monkeypatch,
                                                                                 run_command):
  """The paper-protocol config starts from ImageNet Swin-T; offline and never fetched, launch.py stops
  with exit 2 before creating the workdir (long before compiling) and prints the commands."""
  from bsa_jax.models import pretrained
  monkeypatch.setenv("BSA_CACHE_DIR", str(tmp_path / "cache"))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setattr(pretrained, "_cached_hub_file", lambda hub_id: None)
  workdir = tmp_path / "run"
  code, _, err = run_command("launch.py", f"--config={PAPER_PROTOCOL}", f"--workdir={workdir}",
                             "--config.model.variant=tiny", "--config.data.image_size=64")
  assert code == 2, err[-2000:]
  assert "ImageNet weights needed" in err and "curl -L -o swin_tiny_patch4_window7_224.safetensors" in err
  assert (f"--out={tmp_path / 'cache' / 'converted' / 'swin_tiny_patch4_window7_224'}" in err
          and "--config.model_init=none" in err)
  assert not workdir.exists()
