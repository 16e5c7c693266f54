"""The trainer's progress bar and per-epoch log line (process 0 only)."""

import jax
from absl import logging


class Progress:
  """A tqdm bar with ETA on process 0, and log lines that do not break it."""

  def __init__(self, enabled: bool, total: int, initial: int):
    self.bar = None
    if enabled and jax.process_index() == 0:
      from tqdm import tqdm  # optional pretty output; imported only when the bar is on
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


# Validation metrics shown in the epoch line, when the evaluator reports them.
EPOCH_LINE_METRICS = ("mDSC", "mDSC_coarse", "mIoU", "MAE", "mHD95")


def epoch_line(*, epoch: int, num_epochs: int, step: int, total_steps: int, loss: float, lr: float,
               grad_norm: float, images_per_sec: float | None, val_metrics: dict | None) -> str:
  """`epoch 3/30  step 243/2430  loss 0.4123  lr 1.00e-03  grad_norm 0.812  15.2 img/s  val mDSC ...`"""
  msg = (f"epoch {epoch}/{num_epochs}  step {step}/{total_steps}  loss {loss:.4f}  lr {lr:.2e}  "
         f"grad_norm {grad_norm:.3f}")
  if images_per_sec is not None:
    msg += f"  {images_per_sec:.1f} img/s"
  if val_metrics is not None:
    msg += "  val " + "  ".join(f"{k} {val_metrics[k]:.4f}" for k in EPOCH_LINE_METRICS
                                if k in val_metrics)
  return msg
