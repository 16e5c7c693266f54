"""The eval CLI (`python -m bsa_jax.eval`), mask/prediction I/O, and the paper-tables writer."""

import csv
import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from conftest import DATA_ROOT, data_dir
from bsa_jax import config_lib
from bsa_jax.eval import __main__ as cli
from bsa_jax.eval import io, metrics, paper_results, tables


def _disc_mask(h, w, cy, cx, r):
  yy, xx = np.mgrid[:h, :w]
  return (yy - cy)**2 + (xx - cx)**2 <= r * r


def _blurred_u8(gt, sigma=3.0):
  p = ndimage.gaussian_filter(gt.astype(np.float64), sigma)
  return np.clip(np.round(p / p.max() * 255), 0, 255).astype(np.uint8)


def _write_synthetic_dataset(root, names, size=(40, 56)):
  """masks/<name>.png (0/255) and preds/<name>.png; returns {name: (pred, gt)}."""
  os.makedirs(os.path.join(root, "masks"), exist_ok=True)
  os.makedirs(os.path.join(root, "preds"), exist_ok=True)
  pairs = {}
  for i, name in enumerate(names):
    gt = _disc_mask(*size, 15 + i, 20 + 2 * i, 6 + i)
    pred = _blurred_u8(gt)
    Image.fromarray(gt.astype(np.uint8) * 255).save(os.path.join(root, "masks", name + ".png"))
    Image.fromarray(pred).save(os.path.join(root, "preds", name + ".png"))
    pairs[name] = (pred, gt)
  return pairs


def _read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def _score(run_command, *argv):
  """`python -m bsa_jax.eval ARGV` in this process (with the older hyphenated flag names users'
  scripts have, which stay accepted); returns {dataset: scores} from the OUT.json it wrote."""
  code, _, err = run_command("bsa_jax.eval", *argv)
  assert code == 0, err
  out = argv[argv.index("--out") + 1]
  with open(cli._out_stem(out) + ".json") as f:
    return json.load(f)["datasets"]


# ------------------------------------------------------------------------------------------------
# End to end on real masks.
# ------------------------------------------------------------------------------------------------
def test_cli_on_real_colondb_matches_pysodmetrics_reading_the_same_files(tmp_path, run_command):
  """8-bit PNG predictions named like the ColonDB images ('12' for mask 'p12'), scored by the CLI
  and by pysodmetrics reading the files with cv2 as its examples do."""
  psm = pytest.importorskip("py_sod_metrics")
  cv2 = pytest.importorskip("cv2")
  masks = sorted(glob.glob(os.path.join(data_dir("cvc_colondb_subset", "masks"), "*")))[:10]
  gt_dir, pred_dir = tmp_path / "gt", tmp_path / "preds"
  gt_dir.mkdir()
  pred_dir.mkdir()
  for i, path in enumerate(masks):
    os.symlink(path, gt_dir / os.path.basename(path))
    gt = io.read_gt(path)
    pred = _blurred_u8(np.roll(gt, (3 * i, -2 * i), (0, 1)), sigma=4 + i)
    Image.fromarray(pred).save(pred_dir / (os.path.basename(path).split(".")[0][1:] + ".png"))
  out = tmp_path / "out" / "colondb.json"  # the suffix is dropped: both .csv and .json are written
  results = _score(run_command, "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir),
                   "--name", "CVC-ColonDB", "--out", str(out), "--quiet")
  ours = results["CVC-ColonDB"]
  assert ours["num_images"] == 10 and ours["num_resized"] == 0

  dice = psm.FmeasureV2(metric_handlers={"dice": psm.DICEHandler(True, False),
                                         "iou": psm.IOUHandler(True, False)})
  sm, wfm, em, mae = psm.Smeasure(), psm.WeightedFmeasure(), psm.Emeasure(), psm.MAE()
  for path in masks:
    gt = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    pred = cv2.imread(str(pred_dir / (os.path.basename(path).split(".")[0][1:] + ".png")),
                      cv2.IMREAD_GRAYSCALE)
    for m in (dice, sm, wfm, em, mae):
      m.step(pred, gt)
  ref = dice.get_results()
  expected = {"mDSC": ref["dice"]["dynamic"].mean(), "mIoU": ref["iou"]["dynamic"].mean(),
              "S_alpha": sm.get_results()["sm"], "F_beta_w": wfm.get_results()["wfm"],
              "E_phi_max": em.get_results()["em"]["curve"].max(), "MAE": mae.get_results()["mae"]}
  for k, v in expected.items():
    assert abs(ours[k] - v) <= 1e-6, k

  rows = _read_csv(tmp_path / "out" / "colondb.csv")
  assert [r["dataset"] for r in rows] == ["CVC-ColonDB"]
  assert set(metrics.ALL_METRIC_NAMES) <= set(rows[0])
  assert float(rows[0]["mDSC"]) == pytest.approx(ours["mDSC"], abs=1e-12)
  saved = json.load(open(tmp_path / "out" / "colondb.json"))
  assert saved["metric_names"] == list(metrics.METRIC_NAMES)
  assert saved["datasets"]["CVC-ColonDB"]["F_beta_w"] == pytest.approx(ours["F_beta_w"], abs=1e-12)


