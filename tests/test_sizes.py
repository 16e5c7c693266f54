"""Training sizes (`train.size_schedule`): which size each step takes, and that the step trains on the
batch resized to it (images and masks alike)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bsa_jax import models
from bsa_jax import train
from bsa_jax.train import optim
from bsa_jax.train import sizes
from tests.test_ema_tta import _batch
from tests.test_ema_tta import _config
from tests.test_attention import fast_jit


def test_each_step_takes_a_size_of_its_stage_from_seed_and_step_alone():
  multi = ((0.0, (96, 112, 128)),)
  picked = [sizes.training_size(multi, step, 100, seed=0) for step in range(100)]
  assert set(picked) == {96, 112, 128}
  assert picked == [sizes.training_size(multi, step, 100, seed=0) for step in range(100)]  # resume
  assert picked != [sizes.training_size(multi, step, 100, seed=1) for step in range(100)]
  staged = ((0.0, (112,)), (0.8, (168,)))
  assert [sizes.training_size(staged, s, 100, 0) for s in (0, 79, 80, 99)] == [112, 112, 168, 168]
  assert sizes.training_size((), 5, 100, 0) is None


@pytest.mark.parametrize("schedule", [((0.5, (112,)),), ((0.0, (112,)), (0.0 - 1, (96,))),
                                      ((0.0, ()),), ((0.0, (112,)), (1.0, (96,)))])
def test_a_malformed_schedule_is_refused_naming_the_key(schedule):
  with pytest.raises(ValueError, match="train.size_schedule"):
    sizes.check_schedule(schedule)


def test_masks_keep_their_meaning_when_resized():
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.random((2, 32, 32, 3), np.float32)),
           "mask": jnp.asarray((rng.random((2, 32, 32, 1)) > 0.5).astype(np.float32)),
           "labels": jnp.asarray(rng.integers(0, 4, (2, 32, 32)))}
  out = sizes.resize_batch(dict(batch, mask_int=batch["labels"]), 16)
  assert out["image"].shape == (2, 16, 16, 3) and out["mask"].shape == (2, 16, 16, 1)
  assert 0 <= float(out["mask"].min()) and float(out["mask"].max()) <= 1  # soft edges, as PraNet
  assert out["labels"].shape == (2, 32, 32)  # not an image or the mask: untouched
  labels = sizes.resize_batch({"mask": batch["labels"]}, 16)["mask"]
  assert labels.dtype == batch["labels"].dtype and set(np.unique(labels)) <= {0, 1, 2, 3}


def test_the_step_trains_on_the_batch_resized_to_its_size():
  config = _config(0.0)
  model = models.build_model(config)
  tx, schedule = optim.make_optimizer(config.train, total_steps=10)
  state = train.init_state(model, tx, jax.random.key(0), image_size=32)
  step = functools.partial(train.train_step, model=model, tx=tx, schedule=schedule,
                           train_config=config.train)
  batch = _batch(0)
  at_16 = fast_jit(functools.partial(step, size=16))(state, batch, jax.random.key(1))[1]["loss"]
  small = sizes.resize_batch(batch, 16)
  want = fast_jit(step)(state, small, jax.random.key(1))[1]["loss"]
  full = fast_jit(step)(state, batch, jax.random.key(1))[1]["loss"]
  np.testing.assert_allclose(at_16, want, rtol=1e-6)
  assert abs(float(at_16) - float(full)) > 1e-4
