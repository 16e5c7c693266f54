"""The Markdown document: a header with the machine, the goals, then one table (or two) per section."""

from __future__ import annotations

import functools
import math

from bench import profile_step

TABLE_HEADER = "| size | batch | dtype | train img/s |"  # first cells of section 1 (tests look for it)


def percent(x) -> str:
  """A bold percentage, or '–' when missing (NaN in a fresh run, None in a results file)."""
  return f"**{x:.1%}**" if x is not None and math.isfinite(x) else "–"


def fmt(x, digits: int = 3) -> str:
  """A number with `digits` significant digits ('–' for missing/NaN); ints with separators."""
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "–"
  if isinstance(x, bool):
    return "yes" if x else "no"
  if isinstance(x, int):
    return f"{x:,}"
  if x == 0:
    return "0"
  if abs(x) >= 10 ** digits:
    return f"{x:,.0f}"
  return f"{x:.{digits}g}"


def table(headers: list[str], rows: list[list]) -> str:
  lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def unmeasured(title: str, reason: str) -> str:
  """A section whose measurement did not run: its title, then the reason in bold."""
  return "\n".join([title, "", f"**{reason}**"])


def section(title: str):
  """Decorator for a renderer that returns a section's lines: it gets the `title` above them, and a
  result holding an 'error' (the measurement failed as a whole) renders as `unmeasured`."""
  def wrap(body):
    @functools.wraps(body)
    def render(s: dict) -> str:
      if "error" in s:
        return unmeasured(title, s["error"])
      return "\n".join([title, ""] + body(s))
    return render
  return wrap


def header(meta: dict) -> str:
  m = meta["machine"]
  plan = meta["plan"]
  lines = [
      f"# BSA-Net benchmark (issue #7): {plan['name']} run",
      "",
      f"- Machine: {m['cpu']}, {m['cores']} cores, {fmt(m['memory_gib'])} GiB; "
      f"**{m['threads_used']} thread(s)** for both frameworks; load average at start "
      f"{' / '.join(str(x) for x in m['load_average'])}",
      f"- Software: Python {m['python']}, jax {m['jax']} (jaxlib {m['jaxlib']}), flax {m['flax']}, "
      f"torch {m['torch']}, pysodmetrics {m['pysodmetrics']}",
      f"- Date {m['date']}, commit `{m['git_commit']}`; total wall time {fmt(meta.get('wall_s'))} s",
      f"- BSA-Net variant '{plan['variant']}'; medians of {plan['repeats']} timed calls after "
      f"{plan['warmup']} warm-up call(s); every configuration in a fresh process (peak RSS = its "
      f"ru_maxrss); inputs are synthetic except in sections 4 and 5.",
  ]
  if plan["jobs"] > 1:
    lines.append(f"- {plan['jobs']} workers ran at once: timings are contended, not measurements.")
  if meta.get("xla_flags"):
    lines.append(f"- Every worker ran with XLA_FLAGS `{meta['xla_flags']}` added.")
  if plan["name"].endswith("quick"):
    lines.append("- **Quick mode**: a smoke test of the harness (tiny variant, toy sizes); its numbers "
                 "say nothing about speed.")
  return "\n".join(lines)


def goals_table(goals: list[dict]) -> str:
  if not goals:
    return "_No goal was measured in this run._"
  rows = [[g["goal"], g["target"], g["shown"], "**met**" if g["met"] else "**not met**"]
          for g in goals]
  return table(["goal", "target", "measured", "met?"], rows)


