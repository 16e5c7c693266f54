"""A short training run's artefacts, re-evaluation of its workdir, and prediction on a user's folder."""

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from bsa_jax.workdir import checkpoint as ckpt_lib
from bsa_jax import config_lib
from bsa_jax import data
from bsa_jax.eval import overlays
from bsa_jax.tools import segment
from bsa_jax.workdir import load
from bsa_jax.eval import evaluate
from bsa_jax.workdir import metric_writer
from bsa_jax.tools import predict
from bsa_jax import train
from bsa_jax.eval import metrics as metrics_lib
from bsa_jax.eval import workdir as eval_workdir


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory, synthetic_root):
  config = config_lib.load_config(os.path.join(config_lib.REPO_ROOT, "configs/demo.py"))
  config.model_name = "unet"
  config.data.root = synthetic_root
  config.data.image_size = 32
  config.data.max_eval_examples = 6
  config.train.num_steps = 6
  config.train.eval_every_epochs = 0.1  # validation every 2 steps (steps/epoch = 21)
  config.train.log_every_steps = 2
  config.train.progress_bar = False
  config.eval.num_overlays = 3
  workdir = str(tmp_path_factory.mktemp("run"))
  events = []  # ("eval", set names) and ("save", step, metrics), in the order they happen
  real_eval, real_save = evaluate.evaluate_sets, ckpt_lib.Checkpointer.save

  def recording_eval(predict_fn, eval_sets, **kwargs):
    events.append(("eval", tuple(eval_sets)))
    return real_eval(predict_fn, eval_sets, **kwargs)

  def recording_save(self, step, state, data_iter, meta, metrics=None):
    events.append(("save", step, metrics))
    return real_save(self, step, state, data_iter, meta, metrics)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(evaluate, "evaluate_sets", recording_eval)
    patch.setattr(ckpt_lib.Checkpointer, "save", recording_save)
    summary = train.main(config, workdir)
  return workdir, summary, config, events


def test_run_writes_metrics_tables_overlays_and_selects_on_validation(trained_workdir):
  workdir, summary, config, _ = trained_workdir
  records = metric_writer.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  train_lines = [r for r in records if "loss" in r]
  assert [r["step"] for r in train_lines] == [2, 4, 6]
  for r in train_lines:
    assert {"loss", "learning_rate", "grad_norm", "images_per_sec"} <= set(r)
  val_lines = [r for r in records if "val/mDSC" in r]
  assert [r["step"] for r in val_lines] == [2, 4, 6]
  for name in metrics_lib.METRIC_NAMES:
    assert f"val/{name}" in val_lines[0]
  best = max(val_lines, key=lambda r: r["val/mDSC"])
  assert summary["best_step"] == best["step"]
  results = json.load(open(os.path.join(workdir, "results", "test_metrics.json")))
  assert results["provenance"]["checkpoint_step"] == best["step"]
  assert results["provenance"]["config_hash"] == config_lib.config_hash(config)
  assert results["provenance"]["datasets_sha256"].startswith("synthetic_polyps:")
  assert len(results["provenance"]["datasets_sha256"].split(":")[1]) == 64
  # A real commit of this repository (not 'unknown'), '+dirty' when the tree has changes.
  commit = results["provenance"]["commit"]
  assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", commit), results["provenance"]
  kind = subprocess.run(["git", "cat-file", "-t", commit.split("+")[0]], cwd=config_lib.REPO_ROOT,
                        capture_output=True, text=True).stdout.strip()
  assert kind == "commit", f"{commit} is not a commit of {config_lib.REPO_ROOT}"
  (test_name,) = results["results"]
  assert results["results"][test_name]["num_images"] == 6
  for name in ("test_metrics.md", "paper_tables.md", "paper_tables.csv"):
    assert os.path.getsize(os.path.join(workdir, "results", name)) > 0
  overlay_dir = os.path.join(workdir, "overlays", test_name.replace(":", "_"))
  assert len([n for n in os.listdir(overlay_dir) if n.endswith("_overlay.png")]) == 3
  assert os.path.exists(os.path.join(workdir, "tensorboard"))


def test_workdir_evaluation_reproduces_the_trainers_test_numbers(trained_workdir):
  workdir, summary, _, _ = trained_workdir
  results = eval_workdir.evaluate_workdir(workdir, num_overlays=0, progress=False)
  for name, values in summary["test"].items():
    for metric in metrics_lib.METRIC_NAMES:
      assert results[name][metric] == pytest.approx(values[metric], abs=1e-6)


