"""Res2Net (Gao et al., "Res2Net: A New Multi-scale Backbone Architecture", TPAMI 2021) in Flax Linen.

Mirrors timm 1.x `timm/models/res2net.py` (`Bottle2neck` inside timm's plain-stem `ResNet`): the
`res2net50_26w_4s` layout, so its checkpoints load by the mechanical rules of
`bsa_jax.models.convert` (`convs.<i>` -> `convs_<i>`, `bns.<i>` -> `bns_<i>`). Stem, BatchNorm,
paddings and the shortcut are shared with `resnext.py`, which mirrors the same timm `ResNet`.

A Res2Net bottleneck splits the 1×1-reduced features into `scale` groups of `width` channels and runs
a hierarchy of 3×3 convs over them: y_1 = K_1(x_1), y_i = K_i(x_i + y_{i-1}); the last group passes
through unchanged (or, in the first block of a stage, through a 3×3 average pool with the block's
stride). The first block of a stage ("stage-first") also feeds every group its own split only, with no
hierarchical sum — timm's `is_first`.
"""

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from bsa_jax.models.resnext import batch_norm, conv, shortcut

# timm model name -> Res2Net kwargs.
VARIANTS = {
    "res2net50_26w_4s": dict(layers=(3, 4, 6, 3), base_width=26, scale=4),
    "res2net50_26w_6s": dict(layers=(3, 4, 6, 3), base_width=26, scale=6),
    "res2net50_26w_8s": dict(layers=(3, 4, 6, 3), base_width=26, scale=8),
    "res2net50_48w_2s": dict(layers=(3, 4, 6, 3), base_width=48, scale=2),
    "res2net50_14w_8s": dict(layers=(3, 4, 6, 3), base_width=14, scale=8),
    "res2net101_26w_4s": dict(layers=(3, 4, 23, 3), base_width=26, scale=4),
    # Same code paths at a fraction of the cost, for tests (width per group: 16 * 32 // 64 = 8).
    "test": dict(layers=(1, 2, 1, 1), widths=(16, 16, 32, 32), stem_width=16, base_width=32,
                 scale=4),
}


class Bottle2neck(nn.Module):
  """Res2Net bottleneck: 1×1 -> hierarchical 3×3 over `scale` groups -> 1×1 (×4), + shortcut, ReLU.

  Attributes:
    features: timm `planes`; the block outputs 4 * features channels.
    strides: stride of every 3×3 group conv, of the last group's average pool and of the shortcut.
    base_width: group width = floor(features * base_width / 64).
    scale: number of groups (timm `scale`); `scale - 1` of them get a 3×3 conv.
    dtype: compute dtype; params float32.
  """
  features: int
  strides: int = 1
  base_width: int = 26
  scale: int = 4
  dtype: Any = jnp.float32

  expansion = 4

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    """x: (B, H, W, C_in) -> (B, H/s, W/s, 4 * features)."""
    width = self.features * self.base_width // 64
    out_features = self.features * self.expansion
    # timm: a block that changes the shape also drops the hierarchical sums and pools the last group.
    stage_first = self.strides > 1 or x.shape[-1] != out_features
    y = conv(width * self.scale, 1, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(batch_norm(train, dtype=self.dtype, name="bn1")(y))  # (B, H, W, width * scale)
    splits = jnp.split(y, self.scale, axis=-1)  # scale × (B, H, W, width)
    outs = []
    for i in range(max(1, self.scale - 1)):
      group = splits[i] if i == 0 or stage_first else outs[-1] + splits[i]
      group = conv(width, 3, self.strides, dtype=self.dtype, name=f"convs_{i}")(group)
      outs.append(nn.relu(batch_norm(train, dtype=self.dtype, name=f"bns_{i}")(group)))
    if self.scale > 1:
      last = splits[-1]
      if stage_first:  # torch AvgPool2d(3, stride, padding=1) counts the zero padding
        last = nn.avg_pool(last, (3, 3), strides=(self.strides,) * 2, padding=((1, 1), (1, 1)),
                           count_include_pad=True)
      outs.append(last)
    y = jnp.concatenate(outs, axis=-1)  # (B, H/s, W/s, width * scale)
    y = conv(out_features, 1, dtype=self.dtype, name="conv3")(y)
    y = batch_norm(train, dtype=self.dtype, name="bn3")(y)
    return nn.relu(y + shortcut(x, out_features, self.strides, train=train, dtype=self.dtype))


class Res2Net(nn.Module):
  """Res2Net backbone without the classifier: 7×7/2 stem, 3×3/2 max-pool, four Bottle2neck stages.

  Attributes:
    layers: blocks per stage.
    widths: `planes` per stage; stages output 4× this.
    stem_width: channels of the stem conv.
    base_width, scale: see `Bottle2neck`.
    dtype: compute dtype; params float32.
  """
  layers: Sequence[int] = (3, 4, 6, 3)
  widths: Sequence[int] = (64, 128, 256, 512)
  stem_width: int = 64
  base_width: int = 26
  scale: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image, *, train: bool = False) -> dict[str, jax.Array]:
    """image: (B, H, W, 3) -> {'stem': (B, H/2, W/2, stem_width), 'stage{k}': (B, H/2^(k+1), ...)}."""
    x = conv(self.stem_width, 7, 2, dtype=self.dtype, name="conv1")(image.astype(self.dtype))
    x = nn.relu(batch_norm(train, dtype=self.dtype, name="bn1")(x))  # (B, H/2, W/2, stem)
    features = {"stem": x}
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # pads with -inf, as torch
    for k, (depth, planes) in enumerate(zip(self.layers, self.widths), start=1):
      for i in range(depth):
        strides = 2 if k > 1 and i == 0 else 1
        x = Bottle2neck(planes, strides, self.base_width, self.scale, dtype=self.dtype,
                        name=f"layer{k}_{i}")(x, train=train)
      features[f"stage{k}"] = x  # (B, H/2^(k+1), W/2^(k+1), 4 * planes)
    return features


def res2net_from_variant(variant: str, **overrides) -> Res2Net:
  """`Res2Net` for a `VARIANTS` key (timm names, e.g. 'res2net50_26w_4s'), with field overrides."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown Res2Net variant {variant!r}; choose from {sorted(VARIANTS)}")
  return Res2Net(**{**VARIANTS[variant], **overrides})
