"""From raw worker results to the six sections of issue #7 and the goal checks (no jax/torch here)."""

from __future__ import annotations

import math
import os

import numpy as np

from bench import gpu_peaks
from bench.plan import DEVICE_RUNS, Plan

GOAL_TORCH_RATIO = 1.5
GOAL_FLOP_FRACTION = 0.5
GOAL_METRICS_SPEEDUP = 10.0
GOAL_PIPELINE_RATIO = 3.0
GOAL_WARM_START_FRACTION = 0.25  # warm start to the first step <= 25 % of a cold start (issue #15)
METRICS_TOLERANCE = 1e-6
# 1 vs 8 devices (one SGD step, see plan.py): XLA sums in a different order, so "equal" means equal
# to float32 rounding. The loss must agree to 1e-5 relative. The gradient norm and the parameters
# (an SGD step moves them by lr = 1e-3 times the gradient) must differ by no more than
# DEVICES_NOISE_FACTOR times what reversing the batch on one device does, or by less than the
# absolute floors. The paper network's float32 gradient is that sensitive at initialisation: a
# reordered batch moves it by ~0.5 % in JAX and in PyTorch alike (bench/NOTES.md).
DEVICES_RTOL = 1e-5
DEVICES_PARAM_ATOL = 1e-6
DEVICES_NOISE_FACTOR = 4.0


def _index(raw: list[dict], kind: str) -> list[dict]:
  return [r for r in raw if r.get("spec", {}).get("kind") == kind]


def jax_result(raw, size, batch, dtype="float32", devices=1, optimizer="adam",
               batch_order="given") -> dict | None:
  """The JAX worker result of one configuration, or None."""
  for r in _index(raw, "jax_model"):
    s = r["spec"]
    if (s["size"], s["batch"], s["dtype"], s["devices"], s["optimizer"],
        s.get("batch_order", "given")) == (size, batch, dtype, devices, optimizer, batch_order):
      return r
  return None


def _get(d: dict | None, *path, default=math.nan):
  for key in path:
    if not isinstance(d, dict) or key not in d:
      return default
    d = d[key]
  return d


# ------------------------------------------------------------------------------------------------
# 1. Throughput of our train and predict steps.
# ------------------------------------------------------------------------------------------------
def throughput(raw, plan: Plan) -> dict:
  rows = []
  cells = [(s, b, "float32") for s, b in plan.main_cells()]
  cells += [(s, b, "bfloat16") for s, b in plan.bf16_cells()]
  for size, batch, dtype in cells:
    r = jax_result(raw, size, batch, dtype)
    row = {"size": size, "batch": batch, "dtype": dtype}
    if r is None or "error" in r:
      row["error"] = (r or {}).get("error", "not run")
    else:
      row.update({
          "train_images_per_s": r["train"]["images_per_s"],
          "train_step_s": r["train"]["median_s"],
          "predict_images_per_s": _get(r, "predict", "images_per_s"),
          "predict_s": _get(r, "predict", "median_s"),
          "train_lower_s": r["train_compile"]["lower_s"],
          "train_compile_s": r["train_compile"]["compile_s"],
          "predict_compile_s": _get(r, "predict_compile", "compile_s"),
          "peak_rss_mb": r["peak_rss_mb"],
          "num_params": r["num_params"],
          "first_loss": r["first_step"]["loss"],
      })
    rows.append(row)
  return {"rows": rows}


