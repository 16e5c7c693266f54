"""The trainer: one jitted, data-parallel train step over a device mesh, Orbax resume, evals, tables.

`main` reads as the table of contents of a run, in big_vision's order: workdir and mesh → input →
model and optimizer → shardings, init and restore → compiled steps → loop → test evaluation. The
same code runs on one CPU, on a GPU/TPU host, or on several hosts (`jax.distributed` is initialised
by `launch.py`). Scoring and result files live in `bsa_jax.eval`; this module only calls them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any, Callable

import jax
import ml_collections as mlc
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from bsa_jax import cli
from bsa_jax import config_lib
from bsa_jax import data as data_lib
from bsa_jax import models
from bsa_jax.eval import curves
from bsa_jax.eval import evaluate
from bsa_jax.models import pretrained
from bsa_jax.train import heap
from bsa_jax.train import optim
from bsa_jax.train import progress as progress_lib
from bsa_jax.train import sharding as sharding_lib
from bsa_jax.train import sizes as sizes_lib
from bsa_jax.train import step as step_lib
from bsa_jax.workdir import checkpoint as ckpt_lib
from bsa_jax.workdir import identity
from bsa_jax.workdir import metric_writer


class NonFiniteError(FloatingPointError):
  """The loss or gradient norm became NaN/Inf; the run stops without saving."""


@dataclasses.dataclass
class Run:
  """What every stage of a run shares: where it writes, the mesh and the process layout."""
  config: mlc.ConfigDict
  workdir: str
  mesh: jax.sharding.Mesh
  writer: metric_writer.MetricWriter
  num_devices: int
  process_index: int
  process_count: int

  @property
  def ckpt_dir(self) -> str:
    return os.path.join(self.workdir, "checkpoints")


@dataclasses.dataclass
class Inputs:
  """The training iterator, validation sets and the step budget they imply."""
  train_iter: Any
  val_sets: dict
  num_train: int
  total_steps: int
  steps_per_epoch: int


@dataclasses.dataclass
class Steps:
  """The compiled train step, the evaluator (state, sets → metrics) and the state's initialiser."""
  train: Callable
  train_at_size: Callable[[int], Callable]  # size -> the train step on batches resized to it
  evaluate: Callable
  init: Callable
  abstract_state: Any
  state_sharding: Any
  base_rng: jax.Array


def _host_metrics(metrics) -> dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


# ------------------------------------------------------------------ stages


def open_run(config: mlc.ConfigDict, workdir: str, allow_config_change: bool = False) -> Run:
  """Checks that a workdir holding a run is resumed with the same config (before writing anything),
  then creates the workdir, the mesh and the metric writer, and stores the resolved config."""
  workdir = os.path.abspath(workdir)
  changed = identity.check(workdir, config, allow_change=allow_config_change)
  write_config = bool(changed) or not identity.holds_run(workdir)  # before the writer creates files
  global_bs, num_devices, process_count = config.train.batch_size, jax.device_count(), jax.process_count()
  if global_bs % num_devices or global_bs % process_count:
    raise cli.UserError(f"--config.train.batch_size={global_bs} must be divisible by the "
                        f"{num_devices} devices ({process_count} processes) of the mesh.")
  ckpt_dir = os.path.join(workdir, "checkpoints")
  fresh_run = not (os.path.isdir(ckpt_dir) and any(d.isdigit() for d in os.listdir(ckpt_dir)))
  if pretrained.requested(config.model_init) and fresh_run and not config.resume:
    # Before the workdir exists and long before compiling: offline, this stops with the commands
    # that fetch and convert the weights (or fetches and converts them once, into the cache).
    pretrained.resolve(config.model_init)
  os.makedirs(workdir, exist_ok=True)
  mesh = sharding_lib.make_mesh(config.mesh)
  run = Run(config=config, workdir=workdir, mesh=mesh, writer=metric_writer.MetricWriter(workdir),
            num_devices=jax.device_count(), process_index=jax.process_index(),
            process_count=jax.process_count())
  if run.process_index == 0 and write_config:
    identity.store(workdir, config, changed)  # an accepted change goes to config_history.jsonl
  logging.info("Mesh %s over %d devices, %d process(es); workdir %s",
               dict(mesh.shape), run.num_devices, run.process_count, workdir)
  return run