def test_read_gt_follows_the_toolbox_on_real_masks():
  """Kvasir RGB JPEG -> rgb2gray > 128; ClinicDB 1-bit PNG -> canonical bools; ColonDB TIFF."""
  kvasir = sorted(glob.glob(os.path.join(data_dir("kvasir_seg", "masks"), "*.jpg")))[:5]
  for path in kvasir:
    rgb = np.array(Image.open(path).convert("RGB"))
    gt = io.read_gt(path)
    assert gt.dtype == bool and gt.shape == rgb.shape[:2]
    np.testing.assert_array_equal(gt, io.rgb_to_gray(rgb) > 128)
    assert 0 < gt.mean() < 1
  clinic = sorted(glob.glob(os.path.join(data_dir("cvc_clinicdb_pranet_train", "masks"), "*")))[0]
  gt = io.read_gt(clinic)
  assert gt.view(np.uint8).max() == 1  # PIL gives byte 255 for True; we normalise
  np.testing.assert_array_equal(gt, np.array(Image.open(clinic).convert("L")) > 128)
  colon = sorted(glob.glob(os.path.join(data_dir("cvc_colondb_subset", "masks"), "*")))[0]
  np.testing.assert_array_equal(io.read_gt(colon), np.array(Image.open(colon)) > 128)


def test_rgb_to_gray_is_matlab_rgb2gray():
  rgb = np.array([[[255, 255, 255], [0, 0, 0], [129, 128, 127], [255, 0, 0], [10, 200, 30]]],
                 np.uint8)
  # MATLAB: round(0.298936*R + 0.587043*G + 0.114021*B).
  np.testing.assert_array_equal(io.rgb_to_gray(rgb), [[255, 0, 128, 76, 124]])


# ------------------------------------------------------------------------------------------------
# Formats, sizes and pairing rules on synthetic files.
# ------------------------------------------------------------------------------------------------
def test_cli_reads_float_tiff_16bit_rgb_and_resizes(tmp_path, run_command):
  pairs = _write_synthetic_dataset(tmp_path, ["a", "b", "c", "d"])
  preds = tmp_path / "preds"
  # a: float32 TIFF in [0, 1]; b: 16-bit PNG; c: RGB PNG (first channel is read); d: half size.
  prob_a = pairs["a"][0] / 255.0
  os.remove(preds / "a.png")
  Image.fromarray(prob_a.astype(np.float32), mode="F").save(preds / "a.tiff")
  os.remove(preds / "b.png")
  Image.fromarray((pairs["b"][0].astype(np.uint16) * 257)).save(preds / "b.png")
  rgb = np.stack([pairs["c"][0], np.zeros_like(pairs["c"][0]), np.full_like(pairs["c"][0], 255)],
                 -1)
  Image.fromarray(rgb).save(preds / "c.png")
  small = np.array(Image.fromarray(pairs["d"][0]).resize((28, 20), Image.BILINEAR))
  Image.fromarray(small).save(preds / "d.png")

  results = _score(run_command, "--pred-dir", str(preds), "--gt-dir", str(tmp_path), "--name", "syn",
                   "--out", str(tmp_path / "m"), "--quiet", "--per-image")
  expected = metrics.aggregate([
      metrics.image_scores(prob_a.astype(np.float32).astype(np.float64), pairs["a"][1]),
      metrics.image_scores(pairs["b"][0].astype(np.float64) * 257 / 65535, pairs["b"][1]),
      metrics.image_scores(pairs["c"][0], pairs["c"][1]),
      metrics.image_scores(np.clip(metrics.resize_prediction(small, (40, 56)), 0, 1),
                           pairs["d"][1]),
  ])
  assert results["syn"]["num_resized"] == 1
  for k in metrics.ALL_METRIC_NAMES:
    assert results["syn"][k] == pytest.approx(expected[k], abs=1e-12), k
  per_image = _read_csv(tmp_path / "m_per_image.csv")
  assert [r["name"] for r in per_image] == ["a", "b", "c", "d"]
  assert float(per_image[2]["s_alpha"]) == pytest.approx(
      float(metrics.image_scores(pairs["c"][0], pairs["c"][1])["s_alpha"]))


