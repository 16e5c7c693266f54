"""The trainer: one jitted, data-parallel train step over a device mesh, Orbax resume, evals, tables.

Sections follow big_vision's `train.py`: setup → input → model and optimizer → shardings and init →
restore → train/eval steps → loop → final evaluation. The same code runs on one CPU, on a GPU/TPU
host, or on several hosts (`jax.distributed` is initialised by `launch.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils

from bsa_jax import checkpoint as ckpt_lib
from bsa_jax import config_lib
from bsa_jax import evaluate
from bsa_jax import losses
from bsa_jax import metric_writer
from bsa_jax import models
from bsa_jax import optim
from bsa_jax import pretrained
from bsa_jax import sharding as sharding_lib
from bsa_jax.eval import curves


class NonFiniteError(FloatingPointError):
  """The loss or gradient norm became NaN/Inf; the run stops without saving."""


def build_model(config: mlc.ConfigDict):
  """`bsa_jax.models.<model_name>.Model(**config.model)` with the config's compute dtype."""
  kwargs = config.model.to_dict()
  model_cls = models.get_model_module(config.model_name).Model
  field_names = {f.name for f in dataclasses.fields(model_cls)}
  unknown = sorted(set(kwargs) - field_names)
  if unknown:
    raise ValueError(f"--config.model has keys {unknown} that {config.model_name}.Model does not "
                     f"take; its fields are {sorted(field_names - {'parent', 'name'})}.")
  if "dtype" in field_names and "dtype" not in kwargs:
    kwargs["dtype"] = jnp.dtype(config.train.compute_dtype)
  return model_cls(**kwargs)


def init_state(model, tx, rng: jax.Array, image_size: int) -> dict[str, Any]:
  """Creates params, BatchNorm statistics and optimizer state (traced under jit with shardings)."""
  dummy = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  params_rng, dropout_rng, points_rng = jax.random.split(rng, 3)
  variables = model.init({"params": params_rng, "dropout": dropout_rng, "points": points_rng},
                         dummy, train=False)
  params = variables["params"]
  return {
      "step": jnp.zeros((), jnp.int32),
      "params": params,
      "batch_stats": variables.get("batch_stats", {}),
      "opt_state": tx.init(params),
  }


