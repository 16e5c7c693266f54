"""Polyp segmentation metrics with the PraNet toolbox conventions, on host (numpy + scipy).

The tables of PraNet, SANet, LDNet and the BSA-Net paper use the PraNet MATLAB toolbox
(DengPingFan/PraNet:eval/main.m); lartpang/PySODMetrics 1.6.2 is its Python port and our reference in
tests. Conventions (docs/DECISIONS.md#d4, definitions in R7):

- prediction: uint8 maps are divided by 255; every map is then min–max normalised per image, unless
  it is constant (then it is left as is). Float maps must already lie in [0, 1].
- threshold curves: the map is quantised to uint8 by `floor(p * 255)` and binarised with `>= k` for
  k = 0..255. Our curves are indexed by k (ascending); pysodmetrics stores them for k = 255..0.
- mDSC / mIoU: the mean over the 256 thresholds of the dataset-mean Dice / IoU curve ("meanDic").
- E_phi_max: the max over thresholds of the dataset-mean E-measure curve; E_phi_mean its mean;
  E_phi_adaptive thresholds each map at min(2 * mean, 1).
- S_alpha with alpha = 0.5; F_beta_w (Margolin et al.) with beta^2 = 1; MAE of the normalised map.
- Dice@0.5 / IoU@0.5: per-image scores of `p > 0.5` (pysodmetrics' "binary" mode), averaged.

`image_scores` turns one (pred, gt) pair into a fixed-size record, `score_pairs` many (faster: uint8
maps are scored in batches); `aggregate` reduces records to dataset-level numbers (`dataset_scores`
does both); `PolypMetrics` is an accumulator. uint8 maps are scored from histograms of their 256
values, float maps pixel by pixel; both give the same records (tests/test_metrics.py). What remains
costly is F^w's exact distance transform (scipy), the same one pysodmetrics runs.
"""

from __future__ import annotations

import math
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
def normalize_prediction(pred: np.ndarray, in_place: bool = False) -> np.ndarray:
  """MATLAB's `mapminmax(im2double(pred))`: float64 in [0, 1]; constant maps stay unchanged.

  With `in_place`, a float64 `pred` is normalised in its own memory and returned: for a caller
  whose map is its own (the eval CLI's resized predictions), one full-size map instead of two.
  """
  pred = np.asarray(pred)
  if pred.dtype == np.bool_:
    pred = pred.astype(np.uint8) * 255
  if pred.dtype == np.uint8:
    pred = pred / 255
  elif np.issubdtype(pred.dtype, np.floating):
    if not (in_place and pred.dtype == np.float64):
      pred = pred.astype(np.float64)
    if not np.all(np.isfinite(pred)) or pred.min() < 0 or pred.max() > 1:
      raise ValueError("float predictions must be finite probabilities in [0, 1]; apply a sigmoid "
                       "to logits first")
  else:
    raise TypeError(f"prediction must be uint8, bool or float in [0, 1], got {pred.dtype}")
  lo, hi = pred.min(), pred.max()
  if hi != lo:  # (pred - lo) / (hi - lo), on an array that is ours (or given to us)
    pred -= lo
    pred /= hi - lo
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
  return counts_at_least(hist)