def test_predict_on_a_users_folder(trained_workdir, tmp_path, synthetic_root):
  workdir, _, _, _ = trained_workdir
  images_dir = os.path.join(synthetic_root, "synthetic_polyps", "images")
  inputs = tmp_path / "in"
  inputs.mkdir()
  names = sorted(os.listdir(images_dir))[:3]
  for n in names:
    shutil.copy(os.path.join(images_dir, n), inputs / n)
  # Another format and size, a truncated JPEG, and a file that is not an image at all.
  Image.open(os.path.join(images_dir, names[0])).convert("RGB").resize((97, 61)).save(
      inputs / "odd_size.jpg")
  (inputs / "broken.jpg").write_bytes((inputs / "odd_size.jpg").read_bytes()[:200])
  (inputs / "notes.txt").write_text("not an image")
  out = tmp_path / "out"
  result = predict.run(workdir, [str(inputs)], str(out), tta=True, batch_size=2)
  assert result["predicted"] == 4
  # Every file is tried: the truncated JPEG and the text file are both listed, with their reasons.
  skipped = {os.path.basename(p): reason for p, reason in result["skipped"]}
  assert sorted(skipped) == ["broken.jpg", "notes.txt"]
  assert "broken.jpg" in skipped["broken.jpg"]
  # PIL cannot identify a JPEG cut after 200 bytes, so it counts as not an image, like the text file.
  assert result["skip_reasons"] == {"not an image": 2}
  for stem in [os.path.splitext(n)[0] for n in names] + ["odd_size"]:
    src = next(p for p in inputs.iterdir() if p.stem == stem)
    mask = np.asarray(Image.open(out / "masks" / f"{stem}.png"))
    assert mask.shape == np.asarray(Image.open(src)).shape[:2]
    assert set(np.unique(mask)) <= {0, 255}
    assert (out / "probabilities" / f"{stem}.png").exists()
    assert (out / "overlays" / f"{stem}_overlay.png").exists()
  page = (out / "index.html").read_text()
  assert page.count("<figure>") == 4 and "predicted area" in page


def test_checkpoint_selection_never_reads_a_test_split(trained_workdir):
  _, summary, config, events = trained_workdir
  val_names, test_names = set(config.data.val), set(config.data.test)
  scored_saves = [e for e in events if e[0] == "save" and e[2] is not None]
  assert len(scored_saves) == 3
  last_save = max(i for i, e in enumerate(events) if e[0] == "save")
  for i, event in enumerate(events):
    if event[0] != "eval":
      continue
    if set(event[1]) & test_names:
      assert i > last_save, "a test set was scored while checkpoints were still being chosen"
    else:
      assert set(event[1]) <= val_names
  # Each scored checkpoint carries the validation score of the evaluation just before it.
  for i, event in enumerate(events):
    if event[0] == "save" and event[2] is not None:
      assert events[i - 1] == ("eval", tuple(config.data.val))
  best = max(scored_saves, key=lambda e: e[2]["mDSC"])
  assert summary["best_step"] == best[1]


def test_predict_outputs_made_in_bands_equal_the_whole_image_computation(trained_workdir, tmp_path,
                                                                         synthetic_root, monkeypatch):
  """Bands of a few rows (the contour crosses them) and images decoded again for writing give the
  pixels of the whole-image formulas: sigmoid of the resized logits, its 8-bit rounding, the overlay."""
  workdir = trained_workdir[0]
  images_dir = os.path.join(synthetic_root, "synthetic_polyps", "images")
  inputs = tmp_path / "in"
  inputs.mkdir()
  for i, n in enumerate(sorted(os.listdir(images_dir))[:2]):  # one enlarged: a 2-pixel contour
    image = Image.open(os.path.join(images_dir, n)).convert("RGB")
    (image.resize((650, 431), Image.BILINEAR) if i else image).save(inputs / f"{i}.png")
  paths = sorted(str(p) for p in inputs.iterdir())
  images = [data.load_image(p) for p in paths]
  trained = load.load_trained(workdir, tta=True)
  probs, _ = segment.predict_probabilities(trained, images)  # predict's batch
  threshold = float(np.median(probs[1]))  # a tiny model's map may not cross 0.5: cut it in two
  monkeypatch.setattr(predict, "BAND_PIXELS", 5000)  # 7 rows of 650 pixels per band
  monkeypatch.setattr(predict, "HOLD_PIXELS", 0)  # the second image decoded again for its outputs
  out = tmp_path / "out"
  result = predict.run(workdir, [str(inputs)], str(out), tta=True, threshold=threshold)
  assert result["predicted"] == 2
  read = lambda p: np.asarray(Image.open(p))
  for path, image, prob in zip(paths, images, probs):
    stem = os.path.splitext(os.path.basename(path))[0]
    np.testing.assert_array_equal(read(out / "masks" / f"{stem}.png"),
                                  ((prob >= threshold) * 255).astype(np.uint8))
    np.testing.assert_array_equal(read(out / "probabilities" / f"{stem}.png"),
                                  np.round(prob * 255).astype(np.uint8))
    np.testing.assert_array_equal(read(out / "overlays" / f"{stem}_overlay.png"),
                                  overlays.overlay(image, prob, None, threshold))
  assert overlays.contour(probs[1] >= threshold, 2).any()  # the contour crosses bands
  page = (out / "index.html").read_text()
  for prob in probs:
    assert f"predicted area {100 * float((prob >= threshold).mean()):.1f}%" in page
