"""LDNet (Zhang et al., "Lesion-Aware Dynamic Kernel for Polyp Segmentation", MICCAI 2022).

Restated from the paper and its official code (ReaFly/LDNet: `models/LDNet.py`, `models/modules.py`,
`models/res2net.py`, `utils/loss.py`, `train.py`, `datasets/Polyp.py`):

- Encoder: Res2Net-50 v1b 26w×4s (`res2net_v1b.py`; variant `timm` takes timm's plain-stem
  `res2net50_26w_4s` instead, 0.019 M fewer parameters). e1 = the stem (1/2, 64 ch); stages 1-4
  (1/4 ... 1/32) are reduced by 1×1 convs (with bias) to 64, 128, 256, 512 channels (e2 ... e5).
- Decoder: U-Net-like blocks (3×3 conv-BN-ReLU to in/4, 3×3 conv-BN-ReLU, bilinear ×2 with
  align_corners=True). d5 = block(e5); stage by stage, d = block([LCA(d_prev, pred_prev), ESA(e)]).
- Lesion-aware dynamic kernel: a kernel (num_classes × 64, a 1×1 conv) is generated from the global
  context of e5 (GroupNorm(16) -> ReLU -> global average pool -> linear) and applied to a 64-channel
  "unified" projection of d5, giving the first prediction at 1/16. At each later stage a head updater
  refines the kernel with the lesion features it now sees: the previous prediction (×2, sigmoid)
  pools the new stage's unified features into one vector per class, and gated linear units mix it
  with the current kernel (`HeadUpdater`). Four updates give predictions at 1/8, 1/4, 1/2 and 1/1.
- Efficient self-attention (ESA) on each encoder skip: 8 heads of 64; queries are every position,
  keys and values are average-pooled to 1×1, 3×3 and 5×5 grids (35 tokens), + a pre-norm MLP (512).
- Lesion-aware cross-attention (LCA) on each decoder feature: keys and values are the features
  averaged under the sigmoid of the previous prediction (one token), + a pre-norm MLP. With a single
  key the softmax is identically 1, so LCA adds the projected, mask-pooled values to every position;
  its query and key projections (the first two thirds of `to_qkv`, 0.98 M parameters in `paper`) get
  exactly zero gradient — in the official code too. We keep the layer as written, so the parameters
  and outputs are the official ones.
- Loss (official `utils/loss.py`): BCE + Dice (smooth 1) on each of the five maps against the mask,
  which is halved (bilinear, align_corners=True) for each coarser map (`loss`).
- Input 224×224 (official: resize to 256, random 224 crop for training; resize to 224 for testing).

Outputs: main logits = the full-resolution prediction; `aux['side_outputs']` = the 1/2, 1/4, 1/8,
1/16 predictions (logits; the official network returns their sigmoids). Parameters (1 class):
33,375,608 — equal to the official network built in PyTorch from the code above (encoder 23,669,352;
reductions 1,393,600; decoder 3,561,936; ESA 1,576,960; LCA 2,955,008; kernel generation 33,856;
head updaters 119,040; unified projections 65,856).
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from bsa_jax import models
from bsa_jax.models import bilinear
from bsa_jax.models import res2net_v1b
from bsa_jax.models import swin
from bsa_jax.models.resnext import batch_norm

# Variant -> encoder (a `res2net_v1b.backbone_from_variant` name), reduced widths of e2..e5, the
# unified (kernel) width, attention heads × head width, MLP width and the context GroupNorm's groups.
VARIANTS = {
    "paper": dict(backbone="res2net50_v1b_26w_4s", reduced=(64, 128, 256, 512), unified=64,
                  heads=8, head_dim=64, mlp_dim=512, context_groups=16),
    "timm": dict(backbone="res2net50_26w_4s", reduced=(64, 128, 256, 512), unified=64,
                 heads=8, head_dim=64, mlp_dim=512, context_groups=16),
    "tiny": dict(backbone="v1b_test", reduced=(8, 8, 16, 16), unified=8, heads=2, head_dim=4,
                 mlp_dim=16, context_groups=4),
}
INPUT_SIZE = 224  # the official train crop and test size
PYRAMID = (1, 3, 5)  # ESA's pooled key/value grids
MASK_POOL_EPS = 0.0005  # official `MaskAveragePooling`
_LN_EPS = 1e-5  # torch LayerNorm / GroupNorm default (Flax's is 1e-6)


def adaptive_pool_matrix(size_in: int, size_out: int) -> np.ndarray:
  """(size_out, size_in) averaging weights of torch's adaptive_avg_pool over one axis.

  Window i covers [floor(i·n/m), ceil((i+1)·n/m)), so windows overlap when m does not divide n.
  """
  weights = np.zeros((size_out, size_in), np.float32)
  for i in range(size_out):
    start, end = (i * size_in) // size_out, -((-(i + 1) * size_in) // size_out)
    weights[i, start:end] = 1.0 / (end - start)
  return weights


def pyramid_pool(x: jax.Array, sizes=PYRAMID) -> jax.Array:
  """(B, H, W, C) -> (B, Σ s², C): adaptive average pools to s×s for each s, tokens row-major."""
  _, h, w, _ = x.shape
  pooled = []
  for s in sizes:
    rows = jnp.asarray(adaptive_pool_matrix(h, s), x.dtype)  # (s, H)
    cols = jnp.asarray(adaptive_pool_matrix(w, s), x.dtype)  # (s, W)
    grid = jnp.einsum("ih,jw,bhwc->bijc", rows, cols, x)  # (B, s, s, C)
    pooled.append(grid.reshape(grid.shape[0], s * s, -1))
  return jnp.concatenate(pooled, axis=1)


def mask_average_pool(x: jax.Array, mask_logits: jax.Array) -> jax.Array:
  """(B, H, W, C) averaged under sigmoid(mask_logits) (B, H, W, 1) -> (B, 1, C) (official eps)."""
  weight = jax.nn.sigmoid(mask_logits.astype(x.dtype))
  total = (x * weight).sum(axis=(1, 2))  # (B, C)
  area = weight.sum(axis=(1, 2)) + MASK_POOL_EPS  # (B, 1)
  return (total / area)[:, None, :]


def attend(q: jax.Array, k: jax.Array, v: jax.Array, heads: int) -> jax.Array:
  """Multi-head softmax attention: q (B, N, h·d), k/v (B, M, h·d) -> (B, N, h·d); scale d^-1/2."""
  b, n, inner = q.shape
  d = inner // heads
  q = q.reshape(b, n, heads, d)
  k = k.reshape(b, k.shape[1], heads, d)
  v = v.reshape(b, v.shape[1], heads, d)
  weights = jax.nn.softmax(jnp.einsum("bnhd,bmhd->bhnm", q, k) * d ** -0.5, axis=-1)
  return jnp.einsum("bhnm,bmhd->bnhd", weights, v).reshape(b, n, inner)


class FeedForward(nn.Module):
  """Pre-norm MLP: LayerNorm -> Linear(mlp_dim) -> exact GELU -> Linear(dim)."""
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, name="norm")(x)
    return swin.gelu_mlp(y, self.mlp_dim, dtype=self.dtype)


class TokenAttentionBlock(nn.Module):
  """ESA / LCA block: x + attention(x -> queries; pooled keys/values) then x + MLP, on (B, H, W, C).

  Attributes:
    kind: 'esa' (keys/values pyramid-pooled) or 'lca' (keys/values averaged under the mask).
    heads, head_dim: attention heads and their width (inner width heads·head_dim).
    mlp_dim: hidden width of the MLP.
  """
  kind: str
  heads: int = 8
  head_dim: int = 64
  mlp_dim: int = 512
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask_logits=None):
    """x: (B, H, W, C) [, mask_logits (B, H, W, 1) for LCA] -> (B, H, W, C)."""
    b, h, w, c = x.shape
    inner = self.heads * self.head_dim
    qkv = nn.Conv(3 * inner, (1, 1), use_bias=False, dtype=self.dtype, name="to_qkv")(x)
    q, k, v = jnp.split(qkv, 3, axis=-1)  # (B, H, W, inner) each
    if self.kind == "esa":
      k, v = pyramid_pool(k), pyramid_pool(v)  # (B, 35, inner)
    elif self.kind == "lca":
      k, v = mask_average_pool(k, mask_logits), mask_average_pool(v, mask_logits)  # (B, 1, inner)
    else:
      raise ValueError(f"kind must be 'esa' or 'lca', got {self.kind!r}")
    out = attend(q.reshape(b, h * w, inner), k, v, self.heads)  # (B, HW, inner)
    tokens = x.reshape(b, h * w, c) + nn.Dense(c, dtype=self.dtype, name="to_out")(out)
    tokens = tokens + FeedForward(self.mlp_dim, self.dtype, name="ff")(tokens)
    return tokens.reshape(b, h, w, c)


class ConvBNReLU(nn.Module):
  """LDNet's `ConvBlock`: 3×3 conv (with bias, padding 1) -> BN -> ReLU."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype, name="conv")(x)
    return nn.relu(batch_norm(train, dtype=self.dtype, name="bn")(x))


