"""The polyp metrics in jax.numpy, for fixed-shape batches inside a jitted eval step.

Same definitions and record keys as `metrics.py` (which documents the PraNet-toolbox conventions),
so `metrics.PolypMetrics.update_batch` can reduce device outputs to dataset-level scores. Every metric
runs on device, the weighted F-measure included: its Euclidean distance transform is exact, with the
nearest-foreground index chosen like scipy's `distance_transform_edt` (ties go to the smaller row in
the column pass, then the smaller column), so it matches the host version.

Precision: float64 when `jax_enable_x64` is on, where results equal the host version to rounding.
In float32 (the default) `floor(p * 255)` can put a pixel whose value is within float32 rounding of a
level boundary into the neighbouring level, and sums round differently: dataset-level scores then
agree with the host to ~1e-8 on real masks (tests assert < 1e-6). Tables are always made on host.

Speed: on this 2-core CPU the host path is faster (about 120 vs 40 images/s at 352x352, the
O(H W^2) distance transform dominating); the device path is for accelerators and for scoring
inside a jitted step without moving maps to host. `image_scores` accepts any mask dtype; the
helpers below it expect canonical bools (see `canonical_mask`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bsa_jax.eval import metrics as host

NUM_THRESHOLDS = host.NUM_THRESHOLDS
EPS = host.EPS
_TILE_ELEMENTS = 1 << 17  # (rows x W x W) elements per tile of the EDT's row pass


def _float_dtype():
  return jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32


def _safe_divide(num: jax.Array, den: jax.Array) -> jax.Array:
  """num / den with 0 where den == 0."""
  ok = den != 0
  return jnp.where(ok, num / jnp.where(ok, den, 1), 0)


# ------------------------------------------------------------------------------------------------
# Input conventions.
# ------------------------------------------------------------------------------------------------
def normalize_prediction(pred: jax.Array) -> jax.Array:
  """Per-image min–max to [0, 1] (uint8 divided by 255 first); constant maps stay unchanged."""
  dtype = _float_dtype()
  if pred.dtype == jnp.bool_:
    pred = canonical_mask(pred).astype(jnp.uint8) * 255
  p = pred.astype(dtype) / 255 if pred.dtype == jnp.uint8 else pred.astype(dtype)
  lo, hi = p.min(), p.max()
  span = hi - lo
  # XLA turns `x / broadcast(s)` into `x * (1 / s)`, which can map the maximum to 0.99999... and
  # level 254; the barrier keeps numpy's true division (max -> exactly 1 -> level 255).
  divisor = jax.lax.optimization_barrier(jnp.broadcast_to(jnp.where(span > 0, span, 1), p.shape))
  return jnp.where(span > 0, (p - lo) / divisor, p)


def canonical_mask(gt: jax.Array) -> jax.Array:
  """Any mask as canonical bools (0/1 bytes).

  Arrays from PIL's 1-bit images hold True as byte 255; XLA passes the bytes through, and some
  fused bool -> float conversions then produce -1.0. Comparing the raw bytes normalises them.
  """
  if gt.dtype == jnp.bool_:
    return gt.view(jnp.uint8) != 0
  return gt != 0


def quantize(pred: jax.Array) -> jax.Array:
  """int32 levels floor(p * 255) in 0..255."""
  return jnp.clip(jnp.floor(pred * 255), 0, 255).astype(jnp.int32)


# ------------------------------------------------------------------------------------------------
# Threshold curves.
# ------------------------------------------------------------------------------------------------
def threshold_counts(levels: jax.Array, gt: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per level k: TP(k) = |(levels >= k) & gt| and P(k) = |levels >= k|, both (256,) int32."""
  bins = (levels + NUM_THRESHOLDS * gt.astype(jnp.int32)).ravel()
  hist = jnp.zeros(2 * NUM_THRESHOLDS, jnp.int32).at[bins].add(1).reshape(2, NUM_THRESHOLDS)
  at_least = jnp.cumsum(hist[:, ::-1], axis=1)[:, ::-1]  # (2, 256)
  tp = at_least[1]
  return tp, at_least[0] + tp


