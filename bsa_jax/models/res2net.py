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

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from bsa_jax.models.resnext import batch_norm, conv, plain_stem, shortcut, stem_and_stages

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


EXPANSION = 4  # a bottleneck outputs 4 * planes channels


def starts_stage(x: jax.Array, out_features: int, strides: int) -> bool:
  """Whether a block changes the shape (timm's `is_first`, the official stype='stage').

  Such a block drops the hierarchical sums, pools the last group and has a projection shortcut.
  """
  return strides > 1 or x.shape[-1] != out_features


def multi_scale_branch(x: jax.Array, features: int, strides: int, base_width: int, scale: int, *,
                       train: bool, dtype: Any) -> jax.Array:
  """The residual branch of a Res2Net bottleneck, before the shortcut's sum and the ReLU.

  1×1 `conv1`/`bn1` -> hierarchical 3×3 `convs_<i>`/`bns_<i>` over `scale` groups -> 1×1
  `conv3`/`bn3`: (B, H, W, C_in) -> (B, H/s, W/s, 4 * features). A function, so the layers are
  named in the calling block (both Res2Net families share the state-dict names). Group width =
  floor(features * base_width / 64).
  """
  width = features * base_width // 64
  out_features = features * EXPANSION
  stage_first = starts_stage(x, out_features, strides)
  y = conv(width * scale, 1, dtype=dtype, name="conv1")(x)
  y = nn.relu(batch_norm(train, dtype=dtype, name="bn1")(y))  # (B, H, W, width * scale)
  splits = jnp.split(y, scale, axis=-1)  # scale × (B, H, W, width)
  outs = []
  for i in range(max(1, scale - 1)):
    group = splits[i] if i == 0 or stage_first else outs[-1] + splits[i]
    group = conv(width, 3, strides, dtype=dtype, name=f"convs_{i}")(group)
    outs.append(nn.relu(batch_norm(train, dtype=dtype, name=f"bns_{i}")(group)))
  if scale > 1:
    last = splits[-1]
    if stage_first:  # torch AvgPool2d(3, stride, padding=1) counts the zero padding
      last = nn.avg_pool(last, (3, 3), strides=(strides,) * 2, padding=((1, 1), (1, 1)),
                         count_include_pad=True)
    outs.append(last)
  y = jnp.concatenate(outs, axis=-1)  # (B, H/s, W/s, width * scale)
  y = conv(out_features, 1, dtype=dtype, name="conv3")(y)
  return batch_norm(train, dtype=dtype, name="bn3")(y)


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

  expansion = EXPANSION

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    """x: (B, H, W, C_in) -> (B, H/s, W/s, 4 * features)."""
    y = multi_scale_branch(x, self.features, self.strides, self.base_width, self.scale,
                           train=train, dtype=self.dtype)
    return nn.relu(y + shortcut(x, self.features * self.expansion, self.strides, train=train,
                                dtype=self.dtype))


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
    stem = plain_stem(image, self.stem_width, train=train, dtype=self.dtype)  # (B, H/2, W/2, stem)
    make_block = functools.partial(Bottle2neck, base_width=self.base_width, scale=self.scale,
                                   dtype=self.dtype)
    return stem_and_stages(stem, self.layers, self.widths, make_block, train=train)


def res2net_from_variant(variant: str, **overrides) -> Res2Net:
  """`Res2Net` for a `VARIANTS` key (timm names, e.g. 'res2net50_26w_4s'), with field overrides."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown Res2Net variant {variant!r}; choose from {sorted(VARIANTS)}")
  return Res2Net(**{**VARIANTS[variant], **overrides})
