"""Checkpoint selection: the best step is the one with the highest validation score, never the latest."""

import os

import jax.numpy as jnp
import pytest

from bsa_jax.workdir import checkpoint


def _save(ckpt, step, score, recorded_best=None):
  state = {"w": jnp.full((3,), float(step))}
  ckpt.save(step, state, None, {"best_step": recorded_best},
            metrics=None if score is None else {"mDSC": score})
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


def test_runs_without_stored_scores_fall_back_to_the_trainers_record(tmp_path):
  """Checkpoints written before per-step scores were stored: the latest meta's best_step decides."""
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), keep=3, select_metric="mDSC")
  _save(ckpt, 10, None, recorded_best=None)
  assert ckpt.best_step() is None
  _save(ckpt, 20, None, recorded_best=10)
  _save(ckpt, 30, None, recorded_best=10)
  assert ckpt.best_step() == 10
  _save(ckpt, 40, None, recorded_best=10)  # step 10 is no longer kept: no valid choice
  assert ckpt.best_step() is None
  ckpt.close()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_state_holding_nan_or_inf_is_refused_and_the_last_good_checkpoint_kept(tmp_path, bad):
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), keep=3, select_metric="mDSC")
  _save(ckpt, 10, 0.5)
  state = {"w": jnp.array([11.0, bad, 11.0])}
  with pytest.raises(FloatingPointError, match="Refusing to save step 11: the train state holds NaN"):
    ckpt.save(11, state, None, {"best_step": 11}, metrics={"mDSC": 0.9})
  ckpt.wait()
  assert ckpt.manager.all_steps() == [10] and ckpt.best_step() == 10
  assert not os.path.exists(tmp_path / "ckpt" / "11")
  restored, meta = ckpt.restore(10, {"w": jnp.zeros((3,))})
  assert restored["w"].tolist() == [10.0, 10.0, 10.0] and meta == {"best_step": None}
  ckpt.close()