def throughput_md(s: dict) -> str:
  rows = []
  for r in s["rows"]:
    if "error" in r:
      rows.append([r["size"], r["batch"], r["dtype"], f"error: {r['error']}"] + [""] * 7)
      continue
    rows.append([r["size"], r["batch"], r["dtype"], fmt(r["train_images_per_s"]),
                 fmt(r["train_step_s"]), fmt(r["predict_images_per_s"]), fmt(r["predict_s"]),
                 fmt(r["train_lower_s"]), fmt(r["train_compile_s"]), fmt(r["predict_compile_s"]),
                 fmt(r["peak_rss_mb"], 4)])
  params = next((r["num_params"] for r in s["rows"] if "num_params" in r), None)
  return "\n".join([
      "## 1. Throughput of our train and inference steps (JAX)",
      "",
      f"`bsa_jax.train.train_step` jitted as in the trainer ({fmt(params)} parameters, Adam); "
      "inference = `train.predict_step` (eval mode, PointRend subdivision). Compile = "
      "`.lower()` then `.compile()`, timed apart.",
      "",
      table(["size", "batch", "dtype", "train img/s", "train step s", "infer img/s", "infer s",
             "lower s", "compile s", "infer compile s", "peak RSS MiB"], rows),
  ])


def torch_md(s: dict) -> str:
  title = "## 2. PyTorch twin (`bench/torch_bsanet.py`)"
  if s["status"] != "ok" and not s["rows"]:
    return unmeasured(title, s["status"])
  out = [title, ""]
  rows = []
  for r in s["rows"]:
    note = r.get("error", "")
    rows.append([r["size"], r["batch"], r["mode"], fmt(r.get("train_images_per_s")),
                 fmt(r.get("predict_images_per_s")), fmt(r.get("train_first_s")),
                 fmt(r.get("peak_rss_mb"), 4), note])
  ratios = []
  for r in s["ratios"]:
    ratios.append([r["size"], r["batch"], fmt(r["ours_train"]),
                   f"{fmt(r['torch_train'])} ({r['torch_train_mode']})", f"**{fmt(r['train_ratio'])}x**",
                   fmt(r["ours_predict"]), f"{fmt(r['torch_predict'])} ({r['torch_predict_mode']})",
                   f"{fmt(r['predict_ratio'])}x",
                   f"{fmt(r['ours_params'])} / {fmt(r['torch_params'])}"])
  optimizer = next((r["optimizer"] for r in s["rows"] if r.get("optimizer")), "Adam")
  out += [f"Train step: zero_grad, `train_loss`, backward, {optimizer}; inference under "
          "`torch.inference_mode()`. 'first call' includes torch.compile's compilation.", "",
          table(["size", "batch", "mode", "train img/s", "infer img/s", "first call s",
                 "peak RSS MiB", "note"], rows),
          "", "Ours vs the best torch mode per column:", "",
          table(["size", "batch", "ours train img/s", "torch train img/s (mode)", "ours/torch train",
                 "ours infer img/s", "torch infer img/s (mode)", "ours/torch infer",
                 "params ours / torch"], ratios)]
  return "\n".join(out)


def flops_md(s: dict) -> str:
  title, peak = "## 3. Achieved FLOP/s of the train step", s["peak"]
  if "error" in peak:
    return unmeasured(title, f"peak not measured: {peak['error']}")
  out = [title, ""]
  j, t = peak["jax"], peak.get("torch", {})
  torch_text = (f"torch.mm {fmt(t['gflops_per_s'])} GFLOP/s" if "gflops_per_s" in t
                else f"torch: {t.get('error', 'not run')}")
  out += [f"Peak: float32 {j['n']}x{j['n']} matmul, jitted JAX {fmt(j['gflops_per_s'])} GFLOP/s, "
          f"{torch_text}; the fraction uses the faster ({peak['peak_from']}, "
          f"{fmt(peak['peak_gflops_per_s'])} GFLOP/s). FLOPs per step from XLA's cost analysis of "
          "the compiled train step (`.lower().compile().cost_analysis()`); the count of the "
          "lowered, unoptimised HLO is shown for reference.", ""]
  rows = [[r["size"], r["batch"], fmt(r["train_gflop"]), fmt(r.get("train_hlo_gflop")),
           fmt(r["predict_gflop"]), fmt(r["train_step_s"]), fmt(r["achieved_gflops_per_s"]),
           percent(r["fraction"])] for r in s["rows"]]
  out.append(table(["size", "batch", "train GFLOP/step", "(before XLA passes)", "infer GFLOP/call",
                    "train step s", "achieved GFLOP/s", "fraction of peak"], rows))
  return "\n".join(out)


