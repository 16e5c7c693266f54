"""What to measure: the full benchmark and the `--quick` smoke run, and the worker specs they need.

One JAX worker per distinct (size, batch, dtype, devices): the sections share them (the throughput
rows feed the torch ratios, the FLOP fractions and the pipeline's consumption; the scaling grid
reuses the throughput cells it contains).
"""

from __future__ import annotations

import dataclasses

SECTIONS = ("throughput", "torch", "flops", "metrics", "pipeline", "scaling", "startup")
# Run only when asked for (`--sections=...`) or by a plan that lists them: the XLA flag study, the
# per-instruction profile of the train step (`bench/profile_step.py`) and model FLOP utilisation
# against an accelerator's peak (the gpu plan's section).
OPTIONAL_SECTIONS = ("flags", "profile", "mfu")
ALL_SECTIONS = SECTIONS + OPTIONAL_SECTIONS
ALL_DEVICES = 0  # a `devices` value: every device of the platform (every visible GPU)

# The flag study (`flags` section): each set in its own worker, compared with the first (the
# defaults). Flags of the jaxlib we pin (`strings` on jaxlib/libjax_common.so, bench/NOTES.md "Flag
# study"); its default already hands single dots, convolutions and reductions to YNNPACK
# (`ynn_fusion_type` = individual_dot,individual_convolution,reduce).
FLAG_SETS = (
    "",
    "--xla_cpu_experimental_ynn_fusion_type=",  # no YNNPACK: XLA's own emitters (Eigen) only
    "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
    "--xla_cpu_experimental_ynn_fusion_type=-individual_dot",
    "--xla_cpu_experimental_ynn_fusion_type=-reduce",
    "--xla_cpu_experimental_ynn_fusion_type=+dot",  # dots with their fused producers/consumers
    "--xla_cpu_experimental_ynn_fusion_type=+eltwise",
    "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=dot",
    "--xla_cpu_use_xnnpack=true",
    "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "--xla_cpu_enable_fast_math=true",
    "--xla_cpu_prefer_vector_width=512",
    "--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_RUNTIME",
    "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED",
    "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED",
)


@dataclasses.dataclass(frozen=True)
class Plan:
  """Sizes, batches and repeat counts of one benchmark run."""
  name: str
  variant: str
  main_sizes: tuple[int, ...]
  main_batches: tuple[int, ...]
  bf16_batches: tuple[int, ...]  # bfloat16 rows at every main size with these batches
  scaling_cells: tuple[tuple[int, int], ...]  # (size, batch)
  devices_cell: tuple[int, int]  # (size, global batch) of the 1-vs-8-device comparison
  torch_modes: tuple[str, ...]
  peak_n: int
  metrics_sets: tuple[str, ...]
  metrics_max_images: int  # <= 0: every image of the split
  pipeline_cell: tuple[int, int]  # (size, batch); also the train step whose consumption it must beat
  pipeline_batches: int
  pipeline_workers: tuple[int, ...]
  pipeline_train: tuple[str, ...]
  repeats: int
  warmup: int
  jobs: int  # workers running at once (1 = clean timings)
  timeout_s: float
  bf16_sizes: tuple[int, ...] = ()  # sizes of the bfloat16 rows; () = every main size
  compile_cells: tuple[tuple[int, int], ...] = ()  # (size, batch) of torch.compile modes; () = all
  sections: tuple[str, ...] = SECTIONS  # what the plan runs unless --sections says otherwise
  platform: str = "cpu"  # the workers' JAX platform; 'auto': JAX's choice (a GPU when there is one)
  startup_cell: tuple[int, int] = (256, 16)  # (size, batch) of the cold vs warm start-up runs
  flags_cell: tuple[int, int] = (128, 4)  # (size, batch) of the flag study's train step
  flag_sets: tuple[str, ...] = FLAG_SETS  # the first is the baseline (normally '': the defaults)
  profile_cells: tuple[tuple[int, int], ...] = ((256, 16), (128, 16))  # (size, batch) profiled
  # Each cell is profiled as the commands run (our XLA defaults) and under XLA's own defaults, whose
  # YNNPACK convolutions appear in the trace (XLA's own convolution emitters record no events).
  profile_xla_defaults: tuple[bool, ...] = (True, False)
  profile_steps: int = 5  # traced steps per profile (after `warmup` untraced ones)
  profile_top: int = 20  # instructions and module paths listed per profile
  # (size, batch per device, dtype, devices) of the `mfu` section; devices ALL_DEVICES = every one.
  mfu_cells: tuple[tuple, ...] = ()

  def main_cells(self) -> list[tuple[int, int]]:
    return [(s, b) for s in self.main_sizes for b in self.main_batches]

  def bf16_cells(self) -> list[tuple[int, int]]:
    return [(s, b) for s in (self.bf16_sizes or self.main_sizes) for b in self.bf16_batches]

  def torch_modes_at(self, size: int, batch: int) -> tuple[str, ...]:
    """torch.compile costs minutes per cell on a CPU; `compile_cells` can limit where it runs."""
    if not self.compile_cells or (size, batch) in self.compile_cells:
      return self.torch_modes
    return tuple(m for m in self.torch_modes if not m.startswith("compile"))


