"""DIN's loss: the multi-scale boundary term on hand-made masks, TransUNet's Dice, CE, one logit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bsa_jax import config_lib
from bsa_jax.train import losses
from bsa_jax.train import losses_binary
from bsa_jax.train import losses_multiclass as lm

SIZE = 64


def _labels(shift: int = 0, grow: int = 0) -> np.ndarray:
  """(1, 64, 64) int32: a 20×20 square of class 1 (moved down by `shift`, grown by `grow` pixels on
  every side) and a fixed 12×18 rectangle of class 2."""
  labels = np.zeros((1, SIZE, SIZE), np.int32)
  labels[0, 20 - grow + shift:40 + grow + shift, 16 - grow:36 + grow] = 1
  labels[0, 44:56, 40:58] = 2
  return labels


def _one_hot(labels):
  return jax.nn.one_hot(labels, 3, dtype=jnp.float32)


def _train_config(**overrides):
  c = config_lib.base_config().train
  c.loss = "din"
  c.update(overrides)
  return c


@pytest.mark.parametrize("operator", lm.OPERATORS)
def test_boundary_loss_is_zero_when_prediction_equals_label(operator):
  target = _one_hot(_labels())
  assert float(lm.boundary_loss(target, target, (1, 2, 4), operator)) == 0.0


@pytest.mark.parametrize("operator", ["sobel", "sobel_l1"])
def test_boundary_loss_grows_with_edge_displacement(operator):
  target = _one_hot(_labels())
  moved = [float(lm.boundary_loss(_one_hot(_labels(shift=d)), target, (1, 2, 4), operator))
           for d in range(9)]
  assert moved[0] == 0.0 and all(b > a for a, b in zip(moved, moved[1:])), moved
  grown = [float(lm.boundary_loss(_one_hot(_labels(grow=g)), target, (1, 2, 4), operator))
           for g in range(6)]
  assert grown[0] == 0.0 and all(b > a for a, b in zip(grown, grown[1:])), grown
  # The coarse scales keep growing after the stride-1 edges stop overlapping (shift >= 3).
  fine = [float(lm.boundary_loss(_one_hot(_labels(shift=d)), target, (1,), operator))
          for d in (3, 8)]
  coarse = [float(lm.boundary_loss(_one_hot(_labels(shift=d)), target, (4,), operator))
            for d in (3, 8)]
  assert coarse[1] - coarse[0] > 3 * (fine[1] - fine[0])


def test_boundary_loss_is_the_sum_over_scales_of_pooled_sobel_distances():
  rng = np.random.default_rng(0)
  probs = jax.nn.softmax(jnp.asarray(rng.normal(size=(2, 16, 16, 3)), jnp.float32))
  target = _one_hot(jnp.asarray(rng.integers(0, 3, (2, 16, 16))))
  per_scale = [float(lm.boundary_loss(probs, target, (s,))) for s in (1, 2, 4)]
  total = float(lm.boundary_loss(probs, target, (1, 2, 4)))
  assert total == pytest.approx(sum(per_scale), rel=1e-6)
  # Scale 2 by hand: 2×2 means, then Sobel with edge padding, then the mean absolute difference.
  def sobel_magnitude(x):
    p = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64)
    gx = sum(kx[i, j] * p[:, i:i + 8, j:j + 8] for i in range(3) for j in range(3))
    gy = sum(kx.T[i, j] * p[:, i:i + 8, j:j + 8] for i in range(3) for j in range(3))
    return np.sqrt(gx ** 2 + gy ** 2 + 1e-12)
  pool = lambda x: np.asarray(x, np.float64).reshape(2, 8, 2, 8, 2, 3).mean(axis=(2, 4))
  expected = np.abs(sobel_magnitude(pool(probs)) - sobel_magnitude(pool(target))).mean()
  assert per_scale[1] == pytest.approx(expected, rel=1e-5)


def test_dice_loss_matches_transunet_formula():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(3, 8, 8, 4)).astype(np.float32)
  labels = rng.integers(0, 4, (3, 8, 8))
  labels[..., 3] = np.where(labels[..., 3] == 3, 0, labels[..., 3])
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  one_hot = np.eye(4)[labels]
  expected = np.mean([1 - (2 * (probs[..., c] * one_hot[..., c]).sum() + 1e-5)
                      / ((probs[..., c] ** 2).sum() + (one_hot[..., c] ** 2).sum() + 1e-5)
                      for c in range(4)])
  got = lm.dice_loss(jnp.asarray(probs), jnp.asarray(one_hot, jnp.float32))
  assert float(got) == pytest.approx(expected, rel=1e-5)
  assert float(lm.dice_loss(jnp.asarray(one_hot, jnp.float32),
                            jnp.asarray(one_hot, jnp.float32))) == pytest.approx(0.0, abs=1e-6)


def test_din_loss_weights_parts_and_deep_supervision():
  rng = np.random.default_rng(2)
  logits = jnp.asarray(rng.normal(size=(2, 32, 32, 4)), jnp.float32)
  side = (jnp.asarray(rng.normal(size=(2, 8, 8, 4)), jnp.float32),)
  mask = jnp.asarray(rng.integers(0, 4, (2, 32, 32)), jnp.int32)
  config = _train_config(deep_supervision_weight=0.5)
  loss_fn = jax.jit(lambda x, s, m: losses.segmentation_loss(x, {"side_outputs": s}, m, config))
  total, parts = loss_fn(logits, side, mask)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, mask).mean()
  assert float(parts["loss_ce"]) == pytest.approx(float(ce), rel=1e-6)
  main = 0.3 * parts["loss_ce"] + 0.7 * parts["loss_dice"] + parts["loss_boundary"]
  assert float(parts["loss_main"]) == pytest.approx(float(main), rel=1e-6)
  side_terms = lm.din_terms(losses_binary.resize_logits(side[0], 32, 32), mask, config)["total"]
  assert float(parts["loss_side"]) == pytest.approx(float(side_terms), rel=1e-6)
  assert float(total) == pytest.approx(float(main + 0.5 * side_terms), rel=1e-6)
  no_boundary, parts0 = lm.din_loss(logits, {}, mask, _train_config(boundary_weight=0.0))
  assert float(no_boundary) == pytest.approx(float(0.3 * ce + 0.7 * parts0["loss_dice"]), rel=1e-6)


def test_single_logit_is_two_class_softmax_and_bce():
  rng = np.random.default_rng(3)
  logit = jnp.asarray(rng.normal(size=(2, 16, 16, 1)), jnp.float32)
  mask = jnp.asarray(rng.random((2, 16, 16, 1)) > 0.6, jnp.float32)
  config = _train_config()
  loss_fn = jax.jit(lambda x, m: lm.din_loss(x, {}, m, config))
  binary, parts = loss_fn(logit, mask)
  two_class, _ = loss_fn(jnp.concatenate([jnp.zeros_like(logit), logit], -1),
                         mask[..., 0].astype(jnp.int32))
  assert float(binary) == pytest.approx(float(two_class), rel=1e-6)
  bce = optax.sigmoid_binary_cross_entropy(logit, mask).mean()
  assert float(parts["loss_ce"]) == pytest.approx(float(bce), rel=1e-5)


def test_gradients_are_finite_at_a_perfect_prediction():
  labels = jnp.asarray(_labels())
  logits = 30.0 * _one_hot(labels)  # softmax == one-hot up to rounding: Sobel differences are 0
  config = _train_config()
  grads = jax.jit(jax.grad(lambda x: lm.din_loss(x, {}, labels, config)[0]))(logits)
  assert bool(jnp.all(jnp.isfinite(grads)))


def test_unknown_operator_is_rejected():
  x = jnp.zeros((1, 8, 8, 2))
  with pytest.raises(ValueError, match="boundary_operator"):
    lm.boundary_loss(x, x, (1,), "canny")
