"""U-Net (Ronneberger et al., MICCAI 2015), the classic baseline of the BSA-Net paper's tables.

Same-padded 3×3 convolutions with BatchNorm (the now-standard variant, so outputs keep the input size),
2×2 max-pool down, 2×2 transposed-conv up, skip concatenation. `aux['side_outputs']` holds 1×1-conv
logits from the two coarsest decoder levels so the trainer's deep supervision applies unchanged.
"""

from typing import Any, Sequence

import jax.numpy as jnp
from flax import linen as nn

from bsa_jax import models

# Variant -> encoder widths. 'classic' is the paper's 64..1024 (31.0 M params for 1 class).
VARIANTS = {
    "classic": (64, 128, 256, 512, 1024),
    "small": (32, 64, 128, 256, 512),
    "tiny": (8, 16, 32, 64, 128),
}


class DoubleConv(nn.Module):
  """(3×3 conv → BN → ReLU) × 2."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    for i in range(2):
      x = nn.Conv(self.features, (3, 3), padding=1, use_bias=False, dtype=self.dtype,
                  name=f"conv{i + 1}")(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                       dtype=self.dtype, name=f"bn{i + 1}")(x)
      x = nn.relu(x)
    return x


class Model(nn.Module):
  """U-Net.

  Attributes:
    variant: key of `VARIANTS` (encoder widths), unless `widths` is given.
    num_classes: output channels (1 = binary logits).
    widths: explicit encoder widths, overriding the variant.
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
    models.check_input_size(image.shape, 2**depth, f"U-Net with {depth} poolings")
    x = image.astype(self.dtype)
    skips = []
    for i, feats in enumerate(widths[:-1]):
      x = DoubleConv(feats, self.dtype, name=f"down{i}")(x, train=train)  # (B, h/2^i, w/2^i, feats)
      skips.append(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = DoubleConv(widths[-1], self.dtype, name="bottleneck")(x, train=train)

    aux = {"bottleneck": x}
    side_outputs = []
    for i, feats in reversed(list(enumerate(widths[:-1]))):
      x = nn.ConvTranspose(feats, (2, 2), strides=(2, 2), dtype=self.dtype, name=f"up{i}")(x)
      x = jnp.concatenate([skips[i], x], axis=-1)  # (B, h/2^i, w/2^i, 2*feats)
      x = DoubleConv(feats, self.dtype, name=f"dec{i}")(x, train=train)
      if 1 <= i <= 2:
        side = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name=f"side{i}")(x)
        side_outputs.append(side.astype(jnp.float32))
    logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="head")(x)
    aux["side_outputs"] = tuple(side_outputs)
    return logits.astype(jnp.float32), aux  # (B, H, W, num_classes)