def test_saved_pranet_maps_score_like_in_memory_ones(tmp_path, run_command):
  """Saving `to_uint8_map(prob)` as PNG and running the CLI equals scoring it in memory."""
  pairs = _write_synthetic_dataset(tmp_path, ["a", "b", "c"])
  rng = np.random.default_rng(0)
  records = []
  for name, (_, gt) in pairs.items():
    prob = 1 / (1 + np.exp(-(ndimage.gaussian_filter(gt * 6.0 - 3, 2) + rng.normal(0, .5, gt.shape))))
    saved = metrics.to_uint8_map(prob)
    assert saved.min() == 0 and saved.max() == 255
    Image.fromarray(saved).save(tmp_path / "preds" / f"{name}.png")
    records.append(metrics.image_scores(saved, gt))
  results = _score(run_command, "--pred_dir", str(tmp_path / "preds"), "--gt_dir", str(tmp_path),
                   "--name", "syn", "--out", str(tmp_path / "m"), "--quiet")
  expected = metrics.aggregate(records)
  assert {k: results["syn"][k] for k in expected} == expected


def test_prediction_stems_follow_dataset_conventions(tmp_path):
  (tmp_path / "gt").mkdir()
  (tmp_path / "pred").mkdir()
  mask = Image.fromarray(np.zeros((4, 4), np.uint8))
  for name in ("p12.tiff", "IMD003_lesion.bmp", "ISIC_0000001_segmentation.png", "case7.png"):
    mask.save(tmp_path / "gt" / name)
  for name in ("12.png", "IMD003.png", "ISIC_0000001.jpg", "case7.png", "extra.png"):
    mask.save(tmp_path / "pred" / name)
  pairs, unused = io.match_pairs(str(tmp_path / "pred"), str(tmp_path / "gt"))
  got = {p.name: os.path.basename(p.pred_path) for p in pairs}
  assert got == {"p12": "12.png", "IMD003_lesion": "IMD003.png",
                 "ISIC_0000001_segmentation": "ISIC_0000001.jpg", "case7": "case7.png"}
  assert [os.path.basename(u) for u in unused] == ["extra.png"]
  mask.save(tmp_path / "pred" / "12.jpg")
  with pytest.raises(io.EvalInputError, match="two files with the stem '12'"):
    io.match_pairs(str(tmp_path / "pred"), str(tmp_path / "gt"))


def test_missing_prediction_is_an_error_naming_the_mask(tmp_path, run_command):
  _write_synthetic_dataset(tmp_path, ["a", "b", "c"])
  os.remove(tmp_path / "preds" / "b.png")
  code, _, message = run_command("bsa_jax.eval", "--pred-dir", str(tmp_path / "preds"), "--gt-dir",
                                 str(tmp_path / "masks"), "--out", str(tmp_path / "m"), "--quiet")
  assert code == 2 and message.startswith("python -m bsa_jax.eval: error: ")
  assert "for 1 of 3 masks" in message and "'b'" in message and "Save one prediction" in message
  assert not os.path.exists(tmp_path / "m.csv")


def test_unreadable_prediction_is_an_error_naming_the_file(tmp_path, run_command):
  _write_synthetic_dataset(tmp_path, ["a", "b"])
  bad = tmp_path / "preds" / "b.png"
  bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
  code, _, message = run_command("bsa_jax.eval", "--pred-dir", str(tmp_path / "preds"), "--gt-dir",
                                 str(tmp_path), "--quiet", "--out", str(tmp_path / "m"))
  assert code == 2 and str(bad) in message and "Re-save it" in message


def test_out_of_range_float_prediction_and_dim_masks_are_errors(tmp_path):
  Image.fromarray(np.full((4, 4), 1.5, np.float32), mode="F").save(tmp_path / "p.tiff")
  with pytest.raises(io.EvalInputError, match=r"outside \[0, 1\]"):
    io.read_prediction(str(tmp_path / "p.tiff"))
  Image.fromarray(np.eye(4, dtype=np.uint8)).save(tmp_path / "m01.png")  # 0/1-coded: 1 is foreground
  np.testing.assert_array_equal(io.read_gt(str(tmp_path / "m01.png")), np.eye(4, dtype=bool))
  Image.fromarray(np.eye(4, dtype=np.uint8) * 100).save(tmp_path / "m.png")  # 0/100: ambiguous
  with pytest.raises(io.EvalInputError, match="values up to 100"):
    io.read_gt(str(tmp_path / "m.png"))