def _grid(sizes, batches):
  return tuple((s, b) for s in sizes for b in batches)


FULL = Plan(
    name="full", variant="paper",
    main_sizes=(256, 128), main_batches=(16, 4), bf16_batches=(16,),
    scaling_cells=_grid((128, 256, 352), (1, 4, 16)),
    devices_cell=(128, 16),
    # Inductor already runs convolutions channels_last inside compiled graphs (its layout
    # optimisation), so one compiled mode covers both layouts ('compile_channels_last' exists too).
    torch_modes=("eager", "channels_last", "compile"),
    peak_n=4096,
    metrics_sets=("kvasir_seg:pranet_test", "cvc_colondb:all"), metrics_max_images=0,
    pipeline_cell=(256, 16), pipeline_batches=20, pipeline_workers=(0, 2),
    pipeline_train=("kvasir_seg:pranet_train",),
    repeats=5, warmup=2, jobs=1, timeout_s=3600.0,
    sections=SECTIONS + ("flags", "profile"))

# The full grid in about half the time, for a 2-core CPU: 3 timed calls after 1 warm-up, bfloat16
# only at 128 px, torch.compile only at 128 px batch 16 (each Inductor compile takes minutes here).
SHORT = dataclasses.replace(
    FULL, name="short", repeats=3, warmup=1, bf16_sizes=(128,), compile_cells=((128, 16),))

# A smoke run of every code path: the tiny variant at toy sizes, two workers at a time. Its numbers
# say nothing about speed. XLA compiles dominate its time (~20 s per train step of even the tiny
# network on this CPU), so it shares one configuration between sections wherever it can: the main
# cell is also the pipeline's consumer and a scaling cell; it skips bfloat16 (the same code path
# with another `compute_dtype`, which tests/test_train_step.py covers).
QUICK = dataclasses.replace(
    FULL, name="quick", variant="tiny",
    main_sizes=(32,), main_batches=(8,), bf16_batches=(),
    scaling_cells=((32, 8), (64, 2)),
    devices_cell=(32, 8),
    torch_modes=("eager", "channels_last"),
    peak_n=1024, metrics_max_images=3,
    pipeline_cell=(32, 8), pipeline_batches=3,
    repeats=2, warmup=1, jobs=2, timeout_s=600.0,
    startup_cell=(32, 8), flags_cell=(32, 4),
    flag_sets=("", "--xla_cpu_experimental_ynn_fusion_type="),
    profile_cells=((32, 8),), profile_steps=2, sections=SECTIONS)


def _mfu_grid(sizes, batches, dtypes, devices):
  return tuple((s, b, d, n) for n in devices for d in dtypes for s in sizes for b in batches)


# Issue #15 item 7, for a machine with GPUs: the throughput rows (one GPU, float32 and bfloat16)
# and model FLOP utilisation against the GPU's datasheet peak (`bench/gpu_peaks.py`) on one GPU and
# on all of them, `batch` images per GPU. PyTorch, metrics and the input pipeline are the CPU
# plans' business.
GPU = dataclasses.replace(
    FULL, name="gpu", sections=("throughput", "mfu", "startup"), platform="auto",
    main_sizes=(256, 352), main_batches=(16, 32), bf16_batches=(16, 32), bf16_sizes=(),
    mfu_cells=_mfu_grid((256, 352), (16, 32), ("float32", "bfloat16"), (1, ALL_DEVICES)),
    startup_cell=(256, 16), repeats=5, warmup=2, jobs=1)

# The same code paths on a CPU in a few minutes (`--plan=gpu --quick`): tiny variant, 32 px, 1 and
# 2 simulated devices; on a GPU machine it is a smoke test of the GPU plan.
GPU_QUICK = dataclasses.replace(
    GPU, name="gpu_quick", variant="tiny", sections=("throughput", "mfu"),
    main_sizes=(32,), main_batches=(4,), bf16_batches=(4,),
    mfu_cells=_mfu_grid((32,), (4,), ("float32", "bfloat16"), (1, 2)),
    flags_cell=QUICK.flags_cell, flag_sets=QUICK.flag_sets, profile_cells=((32, 4),),
    profile_steps=2,
    repeats=2, warmup=1, jobs=2, timeout_s=600.0)

PLANS = {"full": FULL, "short": SHORT, "quick": QUICK, "gpu": GPU, "gpu_quick": GPU_QUICK}


