"""Scalars to `metrics.jsonl` (one JSON object per logged step) and TensorBoard, from process 0."""

import json
import math
import os
import re

import jax


class MetricWriter:
  """Appends `{"step": s, name: value, ...}` lines and TensorBoard scalars; no-op on other processes."""

  def __init__(self, workdir: str):
    self.active = jax.process_index() == 0
    self._tb = None
    if not self.active:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    try:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    except ImportError:  # TensorBoard is optional; the JSONL file is the record.
      self._tb = None

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.active:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    line = {"step": int(step), **{k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()}}
    self._jsonl.write(json.dumps(line) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in clean.items():
        self._tb.add_scalar(tensorboard_name(k), v, int(step))

  def close(self) -> None:
    if self.active:
      self._jsonl.close()
      if self._tb is not None:
        self._tb.close()


def tensorboard_name(name: str) -> str:
  """'test/kvasir_seg:pranet_test/Dice@0.5' → 'test/kvasir_seg/pranet_test/Dice_at_0.5'."""
  return re.sub(r"[^A-Za-z0-9_./-]", "_", name.replace(":", "/").replace("@", "_at_"))


def read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
