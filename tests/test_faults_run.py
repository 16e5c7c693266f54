"""Faults of issue #14 around a finished run: nothing lost, nothing silently rewritten.

- predict: every readable input gets its own outputs whatever the names; other files are listed.
- launch on a finished workdir with another model/data config: refused, files byte-identical.
- a truncated file in the latest checkpoint: evaluation and resume use the previous intact step
  and move the damaged one aside (never deleted).
"""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from bsa_jax import config_lib
from bsa_jax import train
from bsa_jax.tools import predict
from bsa_jax.workdir import checkpoint as ckpt_lib
from bsa_jax.workdir import identity
from bsa_jax.workdir import load
from tests.helpers import digest_tree

# Reading a truncated checkpoint, Orbax abandons the other shards' read coroutines when one fails; they
# raise when garbage-collected, after the test has asserted the error (one pytest warning each, ~1,700
# log lines). Closing our checkpointer does not stop them: they are Orbax's own.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _config(synthetic_root):
  config = config_lib.load_config(os.path.join(config_lib.REPO_ROOT, "configs/demo.py"))
  config.model_name = "unet"
  config.data.root = synthetic_root
  config.data.image_size = 32
  config.data.max_eval_examples = 4
  config.train.num_steps = 6
  config.train.eval_every_epochs = 0.1  # validation (and a checkpoint) every 2 steps
  config.train.log_every_steps = 2
  config.train.keep_checkpoints = 5
  config.train.progress_bar = False
  config.eval.num_overlays = 2
  return config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, synthetic_root):
  """A finished 6-step run with checkpoints at steps 2, 4 and 6 (validation at each)."""
  workdir = str(tmp_path_factory.mktemp("finished"))
  config = _config(synthetic_root)
  train.main(config, workdir)
  return workdir, config


def _copy(run, tmp_path) -> str:
  dest = str(tmp_path / "run")
  shutil.copytree(run, dest)
  return dest


