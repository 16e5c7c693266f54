"""Polyp metrics against pysodmetrics 1.6.2 (the PraNet toolbox's Python port) and host vs jitted JAX.

Real masks come from $BSA_DATA_DIR (Kvasir RGB JPEG, CVC-ColonDB TIFF, CVC-ClinicDB 1-bit PNG); those
tests skip when the data is absent. Edge cases run on synthetic masks.
"""

import glob
import os

import numpy as np
import pytest
from scipy import ndimage

from conftest import data_dir
from bsa_jax.eval import io, metrics

psm = pytest.importorskip("py_sod_metrics")

TOL = 1e-15  # per dataset-level score, as README quotes it (largest seen: 2.2e-16)
REAL_MASKS = {"kvasir_seg": 10, "cvc_colondb_subset": 8, "cvc_clinicdb_pranet_train": 8}


# ------------------------------------------------------------------------------------------------
# The reference: pysodmetrics, used the way the polyp papers' Python ports use it.
# ------------------------------------------------------------------------------------------------
def pysod_scores(steps):
  """pysodmetrics' dataset-level scores after one `step(**kwargs)` per dict of `steps`."""
  handlers = {name: cls(with_dynamic=True, with_adaptive=False, with_binary=True)
              for name, cls in (("dice", psm.DICEHandler), ("iou", psm.IOUHandler))}
  fm = psm.FmeasureV2(metric_handlers=handlers)
  sm, wfm, em, mae = psm.Smeasure(), psm.WeightedFmeasure(), psm.Emeasure(), psm.MAE()
  for kwargs in steps:
    for m in (fm, sm, wfm, em, mae):
      m.step(**kwargs)
  fmr, emr = fm.get_results(), em.get_results()["em"]
  dice, iou = fmr["dice"]["dynamic"], fmr["iou"]["dynamic"]
  return {"mDSC": dice.mean(), "mIoU": iou.mean(), "S_alpha": sm.get_results()["sm"],
          "F_beta_w": wfm.get_results()["wfm"], "E_phi_max": emr["curve"].max(),
          "MAE": mae.get_results()["mae"], "E_phi_mean": emr["curve"].mean(),
          "E_phi_adaptive": emr["adp"], "maxDSC": dice.max(), "maxIoU": iou.max(),
          "Dice@0.5": fmr["dice"]["binary"], "IoU@0.5": fmr["iou"]["binary"]}


def reference(pairs):
  """pysodmetrics scores; uint8 pairs are normalised by it, float pairs min–max normalised here."""
  def step(pred, gt):
    if pred.dtype == np.uint8:
      return dict(pred=pred, gt=gt.astype(np.uint8) * 255)
    lo, hi = pred.min(), pred.max()
    pred = (pred - lo) / (hi - lo) if hi > lo else pred
    return dict(pred=pred.astype(np.float64), gt=gt, normalize=False)

  return pysod_scores(step(pred, gt) for pred, gt in pairs)


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
# The fast paths: uint8 maps from histograms, batches, and F^w on a window; each against the direct
# per-pixel computation.
# ------------------------------------------------------------------------------------------------
def _fw_direct(pred, gt):
  """F^w written out as the toolbox computes it on the whole image (reference for the fast path)."""
  fg = np.count_nonzero(gt)
  if fg == 0:
    return 0.0
  dist, (iy, ix) = ndimage.distance_transform_edt(~gt, return_indices=True)
  err = np.abs(pred - gt)
  g = metrics.gaussian_kernel_1d()
  blurred = ndimage.correlate1d(err[iy, ix], g, axis=0, mode="constant", cval=0.0)
  blurred = ndimage.correlate1d(blurred, g, axis=1, mode="constant", cval=0.0)
  weighted = (np.where(gt & (blurred < err), blurred, err) *
              np.where(gt, 1.0, 2 - np.exp(np.log(0.5) / 5 * dist)))
  tp_w = fg - np.sum(weighted[gt])
  recall, precision = 1 - np.mean(weighted[gt]), tp_w / (tp_w + np.sum(weighted[~gt]) + metrics.EPS)
  return 2 * recall * precision / (recall + precision + metrics.EPS)


def _tie_masks():
  """Masks with many equidistant foreground pixels, objects on borders, and single pixels."""
  lattice = np.zeros((25, 19), bool)
  lattice[1::4, 2::3] = True
  cross = np.zeros((17, 17), bool)
  cross[8, :] = cross[:, 8] = True
  single = np.zeros((9, 14), bool)
  single[4, 6] = True
  rng = np.random.default_rng(4)
  return [lattice, cross, single, _disc(30, 26, 29, 0, 5), rng.random((23, 31)) < 0.05]


def test_importance_table_is_the_toolbox_formula_and_exactly_two_beyond_far_distance():
  table = metrics._IMPORTANCE
  d = np.sqrt(np.arange(len(table), dtype=np.float64))
  np.testing.assert_array_equal(table[1:], (2 - np.exp(np.log(0.5) / 5 * d))[1:])
  assert table[0] == 0.0 and table[-1] == 2.0 and table[-2] < 2.0
  far = metrics.FAR_DISTANCE
  beyond = np.sqrt(np.arange((far + 1)**2, 3000**2, 997, dtype=np.float64))
  assert np.all(2 - np.exp(np.log(0.5) / 5 * beyond) == 2.0)
  assert (far + 1)**2 >= len(table) - 1  # every pixel beyond far is clipped to the last entry


