"""Several seeds of a config: each trains in its own workdir, and the summary is mean ± sample std."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

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
