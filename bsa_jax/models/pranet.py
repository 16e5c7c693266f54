"""PraNet (Fan et al., "PraNet: Parallel Reverse Attention Network for Polyp Segmentation", MICCAI 2020).

Restated from the paper and its reference code (DengPingFan/PraNet `lib/PraNet_Res2Net.py`):

- Backbone: Res2Net-50 (26w×4s), `res2net.py` (timm `res2net50_26w_4s` layout, so ImageNet weights
  load through `bsa_jax.models.convert`; see `pretrained_mapping`). PraNet's own code uses the `v1b`
  Res2Net (deep 3×3 stem, average-pool shortcuts; 0.02 M more parameters); timm's plain-stem model
  is the one the converter ports. 30.48 M parameters in all; the paper's 32.5 M also counts the
  unused 2.05 M ImageNet classifier its code keeps inside the backbone.
- RFB (receptive field block) on stages 2, 3, 4 reduces each to `channels` (32) features: four
  branches (1×1; 1×1 → 1×k → k×1 → 3×3 dilated k, for k = 3, 5, 7), concatenated, 3×3 conv, plus a
  1×1 residual, ReLU.
- Parallel partial decoder (PD) aggregates the three RFB outputs into a coarse map S_g at 1/8.
- Three reverse-attention (RA) stages, deepest first: the previous map S is resized to the stage's
  resolution, the stage's backbone features are weighted by 1 − σ(S) (attention on what is not yet
  found), a few convs predict a residual, and S + residual is the next map.

Every conv of the heads is PraNet's `BasicConv2d`: conv (no bias) → BN, no activation. Outputs: main
logits = the last RA map (lateral map 2, 1/8) upsampled to the input size; `aux['side_outputs']` =
(lateral map 5 = S_g at 1/8, lateral map 4 at 1/32, lateral map 3 at 1/16) at their own resolutions
(the loss upsamples them bilinearly, as PraNet does), so with deep_supervision_weight 1 the trainer's
loss is PraNet's: the structure loss summed over the four maps.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from bsa_jax import models
from bsa_jax.models import res2net
from bsa_jax.models.resnext import batch_norm

# Variant -> backbone (a `res2net.VARIANTS` key), RFB/decoder channels, and per RA stage (deepest
# first: stages 4, 3, 2) its (width, kernel, hidden convs, kernel of the 1-channel output conv).
VARIANTS = {
    "paper": dict(backbone="res2net50_26w_4s", channels=32,
                  reverse_attention=((256, 5, 3, 1), (64, 3, 2, 3), (64, 3, 2, 3))),
    "tiny": dict(backbone="test", channels=8,
                 reverse_attention=((16, 5, 3, 1), (8, 3, 2, 3), (8, 3, 2, 3))),
}


def upsample_align_corners(x: jax.Array, factor: int) -> jax.Array:
  """Bilinear ×factor with torch's align_corners=True (the PD's `nn.Upsample`): corners map to corners."""
  n, h, w, c = x.shape
  out_h, out_w = h * factor, w * factor
  # scale_and_translate samples input (out + 0.5 - t) / s - 0.5; align_corners wants out / s.
  scale = jnp.array([(out_h - 1) / max(h - 1, 1), (out_w - 1) / max(w - 1, 1)])
  return jax.image.scale_and_translate(x, (n, out_h, out_w, c), (1, 2), scale, 0.5 * (1.0 - scale),
                                       method="linear", antialias=False)


def resize(x: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear resize with half-pixel centres (torch `F.interpolate`, align_corners=False)."""
  n, _, _, c = x.shape
  return jax.image.resize(x, (n, height, width, c), method="bilinear", antialias=False)