def _truncate_largest_state_file(workdir: str, step: int) -> str:
  state_dir = os.path.join(workdir, "checkpoints", str(step), "state")
  files = [os.path.join(r, n) for r, _, ns in os.walk(state_dir) for n in ns]
  victim = max(files, key=os.path.getsize)
  with open(victim, "r+b") as f:
    f.truncate(os.path.getsize(victim) // 3)
  return victim


# ------------------------------------------------------------------ predict: names never collide


def test_output_names_are_distinct_and_keep_unique_stems():
  paths = ["in/a.jpg", "in/a.png", "in/a_2.png", "in/a_png.png", "other/a.jpg", "in/b.png",
           "in/B.PNG"]
  names = predict.output_names(paths)
  assert len({n.lower() for n in names.values()}) == len(paths)
  assert names["in/a_2.png"] == "a_2" and names["in/a_png.png"] == "a_png"  # unique stems kept
  assert names["in/a.jpg"] == "a_jpg" and names["in/a.png"] == "a_png_2"  # a_png is taken
  assert names["other/a.jpg"] == "a_jpg_2"
  assert predict.output_names(paths) == names  # stable


def test_predict_writes_one_output_per_readable_image_whatever_the_names(finished_run, tmp_path,
                                                                        synthetic_root):
  workdir, _ = finished_run
  source = os.path.join(synthetic_root, "synthetic_polyps", "images")
  sources = sorted(os.listdir(source))[:6]
  folder = tmp_path / "mine"
  folder.mkdir()
  # Six different images: three share the stem 'a', one has '#' in its name, two formats the
  # old extension list skipped (.webp, .gif).
  for src, name in zip(sources, ["a.jpg", "a.png", "a_2.png", "x#1.png", "b.webp", "c.gif"]):
    Image.open(os.path.join(source, src)).convert("RGB").save(folder / name)
  (folder / "notes.txt").write_text("not an image")
  (folder / "sub").mkdir()
  out = tmp_path / "out"
  result = predict.run(workdir, [str(folder)], str(out))
  assert result["predicted"] == 6
  masks = sorted(os.listdir(out / "masks"))
  assert len(masks) == 6 and len(os.listdir(out / "probabilities")) == 6
  assert len(os.listdir(out / "overlays")) == 6
  assert {os.path.basename(p) for p, _ in result["skipped"]} == {"notes.txt", "sub"}
  assert result["skip_reasons"] == {"not an image": 1, "not searched": 1}
  # Each mask is the prediction of its own image: a.png's mask equals a prediction made on a.png
  # alone, so nothing was overwritten by a later input. (A batch of 1 and a batch of 6 round float32
  # differently in XLA's convolutions: a probability may move by one grey level; another image's
  # prediction would differ everywhere.)
  alone = predict.run(workdir, [str(folder / "a.png")], str(tmp_path / "alone"))
  assert alone["predicted"] == 1
  together = np.asarray(Image.open(out / "probabilities" / f"{result['names'][str(folder / 'a.png')]}.png"))
  by_itself = np.asarray(Image.open(tmp_path / "alone" / "probabilities" / "a.png"))
  difference = np.abs(together.astype(int) - by_itself)
  assert difference.max() <= 1 and np.mean(difference > 0) < 1e-3, (difference.max(), np.mean(difference > 0))
  page = (out / "index.html").read_text()
  assert "x%231_overlay.png" in page and 'src="x#1' not in page


def test_predict_command_takes_several_inputs_after_one_flag(finished_run, tmp_path, synthetic_root,
                                                             run_command):
  workdir, _ = finished_run
  source = os.path.join(synthetic_root, "synthetic_polyps", "images")
  first, second = sorted(os.listdir(source))[:2]
  status, out, err = run_command("bsa_jax.predict", f"--workdir={workdir}", "--input",
                                 os.path.join(source, first), os.path.join(source, second),
                                 f"--output={tmp_path / 'out'}")
  assert status == 0, err
  assert "2 image(s) segmented" in out
  assert len(os.listdir(tmp_path / "out" / "masks")) == 2


# ------------------------------------------------------------------ a run's identity is fixed


@pytest.mark.parametrize("key, value", [("data.image_size", 64), ("model_name", "unetpp")])
def test_launch_on_a_finished_run_with_another_config_changes_nothing(finished_run, tmp_path, key,
                                                                      value):
  workdir = _copy(finished_run[0], tmp_path)
  before = digest_tree(workdir)
  config = _config(finished_run[1].data.root)
  with config.unlocked():
    section, _, leaf = key.rpartition(".")
    (config[section] if section else config)[leaf] = value
  with pytest.raises(identity.ConfigChangedError, match=rf"{key}: .* \(stored\) vs .* \(now\)"):
    train.main(config, workdir)
  assert digest_tree(workdir) == before


def test_harmless_keys_may_differ_and_accepted_changes_are_recorded(finished_run, tmp_path):
  workdir = _copy(finished_run[0], tmp_path)
  config = _config(finished_run[1].data.root)
  config.eval.num_overlays, config.train.log_every_steps, config.eval.batch_size = 7, 3, 5
  assert identity.check(workdir, config) == {}  # logging/eval batch/overlays: the same run
  config.train.lr = 0.5
  with pytest.raises(identity.ConfigChangedError, match="train.lr"):
    identity.check(workdir, config)
  changed = identity.check(workdir, config, allow_change=True)
  assert list(changed) == ["train.lr"]
  stored_before = identity.read_stored(workdir)
  identity.store(workdir, config, changed, step=6)
  with open(os.path.join(workdir, identity.HISTORY_FILE)) as f:
    history = [json.loads(line) for line in f]
  assert history[0]["changes"] == {"train.lr": {"stored": stored_before["train"]["lr"], "now": 0.5}}
  assert history[0]["previous"] == stored_before
  assert identity.read_stored(workdir)["train"]["lr"] == 0.5


# ------------------------------------------------------------------ damaged checkpoints degrade


def test_evaluation_uses_the_previous_intact_step_when_the_latest_is_truncated(finished_run,
                                                                            tmp_path, run_command):
  workdir = _copy(finished_run[0], tmp_path)
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
  assert steps == [2, 4, 6]
  _truncate_largest_state_file(workdir, 6)
  status, out, err = run_command("bsa_jax.eval.workdir", f"--workdir={workdir}", "--step=latest")
  assert status == 0, err
  damaged = os.path.join(workdir, ckpt_lib.DAMAGED_DIR)
  assert os.listdir(damaged) == ["6"]  # moved aside, not deleted
  assert sorted(d for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()) == ["2", "4"]
  trained = load.load_trained(workdir, "latest")
  assert trained.step == 4


def test_no_intact_step_says_what_to_do(finished_run, tmp_path):
  workdir = _copy(finished_run[0], tmp_path)
  for step in (2, 4, 6):
    _truncate_largest_state_file(workdir, step)
  with pytest.raises(ckpt_lib.NoIntactCheckpointError, match="No readable checkpoint"):
    load.load_trained(workdir)
  assert sorted(os.listdir(os.path.join(workdir, ckpt_lib.DAMAGED_DIR))) == ["2", "4", "6"]


def test_resume_falls_back_to_the_previous_intact_step(finished_run, tmp_path):
  workdir = _copy(finished_run[0], tmp_path)
  _truncate_largest_state_file(workdir, 6)
  config = _config(finished_run[1].data.root)
  summary = train.main(config, workdir)  # resumes at step 4, trains 5 and 6 again
  assert summary["step"] == 6
  assert os.listdir(os.path.join(workdir, ckpt_lib.DAMAGED_DIR)) == ["6"]
  assert 6 in [int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit()]


# ------------------------------------------------------------------ config.resume


def _params_of_step(workdir: str, step: int):
  import orbax.checkpoint as ocp
  return ocp.StandardCheckpointer().restore(
      os.path.join(workdir, "checkpoints", str(step), "state"))["params"]


def test_config_resume_starts_from_the_other_runs_best_validation_step(finished_run, tmp_path):
  """`--config.resume=<run>/checkpoints` loads that run's best step on validation (else its
  latest); a step directory loads that step."""
  import jax
  from bsa_jax import models
  from bsa_jax.train import optim
  from bsa_jax.train import step as step_lib
  config = finished_run[1]
  source = _copy(finished_run[0], tmp_path)
  # Make the oldest step the best on validation, so "best" and "latest" differ.
  with open(os.path.join(source, "checkpoints", "2", "metrics", "metrics"), "w") as f:
    json.dump({"mDSC": 0.99}, f)
  checkpointer = ckpt_lib.Checkpointer(os.path.join(source, "checkpoints"), keep=10,
                                       select_metric="mDSC")
  best = checkpointer.best_step()
  checkpointer.close()
  assert best == 2
  model = models.build_model(config)
  tx, _ = optim.make_optimizer(config.train, 6)
  abstract = jax.eval_shape(lambda: step_lib.init_state(model, tx, jax.random.key(0), 32))
  state, step = ckpt_lib.restore_state_only(os.path.join(source, "checkpoints"), abstract)
  assert step == best
  jax.tree.map(np.testing.assert_array_equal, state["params"], _params_of_step(source, best))
  other = next(s for s in (2, 4, 6) if s != best)
  state, step = ckpt_lib.restore_state_only(os.path.join(source, "checkpoints", str(other)), abstract)
  assert step == other
  jax.tree.map(np.testing.assert_array_equal, state["params"], _params_of_step(source, other))
