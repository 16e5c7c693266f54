"""LDNet: golden parameter counts (= the official network's, module by module), the model contract, the
efficient self-attention, lesion-aware cross-attention, head updater, dynamic kernel and deep-supervision
loss against torch references written from the paper/code formulas, and training on real Kvasir."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bsa_jax.models import bilinear
from bsa_jax.models import ldnet
from tests.helpers import count
from tests.helpers import golden_params
from tests.helpers import shapes
from tests.test_attention import fast_jit
from tests.test_attention import numpy_init
from tests.test_sanet import randomized
from tests.test_sanet import train_small_config
from tests.test_sanet import zero_gradient_leaves

# Parameters for one class. 'paper' equals the official network (ReaFly/LDNet `models/LDNet.py` +
# `modules.py` + its Res2Net-50 v1b, whose classifier LDNet does not register) built in PyTorch and
# counted with sum(p.numel()); the per-module figures are the same build's.
GOLDEN = {"paper": 33_375_608, "timm": 33_356_376, "tiny": 117_100}
OFFICIAL_MODULES = {  # official module prefix -> (our top-level names, parameters)
    "encoder*": (("backbone",), 23_669_352),
    "reduce*": (("reduce2", "reduce3", "reduce4", "reduce5"), 1_393_600),
    "decoder*": (tuple(f"decoder{k}" for k in range(1, 6)), 3_561_936),
    "esa*": (tuple(f"esa{k}" for k in range(1, 5)), 1_576_960),
    "lca*": (tuple(f"lca{k}" for k in range(1, 5)), 2_955_008),
    "gobal_average_pool + generate_head": (("context_norm", "generate_head"), 33_856),
    "headUpdators": (tuple(f"head_updater{k}" for k in range(1, 5)), 119_040),
    "unify*": (tuple(f"unify{k}" for k in range(1, 6)), 65_856),
}


def _t(a):
  import torch
  return torch.from_numpy(np.array(a))


def _nchw(a):
  return _t(a).permute(0, 3, 1, 2)


def _nhwc(t):
  return t.permute(0, 2, 3, 1).numpy()


# ---------------------------------------------------------------- parameters and the model contract

@pytest.mark.parametrize("variant", sorted(GOLDEN))
def test_golden_parameter_counts(variant):
  params = golden_params(ldnet.Model(variant=variant), GOLDEN[variant], f"ldnet/{variant}")
  if variant == "paper":
    for official, (names, expected) in OFFICIAL_MODULES.items():
      assert sum(count(params[n]) for n in names) == expected, official
    assert sorted(params) == sorted(n for names, _ in OFFICIAL_MODULES.values() for n in names)


@pytest.mark.parametrize("size", [(224, 224), (224, 320)], ids=["224", "224x320"])
def test_outputs_at_input_size_with_four_side_outputs(size):
  h, w = size
  _, (logits, aux) = shapes(ldnet.Model(variant="paper"), (2, h, w, 3))
  assert logits.shape == (2, h, w, 1) and logits.dtype == jnp.float32
  assert [s.shape for s in aux["side_outputs"]] == [(2, h // f, w // f, 1) for f in (2, 4, 8, 16)]
  assert all(s.dtype == jnp.float32 for s in aux["side_outputs"])
  assert aux["kernels"].shape == (2, 1, 64)


def test_one_class_only_as_the_official_cross_attention():
  with pytest.raises(ValueError, match="num_classes=3"):
    shapes(ldnet.Model(variant="tiny", num_classes=3), (1, 64, 64, 3))


def test_sizes_the_stride_cannot_divide_are_refused():
  with pytest.raises(ValueError, match="divisible by 32"):
    shapes(ldnet.Model(variant="tiny"), (1, 80, 80, 3))


# ---------------------------------------------------------------- modules against torch references

@pytest.mark.parametrize("align_corners", [True, False], ids=["align_corners", "half_pixel"])
@pytest.mark.parametrize("size_in,size_out", [((7, 10), (14, 20)), ((32, 48), (16, 24)),
                                              ((5, 6), (11, 3))], ids=["up", "halve", "mixed"])
def test_bilinear_resize_is_torch_interpolate(size_in, size_out, align_corners):
  """`bilinear.resize`, used by SANet and LDNet for every resize, against F.interpolate."""
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(0).normal(size=(2, *size_in, 3)).astype(np.float32)
  reference = torch.nn.functional.interpolate(_nchw(x), size=size_out, mode="bilinear",
                                              align_corners=align_corners)
  ours = bilinear.resize(jnp.asarray(x), *size_out, align_corners=align_corners)
  np.testing.assert_allclose(ours, _nhwc(reference), rtol=1e-5, atol=1e-5)  # torch: float32 weights


@pytest.mark.parametrize("size", [(14, 14), (7, 10), (4, 6)], ids=["14", "7x10", "4x6"])
def test_pyramid_pool_is_torch_adaptive_average_pooling(size):
  """Including sizes that 3 and 5 do not divide (overlapping windows) and grids smaller than 5."""
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(0).normal(size=(2, *size, 6)).astype(np.float32)
  reference = torch.cat([torch.nn.functional.adaptive_avg_pool2d(_nchw(x), s).flatten(2)
                         for s in ldnet.PYRAMID], dim=-1).transpose(1, 2)  # (B, 35, C)
  np.testing.assert_allclose(ldnet.pyramid_pool(jnp.asarray(x)), reference.numpy(), rtol=1e-5,
                             atol=1e-6)


def _torch_token_block(x, params, kind, heads, mask_logits=None):
  """ESA / LCA block from the formulas (NHWC numpy in and out): x + Linear(MHA(q; pooled k, v)),
  then + MLP(LayerNorm(·)) with exact GELU."""
  import torch
  F = torch.nn.functional
  p = params
  x = _nchw(x)
  b, c, h, w = x.shape
  q, k, v = F.conv2d(x, _t(p["to_qkv"]["kernel"]).permute(3, 2, 0, 1)).chunk(3, dim=1)
  inner = q.shape[1]
  d = inner // heads
  if kind == "esa":
    k, v = (torch.cat([F.adaptive_avg_pool2d(t, s).flatten(2) for s in (1, 3, 5)], -1)
            for t in (k, v))  # (B, inner, 35)
  else:
    m = torch.sigmoid(_nchw(mask_logits))
    k, v = ((t * m).sum(dim=(2, 3), keepdim=True).flatten(2) / (m.sum(dim=(2, 3)).unsqueeze(-1)
                                                                 + 0.0005) for t in (k, v))
  q = q.reshape(b, heads, d, h * w).transpose(-1, -2)  # (B, heads, HW, d)
  k = k.reshape(b, heads, d, -1).transpose(-1, -2)
  v = v.reshape(b, heads, d, -1).transpose(-1, -2)
  attn = torch.softmax(q @ k.transpose(-1, -2) * d ** -0.5, dim=-1)
  out = (attn @ v).permute(0, 2, 1, 3).reshape(b, h * w, inner)
  tokens = x.flatten(2).transpose(1, 2) + F.linear(out, _t(p["to_out"]["kernel"]).T,
                                                   _t(p["to_out"]["bias"]))
  ff = p["ff"]
  y = F.layer_norm(tokens, (c,), _t(ff["norm"]["scale"]), _t(ff["norm"]["bias"]), eps=1e-5)
  y = F.gelu(F.linear(y, _t(ff["fc1"]["kernel"]).T, _t(ff["fc1"]["bias"])))
  tokens = tokens + F.linear(y, _t(ff["fc2"]["kernel"]).T, _t(ff["fc2"]["bias"]))
  return tokens.reshape(b, h, w, c).numpy()


@pytest.mark.parametrize("kind", ["esa", "lca"])
def test_attention_blocks_match_a_torch_reference(kind):
  pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 7, 10, 12)).astype(np.float32)
  mask_logits = rng.normal(0.0, 2.0, size=(2, 7, 10, 1)).astype(np.float32)
  block = ldnet.TokenAttentionBlock(kind, heads=2, head_dim=8, mlp_dim=20)
  args = (x, mask_logits) if kind == "lca" else (x,)
  variables = randomized(numpy_init(block, *args))
  ours = block.apply(variables, *args)
  reference = _torch_token_block(x, variables["params"], kind, 2, mask_logits)
  np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)


def test_lca_queries_and_keys_are_inert_as_in_the_official_code():
  """One key makes the softmax identically 1: the query and key thirds of `to_qkv` change nothing and
  get an exactly zero gradient, while the value third and the mask do matter."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 6, 8, 12)), jnp.float32)
  mask_logits = jnp.asarray(rng.normal(size=(2, 6, 8, 1)), jnp.float32)
  block = ldnet.TokenAttentionBlock("lca", heads=2, head_dim=8, mlp_dim=20)
  variables = numpy_init(block, x, mask_logits)
  apply = fast_jit(block.apply)
  inner = 16

  grads = fast_jit(jax.grad(lambda v: block.apply(v, x, mask_logits).sum()))(variables)
  kernel_grad = grads["params"]["to_qkv"]["kernel"]  # (1, 1, 12, 3 · inner)
  assert not np.any(kernel_grad[..., :2 * inner])
  assert np.all(np.any(kernel_grad[..., 2 * inner:], axis=(0, 1, 2)))
  kernel = variables["params"]["to_qkv"]["kernel"]
  moved = {"params": {**variables["params"],
                      "to_qkv": {"kernel": kernel.at[..., :2 * inner].mul(-3.0)}}}
  reference = apply(variables, x, mask_logits)
  np.testing.assert_allclose(apply(moved, x, mask_logits), reference, rtol=1e-6, atol=1e-6)
  assert not np.allclose(apply(variables, x, -mask_logits), reference, atol=1e-3)