def train_step(state, batch, base_rng, *, model, tx, schedule, train_config):
  """One optimizer step on the global batch. Pure: (state, batch) → (new state, metrics)."""
  step_rng = jax.random.fold_in(base_rng, state["step"])
  dropout_rng, points_rng = jax.random.split(step_rng)

  inputs = model_inputs(batch)

  def loss_fn(params):
    variables = {"params": params, "batch_stats": state["batch_stats"]}
    (logits, aux), new_vars = model.apply(
        variables, **inputs, train=True, mutable=["batch_stats"],
        rngs={"dropout": dropout_rng, "points": points_rng})
    loss, parts = losses.segmentation_loss(logits, aux, batch["mask"], train_config)
    return loss, (new_vars.get("batch_stats", {}), parts)

  (loss, (batch_stats, parts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  new_state = {"step": state["step"] + 1, "params": params, "batch_stats": batch_stats,
               "opt_state": opt_state}
  # Never let a non-finite step replace the last good state (the host then stops the run).
  finite = jnp.isfinite(loss) & jnp.isfinite(optax.global_norm(grads))
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
  metrics = {
      "loss": loss,
      "grad_norm": optax.global_norm(grads),
      "param_norm": optax.global_norm(params),
      "update_norm": optax.global_norm(updates),
      "learning_rate": schedule(state["step"]),
      **parts,
  }
  return new_state, metrics


def model_inputs(batch: dict) -> dict:
  """The batch entries a model takes: `image`, plus extra image inputs (e.g. DIN's `image_enhanced`)."""
  return {k: v for k, v in batch.items() if k.startswith("image")}


def predict_step(state, inputs, *, model):
  """Eval-mode logits (B, S, S, num_classes) at the network resolution."""
  variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
  logits, _ = model.apply(variables, **inputs, train=False)
  return logits


def _load_pretrained(config, state):
  """Merges a converted timm checkpoint (`config.model_init`) into freshly initialised params."""
  from bsa_jax.models import convert  # torch-free: reads our own converted format
  loaded = convert.load_converted(pretrained.resolve(config.model_init))
  model_module = models.get_model_module(config.model_name)
  mapping = getattr(model_module, "pretrained_mapping", None)
  params, batch_stats = convert.merge_pretrained(
      state["params"], state["batch_stats"], loaded,
      mapping=mapping(config.model) if mapping else None)
  return {**state, "params": params, "batch_stats": batch_stats}


def _host_metrics(metrics) -> dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


class _Progress:
  """A tqdm bar with ETA on process 0, and log lines that do not break it."""

  def __init__(self, enabled: bool, total: int, initial: int):
    self.bar = None
    if enabled and jax.process_index() == 0:
      from tqdm import tqdm
      self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

  def update(self, n=1, **postfix):
    if self.bar is not None:
      self.bar.update(n)
      if postfix:
        self.bar.set_postfix(postfix, refresh=False)

  def log(self, msg: str):
    if jax.process_index() != 0:
      return
    if self.bar is not None:
      self.bar.write(msg)
    logging.info(msg)

  def close(self):
    if self.bar is not None:
      self.bar.close()


def main(config: mlc.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint) and evaluates at the end.

  Returns a summary dict: final step, last logged train metrics, validation and test metrics.
  """
  from bsa_jax import data as data_lib

  # ---------------------------------------------------------------- setup
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  mesh = sharding_lib.make_mesh(config.mesh)
  num_devices, process_index, process_count = jax.device_count(), jax.process_index(), jax.process_count()
  global_bs = config.train.batch_size
  if global_bs % num_devices or global_bs % process_count:
    raise ValueError(f"--config.train.batch_size={global_bs} must be divisible by the "
                     f"{num_devices} devices ({process_count} processes) of the mesh.")
  writer = metric_writer.MetricWriter(workdir)
  if process_index == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  logging.info("Mesh %s over %d devices, %d process(es); workdir %s",
               dict(mesh.shape), num_devices, process_count, workdir)

  ckpt_dir = os.path.join(workdir, "checkpoints")
  fresh_run = not (os.path.isdir(ckpt_dir) and any(d.isdigit() for d in os.listdir(ckpt_dir)))
  if config.model_init and fresh_run and not config.resume:
    pretrained.resolve(config.model_init)  # fail (or download) now, not after compiling

  # ---------------------------------------------------------------- input
  num_train = data_lib.num_examples(config.data, "train")
  total_steps, steps_per_epoch = config_lib.num_train_steps(config, num_train)
  train_iter = data_lib.train_iterator(
      config.data, global_batch_size=global_bs, seed=config.seed,
      process_index=process_index, process_count=process_count)
  val_sets = data_lib.eval_sets(config.data, "val") if config.data.val else {}
  logging.info("Train: %d images, %d steps/epoch, %d steps (%.1f epochs) at global batch %d",
               num_train, steps_per_epoch, total_steps, total_steps / steps_per_epoch, global_bs)

  # ---------------------------------------------------------------- model and optimizer
  model = build_model(config)
  tx, schedule = optim.make_optimizer(config.train, total_steps)
  init_fn = functools.partial(init_state, model, tx, image_size=config.data.image_size)

  # ---------------------------------------------------------------- shardings and init
  repl = sharding_lib.replicated(mesh)
  # Created under jit: device_put cannot target devices of other processes.
  base_rng = jax.jit(lambda: jax.random.key(config.seed), out_shardings=repl)()
  abstract_state = jax.eval_shape(init_fn, base_rng)
  state_sharding = jax.tree.map(lambda _: repl, abstract_state)
  abstract_state = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, state_sharding)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_state["params"]))
  logging.info("Model %s: %s parameters", config.model_name, f"{num_params:,}")

  # ---------------------------------------------------------------- restore (big_vision order)
  checkpointer = ckpt_lib.Checkpointer(ckpt_dir, keep=config.train.keep_checkpoints,
                                       select_metric=config.eval.select_metric)
  meta = {"best_val": None, "best_step": None}
  latest = checkpointer.latest_step()
  if latest is not None:
    state, meta = checkpointer.restore(latest, abstract_state, train_iter)
    logging.info("Resumed from %s/%d", checkpointer.directory, latest)
  elif config.resume:
    state, step = ckpt_lib.restore_state_only(config.resume, abstract_state)
    logging.info("Initialised from --config.resume=%s (step %d)", config.resume, step)
  else:
    state = jax.jit(init_fn, out_shardings=state_sharding)(base_rng)
    if config.model_init:
      state = sharding_lib.put_global(_load_pretrained(config, jax.device_get(state)), state_sharding)
      logging.info("Loaded pretrained weights from --config.model_init=%s", config.model_init)
  start_step = int(jax.device_get(state["step"]))

  # ---------------------------------------------------------------- steps
  batch_sharding = sharding_lib.batch_sharding(mesh)
  step_fn = jax.jit(
      functools.partial(train_step, model=model, tx=tx, schedule=schedule,
                        train_config=config.train),
      in_shardings=(state_sharding, batch_sharding, repl),
      out_shardings=(state_sharding, repl),
      donate_argnums=(0,))
  predict_fn = jax.jit(functools.partial(predict_step, model=model),
                       in_shardings=(state_sharding, batch_sharding), out_shardings=batch_sharding)
  eval_bs = -(-config.eval.batch_size // num_devices) * num_devices

  evaluator = evaluate.get_evaluator(config.eval.kind)

  def predict_all(inputs):
    """Every process holds the whole eval batch; each feeds its own rows, all get all logits."""
    rows = eval_bs // process_count
    local = jax.tree.map(lambda x: x[process_index * rows:(process_index + 1) * rows], inputs)
    logits = predict_fn(state, sharding_lib.global_batch(local, mesh))
    return multihost_utils.process_allgather(logits, tiled=True)

  def run_eval(eval_sets, **kwargs):
    return evaluator(predict_all, eval_sets, batch_size=eval_bs, **kwargs)

  # ---------------------------------------------------------------- loop
  eval_every = max(1, int(round(config.train.eval_every_epochs * steps_per_epoch)))
  progress = _Progress(config.train.progress_bar, total_steps, start_step)
  last_train_metrics: dict[str, float] = {}
  accum: dict[str, list[float]] = {}
  interval_start, interval_steps = time.perf_counter(), 0
  step = start_step
  with jax.transfer_guard("disallow"):
    while step < total_steps:
      local_batch = next(train_iter)
      batch = sharding_lib.global_batch(local_batch, mesh)
      state, metrics = step_fn(state, batch, base_rng)
      step += 1
      interval_steps += 1
      host = _host_metrics({"loss": metrics["loss"], "grad_norm": metrics["grad_norm"]})
      if not all(np.isfinite(v) for v in host.values()):
        checkpointer.wait()
        progress.close()
        raise NonFiniteError(
            f"Non-finite training at step {step}: loss={host['loss']}, grad_norm="
            f"{host['grad_norm']}. Nothing was saved for this step; the last good checkpoint is "
            f"step {checkpointer.latest_step()} in {checkpointer.directory}. Lower "
            "--config.train.lr or set --config.train.grad_clip_norm, then rerun the same command.")
      for k, v in host.items():
        accum.setdefault(k, []).append(v)
      progress.update(1, loss=f"{host['loss']:.4f}")

      if step % config.train.log_every_steps == 0 or step == total_steps:
        full = _host_metrics(metrics)
        elapsed = time.perf_counter() - interval_start
        full.update({k: float(np.mean(v)) for k, v in accum.items()})
        full["images_per_sec"] = interval_steps * global_bs / max(elapsed, 1e-9)
        full["epoch"] = step / steps_per_epoch
        writer.write(step, full)
        last_train_metrics = full
        accum, interval_start, interval_steps = {}, time.perf_counter(), 0

      val_metrics = None
      if val_sets and (step % eval_every == 0 or step == total_steps):
        eval_start = time.perf_counter()
        val_metrics = run_eval(val_sets, progress=False)
        interval_start += time.perf_counter() - eval_start  # img/s counts training time only
        writer.write(step, {f"val/{k}": v for k, v in val_metrics.items()})
        score = val_metrics[config.eval.select_metric]
        if meta["best_val"] is None or score >= meta["best_val"]:  # ties: the later, as Orbax keeps
          meta = {"best_val": score, "best_step": step}

      if step % steps_per_epoch == 0 or step == total_steps:
        epoch = step // steps_per_epoch
        msg = (f"epoch {epoch}/{-(-total_steps // steps_per_epoch)}  step {step}/{total_steps}  "
               f"loss {last_train_metrics.get('loss', host['loss']):.4f}  "
               f"lr {float(jax.device_get(metrics['learning_rate'])):.2e}  "
               f"grad_norm {host['grad_norm']:.3f}")
        if "images_per_sec" in last_train_metrics:
          msg += f"  {last_train_metrics['images_per_sec']:.1f} img/s"
        if val_metrics is not None:
          msg += "  val " + "  ".join(f"{k} {val_metrics[k]:.4f}"
                                      for k in ("mDSC", "mIoU", "MAE", "mHD95") if k in val_metrics)
        progress.log(msg)

      if (val_metrics is not None or step % config.train.checkpoint_every_steps == 0
          or step == total_steps):
        checkpointer.save(
            step, state, train_iter, meta,
            metrics={config.eval.select_metric: val_metrics[config.eval.select_metric]}
            if val_metrics is not None else None)
  progress.close()
  checkpointer.wait()
  train_iter.close()  # stops grain worker processes, if any

  # ---------------------------------------------------------------- final evaluation
  summary = {"step": step, "train": last_train_metrics, "num_params": num_params,
             "best_step": meta["best_step"], "best_val": meta["best_val"]}
  test_sets = data_lib.eval_sets(config.data, "test") if config.data.test else {}
  if test_sets:
    best = checkpointer.best_step()
    if best is not None and best != step:
      state, _ = checkpointer.restore(best, abstract_state)
    selected = best if best is not None else step
    selection = (f"best validation {config.eval.select_metric}" if best is not None
                 else "last step (no validation score)")
    logging.info("Evaluating step %d (%s) on the test sets: %s", selected, selection,
                 ", ".join(test_sets))
    results = {}
    for name, eval_set in test_sets.items():
      overlay_dir = (os.path.join(workdir, "overlays", name.replace(":", "_"))
                     if process_index == 0 else None)
      results[name] = run_eval({name: eval_set}, progress=config.train.progress_bar,
                               overlay_dir=overlay_dir, num_overlays=config.eval.num_overlays)
      writer.write(step, {f"test/{name}/{k}": v for k, v in results[name].items()})
    summary["test"] = results
    if process_index == 0:
      paths = evaluate.write_results(workdir, results, config=config, checkpoint_step=selected,
                                     selection=selection)
      progress.log("Test results (checkpoint step %d, %s):\n%s\nWritten: %s" % (
          selected, selection, evaluate.summary_table(results, config.eval.kind), ", ".join(paths)))
  checkpointer.close()
  writer.close()
  if process_index == 0:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2, default=float)
    logging.info("Training curves: %s", curves.plot_training_curves(workdir))
  return summary
