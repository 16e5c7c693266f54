"""Flip test-time augmentation: the model's logits averaged over flipped copies of its inputs.

Used by the trainer's evaluation (`config.eval.tta`) and by every tool that predicts from a workdir,
so validation, test tables and `predict` score the same function. Logits (not probabilities) are
averaged, so the output stays a logit map of the usual shape and every consumer is unchanged.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

# mode -> the flips averaged besides the identity: (flip rows, flip columns) of (B, H, W, C).
MODES = {"none": (), "hflip": ((False, True),), "flips": ((False, True), (True, False), (True, True))}


def _flip(x: jax.Array, rows: bool, cols: bool) -> jax.Array:
  axes = (1,) * rows + (2,) * cols
  return jnp.flip(x, axes) if axes else x


def check_mode(mode: str) -> str:
  if mode not in MODES:
    raise ValueError(f"Unknown --config.eval.tta={mode!r}; choose from {', '.join(MODES)}.")
  return mode


def flip_averaged(apply: Callable[[dict], Any], inputs: dict, mode: str) -> Any:
  """Mean of `apply(inputs)` over the identity and the flips of `mode`, each output flipped back.

  `inputs` maps names to (B, H, W, C) images (every image input is flipped alike); `apply` returns
  a (B, H, W, C) array or a dict of them (e.g. {'logits', 'coarse'}).
  """
  out = apply(inputs)
  for rows, cols in MODES[check_mode(mode)]:
    flipped = apply({k: _flip(v, rows, cols) for k, v in inputs.items()})
    out = jax.tree.map(lambda acc, y, r=rows, c=cols: acc + _flip(y, r, c), out, flipped)
  return jax.tree.map(lambda acc: acc / (1 + len(MODES[mode])), out)