def test_scipy_nearest_pixels_do_not_depend_on_margins_without_foreground():
  """What `distance_window` relies on: cropping to any box around the foreground keeps them."""
  rng = np.random.default_rng(8)
  masks = _tie_masks() + [rng.random((int(h), int(w))) < 0.1
                          for h, w in rng.integers(8, 40, (40, 2))]
  for fg in masks:
    if not fg.any():
      continue
    full = ndimage.distance_transform_edt(~fg, return_distances=False, return_indices=True)
    rows, cols = np.flatnonzero(fg.any(1)), np.flatnonzero(fg.any(0))
    for _ in range(5):
      r0, c0 = rng.integers(0, rows[0] + 1), rng.integers(0, cols[0] + 1)
      r1 = rng.integers(rows[-1] + 1, fg.shape[0] + 1)
      c1 = rng.integers(cols[-1] + 1, fg.shape[1] + 1)
      crop = ndimage.distance_transform_edt(~fg[r0:r1, c0:c1], return_distances=False,
                                            return_indices=True)
      np.testing.assert_array_equal(crop[0] + r0, full[0, r0:r1, c0:c1])
      np.testing.assert_array_equal(crop[1] + c0, full[1, r0:r1, c0:c1])


def _fw_cases():
  """(pred, gt): ties, borders, exact zeros (small window), and predictions beyond FAR_DISTANCE."""
  rng = np.random.default_rng(9)
  cases = []
  for gt in _tie_masks() + [np.ones((12, 10), bool)]:
    smooth = _blur(gt, 1.5)
    cases += [(rng.random(gt.shape), gt), (np.round(smooth / smooth.max(), 1), gt),
              (gt.astype(np.float64), gt), (np.zeros(gt.shape), gt)]
  big = _disc(620, 700, 40, 50, 12)  # 265 px from the object leaves most of the image
  far_blob = _disc(620, 700, 560, 640, 30) * 0.7
  cases += [(np.clip(_blur(big, 4) * 3, 0, 1) + far_blob, big),
            (np.round(rng.random(big.shape), 2), big), (np.clip(_blur(big, 4) * 3, 0, 1), big)]
  return cases


def test_weighted_fmeasure_equals_the_whole_image_computation():
  for pred, gt in _fw_cases():
    expected = _fw_direct(pred, gt)
    for zeros in (None, int(np.count_nonzero(pred == 0))):
      got = metrics.weighted_fmeasure(pred, gt, zeros=zeros)
      assert abs(got - expected) <= 1e-14, (gt.shape, zeros, got, expected)


def test_distance_window_shrinks_to_the_nonzero_prediction():
  gt = _disc(620, 700, 300, 350, 20)
  pred = np.clip(_blur(gt, 3) * 2, 0, 1)
  pred[pred < 1e-3] = 0
  rows, cols = metrics.distance_window(pred, metrics.foreground_profiles(gt))
  nonzero = np.argwhere(pred > 0)
  assert (rows.start, cols.start) == tuple(nonzero.min(0))
  assert (rows.stop, cols.stop) == tuple(nonzero.max(0) + 1)
  noisy = np.random.default_rng(2).random(gt.shape)
  far = metrics.FAR_DISTANCE
  # No zeros: the foreground's box (rows 280-320, cols 330-370) grown by FAR_DISTANCE.
  assert metrics.distance_window(noisy, metrics.foreground_profiles(gt), zeros=0) == (
      slice(280 - far, 321 + far), slice(330 - far, 371 + far))


def test_value_tables_give_the_bits_of_normalize_prediction():
  rng = np.random.default_rng(10)
  maps = [rng.integers(0, 256, (30, 40), dtype=np.uint8),
          rng.integers(31, 201, (30, 40), dtype=np.uint8),
          np.where(rng.random((30, 40)) < 0.5, 3, 250).astype(np.uint8)]
  maps += [np.full((30, 40), v, np.uint8) for v in (0, 77, 255)]
  for pred in maps:
    present = np.unique(pred)
    table = metrics.value_tables([present[0]], [present[-1]])[0]
    np.testing.assert_array_equal(table.take(pred), metrics.normalize_prediction(pred))
    np.testing.assert_array_equal(metrics.quantize(table).take(pred),
                                  metrics.quantize(metrics.normalize_prediction(pred)))


def _assert_records_equal(got, expected):
  """Curves bit-equal; scalar scores within a few float64 ulps (sums taken in another order)."""
  assert set(got) == set(expected)
  for k in expected:
    if np.ndim(expected[k]):
      np.testing.assert_array_equal(got[k], expected[k], err_msg=k)
    else:
      assert abs(float(got[k]) - float(expected[k])) <= 1e-15, (k, got[k], expected[k])


