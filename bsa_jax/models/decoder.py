"""BSA-Net's U-shaped decoder: top-down fusion of encoder skips, multi-scale fusion of every decoder
level into one stride-4 map, coarse logits for the Attention Rendering Module and deep-supervision heads.

The paper says only that the network is "an encoder-decoder U-shaped structure" that "integrates
multi-scale features"; this is the plainest decoder with both: U-Net skips (upsample, concatenate,
Conv-BN-ReLU), then every level's output resized to the finest level and fused (as in UPerNet / FPN
fusion) before the coarse prediction.
"""

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from bsa_jax.models.attention import ConvBNReLU


def resize_to(x: jax.Array, hw: tuple[int, int]) -> jax.Array:
  """Bilinear resize (half-pixel centres) of (B, h, w, C) to (B, *hw, C); a no-op at the same size."""
  if x.shape[1:3] == tuple(hw):
    return x
  return jax.image.resize(x, (x.shape[0], *hw, x.shape[-1]), "bilinear")


class UpBlock(nn.Module):
  """One decoder level: upsample the deeper map to the skip's size, concatenate, two 3×3 convs."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, deeper: jax.Array, skip: jax.Array, *, train: bool) -> jax.Array:
    x = jnp.concatenate([resize_to(deeper, skip.shape[1:3]).astype(skip.dtype), skip], axis=-1)
    x = ConvBNReLU(self.features, dtype=self.dtype, name="conv1")(x, train=train)
    return ConvBNReLU(self.features, dtype=self.dtype, name="conv2")(x, train=train)


class Decoder(nn.Module):
  """Top-down decoder with multi-scale fusion and side-output heads.

  Attributes:
    widths: decoder width per encoder level, shallowest (the finest skip) first; the deepest level's
      width is a 3×3 "center" convolution on the deepest encoder map.
    fused_width: width of the fused map that feeds the coarse head and the ARM.
    num_classes: K.
    dtype: compute dtype.
  """
  widths: Sequence[int]
  fused_width: int
  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, skips: Sequence[jax.Array], *, train: bool):
    """Decodes encoder maps `skips` (shallowest first; the last, deepest one starts the decoder).

    Returns:
      fused: (B, h_0, w_0, fused_width) at the finest skip's resolution.
      coarse_logits: (B, h_0, w_0, K) float32.
      side_outputs: tuple of (B, h_i, w_i, K) float32 logits, one per decoder level, deepest first.
      levels: the decoder maps, deepest first.
    """
    if len(skips) != len(self.widths):
      raise ValueError(f"Decoder with {len(self.widths)} levels needs as many encoder maps, "
                       f"got {len(skips)}.")
    x = ConvBNReLU(self.widths[-1], dtype=self.dtype, name="center")(skips[-1], train=train)
    levels = [x]  # deepest first
    for i in reversed(range(len(self.widths) - 1)):
      x = UpBlock(self.widths[i], dtype=self.dtype, name=f"up{i}")(x, skips[i], train=train)
      levels.append(x)
    side_outputs = tuple(
        nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name=f"side{j}")(level).astype(jnp.float32)
        for j, level in enumerate(levels))
    finest_hw = skips[0].shape[1:3]
    fused = jnp.concatenate([resize_to(level, finest_hw) for level in levels], axis=-1)
    fused = ConvBNReLU(self.fused_width, dtype=self.dtype, name="fuse")(fused, train=train)
    coarse_logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="coarse_head")(fused)
    return fused, coarse_logits.astype(jnp.float32), side_outputs, tuple(levels)


def decode(skips: Sequence[jax.Array], widths: Sequence[int], fused_width: int, num_classes: int, *,
           train: bool, dtype: Any) -> dict[str, Any]:
  """Runs a `Decoder` named 'decoder' in the calling model on `skips`; returns its outputs under the
  model contract's names: {'decoder/fused', 'coarse_logits', 'side_outputs'}."""
  fused, coarse_logits, side_outputs, _ = Decoder(tuple(widths), fused_width, num_classes,
                                                  dtype=dtype, name="decoder")(skips, train=train)
  return {"decoder/fused": fused, "coarse_logits": coarse_logits, "side_outputs": side_outputs}