def enhanced_alignment(tp: jax.Array, pp: jax.Array, fg: jax.Array, size: int) -> jax.Array:
  """E-measure from counts of the binary map(s); the branches for an empty/full GT as on host."""
  dtype = _float_dtype()
  tp, pp, fg = tp.astype(dtype), pp.astype(dtype), fg.astype(dtype)
  fp, fn = pp - tp, fg - tp
  tn = size - pp - fn
  pred_fg, pred_bg = 1 - pp / size, 0 - pp / size
  gt_fg, gt_bg = 1 - fg / size, 0 - fg / size
  total = jnp.zeros_like(tp)
  for count, a, b in ((tp, pred_fg, gt_fg), (fp, pred_fg, gt_bg), (fn, pred_bg, gt_fg),
                      (tn, pred_bg, gt_bg)):
    align = 2 * (a * b) / (a**2 + b**2 + EPS)
    total = total + (align + 1)**2 / 4 * count
  total = jnp.where(fg == 0, size - pp, jnp.where(fg == size, pp, total))
  return total / (size - 1 + EPS)


def adaptive_emeasure(pred: jax.Array, gt: jax.Array) -> jax.Array:
  binary = pred >= jnp.minimum(2 * pred.mean(), 1)
  return enhanced_alignment(jnp.sum(binary & gt), jnp.sum(binary), jnp.sum(gt), gt.size)


# ------------------------------------------------------------------------------------------------
# S-measure with masks in place of slices (shapes stay static).
# ------------------------------------------------------------------------------------------------
def _object_similarity(x: jax.Array, mask: jax.Array) -> jax.Array:
  """2 mean / (mean^2 + 1 + std + eps) over `mask`; std uses N-1 and is 0 for one pixel."""
  n = jnp.sum(mask)
  mean = jnp.sum(jnp.where(mask, x, 0)) / jnp.maximum(n, 1)
  var = jnp.sum(jnp.where(mask, x - mean, 0)**2) / jnp.maximum(n - 1, 1)
  std = jnp.where(n > 1, jnp.sqrt(var), 0)
  return 2 * mean / (mean**2 + 1 + std + EPS)


def _ssim(pred: jax.Array, gt: jax.Array, mask: jax.Array) -> jax.Array:
  """Single-window SSIM over `mask` (variances over N-1+eps); 0 for an empty quadrant."""
  n = jnp.sum(mask).astype(pred.dtype)
  safe_n = jnp.maximum(n, 1)
  x = jnp.sum(jnp.where(mask, pred, 0)) / safe_n
  y = jnp.sum(jnp.where(mask, gt, 0)) / safe_n
  dx = jnp.where(mask, pred - x, 0)
  dy = jnp.where(mask, gt - y, 0)
  var_x = jnp.sum(dx**2) / (n - 1 + EPS)
  var_y = jnp.sum(dy**2) / (n - 1 + EPS)
  cov = jnp.sum(dx * dy) / (n - 1 + EPS)
  num = 4 * x * y * cov
  den = (x**2 + y**2) * (var_x + var_y)
  score = jnp.where(num != 0, num / (den + EPS), jnp.where(den == 0, 1.0, 0.0))
  return jnp.where(n > 0, score, 0)


def _round_half_even_ratio(num: jax.Array, den: jax.Array) -> jax.Array:
  """round(num / den) with ties to even, exactly, for non-negative integers."""
  q = num // den
  twice_r = 2 * (num - q * den)
  return q + ((twice_r > den) | ((twice_r == den) & (q % 2 == 1))).astype(q.dtype)