def _common(plan: Plan, threads: int) -> dict:
  return {"variant": plan.variant, "repeats": plan.repeats, "warmup": plan.warmup,
          "threads": threads, "platform": plan.platform}


# The 1-vs-8-device comparison's runs, (devices, batch order): the third, one device with the batch
# in reverse order, measures float32's own reordering noise, the yardstick for the 1-vs-8 gap.
DEVICE_RUNS = ((1, "given"), (8, "given"), (1, "reversed"))


def jax_jobs(plan: Plan, sections, save_dir: str) -> list[dict]:
  """One spec per distinct JAX configuration the chosen sections need."""
  jobs: dict[tuple, dict] = {}

  def need(size, batch, dtype="float32", devices=1, predict=False, save=False, optimizer="adam",
           batch_order="given", **model):
    key = (size, batch, dtype, devices, optimizer, batch_order)
    spec = jobs.setdefault(key, {"kind": "jax_model", "framework": "jax", "size": size,
                                 "batch": batch, "dtype": dtype, "devices": devices,
                                 "optimizer": optimizer, "batch_order": batch_order,
                                 "predict": False, **model})
    spec["predict"] = spec["predict"] or predict
    if save:
      spec["save_dir"] = save_dir

  if {"throughput", "torch", "flops"} & set(sections):
    for size, batch in plan.main_cells():
      need(size, batch, predict=True)
  if "throughput" in sections:
    for size, batch in plan.bf16_cells():
      need(size, batch, "bfloat16", predict=True)
  if "scaling" in sections:
    for size, batch in plan.scaling_cells:
      need(size, batch)
    # SGD, not the recipe's Adam: Adam's first update is lr * g / (|g| + eps), so a gradient that is
    # 0 in exact arithmetic (a conv bias before BatchNorm) and ~1e-9 in float32 moves by up to lr in
    # a direction set by summation order. With SGD a parameter difference is lr x the gradient's.
    # Drop path off in all of DEVICE_RUNS, or reversing the batch would also hand each image
    # another sample's drop mask.
    for devices, order in DEVICE_RUNS:
      need(*plan.devices_cell, devices=devices, save=True, optimizer="sgd", batch_order=order,
           isam_drop_path=0.0)
  if "pipeline" in sections:
    need(*plan.pipeline_cell)
  if "mfu" in sections:
    for size, batch, dtype, devices in plan.mfu_cells:
      need(size, batch, dtype, devices=devices, predict=devices == 1, batch_per_device=True)
  return list(jobs.values())


def flag_specs(plan: Plan, save_dir: str) -> list[dict]:
  """One `flags` worker per flag set of the study, the baseline (the first) first."""
  size, batch = plan.flags_cell
  return [{"kind": "flags", "size": size, "batch": batch, "set_index": i, "study_flags": flags,
           "save_dir": save_dir} for i, flags in enumerate(plan.flag_sets)]


def worker_specs(plan: Plan, sections, *, threads: int, save_dir: str) -> list[dict]:
  """Every worker spec of the run, in the order they run (cheap, isolated ones first)."""
  common = _common(plan, threads)
  specs = []
  if "flops" in sections:
    specs.append({"kind": "peak", "n": plan.peak_n, **common})
  if "metrics" in sections:
    # Each timed call already scores the whole set (100 + 60 images in the full run).
    specs.append({"kind": "metrics", "sets": list(plan.metrics_sets),
                  "max_images": plan.metrics_max_images, **common,
                  "repeats": min(3, plan.repeats)})
  if "pipeline" in sections:
    size, batch = plan.pipeline_cell
    specs.append({"kind": "pipeline", "size": size, "batch": batch,
                  "batches": plan.pipeline_batches, "workers": list(plan.pipeline_workers),
                  "train": list(plan.pipeline_train), **common})
  specs += [{**spec, **common} for spec in jax_jobs(plan, sections, save_dir)]
  if "startup" in sections:  # cold, then warm, in one worker (they must not overlap)
    size, batch = plan.startup_cell
    specs.append({"kind": "startup", "size": size, "batch": batch, **common})
  if "flags" in sections:
    specs += [{**spec, **common} for spec in flag_specs(plan, save_dir)]
  if "profile" in sections:  # a traced run, apart from the timed cells
    specs += [{"kind": "profile", "size": size, "batch": batch, "xla_defaults": ours,
               "steps": plan.profile_steps, "top": plan.profile_top, **common}
              for size, batch in plan.profile_cells for ours in plan.profile_xla_defaults]
  if "torch" in sections:
    for size, batch in plan.main_cells():
      for mode in plan.torch_modes_at(size, batch):
        specs.append({"kind": "torch_model", "framework": "torch", "mode": mode, "size": size,
                      "batch": batch, "predict": True, **common})
  return specs
