"""SANet (Wei et al., "Shallow Attention Network for Polyp Segmentation", MICCAI 2021).

Restated from the paper and its official code (weijun88/SANet `src/`: the model, its Res2Net, `train.py`
and `test.py`, read in public copies of that repository):

- Backbone: Res2Net-50 v1b 26w×4s (`res2net_v1b.py`: deep 3×3 stem, average-pool shortcuts; the
  official `res2net50_v1b_26w_4s-3cf99910.pth`, or timm's identical `res2net50d`, loads through
  `convert/res2net_v1b.py`). Variant `timm` swaps in timm's plain-stem `res2net50_26w_4s`
  (0.019 M fewer parameters) so the stock `bsa_jax.models.convert` weights load too.
- Shallow attention module (SAM): stages 2, 3, 4 (strides 8, 16, 32) are each reduced to 64 channels
  by a 1×1 conv (with bias) + BN + ReLU, the two deeper maps are upsampled bilinearly
  (align_corners=True) to stride 8, and the deeper maps gate the shallower ones multiplicatively:
  [f5, f4·f5, f3·f4·f5] (192 channels) -> 1×1 conv -> one logit map at 1/8. Stage 1 is unused.
- Probability correction strategy (PCS), inference only: per image, positive logits are divided by
  the fraction of positive pixels and negative logits by the fraction of negative ones (official
  `test.py`, after upsampling to the image size), which re-balances the foreground the training
  imbalance suppresses. On by default here in eval mode (`train=False`), as the official test does it;
  `probability_correction=False` turns it off. We apply it at the network resolution (the official
  at each image's original size: the same fractions up to interpolation).
- Colour exchange, training only: each training image takes the per-channel mean and std (in 8-bit
  CIE Lab) of another training image. It is data augmentation, not part of `Model`:
  `bsa_jax/data/color.py`, switched on by `--config.data.augment.color_exchange=<probability>`.
- Loss (official `train.py`): BCE + Dice on the single map, upsampled to the mask (`loss`).
- Input 352×352 (official `train.py`/`test.py`; training also picks 256-352 at random per batch).

The head's convs start from kaiming-normal (fan_in) weights and zero biases, as the official
`weight_init`. Parameters (1 class): 23,899,497 — equal to the official network built in PyTorch from
the code above (backbone 23,669,352 + SAM head 230,145); the official model registers no classifier.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from bsa_jax import models
from bsa_jax.models import bilinear
from bsa_jax.models import res2net_v1b
from bsa_jax.models.resnext import batch_norm

# Variant -> backbone (a `res2net_v1b.backbone_from_variant` name) and the SAM's width.
VARIANTS = {
    "paper": dict(backbone="res2net50_v1b_26w_4s", channels=64),
    "timm": dict(backbone="res2net50_26w_4s", channels=64),
    "tiny": dict(backbone="v1b_test", channels=8),
}
INPUT_SIZE = 352  # the official train/test resolution

_head_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # torch kaiming_normal_(fan_in)


class ConvBNReLU(nn.Module):
  """SANet's `linear{3,4,5}`: 1×1 conv (with bias) -> BN -> ReLU."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = nn.Conv(self.features, (1, 1), kernel_init=_head_init, dtype=self.dtype, name="conv")(x)
    return nn.relu(batch_norm(train, dtype=self.dtype, name="bn")(x))


class ShallowAttentionHead(nn.Module):
  """SAM + prediction: stage 2, 3, 4 features -> (logits at stride 8, fused 3·channels features)."""
  channels: int = 64
  num_classes: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x3, x4, x5, *, train: bool):
    """x3: (B, 4h, 4w, C3), x4: (B, 2h, 2w, C4), x5: (B, h, w, C5) -> (B, 4h, 4w, num_classes)."""
    c = self.channels
    f5 = ConvBNReLU(c, self.dtype, name="linear5")(x5, train=train)  # (B, h, w, c)
    f4 = ConvBNReLU(c, self.dtype, name="linear4")(x4, train=train)  # (B, 2h, 2w, c)
    f3 = ConvBNReLU(c, self.dtype, name="linear3")(x3, train=train)  # (B, 4h, 4w, c)
    _, height, width, _ = f3.shape
    f5 = bilinear.resize(f5, height, width, align_corners=True)  # (B, 4h, 4w, c)
    f4 = bilinear.resize(f4, height, width, align_corners=True)
    fused = jnp.concatenate([f5, f4 * f5, f3 * f4 * f5], axis=-1)  # (B, 4h, 4w, 3c)
    logits = nn.Conv(self.num_classes, (1, 1), kernel_init=_head_init, dtype=self.dtype,
                     name="predict")(fused)
    return logits, fused


