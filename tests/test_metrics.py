"""Polyp metrics against pysodmetrics 1.6.2 (the PraNet toolbox's Python port) and host vs jitted JAX.

Real masks come from $BSA_DATA_DIR (Kvasir RGB JPEG, CVC-ColonDB TIFF, CVC-ClinicDB 1-bit PNG); those
tests skip when the data is absent. Edge cases run on synthetic masks.
"""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from conftest import data_dir
from bsa_jax.eval import io, metrics, metrics_jax

psm = pytest.importorskip("py_sod_metrics")

TOL = 1e-6  # the acceptance bound per dataset-level score (we are at ~1e-16 in practice)
REAL_MASKS = {"kvasir_seg": 10, "cvc_colondb_subset": 8, "cvc_clinicdb_pranet_train": 8}


# ------------------------------------------------------------------------------------------------
# The reference: pysodmetrics, used the way the polyp papers' Python ports use it.
# ------------------------------------------------------------------------------------------------
def reference(pairs):
  """pysodmetrics scores; uint8 pairs are normalised by it, float pairs min–max normalised here."""
  handlers = {name: cls(with_dynamic=True, with_adaptive=False, with_binary=True)
              for name, cls in (("dice", psm.DICEHandler), ("iou", psm.IOUHandler))}
  fm = psm.FmeasureV2(metric_handlers=handlers)
  sm, wfm, em, mae = psm.Smeasure(), psm.WeightedFmeasure(), psm.Emeasure(), psm.MAE()
  for pred, gt in pairs:
    if pred.dtype == np.uint8:
      kwargs = dict(pred=pred, gt=gt.astype(np.uint8) * 255)
    else:
      lo, hi = pred.min(), pred.max()
      pred = (pred - lo) / (hi - lo) if hi > lo else pred
      kwargs = dict(pred=pred.astype(np.float64), gt=gt, normalize=False)
    for m in (fm, sm, wfm, em, mae):
      m.step(**kwargs)
  fmr, emr = fm.get_results(), em.get_results()["em"]
  dice, iou = fmr["dice"]["dynamic"], fmr["iou"]["dynamic"]
  return {"mDSC": dice.mean(), "mIoU": iou.mean(), "S_alpha": sm.get_results()["sm"],
          "F_beta_w": wfm.get_results()["wfm"], "E_phi_max": emr["curve"].max(),
          "MAE": mae.get_results()["mae"], "E_phi_mean": emr["curve"].mean(),
          "E_phi_adaptive": emr["adp"], "maxDSC": dice.max(), "maxIoU": iou.max(),
          "Dice@0.5": fmr["dice"]["binary"], "IoU@0.5": fmr["iou"]["binary"]}


def ours(pairs):
  return metrics.aggregate([metrics.image_scores(p, g) for p, g in pairs])


def max_abs_diff(a, b):
  """{metric: |a - b|} over every metric name."""
  assert set(a) >= set(metrics.ALL_METRIC_NAMES) and set(b) >= set(metrics.ALL_METRIC_NAMES)
  return {k: abs(float(a[k]) - float(b[k])) for k in metrics.ALL_METRIC_NAMES}


def assert_matches_reference(pairs, tol=TOL):
  diffs = max_abs_diff(ours(pairs), reference(pairs))
  bad = {k: v for k, v in diffs.items() if not v <= tol}
  assert not bad, f"differs from pysodmetrics: {bad}"


# ------------------------------------------------------------------------------------------------
# Predictions of varied quality made from a mask.
# ------------------------------------------------------------------------------------------------
def _blur(gt, sigma):
  return ndimage.gaussian_filter(gt.astype(np.float64), sigma)