def build_inputs(config: mlc.ConfigDict, run: Run) -> Inputs:
  """This process's rows of every global training batch, the validation sets and the step counts."""
  sizes_lib.check_schedule(config.train.size_schedule)  # refused before reading any data
  num_train = data_lib.num_examples(config.data, "train")
  total_steps, steps_per_epoch = config_lib.num_train_steps(config, num_train)
  train_iter = data_lib.train_iterator(
      config.data, global_batch_size=config.train.batch_size, seed=config.seed,
      process_index=run.process_index, process_count=run.process_count)
  val_sets = data_lib.eval_sets(config.data, "val") if config.data.val else {}
  logging.info("Train: %d images, %d steps/epoch, %d steps (%.1f epochs) at global batch %d",
               num_train, steps_per_epoch, total_steps, total_steps / steps_per_epoch,
               config.train.batch_size)
  return Inputs(train_iter, val_sets, num_train, total_steps, steps_per_epoch)


def jit_steps(model, tx, schedule, train_config: mlc.ConfigDict, mesh, state_sharding,
              with_coarse: bool = False, tta: str = "none", size: int | None = None):
  """(train step, predict step) jitted over the mesh: state replicated and donated, batch on `data`.
  The benchmarks time exactly these. `with_coarse`: the predict step also returns the model's coarse
  prediction (before BSA-Net's ARM); `tta`: its flip averaging, see `step.predict_step`; `size`:
  the train step's training size (`step.train_step`)."""
  repl, batch_sharding = sharding_lib.replicated(mesh), sharding_lib.batch_sharding(mesh)
  train_fn = jax.jit(
      functools.partial(step_lib.train_step, model=model, tx=tx, schedule=schedule,
                        train_config=train_config, size=size),
      in_shardings=(state_sharding, batch_sharding, repl),
      out_shardings=(state_sharding, repl),
      donate_argnums=(0,))
  predict_fn = jax.jit(functools.partial(step_lib.predict_step, model=model, with_coarse=with_coarse,
                                         tta=tta),
                       in_shardings=(state_sharding, batch_sharding), out_shardings=batch_sharding)
  return train_fn, predict_fn


