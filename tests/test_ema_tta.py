"""The moving average of the weights and flip test-time augmentation: what evaluation scores.

- `train.ema_decay` keeps an average that follows its formula exactly, leaves training unchanged,
  and is what `predict_step` (validation, tests) evaluates;
- `eval.tta` averages the logits of flipped inputs, each flipped back, for arrays and dicts alike.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bsa_jax import config_lib
from bsa_jax import models
from bsa_jax import train
from bsa_jax.models import tta
from bsa_jax.train import optim
from bsa_jax.workdir import checkpoint as ckpt_lib
from tests.test_attention import fast_jit


def _config(ema_decay):
  c = config_lib.base_config()
  c.model_name = "unet"
  c.model.variant = "tiny"
  c.model.widths = (8, 16, 32)
  c.data.image_size = 32
  c.train.ema_decay = ema_decay
  return c


def _batch(seed):
  rng = np.random.default_rng(seed)
  mask = (rng.random((4, 32, 32, 1)) > 0.7).astype(np.float32)
  return {"image": jnp.asarray(rng.normal(size=(4, 32, 32, 3)).astype(np.float32) + mask),
          "mask": jnp.asarray(mask)}


def _train(ema_decay, num_steps=3):
  """The states after each step of the tiny U-Net, host copies."""
  config = _config(ema_decay)
  model = models.build_model(config)
  tx, schedule = optim.make_optimizer(config.train, total_steps=10)
  state = train.init_state(model, tx, jax.random.key(0), image_size=32, ema=ema_decay > 0)
  step = fast_jit(functools.partial(train.train_step, model=model, tx=tx, schedule=schedule,
                                    train_config=config.train))
  states = [jax.device_get(state)]
  for i in range(num_steps):
    state, _ = step(state, _batch(i), jax.random.key(1))
    states.append(jax.device_get(state))
  return model, states


def test_the_moving_average_follows_its_formula_and_leaves_training_unchanged():
  _, plain = _train(0.0)
  _, kept = _train(0.9)
  assert "ema" not in plain[-1]
  for a, b in zip(jax.tree.leaves(plain[-1]["params"]), jax.tree.leaves(kept[-1]["params"])):
    np.testing.assert_array_equal(a, b)  # the average never feeds back into training
  expected = kept[0]["ema"]  # the init
  for t in range(3):
    d = min(0.9, (1 + t) / (10 + t))
    live = {"params": kept[t + 1]["params"], "batch_stats": kept[t + 1]["batch_stats"]}
    expected = jax.tree.map(lambda e, x, d=d: d * e + (1 - d) * x, expected, live)
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(kept[-1]["ema"])):
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
  moved = [np.abs(e - p).max() for e, p in zip(jax.tree.leaves(kept[-1]["ema"]["params"]),
                                              jax.tree.leaves(kept[-1]["params"]))]
  assert max(moved) > 1e-4  # the average is not the live weights


def test_evaluation_scores_the_moving_average():
  model, kept = _train(0.9, num_steps=2)
  state = kept[-1]
  image = {"image": _batch(7)["image"]}
  got = fast_jit(functools.partial(train.predict_step, model=model))(state, image)
  want, _ = model.apply(state["ema"], image["image"], train=False)
  live, _ = model.apply({"params": state["params"], "batch_stats": state["batch_stats"]},
                        image["image"], train=False)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(got) - np.asarray(live)).max() > 1e-4
  assert ckpt_lib.eval_variables({k: v for k, v in state.items() if k != "ema"})["params"] is \
      state["params"]


@pytest.mark.parametrize("mode", ["none", "hflip", "flips"])
def test_flip_averaging_unflips_each_prediction(mode):
  rng = np.random.default_rng(0)
  weights = jnp.asarray(rng.normal(size=(1, 6, 5, 2)).astype(np.float32))  # not flip-symmetric
  image = jnp.asarray(rng.normal(size=(2, 6, 5, 2)).astype(np.float32))

  def apply(inputs):  # position-dependent, so a prediction left flipped would differ
    y = inputs["image"] * weights + inputs["other"]
    return {"logits": y, "coarse": 2 * y}

  inputs = {"image": image, "other": image ** 2}
  got = tta.flip_averaged(apply, inputs, mode)
  flips = {"none": [(), ], "hflip": [(), (2,)], "flips": [(), (2,), (1,), (1, 2)]}[mode]
  want = np.mean([np.flip(apply({k: np.flip(v, axes) for k, v in inputs.items()})["logits"], axes)
                  for axes in flips], axis=0)
  np.testing.assert_allclose(got["logits"], want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(got["coarse"], 2 * want, rtol=1e-6, atol=1e-6)
  if mode != "none":
    assert np.abs(np.asarray(got["logits"]) - np.asarray(apply(inputs)["logits"])).max() > 1e-3


def test_an_unknown_mode_names_the_key_and_the_choices():
  with pytest.raises(ValueError, match=r"eval.tta='rot'.*none, hflip, flips"):
    tta.flip_averaged(lambda x: x["image"], {"image": jnp.zeros((1, 2, 2, 1))}, "rot")


@pytest.mark.slow  # a tiny training run and its re-evaluation (~1 min)
def test_eval_workdir_scores_what_the_trainer_scored_with_average_and_flips(tmp_path, synthetic_root):
  """The trainer's test numbers (its own predict step) equal `eval.workdir`'s (the tools' loader)
  for a run with a moving average and flip TTA: both evaluate the same weights the same way."""
  import json
  from bsa_jax.eval import workdir as eval_workdir
  from conftest import run_in_process
  workdir = str(tmp_path / "run")
  assert run_in_process(
      "launch.py", "--config=configs/kvasir_unet.py:small", f"--workdir={workdir}",
      f"--config.data.root={synthetic_root}",
      '--config.data.train=("synthetic_polyps:paper712_train",)',
      '--config.data.val=("synthetic_polyps:paper712_val",)',
      '--config.data.test=("synthetic_polyps:paper712_test",)', "--config.data.image_size=32",
      "--config.train.num_steps=4", "--config.data.max_eval_examples=8",
      "--config.eval.num_overlays=0", "--config.train.progress_bar=False",
      "--config.train.ema_decay=0.9", "--config.eval.tta=flips") == 0
  with open(f"{workdir}/results/test_metrics.json") as f:
    saved = json.load(f)
  assert saved["provenance"]["tta"].startswith("flips") and "0.9" in saved["provenance"]["weights"]
  again = eval_workdir.evaluate_workdir(workdir, num_overlays=0, progress=False)
  (name, want), = saved["results"].items()
  for key, value in want.items():
    assert again[name][key] == pytest.approx(value, abs=1e-6), key


def test_eval_workdir_screens_other_settings_on_validation_only(tiny_run, tmp_path, capsys):
  """`--tta` / `--weights` score a finished run another way: validation only, nothing of the run
  rewritten, overlays in their own folder; a run without an average refuses `--weights=ema`, and
  its raw weights score what the trainer logged for that step."""
  import os
  import shutil
  from bsa_jax import cli
  from bsa_jax.eval import workdir as eval_workdir
  from bsa_jax.workdir import metric_writer
  from tests.helpers import digest_tree
  workdir = str(tmp_path / "run")
  shutil.copytree(tiny_run, workdir)
  before = digest_tree(workdir)
  with pytest.raises(cli.UserError, match=r"--split=val"):
    eval_workdir.evaluate_workdir(workdir, tta="hflip", progress=False)
  with pytest.raises(cli.UserError, match=r"no moving average"):
    eval_workdir.evaluate_workdir(workdir, split="val", weights="ema", progress=False)
  assert digest_tree(workdir) == before, "a refused evaluation wrote something"
  raw = eval_workdir.evaluate_workdir(workdir, split="val", weights="raw", num_overlays=1,
                                      progress=False)
  flipped = eval_workdir.evaluate_workdir(workdir, split="val", tta="flips", num_overlays=1,
                                          progress=False)
  out = capsys.readouterr().out
  assert "on val (weights-raw):" in out and "on val (tta-flips):" in out
  step = int(out.split("Checkpoint step ")[1].split()[0])
  logged = [r for r in metric_writer.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
            if r["step"] == step and "val/mDSC" in r][-1]
  (name, scores), = raw.items()
  for key in ("mDSC", "S_alpha", "F_beta_w", "MAE"):  # no average: raw = the weights validated
    assert scores[key] == pytest.approx(logged[f"val/{key}"], abs=1e-6), key
  assert flipped[name]["mDSC"] != scores["mDSC"]
  changed = {path for path, digest in digest_tree(workdir).items() if before.get(path) != digest}
  assert changed and all(path.startswith((os.path.join("overlays", "tta-flips", ""),
                                          os.path.join("overlays", "weights-raw", "")))
                         for path in changed), changed


def test_eval_variables_picks_the_weights_asked_for():
  live = {"params": {"w": 1.0}, "batch_stats": {"m": 2.0}}
  average = {"params": {"w": 3.0}, "batch_stats": {"m": 4.0}}
  with_ema = {**live, "ema": average}
  assert ckpt_lib.eval_variables(with_ema) == average  # the run's own: its average
  assert ckpt_lib.eval_variables(with_ema, "ema") == average
  assert ckpt_lib.eval_variables(with_ema, "raw") == live
  assert ckpt_lib.eval_variables(live) == live == ckpt_lib.eval_variables(live, "raw")
  with pytest.raises(ValueError, match="run, raw, ema"):
    ckpt_lib.eval_variables(live, "best")