def prediction_variants(gt, rng):
  """{variant: prediction}: uint8 maps like saved PNGs, plus one float probability map."""
  h, w = gt.shape
  blurred = _blur(gt, max(h, w) / 60)
  to_u8 = lambda x: np.clip(np.round(x * 255), 0, 255).astype(np.uint8)
  logits = 8 * (_blur(np.roll(gt, (h // 20, -w // 25), (0, 1)), max(h, w) / 40) - 0.5)
  return {
      "gt": gt.astype(np.uint8) * 255,
      "blurred": to_u8(blurred),
      "shifted": to_u8(np.roll(blurred, (h // 8, w // 10), (0, 1))),
      "noisy": to_u8(blurred + rng.normal(0, 0.25, gt.shape)),
      "low_contrast": to_u8(0.4 + 0.15 * blurred),
      "empty": np.zeros((h, w), np.uint8),
      "all_ones": np.full((h, w), 255, np.uint8),
      "float_prob": 1 / (1 + np.exp(-logits)),
  }


def real_masks():
  """[(dataset, name, (H, W) bool)] read with the eval CLI's reader (toolbox conventions)."""
  masks = []
  for dataset, count in REAL_MASKS.items():
    paths = sorted(glob.glob(os.path.join(data_dir(dataset, "masks"), "*")))[:count]
    masks += [(dataset, os.path.basename(p), io.read_gt(p)) for p in paths]
  return masks


@pytest.fixture(scope="module")
def real_pairs():
  """{(dataset, variant): [(pred, gt), ...]} over a few dozen real masks."""
  rng = np.random.default_rng(0)
  groups = {}
  for dataset, _, gt in real_masks():
    for variant, pred in prediction_variants(gt, rng).items():
      groups.setdefault((dataset, variant), []).append((pred, gt))
  return groups


# ------------------------------------------------------------------------------------------------
# Exactness on real masks.
# ------------------------------------------------------------------------------------------------
def test_real_masks_match_pysodmetrics_per_dataset_and_variant(real_pairs):
  worst = dict.fromkeys(metrics.ALL_METRIC_NAMES, 0.0)
  for group, pairs in real_pairs.items():
    diffs = max_abs_diff(ours(pairs), reference(pairs))
    worst = {k: max(worst[k], diffs[k]) for k in worst}
    bad = {k: v for k, v in diffs.items() if not v <= TOL}
    assert not bad, f"{group}: differs from pysodmetrics: {bad}"
  print("max |ours - pysodmetrics| per metric:", worst)


def test_per_image_curves_equal_pysodmetrics(real_pairs):
  """Curves, not just their means: ours are indexed by level k, pysodmetrics' by 255 - k."""
  for pred, gt in real_pairs[("cvc_colondb_subset", "noisy")][:3]:
    record = metrics.image_scores(pred, gt)
    fm = psm.FmeasureV2(metric_handlers={"dice": psm.DICEHandler(True, False),
                                         "iou": psm.IOUHandler(True, False)})
    em = psm.Emeasure()
    fm.step(pred, gt.astype(np.uint8) * 255)
    em.step(pred, gt.astype(np.uint8) * 255)
    ref = fm.get_results()
    np.testing.assert_allclose(record["dice_curve"], ref["dice"]["dynamic"][::-1], atol=1e-12)
    np.testing.assert_allclose(record["iou_curve"], ref["iou"]["dynamic"][::-1], atol=1e-12)
    np.testing.assert_allclose(record["em_curve"], em.get_results()["em"]["curve"][::-1],
                               atol=1e-12)


def test_real_variants_give_distinct_scores(real_pairs):
  """Guards the fixture: the variants must exercise different regimes of every metric."""
  kvasir = {v: ours(real_pairs[("kvasir_seg", v)]) for v in ("gt", "blurred", "shifted", "empty")}
  # A perfect binary map is not 1 under the toolbox: level 0 (everything >= 0) predicts the whole
  # image, so mDSC = (255 + Dice(all ones)) / 256.
  gt_pairs = real_pairs[("kvasir_seg", "gt")]
  all_ones_dice = np.mean([2 * g.mean() / (g.mean() + 1) for _, g in gt_pairs])
  assert kvasir["gt"]["mDSC"] == pytest.approx((255 + all_ones_dice) / 256, abs=1e-12)
  assert kvasir["gt"]["maxDSC"] == kvasir["gt"]["Dice@0.5"] == 1.0
  assert kvasir["gt"]["MAE"] == 0.0
  assert kvasir["blurred"]["mDSC"] > kvasir["shifted"]["mDSC"] > kvasir["empty"]["mDSC"]
  assert kvasir["empty"]["Dice@0.5"] == 0.0
  assert kvasir["empty"]["F_beta_w"] < 0.01  # not 0: the zero-padded blur lowers errors at borders
  # E_phi_max is the max of the dataset-mean curve, at most the mean of per-image maxima.
  records = [metrics.image_scores(p, g) for p, g in real_pairs[("kvasir_seg", "noisy")]]
  per_image_max = np.mean([r["em_curve"].max() for r in records])
  assert metrics.aggregate(records)["E_phi_max"] < per_image_max


# ------------------------------------------------------------------------------------------------
# Edge cases on synthetic masks.
# ------------------------------------------------------------------------------------------------
def _disc(h, w, cy, cx, r):
  yy, xx = np.mgrid[:h, :w]
  return (yy - cy)**2 + (xx - cx)**2 <= r * r


def _some_predictions(h, w, rng):
  smooth = _blur(rng.random((h, w)) > 0.7, 2)
  return [np.clip(np.round(smooth / smooth.max() * 255), 0, 255).astype(np.uint8),
          np.zeros((h, w), np.uint8), np.full((h, w), 255, np.uint8),
          np.full((h, w), 77, np.uint8), (rng.random((h, w)) * 0.6 + 0.2)]


@pytest.mark.parametrize("case", ["empty_gt", "full_gt", "one_pixel", "odd_non_square", "tiny",
                                  "two_objects"])
def test_edge_cases_match_pysodmetrics(case):
  rng = np.random.default_rng(1)
  h, w = {"odd_non_square": (37, 53), "tiny": (3, 5)}.get(case, (40, 48))
  gt = {
      "empty_gt": np.zeros((h, w), bool),
      "full_gt": np.ones((h, w), bool),
      "one_pixel": _disc(h, w, 17, 22, 0),
      "odd_non_square": _disc(h, w, 20, 31, 9),
      "tiny": _disc(h, w, 1, 1, 1),
      "two_objects": _disc(h, w, 10, 10, 4) | _disc(h, w, 30, 35, 6),
  }[case]
  preds = _some_predictions(h, w, rng) + [gt.astype(np.uint8) * 255]
  for pred in preds:
    assert_matches_reference([(pred, gt)])
  assert_matches_reference([(p, gt) for p in preds])


@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value encountered")
def test_one_pixel_object_on_the_border_is_finite_where_pysodmetrics_gives_nan():
  """A centroid on the last row/column leaves empty quadrants: pysodmetrics' S-measure is NaN.

  Ours gives the empty quadrant its zero weight; every other metric still matches.
  """
  gt = np.zeros((20, 30), bool)
  gt[19, 29] = True
  pred = (_blur(gt, 2) / _blur(gt, 2).max() * 255).astype(np.uint8)
  ref, got = reference([(pred, gt)]), ours([(pred, gt)])
  assert np.isnan(ref["S_alpha"]) and np.isfinite(got["S_alpha"])
  assert 0 <= got["S_alpha"] <= 1
  for k in metrics.ALL_METRIC_NAMES:
    if k != "S_alpha":
      assert abs(got[k] - ref[k]) <= TOL, k


def test_inputs_are_validated():
  gt = np.zeros((8, 8), bool)
  with pytest.raises(ValueError, match="resize_prediction"):
    metrics.image_scores(np.zeros((8, 9), np.uint8), gt)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    metrics.image_scores(np.full((8, 8), 1.5), gt)
  with pytest.raises(TypeError, match="bool"):
    metrics.image_scores(np.zeros((8, 8), np.uint8), gt.astype(np.uint8))


def test_polyp_metrics_accumulator_equals_aggregate():
  gts = [_disc(30, 40, 15, 20, r) for r in (3, 6, 9)]
  preds = [(_blur(g, 2) * 255).astype(np.uint8) for g in gts]
  acc = metrics.PolypMetrics()
  for p, g in zip(preds, gts):
    acc.update(p, g)
  assert acc.num_images == 3
  assert acc.result() == ours(list(zip(preds, gts)))
  assert tuple(acc.result())[:6] == metrics.METRIC_NAMES


# ------------------------------------------------------------------------------------------------
# Resizing predictions (PraNet: F.upsample(..., mode='bilinear', align_corners=False)).
# ------------------------------------------------------------------------------------------------
def test_resize_prediction_hand_computed():
  x = np.array([[0.0, 1.0], [2.0, 3.0]])
  out = metrics.resize_prediction(x, (4, 4))
  # Half-pixel centres: output column 1 samples input x = 0.25, column 0 clamps to 0.
  np.testing.assert_allclose(out[0], [0.0, 0.25, 0.75, 1.0])
  np.testing.assert_allclose(out[:, 0], [0.0, 0.5, 1.5, 2.0])
  np.testing.assert_array_equal(metrics.resize_prediction(x, (2, 2)), x)


@pytest.mark.parametrize("out_shape", [(71, 53), (13, 40), (64, 64)])
def test_resize_prediction_matches_torch(out_shape):
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(3).normal(size=(2, 32, 45))
  ref = torch.nn.functional.interpolate(torch.from_numpy(x)[None], size=out_shape,
                                        mode="bilinear", align_corners=False)[0].numpy()
  np.testing.assert_allclose(metrics.resize_prediction(x, out_shape), ref, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# JAX: the exact distance transform, and records equal to the host version.
# ------------------------------------------------------------------------------------------------
def _edt_cases():
  rng = np.random.default_rng(4)
  cases = [rng.random((23, 31)) < p for p in (0.02, 0.1, 0.4)]
  lattice = np.zeros((25, 19), bool)
  lattice[1::4, 2::3] = True  # many equidistant neighbours: tie-breaking matters
  cross = np.zeros((17, 17), bool)
  cross[8, :] = cross[:, 8] = True
  single = np.zeros((9, 14), bool)
  single[4, 6] = True
  return cases + [lattice, cross, single, _disc(30, 26, 29, 0, 5)]


def test_jax_distance_transform_matches_scipy_including_ties():
  for fg in _edt_cases():
    dist, (iy, ix) = ndimage.distance_transform_edt(~fg, return_indices=True)
    d2, flat = jax.jit(metrics_jax.nearest_foreground)(fg)
    np.testing.assert_array_equal(np.asarray(flat), iy * fg.shape[1] + ix)
    np.testing.assert_allclose(np.sqrt(np.asarray(d2)), dist, rtol=0, atol=0)


def test_jax_row_pass_variants_agree_on_ties():
  """The int32-packed, int64-packed (large images with x64) and two-min row passes are the same."""
  rng = np.random.default_rng(7)
  w = 40
  for _ in range(5):
    dy2 = jnp.asarray(rng.integers(0, 4, w) ** 2 * rng.integers(0, 2, w), jnp.int32)  # many ties
    packed = metrics_jax._row_pass_packed(dy2, w, jnp.int32)
    two_mins = metrics_jax._row_pass_two_mins(dy2, w)
    brute = (dy2[None, :] + (np.arange(w)[:, None] - np.arange(w)[None, :])**2)
    np.testing.assert_array_equal(packed[0], brute.min(1))
    np.testing.assert_array_equal(packed[1], brute.argmin(1))  # numpy: first minimum
    np.testing.assert_array_equal(two_mins[0], packed[0])
    np.testing.assert_array_equal(two_mins[1], packed[1])
    with jax.enable_x64(True):
      wide = metrics_jax._row_pass_packed(dy2, w, jnp.int64)
    np.testing.assert_array_equal(wide[1], packed[1])


def _small_real_batch():
  """Eight real masks at 72x88 with blurred/noisy/shifted/empty/constant predictions, float32.

  The masks come out of PIL's 1-bit resize, so True is stored as byte 255, on purpose: XLA reads
  such bools differently from numpy unless `metrics_jax` normalises them.
  """
  masks = real_masks()
  rng = np.random.default_rng(5)
  gts, preds = [], []
  for i, (_, _, gt) in enumerate(masks[::3][:8]):
    g = np.array(Image.fromarray(gt).resize((88, 72), Image.NEAREST))
    variant = ("blurred", "noisy", "shifted", "float_prob", "empty", "all_ones", "gt",
               "low_contrast")[i % 8]
    p = prediction_variants(g, rng)[variant]
    preds.append(p / 255 if p.dtype == np.uint8 else p)
    gts.append(g)
  gts = np.stack(gts)
  assert gts.view(np.uint8).max() == 255  # non-canonical bools, see the docstring
  return np.stack(preds).astype(np.float32), gts


def _host_records(preds, gts):
  return [metrics.image_scores(p.astype(np.float64), g) for p, g in zip(preds, gts)]


def test_jax_records_equal_host_records_in_float64():
  preds, gts = _small_real_batch()
  host = _host_records(preds, gts)
  with jax.enable_x64(True):
    device = jax.jit(metrics_jax.batch_image_scores)(preds.astype(np.float64), gts)
    device = metrics.split_batch_records(device)
  for k in host[0]:
    np.testing.assert_allclose(np.stack([r[k] for r in device]), np.stack([r[k] for r in host]),
                               rtol=0, atol=1e-12, err_msg=k)


def test_jax_float32_batch_with_padding_matches_host():
  preds, gts = _small_real_batch()
  valid = np.array([True] * 6 + [False] * 2)
  preds[~valid] = np.random.default_rng(6).random(preds[~valid].shape)  # padding rows: garbage
  out = jax.jit(metrics_jax.batch_image_scores)(preds, gts, valid)
  assert all(np.all(np.asarray(v)[~valid] == 0) for k, v in out.items() if k != "valid")
  acc = metrics.PolypMetrics()
  acc.update_batch(out)
  assert acc.num_images == 6
  host = metrics.aggregate(_host_records(preds[valid], gts[valid]))
  diffs = max_abs_diff(acc.result(), host)
  assert max(diffs.values()) < 1e-6, diffs