def counts_at_least(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """TP(k) and P(k), k = 0..255, from (..., 2, 256) [background, foreground] level histograms."""
  at_least = np.cumsum(hist[..., ::-1], axis=-1)[..., ::-1]  # count of levels >= k
  tp = at_least[..., 1, :]
  return tp, at_least[..., 0, :] + tp


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  """num / den with 0 where den == 0 (pysodmetrics' handler convention)."""
  den = np.asarray(den, np.float64)
  return np.divide(num, den, out=np.zeros_like(den), where=den != 0)


def dice_iou_curves(tp: np.ndarray, pp: np.ndarray, fg: int) -> tuple[np.ndarray, np.ndarray]:
  """Dice and IoU at each threshold from TP, predicted-positive counts and |G|."""
  dice = _safe_divide(2 * tp, fg + pp)
  iou = _safe_divide(tp, fg + pp - tp)
  return dice, iou


def _pow2_as_python(x) -> np.ndarray:
  """x ** 2 elementwise as Python floats compute it (C pow), which can differ from numpy's x * x in
  the last bit; pysodmetrics squares its per-image scalars this way."""
  x = np.asarray(x, np.float64)
  return np.array([v**2 for v in x.ravel().tolist()]).reshape(x.shape)


def enhanced_alignment(tp, pp, fg, size, scalar_pred: bool = False):
  """E-measure (Fan et al., IJCAI'18) of binary maps given their counts.

  Elementwise on arrays (thresholds k, images); fg and size broadcast against tp. The GT's de-meaned
  values are squared as pysodmetrics squares them (Python floats), and so are the prediction's if
  `scalar_pred` (its adaptive E-measure, one binary map per image), for bit-equal results.
  """
  tp = np.asarray(tp, np.float64)
  pp = np.asarray(pp, np.float64)
  fg = np.asarray(fg, np.float64)
  size = np.asarray(size, np.float64)
  # The aligned matrix takes one value on each of the four (pred, gt) regions.
  fp, fn = pp - tp, fg - tp
  tn = size - pp - fn
  pred_fg, pred_bg = 1 - pp / size, 0 - pp / size  # de-meaned binary prediction values
  gt_fg, gt_bg = 1 - fg / size, 0 - fg / size
  pred_square = _pow2_as_python if scalar_pred else np.square
  total = 0.0
  for count, a, b in ((tp, pred_fg, gt_fg), (fp, pred_fg, gt_bg), (fn, pred_bg, gt_fg),
                      (tn, pred_bg, gt_bg)):
    align = 2 * (a * b) / (pred_square(a) + _pow2_as_python(b) + EPS)
    total = total + (align + 1)**2 / 4 * count
  # An empty or a full GT: the toolbox counts the pixels the prediction gets right instead.
  total = np.where(fg == 0, size - pp, np.where(fg == size, pp, total))
  return total / (size - 1 + EPS)


def adaptive_emeasure(pred: np.ndarray, gt: np.ndarray) -> float:
  """E-measure of `pred >= min(2 * mean(pred), 1)` (unquantised)."""
  binary = pred >= min(2 * pred.mean(), 1)
  tp = np.count_nonzero(binary & gt)
  return float(enhanced_alignment(tp, np.count_nonzero(binary), int(np.count_nonzero(gt)), gt.size,
                                  scalar_pred=True))


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


def foreground_profiles(gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Foreground pixel counts per row (H,) and per column (W,): the centroid and the bounding box."""
  return np.count_nonzero(gt, axis=1), np.count_nonzero(gt, axis=0)


def centroid_split(gt: np.ndarray, profiles=None) -> tuple[int, int]:
  """Rows/cols before the split: the rounded foreground centroid, +1 as in the 1-based toolbox.

  `profiles` are `foreground_profiles(gt)` if the caller has them already.
  """
  rows, cols = foreground_profiles(gt) if profiles is None else profiles
  fg = rows.sum()
  # Exact integer sums, then one division: the same float64 as the mean of the coordinates.
  cy = np.dot(rows, np.arange(len(rows))) / fg
  cx = np.dot(cols, np.arange(len(cols))) / fg
  return int(np.round(cy)) + 1, int(np.round(cx)) + 1  # round half to even, like the reference


def quadrants(split: tuple[int, int]) -> tuple[tuple[slice, slice], ...]:
  """Index of the top-left, top-right, bottom-left and bottom-right parts around `split`."""
  cy, cx = split
  top, bottom, left, right = slice(None, cy), slice(cy, None), slice(None, cx), slice(cx, None)
  return (top, left), (top, right), (bottom, left), (bottom, right)


def _weighted_region_sum(ssims, shape, split):
  """Sum of the quadrants' SSIMs (..., 4) weighted by their area fractions (the toolbox's w1..w4).

  shape and split are (H, W) and (rows, cols) before the split, or (B, 2) arrays of them.
  """
  ssims, shape, split = np.asarray(ssims), np.asarray(shape), np.asarray(split)
  (h, w), (cy, cx) = shape.T, split.T
  area = h * w
  w_lt = cx * cy / area
  w_rt = cy * (w - cx) / area
  w_lb = (h - cy) * cx / area
  w_rb = 1 - w_lt - w_rt - w_lb
  return (ssims[..., 0] * w_lt + ssims[..., 1] * w_rt + ssims[..., 2] * w_lb +
          ssims[..., 3] * w_rb)


def _region_score(pred: np.ndarray, gt: np.ndarray) -> float:
  """Area-weighted SSIM of the four quadrants around the foreground centroid."""
  split = centroid_split(gt)
  return _weighted_region_sum([_ssim(pred[q], gt[q]) for q in quadrants(split)], gt.shape, split)


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


def _importance_table() -> np.ndarray:
  """The toolbox's background importance 2 - 0.5^(d/5) at d = sqrt(k), for squared distances k.

  Entry 0 is 0, not the foreground's importance 1: foreground pixels are the only ones at distance
  0, so a lookup in this table also drops them from the background sum. The value is computed as
  pysodmetrics computes it (`2 - exp(log(0.5) / 5 * d)` on float64 d = sqrt(k)), so it has the same
  bits. From d = 265 on, 0.5^(d/5) <= 2^-53 and the value is exactly 2.0 in float64; the table ends
  at the first such k and lookups clip larger k to that last entry.
  """
  d = np.sqrt(np.arange(80_000, dtype=np.float64))
  table = 2 - np.exp(np.log(0.5) / 5 * d)
  last = int(np.flatnonzero(table != 2.0)[-1]) + 1  # first k from which every value is 2.0
  table[0] = 0.0
  return table[:last + 1]


_IMPORTANCE = _importance_table()
# Pixels farther than this from the foreground have importance exactly 2.0 (the table's last entry).
FAR_DISTANCE = math.isqrt(len(_IMPORTANCE) - 2)


class Scratch:
  """Reusable work arrays for scoring many maps in a row.

  Image-sized temporaries allocated afresh for every map are fresh pages from the OS each time; on
  352x352 maps those page faults took as long as the arithmetic itself. One Scratch per batch keeps
  a few flat buffers (grown to the largest map seen) and hands out views of them. Not thread-safe:
  one per thread.
  """

  # Buffers up to this size are kept for the next map. Larger ones (a 12000x12000 map's) are fresh
  # arrays, freed as soon as their user drops them: kept, every work array of F^w would stay
  # allocated at once (59 bytes per pixel), where only a few are alive at any time.
  KEEP_BYTES = 64 << 20

  def __init__(self):
    self._buffers: dict[str, np.ndarray] = {}

  def get(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A C-contiguous `shape` array of `dtype` on buffer `name`; its contents are undefined."""
    size = math.prod(shape)
    if size * np.dtype(dtype).itemsize > self.KEEP_BYTES:
      self._buffers.pop(name, None)
      return np.empty(shape, dtype)
    buffer = self._buffers.get(name)
    if buffer is None or buffer.size < size or buffer.dtype != dtype:
      buffer = self._buffers[name] = np.empty(size, dtype)
    return buffer[:size].reshape(shape)


def squared_distances(nearest: np.ndarray, start: int, stop: int,
                      scratch: Scratch | None = None) -> np.ndarray:
  """(stop - start, W) int64 squared distance from the pixels of rows start:stop to the pixel
  `nearest` (2, H, W) points to; a band of rows at a time, on work arrays from `scratch`."""
  scratch = Scratch() if scratch is None else scratch
  shape = (stop - start, nearest.shape[2])
  dy = scratch.get("dy", shape, np.int64)
  np.subtract(nearest[0, start:stop], np.arange(start, stop)[:, None], out=dy, dtype=np.int64)
  dx = scratch.get("dx", shape, np.int64)
  np.subtract(nearest[1, start:stop], np.arange(shape[1]), out=dx, dtype=np.int64)
  dy *= dy
  dx *= dx
  dy += dx
  return dy


# Whole-image work of F^w beyond the distance transform runs in bands of about this many pixels.
BAND_PIXELS = 1 << 20


def _bands(height: int, width: int, halo: int = 0):
  """(start, stop, lo, hi) per band of rows: the band start:stop and its rows lo:hi with `halo`
  more rows on each side (clipped to the image)."""
  step = max(1, BAND_PIXELS // max(1, width))
  for start in range(0, height, step):
    stop = min(height, start + step)
    yield start, stop, max(0, start - halo), min(height, stop + halo)


# Leaves of `pairwise_sum`: blocks of at most this many values are summed by np.sum itself.
SUM_BLOCK = 1 << 20


def pairwise_sum(block_sum, size: int, start: int = 0):
  """np.sum of `size` float64 values (a contiguous array's) computed block by block, same bits.

  numpy sums a contiguous float64 array pairwise: more than 128 values are split into halves, the
  first half rounded down to a multiple of 8, and the two sums added. This repeats that split down
  to blocks of at most SUM_BLOCK values, whose np.sum is `block_sum(start, size)`: a caller that
  can compute any block of values sums them without holding them all (tests check it against
  np.sum).
  """
  if size <= SUM_BLOCK:
    return block_sum(start, size)
  half = size // 2
  half -= half % 8
  return pairwise_sum(block_sum, half, start) + pairwise_sum(block_sum, size - half, start + half)


def _map_values(pred: np.ndarray, values: np.ndarray | None, out: np.ndarray) -> np.ndarray:
  """The [0, 1] values of (part of) a map: a float map itself, or a uint8 map's levels looked up
  in its table `values` (256,) of `normalize_prediction` results into `out` (float64, pred's
  shape), which gives the same bits."""
  if values is None:
    return pred
  return values.take(pred, out=out, mode="clip")  # levels are 0..255: nothing is clipped


def _bounding_box(profiles, shape, margin: int) -> tuple[slice, slice]:
  """Rows and columns of the foreground's bounding box grown by `margin`, clipped to the image."""
  (r0, r1), (c0, c1) = [(np.flatnonzero(p)[[0, -1]]) for p in profiles]
  return (slice(max(r0 - margin, 0), min(r1 + 1 + margin, shape[0])),
          slice(max(c0 - margin, 0), min(c1 + 1 + margin, shape[1])))


def _union(a: tuple[slice, slice], b: tuple[slice, slice]) -> tuple[slice, slice]:
  """The smallest box holding the boxes a and b."""
  return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def distance_window(pred: np.ndarray, profiles, zeros: int | None = None,
                    values: np.ndarray | None = None) -> tuple[slice, slice]:
  """The box the distance transform has to cover for F^w; outside it, pred is 0 or importance is 2.

  Every background pixel's error is weighted by an importance that depends on its distance to the
  foreground. A pixel whose prediction is exactly 0 adds nothing, and beyond FAR_DISTANCE the
  importance is exactly 2.0, so the transform needs only the foreground's bounding box (grown by the
  blur radius) and the nonzero predictions within FAR_DISTANCE of it. Every foreground pixel lies in
  the box, so distances and nearest pixels inside it are those of the whole image (scipy's nearest
  pixels, ties included, do not depend on margins without foreground; tested). The search for
  nonzero predictions is skipped when fewer than a quarter of the pixels are 0 (`zeros`, if known).
  """
  near = _bounding_box(profiles, pred.shape, WFM_KERNEL // 2)
  far = _bounding_box(profiles, pred.shape, FAR_DISTANCE)
  if zeros is not None and 4 * zeros < pred.size:
    return far
  nonzero = pred[far] != 0 if values is None else (values != 0).take(pred[far])
  rows, cols = np.flatnonzero(nonzero.any(axis=1)), np.flatnonzero(nonzero.any(axis=0))
  if not rows.size:
    return near
  (r, c) = far
  return _union(near, (slice(r.start + rows[0], r.start + rows[-1] + 1),
                       slice(c.start + cols[0], c.start + cols[-1] + 1)))


def _sum_outside(pred: np.ndarray, window: tuple[slice, slice], values=None) -> float:
  """Sum of the map's values over the pixels outside `window` (four strips around it).

  A uint8 map's strips are looked up into arrays laid out like the float map's strips (whole rows
  above and below; rows of a wider array beside), so numpy sums them in the same order.
  """
  rows, cols = window
  if values is None:
    return float(pred[:rows.start].sum() + pred[rows.stop:].sum() + pred[rows, :cols.start].sum() +
                 pred[rows, cols.stop:].sum())
  total = values.take(pred[:rows.start]).sum() + values.take(pred[rows.stop:]).sum()
  for side in (pred[rows, :cols.start], pred[rows, cols.stop:]):
    strided = np.empty((side.shape[0], side.shape[1] + 1))[:, :side.shape[1]]
    total += values.take(side, out=strided).sum()
  return float(total)


def _foreground_error_sum(pred: np.ndarray, gt: np.ndarray, nearest: np.ndarray,
                          window: tuple[slice, slice], profiles, scratch: Scratch,
                          values: np.ndarray | None = None) -> float:
  """Sum over the foreground of min(blurred error, error), the toolbox's MIN_E_EA on the foreground.

  nearest: (2, h, w) nearest foreground pixels of `window`, in its coordinates. The error
  |pred - gt| is 1 - pred on the foreground; background pixels take the error of their nearest
  foreground pixel before the 7x7 Gaussian blur. Only foreground values of the blur are used, so it
  runs on the foreground's bounding box grown by the kernel radius: inside it every blurred
  foreground value sees the same neighbours as on the whole image (zeros beyond the image's edge).
  The box is done in bands of rows, each with the 3 rows above and below that the vertical blur
  reads; the foreground values are gathered in raster order and summed once, as over the whole box.
  """
  rows, cols = _bounding_box(profiles, gt.shape, WFM_KERNEL // 2)
  (r0, c0), width = (window[0].start, window[1].start), gt.shape[1]
  box_rows = slice(rows.start - r0, rows.stop - r0)
  box_cols = slice(cols.start - c0, cols.stop - c0)
  height, box_width = rows.stop - rows.start, cols.stop - cols.start
  foreground = gt[rows, cols]
  picked = scratch.get("picked", (int(np.count_nonzero(foreground)),), np.float64)
  g = gaussian_kernel_1d()
  filled, pixels = 0, np.ravel(pred)
  for start, stop, lo, hi in _bands(height, box_width, WFM_KERNEL // 2):
    shape, core = (hi - lo, box_width), slice(start - lo, stop - lo)
    flat = scratch.get("flat", shape, np.intp)  # flat image index of each pixel's nearest one
    np.multiply(nearest[0, box_rows][lo:hi, box_cols], width, out=flat, dtype=np.intp)
    flat += nearest[1, box_rows][lo:hi, box_cols]
    flat += r0 * width + c0
    nearest_pred = pixels.take(flat, out=scratch.get("nearest_pred", shape, pred.dtype),
                               mode="clip")  # the indices are inside the image
    err = _map_values(nearest_pred, values, scratch.get("err", shape, np.float64))
    np.subtract(1, err, out=err)
    columns = scratch.get("columns", shape, np.float64)
    ndimage.correlate1d(err, g, axis=0, output=columns, mode="constant", cval=0.0)
    blurred = scratch.get("blurred", (stop - start, box_width), np.float64)
    ndimage.correlate1d(columns[core], g, axis=1, output=blurred, mode="constant", cval=0.0)
    np.minimum(blurred, err[core], out=blurred)
    # Foreground pixels are their own nearest pixel, so err there is their own error.
    band = blurred[foreground[start:stop]]
    picked[filled:filled + len(band)] = band
    filled += len(band)
  return float(np.sum(picked))


def weighted_fmeasure(pred: np.ndarray, gt: np.ndarray, beta2: float = F_BETA2, profiles=None,
                      zeros: int | None = None, scratch: Scratch | None = None,
                      values: np.ndarray | None = None) -> float:
  """F^w_beta of a [0, 1] map; 0 for an empty GT (MATLAB gives NaN, pysodmetrics 0).

  The exact distance transform (scipy's, the toolbox's bwdist(GT) with nearest indices) is the main
  cost; it runs on `distance_window` only. The rest avoids whole-image float work: the background
  term is a table lookup of the importance by integer squared distance times the prediction, and the
  blur runs on the foreground's bounding box. `profiles` are `foreground_profiles(gt)` and `zeros`
  the number of exact zeros in pred, if the caller has them; `scratch` lends the work arrays.
  With `values` (256,), pred is a uint8 map and `values[pred]` the map scored (`value_tables`),
  looked up band by band instead of being made whole.

  Memory: besides pred and gt, the transform's int32 indices (8 bytes per pixel of the window) and
  bands; scipy takes 9 bytes per pixel more while it runs. A 12000x12000 pair peaked at 9.9 GB
  before (every work array alive at once, 59 bytes per pixel of the window).
  """
  rows, cols = foreground_profiles(gt) if profiles is None else profiles
  fg = int(rows.sum())
  if fg == 0:
    return 0.0
  scratch = Scratch() if scratch is None else scratch
  window = distance_window(pred, (rows, cols), zeros, values)
  shape = gt[window].shape
  nearest = scratch.get("nearest", (2,) + shape, np.int32)
  # No name holds the background mask: scipy converts it to int8 first, and then it can go.
  ndimage.distance_transform_edt(
      np.logical_not(gt[window], out=scratch.get("background", shape, bool)),
      return_distances=False, return_indices=True, indices=nearest)
  err_fg = _foreground_error_sum(pred, gt, nearest, window, (rows, cols), scratch, values)
  part = pred[window]

  def weighted_errors(start: int, size: int) -> float:
    """np.sum of the window's raster-order values start:start + size of pred * importance (the
    background's weighted error; importance is 0 on the foreground)."""
    first, last = start // shape[1], (start + size - 1) // shape[1] + 1  # the rows holding them
    band = scratch.get("importance", (last - first, shape[1]), np.float64)
    _IMPORTANCE.take(squared_distances(nearest, first, last, scratch), mode="clip", out=band)
    band *= _map_values(part[first:last], values, scratch.get("pred", band.shape, np.float64))
    offset = start - first * shape[1]
    return np.sum(band.reshape(-1)[offset:offset + size])

  # Summed as np.sum sums the whole window's array, without that array; outside the window
  # importance is 2 or pred is 0.
  fp_w = float(pairwise_sum(weighted_errors, math.prod(shape)))
  fp_w += 2 * _sum_outside(pred, window, values)
  tp_w = fg - err_fg
  recall = 1 - err_fg / fg
  precision = tp_w / (tp_w + fp_w + EPS)
  return float((1 + beta2) * recall * precision / (recall + beta2 * precision + EPS))


# ------------------------------------------------------------------------------------------------
# uint8 maps: every metric but F^w from histograms of the 256 input values.
# ------------------------------------------------------------------------------------------------
def value_tables(lowest, highest) -> np.ndarray:
  """(B, 256) what `normalize_prediction` makes of each uint8 value, for maps spanning
  [lowest, highest].

  normalize_prediction applies the same float64 operations to every pixel, so looking each pixel's
  value up in its map's row gives the same bits. Values outside [lowest, highest] do not occur in
  that map; they are clipped into [0, 1] so that `quantize` of the table stays defined.
  """
  x = np.arange(256) / 255
  lo, hi = x[np.asarray(lowest)][:, None], x[np.asarray(highest)][:, None]  # (B, 1)
  span = hi - lo
  scaled = np.clip((x - lo) / np.where(span != 0, span, 1.0), 0.0, 1.0)
  return np.where(span != 0, scaled, x)  # a constant map is left as is


def quadrant_histograms(pred: np.ndarray, gt: np.ndarray, split: tuple[int, int],
                        scratch: Scratch | None = None) -> np.ndarray:
  """(4, 2, 256) pixel counts of each uint8 value per quadrant (as `quadrants`) and class (bg, fg).

  One bincount of a uint16 code (quadrant, class, value) gives all of them. With split = gt.shape
  everything falls into quadrant 0.
  """
  cy, cx = split
  code = (Scratch() if scratch is None else scratch).get("code", gt.shape, np.uint16)
  np.copyto(code, gt)
  code <<= 8
  code |= pred
  code[cy:] |= 1024
  code[:, cx:] |= 512
  return np.bincount(code.ravel(), minlength=8 * NUM_THRESHOLDS).reshape(4, 2, NUM_THRESHOLDS)


def _sample_moments(values: np.ndarray, counts: np.ndarray):
  """Size, mean and sum of squared deviations of samples given as counts (..., 256) of `values`.

  Two passes like numpy's mean and std; an empty sample gets mean 0.
  """
  n = counts.sum(-1)
  mean = (counts * values).sum(-1) / np.maximum(n, 1)
  squares = (counts * (values - mean[..., None])**2).sum(-1)
  return n, mean, squares


def _object_similarities(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
  """`_object_similarity` of samples given as counts (B, 256) of `values` (B, 256)."""
  n, mean, squares = _sample_moments(values, counts)
  std = np.sqrt(np.where(n > 1, squares / np.maximum(n - 1, 1), 0.0))  # ddof=1; 0 for one pixel
  return 2 * mean / (mean**2 + 1 + std + EPS)


def _quadrant_ssims(values: np.ndarray, hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(B, 4) `_ssim` of every quadrant from histograms (B, 4, 2, 256), and which are constant.

  A quadrant where both the prediction and the GT are constant scores 1 or 0 depending on whether
  the variance of the prediction comes out exactly 0, i.e. on the rounding of its mean: only the
  pixels' own summation reproduces that, so the caller scores those from pixels.
  """
  counts = hist.sum(2)  # (B, 4, 256)
  n, x, squares = _sample_moments(values[:, None], counts)  # (B, 4)
  n_fg = hist[:, :, 1].sum(-1)
  y = n_fg / np.maximum(n, 1)
  denom = n - 1 + EPS
  dev = values[:, None] - x[..., None]  # (B, 4, 256)
  var_x = squares / denom
  var_y = (n_fg * (1 - y)**2 + (n - n_fg) * y**2) / denom
  cov = ((hist[:, :, 1] * dev).sum(-1) * (1 - y) - (hist[:, :, 0] * dev).sum(-1) * y) / denom
  num = 4 * x * y * cov
  den = (x**2 + y**2) * (var_x + var_y)
  ssims = np.where(num != 0, num / (den + EPS), np.where(den == 0, 1.0, 0.0))
  ssims = np.where(n == 0, 0.0, ssims)  # an empty quadrant has zero weight
  constant = (n > 0) & (np.count_nonzero(counts, axis=-1) == 1) & ((n_fg == 0) | (n_fg == n))
  return ssims, constant


def smeasures_from_histograms(values, hist, shapes, splits, pixel_ssim,
                              alpha: float = S_ALPHA) -> np.ndarray:
  """(B,) `smeasure` of B uint8 maps from value tables (B, 256) and `quadrant_histograms` (B, ...).

  shapes, splits: (B, 2). pixel_ssim(b, q) scores quadrant q of map b from its pixels; it is called
  for constant quadrants only (see `_quadrant_ssims`).
  """
  counts = hist.sum(1)  # (B, 2, 256)
  fg, size = counts[:, 1].sum(-1), counts.sum((1, 2))
  mean = (counts.sum(1) * values).sum(-1) / size
  fg_fraction = fg / size
  object_score = (_object_similarities(values, counts[:, 1]) * fg_fraction +
                  _object_similarities(1 - values, counts[:, 0]) * (1 - fg_fraction))
  ssims, constant = _quadrant_ssims(values, hist)
  constant &= ((fg > 0) & (fg < size))[:, None]
  for b, q in zip(*np.nonzero(constant)):
    ssims[b, q] = pixel_ssim(b, q)
  score = np.maximum(0.0, object_score * alpha + _weighted_region_sum(ssims, shapes, splits) *
                     (1 - alpha))
  return np.where(fg == 0, 1 - mean, np.where(fg == size, mean, score))


def adaptive_emeasures_from_counts(values, counts, pixel_mean) -> np.ndarray:
  """(B,) `adaptive_emeasure` from value tables (B, 256) and [bg, fg] value counts (B, 2, 256).

  The mean from the histogram may differ from numpy's in the last bits. It is used unless a value
  present in the map lies so close to the threshold that this could flip it; then pixel_mean(b) is.
  """
  total = counts.sum(1)  # (B, 256)
  fg, size = counts[:, 1].sum(-1), total.sum(-1)
  mean = (total * values).sum(-1) / size
  slack = 1e-12  # far above the rounding of either mean (both < 1e-14 relative)
  low = np.minimum(2 * (mean - slack), 1)[:, None]
  high = np.minimum(2 * (mean + slack), 1)[:, None]
  unsure = np.any((total > 0) & ((values >= low) != (values >= high)), axis=-1)
  for b in np.flatnonzero(unsure):
    mean[b] = pixel_mean(b)
  binary = values >= np.minimum(2 * mean, 1)[:, None]
  return enhanced_alignment((counts[:, 1] * binary).sum(-1), (total * binary).sum(-1), fg, size,
                            scalar_pred=True)


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


def pixel_image_scores(pred: np.ndarray, gt: np.ndarray,
                       in_place: bool = False) -> dict[str, np.ndarray]:
  """`image_scores` computed on the normalised float map pixel by pixel (any prediction dtype).

  The path for float predictions, and the reference the histogram path for uint8 maps is tested on.
  `in_place`: a float64 pred is normalised in its own memory (`normalize_prediction`).
  """
  gt = _check_pair(np.asarray(pred), np.asarray(gt))
  pred = normalize_prediction(pred, in_place)
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


def _level_counts(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
  """(B, 2, 256) pixel counts per quantised level from counts per uint8 value (B, 2, 256)."""
  batch = len(values)
  bins = np.arange(2 * batch).reshape(batch, 2, 1) * NUM_THRESHOLDS + quantize(values)[:, None]
  return np.bincount(bins.ravel(), weights=counts.ravel(),
                     minlength=2 * batch * NUM_THRESHOLDS).reshape(batch, 2, NUM_THRESHOLDS)


def uint8_batch_scores(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray],
                       scratch: Scratch | None = None) -> dict:
  """`image_scores` of B uint8 maps and bool masks (any sizes; validated by the caller, as
  `score_pairs` does) as a dict of (B, ...) arrays, the format of `split_batch_records`.

  One bincount per image gives its value counts per class and S-measure quadrant. The threshold
  curves, MAE, S-measure, E-measures and Dice@0.5 of all B maps then follow together from these
  (B, 4, 2, 256) counts and a (B, 256) table of normalised values; only F^w (the distance transform)
  touches every pixel again, looking its values up in that table. Equal to `pixel_image_scores`
  (tested). Work arrays come from `scratch` (largest map first, so they are allocated once).
  """
  profiles = [foreground_profiles(gt) for gt in gts]
  fg = np.array([rows.sum() for rows, _ in profiles])
  shapes = np.array([gt.shape for gt in gts]).reshape(-1, 2)
  sizes = shapes.prod(1)
  splits = np.array([centroid_split(gt, p) if 0 < f < gt.size else gt.shape
                     for gt, p, f in zip(gts, profiles, fg)]).reshape(-1, 2)
  scratch = Scratch() if scratch is None else scratch
  largest_first = np.argsort(-sizes, kind="stable")
  hist = np.zeros((len(gts), 4, 2, NUM_THRESHOLDS), np.intp)
  for b in largest_first:
    hist[b] = quadrant_histograms(preds[b], gts[b], splits[b], scratch)
  counts = hist.sum(1)  # (B, 2, 256): background, foreground
  present = counts.sum(1) > 0
  lowest, highest = present.argmax(-1), NUM_THRESHOLDS - 1 - present[:, ::-1].argmax(-1)
  values = value_tables(lowest, highest)
  zeros = (counts.sum(1) * (values == 0)).sum(-1)  # pixels whose normalised value is 0

  def prob(b):  # map b normalised, bit-equal to normalize_prediction(preds[b])
    return values[b].take(preds[b])

  def fw(b):  # on the uint8 map and its table: no image-sized float map
    return weighted_fmeasure(preds[b], gts[b], profiles=profiles[b], zeros=zeros[b],
                             scratch=scratch, values=values[b])

  def pixel_ssim(b, q):
    part = quadrants(splits[b])[q]
    return _ssim(prob(b)[part], gts[b][part])

  tp, pp = counts_at_least(_level_counts(values, counts))
  dice, iou = dice_iou_curves(tp, pp, fg[:, None])
  above = values > 0.5
  tp05, pp05 = (counts[:, 1] * above).sum(-1), (counts.sum(1) * above).sum(-1)
  return {
      "dice_curve": dice,
      "iou_curve": iou,
      "em_curve": enhanced_alignment(tp, pp, fg[:, None], sizes[:, None]),
      "em_adaptive": adaptive_emeasures_from_counts(values, counts, lambda b: prob(b).mean()),
      "s_alpha": smeasures_from_histograms(values, hist, shapes, splits, pixel_ssim),
      "fw": _in_order(fw, largest_first),
      "mae": ((counts[:, 0] * values).sum(-1) + (counts[:, 1] * (1 - values)).sum(-1)) / sizes,
      "dice@0.5": _safe_divide(2 * tp05, fg + pp05),
      "iou@0.5": _safe_divide(tp05, fg + pp05 - tp05),
  }


def _in_order(fn, order) -> np.ndarray:
  """[fn(b) for b = 0, 1, ...] as float64, calling fn in the given order of b."""
  out = np.zeros(len(order))
  for b in order:
    out[b] = fn(b)
  return out


def image_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
  """Fixed-size per-image record of every metric.

  Args:
    pred: (H, W) uint8 map, or float probabilities in [0, 1], at the ground truth's size.
    gt: (H, W) bool mask.

  Returns:
    {'dice_curve', 'iou_curve', 'em_curve'}: (256,) float64 indexed by threshold level k
    (binary map = quantised pred >= k); {'em_adaptive', 's_alpha', 'fw', 'mae', 'dice@0.5',
    'iou@0.5'}: float64 scalars. uint8 and bool maps are scored from histograms
    (`uint8_batch_scores`), float maps pixel by pixel (`pixel_image_scores`).
  """
  return score_pairs([(pred, gt)])[0]


def score_pairs(pairs: Sequence[tuple[np.ndarray, np.ndarray]],
                batch_size: int = 64) -> list[dict[str, np.ndarray]]:
  """`image_scores` of every (pred, gt) pair, in order; uint8 maps are scored in batches.

  Scoring many maps at once shares the small per-image work (curves, E-measure, S-measure from
  histograms) across the batch: `aggregate(score_pairs(pairs))` is the fastest way to score a set.
  """
  records, batch, scratch = [], [], Scratch()

  def flush():
    if batch:
      records.extend(split_batch_records(uint8_batch_scores(*zip(*batch), scratch=scratch)))
      batch.clear()

  for pred, gt in pairs:
    pred = np.asarray(pred)
    gt = _check_pair(pred, np.asarray(gt))
    if pred.dtype == np.bool_:
      pred = pred.astype(np.uint8) * 255
    if pred.dtype != np.uint8:
      flush()
      records.append(pixel_image_scores(pred, gt))
      continue
    batch.append((pred, gt))
    if len(batch) >= batch_size:
      flush()
  flush()
  return records


def dataset_scores(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
  """Dataset-level scores of (pred, gt) pairs: `aggregate(score_pairs(pairs))`."""
  return aggregate(score_pairs(pairs))


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


class CurveMetrics:
  """mDSC and mIoU alone (the Dice/IoU threshold curves of `image_scores`), for a cheap second score
  of the same images, e.g. BSA-Net's coarse prediction before its ARM. Equal to `PolypMetrics`'
  mDSC and mIoU of the same float maps (same normalisation, quantisation and thresholds)."""

  def __init__(self):
    self.dice: list[np.ndarray] = []
    self.iou: list[np.ndarray] = []

  @property
  def num_images(self) -> int:
    return len(self.dice)

  def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
    """Scores one float map in [0, 1] at the GT's size."""
    gt = _check_pair(np.asarray(pred), np.asarray(gt))
    tp, pp = threshold_counts(quantize(normalize_prediction(pred)), gt)
    dice, iou = dice_iou_curves(tp, pp, int(np.count_nonzero(gt)))
    self.dice.append(dice)
    self.iou.append(iou)

  def result(self) -> dict[str, float]:
    if not self.dice:
      raise ValueError("no images to aggregate")
    return {"mDSC": float(np.mean(np.stack(self.dice), axis=0).mean()),
            "mIoU": float(np.mean(np.stack(self.iou), axis=0).mean())}


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
  return resize_rows(prob_or_logits, shape, 0, shape[0])


def resize_rows(prob_or_logits: np.ndarray, shape: tuple[int, int], start: int,
                stop: int) -> np.ndarray:
  """Output rows start:stop of `resize_prediction(prob_or_logits, shape)`, with the same bits.

  Every output pixel is the same few float64 operations on the same inputs, so computing a band
  of rows at a time gives the whole map's values while holding only that band: large maps are
  resized, thresholded and written in bands (`predict`, the eval CLI).
  """
  x = np.asarray(prob_or_logits)
  h, w = x.shape[-2:]
  out_h, out_w = shape
  if (h, w) == (out_h, out_w):
    return _as_float(x[..., start:stop, :])
  y0, y1, wy = (t[start:stop] for t in _linear_taps(h, out_h))
  x0, x1, wx = _linear_taps(w, out_w)
  rows = _as_float(x[..., y0, :]) * (1 - wy)[:, None] + _as_float(x[..., y1, :]) * wy[:, None]
  return rows[..., x0] * (1 - wx) + rows[..., x1] * wx  # (..., stop - start, W)


def _as_float(x: np.ndarray) -> np.ndarray:
  """float64 values of a map: uint8 is divided by 255 (elementwise, so any part gives the same bits)."""
  return x / 255 if x.dtype == np.uint8 else x.astype(np.float64)
