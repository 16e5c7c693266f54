"""The comparison command: every model trains in its own launch.py run, the table holds each run's own
numbers and provenance, a failed run is a marked row, and a rerun only re-reads finished runs."""

import csv
import json
import os
import time

import numpy as np
import pytest

from bsa_jax.tools import compare
from conftest import run_in_process

MODELS = ("unet", "unetpp")
TINY_PARAMS = {"unet": 486_603, "unetpp": 138_827}  # tests/test_baselines.py GOLDEN, 'tiny'


def _synthetic_overrides(root):
  """The small configs on the synthetic polyps: 32 px, 2 steps, 4 images per evaluation."""
  return [f"--config.data.root={root}",
          '--config.data.train=("synthetic_polyps:paper712_train",)',
          '--config.data.val=("synthetic_polyps:paper712_val",)',
          '--config.data.test=("synthetic_polyps:paper712_test",)',
          "--config.data.image_size=32", "--config.train.num_steps=2",
          "--config.data.max_eval_examples=4", "--config.eval.num_overlays=0"]


def _files(directory):
  """{path: mtime} of every file below `directory`."""
  return {os.path.join(d, f): os.path.getmtime(os.path.join(d, f))
          for d, _, names in os.walk(directory) for f in names}


def _compare(*argv) -> int:
  """`python -m bsa_jax.compare ARGV` in this process; its exit status."""
  return run_in_process("bsa_jax.compare", *argv)


@pytest.fixture(scope="module")
def compared(tmp_path_factory, synthetic_root):
  """Runs the comparison of two tiny models once, then once more; returns (workdir, argv, rerun s)."""
  workdir = str(tmp_path_factory.mktemp("compare"))
  argv = [f"--workdir={workdir}", "--budget=small", f"--models={','.join(MODELS)}",
          *_synthetic_overrides(synthetic_root)]
  with pytest.MonkeyPatch.context() as patch:
    # One device per launch.py run (not conftest's eight), and cheap XLA compiles: most of a 2-step
    # run is compilation, and the table must hold the runs' own numbers however they were compiled.
    patch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0 "
                 "--xla_llvm_disable_expensive_passes=true")
    patch.setenv("JAX_PLATFORMS", "cpu")
    assert _compare(*argv) == 0
    before = {m: _files(os.path.join(workdir, m)) for m in MODELS}
    start = time.perf_counter()
    assert _compare(*argv) == 0
    rerun_seconds = time.perf_counter() - start
  after = {m: _files(os.path.join(workdir, m)) for m in MODELS}
  return workdir, before, after, rerun_seconds


def _saved(workdir, model):
  with open(os.path.join(workdir, model, "results", "test_metrics.json")) as f:
    return json.load(f)


@pytest.mark.slow  # six launch.py runs (~40 s)
def test_every_row_holds_its_runs_own_numbers(compared):
  workdir, *_ = compared
  with open(os.path.join(workdir, "comparison.json")) as f:
    table = json.load(f)
  with open(os.path.join(workdir, "comparison.csv")) as f:
    csv_rows = list(csv.DictReader(f))
  markdown = open(os.path.join(workdir, "comparison.md")).read()
  assert [r["model"] for r in table["rows"]] == list(MODELS) == [r["model"] for r in csv_rows]
  assert "Smoke budget" in table["title"] and "32 px, 2 steps" in table["title"]
  for row, csv_row in zip(table["rows"], csv_rows, strict=True):
    saved = _saved(workdir, row["model"])
    assert row["status"] == "ok" and set(row["stats"]) == set(saved["results"])
    for set_name, metrics in saved["results"].items():
      for metric in compare.COLUMNS:
        assert row["stats"][set_name][metric]["mean"] == metrics[metric]
        assert float(csv_row[f"{set_name}/{metric}"]) == pytest.approx(metrics[metric], rel=1e-12)
        assert f"{metrics[metric]:.3f}" in markdown
    with open(os.path.join(workdir, row["model"], "summary.json")) as f:
      assert row["num_params"] == json.load(f)["num_params"] == TINY_PARAMS[row["model"]]
    assert int(csv_row["num_params"]) == TINY_PARAMS[row["model"]]
    assert float(csv_row["train_seconds"]) > 0


