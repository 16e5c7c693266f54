"""Training sizes other than the network's: PraNet-style multi-scale steps and resolution schedules.

`train.size_schedule` is a tuple of stages `(start_fraction, (size, ...))`: from that fraction of the
run on, each step trains at one of the stage's sizes, picked from (seed, step) alone so a resumed run
repeats it. The pipeline still decodes at `data.image_size` (where validation and tests run); the
batch is resized on the device inside the jitted step, one compilation per size. Examples:
`((0.0, (96, 112, 128)),)` is multi-scale training, `((0.0, (112,)), (0.8, (168,)))` with
`data.image_size=168` trains small and finishes at the evaluation size.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def check_schedule(schedule: Sequence) -> tuple[tuple[float, tuple[int, ...]], ...]:
  """The schedule as ((fraction, sizes), ...); refuses one that does not start at 0 or is unordered."""
  stages = tuple((float(start), tuple(int(s) for s in sizes)) for start, sizes in schedule)
  starts = [start for start, _ in stages]
  if stages and (starts[0] != 0.0 or starts != sorted(starts) or max(starts) >= 1.0
                 or any(not sizes or min(sizes) <= 0 for _, sizes in stages)):
    raise ValueError(
        f"--config.train.size_schedule={schedule!r}: give stages (start_fraction, (size, ...)) "
        "with fractions rising from 0.0 and below 1.0 and positive sizes, e.g. "
        "'((0.0, (96, 112, 128)),)'.")
  return stages


def training_size(schedule: Sequence, step: int, total_steps: int, seed: int) -> int | None:
  """The size step `step` (0-based) trains at, or None to keep the pipeline's."""
  stages = check_schedule(schedule)
  if not stages:
    return None
  sizes = [sizes for start, sizes in stages if step >= start * total_steps][-1]
  if len(sizes) == 1:
    return sizes[0]
  return sizes[int(np.random.default_rng([seed, step, 7]).integers(len(sizes)))]


def resize_batch(batch: dict, size: int) -> dict:
  """Images (B, S, S, C) resized (bilinear, antialiased) to (B, size, size, C); float masks alike
  (soft edges, as PraNet's upsampled masks); integer label masks by nearest neighbour."""
  def resize(x):
    b, _, _, *rest = x.shape
    method = "nearest" if jnp.issubdtype(x.dtype, jnp.integer) else "linear"
    return jax.image.resize(x, (b, size, size, *rest), method).astype(x.dtype)
  return {k: resize(v) if (k.startswith("image") or k == "mask") else v for k, v in batch.items()}
