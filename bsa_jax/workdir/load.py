"""Loading a trained workdir for inference: its config, model and weights, and a jitted predictor."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import orbax.checkpoint as ocp

from bsa_jax import cli
from bsa_jax import config_lib
from bsa_jax import models
from bsa_jax.models import tta as tta_lib
from bsa_jax.workdir import checkpoint as ckpt_lib


# Intermediates drawn as heat maps by `predict --attention`: ISAM's output and FSAM's attended output.
ATTENTION_MAPS = ("isam/out", "fsam/out")


@dataclasses.dataclass
class Trained:
  """A trained model ready to predict: `predict(inputs) -> logits (B, S, S, num_classes)`."""
  config: mlc.ConfigDict
  step: int
  selection: str  # how `step` was chosen, for provenance
  variables: dict
  predict: Callable[[dict], np.ndarray]
  # inputs -> (logits, {name: (B, h, w, C) features}) for the names in ATTENTION_MAPS the model has.
  predict_with_maps: Callable[[dict], tuple[np.ndarray, dict]]
  tta: str = "none"  # the flip averaging of `predict` (models/tta.py)

  @property
  def image_size(self) -> int:
    return int(self.config.data.image_size)


def load_config(workdir: str) -> mlc.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: --workdir must be a directory written by "
                            "`python launch.py --config=... --workdir=...`.")
  with open(path) as f:
    saved = json.load(f)
  # Start from today's defaults so a workdir written before a key existed still loads.
  config = config_lib.base_config()
  config.update(saved)
  return config


def select_step(workdir: str, which: str = "best", select_metric: str = "mDSC") -> tuple[int, str]:
  """(step, how it was chosen) for 'best' (highest validation `select_metric`; else the latest),
  'latest' or a number."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"No checkpoints in {directory}; train first with launch.py.")
  checkpointer = ckpt_lib.Checkpointer(directory, keep=1_000_000, select_metric=select_metric)
  try:
    steps = checkpointer.manager.all_steps()
    if not steps:
      raise FileNotFoundError(f"No complete checkpoint in {directory}.")
    if which == "latest":
      return max(steps), "latest step"
    if which == "best":
      best = checkpointer.best_step()
      if best is None:
        return max(steps), "latest step (no validation score)"
      return best, f"best validation {select_metric}"
    if not str(which).isdigit() or int(which) not in steps:
      raise cli.UserError(f"--step={which}: give best, latest or a saved step; {directory} holds "
                          f"steps {sorted(steps)}.")
    return int(which), "step chosen by the user"
  finally:
    checkpointer.manager.close()


def restore_state(workdir: str, which: str, select_metric: str) -> tuple[int, str, dict]:
  """(step, how it was chosen, restored state) of `which` (best | latest | a step). A step whose
  files cannot be read is moved aside to `checkpoints_damaged/` and the choice is made again among
  the remaining steps, so one damaged checkpoint never blocks evaluation or prediction."""
  directory = os.path.join(workdir, "checkpoints")
  damaged = []
  while True:
    try:
      chosen, selection = select_step(workdir, which, select_metric)
    except FileNotFoundError:
      if damaged:
        raise ckpt_lib.NoIntactCheckpointError(
            f"No readable checkpoint is left in {directory}: steps {damaged} could not be read and "
            f"were moved to {ckpt_lib.DAMAGED_DIR}/ beside it. Retrain, or restore them from a "
            "backup.") from None
      raise
    try:
      restored = ocp.StandardCheckpointer().restore(os.path.join(directory, str(chosen), "state"))
    except Exception as e:  # noqa: BLE001 - any read failure of the raw state is damage
      ckpt_lib.quarantine(directory, chosen, e)
      damaged.append(chosen)
      if which not in ("best", "latest"):
        raise cli.UserError(f"--step={which} could not be read (moved to {ckpt_lib.DAMAGED_DIR}/); "
                            "use --step=best or --step=latest.") from None
      continue
    if damaged:
      selection += f" among readable steps (damaged: {', '.join(map(str, damaged))})"
    return chosen, selection, restored


def load_trained(workdir: str, step: str = "best", tta: bool = False, *,
                 flips: str | None = None, weights: str = "run") -> Trained:
  """Restores params and BatchNorm statistics of `step` and builds a jitted eval-mode predictor,
  flip-averaged as the run's `config.eval.tta` (how its tables were scored) or, for a run without,
  over the horizontal flip if `tta`. `flips` (none/hflip/flips) replaces the run's averaging and
  `weights` (run/raw/ema, `checkpoint.eval_variables`) picks the weights: settings other than the
  run's own, for screening them on validation after training."""
  workdir = os.path.abspath(workdir)
  config = load_config(workdir)
  chosen, selection, restored = restore_state(workdir, step, config.eval.select_metric)
  variables = ckpt_lib.eval_variables(restored, weights)
  model = models.build_model(config)
  variables = jax.tree.map(jnp.asarray, variables)
  mode = tta_lib.check_mode(config.eval.tta if flips is None else flips)
  if mode == "none" and tta and flips is None:
    mode = "hflip"

  apply = jax.jit(lambda v, inputs: tta_lib.flip_averaged(
      lambda x: model.apply(v, **x, train=False)[0], inputs, mode))

  @jax.jit
  def apply_with_maps(v, inputs):  # the maps come from the plain (unflipped) pass
    logits, aux = model.apply(v, **inputs, train=False)
    if mode != "none":
      logits = tta_lib.flip_averaged(lambda x: model.apply(v, **x, train=False)[0], inputs, mode)
    return logits, {k: aux[k] for k in ATTENTION_MAPS if k in aux}

  return Trained(config=config, step=chosen, selection=selection, variables=variables, tta=mode,
                 predict=lambda inputs: np.asarray(apply(variables, inputs)),
                 predict_with_maps=lambda inputs: jax.device_get(apply_with_maps(variables, inputs)))
