"""Polyp segmentation metrics with the PraNet toolbox conventions, on host (numpy + scipy).

The tables of PraNet, SANet, LDNet and the BSA-Net paper use the PraNet MATLAB toolbox
(DengPingFan/PraNet:eval/main.m); lartpang/PySODMetrics 1.6.2 is its Python port and our reference in
tests. Conventions (SPEC.md §3, Decision 3):

- prediction: uint8 maps are divided by 255; every map is then min–max normalised per image, unless
  it is constant (then it is left as is). Float maps must already lie in [0, 1].
- threshold curves: the map is quantised to uint8 by `floor(p * 255)` and binarised with `>= k` for
  k = 0..255. Our curves are indexed by k (ascending); pysodmetrics stores them for k = 255..0.
- mDSC / mIoU: the mean over the 256 thresholds of the dataset-mean Dice / IoU curve ("meanDic").
- E_phi_max: the max over thresholds of the dataset-mean E-measure curve; E_phi_mean its mean;
  E_phi_adaptive thresholds each map at min(2 * mean, 1).
- S_alpha with alpha = 0.5; F_beta_w (Margolin et al.) with beta^2 = 1; MAE of the normalised map.
- Dice@0.5 / IoU@0.5: per-image scores of `p > 0.5` (pysodmetrics' "binary" mode), averaged.

`image_scores` turns one (pred, gt) pair into a fixed-size record; `aggregate` reduces records to
dataset-level numbers; `PolypMetrics` does both as an accumulator.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

METRIC_NAMES = ("mDSC", "mIoU", "S_alpha", "F_beta_w", "E_phi_max", "MAE")
EXTRA_METRIC_NAMES = ("E_phi_mean", "E_phi_adaptive", "maxDSC", "maxIoU", "Dice@0.5", "IoU@0.5")
ALL_METRIC_NAMES = METRIC_NAMES + EXTRA_METRIC_NAMES
NUM_THRESHOLDS = 256
EPS = float(np.spacing(1))  # MATLAB's eps, used by the toolbox and pysodmetrics alike
S_ALPHA = 0.5
F_BETA2 = 1.0
WFM_SIGMA = 5.0  # fspecial('gaussian', 7, 5) in original_WFb.m
WFM_KERNEL = 7


# ------------------------------------------------------------------------------------------------
# Input conventions.
# ------------------------------------------------------------------------------------------------
def normalize_prediction(pred: np.ndarray) -> np.ndarray:
  """MATLAB's `mapminmax(im2double(pred))`: float64 in [0, 1]; constant maps stay unchanged."""
  pred = np.asarray(pred)
  if pred.dtype == np.bool_:
    pred = pred.astype(np.uint8) * 255
  if pred.dtype == np.uint8:
    pred = pred / 255
  elif np.issubdtype(pred.dtype, np.floating):
    pred = pred.astype(np.float64)
    if not np.all(np.isfinite(pred)) or pred.min() < 0 or pred.max() > 1:
      raise ValueError("float predictions must be finite probabilities in [0, 1]; apply a sigmoid "
                       "to logits first")
  else:
    raise TypeError(f"prediction must be uint8, bool or float in [0, 1], got {pred.dtype}")
  lo, hi = pred.min(), pred.max()
  if hi != lo:
    pred = (pred - lo) / (hi - lo)
  return pred


def to_uint8_map(prob: np.ndarray) -> np.ndarray:
  """The 8-bit map PraNet's MyTest.py saves: min–max normalised, then rounded (scipy's bytescale).

  Scoring `to_uint8_map(p)` equals scoring that saved file; scoring the float `p` directly floors
  p * 255 instead (pysodmetrics' float convention), which moved mDSC by ~4e-4 in our checks.
  """
  prob = np.asarray(prob, np.float64)
  lo, hi = prob.min(), prob.max()
  scaled = (prob - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(prob)
  return np.clip(np.floor(scaled + 0.5), 0, 255).astype(np.uint8)


def quantize(pred: np.ndarray) -> np.ndarray:
  """uint8 levels of a [0, 1] map as pysodmetrics makes them: `floor(p * 255)`."""
  return (pred * 255).astype(np.uint8)


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """Validates shapes and returns gt as bool."""
  if pred.ndim != 2 or pred.shape != gt.shape:
    raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} must be 2-D and the same "
                     f"size; resize the prediction with resize_prediction(pred, gt.shape)")
  if gt.dtype != np.bool_:
    raise TypeError(f"ground truth must be bool (binarise masks with > 128 first), got {gt.dtype}")
  return gt