@section("## 4. Metrics: ours (`bsa_jax.eval.metrics`) vs pysodmetrics")
def metrics_md(s: dict) -> list[str]:
  rows = []
  for name, r in s["sets"].items():
    if "skipped" in r:
      rows.append([name, "skipped", r["skipped"], "", "", ""])
      continue
    worst = max(r["abs_diff"], key=r["abs_diff"].get)
    rows.append([name, r["images"], f"{r['max_abs_diff']:.1e} ({worst})", fmt(r["ours_s"]),
                 fmt(r["pysodmetrics_s"]), f"**{fmt(r['speedup'])}x**"])
  return ["Real masks, deterministic perturbed uint8 predictions (shifted, blurred, noisy); both "
         "score the same arrays: mDSC, mIoU, S_alpha, F_beta_w, E_phi (max/mean/adaptive), MAE, "
         "max/binary Dice and IoU.", "",
         table(["set", "images", "max abs diff (metric)", "ours s", "pysodmetrics s",
                "speed-up"], rows), "",
         f"Equal within {s['tolerance']:g}: **{fmt(s['equal'])}**."]


@section("## 5. Input pipeline (decode + resize + normalise)")
def pipeline_md(s: dict) -> list[str]:
  rows = [[r["num_workers"], fmt(r["images_per_sec"]), fmt(r["first_batch_sec"]),
           fmt(s["consumption_images_per_s"]), f"**{fmt(r['ratio'])}x**"] for r in s["rows"]]
  train = ", ".join(s["rows"][0]["train"]) if s["rows"] else ""
  return [f"`bsa_jax.data.benchmark` on {train}; consumption = {s['consumption_of']}.", "",
         table(["grain workers", "img/s", "first batch s", "train consumes img/s", "ratio"], rows)]


def scaling_md(s: dict) -> str:
  out = ["## 6. Scaling of the train step", ""]
  sizes = sorted({c["size"] for c in s["grid"]})
  batches = sorted({c["batch"] for c in s["grid"]})
  cells = {(c["size"], c["batch"]): c for c in s["grid"]}
  rows = []
  for size in sizes:
    row = [f"{size}²"]
    for batch in batches:
      c = cells.get((size, batch))
      if c is None:
        row.append("")
      elif "error" in c:
        row.append(f"error: {c['error'][:80]}")
      else:
        row.append(f"{fmt(c['train_step_s'])} s ({fmt(c['images_per_s'])} img/s)")
    rows.append(row)
  out += ["Median train-step time (images/s) by image size and batch, float32, one device:", "",
          table(["size"] + [f"batch {b}" for b in batches], rows), ""]
  d = s["devices"]
  drows = []
  for r in d["rows"]:
    order = r.get("batch_order", "given")
    if "error" in r:
      drows.append([r["devices"], order, f"error: {r['error'][:120]}", "", "", ""])
    else:
      drows.append([r["device_count"], order, fmt(r["train_step_s"]), fmt(r["train_compile_s"]),
                    f"{r['loss_after_init']:.9g}", f"{r['grad_norm']:.9g}"])
  out += [f"1 vs 8 simulated CPU devices (`--xla_force_host_platform_device_count`): one step of "
          f"our train step from the same init on the same global batch ({d['global_batch']} at "
          f"{d['size']}²), with SGD instead of Adam so that a parameter difference shows a gradient "
          "difference (Adam's first step is ~lr·sign(g), which turns rounding noise on gradients that "
          "are exactly 0 in theory, e.g. conv biases before BatchNorm, into lr-sized differences). "
          "The third row, one device with the batch in reverse order, is float32's own "
          "reordering noise. Times on one CPU are informational.", "",
          table(["devices", "batch order", "train step s", "compile s", "loss", "grad norm"], drows)]
  if "reorder_params_max_abs_diff" in d:
    out += ["", f"1 vs 8 devices: |loss diff| {d['loss_abs_diff']:.1e} (bar {d['rtol']:g} "
            f"relative), |grad-norm diff| {d['grad_norm_abs_diff']:.1e} (bar {d['grad_norm_bar']:.1e}), "
            f"max |param diff| after the step {d['params_max_abs_diff']:.1e} (bar "
            f"{d['params_bar']:.1e}). The bars are {d['noise_factor']:g}× what reversing the batch "
            f"on one device does (grad norm {d['reorder_grad_norm_abs_diff']:.1e}, parameters "
            f"{d['reorder_params_max_abs_diff']:.1e}), or the absolute floors {d['rtol']:g} "
            f"relative and {d['params_atol']:g} if larger → equal: **{fmt(d['equal'])}**."]
  return "\n".join(out)


