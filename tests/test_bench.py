"""The issue #7 benchmark harness: `python -m bsa_jax.bench --quick` end to end, plus its pure parts.

The quick run is a smoke test (tiny BSA-Net, toy sizes, ~1.5 min on 2 quiet cores, mostly XLA
compiles); it checks what users of the JSON and the Markdown rely on, not speed.
"""

import json
import math
import os
import subprocess
import sys

import pytest

from bench import __main__ as cli
from bench import _worker as worker
from bench import common
from bench import gpu_peaks
from bench import plan as plan_lib
from bench import report
from bench import sections as sections_lib
from bsa_jax import xla_defaults
from conftest import data_dir, run_in_process


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  """(results dict, Markdown file text, stdout) of one quick run."""
  out_dir = tmp_path_factory.mktemp("bench")
  json_path, md_path = str(out_dir / "results.json"), str(out_dir / "RESULTS.md")
  proc = subprocess.run([sys.executable, "-m", "bsa_jax.bench", "--quick", "--out", json_path,
                         "--md", md_path], cwd=common.REPO_ROOT, capture_output=True, text=True,
                        timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(json_path) as f:
    results = json.load(f)
  with open(md_path) as f:
    markdown = f.read()
  return results, markdown, proc.stdout


def _positive(value, what):
  assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, f"{what}={value!r}"


@pytest.mark.slow  # the whole harness end to end: ~5 min of XLA compiles per plan
def test_json_has_every_section_and_no_worker_failed(quick):
  results, _, _ = quick
  assert list(results["sections"]) == list(plan_lib.SECTIONS)
  failed = [(r["spec"], r["error"]) for r in results["raw"]
            if "error" in r and not r["error"].startswith("unavailable")]
  assert not failed
  assert results["meta"]["machine"]["cores"] >= 1 and results["meta"]["plan"]["name"] == "quick"
  assert results["goals"], "every run reports its goals"


@pytest.mark.slow  # the whole harness end to end: ~5 min of XLA compiles per plan
def test_throughput_flops_and_scaling_numbers_are_finite_and_positive(quick):
  s = quick[0]["sections"]
  for row in s["throughput"]["rows"]:
    for key in ("train_images_per_s", "train_step_s", "train_lower_s", "train_compile_s",
                "peak_rss_mb", "num_params"):
      _positive(row[key], f"throughput {row['dtype']} {key}")
    _positive(row["predict_images_per_s"], "predict_images_per_s")
  assert len(s["throughput"]["rows"]) == len(plan_lib.QUICK.main_cells())
  assert s["flops"]["rows"]
  for row in s["flops"]["rows"]:
    for key in ("train_gflop", "achieved_gflops_per_s", "peak_gflops_per_s", "fraction"):
      _positive(row[key], f"flops {key}")
  assert len(s["scaling"]["grid"]) == len(plan_lib.QUICK.scaling_cells)
  for cell in s["scaling"]["grid"]:
    _positive(cell["train_step_s"], f"scaling {cell['size']}x{cell['batch']}")


@pytest.mark.slow  # the whole harness end to end: ~5 min of XLA compiles per plan
def test_torch_ratios_or_a_reason(quick):
  t = quick[0]["sections"]["torch"]
  if t["status"].startswith("unavailable"):  # the section says why instead of crashing
    pytest.skip(f"the PyTorch twin did not run: {t['status']}")  # a failure under BSA_REQUIRE_DATA=1
  assert t["status"] == "ok", t["status"]
  for r in t["ratios"]:
    _positive(r["train_ratio"], "train_ratio")
    _positive(r["predict_ratio"], "predict_ratio")
    assert r["torch_train_mode"] in plan_lib.QUICK.torch_modes
    assert r["ours_params"] == r["torch_params"], "the twin has our parameter count"


@pytest.mark.slow  # the whole harness end to end: ~5 min of XLA compiles per plan
def test_metrics_equal_pysodmetrics(quick):
  data_dir("kvasir_seg")  # the only acceptable reason not to compare: the real masks are absent
  data_dir("cvc_colondb_subset")
  m = quick[0]["sections"]["metrics"]
  compared = {k: v for k, v in m["sets"].items() if "skipped" not in v}
  assert compared == m["sets"], m["sets"]
  assert m["equal"] and m["max_abs_diff"] < 1e-6
  for name, r in compared.items():
    assert r["images"] == plan_lib.QUICK.metrics_max_images, name
    _positive(r["speedup"], f"{name} speedup")


@pytest.mark.slow  # the whole harness end to end: ~5 min of XLA compiles per plan
def test_pipeline_reports_each_worker_count(quick):
  data_dir("kvasir_seg")  # the pipeline decodes the real Kvasir training images
  p = quick[0]["sections"]["pipeline"]
  assert "error" not in p, p["error"]
  assert [r["num_workers"] for r in p["rows"]] == list(plan_lib.QUICK.pipeline_workers)
  for r in p["rows"]:
    _positive(r["images_per_sec"], "pipeline images_per_sec")
    _positive(r["ratio"], "pipeline ratio")


@pytest.mark.slow  # the whole harness end to end: ~5 min of XLA compiles per plan
def test_one_and_eight_devices_agree(quick):
  d = quick[0]["sections"]["scaling"]["devices"]
  assert [(r["device_count"], r["batch_order"]) for r in d["rows"]] == [
      (1, "given"), (8, "given"), (1, "reversed")]
  assert d["equal"], d
  assert d["params_max_abs_diff"] <= 1e-6 and d["loss_abs_diff"] <= 1e-5


def _device_run(loss, grad_norm):
  return {"device_count": 1, "train": {"median_s": 1.0}, "train_compile": {"compile_s": 1.0},
          "first_step": {"loss": loss, "grad_norm": grad_norm}}


def test_device_comparison_is_judged_against_reordering_noise():
  one, reordered = _device_run(7.0, 25.0), _device_run(7.0, 25.01)
  diff = {"params_max_abs_diff": 3e-5, "reorder_params_max_abs_diff": 1e-5}
  # Within 4x the reordering noise on both the grad norm and the parameters: equal.
  d = sections_lib.compare_devices([one, _device_run(7.0, 25.03), reordered], diff)
  assert d["equal"] and d["params_bar"] == pytest.approx(4e-5)
  # A gradient-norm gap far beyond the noise (a sharding bug would look like this) is not.
  assert not sections_lib.compare_devices([one, _device_run(7.0, 25.5), reordered], diff)["equal"]
  assert not sections_lib.compare_devices(
      [one, _device_run(7.0, 25.0), reordered], {**diff, "params_max_abs_diff": 1e-4})["equal"]
  # The forward pass must agree regardless of the noise.
  assert not sections_lib.compare_devices([one, _device_run(7.01, 25.0), reordered], diff)["equal"]
  # Without the reordering run there is no yardstick: not equal, with the reason.
  d = sections_lib.compare_devices([one, _device_run(7.0, 25.0), None], diff)
  assert not d["equal"] and d["rows"][2]["error"] == "not run"


@pytest.mark.slow  # the whole harness end to end: ~5 min of XLA compiles per plan
def test_markdown_is_printed_and_written(quick):
  _, markdown, stdout = quick
  assert report.TABLE_HEADER in markdown and "## Goals" in markdown
  for title in ("## 1.", "## 2.", "## 3.", "## 4.", "## 5.", "## 6.", "## 7."):
    assert title in markdown
  assert markdown.strip() in stdout


@pytest.mark.slow  # the whole harness end to end: ~5 min of XLA compiles per plan
def test_report_only_rebuilds_the_same_document(quick, tmp_path):
  results, markdown, _ = quick
  saved = tmp_path / "results.json"
  saved.write_text(json.dumps(results))
  md = tmp_path / "again.md"
  assert run_in_process("bsa_jax.bench", "--report-only", str(saved), "--out",
                        str(tmp_path / "again.json"), "--md", str(md)) == 0
  assert md.read_text() == markdown


# ------------------------------------------------------------------------------------------------
# Pure parts (no workers).
# ------------------------------------------------------------------------------------------------
def test_sections_share_jax_workers():
  """The quick plan's main cell also serves the pipeline and the scaling grid (one compile)."""
  specs = plan_lib.jax_jobs(plan_lib.QUICK, plan_lib.SECTIONS, save_dir="/tmp/x")
  keys = [(s["size"], s["batch"], s["dtype"], s["devices"], s["optimizer"], s["batch_order"])
          for s in specs]
  assert len(keys) == len(set(keys))
  assert sorted(keys) == sorted([
      (32, 8, "float32", 1, "adam", "given"), (64, 2, "float32", 1, "adam", "given"),
      (32, 8, "float32", 1, "sgd", "given"), (32, 8, "float32", 8, "sgd", "given"),
      (32, 8, "float32", 1, "sgd", "reversed")])
  assert all(s["isam_drop_path"] == 0.0 for s in specs if s["optimizer"] == "sgd")
  full = plan_lib.jax_jobs(plan_lib.FULL, plan_lib.SECTIONS, save_dir="/tmp/x")
  # 4 main cells (+2 bf16), 5 more scaling cells, 3 device runs; the pipeline reuses 256x16.
  assert len(full) == 4 + 2 + 5 + 3
  main = next(s for s in specs if s["dtype"] == "float32" and s["optimizer"] == "adam"
              and s["size"] == 32)
  assert main["predict"] and "save_dir" not in main


def test_finite_or_none_makes_strict_json():
  tree = {"a": [1.0, float("nan")], "b": {"c": float("inf"), "d": "x"}}
  assert json.loads(json.dumps(cli.finite_or_none(tree), allow_nan=False)) == {
      "a": [1.0, None], "b": {"c": None, "d": "x"}}


def test_mfu_table_renders_a_missing_utilisation_from_a_results_file():
  """A saved results.json holds None where the run had NaN (unknown device peak)."""
  row = {"size": 32, "batch_per_device": 8, "dtype": "float32", "devices": 1, "device_count": 1,
         "device_kind": "cpu", "images_per_s": 10.0, "train_step_s": 0.8, "model_tflop": 0.1,
         "achieved_tflops": 0.125, "achieved_tflops_per_device": 0.125,
         "peak_tflops_per_device": None, "mfu": None, "peak": "unknown device"}
  text = report.mfu_md({"rows": [row, dict(row, mfu=0.25, peak="datasheet")]})
  assert "| – | unknown device |" in text and "| **25.0%** | datasheet |" in text


def test_goals_follow_thresholds():
  built = {"pipeline": {"rows": [{"num_workers": 0, "ratio": 3.5}, {"num_workers": 2, "ratio": 1.0}]},
           "metrics": {"sets": {"x": {"speedup": float("nan")}}, "max_abs_diff": 0.0,
                       "tolerance": 1e-6, "equal": True}}
  goals = {g["goal"]: g["met"] for g in sections_lib.goals(built)}
  assert goals == {"input pipeline / train consumption, 0 workers": True,
                   "input pipeline / train consumption, 2 workers": False,
                   "metrics equal to pysodmetrics (every metric, every set)": True,
                   "metrics speed vs pysodmetrics, x": False}


def test_worker_reports_errors_instead_of_crashing():
  result = common.run_workers([{"kind": "no_such_kind"}], log=lambda _: None)[0]
  assert "error" in result and "no_such_kind" in result["error"]
  assert os.path.isdir(common.REPO_ROOT)


@pytest.mark.slow  # the whole harness end to end: ~5 min of XLA compiles per plan
def test_warm_start_is_served_from_the_compilation_cache(quick):
  s = quick[0]["sections"]["startup"]
  assert "error" not in s, s
  assert s["cold"]["cache_misses"] >= 1 and s["cold"]["cache_hits"] == 0
  assert s["warm"]["cache_hits"] >= 1 and s["warm"]["cache_misses"] == 0, s["warm"]
  _positive(s["cold"]["to_first_step_s"], "cold start")
  _positive(s["warm_over_cold"], "warm / cold")
  assert s["cache_files"] >= 1


# ------------------------------------------------------------------------------------------------
# The gpu plan (issue #15 item 7) on its tiny grid, which a CPU runs too, with the flag study
# (item 2) of one flag against the defaults.
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpu_quick(tmp_path_factory):
  """The results dict of `--plan=gpu --quick` with the flags and profile sections added."""
  out_dir = tmp_path_factory.mktemp("bench_gpu")
  json_path = str(out_dir / "results.json")
  proc = subprocess.run([sys.executable, "-m", "bsa_jax.bench", "--plan=gpu", "--quick",
                         "--sections=throughput,mfu,flags,profile",
                         "--flag_set=--xla_cpu_experimental_ynn_fusion_type=", "--out", json_path,
                         "--md", str(out_dir / "RESULTS.md")], cwd=common.REPO_ROOT,
                        capture_output=True, text=True, timeout=3600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(json_path) as f:
    return json.load(f)


@pytest.mark.slow  # the whole harness end to end: ~5 min of XLA compiles per plan
def test_gpu_plan_reports_utilisation_per_device_count(gpu_quick):
  assert gpu_quick["meta"]["plan"]["name"] == "gpu_quick"
  rows = gpu_quick["sections"]["mfu"]["rows"]
  assert [(r["dtype"], r["devices"]) for r in rows] == [
      ("float32", 1), ("bfloat16", 1), ("float32", 2), ("bfloat16", 2)]
  for r in rows:
    assert "error" not in r, r
    assert r["device_count"] == r["devices"] and r["global_batch"] == 4 * r["devices"]
    _positive(r["achieved_tflops"], "achieved TFLOP/s")
    if gpu_peaks.lookup(r["device_kind"]) is None:  # a CPU: no peak, achieved FLOP/s only
      assert r["mfu"] is None and r["peak"].startswith("unknown device")
    else:
      _positive(r["mfu"], "utilisation")
  one, two = rows[0], rows[2]  # float32 on 1 and on 2 devices, 4 images per device
  assert 1.8 < two["model_tflop"] / one["model_tflop"] < 2.2, "the global step's FLOPs are counted"
  assert len(gpu_quick["sections"]["throughput"]["rows"]) == 2


@pytest.mark.slow  # the whole harness end to end: ~5 min of XLA compiles per plan
def test_flag_study_compares_each_set_with_the_defaults(gpu_quick):
  rows = gpu_quick["sections"]["flags"]["rows"]
  assert [r["flags"] for r in rows] == ["(defaults)", "--xla_cpu_experimental_ynn_fusion_type="]
  base, other = rows
  assert "error" not in base and "error" not in other, rows
  assert base["same_hlo"] and base["grad_max_abs_diff"] == 0 and base["train_ratio"] == 1
  _positive(other["train_images_per_s"], "train img/s")
  # Another kernel library sums in another order: equal to float32 rounding, not bit for bit.
  assert other["loss_abs_diff"] <= 1e-4 and other["grad_max_abs_diff"] <= 1e-2 * other["grad_max_abs"]
  assert [c["name"] for c in other["convs"]] == [c[0] for c in flag_bench_cases()]
  for c in other["convs"]:
    _positive(c["median_s"], c["name"])
    assert c["grad_max_abs_diff"] <= 1e-3, c


@pytest.mark.slow  # the whole harness end to end: ~5 min of XLA compiles per plan
def test_profile_section_attributes_the_step_to_modules(gpu_quick):
  """The `profile` section: the traced step's instructions, with time, category and module."""
  s = gpu_quick["sections"]["profile"]
  ours, xlas = s["cells"]
  assert "error" not in ours and "error" not in xlas, s["cells"]
  assert "ynn_fusion_type=reduce" in ours["xla_flags"] and "ynn_fusion_type" not in xlas["xla_flags"]
  # Under XLA's own defaults the convolutions are YNNPACK calls, recorded in the trace.
  assert any(c.startswith("library") for (c, _), _ in xlas["by_category"]), xlas["by_category"]
  cell = ours
  assert (cell["size"], cell["batch"]) == plan_lib.GPU_QUICK.profile_cells[0]
  assert 0 < len(cell["rows"]) <= s["top"] <= cell["instructions"]
  for r in cell["rows"]:
    _positive(r["ms_per_step"], r["name"])
  assert sum(r["share"] for r in cell["rows"]) <= 1 + 1e-9
  assert cell["rows"] == sorted(cell["rows"], key=lambda r: -r["ms_per_step"])
  places = {where for (where, _), _ in cell["by_where"]}
  assert any(p.startswith("isam") for p in places), places  # the Swin blocks, by their op_name
  _positive(cell["untraced_wall_ms"], "wall time per step")
  text = report.profile_md(s)
  assert text.startswith("## Profile: where the train step's time goes")
  assert f"| 1 | `{cell['rows'][0]['name']}` |" in text


def test_short_plan_measures_the_flag_study_and_the_profiles():
  """`--plan=short` regenerates everything issue #15 asks of RESULTS.md in one command."""
  specs = plan_lib.worker_specs(plan_lib.SHORT, plan_lib.SHORT.sections, threads=2, save_dir="/x")
  profiles = [(s["size"], s["batch"], s["xla_defaults"]) for s in specs if s["kind"] == "profile"]
  assert profiles == [(256, 16, True), (256, 16, False), (128, 16, True), (128, 16, False)]
  assert sum(s["kind"] == "flags" for s in specs) == len(plan_lib.FLAG_SETS)
  quick = plan_lib.worker_specs(plan_lib.QUICK, plan_lib.QUICK.sections, threads=2, save_dir="/x")
  assert not {"profile", "flags"} & {s["kind"] for s in quick}


def test_profile_section_reports_a_failed_worker():
  raw = [{"spec": {"kind": "profile", "size": 256, "batch": 16}, "error": "Traceback ... OOM"}]
  s = sections_lib.profile(raw, plan_lib.SHORT)
  assert [c["xla_defaults"] for c in s["cells"]] == [True, False, True, False]
  assert s["cells"][0]["error"].endswith("OOM") and s["cells"][1]["error"] == "not run"
  text = report.profile_md(s)
  assert "### 256² batch 16, our XLA defaults" in text and "**Traceback ... OOM**" in text


def flag_bench_cases():
  """bench.flag_bench.CONV_CASES without importing jax into the test process's namespace early."""
  from bench import flag_bench  # imports jax (the session has it configured already)
  return flag_bench.CONV_CASES


def test_gpu_peaks_match_device_names():
  assert gpu_peaks.lookup("NVIDIA A100-SXM4-80GB")[1] == "A100"
  assert gpu_peaks.lookup("NVIDIA H100 PCIe")[1] == "H100 PCIe"
  assert gpu_peaks.lookup("NVIDIA H100 80GB HBM3")[1] == "H100 SXM"
  assert gpu_peaks.lookup("NVIDIA L4")[1] == "L4" and gpu_peaks.lookup("NVIDIA L40S")[1] == "L40S"
  assert gpu_peaks.lookup("NVIDIA A10")[1] == "A10" and gpu_peaks.lookup("NVIDIA A10G") is None
  assert gpu_peaks.lookup("NVIDIA GeForce RTX 3090 Ti") is None
  assert gpu_peaks.lookup("Tesla T4")[1] == "T4" and gpu_peaks.lookup("Tesla V100-SXM2-16GB")[1] == "V100 SXM2"
  assert gpu_peaks.peak_flops("NVIDIA A100-SXM4-40GB", "bfloat16")[0] == 312e12
  assert gpu_peaks.peak_flops("NVIDIA A100-SXM4-40GB", "float32")[0] == 156e12  # TF32
  assert gpu_peaks.peak_flops("Tesla T4", "float32")[0] == 8.1e12
  assert gpu_peaks.peak_flops("cpu", "float32")[0] is None


def test_worker_xla_flags_and_visible_gpus(monkeypatch):
  flags = worker.xla_flags({"devices": 2, "xla_flags": "--a=1", "study_flags": "--b="},
                           "--xla_force_host_platform_device_count=8 --c=2")
  assert flags == " ".join([*xla_defaults.flags(), "--c=2 --a=1 --b= --xla_force_host_platform_device_count=2"])
  assert worker.xla_flags({"devices": plan_lib.ALL_DEVICES}, "").endswith("device_count=1")
  # XLA's own defaults for a worker whose parent (`cli.run`) already put ours in XLA_FLAGS.
  inherited = xla_defaults.with_defaults("--c=2")
  assert worker.xla_flags({"xla_defaults": False}, inherited) == (
      "--c=2 --xla_force_host_platform_device_count=1")
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")
  monkeypatch.setenv("HIP_VISIBLE_DEVICES", "")
  worker.limit_accelerators(2)
  assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5" and os.environ["HIP_VISIBLE_DEVICES"] == "0,1"
  worker.limit_accelerators(plan_lib.ALL_DEVICES)
  assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"


def test_profile_attributes_instructions_to_what_and_where():
  """bench/profile_step.py: HLO instructions → category, and op_name → module and direction."""
  import jax
  import jax.numpy as jnp
  from bench import profile_step

  def f(x, w):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.tanh(y).sum()

  x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 4))
  hlo = profile_step.parse_hlo(jax.jit(jax.grad(f, argnums=1)).lower(x, w).compile().as_text())
  computations = hlo.pop("__computations__")
  kinds = {profile_step.category(info, computations) for info in hlo.values()}
  assert "convolution" in kinds and "unknown" not in kinds, kinds
  assert profile_step.source("jit(train_step)/transpose(jvp(Model))/isam/blocks_3/attn/dot_general") == (
      "isam/blocks_3", "bwd")
  assert profile_step.source("jit(train_step)/jvp(Model)/decoder/up1/jit(_resize)") == ("decoder/up1", "fwd")
  assert profile_step.source("jit(train_step)/jvp()/reduce_window_sum") == ("(loss)", "fwd")
  assert profile_step.source("jit(train_step)/add") == ("(optimizer, glue)", "fwd")


def test_png_writers_benchmark_writes_the_same_pixels_with_each(capsys):
  """bench/png_bench.py on a small real image: every writer's file decodes to the source pixels."""
  pytest.importorskip("png")  # pypng, the reference (requirements-test.txt)
  data_dir("kvasir_seg")
  from bench import png_bench
  png_bench.main(["--size=300"])
  rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 300²")]
  written = [row for row in rows if "making the pixels" not in row]
  assert len(written) == 6, rows  # ours, pypng, PIL for the RGB overlay and the grey mask
  assert all(row.rstrip(" |").endswith("yes") for row in written), rows
