"""Checkpoint selection: the best step is the one with the highest validation score, never the latest."""

import jax.numpy as jnp

from bsa_jax import checkpoint


def _save(ckpt, step, score):
  state = {"w": jnp.full((3,), float(step))}
  ckpt.save(step, state, None, {"best_step": step}, metrics=None if score is None else {"mDSC": score})
  ckpt.wait()


def test_best_step_is_the_highest_validation_score_not_the_latest(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), keep=2, select_metric="mDSC")
  assert ckpt.best_step() is None
  _save(ckpt, 10, None)  # a periodic save without a validation score
  assert ckpt.best_step() is None
  for step, score in ((20, 0.50), (30, 0.90), (40, 0.70), (50, 0.85), (60, 0.80)):
    _save(ckpt, step, score)
  assert ckpt.best_step() == 30  # not the latest (60)
  state, _ = ckpt.restore(30, {"w": jnp.zeros((3,))})
  assert float(state["w"][0]) == 30.0
  _save(ckpt, 70, 0.90)  # a tie with 30: the later step is kept and chosen (Orbax's best-1 policy)
  _save(ckpt, 80, 0.60)
  assert ckpt.best_step() == 70
  assert set(ckpt.manager.all_steps()) == {70, 80}  # the latest two, 70 also the best
  ckpt.close()
  reopened = checkpoint.Checkpointer(str(tmp_path / "ckpt"), keep=2, select_metric="mDSC")
  assert reopened.best_step() == 70  # read back from disk after a restart
  reopened.close()