@section("## 7. Start-up: cold vs warm compilation cache")
def startup_md(s: dict) -> list[str]:
  rows = [[label, fmt(r["to_first_step_s"]), fmt(r["lower_s"]), fmt(r["compile_s"]),
           fmt(r["first_step_s"]), f"{r['cache_hits']} / {r['cache_misses']}",
           fmt(r["peak_rss_mb"], 4)] for label, r in (("cold", s["cold"]), ("warm", s["warm"]))]
  return [f"Seconds from launching a fresh process to the end of its first train step ({s['size']}², "
         f"batch {s['batch']}: imports, model, parameter init, compiles, one step) with the "
         "commands' persistent compilation cache (`bsa_jax/compile_cache.py`) in an empty folder "
         "(cold), then again (warm). Lowering (tracing) is not cached.", "",
         table(["cache", "to first step s", "lower s", "train compile s", "first step s",
                "cache hits / misses", "peak RSS MiB"], rows), "",
         f"Warm / cold: {percent(s['warm_over_cold'])}; the cache held {s['cache_files']} files, "
         f"{fmt(s['cache_mb'])} MiB."]


def flags_md(s: dict) -> str:
  out = ["## Flag study: XLA CPU flags, each alone", ""]
  rows, conv_rows = [], []
  for r in s["rows"]:
    if "error" in r:
      rows.append([f"`{r['flags']}`", f"error: {r['error'][:160]}"] + [""] * 6)
      continue
    fusions = ", ".join(f"{k.strip('_').replace('_fusion', '')} {v}"
                        for k, v in r["fusions"].items() if v) or "none"
    rows.append([f"`{r['flags']}`", fmt(r["train_images_per_s"]), f"{fmt(r['train_ratio'])}x",
                 fmt(r["train_compile_s"]), f"{r['loss_abs_diff']:.1e}",
                 f"{r['grad_max_abs_diff']:.1e} (of {r['grad_max_abs']:.1e})",
                 "same" if r["same_hlo"] else f"changed ({fusions})",
                 " / ".join(str(x) for x in r["load_average"] or [])])
    conv_rows.append([f"`{r['flags']}`"] + [
        f"{fmt(c['median_s'] * 1e3)} ({fmt(c['ratio'])}x, Δ {c.get('grad_max_abs_diff', math.nan):.0e})"
        for c in r["convs"]])
  names = next(([c["name"] for c in r["convs"]] for r in s["rows"] if r.get("convs")), [])
  out += [f"BSA-Net '{s['variant']}', {s['size']}², batch {s['batch']}, float32, one device; every "
          "flag set in its own worker on the same batch and initial parameters, compared with the "
          "first row (the defaults). Ratio > 1: faster than the defaults. |Δ| = max absolute "
          "difference of the first step's loss and of its raw gradient (largest |gradient| in "
          "brackets). HLO: whether the compiled train step differs from the defaults' (library "
          "fusions it holds).", "",
          table(["XLA flags", "train img/s", "vs defaults", "compile s", "|Δ loss|", "max |Δ grad|",
                 "HLO", "load average"], rows), "",
          "Convolution micro-benchmarks (forward + input and kernel gradients): ms per call, speed "
          "vs the defaults, max |Δ| of the gradients:", "",
          table(["XLA flags"] + names, conv_rows)]
  return "\n".join(out)


