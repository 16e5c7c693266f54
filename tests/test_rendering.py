"""Attention Rendering Module: point sampling, uncertainty, subdivision and the two ARM modules."""

import jax
import jax.numpy as jnp
import numpy as np

from bsa_jax.models import rendering
from tests.test_attention import fast_jit
from tests.test_attention import numpy_init


def _random(shape, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), shape)


def _init(arm, coarse, fine, out_hw):
  """`arm`'s variables, filled from numpy (compiling the initialisers is slow on CPU)."""
  return numpy_init(arm, coarse, fine, out_hw)


def _apply(arm, variables, coarse, fine, out_hw):
  """Jitted inference-mode `arm.apply`."""
  return fast_jit(lambda v, c, f: arm.apply(v, c, f, out_hw))(variables, coarse, fine)


def test_point_sample_at_pixel_centres_equals_bilinear_resize():
  features = _random((2, 5, 7, 3))

  @fast_jit
  def sample_and_resize(features):
    out = []
    for height, width in [(10, 14), (13, 9), (5, 7)]:
      index = jnp.broadcast_to(jnp.arange(height * width), (2, height * width))
      sampled = rendering.point_sample(features, rendering.flat_index_to_coords(index, height, width))
      out.append((sampled.reshape(2, height, width, 3),
                  jax.image.resize(features, (2, height, width, 3), "bilinear")))
    return out

  for sampled, resized in sample_and_resize(features):
    np.testing.assert_allclose(sampled, resized, atol=1e-5)


def test_point_sample_interpolates_between_centres_and_clamps_outside():
  features = jnp.arange(4.0).reshape(1, 1, 4, 1)  # one row: 0 1 2 3 at x centres 1/8, 3/8, 5/8, 7/8
  coords = jnp.array([[[0.5, 0.25], [0.5, 0.0], [0.5, 1.0], [0.5, 0.5]]])
  sampled = fast_jit(rendering.point_sample)(features, coords)
  np.testing.assert_allclose(sampled[0, :, 0], [0.5, 0.0, 3.0, 1.5])


def test_uncertainty_binary_and_multiclass():
  np.testing.assert_allclose(rendering.uncertainty(jnp.array([[3.0], [-0.5]])), [-3.0, -0.5])
  np.testing.assert_allclose(rendering.uncertainty(jnp.array([[1.0, 4.0, 2.0]])), [-2.0])


def test_edge_weight_is_one_at_even_odds_and_agrees_between_binary_and_two_class():
  logits = jnp.array([-8.0, -1.0, 0.0, 0.5, 8.0]).reshape(1, 1, 5, 1)
  binary, two_class = fast_jit(lambda l: (
      rendering.edge_weight(l),
      rendering.edge_weight(jnp.concatenate([jnp.zeros_like(l), l], axis=-1))))(logits)
  np.testing.assert_allclose(binary, two_class, atol=1e-6)
  assert binary[0, 0, 2, 0] == 1.0 and binary[0, 0, 0, 0] < 1e-3 and binary[0, 0, 4, 0] < 1e-3


def test_training_points_prefer_the_uncertain_band():
  # Confident logits (|L| = 10) except a band over the left half of the image, where L = 0.
  coarse = jnp.where(jnp.arange(16)[None, None, :, None] < 8, 0.0, 10.0) * jnp.ones((3, 16, 16, 1))
  num_points, importance = 64, 0.75
  coords = fast_jit(lambda c: rendering.sample_training_points(
      jax.random.PRNGKey(0), c, (64, 64), num_points, oversample=3, importance=importance))(coarse)
  assert coords.shape == (3, num_points, 2)
  # Every point is the centre of an output pixel.
  pixel = coords * 64 - 0.5
  np.testing.assert_allclose(pixel, jnp.round(pixel), atol=1e-4)
  num_uncertain = int(importance * num_points)
  assert bool(jnp.all(coords[:, :num_uncertain, 1] < 0.5)), "uncertain points must come from the band"
  # The uniform remainder is not restricted to the band.
  assert bool(jnp.any(coords[:, num_uncertain:, 1] > 0.5))


def test_subdivision_step_recomputes_exactly_the_n_most_uncertain_pixels():
  logits = 3.0 * _random((2, 8, 8, 1))
  num_points = 20
  calls = []

  def predict(coords):
    calls.append(coords.shape)
    return jnp.full(coords.shape[:2] + (1,), 123.0)

  refined, index, bilinear = fast_jit(lambda l: (
      *rendering.subdivision_step(l, (16, 16), num_points, predict),
      jax.image.resize(l, (2, 16, 16, 1), "bilinear")))(logits)
  changed = np.asarray(refined != bilinear)[..., 0].reshape(2, -1)
  assert calls == [(2, num_points, 2)]
  assert changed.sum(axis=1).tolist() == [num_points, num_points]
  # Confident pixels keep exactly their bilinear value; the recomputed ones are the most uncertain.
  unc = np.asarray(rendering.uncertainty(bilinear)).reshape(2, -1)
  for b in range(2):
    assert set(np.flatnonzero(changed[b])) == set(np.asarray(index[b]).tolist())
    assert unc[b, changed[b]].min() >= unc[b, ~changed[b]].max()


def test_subdivision_clips_n_to_the_grid():
  refined, index = fast_jit(lambda l: rendering.subdivision_step(
      l, (4, 4), 100, lambda c: jnp.zeros(c.shape[:2] + (1,))))(_random((1, 2, 2, 1)))
  assert index.shape == (1, 16) and bool(jnp.all(refined == 0.0))