def _torch_head_updater(feat, kernels, pred, p):
  """The head updater's formulas (module docstring) in torch; feat NHWC, kernels (B, N, C)."""
  import torch
  F = torch.nn.functional

  def dense(t, name):
    return F.linear(t, _t(p[name]["kernel"]).T, _t(p[name]["bias"]))

  def norm(t, name):
    return F.layer_norm(t, (t.shape[-1],), _t(p[name]["scale"]), _t(p[name]["bias"]), eps=1e-5)

  c = feat.shape[-1]
  weight = torch.sigmoid(F.interpolate(_nchw(pred), scale_factor=2, mode="bilinear",
                                       align_corners=False))  # (B, N, H, W)
  assembled = torch.einsum("bnhw,bchw->bnc", weight, _nchw(feat))
  pred_feat, head_feat = dense(assembled, "pred_transform"), dense(_t(kernels), "head_transform")
  gate = head_feat[..., :c] * pred_feat[..., :c]
  head_gate = torch.sigmoid(norm(dense(gate, "head_gate"), "head_norm_in"))
  pred_gate = torch.sigmoid(norm(dense(gate, "pred_gate"), "pred_norm_in"))
  update = (pred_gate * norm(pred_feat[..., c:], "pred_norm_out") +
            head_gate * norm(head_feat[..., c:], "head_norm_out"))
  return torch.relu(norm(dense(update, "fc"), "fc_norm")).numpy()