# ------------------------------------------------------------------------------------------------
# 2. The PyTorch twin and the ratios ours/torch.
# ------------------------------------------------------------------------------------------------
def torch_section(raw, plan: Plan) -> dict:
  rows, ratios = [], []
  results = _index(raw, "torch_model")
  errors = [r.get("error", "") for r in results if "error" in r]
  if results and all(e.startswith("unavailable") for e in errors) and len(errors) == len(results):
    return {"status": errors[0], "rows": [], "ratios": []}
  for size, batch in plan.main_cells():
    ours = jax_result(raw, size, batch)
    best, cell_rows = {}, []
    for r in results:
      s = r["spec"]
      if (s["size"], s["batch"]) != (size, batch):
        continue
      row = {"size": size, "batch": batch, "mode": s["mode"], "num_params": r.get("num_params")}
      if "error" in r:
        row["error"] = r["error"]
      else:
        row.update({"train_images_per_s": r["train"]["images_per_s"],
                    "train_step_s": r["train"]["median_s"],
                    "train_first_s": r["train"]["first_s"],
                    "predict_images_per_s": _get(r, "predict", "images_per_s"),
                    "peak_rss_mb": r["peak_rss_mb"], "optimizer": r.get("optimizer")})
        if "predict_error" in r:
          row["error"] = r["predict_error"]
        for what in ("train", "predict"):
          value = row[f"{what}_images_per_s"]
          if np.isfinite(value) and value > best.get(what, (0.0, ""))[0]:
            best[what] = (value, s["mode"])
      cell_rows.append(row)
    rows += cell_rows
    if not best or ours is None or "error" in ours:
      continue
    ratio = {"size": size, "batch": batch,
             "ours_params": ours["num_params"],
             "torch_params": next((r["num_params"] for r in cell_rows if r.get("num_params")), None)}
    for what in ("train", "predict"):
      mine = _get(ours, what, "images_per_s")
      theirs, mode = best.get(what, (math.nan, "none"))
      ratio.update({f"ours_{what}": mine, f"torch_{what}": theirs, f"torch_{what}_mode": mode,
                    f"{what}_ratio": mine / theirs if theirs else math.nan})
    ratios.append(ratio)
  return {"status": "ok" if ratios else (errors[0] if errors else "not run"), "rows": rows,
          "ratios": ratios}


# ------------------------------------------------------------------------------------------------
# 3. Achieved FLOP/s of the train step vs the measured matmul peak.
# ------------------------------------------------------------------------------------------------
def flops(raw, plan: Plan) -> dict:
  peaks = _index(raw, "peak")
  peak = peaks[0] if peaks else {"error": "not run"}
  if "error" in peak:
    return {"peak": peak, "rows": []}
  rows = []
  for size, batch in plan.main_cells():
    r = jax_result(raw, size, batch)
    if r is None or "error" in r:
      continue
    step_flops = r["train_compile"]["flops"]
    achieved = step_flops / r["train"]["median_s"] / 1e9
    rows.append({"size": size, "batch": batch, "train_gflop": step_flops / 1e9,
                 "train_hlo_gflop": _get(r, "train_compile", "hlo_flops") / 1e9,
                 "predict_gflop": _get(r, "predict_compile", "flops") / 1e9,
                 "train_step_s": r["train"]["median_s"], "achieved_gflops_per_s": achieved,
                 "peak_gflops_per_s": peak["peak_gflops_per_s"],
                 "fraction": achieved / peak["peak_gflops_per_s"]})
  return {"peak": peak, "rows": rows}


# ------------------------------------------------------------------------------------------------
# 4. Metrics vs pysodmetrics.
# ------------------------------------------------------------------------------------------------
def metrics(raw, plan: Plan) -> dict:
  found = _index(raw, "metrics")
  if not found or "error" in found[0]:
    return {"error": found[0]["error"] if found else "not run", "sets": {}}
  sets = found[0]["sets"]
  compared = [v for v in sets.values() if "skipped" not in v]
  worst = max((v["max_abs_diff"] for v in compared), default=math.nan)
  return {"sets": sets, "max_abs_diff": worst, "tolerance": METRICS_TOLERANCE,
          "equal": bool(compared) and worst < METRICS_TOLERANCE}


# ------------------------------------------------------------------------------------------------
# 5. Input pipeline vs the train step's consumption.
# ------------------------------------------------------------------------------------------------
def pipeline(raw, plan: Plan) -> dict:
  found = _index(raw, "pipeline")
  if not found:
    return {"error": "not run", "rows": []}
  result = found[0]
  if "error" in result or "skipped" in result:
    return {"error": result.get("error") or f"skipped: {result['skipped']}", "rows": []}
  size, batch = plan.pipeline_cell
  train = jax_result(raw, size, batch)
  consumption = _get(train, "train", "images_per_s")
  rows = [{**row, "ratio": row["images_per_sec"] / consumption} for row in result["rows"]]
  return {"rows": rows, "consumption_images_per_s": consumption,
          "consumption_of": f"JAX train step, {size}x{size}, batch {batch}, float32"}


