"""Times our real train step (`bsa_jax.train.train_step`) and predict step, jitted as the trainer does.

Model, optimizer, init, mesh and shardings come from the same functions `train.main` uses
(`models.build_model`, `optim.make_optimizer`, `train.init_state`, `sharding.make_mesh`), and the
step is jitted with the trainer's shardings and state donation. Lowering and compilation are timed
separately (`jit(...).lower(...)`, `.compile()`); the executable's XLA cost analysis gives the FLOPs.
"""

from __future__ import annotations

import functools
import os
import time

import jax
import numpy as np

from bsa_jax import config_lib
from bsa_jax.train import heap
from bsa_jax.train import optim
from bsa_jax.train import sharding as sharding_lib
from bsa_jax import models
from bsa_jax import train
from bench import common

# Parameter init is set-up, not measured; at the default optimisation level its XLA compile alone
# takes ~20-35 s on this CPU (mostly LLVM), at -O0 ~5 s. The measured steps use the default options.
_INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def make_config(spec: dict):
  """The base (paper-protocol) config with the spec's variant, size, batch, dtype and optimizer."""
  c = config_lib.base_config()
  c.model.variant = spec["variant"]
  c.data.image_size = int(spec["size"])
  c.train.batch_size = int(spec["batch"])
  c.train.compute_dtype = spec.get("dtype", "float32")
  c.train.optimizer = spec.get("optimizer", c.train.optimizer)
  if spec.get("isam_drop_path") is not None:
    c.model.isam_drop_path = float(spec["isam_drop_path"])
  return c


def cost(compiled) -> dict:
  """FLOPs and bytes from XLA's cost analysis of a compiled executable (dict or [dict])."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  analysis = analysis or {}
  return {"flops": float(analysis.get("flops", float("nan"))),
          "bytes_accessed": float(analysis.get("bytes accessed", float("nan")))}


def temp_bytes(compiled) -> float:
  try:
    return float(compiled.memory_analysis().temp_size_in_bytes)
  except Exception:  # not every backend/version reports it
    return float("nan")


def flat_params(params) -> dict[str, np.ndarray]:
  """{'a/b/kernel': array} of a parameter tree, for saving and comparing."""
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v) for path, v in leaves}


def build(spec: dict, wrap_tx=None):
  """(state, batch, base_rng, jitted train step, jitted predict step, num_params); `wrap_tx(tx)`
  may wrap the optimizer (the flag study keeps the raw gradient in the optimizer state)."""
  config = make_config(spec)
  mesh = sharding_lib.make_mesh(config.mesh)
  model = models.build_model(config)
  tx, schedule = optim.make_optimizer(config.train, total_steps=1000)
  tx = wrap_tx(tx) if wrap_tx else tx
  init_fn = functools.partial(train.init_state, model, tx, image_size=config.data.image_size)
  repl = sharding_lib.replicated(mesh)
  base_rng = jax.jit(lambda: jax.random.key(config.seed), out_shardings=repl)()
  state_sharding = jax.tree.map(lambda _: repl, jax.eval_shape(init_fn, base_rng))
  state = jax.jit(init_fn, out_shardings=state_sharding).lower(base_rng).compile(
      _INIT_COMPILER_OPTIONS)(base_rng)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))

  image, mask = common.synthetic_batch(config.train.batch_size, config.data.image_size)
  if spec.get("batch_order", "given") == "reversed":  # the same images, summed in another order
    image, mask = image[::-1].copy(), mask[::-1].copy()
  batch = sharding_lib.global_batch({"image": image, "mask": mask}, mesh)
  step_fn, predict_fn = train.jit_steps(model, tx, schedule, config.train, mesh, state_sharding)
  return state, batch, base_rng, step_fn, predict_fn, num_params


def compile_timed(jitted, *args) -> tuple[object, dict]:
  """(executable, {'lower_s', 'compile_s', 'flops', ...}) with lowering and compiling timed apart."""
  start = time.perf_counter()
  lowered = jitted.lower(*args)
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  done = time.perf_counter()
  heap.release_free_heap()  # as the trainer does before its first step (train/heap.py)
  info = {"lower_s": lowered_at - start, "compile_s": done - lowered_at, **cost(compiled),
          # Before XLA's simplifications (CSE, algebraic rewrites): ~20 % more on BSA-Net.
          "hlo_flops": cost(lowered)["flops"], "temp_bytes": temp_bytes(compiled)}
  return compiled, info


def run(spec: dict) -> dict:
  """Worker entry: compile and time the train step (and predict step if spec['predict'])."""
  out = {"framework": "jax", "device_count": jax.device_count(),
         "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind}
  if spec.get("batch_per_device"):  # the gpu plan: `batch` images on every device
    spec = {**spec, "batch": int(spec["batch"]) * jax.device_count()}
  out["global_batch"] = int(spec["batch"])
  state, batch, base_rng, step_fn, predict_fn, num_params = build(spec)
  out["num_params"] = num_params
  step, out["train_compile"] = compile_timed(step_fn, state, batch, base_rng)

  holder = {"state": state}
  del state  # donated to the first step

  def train_once():
    holder["state"], holder["metrics"] = step(holder["state"], batch, base_rng)
    jax.block_until_ready((holder["state"], holder["metrics"]))

  with jax.transfer_guard("disallow"):  # as in the trainer: no hidden host<->device copies
    start = time.perf_counter()
    train_once()
    first = time.perf_counter() - start
  first_metrics = {k: float(v) for k, v in jax.device_get(holder["metrics"]).items()}
  # `at`: the wall clock when the first step was done (the start-up section's end point).
  out["first_step"] = {"time_s": first, "at": time.time(), **first_metrics}
  if spec.get("save_dir"):  # the state after exactly one step, for the 1-vs-8-device comparison
    os.makedirs(spec["save_dir"], exist_ok=True)
    path = os.path.join(spec["save_dir"],
                        f"params_{jax.device_count()}dev_{spec.get('batch_order', 'given')}.npz")
    np.savez(path, **flat_params(holder["state"]["params"]))
    out["params_path"] = path
  with jax.transfer_guard("disallow"):
    out["train"] = common.time_calls(train_once, warmup=max(0, spec["warmup"] - 1),
                                     repeats=spec["repeats"])
  out["train"]["images_per_s"] = spec["batch"] / out["train"]["median_s"]
  out["last_loss"] = float(jax.device_get(holder["metrics"]["loss"]))

  if spec.get("predict"):
    inputs = train.model_inputs(batch)
    predict, out["predict_compile"] = compile_timed(predict_fn, holder["state"], inputs)

    def predict_once():
      jax.block_until_ready(predict(holder["state"], inputs))

    with jax.transfer_guard("disallow"):
      out["predict"] = common.time_calls(predict_once, warmup=spec["warmup"],
                                         repeats=spec["repeats"])
    out["predict"]["images_per_s"] = spec["batch"] / out["predict"]["median_s"]
  return out