def centroid_split(gt: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Rows/cols before the split: rounded foreground centroid + 1 (integer arithmetic, exact)."""
  h, w = gt.shape
  fg = jnp.maximum(jnp.sum(gt, dtype=jnp.int32), 1)
  row_sum = jnp.dot(jnp.sum(gt, axis=1, dtype=jnp.int32), jnp.arange(h, dtype=jnp.int32))
  col_sum = jnp.dot(jnp.sum(gt, axis=0, dtype=jnp.int32), jnp.arange(w, dtype=jnp.int32))
  return _round_half_even_ratio(row_sum, fg) + 1, _round_half_even_ratio(col_sum, fg) + 1


def _region_score(pred: jax.Array, gt_f: jax.Array, gt: jax.Array) -> jax.Array:
  """Area-weighted SSIM of the four quadrants around the foreground centroid."""
  h, w = gt.shape
  cy, cx = centroid_split(gt)
  top = (jnp.arange(h) < cy)[:, None]  # (H, 1)
  left = (jnp.arange(w) < cx)[None, :]  # (1, W)
  cy, cx = cy.astype(pred.dtype), cx.astype(pred.dtype)  # int32 / int would give float32
  area = h * w
  w_lt = cx * cy / area
  w_rt = cy * (w - cx) / area
  w_lb = (h - cy) * cx / area
  w_rb = 1 - w_lt - w_rt - w_lb
  return (_ssim(pred, gt_f, top & left) * w_lt + _ssim(pred, gt_f, top & ~left) * w_rt +
          _ssim(pred, gt_f, ~top & left) * w_lb + _ssim(pred, gt_f, ~top & ~left) * w_rb)


def smeasure(pred: jax.Array, gt: jax.Array, alpha: float = host.S_ALPHA) -> jax.Array:
  gt_f = gt.astype(pred.dtype)
  fg_fraction = jnp.mean(gt_f)
  obj = (_object_similarity(pred, gt) * fg_fraction +
         _object_similarity(1 - pred, ~gt) * (1 - fg_fraction))
  score = jnp.maximum(0, obj * alpha + _region_score(pred, gt_f, gt) * (1 - alpha))
  mean_pred = jnp.mean(pred)
  return jnp.where(fg_fraction == 0, 1 - mean_pred, jnp.where(fg_fraction == 1, mean_pred, score))


# ------------------------------------------------------------------------------------------------
# Weighted F-measure with an exact, vectorised distance transform.
# ------------------------------------------------------------------------------------------------
def _no_foreground_cost(h: int, w: int) -> int:
  """Squared distance standing for 'this column has no foreground': above any real one."""
  return (h - 1)**2 + (w - 1)**2 + 1


def _column_nearest(gt: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Row of the nearest foreground pixel in each column (ties: the upper one) and its dy^2."""
  h, w = gt.shape
  rows = jnp.arange(h, dtype=jnp.int32)[:, None]  # (H, 1)
  far = 2 * h + 2
  above = jax.lax.cummax(jnp.where(gt, rows, -far), axis=0)  # (H, W)
  below = jax.lax.cummin(jnp.where(gt, rows, far), axis=0, reverse=True)
  nearest_row = jnp.where(rows - above <= below - rows, above, below)
  dy2 = jnp.where(gt.any(axis=0)[None, :], (nearest_row - rows)**2, _no_foreground_cost(h, w))
  return nearest_row, dy2


def _row_pass_packed(dy2: jax.Array, w: int, dtype) -> tuple[jax.Array, jax.Array]:
  """Per pixel min over columns x' of dy2[x'] + (x - x')^2, leftmost x' on ties; (W,) each.

  Cost and column are packed as cost * W + x' so that one plain min (fast on XLA:CPU, unlike the
  variadic reduce behind argmin) finds the smallest cost and, among equal costs, the leftmost x'.
  """
  xs = jnp.arange(w, dtype=dtype)
  dx2_key = (xs[:, None] - xs[None, :])**2 * w + xs[None, :]  # (W, W): [x, x']
  key = jnp.min(dy2.astype(dtype)[None, :] * w + dx2_key, axis=1)  # (W,)
  return (key // w).astype(jnp.int32), (key % w).astype(jnp.int32)


def _row_pass_two_mins(dy2: jax.Array, w: int) -> tuple[jax.Array, jax.Array]:
  """As `_row_pass_packed` for images too large to pack into int32 (and no x64)."""
  xs = jnp.arange(w, dtype=jnp.int32)
  cost = dy2[None, :] + (xs[:, None] - xs[None, :])**2  # (W, W)
  best = jnp.min(cost, axis=1)
  return best, jnp.min(jnp.where(cost == best[:, None], xs[None, :], w), axis=1)


def nearest_foreground(gt: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Squared distance to, and flat index of, the nearest foreground pixel; (H, W) int32 each.

  Exact and separable: a column pass (nearest foreground row, the upper one on ties), then a
  brute-force row pass over all columns (O(H W^2) work in tiles) taking the leftmost of equally
  near columns. This reproduces the indices of scipy's `distance_transform_edt`, ties included.
  """
  h, w = gt.shape
  nearest_row, dy2 = _column_nearest(gt)
  key_max = (_no_foreground_cost(h, w) + (w - 1)**2 + 1) * w
  if key_max < 2**31:
    row_pass = lambda d: _row_pass_packed(d, w, jnp.int32)
  elif jax.config.read("jax_enable_x64"):
    row_pass = lambda d: _row_pass_packed(d, w, jnp.int64)
  else:
    row_pass = lambda d: _row_pass_two_mins(d, w)

  def one_row(args):
    dy2_row, row_of = args  # (W,), (W,)
    d2, col = row_pass(dy2_row)
    return d2, row_of[col] * w + col

  return jax.lax.map(one_row, (dy2, nearest_row), batch_size=max(1, _TILE_ELEMENTS // (w * w)))


def _blur(x: jax.Array, taps: np.ndarray) -> jax.Array:
  """Separable correlation with zero padding ('same' size), the toolbox's imfilter(Et, K)."""
  r = len(taps) // 2
  h, w = x.shape
  xp = jnp.pad(x, ((r, r), (0, 0)))
  x = sum(float(t) * xp[k:k + h] for k, t in enumerate(taps))
  xp = jnp.pad(x, ((0, 0), (r, r)))
  return sum(float(t) * xp[:, k:k + w] for k, t in enumerate(taps))


def weighted_fmeasure(pred: jax.Array, gt: jax.Array, beta2: float = host.F_BETA2) -> jax.Array:
  """F^w_beta as on host; 0 for an empty GT."""
  gt_f = gt.astype(pred.dtype)
  fg = jnp.sum(gt_f)
  d2, flat = nearest_foreground(gt)
  dist = jnp.sqrt(d2.astype(pred.dtype))
  err = jnp.abs(pred - gt_f)
  # Every pixel takes the error of its nearest foreground pixel, where gt = 1: |p - 1| = 1 - p.
  # Gathering from pred, never from a bool array, also sidesteps XLA:CPU reading a non-canonical
  # bool (byte 255, as PIL makes them) as -1 after a gather.
  blurred = _blur(1 - pred.ravel()[flat], host.gaussian_kernel_1d())
  min_err = jnp.where(gt & (blurred < err), blurred, err)
  importance = jnp.where(gt, 1.0, 2 - jnp.exp(np.log(0.5) / 5 * dist))
  weighted_err = min_err * importance
  err_fg = jnp.sum(jnp.where(gt, weighted_err, 0))
  tp_w = fg - err_fg
  fp_w = jnp.sum(jnp.where(gt, 0, weighted_err))
  recall = 1 - err_fg / jnp.maximum(fg, 1)
  precision = tp_w / (tp_w + fp_w + EPS)
  score = (1 + beta2) * recall * precision / (recall + beta2 * precision + EPS)
  return jnp.where(fg > 0, score, 0)


# ------------------------------------------------------------------------------------------------
# Records.
# ------------------------------------------------------------------------------------------------
def _binary_dice_iou(pred: jax.Array, gt: jax.Array) -> tuple[jax.Array, jax.Array]:
  binary = pred > 0.5
  tp, pp, fg = jnp.sum(binary & gt), jnp.sum(binary), jnp.sum(gt)
  dtype = pred.dtype
  return (_safe_divide((2 * tp).astype(dtype), (fg + pp).astype(dtype)),
          _safe_divide(tp.astype(dtype), (fg + pp - tp).astype(dtype)))


def image_scores(pred: jax.Array, gt: jax.Array) -> dict[str, jax.Array]:
  """One image's record, same keys and meaning as `metrics.image_scores`.

  Args:
    pred: (H, W) probabilities in [0, 1] (float) or a uint8 map. Not checked: out-of-range values
      are min–max normalised like any others.
    gt: (H, W) bool (or 0/1 numbers).
  """
  pred = normalize_prediction(pred)
  gt = canonical_mask(gt)
  dtype = pred.dtype
  fg = jnp.sum(gt, dtype=jnp.int32)
  tp, pp = threshold_counts(quantize(pred), gt)
  dice05, iou05 = _binary_dice_iou(pred, gt)
  return {
      "dice_curve": _safe_divide((2 * tp).astype(dtype), (fg + pp).astype(dtype)),
      "iou_curve": _safe_divide(tp.astype(dtype), (fg + pp - tp).astype(dtype)),
      "em_curve": enhanced_alignment(tp, pp, fg, gt.size),
      "em_adaptive": adaptive_emeasure(pred, gt),
      "s_alpha": smeasure(pred, gt),
      "fw": weighted_fmeasure(pred, gt),
      "mae": jnp.mean(jnp.abs(pred - gt.astype(dtype))),
      "dice@0.5": dice05,
      "iou@0.5": iou05,
  }


def batch_image_scores(pred: jax.Array, gt: jax.Array,
                       valid: jax.Array | None = None) -> dict[str, jax.Array]:
  """Records for a padded batch: pred (B, H, W), gt (B, H, W) bool, valid (B,) bool.

  Returns a dict of (B,) and (B, 256) arrays, zero on invalid rows, plus 'valid' (B,), ready for
  `metrics.PolypMetrics.update_batch` (which drops the invalid rows). Jit-compatible.
  """
  records = jax.vmap(image_scores)(pred, gt)
  if valid is None:
    valid = jnp.ones(pred.shape[:1], jnp.bool_)
  valid = valid.astype(jnp.bool_)
  records = {k: jnp.where(valid.reshape((-1,) + (1,) * (v.ndim - 1)), v, 0)
             for k, v in records.items()}
  records["valid"] = valid
  return records
