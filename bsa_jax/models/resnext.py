"""ResNet / ResNeXt (He et al., CVPR 2016; Xie et al., CVPR 2017) in Flax Linen, ported from timm 1.x.

Mirrors `timm/models/resnet.py` (the plain 7x7-stem 'v1.5' ResNet: stride on the 3x3 conv) so timm
checkpoints load by a mechanical rename (`bsa_jax.models.convert`). Paddings are explicit and equal to
torch's (Flax 'SAME' pads strided convs asymmetrically). Any depth, width and cardinality, including the
narrow scratch-trained ResNeXt the BSA-Net paper's budget points to (docs/DECISIONS.md#r5).
"""

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

# timm model name -> ResNet kwargs.
VARIANTS = {
    "resnet18": dict(block="basic", layers=(2, 2, 2, 2)),
    "resnet34": dict(block="basic", layers=(3, 4, 6, 3)),
    "resnet26": dict(block="bottleneck", layers=(2, 2, 2, 2)),
    "resnet50": dict(block="bottleneck", layers=(3, 4, 6, 3)),
    "resnet101": dict(block="bottleneck", layers=(3, 4, 23, 3)),
    "resnet152": dict(block="bottleneck", layers=(3, 8, 36, 3)),
    "wide_resnet50_2": dict(block="bottleneck", layers=(3, 4, 6, 3), base_width=128),
    "resnext50_32x4d": dict(block="bottleneck", layers=(3, 4, 6, 3), cardinality=32, base_width=4),
    "resnext101_32x4d": dict(block="bottleneck", layers=(3, 4, 23, 3), cardinality=32, base_width=4),
    "resnext101_32x8d": dict(block="bottleneck", layers=(3, 4, 23, 3), cardinality=32, base_width=8),
    "resnext101_64x4d": dict(block="bottleneck", layers=(3, 4, 23, 3), cardinality=64, base_width=4),
    # Same code paths at a fraction of the cost, for tests.
    "test": dict(block="bottleneck", layers=(1, 1, 1, 1), widths=(8, 16, 32, 64), stem_width=16,
                 cardinality=4, base_width=32),
}

# torch's ResNet init (kaiming normal, fan_out), for scratch training.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv(features: int, kernel: int, strides: int = 1, groups: int = 1, *, dtype: Any,
         name: str) -> nn.Module:
  """Bias-free k x k conv with torch's symmetric padding k // 2 (grouped if groups > 1)."""
  pad = kernel // 2
  if groups > 1:
    return GroupedConv(features, kernel, strides, groups, dtype=dtype, name=name)
  return nn.Conv(features, (kernel, kernel), strides=(strides, strides),
                 padding=((pad, pad), (pad, pad)), use_bias=False,
                 kernel_init=_conv_init, dtype=dtype, name=name)


# Grouped-conv implementations. XLA's CPU backend runs `feature_group_count` convolutions, above all
# their gradients, 20-60x slower than the same work as dense convolutions (bench/NOTES.md), so on CPU
# we compute them as one dense conv with a block-diagonal kernel (narrow layers: g x the FLOPs but
# one fast kernel) or as one conv per group (wide layers). GPU/TPU keep the native grouped conv.
GROUPED_CONV_IMPLS = ("auto", "native", "block_diagonal", "per_group")
_BLOCK_DIAGONAL_MAX_CHANNELS = 64  # measured crossover on a 2-core CPU (bench/NOTES.md)


def grouped_conv_impl(impl: str, in_channels: int) -> str:
  """Resolves 'auto' for the backend and width; returns one of native/block_diagonal/per_group."""
  if impl not in GROUPED_CONV_IMPLS:
    raise ValueError(f"grouped conv impl {impl!r}: use one of {', '.join(GROUPED_CONV_IMPLS)}.")
  if impl != "auto":
    return impl
  if jax.default_backend() != "cpu":
    return "native"
  return "block_diagonal" if in_channels <= _BLOCK_DIAGONAL_MAX_CHANNELS else "per_group"


