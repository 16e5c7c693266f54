"""Training-curve reading and plotting: resumed runs keep the later record of a replayed step."""

import json
import os

import numpy as np
from PIL import Image

from bsa_jax.workdir import metric_writer
from bsa_jax.eval import curves


def _write_jsonl(path, records):
  with open(path, "w") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")


def test_a_replayed_step_keeps_the_later_record(tmp_path):
  _write_jsonl(tmp_path / "metrics.jsonl", [
      {"step": 10, "loss": 3.0, "epoch": 0.5},
      {"step": 20, "loss": 2.0, "epoch": 1.0},
      {"step": 20, "val/mDSC": 0.4},
      {"step": 30, "loss": 1.5, "epoch": 1.5},   # killed here; resumed from the step-20 checkpoint
      {"step": 30, "loss": 1.25, "epoch": 1.5},  # the replayed step
      {"step": 40, "loss": 1.0, "epoch": 2.0, "val/mDSC": "nan"},
  ])
  c = curves.load_curves(str(tmp_path / "metrics.jsonl"))
  np.testing.assert_array_equal(c["loss"][0], [10, 20, 30, 40])
  np.testing.assert_array_equal(c["loss"][1], [3.0, 2.0, 1.25, 1.0])
  np.testing.assert_array_equal(c["val/mDSC"][0], [20])  # non-numbers ("nan" strings) are skipped
  assert curves.steps_per_epoch(c) == 20.0


def test_plot_writes_a_drawn_png(tmp_path):
  records = [{"step": s, "loss": 5.0 / s, "loss_main": 1.0 / s, "learning_rate": 1e-3 * (1 - s / 100),
              "epoch": s / 10} for s in range(5, 100, 5)]
  records += [{"step": s, "val/mDSC": 0.5 + s / 400, "val/mIoU": 0.4 + s / 400}
              for s in range(20, 100, 20)]
  _write_jsonl(tmp_path / "metrics.jsonl", records)
  path = curves.plot_training_curves(str(tmp_path))
  assert path == os.path.join(str(tmp_path), "training_curves.png")
  pixels = np.asarray(Image.open(path).convert("L"), np.float32)
  assert pixels.shape == (420, 1500)
  assert pixels.std() > 10  # lines and text, not a blank canvas


def test_a_line_torn_by_a_kill_is_skipped_and_the_resumed_run_starts_a_new_line(tmp_path, caplog):
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo')
  writer = metric_writer.MetricWriter(str(tmp_path))  # the resumed run
  writer.write(2, {"loss": 0.5})
  writer.close()
  c = curves.load_curves(str(tmp_path / "metrics.jsonl"))
  np.testing.assert_array_equal(c["loss"][0], [1, 2])
  np.testing.assert_array_equal(c["loss"][1], [1.0, 0.5])
  assert "metrics.jsonl:2 is not JSON" in caplog.text
