"""The jitted train step: data parallelism changes nothing, the loss is PraNet's, NaN never lands."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F

from bsa_jax import config_lib
from bsa_jax.train import losses
from bsa_jax.train import losses_binary
from bsa_jax.train import optim
from bsa_jax.train import sharding as sharding_lib
from bsa_jax import models
from bsa_jax import train


def _tiny_config():
  c = config_lib.base_config()
  c.model_name = "unet"
  c.model.variant = "tiny"
  c.model.widths = (8, 16, 32)  # three levels: the smallest U-Net that still has side outputs
  c.data.image_size = 32
  c.train.batch_size = 8
  return c


def _batches(num, batch_size=8, size=32, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(num):
    image = rng.normal(size=(batch_size, size, size, 3)).astype(np.float32)
    yy, xx = np.mgrid[:size, :size]
    centres = rng.uniform(8, size - 8, size=(batch_size, 2))
    mask = ((yy[None] - centres[:, :1, None]) ** 2 + (xx[None] - centres[:, 1:, None]) ** 2
            < 36).astype(np.float32)[..., None]
    out.append({"image": image + 2 * mask, "mask": mask})
  return out


@functools.lru_cache(maxsize=None)
def _compiled(num_devices: int, optimizer: str = "adam"):
  """(initial state, jitted step, rng) for the tiny U-Net on a mesh of `num_devices`, built once."""
  config = _tiny_config()
  config.train.optimizer = optimizer
  mesh = sharding_lib.auto_mesh((num_devices,), ("data",), devices=jax.devices()[:num_devices])
  model = models.build_model(config)
  tx, schedule = optim.make_optimizer(config.train, total_steps=100)
  repl = sharding_lib.replicated(mesh)
  init_fn = functools.partial(train.init_state, model, tx, image_size=config.data.image_size)
  rng = jax.device_put(jax.random.key(0), repl)
  shardings = jax.tree.map(lambda _: repl, jax.eval_shape(init_fn, rng))
  init = jax.jit(init_fn, out_shardings=shardings)
  step = jax.jit(functools.partial(train.train_step, model=model, tx=tx, schedule=schedule,
                                   train_config=config.train),
                 in_shardings=(shardings, sharding_lib.batch_sharding(mesh), repl),
                 out_shardings=(shardings, repl), donate_argnums=(0,))
  return mesh, init, step, rng


def _run_steps(num_devices, batches, optimizer="adam"):
  mesh, init, step, rng = _compiled(num_devices, optimizer)
  state = init(rng)
  losses_seen = []
  for batch in batches:
    state, metrics = step(state, sharding_lib.global_batch(batch, mesh), rng)
    losses_seen.append(float(metrics["loss"]))
  return losses_seen, jax.device_get(state)


def test_eight_devices_match_one_device():
  assert jax.device_count() == 8, "tests/conftest.py sets 8 simulated CPU devices"
  assert sharding_lib.make_mesh(_tiny_config().mesh).shape["data"] == 8
  batches = _batches(3)
  # SGD, not Adam: Adam's update lr * g / (|g| + eps) turns float32 noise in a gradient that is 0 in
  # exact arithmetic (a conv bias before BatchNorm) into a step of up to lr, and 1 device and 8 run
  # differently blocked kernels (on an AVX2 CPU: 8-device weights 2.9e-3 apart after 3 Adam steps,
  # losses 3.6e-5). With SGD a weight differs by lr x its gradient's difference, so what is
  # compared is the gradient over the global batch.
  losses_1, state_1 = _run_steps(1, batches, "sgd")
  losses_8, state_8 = _run_steps(8, batches, "sgd")
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5)
  assert losses_1[-1] < losses_1[0]
  for a, b in zip(jax.tree.leaves(state_1["params"]), jax.tree.leaves(state_8["params"])):
    np.testing.assert_allclose(a, b, atol=1e-5)  # 3.8e-6 seen on AVX2
  # BatchNorm statistics are computed over the global batch, not per device.
  for a, b in zip(jax.tree.leaves(state_1["batch_stats"]), jax.tree.leaves(state_8["batch_stats"])):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_non_finite_step_keeps_the_previous_state():
  good = _batches(1)
  bad = [{"image": np.full_like(good[0]["image"], np.nan), "mask": good[0]["mask"]}]
  _, before = _run_steps(1, good)
  losses_seen, after = _run_steps(1, good + bad)
  assert np.isnan(losses_seen[-1])
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
    np.testing.assert_array_equal(a, b)


def _torch_structure_loss(pred, mask):
  """PraNet's structure loss, written from its published formula (docs/DECISIONS.md#d6) in torch."""
  weit = 1 + 5 * torch.abs(F.avg_pool2d(mask, kernel_size=31, stride=1, padding=15) - mask)
  wbce = F.binary_cross_entropy_with_logits(pred, mask, reduction="none")
  wbce = (weit * wbce).sum(dim=(2, 3)) / weit.sum(dim=(2, 3))
  pred = torch.sigmoid(pred)
  inter = ((pred * mask) * weit).sum(dim=(2, 3))
  union = ((pred + mask) * weit).sum(dim=(2, 3))
  wiou = 1 - (inter + 1) / (union - inter + 1)
  return (wbce + wiou).mean()


