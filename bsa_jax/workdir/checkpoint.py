"""Orbax checkpoints: train state + input-iterator position + JSON metadata, in one step directory.

Keeps the last `keep` checkpoints and the best one by a validation metric. Orbax writes each step to a
temporary directory and renames it when complete, so a run killed mid-save leaves the previous
checkpoints intact and the partial one is ignored on restart. A step that cannot be read (a
truncated or corrupted file) is moved aside to `<workdir>/checkpoints_damaged/` (never deleted) and
the next step is tried, so a damaged checkpoint degrades a run instead of blocking it.
"""

import os
import signal
from typing import Any, Callable

import grain
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from bsa_jax import cli

DAMAGED_DIR = "checkpoints_damaged"  # beside `checkpoints/`, out of Orbax's sight

# Fault injection for the resume tests: SIGKILL this process right after starting the save of this step.
_KILL_DURING_SAVE_ENV = "BSA_FAULT_KILL_DURING_SAVE_AT_STEP"


WEIGHTS = ("run", "raw", "ema")  # which weights of a train state to evaluate


def eval_variables(state, weights: str = "run") -> dict:
  """The variables evaluation uses from a train state (live or restored). weights='run': its moving
  average when the run keeps one (`state['ema']`, config.train.ema_decay), else the live params and
  statistics; 'raw': the live ones; 'ema': the average (an error for a run without one)."""
  if weights not in WEIGHTS:
    raise ValueError(f"weights={weights!r}; choose from {', '.join(WEIGHTS)}.")
  if weights == "ema" and "ema" not in state:
    raise cli.UserError("this run keeps no moving average of its weights (config.train.ema_decay "
                        "was 0); evaluate its own weights (weights 'run' or 'raw').")
  source = state["ema"] if "ema" in state and weights != "raw" else state
  return {"params": source["params"], "batch_stats": source.get("batch_stats", {})}


@jax.jit
def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


class NoIntactCheckpointError(cli.UserError):
  """Every checkpoint step of a run failed to read; they were moved aside, not deleted."""


def step_is_readable(step_dir: str) -> bool:
  """Whether the saved train state of a step directory can be read at all (no target structure),
  which tells a damaged checkpoint from one that does not fit the model being restored."""
  with ocp.StandardCheckpointer() as reader:  # closed on the way out, a failed read included
    try:
      reader.restore(os.path.join(step_dir, "state"))
      return True
    except Exception:  # noqa: BLE001 - any read failure means the files are damaged
      return False


def quarantine(directory: str, step: int, error: Exception) -> str:
  """Moves `<directory>/<step>` to `<workdir>/checkpoints_damaged/<step>[.k]` and logs why."""
  damaged_root = os.path.join(os.path.dirname(os.path.abspath(directory)), DAMAGED_DIR)
  os.makedirs(damaged_root, exist_ok=True)
  dest, k = os.path.join(damaged_root, str(step)), 1
  while os.path.exists(dest):
    k += 1
    dest = os.path.join(damaged_root, f"{step}.{k}")
  os.rename(os.path.join(directory, str(step)), dest)
  logging.warning("Checkpoint step %d in %s could not be read (%s: %s); moved it to %s and trying "
                  "the previous step.", step, directory, type(error).__name__,
                  str(error).splitlines()[0][:300] if str(error) else "", dest)
  return dest


class Checkpointer:
  """Saves/restores `{'state', 'data', 'meta'}` under `<workdir>/checkpoints/<step>`."""

  def __init__(self, directory: str, *, keep: int, select_metric: str):
    self.directory = os.path.abspath(directory)
    self.select_metric = select_metric
    self.keep = keep
    self.damaged: list[tuple[int, str]] = []  # (step, where it was moved) in this session
    self.manager = self._open_manager()

  def _open_manager(self) -> ocp.CheckpointManager:
    keep, select_metric = self.keep, self.select_metric
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(n=keep),
        ocp.checkpoint_managers.BestN(get_metric_fn=lambda m: m[select_metric], n=1,
                                      keep_checkpoints_without_metrics=False),
    ])
    # best_fn also makes Orbax write each step's metrics (it skips them without one).
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True,
                                           best_fn=lambda m: m[select_metric], best_mode="max",
                                           cleanup_tmp_directories=True)
    return ocp.CheckpointManager(
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

  def _restore_intact(self, pick: Callable[[], int | None], restore: Callable[[int], Any]):
    """(step, restore(step)) for the step `pick` names, moving aside every unreadable step and
    picking again; None if there is no step. Raises NoIntactCheckpointError if all were damaged."""
    while (step := pick()) is not None:
      try:
        return step, restore(step)
      except Exception as e:  # noqa: BLE001 - classified below; a non-damage error is re-raised
        if step_is_readable(os.path.join(self.directory, str(step))):
          raise  # the files are fine: the state does not fit (another model/config), not damage
        if jax.process_index() == 0:
          self.damaged.append((step, quarantine(self.directory, step, e)))
        if jax.process_count() > 1:  # the others wait until process 0 has moved the step
          multihost_utils.sync_global_devices(f"bsa_jax_quarantine_{step}")
        self.manager.close()
        self.manager = self._open_manager()
    if self.damaged:
      raise NoIntactCheckpointError(
          f"No readable checkpoint is left in {self.directory}: steps "
          f"{', '.join(str(s) for s, _ in self.damaged)} could not be read and were moved to "
          f"{os.path.dirname(self.damaged[0][1])}. Delete the workdir's checkpoints to train from "
          "scratch (or point --config.resume at another run), or restore the files from a backup.")
    return None

  def restore_latest_intact(self, abstract_state: Any, data_iter: Any = None):
    """(step, state, meta) of the newest readable step, or None if the run has no checkpoint."""
    found = self._restore_intact(self.latest_step,
                                 lambda s: self.restore(s, abstract_state, data_iter))
    return None if found is None else (found[0], *found[1])

  def restore_best_intact(self, abstract_state: Any):
    """(step, state, meta) of the best readable step on validation (else the latest), or None."""
    pick = lambda: self.best_step() if self.best_step() is not None else self.latest_step()  # noqa: E731
    found = self._restore_intact(pick, lambda s: self.restore(s, abstract_state))
    return None if found is None else (found[0], *found[1])

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def restore_state_only(directory: str, abstract_state: Any,
                       select_metric: str = "mDSC") -> tuple[Any, int]:
  """Restores the train state from another run's checkpoint dir (`config.resume`); returns (state, step).

  `directory` is either a step dir (that step) or a run's `checkpoints/` dir: its best step by the
  stored validation `select_metric` (the later one on ties, as the trainer selects), else its latest.
  """
  directory = os.path.abspath(directory)
  manager_dir, step = directory, None
  if os.path.basename(directory).isdigit():
    manager_dir, step = os.path.dirname(directory), int(os.path.basename(directory))
  manager = ocp.CheckpointManager(manager_dir, item_names=("state", "data", "meta"),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  if step is None:
    scored = [(metrics[select_metric], s) for s in manager.all_steps()
              if (metrics := manager.metrics(s)) and select_metric in metrics]
    step = max(scored)[1] if scored else manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"--config.resume={directory!r} holds no checkpoint; point it at a "
                            "run's checkpoints/ directory or one of its step directories.")
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state)))
  manager.close()
  return restored["state"], step
