"""SANet: golden parameter counts (= the official network's), the model contract, the shallow attention
head and the loss against torch references, the probability correction against the official test's
formula, colour exchange against the official OpenCV recipe, and training on real Kvasir."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bsa_jax import config_lib
from bsa_jax.data import color
from bsa_jax.models import sanet
from bsa_jax.models.pranet import upsample_align_corners  # an independent implementation
from conftest import data_dir
from tests.helpers import count
from tests.helpers import golden_params
from tests.helpers import kvasir_batch
from tests.helpers import shapes
from tests.test_attention import fast_jit
from tests.test_attention import numpy_init

# Parameters for one class. 'paper' equals the official network (weijun88/SANet: Res2Net-50 v1b
# without a classifier + linear3/4/5 + predict) built in PyTorch from its code and counted with
# sum(p.numel()): 23,669,352 backbone + 230,145 head.
GOLDEN = {"paper": 23_899_497, "timm": 23_880_265, "tiny": 95_241}
PAPER_BACKBONE, PAPER_HEAD = 23_669_352, 230_145


def randomized(variables, seed=1):
  """`variables` with norm scales in [0.5, 1.5] and BN statistics random, so a swapped norm shows."""
  rng = np.random.default_rng(seed)
  ranges = {"scale": (0.5, 1.5), "mean": (-0.2, 0.2), "var": (0.5, 2.0)}

  def fill(path, leaf):
    low_high = ranges.get(path[-1].key)
    return leaf if low_high is None else jnp.asarray(rng.uniform(*low_high, leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, variables)


def train_steps(model, loss_fn, batch, num_steps=6, lr=1e-3):
  """Jitted Adam steps of `model` with `loss_fn` on one batch -> (losses, first step's grads)."""
  variables = numpy_init(model, jnp.zeros((1,) + batch["image"].shape[1:]), train=False)
  tx = optax.adam(lr)

  def step(params, batch_stats, opt_state):
    def objective(p):
      (logits, aux), new = model.apply({"params": p, "batch_stats": batch_stats}, batch["image"],
                                       train=True, mutable=["batch_stats"])
      total, _ = loss_fn(logits, aux, batch["mask"], None)
      return total, new["batch_stats"]

    (value, batch_stats), grads = jax.value_and_grad(objective, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, value, grads

  step = fast_jit(step)
  params, batch_stats = variables["params"], variables["batch_stats"]
  opt_state, losses, first_grads = tx.init(params), [], None
  for _ in range(num_steps):
    params, batch_stats, opt_state, value, grads = step(params, batch_stats, opt_state)
    losses.append(float(value))
    first_grads = grads if first_grads is None else first_grads
  return losses, jax.tree.map(np.asarray, first_grads)


def train_small_config(module) -> tuple[list[float], dict]:
  """`train_steps` of configs/kvasir_<name>.py:small's model with its own loss (`module.loss`) on one
  real Kvasir batch, `name` being the model module's; the config must name that model and loss."""
  name = module.__name__.rpartition(".")[2]
  config_name = f"kvasir_{name}.py"
  c = config_lib.load_config(os.path.join(config_lib.REPO_ROOT, f"configs/{config_name}:small"))
  assert c.model_name == name and c.model.variant == "tiny" and c.train.loss == name
  losses, grads = train_steps(module.Model(**c.model), module.loss, kvasir_batch(config_name))
  print(name, [round(v, 4) for v in losses])
  return losses, grads


def zero_gradient_leaves(grads) -> list[str]:
  """Paths of leaves whose gradient is identically 0 (asserting all are finite)."""
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  assert all(np.all(np.isfinite(g)) for _, g in flat)
  return [jax.tree_util.keystr(p) for p, g in flat if not np.any(g)]


# ---------------------------------------------------------------- parameters and the model contract

@pytest.mark.parametrize("variant", sorted(GOLDEN))
def test_golden_parameter_counts(variant):
  params = golden_params(sanet.Model(variant=variant), GOLDEN[variant], f"sanet/{variant}")
  if variant == "paper":
    assert count(params["backbone"]) == PAPER_BACKBONE and count(params["sam"]) == PAPER_HEAD


@pytest.mark.parametrize("size", [(352, 352), (224, 320)], ids=["352", "224x320"])
def test_outputs_at_input_size_without_side_outputs(size):
  h, w = size
  _, (logits, aux) = shapes(sanet.Model(variant="paper"), (2, h, w, 3))
  assert logits.shape == (2, h, w, 1) and logits.dtype == jnp.float32
  assert aux["side_outputs"] == ()
  assert aux["coarse"].shape == (2, h // 8, w // 8, 1) and aux["sam"].shape == (2, h // 8, w // 8, 192)


def test_sizes_the_stride_cannot_divide_are_refused():
  with pytest.raises(ValueError, match="divisible by 32"):
    shapes(sanet.Model(variant="tiny"), (1, 80, 80, 3))


# ---------------------------------------------------------------- modules against references

def _official_pcs(pred: np.ndarray) -> np.ndarray:
  """The official `test.py` on one (H, W) map, in place, as written there."""
  pred = pred.copy()
  pred[pred > 0] /= (pred > 0).mean()
  pred[pred < 0] /= (pred < 0).mean()
  return pred


def test_probability_correction_matches_the_official_test():
  rng = np.random.default_rng(0)
  logits = rng.normal(0.0, 3.0, size=(4, 12, 20, 1)).astype(np.float32)
  logits[0] -= 2.0  # mostly background, the case PCS is for
  logits[1] = np.abs(logits[1]) + 0.1  # no negative pixel
  logits[2] = -np.abs(logits[2]) - 0.1  # no positive pixel
  logits[3, :3] = 0.0  # exact zeros stay
  ours = np.asarray(sanet.probability_correction(jnp.asarray(logits)))
  with np.errstate(invalid="ignore", divide="ignore"):
    reference = np.stack([_official_pcs(x[..., 0]) for x in logits])[..., None]
  np.testing.assert_allclose(ours, reference, rtol=1e-6)
  assert np.array_equal(np.sign(ours), np.sign(logits))
  assert np.abs(ours[0][logits[0] > 0]).min() > np.abs(logits[0][logits[0] > 0]).min()


def test_eval_mode_applies_probability_correction_and_training_does_not():
  """On by default in eval; the option turns it off; train mode never applies it."""
  image = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 64, 3)), jnp.float32)
  on, off = sanet.Model(variant="tiny"), sanet.Model(variant="tiny", probability_correction=False)
  variables = randomized(numpy_init(on, image, train=False))

  def run(v, x):
    train_out, _ = on.apply(v, x, train=True, mutable=["batch_stats"])
    return on.apply(v, x, train=False), off.apply(v, x, train=False), train_out

  run = fast_jit(run)
  _, (_, aux_off), _ = run(variables, image)
  # Shift the predict bias so that about half the map is positive: PCS must have work to do.
  bias = variables["params"]["sam"]["predict"]["bias"]
  variables["params"]["sam"]["predict"]["bias"] = bias - np.median(aux_off["coarse"])
  (corrected, _), (plain, aux_off), (train_logits, train_aux) = run(variables, image)
  assert 0.2 < float((plain > 0).mean()) < 0.8
  tight = dict(rtol=1e-5, atol=1e-5)  # jitted vs eager upsampling: float32 rounding only
  np.testing.assert_allclose(plain, upsample_align_corners(aux_off["coarse"], 8), **tight)
  np.testing.assert_allclose(corrected, sanet.probability_correction(plain), rtol=1e-6)
  assert not np.allclose(corrected, plain)
  np.testing.assert_allclose(train_logits, upsample_align_corners(train_aux["coarse"], 8), **tight)