def profile_md(s: dict) -> str:
  """Each profiled cell's tables as `bench/profile_step.py` prints them, or the worker's error."""
  out = ["## Profile: where the train step's time goes", "",
         "`bench/profile_step.py` in a fresh worker per cell: the trainer's step on one device, "
         "traced with `jax.profiler` after warm-up; every executed XLA instruction attributed "
         "through the optimised HLO to what it computes and to the Flax module (forward or "
         "backward) it comes from. Instruction time is summed over the worker's cores, so shares "
         f"are of that sum; top {s['top']} instructions and module paths. Each cell twice: with the "
         "project's XLA defaults (`bsa_jax/xla_defaults.py`, what the commands run), and with "
         "XLA's own (YNNPACK convolutions), whose convolutions the trace records: XLA's own "
         "convolution emitters, used under our defaults, record no events (bench/NOTES.md §8)."]
  for cell in s["cells"]:
    label = ("our XLA defaults" if cell.get("xla_defaults", True) else
             "XLA's own defaults (BSA_XLA_DEFAULTS=off)")
    out.append("")
    if "error" in cell:
      out.append(unmeasured(f"### {cell['size']}² batch {cell['batch']}, {label}", cell["error"]))
    else:
      out.append(profile_step.markdown(cell, top=s["top"], label=label).rstrip("\n"))
  return "\n".join(out)


def mfu_md(s: dict) -> str:
  out = ["## Model FLOP utilisation (train step)", ""]
  rows = []
  for r in s["rows"]:
    devices = "all" if r["devices"] == 0 else r["devices"]
    if "error" in r:
      rows.append([r["size"], r["batch_per_device"], r["dtype"], devices,
                   f"error: {r['error'][:120]}"] + [""] * 7)
      continue
    rows.append([r["size"], r["batch_per_device"], r["dtype"],
                 f"{r['device_count']} × {r['device_kind']}", fmt(r["images_per_s"]),
                 fmt(r["train_step_s"]), fmt(r["model_tflop"]), fmt(r["achieved_tflops"]),
                 fmt(r["achieved_tflops_per_device"]), fmt(r["peak_tflops_per_device"]),
                 percent(r["mfu"]), r["peak"]])
  out += ["Model FLOPs per step: XLA's count of the lowered global train step (before partitioning "
          "over devices); `batch` images per device; utilisation = achieved FLOP/s / (devices × the "
          "device's datasheet peak for the dtype, `bench/gpu_peaks.py`; float32 against TF32 where "
          "the GPU has it, as XLA computes float32 dots in TF32 by default). Unknown devices: "
          "achieved FLOP/s only.", "",
          table(["size", "batch/device", "dtype", "devices", "img/s", "step s", "TFLOP/step",
                 "achieved TFLOP/s", "per device", "peak/device", "utilisation", "peak used"], rows)]
  return "\n".join(out)


RENDERERS = {"throughput": throughput_md, "torch": torch_md, "flops": flops_md,
             "metrics": metrics_md, "pipeline": pipeline_md, "scaling": scaling_md,
             "startup": startup_md, "flags": flags_md, "profile": profile_md, "mfu": mfu_md}


def markdown(results: dict) -> str:
  """The whole document for a results dict as written to the JSON file."""
  parts = [header(results["meta"]), "## Goals", goals_table(results["goals"])]
  for name, section in results["sections"].items():
    parts.append(RENDERERS[name](section))
  return "\n\n".join(parts) + "\n"
