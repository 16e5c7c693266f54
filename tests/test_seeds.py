"""Several seeds of a config: each trains in its own workdir, and the summary is mean ± sample std."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from bsa_jax import cli
from bsa_jax import config_lib
from bsa_jax.tools import seeds


def test_aggregate_is_mean_and_sample_std():
  per_seed = [{"a:test": {"mDSC": 0.5, "MAE": 0.1, "num_images": 3}},
              {"a:test": {"mDSC": 0.7, "MAE": 0.3, "num_images": 3}},
              {"a:test": {"mDSC": 0.9, "MAE": 0.2, "num_images": 3}}]
  stats = seeds.aggregate(per_seed)
  assert stats["a:test"]["mDSC"]["mean"] == pytest.approx(0.7)
  assert stats["a:test"]["mDSC"]["std"] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1))
  assert stats["a:test"]["MAE"]["n"] == 3 and "num_images" not in stats["a:test"]


@pytest.mark.slow  # two full launch.py runs (~1 min)
def test_launch_with_two_seeds_writes_a_summary(tmp_path, synthetic_root):
  workdir = tmp_path / "seeds"
  cmd = [sys.executable, "launch.py", f"--workdir={workdir}", "--seeds=0,1",
         "--config=configs/demo.py", "--config.model_name=unet", "--config.data.image_size=32",
         "--config.train.num_steps=2", "--config.data.val=()", "--config.data.max_eval_examples=4",
         "--config.eval.num_overlays=0", "--config.train.progress_bar=False"]
  env = dict(os.environ, BSA_CACHE_DIR=synthetic_root, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  proc = subprocess.run(cmd, cwd=config_lib.REPO_ROOT, env=env, capture_output=True, text=True,
                        timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((workdir / "seeds_summary.json").read_text())
  assert summary["seeds"] == [0, 1]
  per_seed = [json.loads((workdir / f"seed_{s}" / "results" / "test_metrics.json").read_text())
              for s in (0, 1)]
  assert per_seed[0]["results"] != per_seed[1]["results"]  # different seeds, different models
  (name,) = summary["stats"]
  values = [p["results"][name]["mDSC"] for p in per_seed]
  assert summary["stats"][name]["mDSC"]["mean"] == pytest.approx(np.mean(values))
  assert summary["stats"][name]["mDSC"]["std"] == pytest.approx(np.std(values, ddof=1))
  assert "±" in (workdir / "seeds_summary.md").read_text()


def _finished_seed(workdir, seed, mdsc, *, lr=1e-3, data="abc"):
  """A seed folder as a finished run leaves it: config.json and results/test_metrics.json."""
  seed_dir = workdir / f"seed_{seed}"
  (seed_dir / "results").mkdir(parents=True)
  (seed_dir / "config.json").write_text(json.dumps({"seed": seed, "train": {"lr": lr}}))
  (seed_dir / "results" / "test_metrics.json").write_text(json.dumps({
      "results": {"kvasir_seg:pranet_test": {"mDSC": mdsc, "mIoU": mdsc - 0.1, "num_images": 100}},
      "provenance": {"commit": f"c{seed}", "datasets_sha256": {"kvasir_seg": data}}}))


def test_summary_only_aggregates_seeds_that_finished_separately(tmp_path):
  for seed, mdsc in ((0, 0.70), (1, 0.74), (2, 0.75)):
    _finished_seed(tmp_path, seed, mdsc)
  paths = seeds.summarize(str(tmp_path), [0, 1, 2])
  summary = json.loads((tmp_path / "seeds_summary.json").read_text())
  stats = summary["stats"]["kvasir_seg:pranet_test"]
  assert stats["mDSC"]["mean"] == pytest.approx(0.73)
  assert stats["mDSC"]["std"] == pytest.approx(np.std([0.70, 0.74, 0.75], ddof=1))
  assert stats["mIoU"]["n"] == 3
  assert [p["commit"] for p in summary["provenance"]] == ["c0", "c1", "c2"]
  assert "0.730 ± 0.026" in (tmp_path / "seeds_summary.md").read_text()
  assert sorted(os.path.basename(p) for p in paths) == [f"seeds_summary.{e}" for e in ("csv", "json", "md")]


@pytest.mark.parametrize("second, message", [
    (dict(lr=2e-3), "differs from seed 0's in more than the seed (top-level keys ['train'])"),
    (dict(data="xyz"), "tested on other data"),
])
def test_summary_only_refuses_seeds_of_different_recipes(tmp_path, second, message):
  _finished_seed(tmp_path, 0, 0.7)
  _finished_seed(tmp_path, 1, 0.8, **second)
  with pytest.raises(cli.UserError, match=re.escape(message)):
    seeds.summarize(str(tmp_path), [0, 1])
  assert not (tmp_path / "seeds_summary.json").exists()


def test_summary_only_names_a_missing_seed_and_what_to_do(tmp_path):
  _finished_seed(tmp_path, 0, 0.7)
  with pytest.raises(cli.UserError, match=r"seed_1/results/test_metrics.json is not there; train seed 1"):
    seeds.summarize(str(tmp_path), [0, 1])
  (tmp_path / "seed_0" / "config.json").write_text(json.dumps({"seed": 5}))
  with pytest.raises(cli.UserError, match="trained with seed 5, not 0"):
    seeds.summarize(str(tmp_path), [0])


def test_summary_only_command(tmp_path):
  """`python -m bsa_jax.seeds --summary_only` needs no --config and trains nothing."""
  for seed, mdsc in ((0, 0.70), (1, 0.74)):
    _finished_seed(tmp_path, seed, mdsc)
  proc = subprocess.run([sys.executable, "-m", "bsa_jax.seeds", f"--workdir={tmp_path}", "--seeds=0,1",
                         "--summary_only"], cwd=config_lib.REPO_ROOT, capture_output=True, text=True,
                        env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=""), timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "0.720 ± 0.028" in (tmp_path / "seeds_summary.md").read_text()
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      "seed_0", "seed_1", "seeds_summary.csv", "seeds_summary.json", "seeds_summary.md"]
