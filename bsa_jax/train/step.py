"""The train step: one pure, jitted optimizer step on a global batch, and the eval-mode forward pass.

`train_step` is what `trainer.main` jits over the device mesh (state replicated, batch sharded on the
`data` axis, state buffers donated); the benchmarks and tests jit the very same function.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from bsa_jax.models import tta as tta_lib
from bsa_jax.train import losses
from bsa_jax.train import sizes as sizes_lib
from bsa_jax.workdir import checkpoint as ckpt_lib


def init_state(model, tx, rng: jax.Array, image_size: int, ema: bool = False) -> dict[str, Any]:
  """Creates params, BatchNorm statistics and optimizer state (traced under jit with shardings);
  with `ema`, also their exponential moving average (`state['ema']`, starting at the init)."""
  dummy = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  params_rng, dropout_rng, points_rng = jax.random.split(rng, 3)
  variables = model.init({"params": params_rng, "dropout": dropout_rng, "points": points_rng},
                         dummy, train=False)
  params = variables["params"]
  state = {
      "step": jnp.zeros((), jnp.int32),
      "params": params,
      "batch_stats": variables.get("batch_stats", {}),
      "opt_state": tx.init(params),
  }
  if ema:
    state["ema"] = {"params": params, "batch_stats": state["batch_stats"]}
  return state


def ema_decay(decay: float, step: jax.Array) -> jax.Array:
  """The decay at `step`, warmed up as TF's ExponentialMovingAverage does, min(decay, (1+t)/(10+t)),
  so the average forgets the random init quickly in a short run."""
  t = step.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def model_inputs(batch: dict) -> dict:
  """The batch entries a model takes: `image`, plus extra image inputs (e.g. DIN's `image_enhanced`)."""
  return {k: v for k, v in batch.items() if k.startswith("image")}


def train_step(state, batch, base_rng, *, model, tx, schedule, train_config, size=None):
  """One optimizer step on the global batch. Pure: (state, batch) → (new state, metrics).
  `size`: train on the batch resized to size×size (`train.size_schedule`), else as it comes."""
  step_rng = jax.random.fold_in(base_rng, state["step"])
  dropout_rng, points_rng = jax.random.split(step_rng)
  if size is not None and size != batch["image"].shape[1]:
    batch = sizes_lib.resize_batch(batch, size)

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
  if "ema" in state:
    d = ema_decay(train_config.ema_decay, state["step"])
    new_state["ema"] = jax.tree.map(lambda avg, x: d * avg + (1.0 - d) * x, state["ema"],
                                    {"params": params, "batch_stats": batch_stats})
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


def predict_step(state, inputs, *, model, with_coarse: bool = False, tta: str = "none"):
  """Eval-mode logits (B, S, S, num_classes) at the network resolution, from the evaluation weights
  averaged over the flips of `tta` (`models.tta`); the weights are `checkpoint.eval_variables`.

  With `with_coarse` and a model whose aux holds 'coarse_logits' (BSA-Net's decoder output before
  the Attention Rendering Module, at stride 4), returns {'logits': ..., 'coarse': ...}: the coarse
  logits upsampled bilinearly to S×S, exactly as `arm='none'` would output them, so the evaluator
  can score what the ARM adds.
  """
  variables = ckpt_lib.eval_variables(state)

  def apply(inputs):
    logits, aux = model.apply(variables, **inputs, train=False)
    if not with_coarse or "coarse_logits" not in aux:
      return logits
    coarse = aux["coarse_logits"]
    b, h, w, _ = logits.shape
    coarse = jax.image.resize(coarse, (b, h, w, coarse.shape[-1]), "bilinear").astype(jnp.float32)
    return {"logits": logits, "coarse": coarse}

  return tta_lib.flip_averaged(apply, inputs, tta)