def probability_correction(logits: jax.Array) -> jax.Array:
  """SANet's PCS on (B, H, W, C) logits, per map: x / P(x > 0) where x > 0, x / P(x < 0) where x < 0.

  P is the fraction of the map's pixels (per image and class; the official test has one class). A map
  with no positive (negative) pixel keeps those logits: the official in-place division selects none.
  """
  positive, negative = logits > 0, logits < 0
  frac_pos = positive.mean(axis=(1, 2), keepdims=True)  # (B, 1, 1, C)
  frac_neg = negative.mean(axis=(1, 2), keepdims=True)
  # Where a fraction is 0 its branch is never selected; 1 keeps that division finite.
  scaled_pos = logits / jnp.where(frac_pos > 0, frac_pos, 1.0)
  scaled_neg = logits / jnp.where(frac_neg > 0, frac_neg, 1.0)
  return jnp.where(positive, scaled_pos, jnp.where(negative, scaled_neg, logits))


class Model(nn.Module):
  """SANet.

  Attributes:
    variant: key of `VARIANTS`.
    num_classes: foreground maps (the paper's is 1).
    probability_correction: apply PCS to the eval-mode logits (on, as in the official test).
    dtype: compute dtype; params stay float32.
  """
  variant: str = "paper"
  num_classes: int = 1
  probability_correction: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image, *, train: bool = False):
    """image (B, H, W, 3) -> logits (B, H, W, num_classes), aux {'side_outputs': (), 'coarse', ...}."""
    cfg = VARIANTS[self.variant]
    models.check_input_size(image.shape, 32, "SANet", reason="the backbone's stride",
                            paper_size=352)
    _, h, w, _ = image.shape
    feats = res2net_v1b.backbone_from_variant(cfg["backbone"], dtype=self.dtype, name="backbone")(
        image, train=train)  # stage{k}: (B, H/2^(k+1), W/2^(k+1), C_k)
    coarse, fused = ShallowAttentionHead(cfg["channels"], self.num_classes, self.dtype, name="sam")(
        feats["stage2"], feats["stage3"], feats["stage4"], train=train)  # (B, H/8, W/8, classes)
    coarse = coarse.astype(jnp.float32)
    logits = bilinear.resize(coarse, h, w, align_corners=True)  # (B, H, W, classes)
    if not train and self.probability_correction:
      logits = probability_correction(logits)
    aux = {"side_outputs": (), "coarse": coarse, "sam": fused,
           **{f"stage{k}": feats[f"stage{k}"] for k in (2, 3, 4)}}
    return logits, aux


def pretrained_mapping(model_config) -> dict[str, str]:
  """`config.model_init` is a converted Res2Net for the variant's backbone: it fills `backbone`.

  `paper`: `python -m bsa_jax.models.convert.res2net_v1b` output (official v1b or timm `res2net50d`);
  `timm`: `python -m bsa_jax.models.convert --timm-model res2net50_26w_4s` output.
  """
  del model_config  # every variant keeps the backbone under the same name
  return {"backbone": ""}


# ---------------------------------------------------------------- loss (official train.py)

def bce_dice(logits: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """SANet's `bce_dice`: (mean BCE over pixels, 1 − mean_b 2·Σpm / (Σp + Σm + 1)), float32.

  Args:
    logits: (B, H, W, C).
    mask: (B, H, W, C) in [0, 1].
  """
  logits = logits.astype(jnp.float32)
  bce = optax.sigmoid_binary_cross_entropy(logits, mask).mean()
  prob = jax.nn.sigmoid(logits)
  inter = (prob * mask).sum(axis=(1, 2, 3))  # (B,)
  union = prob.sum(axis=(1, 2, 3)) + mask.sum(axis=(1, 2, 3))
  dice = 1.0 - (2.0 * inter / (union + 1.0)).mean()
  return bce, dice


def loss(logits: jax.Array, aux: dict, mask: jax.Array,
         train_config=None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The trainer's loss contract (`segmentation_loss`): (BCE + Dice, named parts).

  `logits` (B, H, W, 1) are resized to the mask (align_corners=True, as the official training) when
  the sizes differ. `aux` and `train_config` are unused: SANet has no side outputs.
  """
  del aux, train_config
  _, height, width, _ = mask.shape
  bce, dice = bce_dice(bilinear.resize(logits, height, width, align_corners=True), mask)
  return bce + dice, {"loss_main": bce + dice, "loss_bce": bce, "loss_dice": dice}