def test_several_datasets_and_the_module_entry_point(tmp_path):
  _write_synthetic_dataset(tmp_path / "one", ["a", "b"])
  _write_synthetic_dataset(tmp_path / "two", ["x", "y", "z"])
  env = dict(os.environ, PYTHONPATH=config_lib.REPO_ROOT)
  run = subprocess.run(
      [sys.executable, "-m", "bsa_jax.eval", "--pred-dir", str(tmp_path / "one" / "preds"),
       "--gt-dir", str(tmp_path / "one"), "--pred-dir", str(tmp_path / "two" / "preds"),
       "--gt-dir", str(tmp_path / "two" / "masks"), "--out", str(tmp_path / "both.csv")],
      capture_output=True, text=True, env=env, timeout=120)
  assert run.returncode == 0, run.stderr
  lines = run.stdout.strip().splitlines()
  assert lines[0].startswith("| Dataset | n | mDSC | mIoU | S_alpha | F_beta_w | E_phi_max | MAE")
  assert lines[2].startswith("| one | 2 | ") and lines[3].startswith("| two | 3 | ")
  assert [r["dataset"] for r in _read_csv(tmp_path / "both.csv")] == ["one", "two"]
  assert os.path.exists(tmp_path / "both.json")

  failed = subprocess.run([sys.executable, "-m", "bsa_jax.eval", "--pred-dir", str(tmp_path),
                           "--gt-dir", str(tmp_path / "nowhere")],
                          capture_output=True, text=True, env=env, timeout=120)
  assert failed.returncode != 0 and "error: not a directory" in failed.stderr


# ------------------------------------------------------------------------------------------------
# Paper tables.
# ------------------------------------------------------------------------------------------------
def _fake_result(value, n):
  return {**{k: value for k in metrics.ALL_METRIC_NAMES}, "num_images": n}


def test_write_tables_layout(tmp_path):
  results = {"kvasir_seg:pranet_test": _fake_result(0.81234, 100),
             "cvc_colondb:all": _fake_result(0.5, 380),
             "cvc_clinicdb:pranet_val": _fake_result(0.7, 55)}
  provenance = {"commit": "abc1234", "config_hash": "cfg99", "checkpoint_step": 1200}
  md_path, csv_path = tables.write_tables(results, str(tmp_path / "tables"), provenance)
  md = open(md_path).read()
  for title in ("Table 1: Kvasir", "Table 2: ETIS", "Table 3: CVC-ColonDB",
                "Table 4: CVC-EndoScene", "Other evaluated datasets"):
    assert f"## {title}" in md
  assert "| bsa_jax on kvasir_seg:pranet_test (n=100) | ours (bsa_jax, this run) | 0.812 |" in md
  assert ("| BSA-Net (the paper's 'Ours') | reported in the paper (different split/protocol) | "
          "0.901 | 0.887 |") in md
  assert md.count("_No result of ours") == 2  # ETIS and EndoScene
  assert "commit: `abc1234`" in md and "checkpoint_step: `1200`" in md

  rows = _read_csv(csv_path)
  assert len(rows) == 4 * 6 + 3
  ours = [r for r in rows if r["source"] == tables.OURS_SOURCE]
  assert {r["dataset_key"] for r in ours} == set(results)
  assert all(r["commit"] == "abc1234" and r["checkpoint_step"] == "1200" for r in ours)
  paper = [r for r in rows if r["source"] == tables.PAPER_SOURCE]
  assert all(r["commit"] == "" for r in paper)
  ldnet_etis = next(r for r in paper if r["table"] == "Table 2: ETIS" and r["model"] == "LDNet")
  assert float(ldnet_etis["MAE"]) == 0.037


def test_paper_results_equal_the_paper_text():
  """Every quoted number appears in the paper's table text, row by row."""
  papers = os.path.join(os.path.dirname(DATA_ROOT), "papers")
  found = glob.glob(os.path.join(papers, "000_*.txt"))
  if not found:
    pytest.skip(f"the paper text (papers/000_*.txt) is not beside the data root at {papers}; "
                "it ships beside the data root, not in this repository")
  text = open(found[0]).read()
  blocks = re.split(r"\*\*Table \d", text)[1:5]
  assert len(blocks) == 4
  for number, block in zip(range(1, 5), blocks):
    title, rows = paper_results.TABLES[number]
    for model, values in rows.items():
      label = "Unet\\+ ?\\+" if model == "Unet++" else re.escape(model)
      line = re.search(rf"^{label}\t(.*)$", block, re.M)
      assert line, (title, model)
      assert tuple(float(v) for v in line.group(1).split()) == values, (title, model)