@pytest.mark.slow  # six launch.py runs (~40 s)
def test_every_row_carries_its_runs_provenance(compared):
  workdir, *_ = compared
  with open(os.path.join(workdir, "comparison.json")) as f:
    rows = json.load(f)["rows"]
  with open(os.path.join(workdir, "comparison.csv")) as f:
    csv_rows = list(csv.DictReader(f))
  markdown = open(os.path.join(workdir, "comparison.md")).read()
  for number, (row, csv_row) in enumerate(zip(rows, csv_rows, strict=True), 1):
    prov = _saved(workdir, row["model"])["provenance"]
    assert row["runs"][0]["provenance"] == prov
    for key in ("commit", "config_hash", "datasets_sha256", "checkpoint_step", "selection"):
      assert csv_row[key] == str(prov[key]), key
    assert prov["selection"] == "best validation mDSC"
    assert csv_row["config"] == f"configs/kvasir_{row['model']}.py:small"
    assert "--config.train.num_steps=2" in csv_row["overrides"] and csv_row["metric_convention"]
    footnote = next(line for line in markdown.splitlines() if line.startswith(f"[^{number}]:"))
    assert prov["commit"][:12] in footnote and prov["config_hash"] in footnote
    assert f"checkpoint step {prov['checkpoint_step']} (best validation mDSC)" in footnote
    assert "synthetic_polyps:" + prov["datasets_sha256"].split(":")[1][:8] in footnote


@pytest.mark.slow  # six launch.py runs (~40 s)
def test_a_rerun_only_rereads_finished_runs(compared):
  _, before, after, rerun_seconds = compared
  assert before == after  # no checkpoint, result or log file was touched
  assert any("/checkpoints/" in p for p in before["unet"])
  assert rerun_seconds < 15, rerun_seconds


def _fake_launch(calls):
  """Stands in for launch.py: 'bsanet' writes a finished run per seed, any other model crashes."""
  def launch(model, argv, log_path):
    calls.append((model, argv))
    with open(log_path, "a") as log:
      log.write("Traceback (most recent call last):\nRuntimeError: boom\n")
    if model != "bsanet":
      return 1
    workdir = next(a.split("=", 1)[1] for a in argv if a.startswith("--workdir="))
    for seed in (0, 1):
      run_dir = os.path.join(workdir, f"seed_{seed}")
      os.makedirs(os.path.join(run_dir, "results"))
      results = {"kvasir_seg:pranet_test": {c: 0.5 + 0.1 * seed for c in compare.COLUMNS},
                 "cvc_colondb:all": {c: 0.3 + 0.2 * seed for c in compare.COLUMNS}}
      for r in results.values():
        r["num_images"] = 100
      provenance = {"commit": "a" * 40, "config_hash": f"hash{seed}", "checkpoint_step": 10 + seed,
                    "datasets_sha256": "kvasir_seg:" + "b" * 64, "model": "bsanet",
                    "selection": "best validation mDSC"}
      files = {"results/test_metrics.json": {"results": results, "provenance": provenance},
               "summary.json": {"num_params": 1234, "step": 20},
               "config.json": {"data": {"image_size": 112}, "model_init": "", "resume": "",
                               "train": {"batch_size": 4, "num_epochs": 3.0, "num_steps": -1},
                               "model": {"variant": "paper"}}}
      for name, value in files.items():
        with open(os.path.join(run_dir, name), "w") as f:
          json.dump(value, f)
      with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:  # 10 steps at 4, 10 at 8 img/s
        f.write('{"step": 10, "images_per_sec": 4.0}\n{"step": 20, "images_per_sec": 8.0}\n')
    return 0
  return launch


def test_a_failed_run_is_a_marked_row_and_seeds_give_mean_and_std(tmp_path, monkeypatch, capsys):
  calls = []
  monkeypatch.setattr(compare, "launch", _fake_launch(calls))
  argv = [f"--workdir={tmp_path}", "--budget=cpu", "--models=bsanet,pranet", "--seeds=0,1",
          "--pranet.config.train.lr=1e-4"]
  assert _compare(*argv) == 1
  (_, bsanet_argv), (_, pranet_argv) = calls
  assert "--seeds=0,1" in bsanet_argv and "--config.train.num_epochs=3" in bsanet_argv
  assert any(a.endswith("configs/kvasir_pranet.py:cpu") for a in pranet_argv)
  assert "--config.train.lr=1e-4" in pranet_argv and "--config.train.lr=1e-4" not in bsanet_argv
  with open(tmp_path / "comparison.json") as f:
    table = json.load(f)
  bsanet, pranet = table["rows"]
  assert bsanet["status"] == "ok" and pranet["status"] == "failed"
  assert bsanet["stats"]["kvasir_seg:pranet_test"]["mDSC"]["mean"] == pytest.approx(0.55)
  assert bsanet["stats"]["cvc_colondb:all"]["MAE"]["std"] == pytest.approx(np.std([0.3, 0.5], ddof=1))
  assert bsanet["train_seconds"]["mean"] == pytest.approx(10 * 4 / 4.0 + 10 * 4 / 8.0)
  log = str(tmp_path / "pranet" / "compare.log")
  assert "pranet failed" in pranet["error"] and log in pranet["error"]
  assert str(tmp_path / "pranet") in pranet["error"]
  markdown = (tmp_path / "comparison.md").read_text()
  assert table["title"].startswith("CPU budget: 112 px, 3 epochs, batch 4, from scratch")
  assert "| BSA-Net[^1] | 0.00 M |" in markdown and "0.550 ± 0.071" in markdown
  assert "| PraNet[^2] | failed |" in markdown and "**FAILED**" in markdown
  assert "Kvasir-100 mDSC" in markdown and "ColonDB MAE" in markdown
  assert "hash0" in markdown and "hash1" in markdown

  calls.clear()  # the rerun re-reads BSA-Net's finished seeds and only retries PraNet
  assert _compare(*argv) == 1
  assert [model for model, _ in calls] == ["pranet"]

  capsys.readouterr()
  assert _compare(*argv, "--epochs=5") == 2  # other epochs, same workdir
  assert "another request" in capsys.readouterr().err