# ------------------------------------------------------------------------------------------------
# 6. Scaling, and 1 vs 8 simulated devices.
# ------------------------------------------------------------------------------------------------
def _load_npz(path: str) -> dict[str, np.ndarray]:
  with np.load(path) as data:
    return {k: data[k] for k in data.files}


def _max_abs_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
  if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
    raise ValueError("the parameter trees differ")
  return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def device_results(raw: list[dict], plan: Plan) -> list[dict | None]:
  """The JAX worker results of `DEVICE_RUNS` at the plan's device cell, in that order."""
  size, batch = plan.devices_cell
  return [jax_result(raw, size, batch, devices=n, optimizer="sgd", batch_order=order)
          for n, order in DEVICE_RUNS]


def params_diff(raw: list[dict], plan: Plan) -> dict:
  """A raw record {'spec': {'kind': 'params_diff'}, ...}: max |p1 - p8| over the parameters saved
  by the 1- and 8-device workers, and max |p1 - p1'| against one device with the batch reversed
  (the float32 noise floor). The files are deleted; the record keeps the numbers."""
  runs = device_results(raw, plan)
  record = {"spec": {"kind": "params_diff"}}
  if any(r is None or "params_path" not in r for r in runs):
    return {**record, "error": "a device run failed"}
  one, eight, reordered = (_load_npz(r["params_path"]) for r in runs)
  for r in runs:
    os.remove(r["params_path"])
  try:
    return {**record, "params_max_abs_diff": _max_abs_diff(one, eight),
            "reorder_params_max_abs_diff": _max_abs_diff(one, reordered), "num_arrays": len(one)}
  except ValueError as e:
    return {**record, "error": str(e)}


def compare_devices(runs: list[dict | None], diff: dict | None) -> dict:
  """Loss, gradient norm and parameters after one step on 1 vs 8 devices (same batch and init),
  judged against 1 device with the batch reversed (float32's reordering noise). `runs`: the worker
  results of `DEVICE_RUNS`, in that order."""
  rows = []
  for r, (devices, order) in zip(runs, DEVICE_RUNS, strict=True):
    if r is None or "error" in r:
      rows.append({"devices": devices, "batch_order": order,
                   "error": (r or {}).get("error", "not run")})
    else:
      rows.append({"devices": devices, "batch_order": order, "device_count": r["device_count"],
                   "train_step_s": r["train"]["median_s"], "loss_after_init": r["first_step"]["loss"],
                   "grad_norm": r["first_step"]["grad_norm"],
                   "train_compile_s": r["train_compile"]["compile_s"]})
  if any("error" in row for row in rows) or diff is None or "error" in diff:
    return {"rows": rows, "equal": False, "error": (diff or {}).get("error", "a run failed")}
  one_row, eight_row, reordered_row = rows
  gap = lambda row, key: abs(one_row[key] - row[key])
  loss_close = gap(eight_row, "loss_after_init") <= DEVICES_RTOL * max(1.0, abs(one_row["loss_after_init"]))
  grad_norm_bar = max(DEVICES_RTOL * abs(one_row["grad_norm"]),
                      DEVICES_NOISE_FACTOR * gap(reordered_row, "grad_norm"))
  params_bar = max(DEVICES_PARAM_ATOL, DEVICES_NOISE_FACTOR * diff["reorder_params_max_abs_diff"])
  param_diff = diff["params_max_abs_diff"]
  return {"rows": rows, "optimizer": "sgd",
          "loss_abs_diff": gap(eight_row, "loss_after_init"),
          "grad_norm_abs_diff": gap(eight_row, "grad_norm"),
          "reorder_grad_norm_abs_diff": gap(reordered_row, "grad_norm"),
          "params_max_abs_diff": param_diff,
          "reorder_params_max_abs_diff": diff["reorder_params_max_abs_diff"],
          "rtol": DEVICES_RTOL, "params_atol": DEVICES_PARAM_ATOL,
          "noise_factor": DEVICES_NOISE_FACTOR, "grad_norm_bar": grad_norm_bar,
          "params_bar": params_bar,
          "equal": bool(loss_close and gap(eight_row, "grad_norm") <= grad_norm_bar
                        and param_diff <= params_bar)}


