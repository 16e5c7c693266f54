"""The two bilateral spatial attention modules of BSA-Net (Sun et al., "Medical Image Segmentation with
Bilateral Spatial Attention and Transfer Learning", section 3), our reading in docs/DECISIONS.md#d3:

- ISAM (image space attention): six Swin Transformer blocks (regular / shifted windows alternating)
  → 3×3 Conv-BN-ReLU → residual with the module input: f = Conv(STB⁶(f₀)) + f₀.
- FSAM (feature space attention): c = Conv(f); g = DConv(c) (dilation 2); α = σ(FC(GAP g) + FC(GMP g))
  with one FC stack shared by both pools (C → C/r → C); out = α·f + c.

In FSAM the paper writes `Conv(f_i)` both inside α and in the final residual; we read that as the same
tensor (one convolution block, computed once).
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from bsa_jax.models.swin import SwinBlock


class ConvBNReLU(nn.Module):
  """The paper's "convolution module": k×k convolution (same padding) → BatchNorm → ReLU.

  Attributes:
    features: output channels.
    kernel_size: square kernel size.
    strides: spatial stride.
    dilation: kernel dilation (2 for FSAM's DConv); padding grows with it so the size is kept.
    dtype: compute dtype.
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  dilation: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    pad = self.dilation * (self.kernel_size // 2)
    x = nn.Conv(self.features, (self.kernel_size, self.kernel_size), strides=self.strides,
                padding=((pad, pad), (pad, pad)), kernel_dilation=self.dilation, use_bias=False,
                dtype=self.dtype, name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                     name="bn")(x)
    return nn.relu(x)


def global_max_pool(x: jax.Array) -> jax.Array:
  """(B, h, w, C) -> (B, 1, 1, C) spatial max whose gradient goes to one argmax position per channel.

  `jnp.max`'s gradient finds the maximum again by float equality with a recomputed input, and XLA
  does not promise bitwise-equal recomputation (at -O0 on CPU no position matched and the gradient
  was 0/0 = NaN). Gathering at the argmax cannot miss; ties go to the first position, as in torch's
  adaptive max pooling.
  """
  b, h, w, c = x.shape
  flat = x.reshape(b, h * w, c)
  index = jnp.argmax(jax.lax.stop_gradient(flat), axis=1, keepdims=True)  # (B, 1, C)
  return jnp.take_along_axis(flat, index, axis=1).reshape(b, 1, 1, c)


class ChannelMLP(nn.Module):
  """FSAM's shared fully connected stack C → C/r → C (ReLU between), applied per pooled vector."""
  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x))
    return nn.Dense(channels, dtype=self.dtype, name="fc2")(x)


class FSAM(nn.Module):
  """Feature space attention module: channel attention α from two receptive fields, α·f + Conv(f).

  Attributes:
    reduction: r of the shared FC stack (C → max(C // r, 1) → C); the paper does not state it, 16 is
      CBAM's.
    dtype: compute dtype.
  """
  reduction: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, f: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
    """(B, h, w, C) -> ((B, h, w, C) output, (B, 1, 1, C) attention α in (0, 1))."""
    channels = f.shape[-1]
    conv = ConvBNReLU(channels, dtype=self.dtype, name="conv")(f, train=train)  # (B, h, w, C)
    g = ConvBNReLU(channels, dilation=2, dtype=self.dtype, name="dconv")(conv, train=train)
    gap = jnp.mean(g.astype(jnp.float32), axis=(1, 2), keepdims=True)  # (B, 1, 1, C)
    gmp = global_max_pool(g.astype(jnp.float32))
    mlp = ChannelMLP(max(channels // self.reduction, 1), dtype=self.dtype, name="mlp")  # shared
    alpha = jax.nn.sigmoid((mlp(gap) + mlp(gmp)).astype(jnp.float32))  # (B, 1, 1, C)
    out = alpha.astype(f.dtype) * f + conv
    return out, alpha


class ISAM(nn.Module):
  """Image space attention module: Swin blocks → 3×3 Conv-BN-ReLU → + input.

  When the encoder width differs from the Swin width (e.g. ImageNet Swin-T blocks of width 384 on a
  narrow encoder), 1×1 projections wrap the Swin stack so the Conv block and the residual stay at the
  encoder width: f = f₀ + Conv(P_out(STB⁶(P_in(f₀)))).

  Attributes:
    dim: Swin width.
    num_heads: attention heads per Swin block.
    depth: number of Swin blocks (6 in the paper); odd-indexed ones use shifted windows.
    window_size: Swin window (7 = the ImageNet checkpoints').
    mlp_ratio: Swin MLP expansion.
    drop_path: the last block's stochastic-depth rate, rising linearly from 0 at the first.
    dtype: compute dtype.
  """
  dim: int
  num_heads: int
  depth: int = 6
  window_size: int = 7
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, f0: jax.Array, *, train: bool) -> jax.Array:
    """(B, h, w, C) -> (B, h, w, C)."""
    channels = f0.shape[-1]
    project = channels != self.dim
    x = nn.Dense(self.dim, dtype=self.dtype, name="proj_in")(f0) if project else f0  # (B, h, w, D)
    for j in range(self.depth):
      rate = self.drop_path * j / max(self.depth - 1, 1)
      x = SwinBlock(dim=self.dim, num_heads=self.num_heads, window_size=self.window_size,
                    shift_size=0 if j % 2 == 0 else self.window_size // 2, mlp_ratio=self.mlp_ratio,
                    drop_path=rate, dtype=self.dtype, name=f"blocks_{j}")(x, train=train)
    if project:
      x = nn.Dense(channels, dtype=self.dtype, name="proj_out")(x)  # (B, h, w, C)
    return f0 + ConvBNReLU(channels, dtype=self.dtype, name="conv")(x, train=train)