def test_overrides_go_to_every_model_or_to_one(tmp_path, monkeypatch, run_command):
  argv = ["--config.train.lr=1", "--pranet.config.seed=3"]
  assert [a for a in argv if compare.is_override(a)] == argv
  assert not compare.is_override("--models=unet") and not compare.is_override("--configs=x")
  common, per_model = compare.split_overrides(argv)
  assert common == ["--config.train.lr=1"] and per_model["pranet"] == ["--config.seed=3"]
  assert compare.check_models(["unet", " pranet"]) == ["unet", "pranet"]

  requests = []  # the command hands absl's flags and the withheld overrides to the library
  monkeypatch.setattr(compare, "run", lambda workdir, **kw: requests.append((workdir, kw)) or 0)
  code, _, err = run_command("bsa_jax.compare", f"--workdir={tmp_path}", "--models=unet,pranet", *argv)
  assert code == 0, err
  (workdir, kw), = requests
  assert workdir == str(tmp_path) and kw["models"] == ["unet", "pranet"] and kw["seeds"] == [0]
  assert kw["common"] == common and kw["per_model"]["pranet"] == ["--config.seed=3"]
  code, _, err = run_command("bsa_jax.compare", "--workdir=w", "--nomodel.config.seed=3")
  assert code == 2 and "unexpected argument '--nomodel.config.seed=3'" in err


def _fake_budget_launch(calls):
  """Stands in for launch.py under a budget: a calibration run logs 1 (compiling), 8, 4 and 8 img/s
  at batch 4 (median 0.5 s/step after compilation); a training run writes a finished run."""
  finished = _fake_launch([])

  def launch(model, argv, log_path):
    calls.append((model, argv))
    workdir = next(a.split("=", 1)[1] for a in argv if a.startswith("--workdir="))
    if os.path.basename(workdir) != "calibration":
      return finished("bsanet", argv, log_path)  # seeds 0 and 1
    os.makedirs(workdir)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump({"train": {"batch_size": 4}}, f)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
      f.writelines(json.dumps({"step": 4 * i, "images_per_sec": r}) + "\n"
                   for i, r in enumerate((1.0, 8.0, 4.0, 8.0), 1))
    return 0
  return launch


def test_a_wall_clock_budget_fixes_each_models_steps_once(tmp_path, monkeypatch, capsys):
  calls = []
  monkeypatch.setattr(compare, "launch", _fake_budget_launch(calls))
  argv = [f"--workdir={tmp_path}", "--budget=cpu", "--models=unet", "--seeds=0,1", "--minutes=2"]
  assert _compare(*argv) == 0
  (_, calibration_argv), (_, train_argv) = calls
  assert "--config.train.num_steps=24" in calibration_argv and "--config.data.test=()" in calibration_argv
  assert "--config.seed=0" in calibration_argv and "--seeds=0,1" in train_argv  # one calibration
  assert not (tmp_path / "unet" / "calibration").exists()  # scratch, deleted once measured
  with open(tmp_path / "unet" / "calibration.json") as f:
    calibration = json.load(f)
  assert calibration["seconds_per_step"] == 0.5 and calibration["steps"] == 240  # 120 s / 0.5 s
  assert train_argv[-1] == "--config.train.num_steps=240"
  assert not any(a.startswith("--config.train.num_epochs") for a in train_argv)
  table = json.loads((tmp_path / "comparison.json").read_text())
  assert table["train_minutes"] == 2 and "2 min of training per model" in table["title"]
  assert "| 20 (0.50 s/step) |" in (tmp_path / "comparison.md").read_text()

  calls.clear()  # a rerun reuses the calibration (and re-reads the finished run)
  assert _compare(*argv) == 0
  assert calls == []
  capsys.readouterr()
  assert _compare(*argv, "--epochs=3") == 2  # the budget fixes the steps: no epochs with it
  assert "--minutes fixes each model's steps" in capsys.readouterr().err
  assert _compare(*argv[:-1], "--minutes=3") == 2  # another budget, same workdir
  assert "train_minutes: 2.0 -> 3.0" in capsys.readouterr().err