def test_shallow_attention_head_matches_a_torch_reference():
  """[f5, f4·f5, f3·f4·f5] of 1×1 conv-BN-ReLU reductions, align_corners upsampling, 1×1 predict."""
  torch = pytest.importorskip("torch")
  F = torch.nn.functional
  rng = np.random.default_rng(0)
  x3, x4, x5 = (rng.normal(size=(2, 8 // s, 12 // s, c)).astype(np.float32)
                for s, c in ((1, 12), (2, 20), (4, 24)))
  head = sanet.ShallowAttentionHead(channels=6)
  variables = randomized(numpy_init(head, x3, x4, x5, train=False))
  ours, fused = head.apply(variables, x3, x4, x5, train=False)
  p, s = variables["params"], variables["batch_stats"]

  def t(a):
    return torch.from_numpy(np.array(a))

  def reduce(x, name):  # NHWC numpy -> NCHW torch
    y = F.conv2d(t(x).permute(0, 3, 1, 2), t(p[name]["conv"]["kernel"]).permute(3, 2, 0, 1),
                 t(p[name]["conv"]["bias"]))
    y = F.batch_norm(y, t(s[name]["bn"]["mean"]), t(s[name]["bn"]["var"]),
                     t(p[name]["bn"]["scale"]), t(p[name]["bn"]["bias"]), eps=1e-5)
    return torch.relu(y)

  f3, f4, f5 = reduce(x3, "linear3"), reduce(x4, "linear4"), reduce(x5, "linear5")
  f5 = F.interpolate(f5, size=f3.shape[2:], mode="bilinear", align_corners=True)
  f4 = F.interpolate(f4, size=f3.shape[2:], mode="bilinear", align_corners=True)
  cat = torch.cat([f5, f4 * f5, f3 * f4 * f5], dim=1)
  reference = F.conv2d(cat, t(p["predict"]["kernel"]).permute(3, 2, 0, 1), t(p["predict"]["bias"]))
  np.testing.assert_allclose(fused, cat.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ours, reference.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-5)


def test_loss_matches_the_official_bce_dice():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  logits = rng.normal(0.0, 2.0, size=(3, 16, 24, 1)).astype(np.float32)
  mask = (rng.random((3, 16, 24, 1)) < 0.3).astype(np.float32)
  total, parts = sanet.loss(jnp.asarray(logits), {"side_outputs": ()}, jnp.asarray(mask))
  pred, target = torch.from_numpy(logits[..., 0]), torch.from_numpy(mask[..., 0])
  bce = torch.nn.functional.binary_cross_entropy_with_logits(pred, target)
  prob = torch.sigmoid(pred)
  inter = (prob * target).sum(dim=(1, 2))
  union = prob.sum(dim=(1, 2)) + target.sum(dim=(1, 2))
  dice = 1 - (2 * inter / (union + 1)).mean()
  np.testing.assert_allclose([parts["loss_bce"], parts["loss_dice"], total],
                             [bce.item(), dice.item(), (bce + dice).item()], rtol=1e-5)
  # Logits at another size are resized to the mask first (align_corners=True, as the official).
  small = np.ascontiguousarray(logits[:, ::2, ::2])
  resized = torch.nn.functional.interpolate(torch.from_numpy(small).permute(0, 3, 1, 2),
                                            size=(16, 24), mode="bilinear", align_corners=True)
  expected, _ = sanet.loss(jnp.asarray(resized.permute(0, 2, 3, 1).numpy()), {}, jnp.asarray(mask))
  np.testing.assert_allclose(sanet.loss(jnp.asarray(small), {}, jnp.asarray(mask))[0], expected,
                             rtol=1e-5)


# ---------------------------------------------------------------- colour exchange

@pytest.fixture(scope="module")
def kvasir_images():
  """Six real Kvasir images at 128 px (uint8 RGB)."""
  from bsa_jax.data import io
  from bsa_jax.data import preprocess
  folder = os.path.join(data_dir("kvasir_seg"), "images")
  names = sorted(os.listdir(folder))[:6]
  return [preprocess.resize_image(io.load_image(os.path.join(folder, n)), 128) for n in names]


def test_lab_conversion_is_within_opencv_rounding(kvasir_images):
  """Our Lab is the CIE formula (OpenCV's constants); OpenCV's 8-bit path is a fixed-point
  approximation that itself differs from its float path by up to 2 levels."""
  cv2 = pytest.importorskip("cv2")
  for image in kvasir_images:
    ours = np.round(color.rgb_to_lab8(image))
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    assert np.abs(ours - lab).max() <= 2 and np.mean(ours != lab) < 0.2
    back = color.lab8_to_rgb(lab.astype(np.float64)).astype(int)
    assert np.abs(back - cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)).max() <= 2
  grey = np.full((4, 4, 3), 128, np.uint8)
  np.testing.assert_allclose(color.rgb_to_lab8(grey)[0, 0, 1:], 128.0, atol=1e-6)  # neutral a, b


def _official_color_exchange(cv2, image, reference):
  """weijun88/SANet `Data.__getitem__` (RGB in and out), clipped before the uint8 cast."""
  lab, ref = cv2.cvtColor(image, cv2.COLOR_RGB2LAB), cv2.cvtColor(reference, cv2.COLOR_RGB2LAB)
  mean, std = lab.mean(axis=(0, 1), keepdims=True), lab.std(axis=(0, 1), keepdims=True)
  mean2, std2 = ref.mean(axis=(0, 1), keepdims=True), ref.std(axis=(0, 1), keepdims=True)
  moved = np.uint8(np.clip((lab - mean) / std * std2 + mean2, 0, 255))
  return cv2.cvtColor(moved, cv2.COLOR_LAB2RGB)


def test_color_exchange_follows_the_official_recipe(kvasir_images):
  cv2 = pytest.importorskip("cv2")
  for a, b in ((0, 1), (2, 3), (4, 5), (1, 0)):
    image, reference = kvasir_images[a], kvasir_images[b]
    ours = color.color_exchange(image, reference)
    assert ours.shape == image.shape and ours.dtype == np.uint8
    official = _official_color_exchange(cv2, image, reference).astype(int)
    moved = np.abs(official - image.astype(int)).mean()
    diff = np.abs(ours.astype(int) - official)
    print(f"{a}<-{b}: moved {moved:.1f}, ours vs official mean {diff.mean():.2f} max {diff.max()}")
    assert moved > 5 and diff.mean() < 0.5 and diff.max() <= 8
    # The point of the exchange: the output has the reference's Lab statistics.
    out_lab, ref_lab = color.rgb_to_lab8(ours), color.rgb_to_lab8(reference)
    np.testing.assert_allclose(out_lab.mean(axis=(0, 1)), ref_lab.mean(axis=(0, 1)), atol=1.5)
    np.testing.assert_allclose(out_lab.std(axis=(0, 1)), ref_lab.std(axis=(0, 1)), rtol=0.05,
                               atol=0.5)


# ---------------------------------------------------------------- training

def test_training_on_kvasir_reaches_every_parameter_and_lowers_the_loss():
  """Jitted Adam steps of configs/kvasir_sanet.py:small's model with `sanet.loss` on one real batch."""
  losses, grads = train_small_config(sanet)
  assert zero_gradient_leaves(grads) == []
  assert np.all(np.isfinite(losses)) and np.all(np.diff(losses) < 0), losses
  assert losses[-1] < 0.97 * losses[0], losses
