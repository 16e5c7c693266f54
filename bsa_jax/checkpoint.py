"""Orbax checkpoints: train state + input-iterator position + JSON metadata, in one step directory.

Keeps the last `keep` checkpoints and the best one by a validation metric. Orbax writes each step to a
temporary directory and renames it when complete, so a run killed mid-save leaves the previous
checkpoints intact and the partial one is ignored on restart.
"""

import os
import signal
from typing import Any

import grain
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging

# Fault injection for the resume tests: SIGKILL this process right after starting the save of this step.
_KILL_DURING_SAVE_ENV = "BSA_FAULT_KILL_DURING_SAVE_AT_STEP"


@jax.jit
def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


class Checkpointer:
  """Saves/restores `{'state', 'data', 'meta'}` under `<workdir>/checkpoints/<step>`."""

  def __init__(self, directory: str, *, keep: int, select_metric: str):
    self.directory = os.path.abspath(directory)
    self.select_metric = select_metric
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(n=keep),
        ocp.checkpoint_managers.BestN(get_metric_fn=lambda m: m[select_metric], n=1,
                                      keep_checkpoints_without_metrics=False),
    ])
    # best_fn also makes Orbax write each step's metrics (it skips them without one).
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True,
                                           best_fn=lambda m: m[select_metric], best_mode="max",
                                           cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(
        self.directory, item_names=("state", "data", "meta"), options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    """The kept step with the highest validation `select_metric` (the later one on ties, as Orbax's
    best-1 policy keeps it). Checkpoints saved before per-step scores were stored fall back to the
    trainer's `best_step` in the latest step's metadata. None if neither names a kept step."""
    steps = self.manager.all_steps()
    scored = [(metrics[self.select_metric], step) for step in steps
              if (metrics := self.manager.metrics(step)) and self.select_metric in metrics]
    if scored:
      return max(scored)[1]
    recorded = self.read_meta(max(steps)).get("best_step") if steps else None
    return recorded if recorded in steps else None

  def save(self, step: int, state: Any, data_iter: Any, meta: dict,
           metrics: dict[str, float] | None = None) -> None:
    """Starts an async save; refuses a state holding NaN/Inf so a good checkpoint is never replaced."""
    if not bool(jax.device_get(_all_finite(state))):
      raise FloatingPointError(
          f"Refusing to save step {step}: the train state holds NaN/Inf. The last good checkpoint "
          f"in {self.directory} is kept; lower --config.train.lr or enable "
          "--config.train.grad_clip_norm and restart.")
    items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics)
    if os.environ.get(_KILL_DURING_SAVE_ENV) == str(step):
      logging.warning("Fault injection: SIGKILL while saving step %d", step)
      os.kill(os.getpid(), signal.SIGKILL)

  def read_meta(self, step: int) -> dict:
    """The JSON metadata saved with `step` (the trainer's best_step/best_val), without the state."""
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore(self, step: int, abstract_state: Any, data_iter: Any = None) -> tuple[Any, dict]:
    """Restores the state (with `abstract_state`'s shardings) and, if given, the iterator position."""
    items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], restored["meta"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def restore_state_only(directory: str, abstract_state: Any) -> tuple[Any, int]:
  """Restores the train state from another run's checkpoint dir (`config.resume`); returns (state, step).

  `directory` is either a run's `checkpoints/` dir (its best step if any, else the latest) or a step dir.
  """
  directory = os.path.abspath(directory)
  manager_dir, step = directory, None
  if os.path.basename(directory).isdigit():
    manager_dir, step = os.path.dirname(directory), int(os.path.basename(directory))
  manager = ocp.CheckpointManager(manager_dir, item_names=("state", "data", "meta"),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  if step is None:
    step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"--config.resume={directory!r} holds no checkpoint; point it at a "
                            "run's checkpoints/ directory or one of its step directories.")
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state)))
  manager.close()
  return restored["state"], step
