"""`predict` (a user's own images) proven against the evaluation path, on real images.

A workdir is written by hand with three checkpoints of a tiny BSA-Net whose weights differ: step 10
has the best validation score, step 30 is the latest. Then:
- `predict.run` picks step 10, and its probability maps equal, to 8-bit rounding, the probabilities the
  evaluation path (`evaluate.evaluate_sets` fed by the trainer's `predict_step`) scores for the same
  images — and differ from those of the latest step;
- `--tta` equals a hand-made average with the horizontally flipped prediction, un-flipped;
- the attention maps are the energies of that image's ISAM/FSAM outputs, and differ between images.
"""

import functools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from bsa_jax import config_lib
from bsa_jax import data
from bsa_jax import models
from bsa_jax import train
from bsa_jax.data import preprocess
from bsa_jax.eval import evaluate
from bsa_jax.eval import metrics as metrics_lib
from bsa_jax.eval import overlays as viz
from bsa_jax.tools import predict
from bsa_jax.workdir import checkpoint as ckpt_lib
from conftest import DATA_ROOT, data_dir
from tests.test_attention import fast_jit

SIZE = 64
BEST, OTHER, LATEST = 10, 20, 30


def _variables(model, seed):
  """Random tiny BSA-Net variables, He-scaled so the logits vary visibly over the image (a flip or a
  wrong step moves the 8-bit probabilities by many levels), BatchNorm statistics random."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, SIZE, SIZE, 3)),
                                             train=False))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name, shape = path[-1].key, leaf.shape
    if name == "kernel":
      return jnp.asarray(rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape), jnp.float32)
    if name in ("scale", "var"):
      return jnp.asarray(rng.uniform(0.8, 1.2, shape), jnp.float32)
    std = 0.1 if name in ("bias", "mean") else 0.02
    return jnp.asarray(rng.normal(0.0, std, shape), jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """(workdir, config, model, {step: variables}, eval sets) with checkpoints 10 (best), 20, 30 (latest)."""
  for folder in ("kvasir_seg", "cvc_colondb_subset"):
    data_dir(folder)
  config = config_lib.load_config(os.path.join(config_lib.REPO_ROOT, "configs/kvasir.py:small"))
  config.data.root, config.data.image_size = DATA_ROOT, SIZE
  config.data.test = ("kvasir_seg:pranet_test", "cvc_colondb:all")
  config.data.max_eval_examples = 2
  workdir = str(tmp_path_factory.mktemp("predict_parity"))
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  model = models.build_model(config)
  steps = {}
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=3,
                                       select_metric="mDSC")
  for step, score in ((BEST, 0.8), (OTHER, 0.6), (LATEST, None)):
    steps[step] = _variables(model, seed=step)
    state = {"step": jnp.asarray(step, jnp.int32), **steps[step]}
    checkpointer.save(step, state, None, {"best_step": BEST, "best_val": 0.8},
                      metrics=None if score is None else {"mDSC": score})
  checkpointer.close()
  return workdir, config, model, steps, data.eval_sets(config.data, "test")


@pytest.fixture(scope="module")
def predicted(workdir, tmp_path_factory):
  """The eval sets' images copied to a user's folder, predicted plainly (with attention maps) and
  with --tta: ({id: input path}, plain result, plain output dir, tta output dir)."""
  path, _, _, _, eval_sets = workdir
  root = tmp_path_factory.mktemp("predict_runs")
  inputs = _copy_inputs(eval_sets, str(root / "in"))
  plain = predict.run(path, [str(root / "in")], str(root / "plain"), attention=True, batch_size=3)
  predict.run(path, [str(root / "in")], str(root / "tta"), tta=True, batch_size=4)
  return inputs, plain, root / "plain", root / "tta"


@pytest.fixture(scope="module")
def hand_apply(workdir):
  """Eval-mode (logits, aux) of the model, jitted once."""
  model = workdir[2]
  return fast_jit(lambda v, x: model.apply(v, x, train=False))


def _eval_path_probabilities(step, variables, eval_sets):
  """{id: probability at the mask's size} as the trainer's evaluation scores them."""
  state = {"params": variables["params"], "batch_stats": variables["batch_stats"]}
  scored = []
  real_update = metrics_lib.PolypMetrics.update

  def recording_update(self, pred, gt):
    scored.append(pred)
    return real_update(self, pred, gt)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(metrics_lib.PolypMetrics, "update", recording_update)
    evaluate.evaluate_sets(lambda inputs: step(state, inputs), eval_sets, batch_size=4)
  ids = [i for s in eval_sets.values() for i in s.ids]
  assert len(scored) == len(ids)
  return dict(zip(ids, scored))


def _copy_inputs(eval_sets, folder):
  """The eval sets' image files, copied into a user's folder; {id: copied path}."""
  os.makedirs(folder)
  paths = {}
  for eval_set in eval_sets.values():
    for example_id in eval_set.ids:
      paths[example_id] = shutil.copy(_image_path(eval_set.name, example_id), folder)
  return paths


def _image_path(set_name, example_id):
  if set_name.startswith("cvc_colondb"):
    path = os.path.join(DATA_ROOT, "cvc_colondb_subset", "images", f"{example_id}.tiff")
    return path if os.path.exists(path) else path[:-1]
  return os.path.join(DATA_ROOT, "kvasir_seg", "images", f"{example_id}.jpg")


def _png(path):
  return np.asarray(Image.open(path), np.float64)


def _assert_equal_to_8_bit_rounding(png, prob, what):
  assert png.shape == prob.shape, (what, png.shape, prob.shape)
  # Rounding to 8 bits moves a value by at most half a level (plus float32 jit noise).
  err = float(np.abs(png - prob * 255).max())
  assert err <= 0.5 + 1e-3, f"{what}: max |png - 255·p| = {err:.3f} levels"


def test_predict_uses_the_best_step_and_equals_the_evaluation_path(workdir, predicted):
  _, _, model, steps, eval_sets = workdir
  inputs, result, out, _ = predicted
  assert result["step"] == BEST and result["predicted"] == len(inputs) == 4
  assert not result["skipped"]
  step = jax.jit(functools.partial(train.predict_step, model=model))  # the trainer's eval step
  want = _eval_path_probabilities(step, steps[BEST], eval_sets)
  latest = _eval_path_probabilities(step, steps[LATEST], eval_sets)
  for example_id, prob in want.items():
    png = _png(out / "probabilities" / f"{example_id}.png")
    _assert_equal_to_8_bit_rounding(png, prob, example_id)
    # The steps' predictions differ by far more than the rounding, so the step is really tested.
    assert np.abs(png - latest[example_id] * 255).max() > 20, example_id
    mask = _png(out / "masks" / f"{example_id}.png")
    np.testing.assert_array_equal(mask, np.where(prob >= 0.5, 255, 0)[...])


def _hand_logits(apply, variables, image):
  """Network-resolution logits (S, S) of one uint8 image, the input prepared as in evaluation."""
  x = preprocess.normalize(preprocess.resize_image(image, SIZE), "imagenet")[None]
  logits, aux = apply(variables, x)
  return np.asarray(logits)[0, ..., 0], jax.device_get(aux)


def test_tta_is_the_average_with_the_unflipped_prediction_of_the_flipped_image(
    workdir, predicted, hand_apply):
  steps = workdir[3]
  inputs, _, _, out = predicted
  variables = steps[BEST]
  for example_id, src in inputs.items():
    image = data.load_image(src)
    plain, _ = _hand_logits(hand_apply, variables, image)
    flipped, _ = _hand_logits(hand_apply, variables, np.ascontiguousarray(image[:, ::-1]))
    logits = (plain + flipped[:, ::-1]) / 2  # un-flip along the width, then average
    prob = 1 / (1 + np.exp(-metrics_lib.resize_prediction(logits, image.shape[:2])))
    png = _png(out / "probabilities" / f"{example_id}.png")
    _assert_equal_to_8_bit_rounding(png, prob, example_id)
    wrong = (plain + flipped) / 2  # the flipped prediction left flipped
    wrong_prob = 1 / (1 + np.exp(-metrics_lib.resize_prediction(wrong, image.shape[:2])))
    assert np.abs(png - wrong_prob * 255).max() > 20, "the model is too symmetric to test TTA"


def test_attention_maps_are_each_images_module_energies(workdir, predicted, hand_apply):
  steps = workdir[3]
  inputs, _, out, _ = predicted
  energies = {}
  for example_id, src in inputs.items():
    image = data.load_image(src)
    _, aux = _hand_logits(hand_apply, steps[BEST], image)
    for part in ("isam", "fsam"):
      energy = viz.feature_energy(np.asarray(aux[f"{part}/out"])[0])
      assert energy.std() > 0.05, f"{example_id} {part}: a flat map"
      energies[example_id, part] = energy
      written = _png(out / "attention" / f"{example_id}_{part}.png")
      expected = viz.heatmap_overlay(image, energy).astype(np.float64)
      assert written.shape == expected.shape
      off = float(np.abs(written - expected).mean())
      assert off < 0.5, f"{example_id}_{part}.png is not its map (mean |diff| {off:.1f} levels)"
  ids = list(inputs)
  for part in ("isam", "fsam"):
    a, b = energies[ids[0], part], energies[ids[-1], part]
    apart = float(np.abs(a - b).mean())
    assert apart > 0.02, f"{part}: two different images gave the same map ({apart:.3g})"


def test_a_run_trained_with_tta_predicts_with_its_own_flips_once(workdir, predicted, tmp_path):
  """`config.eval.tta=hflip` in the run: `predict` gives what `--tta` gives on a run without it,
  with or without `--tta` (the flip is never applied twice), and says which averaging it used."""
  inputs, _, _, tta_out = predicted
  run_dir = tmp_path / "run_with_tta"
  shutil.copytree(workdir[0], run_dir)
  saved = json.loads((run_dir / "config.json").read_text())
  saved["eval"]["tta"] = "hflip"
  (run_dir / "config.json").write_text(json.dumps(saved))
  folder = os.path.dirname(next(iter(inputs.values())))
  for asked in (False, True):
    out = tmp_path / f"out_{asked}"
    result = predict.run(str(run_dir), [folder], str(out), tta=asked, batch_size=4)
    assert result["tta"] == "hflip"
    for example_id in inputs:
      got, want = _png(out / "probabilities" / f"{example_id}.png"), _png(
          tta_out / "probabilities" / f"{example_id}.png")
      assert np.abs(got - want).max() <= 1, example_id  # float32 noise, then 8-bit rounding