def test_structure_loss_matches_torch_reference():
  rng = np.random.default_rng(1)
  logits = rng.normal(scale=3, size=(3, 48, 40, 1)).astype(np.float32)
  mask = (rng.uniform(size=(3, 48, 40, 1)) > 0.7).astype(np.float32)
  ours = float(losses_binary.structure_loss(jnp.asarray(logits), jnp.asarray(mask)))
  ref = float(_torch_structure_loss(torch.from_numpy(logits.transpose(0, 3, 1, 2)),
                                    torch.from_numpy(mask.transpose(0, 3, 1, 2))))
  assert ours == pytest.approx(ref, rel=1e-5)


def test_edge_weight_equals_torch_avg_pool_and_the_square_window_exactly():
  """The separable box sum (a speed-up, bench/NOTES.md) gives the k×k average of a 0/1 mask bit for bit."""
  rng = np.random.default_rng(2)
  mask = (rng.uniform(size=(2, 70, 45, 1)) > 0.6).astype(np.float32)
  ours = np.asarray(jax.jit(losses_binary.edge_weight)(jnp.asarray(mask)))

  @jax.jit
  def square_window(m):  # the k×k form it replaced
    sums = jax.lax.reduce_window(m, 0.0, jax.lax.add, (1, 31, 31, 1), (1, 1, 1, 1),
                                 ((0, 0), (15, 15), (15, 15), (0, 0)))
    return 1.0 + 5.0 * jnp.abs(sums / 961 - m)

  np.testing.assert_array_equal(ours, np.asarray(square_window(jnp.asarray(mask))))
  t = torch.from_numpy(mask.transpose(0, 3, 1, 2))
  want = (1 + 5 * torch.abs(F.avg_pool2d(t, kernel_size=31, stride=1, padding=15) - t)).numpy()
  np.testing.assert_allclose(ours, want.transpose(0, 2, 3, 1), rtol=0, atol=1e-6)


def test_point_loss_uses_the_mask_at_the_sampled_points():
  mask = np.zeros((1, 8, 8, 1), np.float32)
  mask[0, 2, 5] = 1.0
  coords = jnp.array([[[2.5 / 8, 5.5 / 8], [0.5 / 8, 0.5 / 8]]])  # (y, x) pixel centres
  np.testing.assert_array_equal(losses_binary.sample_nearest(jnp.asarray(mask), coords)[0, :, 0], [1, 0])
  config = _tiny_config()
  aux = {"arm": {"coords": coords, "logits": jnp.array([[[4.0], [-4.0]]])}}
  logits = jnp.where(jnp.asarray(mask) > 0, 10.0, -10.0)
  _, parts = losses.segmentation_loss(logits, aux, jnp.asarray(mask), config.train)
  assert float(parts["loss_points"]) == pytest.approx(float(optax.sigmoid_binary_cross_entropy(
      jnp.array(4.0), jnp.array(1.0))), rel=1e-6)


def test_optimizer_from_config_equals_hand_built_chain():
  c = _tiny_config().train
  c.grad_clip_norm, c.schedule, c.warmup_steps = 0.5, "cosine", 3
  tx, schedule = optim.make_optimizer(c, total_steps=10)
  ref_schedule = optax.join_schedules(
      [optax.linear_schedule(0.0, c.lr, 3), optax.cosine_decay_schedule(c.lr, 7)], [3])
  ref = optax.chain(optax.clip_by_global_norm(0.5), optax.adam(ref_schedule))
  params = {"w": jnp.arange(4.0)}
  grads = {"w": jnp.array([3.0, -1.0, 0.5, 2.0])}
  s1, s2 = tx.init(params), ref.init(params)
  for _ in range(5):
    u1, s1 = tx.update(grads, s1, params)
    u2, s2 = ref.update(grads, s2, params)
    np.testing.assert_allclose(u1["w"], u2["w"], rtol=1e-6)
  assert float(schedule(5)) == pytest.approx(float(ref_schedule(5)))


@pytest.mark.slow  # a second full compile of the train step (~20 s)
def test_bfloat16_compute_keeps_float32_params_and_learns():
  config = _tiny_config()
  config.train.compute_dtype = "bfloat16"
  model = models.build_model(config)
  assert model.dtype == jnp.bfloat16
  tx, schedule = optim.make_optimizer(config.train, total_steps=100)
  state = train.init_state(model, tx, jax.random.key(0), image_size=32)
  step = jax.jit(functools.partial(train.train_step, model=model, tx=tx, schedule=schedule,
                                   train_config=config.train))
  batch = jax.tree.map(jnp.asarray, _batches(1)[0])
  seen = []
  for _ in range(3):
    state, metrics = step(state, batch, jax.random.key(1))
    seen.append(float(metrics["loss"]))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state["params"]))
  assert np.isfinite(seen).all() and seen[-1] < seen[0]