def scaling(raw, plan: Plan) -> dict:
  grid = []
  for size, batch in plan.scaling_cells:
    r = jax_result(raw, size, batch)
    if r is None or "error" in r:
      grid.append({"size": size, "batch": batch, "error": (r or {}).get("error", "not run")})
      continue
    grid.append({"size": size, "batch": batch, "train_step_s": r["train"]["median_s"],
                 "images_per_s": r["train"]["images_per_s"],
                 "train_compile_s": r["train_compile"]["compile_s"],
                 "peak_rss_mb": r["peak_rss_mb"]})
  size, batch = plan.devices_cell
  diffs = _index(raw, "params_diff")
  devices = compare_devices(device_results(raw, plan), diffs[0] if diffs else None)
  devices.update({"size": size, "global_batch": batch})
  return {"grid": grid, "devices": devices}


# ------------------------------------------------------------------------------------------------
# 7. Start-up: cold vs warm persistent compilation cache.
# ------------------------------------------------------------------------------------------------
def startup(raw, plan: Plan) -> dict:
  found = _index(raw, "startup")
  if not found or "error" in found[0]:
    return {"error": found[0]["error"] if found else "not run"}
  r = found[0]
  size, batch = plan.startup_cell
  return {"size": size, "batch": batch, "cold": r["cold"], "warm": r["warm"],
          "warm_over_cold": r["warm_over_cold"], "cache_files": r["cache_files"],
          "cache_mb": r["cache_mb"]}


# ------------------------------------------------------------------------------------------------
# Flag study: the train step and conv micro-benchmarks under each XLA flag set.
# ------------------------------------------------------------------------------------------------
def _max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray], prefix: str) -> tuple[float, float]:
  """(max |a - b|, max |a|) over the arrays whose names start with `prefix`."""
  keys = [k for k in a if k.startswith(prefix)]
  if not keys or any(k not in b or a[k].shape != b[k].shape for k in keys):
    return math.nan, math.nan
  diff = max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in keys)
  return diff, max(float(np.max(np.abs(a[k]))) for k in keys)


def flags_diff(raw: list[dict]) -> dict:
  """A raw record {'spec': {'kind': 'flags_diff'}, 'sets': [...]}: per flag set, max |Δ| of the first
  loss, the gradients and each conv case's output and gradients against the baseline set (index 0).
  The .npz files are deleted; the record keeps the numbers."""
  results = sorted(_index(raw, "flags"), key=lambda r: r["spec"]["set_index"])
  record = {"spec": {"kind": "flags_diff"}, "sets": []}
  if not results or "arrays_path" not in results[0] or results[0]["spec"]["set_index"] != 0:
    return {**record, "error": "the baseline flag set failed"}
  base = _load_npz(results[0]["arrays_path"])
  for r in results:
    if "arrays_path" not in r:
      continue
    other = base if r is results[0] else _load_npz(r["arrays_path"])
    entry = {"set_index": r["spec"]["set_index"]}
    entry["loss_abs_diff"], _ = _max_diff(other, base, "first_loss")
    entry["grad_max_abs_diff"], entry["grad_max_abs"] = _max_diff(other, base, "grad/")
    entry["convs"] = {}
    for case in r["convs"]:
      out_diff, out_max = _max_diff(other, base, f"conv/{case['name']}/out")
      grad_diff = max(_max_diff(other, base, f"conv/{case['name']}/dx")[0],
                      _max_diff(other, base, f"conv/{case['name']}/dw")[0])
      entry["convs"][case["name"]] = {"out_max_abs_diff": out_diff, "out_max_abs": out_max,
                                      "grad_max_abs_diff": grad_diff}
    record["sets"].append(entry)
  for r in results:
    if "arrays_path" in r:
      os.remove(r["arrays_path"])
  return record