def _uint8_predictions(gt, rng):
  """uint8 maps covering the histogram path's branches (see the comments)."""
  h, w = gt.shape
  smooth = _blur(rng.random((h, w)) > 0.7, 2)
  half = np.zeros((h, w), np.uint8)
  half[:, : w // 2] = 100  # normalised mean 0.5: the adaptive threshold is 1.0, a present value
  corner = np.full((h, w), 77, np.uint8)
  corner[: h // 3, : w // 3] = 200  # constant quadrants away from the object
  return [np.clip(np.round(smooth / smooth.max() * 255), 0, 255).astype(np.uint8),
          np.zeros((h, w), np.uint8), np.full((h, w), 255, np.uint8), np.full((h, w), 77, np.uint8),
          rng.integers(0, 256, (h, w), dtype=np.uint8), half, corner,
          gt.astype(np.uint8) * 255, (gt.astype(np.uint8) * 254 + 1)]


@pytest.mark.parametrize("case", ["empty_gt", "full_gt", "one_pixel", "border_pixel",
                                  "odd_non_square", "tiny", "two_objects", "corner_object",
                                  "non_canonical_bools"])
def test_uint8_histogram_path_equals_pixel_path(case):
  """Per image, `image_scores` of a uint8 map (histograms) equals the per-pixel computation."""
  rng = np.random.default_rng(11)
  h, w = {"odd_non_square": (37, 53), "tiny": (3, 5)}.get(case, (40, 48))
  border = np.zeros((h, w), bool)
  border[h - 1, w - 1] = True
  gt = {
      "empty_gt": np.zeros((h, w), bool),
      "full_gt": np.ones((h, w), bool),
      "one_pixel": _disc(h, w, 17, 22, 0),
      "border_pixel": border,
      "odd_non_square": _disc(h, w, 20, 31, 9),
      "tiny": _disc(h, w, 1, 1, 1),
      "two_objects": _disc(h, w, 10, 10, 4) | _disc(h, w, 30, 35, 6),
      "corner_object": _disc(h, w, 33, 40, 5),
      "non_canonical_bools": (_disc(h, w, 20, 20, 8).astype(np.uint8) * 255).view(bool),
  }[case]
  for pred in _uint8_predictions(gt, rng):
    with np.errstate(invalid="ignore", divide="ignore"):
      _assert_records_equal(metrics.image_scores(pred, gt), metrics.pixel_image_scores(pred, gt))


def test_constant_quadrants_score_like_the_toolbox():
  """Two objects on a diagonal leave two quadrants of pure background; a constant prediction there
  scores SSIM 1 or 0 depending on whether the rounded mean equals the value. The histogram's mean
  rounds differently from numpy's in most of these cases (S_alpha would move by 0.25), so those
  quadrants are scored from pixels."""
  gt = _disc(40, 48, 8, 8, 4) | _disc(40, 48, 31, 39, 4)
  for value in range(1, 255, 7):
    pred = np.full(gt.shape, value, np.uint8)
    pred[gt] = 255
    pred[8, 8] = 0
    got = metrics.image_scores(pred, gt)["s_alpha"]
    assert abs(got - metrics.pixel_image_scores(pred, gt)["s_alpha"]) <= 1e-15, value
    sm = psm.Smeasure()
    sm.step(pred=pred, gt=gt.astype(np.uint8) * 255)
    assert abs(got - sm.get_results()["sm"]) <= 1e-15, value


def test_uint8_histogram_path_equals_pixel_path_on_real_masks(real_pairs):
  for (dataset, variant), pairs in real_pairs.items():
    if variant in ("blurred", "noisy", "low_contrast", "gt"):
      for pred, gt in pairs[:3]:
        _assert_records_equal(metrics.image_scores(pred, gt), metrics.pixel_image_scores(pred, gt))


def test_score_pairs_batches_mixed_dtypes_and_sizes_in_order():
  rng = np.random.default_rng(12)
  pairs = []
  for h, w in ((40, 48), (37, 53), (3, 5), (40, 48), (37, 53), (12, 9), (40, 48)):
    gt = _disc(h, w, h // 2, w // 3, min(h, w) // 4)
    pairs += [(_uint8_predictions(gt, rng)[0], gt)]
  pairs[1] = (pairs[1][0] / 255, pairs[1][1])  # float map: the pixel path, between two batches
  pairs[2] = (pairs[2][1].copy(), pairs[2][1])  # bool map: scored as uint8 0/255
  records = metrics.score_pairs(pairs, batch_size=2)
  assert len(records) == len(pairs)
  for (pred, gt), record in zip(pairs, records):
    _assert_records_equal(record, metrics.pixel_image_scores(pred, gt))
  assert metrics.dataset_scores(pairs) == metrics.aggregate(records)
  acc = metrics.PolypMetrics()
  acc.update_batch(metrics.uint8_batch_scores([p for p, _ in pairs[3:]], [g for _, g in pairs[3:]]))
  assert acc.result() == metrics.aggregate(records[3:])


# ------------------------------------------------------------------------------------------------
# JAX: the exact distance transform, and records equal to the host version.
# ------------------------------------------------------------------------------------------------