def compile_steps(config: mlc.ConfigDict, run: Run, model, tx, schedule) -> Steps:
  """Shardings (state replicated, batch on `data`), the jitted train step and the evaluator."""
  mesh = run.mesh
  init_fn = functools.partial(step_lib.init_state, model, tx, image_size=config.data.image_size,
                              ema=config.train.ema_decay > 0)
  repl = sharding_lib.replicated(mesh)
  # Created under jit: device_put cannot target devices of other processes.
  base_rng = jax.jit(lambda: jax.random.key(config.seed), out_shardings=repl)()
  abstract_state = jax.eval_shape(init_fn, base_rng)
  state_sharding = jax.tree.map(lambda _: repl, abstract_state)
  abstract_state = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, state_sharding)

  # Polyp evaluations also score the coarse prediction (mDSC_coarse: what the ARM adds).
  train_fn, predict_fn = jit_steps(model, tx, schedule, config.train, mesh, state_sharding,
                                   with_coarse=config.eval.kind == "polyp", tta=config.eval.tta)
  # One step per training size of train.size_schedule. Each is compiled on its first batch and the
  # compiler's freed heap is released before it runs, so the step's buffers do not stack on it.
  train_at_size = functools.cache(lambda size: heap.CompiledOnFirstCall(jit_steps(
      model, tx, schedule, config.train, mesh, state_sharding, size=size)[0]))
  eval_bs = -(-config.eval.batch_size // run.num_devices) * run.num_devices
  evaluator = evaluate.get_evaluator(config.eval.kind)

  def run_eval(state, eval_sets, **kwargs):
    def predict_all(inputs):
      """Every process holds the whole eval batch; each feeds its own rows, all get all logits."""
      rows = eval_bs // run.process_count
      local = jax.tree.map(lambda x: x[run.process_index * rows:(run.process_index + 1) * rows],
                           inputs)
      logits = predict_fn(state, sharding_lib.global_batch(local, mesh))
      return multihost_utils.process_allgather(logits, tiled=True)
    return evaluator(predict_all, eval_sets, batch_size=eval_bs, **kwargs)

  return Steps(train=heap.CompiledOnFirstCall(train_fn), train_at_size=train_at_size,
               evaluate=run_eval,
               init=jax.jit(init_fn, out_shardings=state_sharding), abstract_state=abstract_state,
               state_sharding=state_sharding, base_rng=base_rng)


def restore_or_init(config: mlc.ConfigDict, run: Run, steps: Steps, train_iter,
                    checkpointer: ckpt_lib.Checkpointer) -> tuple[Any, dict]:
  """big_vision's order: this workdir's checkpoint → `config.resume` → `config.model_init` → scratch.
  Returns (state, trainer metadata {best_val, best_step})."""
  meta = {"best_val": None, "best_step": None}
  resumed = checkpointer.restore_latest_intact(steps.abstract_state, train_iter)
  if resumed is not None:
    latest, state, meta = resumed
    logging.info("Resumed from %s/%d", checkpointer.directory, latest)
  elif config.resume:
    state, step = ckpt_lib.restore_state_only(config.resume, steps.abstract_state,
                                              config.eval.select_metric)
    logging.info("Initialised from --config.resume=%s (step %d)", config.resume, step)
  else:
    state = steps.init(steps.base_rng)
    if pretrained.requested(config.model_init):
      host = jax.device_get(state)
      params, batch_stats = pretrained.merge_into(config, host["params"], host["batch_stats"])
      host = {**host, "params": params, "batch_stats": batch_stats}
      if "ema" in host:  # the average starts from the pretrained weights too
        host["ema"] = {"params": params, "batch_stats": batch_stats}
      state = sharding_lib.put_global(host, steps.state_sharding)
      logging.info("Loaded pretrained weights from --config.model_init=%s", config.model_init)
  return state, meta


def train_loop(config: mlc.ConfigDict, run: Run, inputs: Inputs, steps: Steps, state,
               meta: dict, checkpointer: ckpt_lib.Checkpointer) -> tuple[Any, dict, int, dict]:
  """Steps from the restored position to the end: logs, validates, checkpoints, stops on NaN/Inf.
  Returns (state, metadata, last step, last logged train metrics)."""
  total_steps, steps_per_epoch = inputs.total_steps, inputs.steps_per_epoch
  global_bs = config.train.batch_size
  start_step = int(jax.device_get(state["step"]))
  eval_every = max(1, int(round(config.train.eval_every_epochs * steps_per_epoch)))
  progress = progress_lib.Progress(config.train.progress_bar, total_steps, start_step)
  last_train_metrics: dict[str, float] = {}
  accum: dict[str, list[float]] = {}
  interval_start, interval_steps = time.perf_counter(), 0
  step = start_step
  with jax.transfer_guard("disallow"):
    while step < total_steps:
      try:
        local_batch = next(inputs.train_iter)
      except data_lib.DataError as e:  # a file that broke after data.verify: named by the pipeline
        checkpointer.wait()  # the save in flight completes, so the run stops with its checkpoints whole
        progress.close()
        raise data_lib.DataError(f"{e}\nThe last checkpoint is step {checkpointer.latest_step()} in "
                                 f"{checkpointer.directory}.") from None
      batch = sharding_lib.global_batch(local_batch, run.mesh)
      size = sizes_lib.training_size(config.train.size_schedule, step, total_steps, config.seed)
      train = steps.train if size is None else steps.train_at_size(size)
      state, metrics = train(state, batch, steps.base_rng)
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
        run.writer.write(step, full)
        last_train_metrics = full
        accum, interval_start, interval_steps = {}, time.perf_counter(), 0

      val_metrics = None
      if inputs.val_sets and (step % eval_every == 0 or step == total_steps):
        eval_start = time.perf_counter()
        val_metrics = steps.evaluate(state, inputs.val_sets, progress=False)
        interval_start += time.perf_counter() - eval_start  # img/s counts training time only
        run.writer.write(step, {f"val/{k}": v for k, v in val_metrics.items()})
        score = val_metrics[config.eval.select_metric]
        if meta["best_val"] is None or score >= meta["best_val"]:  # ties: the later, as Orbax keeps
          meta = {"best_val": score, "best_step": step}

      if step % steps_per_epoch == 0 or step == total_steps:
        progress.log(progress_lib.epoch_line(
            epoch=step // steps_per_epoch, num_epochs=-(-total_steps // steps_per_epoch),
            step=step, total_steps=total_steps,
            loss=last_train_metrics.get("loss", host["loss"]),
            lr=float(jax.device_get(metrics["learning_rate"])), grad_norm=host["grad_norm"],
            images_per_sec=last_train_metrics.get("images_per_sec"), val_metrics=val_metrics))

      if (val_metrics is not None or step % config.train.checkpoint_every_steps == 0
          or step == total_steps):
        checkpointer.save(
            step, state, inputs.train_iter, meta,
            metrics={config.eval.select_metric: val_metrics[config.eval.select_metric]}
            if val_metrics is not None else None)
  progress.close()
  checkpointer.wait()
  inputs.train_iter.close()  # stops grain worker processes, if any
  return state, meta, step, last_train_metrics


def evaluate_tests(config: mlc.ConfigDict, run: Run, steps: Steps, state, step: int,
                   checkpointer: ckpt_lib.Checkpointer) -> dict | None:
  """Scores the validation-selected checkpoint on every test set; writes results/ with provenance."""
  test_sets = data_lib.eval_sets(config.data, "test") if config.data.test else {}
  if not test_sets:
    return None
  best = checkpointer.best_step()
  if best is not None and best != step:
    best, state, _ = checkpointer.restore_best_intact(steps.abstract_state)
  selected = best if best is not None else step
  selection = (f"best validation {config.eval.select_metric}" if best is not None
               else "last step (no validation score)")
  if checkpointer.damaged:
    selection += " among readable steps (damaged: " + ", ".join(
        str(s) for s, _ in checkpointer.damaged) + f", moved to {ckpt_lib.DAMAGED_DIR}/)"
  logging.info("Evaluating step %d (%s) on the test sets: %s", selected, selection,
               ", ".join(test_sets))
  results = {}
  for name, eval_set in test_sets.items():
    overlay_dir = (os.path.join(run.workdir, "overlays", evaluate.set_dir_name(name))
                   if run.process_index == 0 else None)
    results[name] = steps.evaluate(state, {name: eval_set}, progress=config.train.progress_bar,
                                   overlay_dir=overlay_dir, num_overlays=config.eval.num_overlays)
    run.writer.write(step, {f"test/{name}/{k}": v for k, v in results[name].items()})
  if run.process_index == 0:
    paths = evaluate.write_results(run.workdir, results, config=config, checkpoint_step=selected,
                                   selection=selection)
    logging.info("Test results (checkpoint step %d, %s):\n%s\nWritten: %s", selected, selection,
                 evaluate.summary_table(results, config.eval.kind), ", ".join(paths))
  return results


def close_run(run: Run, summary: dict) -> None:
  """Writes summary.json and the training-curves plot (process 0)."""
  run.writer.close()
  if run.process_index == 0:
    with open(os.path.join(run.workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2, default=float)
    logging.info("Training curves: %s", curves.plot_training_curves(run.workdir))


# ------------------------------------------------------------------ main


def main(config: mlc.ConfigDict, workdir: str, *, allow_config_change: bool = False) -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint of the same config) and
  evaluates at the end. Returns a summary dict: final step, last logged train metrics, validation
  and test metrics.
  """
  run = open_run(config, workdir, allow_config_change)
  inputs = build_inputs(config, run)

  model = models.build_model(config)
  tx, schedule = optim.make_optimizer(config.train, inputs.total_steps)
  steps = compile_steps(config, run, model, tx, schedule)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(steps.abstract_state["params"]))
  logging.info("Model %s: %s parameters", config.model_name, f"{num_params:,}")

  checkpointer = ckpt_lib.Checkpointer(run.ckpt_dir, keep=config.train.keep_checkpoints,
                                       select_metric=config.eval.select_metric)
  state, meta = restore_or_init(config, run, steps, inputs.train_iter, checkpointer)
  state, meta, step, last_train = train_loop(config, run, inputs, steps, state, meta, checkpointer)

  summary = {"step": step, "train": last_train, "num_params": num_params,
             "best_step": meta["best_step"], "best_val": meta["best_val"]}
  results = evaluate_tests(config, run, steps, state, step, checkpointer)
  if results is not None:
    summary["test"] = results
  checkpointer.close()
  close_run(run, summary)
  return summary