def test_head_updater_and_dynamic_kernel_match_torch_references():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  feat = rng.normal(size=(2, 8, 12, 6)).astype(np.float32)  # (B, H, W, C)
  kernels = rng.normal(size=(2, 3, 6)).astype(np.float32)  # (B, N=3, C)
  pred = rng.normal(size=(2, 4, 6, 3)).astype(np.float32)  # (B, H/2, W/2, N)
  updater = ldnet.HeadUpdater()
  variables = randomized(numpy_init(updater, feat, kernels, pred))
  ours = updater.apply(variables, feat, kernels, pred)
  reference = _torch_head_updater(feat, kernels, pred, variables["params"])
  np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)
  # The dynamic kernel is a 1×1 conv whose weights differ per image (official: a loop of F.conv2d).
  conv = torch.cat([torch.nn.functional.conv2d(_nchw(feat[i:i + 1]), _t(kernels[i])[..., None, None])
                    for i in range(2)])
  np.testing.assert_allclose(ldnet.dynamic_conv(feat, kernels), _nhwc(conv), rtol=1e-5, atol=1e-5)


def test_loss_matches_the_official_deep_supervision_loss():
  """BCE + Dice (smooth 1) on five probability maps, the mask halved (align_corners) for each."""
  torch = pytest.importorskip("torch")
  F = torch.nn.functional
  rng = np.random.default_rng(0)
  maps = [rng.normal(0.0, 2.0, size=(3, 32 // 2 ** i, 48 // 2 ** i, 1)).astype(np.float32)
          for i in range(5)]
  mask = (rng.random((3, 32, 48, 1)) < 0.3).astype(np.float32)
  total, parts = jax.jit(ldnet.loss)(jnp.asarray(maps[0]), {"side_outputs": tuple(maps[1:])},
                                     jnp.asarray(mask))
  gt, reference = _nchw(mask), []
  for i, m in enumerate(maps):
    if i:
      gt = F.interpolate(gt, scale_factor=0.5, mode="bilinear", align_corners=True)
    prob, flat_gt = torch.sigmoid(_nchw(m)).flatten(1), gt.flatten(1)
    bce = F.binary_cross_entropy(prob, flat_gt)
    dice = (2 * (prob * flat_gt).sum(1) + 1) / (prob.sum(1) + flat_gt.sum(1) + 1)
    reference.append(bce + 1 - dice.sum() / 3)
  np.testing.assert_allclose(total, sum(reference).item(), rtol=1e-5)
  np.testing.assert_allclose(parts["loss_main"], reference[0].item(), rtol=1e-5)
  np.testing.assert_allclose(parts["loss_side"], sum(reference[1:]).item() / 4, rtol=1e-5)


# ---------------------------------------------------------------- training

def _lca_query_key_columns(grads):
  """{lca name: the query and key thirds of its `to_qkv` kernel's gradient}."""
  out = {}
  for name, tree in grads.items():
    if name.startswith("lca"):
      kernel = tree["to_qkv"]["kernel"]
      out[name] = kernel[..., :2 * kernel.shape[-1] // 3]
  return out


@pytest.mark.slow  # LDNet's train step compiles for ~30 s
def test_training_on_kvasir_reaches_every_parameter_and_lowers_the_loss():
  """Jitted Adam steps of configs/kvasir_ldnet.py:small's model with `ldnet.loss` on one real batch.

  Every parameter gets a finite gradient, non-zero except in the LCA query and key projections,
  where it is exactly zero (the single-key softmax, as in the official network).
  """
  losses, grads = train_small_config(ldnet)
  assert zero_gradient_leaves(grads) == []
  inert = _lca_query_key_columns(grads)
  assert sorted(inert) == ["lca1", "lca2", "lca3", "lca4"]
  assert not any(np.any(g) for g in inert.values())
  for name in inert:  # the value columns do learn
    kernel = grads[name]["to_qkv"]["kernel"]
    assert np.all(np.any(kernel[..., 2 * kernel.shape[-1] // 3:], axis=(0, 1, 2))), name
  assert np.all(np.isfinite(losses)) and np.all(np.diff(losses) < 0), losses
  assert losses[-1] < 0.97 * losses[0], losses
