"""Our polyp metrics (`bsa_jax.eval.metrics`, the evaluator's host path) vs pysodmetrics 1.6.2.

Real ground-truth masks (Kvasir-100 = 'kvasir_seg:pranet_test', and the CVC-ColonDB frames present
in the data root = 'cvc_colondb:all') with deterministic perturbed predictions (shifted, blurred, noisy
uint8 maps, like saved PNGs). Both libraries score the same in-memory arrays; we report every
metric's absolute difference and the wall time of each over the whole set (median over repeats).
"""

from __future__ import annotations

import numpy as np

from bench import common

DEFAULT_SETS = ("kvasir_seg:pranet_test", "cvc_colondb:all")


def perturbed_prediction(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """(H, W) uint8 prediction: GT shifted by a few %, blurred, plus Gaussian noise."""
  from scipy import ndimage
  h, w = gt.shape
  shifted = np.roll(gt.astype(np.float64), (h // 30, -(w // 40)), axis=(0, 1))
  soft = ndimage.gaussian_filter(shifted, max(h, w) / 80)
  noisy = soft + rng.normal(0.0, 0.08, gt.shape)
  return np.clip(np.round(noisy * 255), 0, 255).astype(np.uint8)


def load_pairs(entry: str, max_images: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
  """[(uint8 prediction, bool GT)] for the first `max_images` of a split (all if <= 0)."""
  from bsa_jax import config_lib
  from bsa_jax.data import sources
  from bsa_jax.eval import io as eval_io
  reader = sources.reader_for(config_lib.base_config().data, entry)
  examples = reader.examples if max_images <= 0 else reader.examples[:max_images]
  rng = np.random.default_rng(seed)
  pairs = []
  for example in examples:
    gt = eval_io.read_gt(example.mask)  # toolbox conventions, as the eval CLI reads masks
    pairs.append((perturbed_prediction(gt, rng), gt))
  return pairs


def ours(pairs) -> dict[str, float]:
  """Dataset-level scores from our host metrics (what `evaluate.evaluate_sets` runs)."""
  from bsa_jax.eval import metrics
  return metrics.dataset_scores(pairs)


def pysodmetrics(pairs) -> dict[str, float]:
  """The same scores from pysodmetrics' classes, fed uint8 maps and 0/255 masks."""
  import py_sod_metrics as psm
  handler = lambda cls: cls(with_dynamic=True, with_adaptive=False, with_binary=True)
  fm = psm.FmeasureV2(metric_handlers={"dice": handler(psm.DICEHandler),
                                       "iou": handler(psm.IOUHandler)})
  sm, wfm, em, mae = psm.Smeasure(), psm.WeightedFmeasure(), psm.Emeasure(), psm.MAE()
  for pred, gt in pairs:
    gt255 = gt.astype(np.uint8) * 255
    for metric in (fm, sm, wfm, em, mae):
      metric.step(pred=pred, gt=gt255)
  f, e = fm.get_results(), em.get_results()["em"]
  dice, iou = f["dice"]["dynamic"], f["iou"]["dynamic"]
  return {"mDSC": dice.mean(), "mIoU": iou.mean(), "S_alpha": sm.get_results()["sm"],
          "F_beta_w": wfm.get_results()["wfm"], "E_phi_max": e["curve"].max(),
          "MAE": mae.get_results()["mae"], "E_phi_mean": e["curve"].mean(),
          "E_phi_adaptive": e["adp"], "maxDSC": dice.max(), "maxIoU": iou.max(),
          "Dice@0.5": f["dice"]["binary"], "IoU@0.5": f["iou"]["binary"]}


def compare(pairs, *, repeats: int) -> dict:
  """Scores, per-metric |ours - pysodmetrics| and timings over `pairs`."""
  from bsa_jax.eval import metrics
  results, timings = {}, {}
  for name, fn in (("ours", ours), ("pysodmetrics", pysodmetrics)):
    def score(fn=fn, name=name):
      results[name] = {k: float(v) for k, v in fn(pairs).items()}
    timings[name] = common.time_calls(score, warmup=0, repeats=repeats)
  diffs = {k: abs(results["ours"][k] - results["pysodmetrics"][k]) for k in metrics.ALL_METRIC_NAMES}
  pixels = sum(gt.size for _, gt in pairs)
  return {
      "images": len(pairs),
      "megapixels": pixels / 1e6,
      "scores": results,
      "abs_diff": diffs,
      "max_abs_diff": max(diffs.values()),
      "ours_s": timings["ours"]["median_s"],
      "pysodmetrics_s": timings["pysodmetrics"]["median_s"],
      "speedup": timings["pysodmetrics"]["median_s"] / timings["ours"]["median_s"],
  }


def run(spec: dict) -> dict:
  """Worker entry: one comparison per dataset entry; a missing dataset is 'skipped' with the reason."""
  out = {"sets": {}}
  for entry in spec.get("sets", DEFAULT_SETS):
    try:
      pairs = load_pairs(entry, int(spec.get("max_images", 0)))
    except Exception as e:  # absent data: report, do not fail the benchmark
      out["sets"][entry] = {"skipped": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
      continue
    if not pairs:
      out["sets"][entry] = {"skipped": "no images in the split"}
      continue
    out["sets"][entry] = compare(pairs, repeats=int(spec["repeats"]))
  return out