class BasicConv(nn.Module):
  """PraNet's `BasicConv2d`: conv (no bias, 'same' padding for odd kernels) → BN. No activation."""
  features: int
  kernel: tuple[int, int] = (1, 1)
  dilation: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    pad = tuple((self.dilation * (k // 2),) * 2 for k in self.kernel)
    x = nn.Conv(self.features, self.kernel, padding=pad, kernel_dilation=self.dilation,
                use_bias=False, dtype=self.dtype, name="conv")(x)
    return batch_norm(train, dtype=self.dtype, name="bn")(x)


class RFB(nn.Module):
  """Receptive field block (PraNet's `RFB_modified`): (B, H, W, C_in) -> (B, H, W, features)."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    c = self.features
    branches = [BasicConv(c, dtype=self.dtype, name="branch0")(x, train=train)]
    for b, k in enumerate((3, 5, 7), start=1):
      y = BasicConv(c, dtype=self.dtype, name=f"branch{b}_0")(x, train=train)
      y = BasicConv(c, (1, k), dtype=self.dtype, name=f"branch{b}_1")(y, train=train)
      y = BasicConv(c, (k, 1), dtype=self.dtype, name=f"branch{b}_2")(y, train=train)
      y = BasicConv(c, (3, 3), k, dtype=self.dtype, name=f"branch{b}_3")(y, train=train)
      branches.append(y)
    y = BasicConv(c, (3, 3), dtype=self.dtype, name="conv_cat")(
        jnp.concatenate(branches, axis=-1), train=train)  # (B, H, W, 4c) -> (B, H, W, c)
    return nn.relu(y + BasicConv(c, dtype=self.dtype, name="conv_res")(x, train=train))


class PartialDecoder(nn.Module):
  """Parallel partial decoder (PraNet's `aggregation`): RFB features at 1/32, 1/16, 1/8 -> S_g at 1/8.

  Deeper features gate shallower ones multiplicatively, then are concatenated upwards.
  """
  channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x5, x4, x3, *, train: bool):
    """x5: (B, h, w, c), x4: (B, 2h, 2w, c), x3: (B, 4h, 4w, c) -> (B, 4h, 4w, 1) logits."""
    c = self.channels

    def conv(features, name):
      return lambda t: BasicConv(features, (3, 3), dtype=self.dtype, name=name)(t, train=train)

    def up(t):
      return upsample_align_corners(t, 2)

    x4_1 = conv(c, "conv_upsample1")(up(x5)) * x4  # (B, 2h, 2w, c)
    x3_1 = conv(c, "conv_upsample2")(up(up(x5))) * conv(c, "conv_upsample3")(up(x4)) * x3
    x4_2 = conv(2 * c, "conv_concat2")(
        jnp.concatenate([x4_1, conv(c, "conv_upsample4")(up(x5))], axis=-1))  # (B, 2h, 2w, 2c)
    x3_2 = conv(3 * c, "conv_concat3")(
        jnp.concatenate([x3_1, conv(2 * c, "conv_upsample5")(up(x4_2))], axis=-1))  # (.., 3c)
    x = conv(3 * c, "conv4")(x3_2)
    return nn.Conv(1, (1, 1), dtype=self.dtype, name="conv5")(x)  # (B, 4h, 4w, 1)


class ReverseAttention(nn.Module):
  """One RA stage: map S (B, h', w', 1) and features (B, h, w, C) -> refined map (B, h, w, 1).

  Attributes:
    width: channels of the stage's convs.
    kernel: kernel of its hidden convs.
    num_hidden: hidden convs (with ReLU) after the 1×1 reduction.
    out_kernel: kernel of the conv predicting the 1-channel residual.
  """
  width: int
  kernel: int
  num_hidden: int
  out_kernel: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, prev, features, *, train: bool):
    _, h, w, _ = features.shape
    prev = resize(prev, h, w)  # (B, h, w, 1)
    x = (1.0 - jax.nn.sigmoid(prev)) * features  # reverse attention, broadcast over channels
    x = BasicConv(self.width, dtype=self.dtype, name="conv1")(x, train=train)
    for i in range(self.num_hidden):
      x = nn.relu(BasicConv(self.width, (self.kernel,) * 2, dtype=self.dtype,
                            name=f"conv{i + 2}")(x, train=train))
    residual = BasicConv(1, (self.out_kernel,) * 2, dtype=self.dtype,
                         name=f"conv{self.num_hidden + 2}")(x, train=train)
    return residual + prev.astype(residual.dtype)


class Model(nn.Module):
  """PraNet.

  Attributes:
    variant: key of `VARIANTS`.
    num_classes: must be 1 (PraNet's maps are single foreground logits).
    dtype: compute dtype; params stay float32.
  """
  variant: str = "paper"
  num_classes: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image, *, train: bool = False):
    if self.num_classes != 1:
      raise ValueError(f"PraNet predicts one foreground logit; got num_classes={self.num_classes}")
    cfg = VARIANTS[self.variant]
    models.check_input_size(image.shape, 32, "PraNet", reason="the backbone's stride")
    _, h, w, _ = image.shape
    feats = res2net.res2net_from_variant(cfg["backbone"], dtype=self.dtype, name="backbone")(
        image, train=train)  # stage{k}: (B, H/2^(k+1), W/2^(k+1), C_k)
    rfb = {k: RFB(cfg["channels"], self.dtype, name=f"rfb{k}")(feats[f"stage{k}"], train=train)
           for k in (2, 3, 4)}  # (B, H/2^(k+1), W/2^(k+1), channels)
    lateral5 = PartialDecoder(cfg["channels"], self.dtype, name="decoder")(
        rfb[4], rfb[3], rfb[2], train=train)  # (B, H/8, W/8, 1)
    maps = [lateral5]
    for k, (width, kernel, hidden, out_kernel) in zip((4, 3, 2), cfg["reverse_attention"]):
      maps.append(ReverseAttention(width, kernel, hidden, out_kernel, self.dtype, name=f"ra{k}")(
          maps[-1], feats[f"stage{k}"], train=train))  # (B, H/2^(k+1), W/2^(k+1), 1)
    logits = resize(maps[-1].astype(jnp.float32), h, w)  # (B, H, W, 1)
    aux = {"side_outputs": tuple(m.astype(jnp.float32) for m in maps[:-1]),
           **{f"stage{k}": feats[f"stage{k}"] for k in (2, 3, 4)}}
    return logits, aux


def pretrained_mapping(model_config) -> dict[str, str]:
  """`config.model_init` is a converted Res2Net (e.g. `timm:res2net50_26w_4s`): it fills the backbone."""
  del model_config  # every variant keeps the backbone under the same name
  return {"backbone": ""}