class DecoderBlock(nn.Module):
  """(B, h, w, C_in) -> 3×3 conv to C_in/4 -> 3×3 conv to `features` -> ×2 (align_corners)."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = ConvBNReLU(x.shape[-1] // 4, self.dtype, name="conv1")(x, train=train)
    x = ConvBNReLU(self.features, self.dtype, name="conv2")(x, train=train)
    _, h, w, _ = x.shape
    return bilinear.resize(x, 2 * h, 2 * w, align_corners=True)


def dynamic_conv(features: jax.Array, kernels: jax.Array) -> jax.Array:
  """Per-image 1×1 conv: features (B, H, W, C) with kernels (B, N, C) -> (B, H, W, N), no bias."""
  return jnp.einsum("bhwc,bnc->bhwn", features, kernels)


class HeadUpdater(nn.Module):
  """LDNet's `HeadUpdator`: refines the kernels (B, N, C) with the features the last prediction marks.

  assembled = Σ_hw sigmoid(up×2(pred)) · feat                      (B, N, C)
  p_in, p_out = Linear(assembled);  k_in, k_out = Linear(kernels)   (C each)
  g = k_in · p_in;  gate_p = σ(LN(Linear(g))),  gate_k = σ(LN(Linear(g)))
  kernels' = ReLU(LN(Linear(gate_p · LN(p_out) + gate_k · LN(k_out))))
  """
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, feat, kernels, pred):
    """feat (B, H, W, C), kernels (B, N, C), pred (B, H/2, W/2, N) logits -> kernels (B, N, C)."""
    b, h, w, c = feat.shape

    def dense(features, name):
      return nn.Dense(features, dtype=self.dtype, name=name)

    def norm(name):
      return nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, name=name)

    pred = bilinear.resize(pred.astype(feat.dtype), h, w, align_corners=False)  # ×2, half-pixel
    weight = jax.nn.sigmoid(pred)  # (B, H, W, N)
    assembled = jnp.einsum("bhwn,bhwc->bnc", weight, feat)  # (B, N, C)
    pred_in, pred_out = jnp.split(dense(2 * c, "pred_transform")(assembled), 2, axis=-1)
    head_in, head_out = jnp.split(dense(2 * c, "head_transform")(kernels), 2, axis=-1)
    gate = head_in * pred_in  # (B, N, C)
    head_gate = jax.nn.sigmoid(norm("head_norm_in")(dense(c, "head_gate")(gate)))
    pred_gate = jax.nn.sigmoid(norm("pred_norm_in")(dense(c, "pred_gate")(gate)))
    update = pred_gate * norm("pred_norm_out")(pred_out) + head_gate * norm("head_norm_out")(head_out)
    return nn.relu(norm("fc_norm")(dense(c, "fc")(update)))  # (B, N, C)


class Model(nn.Module):
  """LDNet.

  Attributes:
    variant: key of `VARIANTS`.
    num_classes: must be 1: the official code takes N kernels, but its LCA multiplies C-channel
      features by the N-channel prediction, which only broadcasts for N = 1.
    dtype: compute dtype; params stay float32.
  """
  variant: str = "paper"
  num_classes: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image, *, train: bool = False):
    """image (B, H, W, 3) -> logits (B, H, W, num_classes), aux {'side_outputs': 1/2 ... 1/16, ...}."""
    if self.num_classes != 1:  # LCA pools (B, C, H, W) features under a (B, N, H, W) mask
      raise ValueError(f"LDNet's lesion-aware cross-attention pools features under one foreground "
                       f"map (the official code breaks for more); got num_classes={self.num_classes}")
    cfg = VARIANTS[self.variant]
    models.check_input_size(image.shape, 32, "LDNet", reason="the encoder's stride",
                            paper_size=INPUT_SIZE)
    dt = self.dtype
    feats = res2net_v1b.backbone_from_variant(cfg["backbone"], dtype=dt, name="backbone")(
        image, train=train)
    # e1 (B, H/2, W/2, stem) and e_k = reduce_k(stage k-1) (B, H/2^k, W/2^k, reduced[k-2]).
    encoder = {1: feats["stem"]}
    for k, width in zip((2, 3, 4, 5), cfg["reduced"]):
      encoder[k] = nn.Conv(width, (1, 1), dtype=dt, name=f"reduce{k}")(feats[f"stage{k - 1}"])

    def attention(kind, name):
      return TokenAttentionBlock(kind, cfg["heads"], cfg["head_dim"], cfg["mlp_dim"], dt, name=name)

    def unify(x, k):
      return nn.Conv(cfg["unified"], (1, 1), dtype=dt, name=f"unify{k}")(x)  # (.., unified)

    decoded = DecoderBlock(encoder[5].shape[-1], dt, name="decoder5")(encoder[5], train=train)
    kernels = self._initial_kernels(encoder[5], cfg)  # (B, N, unified)
    pred = dynamic_conv(unify(decoded, 5), kernels)  # (B, H/16, W/16, N)
    preds = [pred]
    for k in (4, 3, 2, 1):  # the skip e_k joins at its own resolution; d_k is twice as fine
      esa = attention("esa", f"esa{k}")(encoder[k])
      lca = attention("lca", f"lca{k}")(decoded, pred)
      decoded = DecoderBlock(encoder[k].shape[-1], dt, name=f"decoder{k}")(
          jnp.concatenate([lca, esa], axis=-1), train=train)  # (B, H/2^(k-1), W/2^(k-1), C_k)
      feat = unify(decoded, k)
      kernels = HeadUpdater(dt, name=f"head_updater{k}")(feat, kernels, pred)
      pred = dynamic_conv(feat, kernels)  # (B, H/2^(k-1), W/2^(k-1), N)
      preds.append(pred)
    preds = [p.astype(jnp.float32) for p in preds[::-1]]  # 1/1, 1/2, 1/4, 1/8, 1/16
    return preds[0], {"side_outputs": tuple(preds[1:]), "kernels": kernels}

  def _initial_kernels(self, e5, cfg):
    """Global context of e5 (B, h, w, C5) -> kernels (B, N, unified): GroupNorm, ReLU, mean, linear."""
    x = nn.GroupNorm(num_groups=cfg["context_groups"], epsilon=_LN_EPS, dtype=self.dtype,
                     name="context_norm")(e5)
    context = nn.relu(x).mean(axis=(1, 2))  # (B, C5)
    kernels = nn.Dense(self.num_classes * cfg["unified"], dtype=self.dtype,
                       name="generate_head")(context)
    return kernels.reshape(e5.shape[0], self.num_classes, cfg["unified"])


def pretrained_mapping(model_config) -> dict[str, str]:
  """`config.model_init` is a converted Res2Net for the variant's encoder: it fills `backbone`.

  `paper`: `python -m bsa_jax.models.convert.res2net_v1b` output (official v1b or timm `res2net50d`);
  `timm`: `python -m bsa_jax.models.convert --timm-model res2net50_26w_4s` output.
  """
  del model_config
  return {"backbone": ""}


# ---------------------------------------------------------------- loss (official utils/loss.py)

def bce_dice(logits: jax.Array, target: jax.Array) -> jax.Array:
  """LDNet's `BceDiceLoss` on logits: mean BCE + 1 − mean_b (2·Σpt + 1) / (Σp + Σt + 1), float32."""
  logits = logits.astype(jnp.float32)
  bce = optax.sigmoid_binary_cross_entropy(logits, target).mean()
  prob = jax.nn.sigmoid(logits)
  axes = tuple(range(1, logits.ndim))
  dice = (2.0 * (prob * target).sum(axis=axes) + 1.0) / (
      prob.sum(axis=axes) + target.sum(axis=axes) + 1.0)
  return bce + 1.0 - dice.mean()


def loss(logits: jax.Array, aux: dict, mask: jax.Array,
         train_config=None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The trainer's loss contract: (BCE+Dice of the main map + w · Σ side maps', named parts).

  Each side map (1/2 ... 1/16) is scored against the previous target resized to its size
  (bilinear, align_corners=True), the official chain of ×0.5 soft masks. w is
  `train_config.deep_supervision_weight` (1 = the official sum; 1 when no config is given).
  """
  weight = 1.0 if train_config is None else train_config.deep_supervision_weight
  _, height, width, _ = mask.shape
  logits = bilinear.resize(logits, height, width, align_corners=True)  # no-op at the mask's size
  parts = {"loss_main": bce_dice(logits, mask)}
  total, target, side_losses = parts["loss_main"], mask, []
  for side in aux.get("side_outputs", ()):
    target = bilinear.resize(target, side.shape[1], side.shape[2], align_corners=True)  # (B, h, w, 1)
    side_losses.append(bce_dice(side, target))
  if side_losses and weight:
    parts["loss_side"] = sum(side_losses) / len(side_losses)
    total = total + weight * sum(side_losses)
  return total, parts