def block_diagonal_kernel(kernel: jax.Array, groups: int) -> jax.Array:
  """(k, k, C/g, O) grouped kernel -> the equivalent dense (k, k, C, O) kernel, zero off the groups."""
  kh, kw, cin_g, out = kernel.shape
  per_group = kernel.reshape(kh, kw, cin_g, groups, out // groups)  # output o = j * O/g + oc
  eye = jnp.eye(groups, dtype=kernel.dtype)
  dense = jnp.einsum("hwcjo,ij->hwicjo", per_group, eye)  # input channel i * C/g + c
  return dense.reshape(kh, kw, groups * cin_g, out)


class GroupedConv(nn.Module):
  """Bias-free grouped k x k conv, torch padding; the same `kernel` parameter as nn.Conv's."""
  features: int
  kernel_size: int
  strides: int = 1
  groups: int = 1
  impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cin, g = x.shape[-1], self.groups
    if cin % g or self.features % g:
      raise ValueError(f"{self.name}: {cin} -> {self.features} channels do not split into {g} groups.")
    k, pad = self.kernel_size, self.kernel_size // 2
    kernel = self.param("kernel", _conv_init, (k, k, cin // g, self.features))  # (k, k, C/g, O)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)

    def run(inputs, w, groups=1):
      return jax.lax.conv_general_dilated(
          inputs, w, (self.strides, self.strides), ((pad, pad), (pad, pad)),
          dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)

    impl = grouped_conv_impl(self.impl, cin)
    if impl == "native":
      return run(x, kernel, g)
    if impl == "block_diagonal":
      return run(x, block_diagonal_kernel(kernel, g))
    xs, ws = jnp.split(x, g, axis=-1), jnp.split(kernel, g, axis=-1)
    return jnp.concatenate([run(xi, wi) for xi, wi in zip(xs, ws)], axis=-1)  # (B, H', W', O)


def batch_norm(train: bool, *, dtype: Any, name: str, zero_init: bool = False) -> nn.BatchNorm:
  """torch BatchNorm2d defaults: momentum 0.1 (Flax 0.9), eps 1e-5; statistics in 'batch_stats'."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones,
                      name=name)


def shortcut(x, features: int, strides: int, *, train: bool, dtype: Any):
  """Identity, or 1x1 stride-s conv + BN when the shape changes (timm `downsample.0/1`).

  A function, not a module, so the layers are named `downsample_conv/bn` in the calling block.
  """
  if strides == 1 and x.shape[-1] == features:
    return x
  x = conv(features, 1, strides, dtype=dtype, name="downsample_conv")(x)
  return batch_norm(train, dtype=dtype, name="downsample_bn")(x)


def plain_stem(image, width: int, *, train: bool, dtype: Any):
  """timm's 7x7/2 stem: `conv1` -> `bn1` -> ReLU, (B, H, W, 3) -> (B, H/2, W/2, width).

  A function, so the layers are named in the calling backbone, as in timm's state dict.
  """
  x = conv(width, 7, 2, dtype=dtype, name="conv1")(image.astype(dtype))
  return nn.relu(batch_norm(train, dtype=dtype, name="bn1")(x))


def pool_stem(stem: jax.Array) -> jax.Array:
  """The 3x3/2 max-pool between the stem and the first stage (pads with -inf, as torch)."""
  return nn.max_pool(stem, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def stem_and_stages(stem: jax.Array, layers: Sequence[int], widths: Sequence[int], make_block, *,
                    train: bool) -> dict[str, jax.Array]:
  """{'stem': stem, 'stage{k}': ...}: the pooled stem through the stages of a timm ResNet.

  Stage k has layers[k-1] blocks `make_block(planes, strides, name='layer{k}_{i}')` with
  planes = widths[k-1]; the first block of every stage but the first has stride 2, so stage k runs
  at stride 2^(k+1). The blocks are named in the calling backbone (timm's `layer<k>.<i>`).
  """
  features = {"stem": stem}
  x = pool_stem(stem)
  for k, (depth, planes) in enumerate(zip(layers, widths), start=1):
    for i in range(depth):
      x = make_block(planes, 2 if k > 1 and i == 0 else 1, name=f"layer{k}_{i}")(x, train=train)
    features[f"stage{k}"] = x  # (B, H/2^(k+1), W/2^(k+1), planes * expansion)
  return features


class BasicBlock(nn.Module):
  """ResNet-18/34 block: 3x3 (stride) -> BN -> ReLU -> 3x3 -> BN, + shortcut, ReLU. Expansion 1.

  Attributes:
    features: output channels (timm `planes`).
    strides: stride of the first 3x3 conv and of the shortcut.
    zero_init_last: start bn2's scale at 0 (timm's default for scratch training; off by default here
      so that every parameter gets a gradient at step 0).
    dtype: compute dtype; params float32.
  """
  features: int
  strides: int = 1
  zero_init_last: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    """x: (B, H, W, C_in) -> (B, H/s, W/s, features)."""
    y = conv(self.features, 3, self.strides, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(batch_norm(train, dtype=self.dtype, name="bn1")(y))
    y = conv(self.features, 3, dtype=self.dtype, name="conv2")(y)
    y = batch_norm(train, dtype=self.dtype, name="bn2", zero_init=self.zero_init_last)(y)
    return nn.relu(y + shortcut(x, self.features, self.strides, train=train, dtype=self.dtype))


class Bottleneck(nn.Module):
  """ResNet/ResNeXt v1.5 bottleneck: 1x1 -> 3x3 grouped (stride here) -> 1x1 (x4), ReLU after the add.

  Attributes:
    features: timm `planes`; the block outputs 4 * features channels.
    strides: stride of the 3x3 conv and of the shortcut.
    cardinality: groups of the 3x3 conv.
    base_width: inner width = floor(features * base_width / 64) * cardinality (64 and 1: ResNet).
    zero_init_last: start bn3's scale at 0 (see `BasicBlock`).
    dtype: compute dtype; params float32.
  """
  features: int
  strides: int = 1
  cardinality: int = 1
  base_width: int = 64
  zero_init_last: bool = False
  dtype: Any = jnp.float32

  expansion = 4

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    """x: (B, H, W, C_in) -> (B, H/s, W/s, 4 * features)."""
    width = self.features * self.base_width // 64 * self.cardinality
    y = conv(width, 1, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(batch_norm(train, dtype=self.dtype, name="bn1")(y))
    y = conv(width, 3, self.strides, self.cardinality, dtype=self.dtype, name="conv2")(y)
    y = nn.relu(batch_norm(train, dtype=self.dtype, name="bn2")(y))  # (B, H/s, W/s, width)
    y = conv(self.features * self.expansion, 1, dtype=self.dtype, name="conv3")(y)
    y = batch_norm(train, dtype=self.dtype, name="bn3", zero_init=self.zero_init_last)(y)
    residual = shortcut(x, self.features * self.expansion, self.strides, train=train,
                        dtype=self.dtype)
    return nn.relu(y + residual)


class ResNet(nn.Module):
  """ResNet/ResNeXt backbone without the classifier: 7x7/2 stem, 3x3/2 max-pool, four stages.

  Attributes:
    block: 'basic' (ResNet-18/34) or 'bottleneck'.
    layers: blocks per stage.
    widths: `planes` per stage (timm `channels`); bottleneck stages output 4x this.
    stem_width: channels of the stem conv (timm fixes 64 for its 7x7 stem).
    cardinality, base_width: ResNeXt grouping (bottleneck only).
    zero_init_last: see `Bottleneck`.
    dtype: compute dtype; params float32.
  """
  block: str = "bottleneck"
  layers: Sequence[int] = (3, 4, 6, 3)
  widths: Sequence[int] = (64, 128, 256, 512)
  stem_width: int = 64
  cardinality: int = 1
  base_width: int = 64
  zero_init_last: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image, *, train: bool = False) -> dict[str, jax.Array]:
    """image: (B, H, W, 3) -> {'stem': (B, H/2, W/2, stem_width), 'stage{k}': (B, H/2^(k+1), ...)}."""
    if self.block == "basic":
      if self.cardinality != 1 or self.base_width != 64:
        raise ValueError("BasicBlock supports only cardinality 1 and base_width 64")
      make_block = functools.partial(BasicBlock, zero_init_last=self.zero_init_last,
                                     dtype=self.dtype)
    elif self.block == "bottleneck":
      make_block = functools.partial(Bottleneck, cardinality=self.cardinality,
                                     base_width=self.base_width,
                                     zero_init_last=self.zero_init_last, dtype=self.dtype)
    else:
      raise ValueError(f"block must be 'basic' or 'bottleneck', got {self.block!r}")
    stem = plain_stem(image, self.stem_width, train=train, dtype=self.dtype)  # (B, H/2, W/2, stem)
    return stem_and_stages(stem, self.layers, self.widths, make_block, train=train)


def resnet_from_variant(variant: str, **overrides) -> ResNet:
  """`ResNet` for a `VARIANTS` key (timm names, e.g. 'resnext50_32x4d'), with field overrides."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown ResNet variant {variant!r}; choose from {sorted(VARIANTS)}")
  return ResNet(**{**VARIANTS[variant], **overrides})