def flags(raw, plan: Plan) -> dict:
  """One row per flag set: train img/s and compile s, the ratio to the baseline, the |Δ| of loss and
  gradients, whether the compiled HLO changed, and each conv case's time and |Δ|."""
  diffs = {d["set_index"]: d for r in _index(raw, "flags_diff") for d in r.get("sets", [])}
  by_index = {r["spec"]["set_index"]: r for r in _index(raw, "flags")}
  base = by_index.get(0, {})
  rows = []
  for i, study_flags in enumerate(plan.flag_sets):
    r = by_index.get(i)
    row = {"set_index": i, "flags": study_flags or "(defaults)"}
    if r is None or "error" in r:
      rows.append({**row, "error": (r or {}).get("error", "not run")[-300:]})
      continue
    t, d = r["train"], diffs.get(i, {})
    row.update({"train_images_per_s": t["images_per_s"], "train_compile_s": t["compile_s"],
                "train_ratio": _ratio(t["images_per_s"], _get(base, "train", "images_per_s")),
                "same_hlo": t["hlo_sha"] == _get(base, "train", "hlo_sha", default=None),
                "fusions": t["fusions"], "loss_abs_diff": d.get("loss_abs_diff", math.nan),
                "grad_max_abs_diff": d.get("grad_max_abs_diff", math.nan),
                "grad_max_abs": d.get("grad_max_abs", math.nan), "convs": [],
                "load_average": r.get("load_average")})
    base_convs = {c["name"]: c for c in base.get("convs", [])}
    for case in r["convs"]:
      cd = d.get("convs", {}).get(case["name"], {})
      row["convs"].append({"name": case["name"], "median_s": case["median_s"],
                           "ratio": _ratio(_get(base_convs, case["name"], "median_s"),
                                           case["median_s"]), **cd})
    rows.append(row)
  size, batch = plan.flags_cell
  return {"size": size, "batch": batch, "variant": plan.variant, "rows": rows}


def profile(raw, plan: Plan) -> dict:
  """One per-instruction profile per `plan.profile_cells` cell and XLA-defaults choice
  (bench/profile_step.py's result, cut to its top rows), or the worker's error."""
  by_cell = {(r["spec"]["size"], r["spec"]["batch"], r["spec"].get("xla_defaults", True)): r
             for r in _index(raw, "profile")}
  cells = []
  for size, batch in plan.profile_cells:
    for ours in plan.profile_xla_defaults:
      key = {"size": size, "batch": batch, "xla_defaults": ours}
      r = by_cell.get((size, batch, ours))
      if r is None or "error" in r:
        cells.append({**key, "error": (r or {}).get("error", "not run")[-300:]})
      else:
        cells.append({**key, **r})
  return {"cells": cells, "top": plan.profile_top}


def _ratio(a, b) -> float:
  return a / b if np.isfinite(a) and np.isfinite(b) and b else math.nan


# ------------------------------------------------------------------------------------------------
# Model FLOP utilisation against an accelerator's peak (the gpu plan).
# ------------------------------------------------------------------------------------------------
def mfu(raw, plan: Plan) -> dict:
  """Achieved model FLOP/s of the train step and its fraction of the devices' datasheet peak.

  Model FLOPs = XLA's count of the lowered, global (not yet partitioned) train step, so a step on n
  devices counts the work of the whole global batch once; the peak is per device times n."""
  rows = []
  for size, batch, dtype, devices in plan.mfu_cells:
    r = jax_result(raw, size, batch, dtype, devices)
    row = {"size": size, "batch_per_device": batch, "dtype": dtype, "devices": devices}
    if r is None or "error" in r:
      rows.append({**row, "error": (r or {}).get("error", "not run")})
      continue
    n, step_s = r["device_count"], r["train"]["median_s"]
    model_flops = r["train_compile"]["hlo_flops"]
    achieved = model_flops / step_s
    peak, peak_note = gpu_peaks.peak_flops(r.get("device_kind", "unknown"), dtype)
    row.update({"device_kind": r.get("device_kind", "unknown"), "device_count": n,
                "global_batch": r.get("global_batch", batch * n),
                "images_per_s": r["train"]["images_per_s"], "train_step_s": step_s,
                "model_tflop": model_flops / 1e12, "achieved_tflops": achieved / 1e12,
                "achieved_tflops_per_device": achieved / n / 1e12,
                "peak_tflops_per_device": peak / 1e12 if peak else math.nan, "peak": peak_note,
                "mfu": achieved / (peak * n) if peak else math.nan,
                "train_compile_s": r["train_compile"]["compile_s"], "peak_rss_mb": r["peak_rss_mb"]})
    rows.append(row)
  return {"rows": rows}


