"""UNet++ (Zhou et al., "UNet++: A Nested U-Net Architecture for Medical Image Segmentation", DLMIA 2018).

Node X^{i,j} (level i = 0 finest, j-th node along the skip pathway) is a VGG-style block (two 3×3 conv →
BN → ReLU, the same `DoubleConv` as `unet.py`) over the concatenation of every earlier node on its level
and the 2×2 transposed-conv upsampling of X^{i+1,j-1}:

  X^{i,0} = H(pool(X^{i-1,0})),   X^{i,j} = H([X^{i,0}, ..., X^{i,j-1}, Up(X^{i+1,j-1})]).

As in the paper's code, Up(X^{i+1,j-1}) has the width of level i. Deep supervision: a 1×1 conv head on
each of X^{0,1..depth}. The main logits are the last head (X^{0,depth}, the paper's full-depth "fast
mode"); the shallower heads are `aux['side_outputs']`, so the trainer's main + Σ side losses is the
paper's training objective (the sum over all heads). `aux['heads']` holds all heads, finest first, for
the paper's "accurate mode" (their mean) and for pruning at inference.
"""

from typing import Any, Sequence

import jax.numpy as jnp
from flax import linen as nn

from bsa_jax import models
from bsa_jax.models.unet import DoubleConv

# Variant -> widths of levels 0..4. 'classic' is the paper's (32, 64, 128, 256, 512).
VARIANTS = {
    "classic": (32, 64, 128, 256, 512),
    "tiny": (8, 16, 32, 64),
}


class Model(nn.Module):
  """UNet++ with deep supervision.

  Attributes:
    variant: key of `VARIANTS` (widths per level), unless `widths` is given.
    num_classes: output channels (1 = binary logits).
    widths: explicit widths per level (its length - 1 = depth = number of heads), overriding the
      variant.
    dtype: compute dtype; params stay float32.
  """
  variant: str = "classic"
  num_classes: int = 1
  widths: Sequence[int] | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image, *, train: bool = False):
    widths = tuple(self.widths or VARIANTS[self.variant])
    depth = len(widths) - 1
    if depth < 1:
      raise ValueError(f"UNet++ needs at least two levels, got widths={widths}")
    models.check_input_size(image.shape, 2**depth, f"UNet++ with {depth} poolings")
    # nodes[i][j] = X^{i,j}: (B, h/2^i, w/2^i, widths[i]).
    nodes = [[] for _ in widths]
    x = image.astype(self.dtype)
    for i, feats in enumerate(widths):  # the backbone column X^{i,0}
      if i:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      x = DoubleConv(feats, self.dtype, name=f"x{i}_0")(x, train=train)
      nodes[i].append(x)
    # Column j needs column j-1 one level deeper, so fill the pyramid column by column.
    for j in range(1, depth + 1):
      for i in range(depth + 1 - j):
        up = nn.ConvTranspose(widths[i], (2, 2), strides=(2, 2), dtype=self.dtype,
                              name=f"up{i + 1}_{j - 1}")(nodes[i + 1][j - 1])
        x = jnp.concatenate([*nodes[i], up], axis=-1)  # (B, h/2^i, w/2^i, (j + 1) * widths[i])
        nodes[i].append(DoubleConv(widths[i], self.dtype, name=f"x{i}_{j}")(x, train=train))

    heads = tuple(
        nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name=f"head{j}")(nodes[0][j])
        .astype(jnp.float32) for j in range(1, depth + 1))  # depth × (B, H, W, num_classes)
    aux = {"bottleneck": nodes[depth][0], "heads": heads, "side_outputs": heads[:-1]}
    return heads[-1], aux