# ------------------------------------------------------------------------------------------------
# Threshold curves: Dice, IoU and E-measure from one pair of cumulative histograms.
# ------------------------------------------------------------------------------------------------
def threshold_counts(levels: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per threshold k = 0..255: TP(k) = |(levels >= k) & gt| and P(k) = |levels >= k|."""
  # One bincount over (level, gt) pairs: bins 0..255 are background, 256..511 foreground.
  hist = np.bincount(levels.ravel().astype(np.intp) + NUM_THRESHOLDS * gt.ravel(),
                     minlength=2 * NUM_THRESHOLDS).reshape(2, NUM_THRESHOLDS)  # (2, 256)
  at_least = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]  # (2, 256): count of levels >= k
  tp = at_least[1]
  return tp, at_least[0] + tp


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  """num / den with 0 where den == 0 (pysodmetrics' handler convention)."""
  den = np.asarray(den, np.float64)
  return np.divide(num, den, out=np.zeros_like(den), where=den != 0)


def dice_iou_curves(tp: np.ndarray, pp: np.ndarray, fg: int) -> tuple[np.ndarray, np.ndarray]:
  """Dice and IoU at each threshold from TP, predicted-positive counts and |G|."""
  dice = _safe_divide(2 * tp, fg + pp)
  iou = _safe_divide(tp, fg + pp - tp)
  return dice, iou


def enhanced_alignment(tp, pp, fg: int, size: int):
  """E-measure (Fan et al., IJCAI'18) of binary maps given their counts; works on arrays of k."""
  tp = np.asarray(tp, np.float64)
  pp = np.asarray(pp, np.float64)
  if fg == 0:
    total = size - pp
  elif fg == size:
    total = pp
  else:
    # The aligned matrix takes one value on each of the four (pred, gt) regions.
    fp, fn = pp - tp, fg - tp
    tn = size - pp - fn
    pred_fg, pred_bg = 1 - pp / size, 0 - pp / size  # de-meaned binary prediction values
    gt_fg, gt_bg = 1 - fg / size, 0 - fg / size
    total = 0.0
    for count, a, b in ((tp, pred_fg, gt_fg), (fp, pred_fg, gt_bg), (fn, pred_bg, gt_fg),
                        (tn, pred_bg, gt_bg)):
      align = 2 * (a * b) / (a**2 + b**2 + EPS)
      total = total + (align + 1)**2 / 4 * count
  return total / (size - 1 + EPS)


def adaptive_emeasure(pred: np.ndarray, gt: np.ndarray) -> float:
  """E-measure of `pred >= min(2 * mean(pred), 1)` (unquantised)."""
  binary = pred >= min(2 * pred.mean(), 1)
  tp = np.count_nonzero(binary & gt)
  return float(enhanced_alignment(tp, np.count_nonzero(binary), int(np.count_nonzero(gt)), gt.size))


# ------------------------------------------------------------------------------------------------
# S-measure (Fan et al., ICCV'17), alpha = 0.5.
# ------------------------------------------------------------------------------------------------
def _object_similarity(x: np.ndarray) -> float:
  """2 mean / (mean^2 + 1 + std + eps) of one region; std uses N-1 and is 0 for one pixel."""
  mean = np.mean(x)
  std = np.std(x, ddof=1) if x.size > 1 else 0.0
  return 2 * mean / (mean**2 + 1 + std + EPS)


def _object_score(pred: np.ndarray, gt: np.ndarray) -> float:
  """Foreground and background object similarities weighted by the GT's area fraction."""
  fg_fraction = np.mean(gt)
  return (_object_similarity(pred[gt]) * fg_fraction +
          _object_similarity((1 - pred)[~gt]) * (1 - fg_fraction))


def _ssim(pred: np.ndarray, gt: np.ndarray) -> float:
  """The S-measure's single-window SSIM of one quadrant (variances over N-1+eps)."""
  n = pred.size
  if n == 0:  # an empty quadrant has zero weight; pysodmetrics turns it into NaN
    return 0.0
  x, y = np.mean(pred), np.mean(gt)
  dx, dy = pred - x, gt - y
  var_x = np.sum(dx**2) / (n - 1 + EPS)
  var_y = np.sum(dy**2) / (n - 1 + EPS)
  cov = np.sum(dx * dy) / (n - 1 + EPS)
  num = 4 * x * y * cov
  den = (x**2 + y**2) * (var_x + var_y)
  if num != 0:
    return num / (den + EPS)
  return 1.0 if den == 0 else 0.0


def centroid_split(gt: np.ndarray) -> tuple[int, int]:
  """Rows/cols before the split: the rounded foreground centroid, +1 as in the 1-based toolbox."""
  h, w = gt.shape
  fg = np.count_nonzero(gt)
  # Exact integer sums, then one division: the same float64 as the mean of the coordinates.
  cy = np.dot(np.count_nonzero(gt, axis=1), np.arange(h)) / fg
  cx = np.dot(np.count_nonzero(gt, axis=0), np.arange(w)) / fg
  return int(np.round(cy)) + 1, int(np.round(cx)) + 1  # round half to even, like the reference


def _region_score(pred: np.ndarray, gt: np.ndarray) -> float:
  """Area-weighted SSIM of the four quadrants around the foreground centroid."""
  h, w = gt.shape
  cy, cx = centroid_split(gt)
  area = h * w
  w_lt = cx * cy / area
  w_rt = cy * (w - cx) / area
  w_lb = (h - cy) * cx / area
  w_rb = 1 - w_lt - w_rt - w_lb
  return (_ssim(pred[:cy, :cx], gt[:cy, :cx]) * w_lt + _ssim(pred[:cy, cx:], gt[:cy, cx:]) * w_rt +
          _ssim(pred[cy:, :cx], gt[cy:, :cx]) * w_lb + _ssim(pred[cy:, cx:], gt[cy:, cx:]) * w_rb)


def smeasure(pred: np.ndarray, gt: np.ndarray, alpha: float = S_ALPHA) -> float:
  """Structure measure: alpha * object score + (1 - alpha) * region score, floored at 0."""
  fg_fraction = np.mean(gt)
  if fg_fraction == 0:
    return float(1 - np.mean(pred))
  if fg_fraction == 1:
    return float(np.mean(pred))
  score = _object_score(pred, gt) * alpha + _region_score(pred, gt) * (1 - alpha)
  return float(max(0.0, score))


# ------------------------------------------------------------------------------------------------
# Weighted F-measure (Margolin et al., CVPR'14), beta^2 = 1.
# ------------------------------------------------------------------------------------------------
def gaussian_kernel_1d(size: int = WFM_KERNEL, sigma: float = WFM_SIGMA) -> np.ndarray:
  """1-D factor of MATLAB's fspecial('gaussian', size, sigma); its outer square is the 2-D kernel."""
  r = (size - 1) / 2
  x = np.arange(-r, r + 1)
  g = np.exp(-(x * x) / (2 * sigma * sigma))
  return g / g.sum()


def weighted_fmeasure(pred: np.ndarray, gt: np.ndarray, beta2: float = F_BETA2) -> float:
  """F^w_beta; 0 for an empty GT (MATLAB gives NaN, pysodmetrics 0)."""
  fg = np.count_nonzero(gt)
  if fg == 0:
    return 0.0
  # Distance to, and index of, the nearest foreground pixel (the toolbox's bwdist(GT)).
  dist, (iy, ix) = ndimage.distance_transform_edt(~gt, return_indices=True)
  err = np.abs(pred - gt)  # (H, W)
  # Background pixels take the error of their nearest foreground pixel; foreground pixels are
  # their own nearest one, so a single gather does both.
  err_nearest = err.ravel()[iy * gt.shape[1] + ix]  # (H, W)
  g = gaussian_kernel_1d()
  blurred = ndimage.correlate1d(err_nearest, g, axis=0, mode="constant", cval=0.0)
  blurred = ndimage.correlate1d(blurred, g, axis=1, mode="constant", cval=0.0)
  min_err = np.where(gt & (blurred < err), blurred, err)
  importance = np.where(gt, 1.0, 2 - np.exp(np.log(0.5) / 5 * dist))
  weighted_err = min_err * importance
  err_fg = weighted_err[gt]
  tp_w = fg - np.sum(err_fg)
  fp_w = np.sum(weighted_err[~gt])
  recall = 1 - np.mean(err_fg)
  precision = tp_w / (tp_w + fp_w + EPS)
  return float((1 + beta2) * recall * precision / (recall + beta2 * precision + EPS))


# ------------------------------------------------------------------------------------------------
# Per-image records and dataset-level scores.
# ------------------------------------------------------------------------------------------------
def binary_dice_iou(pred: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> tuple[float, float]:
  """Dice and IoU of `pred > threshold` (0 when the union is empty)."""
  binary = pred > threshold
  tp = np.count_nonzero(binary & gt)
  pp, fg = np.count_nonzero(binary), np.count_nonzero(gt)
  dice = 2 * tp / (fg + pp) if fg + pp else 0.0
  iou = tp / (fg + pp - tp) if fg + pp - tp else 0.0
  return float(dice), float(iou)


def image_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
  """Fixed-size per-image record of every metric.

  Args:
    pred: (H, W) uint8 map, or float probabilities in [0, 1], at the ground truth's size.
    gt: (H, W) bool mask.

  Returns:
    {'dice_curve', 'iou_curve', 'em_curve'}: (256,) float64 indexed by threshold level k
    (binary map = quantised pred >= k); {'em_adaptive', 's_alpha', 'fw', 'mae', 'dice@0.5',
    'iou@0.5'}: float64 scalars.
  """
  gt = _check_pair(np.asarray(pred), np.asarray(gt))
  pred = normalize_prediction(pred)
  fg = int(np.count_nonzero(gt))
  tp, pp = threshold_counts(quantize(pred), gt)
  dice, iou = dice_iou_curves(tp, pp, fg)
  dice05, iou05 = binary_dice_iou(pred, gt)
  return {
      "dice_curve": dice,
      "iou_curve": iou,
      "em_curve": enhanced_alignment(tp, pp, fg, gt.size),
      "em_adaptive": np.float64(adaptive_emeasure(pred, gt)),
      "s_alpha": np.float64(smeasure(pred, gt)),
      "fw": np.float64(weighted_fmeasure(pred, gt)),
      "mae": np.float64(np.mean(np.abs(pred - gt))),
      "dice@0.5": np.float64(dice05),
      "iou@0.5": np.float64(iou05),
  }


def aggregate(records: Sequence[dict]) -> dict[str, float]:
  """Dataset-level scores: curves are averaged over images first, then reduced over thresholds."""
  if not records:
    raise ValueError("no images to aggregate")
  mean = {k: np.mean(np.stack([np.asarray(r[k], np.float64) for r in records]), axis=0)
          for k in records[0]}
  return {
      "mDSC": float(mean["dice_curve"].mean()),
      "mIoU": float(mean["iou_curve"].mean()),
      "S_alpha": float(mean["s_alpha"]),
      "F_beta_w": float(mean["fw"]),
      "E_phi_max": float(mean["em_curve"].max()),
      "MAE": float(mean["mae"]),
      "E_phi_mean": float(mean["em_curve"].mean()),
      "E_phi_adaptive": float(mean["em_adaptive"]),
      "maxDSC": float(mean["dice_curve"].max()),
      "maxIoU": float(mean["iou_curve"].max()),
      "Dice@0.5": float(mean["dice@0.5"]),
      "IoU@0.5": float(mean["iou@0.5"]),
  }


def split_batch_records(batch: dict) -> list[dict[str, np.ndarray]]:
  """Per-image records from a batched dict of (B, ...) arrays, dropping rows with valid == False."""
  batch = {k: np.asarray(v) for k, v in batch.items()}
  valid = batch.pop("valid", None)
  n = len(next(iter(batch.values())))
  keep = range(n) if valid is None else np.flatnonzero(valid)
  return [{k: v[i].astype(np.float64) for k, v in batch.items()} for i in keep]


class PolypMetrics:
  """Accumulates per-image records; `result()` gives the dataset-level scores.

  Host images go through `update(pred, gt)`; outputs of the jitted
  `metrics_jax.batch_image_scores` through `update_batch(records)`.
  """

  def __init__(self):
    self.records: list[dict[str, np.ndarray]] = []

  @property
  def num_images(self) -> int:
    return len(self.records)

  def update(self, pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
    """Scores one image (pred at the GT's size) and returns its record."""
    record = image_scores(pred, gt)
    self.records.append(record)
    return record

  def update_batch(self, batch: dict) -> None:
    """Adds device-computed records (dict of (B, ...) arrays with an optional 'valid' mask)."""
    self.records.extend(split_batch_records(batch))

  def result(self) -> dict[str, float]:
    return aggregate(self.records)


# ------------------------------------------------------------------------------------------------
# Resizing predictions to the ground truth's size.
# ------------------------------------------------------------------------------------------------
def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Source indices and weights of 1-D linear interpolation with half-pixel centres."""
  src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
  src = np.maximum(src, 0.0)  # torch clamps negative source coordinates (align_corners=False)
  i0 = np.minimum(np.floor(src).astype(np.intp), n_in - 1)
  i1 = np.minimum(i0 + 1, n_in - 1)
  return i0, i1, src - i0


def resize_prediction(prob_or_logits: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """Bilinear resize of (..., h, w) maps to (..., H, W), align_corners=False, no antialiasing.

  This is torch's `F.interpolate(mode='bilinear', align_corners=False)` used by PraNet's test
  script to bring logits to the GT's size (then sigmoid). Returns float64; uint8 input is scaled to
  [0, 1] first.
  """
  x = np.asarray(prob_or_logits)
  x = x / 255 if x.dtype == np.uint8 else x.astype(np.float64)
  h, w = x.shape[-2:]
  out_h, out_w = shape
  if (h, w) == (out_h, out_w):
    return x
  y0, y1, wy = _linear_taps(h, out_h)
  x0, x1, wx = _linear_taps(w, out_w)
  rows = x[..., y0, :] * (1 - wy)[:, None] + x[..., y1, :] * wy[:, None]  # (..., H, w)
  return rows[..., x0] * (1 - wx) + rows[..., x1] * wx  # (..., H, W)
