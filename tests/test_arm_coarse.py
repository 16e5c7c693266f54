"""What the Attention Rendering Module adds, measured: the coarse prediction (before the ARM) is scored
beside the refined one (`mDSC_coarse` next to `mDSC` in validation and test results)."""

import jax
import numpy as np
import pytest

from bsa_jax import models
from bsa_jax import train
from bsa_jax.eval import evaluate
from bsa_jax.eval import metrics
from tests.test_attention import fast_jit


def _blobs(n, seed=0, shape=(37, 45)):
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:shape[0], :shape[1]]
  pairs = []
  for _ in range(n):
    cy, cx, r = rng.uniform(8, 30), rng.uniform(8, 36), rng.uniform(3, 12)
    gt = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
    prob = np.clip(gt * 0.7 + rng.uniform(0, 0.5, shape), 0, 1)
    pairs.append((prob, gt))
  return pairs


def test_curve_metrics_equal_the_full_metrics_mdsc_and_miou():
  full, curves = metrics.PolypMetrics(), metrics.CurveMetrics()
  for prob, gt in _blobs(6) + [(np.full((37, 45), 0.3), _blobs(1)[0][1])]:  # a constant map too
    full.update(prob, gt)
    curves.update(prob, gt)
  expected, got = full.result(), curves.result()
  assert got == {"mDSC": expected["mDSC"], "mIoU": expected["mIoU"]}


class _Set:
  """An eval set of one padded batch of 3 images at 16 px with masks at their original size."""
  name = "fake:test"

  def __len__(self):
    return 2

  def batches(self, batch_size, with_original_images=False):
    gts = [gt for _, gt in _blobs(2, seed=1)]
    yield {"image": np.zeros((3, 16, 16, 3), np.float32), "valid": np.array([True, True, False]),
           "id": ["a", "b", ""], "mask_orig": gts + [np.zeros((0, 0), bool)]}


def test_evaluate_sets_scores_the_coarse_prediction_beside_the_refined_one():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 16, 16, 1)).astype(np.float32)
  coarse = rng.normal(size=(3, 16, 16, 1)).astype(np.float32)
  plain = evaluate.evaluate_sets(lambda inputs: logits, {"s": _Set()}, batch_size=3)
  assert "mDSC_coarse" not in plain and plain["num_images"] == 2
  both = evaluate.evaluate_sets(lambda inputs: {"logits": logits, "coarse": coarse}, {"s": _Set()},
                                batch_size=3)
  alone = evaluate.evaluate_sets(lambda inputs: coarse, {"s": _Set()}, batch_size=3)
  assert {k: both[k] for k in plain} == plain
  assert both["mDSC_coarse"] == alone["mDSC"] and both["mIoU_coarse"] == alone["mIoU"]


@pytest.mark.parametrize("arm", ["none", "pointrend"])
def test_predict_step_returns_the_coarse_logits_upsampled_as_arm_none_would(arm):
  model = models.get_model("bsanet", variant="tiny", arm=arm)
  image = np.asarray(jax.random.normal(jax.random.key(0), (2, 64, 64, 3)))
  variables = fast_jit(lambda: model.init({"params": jax.random.key(1), "points": jax.random.key(2),
                                          "dropout": jax.random.key(3)}, image, train=False))()
  state = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
  predict = fast_jit(lambda s, x: train.predict_step(s, {"image": x}, model=model, with_coarse=True))
  out = jax.device_get(predict(state, image))
  assert set(out) == {"logits", "coarse"} and out["coarse"].shape == out["logits"].shape == (2, 64, 64, 1)
  if arm == "none":  # no ARM: the refined prediction is the coarse one
    np.testing.assert_array_equal(out["coarse"], out["logits"])
  else:
    assert not np.array_equal(out["coarse"], out["logits"])
  plain = fast_jit(lambda s, x: train.predict_step(s, {"image": x}, model=model))(state, image)
  np.testing.assert_array_equal(np.asarray(plain), out["logits"])