# ------------------------------------------------------------------------------------------------
# Goals of issue #7.
# ------------------------------------------------------------------------------------------------
def goals(sections: dict) -> list[dict]:
  """[{'goal', 'target', 'value', 'shown', 'met'}] for every bar of the issue this run measured."""
  out = []

  def at_least(goal, value, threshold, percent=False):
    ok = bool(np.isfinite(value) and value >= threshold)
    shown = (f"{value:.1%}" if percent else f"{value:.3g}x") if np.isfinite(value) else "–"
    target = f">= {threshold:.0%}" if percent else f">= {threshold:g}x"
    out.append({"goal": goal, "target": target, "value": value, "shown": shown, "met": ok})

  def equal(goal, value, tolerance, ok):
    shown = f"max diff {value:.1e}" if np.isfinite(value) else "–"
    out.append({"goal": goal, "target": f"equal (< {tolerance:g})", "value": value,
                "shown": shown, "met": bool(ok)})

  for r in sections.get("torch", {}).get("ratios", []):
    at_least(f"train step ours/torch, {r['size']}² batch {r['batch']} (vs torch "
             f"{r['torch_train_mode']})", r["train_ratio"], GOAL_TORCH_RATIO)
  for r in sections.get("flops", {}).get("rows", []):
    at_least(f"train step FLOP/s / matmul peak, {r['size']}² batch {r['batch']}", r["fraction"],
             GOAL_FLOP_FRACTION, percent=True)
  m = sections.get("metrics", {})
  if m.get("sets"):
    equal("metrics equal to pysodmetrics (every metric, every set)", m["max_abs_diff"],
          m["tolerance"], m["equal"])
  for name, r in m.get("sets", {}).items():
    if "skipped" not in r:
      at_least(f"metrics speed vs pysodmetrics, {name}", r["speedup"], GOAL_METRICS_SPEEDUP)
  for r in sections.get("pipeline", {}).get("rows", []):
    at_least(f"input pipeline / train consumption, {r['num_workers']} workers", r["ratio"],
             GOAL_PIPELINE_RATIO)
  s = sections.get("startup", {})
  if "warm_over_cold" in s:
    ok = bool(np.isfinite(s["warm_over_cold"]) and s["warm_over_cold"] <= GOAL_WARM_START_FRACTION)
    out.append({"goal": f"warm start to the first train step / cold start, {s['size']}² batch "
                        f"{s['batch']}", "target": f"<= {GOAL_WARM_START_FRACTION:.0%}",
                "value": s["warm_over_cold"], "shown": f"{s['warm_over_cold']:.1%}", "met": ok})
  d = sections.get("scaling", {}).get("devices")
  if d is not None:
    equal("1 vs 8 devices: same loss; parameters after one step within float32 reordering noise",
          d.get("params_max_abs_diff", math.nan), d.get("params_bar", DEVICES_PARAM_ATOL),
          d.get("equal", False))
  return out


BUILDERS = {"throughput": throughput, "torch": torch_section, "flops": flops, "metrics": metrics,
            "pipeline": pipeline, "scaling": scaling, "startup": startup, "flags": flags,
            "profile": profile, "mfu": mfu}


def build(raw: list[dict], plan: Plan, names) -> dict:
  """{section name: section dict} for the requested sections."""
  return {name: BUILDERS[name](raw, plan) for name in names}
