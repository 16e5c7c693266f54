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
    path = os.path.join(workdir, "metrics.jsonl")
    torn = os.path.exists(path) and os.path.getsize(path) > 0 and _last_byte(path) != b"\n"
    self._jsonl = open(path, "a")
    if torn:  # a kill mid-write left half a line; the resumed run starts on a fresh one
      self._jsonl.write("\n")
    try:
      from tensorboardX import SummaryWriter  # TensorBoard writer: only on process 0 when enabled
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


def _last_byte(path: str) -> bytes:
  with open(path, "rb") as f:
    f.seek(-1, os.SEEK_END)
    return f.read(1)


def read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