def _arm_inputs(batch=2):
  coarse = _random((batch, 8, 8, 1), seed=1)
  fine = (_random((batch, 16, 16, 4), seed=2), _random((batch, 8, 8, 6), seed=3))
  return coarse, fine


def test_pointrend_arm_shapes_and_single_trace_under_jit():
  arm = rendering.PointRendARM(num_classes=1, train_points=48, subdivision_points=40,
                               subdivision_steps=2, fc_dim=16)
  coarse, fine = _arm_inputs()
  variables = _init(arm, coarse, fine, (32, 32))
  traces = []

  @fast_jit
  def train_fn(variables, coarse, fine, rng):
    traces.append("train")
    return arm.apply(variables, coarse, fine, (32, 32), train=True, rngs={"points": rng})

  @fast_jit
  def eval_fn(variables, coarse, fine):
    traces.append("eval")
    return arm.apply(variables, coarse, fine, (32, 32))

  for seed in range(2):
    logits, points = train_fn(variables, coarse + seed, fine, jax.random.PRNGKey(seed))
    assert logits.shape == (2, 32, 32, 1) and logits.dtype == jnp.float32
    assert points["coords"].shape == (2, 48, 2) and points["logits"].shape == (2, 48, 1)
    assert bool(jnp.all((points["coords"] > 0) & (points["coords"] < 1)))
    logits, extra = eval_fn(variables, coarse * (seed + 1), fine)
    assert logits.shape == (2, 32, 32, 1) and extra == {}
  assert traces == ["train", "eval"]


def test_pointrend_arm_one_step_changes_only_n_pixels_of_the_bilinear_map():
  arm = rendering.PointRendARM(num_classes=1, subdivision_points=30, subdivision_steps=1, fc_dim=16)
  coarse, fine = _arm_inputs()
  variables = _init(arm, coarse, fine, (16, 16))
  logits, _ = _apply(arm, variables, coarse, fine, (16, 16))
  bilinear = jax.image.resize(coarse, (2, 16, 16, 1), "bilinear")
  changed = np.asarray(logits != bilinear).reshape(2, -1).sum(axis=1)
  assert changed.tolist() == [30, 30]


def test_pointrend_arm_reaches_a_non_square_output_size():
  arm = rendering.PointRendARM(num_classes=3, subdivision_points=16, subdivision_steps=2, fc_dim=8)
  coarse = _random((1, 11, 9, 3))
  fine = (_random((1, 22, 18, 2)),)
  variables = _init(arm, coarse, fine, (44, 36))
  logits, _ = _apply(arm, variables, coarse, fine, (44, 36))
  assert logits.shape == (1, 44, 36, 3)


def test_point_head_reconcatenates_the_coarse_logit_at_every_layer():
  head = rendering.PointHead(num_classes=2, fc_dim=8, num_fc=3)
  params = jax.eval_shape(head.init, jax.random.PRNGKey(0), jnp.zeros((1, 5, 4)),
                          jnp.zeros((1, 5, 2)))["params"]
  assert params["fc1"]["kernel"].shape == (4 + 2, 8)
  assert params["fc2"]["kernel"].shape == (8 + 2, 8)
  assert params["fc3"]["kernel"].shape == (8 + 2, 8)
  assert params["predictor"]["kernel"].shape == (8 + 2, 2)


def test_dense_arm_is_the_upsampled_coarse_logit_when_the_conv_is_zero():
  arm = rendering.DenseEdgeARM(num_classes=1)
  coarse, fine = _arm_inputs()
  variables = _init(arm, coarse, fine, (32, 32))
  logits, _ = _apply(arm, variables, coarse, fine, (32, 32))
  bilinear = jax.image.resize(coarse, (2, 32, 32, 1), "bilinear")
  assert logits.shape == (2, 32, 32, 1)
  assert float(jnp.abs(logits - bilinear).max()) > 1e-3  # the refinement does something
  zero = jax.tree.map(jnp.zeros_like, variables)
  logits, _ = _apply(arm, zero, coarse, fine, (32, 32))
  # Resizing 8 -> 16 -> 32 equals resizing 8 -> 32 only approximately, so compare via the 16 grid.
  expected = jax.image.resize(jax.image.resize(coarse, (2, 16, 16, 1), "bilinear"), (2, 32, 32, 1),
                              "bilinear")
  np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_dense_arm_leaves_confident_pixels_alone():
  arm = rendering.DenseEdgeARM(num_classes=1)
  coarse = jnp.where(jnp.arange(8)[None, :, None, None] < 4, 30.0, -30.0) * jnp.ones((1, 8, 8, 1))
  fine = (_random((1, 16, 16, 4)),)
  variables = _init(arm, coarse, fine, (16, 16))
  variables["params"]["refine"]["bias"] = jnp.zeros_like(variables["params"]["refine"]["bias"])
  logits, _ = _apply(arm, variables, coarse, fine, (16, 16))
  bilinear = jax.image.resize(coarse, (1, 16, 16, 1), "bilinear")
  # Far from the 30/-30 edge the weight is ~0, so the output is the coarse logit there.
  np.testing.assert_allclose(logits[:, :4], bilinear[:, :4], atol=1e-4)
  np.testing.assert_allclose(logits[:, -4:], bilinear[:, -4:], atol=1e-4)
