"""BSA-Net: the bilateral spatial attention segmentation network (Sun et al., "Medical Image
Segmentation with Bilateral Spatial Attention and Transfer Learning", section 3), in Flax Linen.

U-shaped: a narrow ResNeXt-bottleneck encoder trained from scratch; at one encoder level the bilateral
spatial attention pair ISAM → FSAM (`attention.py`), whose ISAM Swin blocks start from ImageNet Swin-T
weights; a decoder with U-Net skips, multi-scale fusion and deep-supervision heads (`decoder.py`);
and the Attention Rendering Module on the coarse stride-4 logits (`rendering.py`).

Parameter budget (docs/DECISIONS.md#d2, R6): the paper's total is 6.36 M, but six ImageNet Swin
blocks at Swin-T's six-block-stage width (384) alone hold 10.66 M. The 'paper' variant therefore runs
ISAM at width 192 / 6 heads / window 7, initialised from Swin-T stage-1 blocks (`layers_1`, two blocks
repeated three times), at the stride-8 level where those blocks were pretrained, with a narrow
encoder so that the total is within ±3 % of 6.36 M. 'swin_t_stage3' runs ISAM with Swin-T's six
stage-3 blocks (`layers_2`, width 384, stride 16) behind 1×1 projections; 'tiny' has every module at
a fraction of the cost, for tests. Parameters (one class; `python -m bsa_jax.models.summary`):

  paper          6,369,367  (+0.15 % of 6.36 M; ISAM 3.01 M, of which Swin blocks 2.68 M)
  swin_t_stage3 16,378,083  (ISAM 11.83 M, of which Swin blocks 10.66 M)
  tiny             156,967

Contract (the trainer relies on it):

  model = Model(variant='paper', num_classes=1, **overrides)   # overrides: any field below
  logits, aux = model.apply(variables, image, train=train,
                            rngs={'dropout': ..., 'points': ...},      # both used in training only
                            mutable=['batch_stats'] if train else False)

- `image` (B, H, W, 3) float; `logits` (B, H, W, num_classes) float32 at the input resolution. In
  training with the PointRend ARM they are the coarse logits upsampled bilinearly (PointRend's dense
  training target); at inference they are the adaptive-subdivision output.
- `aux['side_outputs']`: tuple of float32 deep-supervision logits (B, H/s, W/s, num_classes), one per
  decoder level, deepest first (strides 32, 16, 8, 4 for four encoder stages); the trainer upsamples.
- `aux['arm']` (training with arm='pointrend' only): {'coords': (B, N, 2) (y, x) in [0, 1], the centres
  of output pixels; 'logits': (B, N, num_classes) float32 point logits}. The GT for a point is the
  mask at `coords` with nearest interpolation. The random points use `make_rng('points')`.
- Named intermediates: 'encoder/stem' (stride 2), 'encoder/stage{i}' (stride 2^(i+2)), 'isam/out',
  'fsam/alpha' (B, 1, 1, C), 'fsam/out', 'decoder/fused' (stride 4), 'coarse_logits' (B, H/4, W/4, K).

`swin_init_mapping(variant)` names which converted Swin-T blocks initialise which ISAM blocks.
"""

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from bsa_jax import models
from bsa_jax.models import decoder
from bsa_jax.models import rendering
from bsa_jax.models.attention import FSAM, ISAM, ConvBNReLU
from bsa_jax.models.resnext import Bottleneck

# Variant -> hyper-parameters; every key is also a `Model` field that overrides it.
# Encoder stage i runs at stride 2^(i+2) and outputs 4·encoder_planes[i] channels (ResNeXt expansion).
_PAPER = dict(
    stem_width=32,
    encoder_planes=(16, 48, 80, 192),  # -> 64, 192, 320, 768 channels
    encoder_depths=(2, 3, 4, 2),
    cardinality=8,
    base_width=8,
    isam_stage=1,  # stride 8: Swin-T stage 1's own resolution; 192 channels, so no projections
    isam_dim=192,
    isam_heads=6,
    isam_depth=6,
    isam_window=7,
    isam_drop_path=0.1,
    isam_init_stage=1,  # Swin-T `layers_1` (2 blocks, width 192), repeated to six
    isam_init_blocks=2,
    fsam_reduction=16,
    decoder_widths=(32, 64, 64, 96),
    fused_width=64,
    arm="pointrend",
    arm_train_points=2048,
    arm_oversample=3,
    arm_importance=0.75,
    arm_subdivision_points=8192,
    arm_subdivision_steps=2,
    arm_fc_dim=256,
    arm_num_fc=3,
)

VARIANTS = {
    "paper": _PAPER,
    "swin_t_stage3": dict(
        _PAPER,
        isam_stage=2,  # stride 16, Swin-T stage 3's resolution; 320 encoder channels <-> 384
        isam_dim=384,
        isam_heads=12,
        isam_init_stage=2,  # Swin-T `layers_2`: its six blocks, one to one
        isam_init_blocks=6,
    ),
    "tiny": dict(
        _PAPER,
        stem_width=8,
        encoder_planes=(4, 8, 16, 32),  # -> 16, 32, 64, 128 channels
        encoder_depths=(1, 1, 1, 1),
        cardinality=4,
        base_width=16,
        isam_dim=32,
        isam_heads=2,
        isam_depth=2,
        isam_window=4,
        isam_init_stage=-1,
        fsam_reduction=4,
        decoder_widths=(8, 16, 16, 32),
        fused_width=16,
        arm_train_points=64,
        arm_subdivision_points=256,
        arm_fc_dim=32,
    ),
}

ARM_MODES = ("pointrend", "dense", "none")


def resolve_hparams(variant: str, **overrides) -> dict[str, Any]:
  """The variant's hyper-parameters with every non-None override applied; rejects unknown names."""
  hparams = models.decode_variant(VARIANTS, variant, overrides, "BSA-Net")
  if hparams["arm"] not in ARM_MODES:
    raise ValueError(f"arm={hparams['arm']!r}; choose from {ARM_MODES}.")
  num_stages = len(hparams["encoder_planes"])
  if not (len(hparams["encoder_depths"]) == len(hparams["decoder_widths"]) == num_stages):
    raise ValueError("encoder_planes, encoder_depths and decoder_widths need one entry per stage.")
  if not 0 <= hparams["isam_stage"] < num_stages:
    raise ValueError(f"isam_stage={hparams['isam_stage']} outside the {num_stages} encoder stages.")
  return hparams


def swin_init_mapping(variant: str, **overrides) -> dict[str, str]:
  """Which converted Swin-T blocks initialise which ISAM blocks: {target prefix: source prefix}.

  Paths are '/'-joined inside the 'params' collection: targets in this model's tree
  ('isam/blocks_{j}'), sources in the converted timm Swin tree ('layers_{s}/blocks_{i}', see
  `swin.SwinTransformer`). ISAM block j takes source block j mod (blocks in the stage), so shifted
  blocks always come from shifted ones. An empty dict means ISAM starts from scratch. The source
  checkpoint's window must equal `isam_window` (7 for timm's *_window7_224 checkpoints); otherwise the
  relative-position tables need resizing in the converter.
  """
  hparams = resolve_hparams(variant, **overrides)
  stage, blocks = hparams["isam_init_stage"], hparams["isam_init_blocks"]
  if stage < 0:
    return {}
  if blocks % 2 and hparams["isam_depth"] > blocks:
    raise ValueError("Repeating an odd number of source blocks would pair shifted and regular blocks.")
  return {f"isam/blocks_{j}": f"layers_{stage}/blocks_{j % blocks}"
          for j in range(hparams["isam_depth"])}


def pretrained_mapping(model_config) -> dict[str, str]:
  """`swin_init_mapping` for a `config.model` dict (the trainer's `--config.model_init` hook).

  Raises when the model has nothing to initialise, so a `--config.model_init` is never silently ignored.
  """
  kwargs = dict(model_config)
  kwargs.pop("num_classes", None)
  kwargs.pop("dtype", None)
  variant = kwargs.pop("variant", "paper")
  mapping = swin_init_mapping(variant, **kwargs)
  if not mapping:
    raise ValueError(f"BSA-Net variant {variant!r} has no pretrained ISAM source "
                     "(isam_init_stage=-1); drop --config.model_init or set "
                     "--config.model.isam_init_stage.")
  return mapping


class ResNeXtStage(nn.Module):
  """`depth` ResNeXt bottlenecks; the first one halves the resolution (stride in the 3×3, v1.5)."""
  planes: int
  depth: int
  cardinality: int
  base_width: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    for i in range(self.depth):
      x = Bottleneck(self.planes, strides=2 if i == 0 else 1, cardinality=self.cardinality,
                     base_width=self.base_width, dtype=self.dtype, name=f"block{i}")(x, train=train)
    return x


class Model(nn.Module):
  """BSA-Net (see the module docstring for the call contract).

  Attributes:
    variant: key of `VARIANTS`; every other field left at None takes the variant's value.
    num_classes: output logits per pixel (1 = binary).
    dtype: compute dtype (params stay float32; logits are float32).
    stem_width: channels of the two stride-2 stem convolutions.
    encoder_planes, encoder_depths: ResNeXt stages (output channels 4·planes, stride 2 each).
    cardinality, base_width: ResNeXt groups and width per group (width = planes·base_width/64·groups).
    isam_stage: encoder stage whose output goes through ISAM → FSAM (then on to the next stage and
      the skip).
    isam_dim, isam_heads, isam_depth, isam_window, isam_drop_path: ISAM's Swin blocks.
    isam_init_stage, isam_init_blocks: the Swin-T stage (and its block count) that initialises ISAM,
      -1 for none (read by `swin_init_mapping`, not by the network).
    fsam_reduction: r of FSAM's shared FC layers.
    decoder_widths: decoder width per encoder stage; fused_width: the fused stride-4 map.
    arm: 'pointrend' | 'dense' | 'none' (plain bilinear upsampling of the coarse logits).
    arm_train_points, arm_oversample, arm_importance: PointRend's N, k and β in training.
    arm_subdivision_points, arm_subdivision_steps: PointRend's N and steps at inference.
    arm_fc_dim, arm_num_fc: the point head's MLP.
  """
  variant: str = "paper"
  num_classes: int = 1
  dtype: Any = jnp.float32
  stem_width: int | None = None
  encoder_planes: Sequence[int] | None = None
  encoder_depths: Sequence[int] | None = None
  cardinality: int | None = None
  base_width: int | None = None
  isam_stage: int | None = None
  isam_dim: int | None = None
  isam_heads: int | None = None
  isam_depth: int | None = None
  isam_window: int | None = None
  isam_drop_path: float | None = None
  isam_init_stage: int | None = None
  isam_init_blocks: int | None = None
  fsam_reduction: int | None = None
  decoder_widths: Sequence[int] | None = None
  fused_width: int | None = None
  arm: str | None = None
  arm_train_points: int | None = None
  arm_oversample: int | None = None
  arm_importance: float | None = None
  arm_subdivision_points: int | None = None
  arm_subdivision_steps: int | None = None
  arm_fc_dim: int | None = None
  arm_num_fc: int | None = None

  def hparams(self) -> dict[str, Any]:
    """The resolved hyper-parameters (variant table + overrides)."""
    return resolve_hparams(self.variant, **models.field_overrides(self, VARIANTS))

  @nn.compact
  def __call__(self, image: jax.Array, *, train: bool = False):
    hp = self.hparams()
    dtype = self.dtype
    _, height, width, _ = image.shape
    aux = {}

    # ------------------------------------------------------------------ encoder
    x = image.astype(dtype)
    x = ConvBNReLU(hp["stem_width"], strides=2, dtype=dtype, name="stem1")(x, train=train)
    stem = ConvBNReLU(hp["stem_width"], dtype=dtype, name="stem2")(x, train=train)  # (B, H/2, W/2, C)
    aux["encoder/stem"] = stem
    x = stem
    skips = []
    for i, (planes, depth) in enumerate(zip(hp["encoder_planes"], hp["encoder_depths"])):
      x = ResNeXtStage(planes, depth, hp["cardinality"], hp["base_width"], dtype=dtype,
                       name=f"stage{i}")(x, train=train)  # (B, H/2^(i+2), W/2^(i+2), 4·planes)
      aux[f"encoder/stage{i}"] = x
      if i == hp["isam_stage"]:
        # Bilateral spatial attention: ISAM then FSAM, in series (paper section 3).
        x = ISAM(hp["isam_dim"], hp["isam_heads"], hp["isam_depth"], hp["isam_window"],
                 drop_path=hp["isam_drop_path"], dtype=dtype, name="isam")(x, train=train)
        aux["isam/out"] = x
        x, alpha = FSAM(hp["fsam_reduction"], dtype=dtype, name="fsam")(x, train=train)
        aux["fsam/alpha"] = alpha
        aux["fsam/out"] = x
      skips.append(x)

    # ------------------------------------------------------------------ decoder
    aux.update(decoder.decode(skips, hp["decoder_widths"], hp["fused_width"], self.num_classes,
                              train=train, dtype=dtype))
    fused, coarse_logits = aux["decoder/fused"], aux["coarse_logits"]

    # ------------------------------------------------------------------ attention rendering
    fine_features = (stem, fused)  # stride 2 (edges) and stride 4 (semantics)
    out_hw = (height, width)
    if hp["arm"] == "pointrend":
      arm = rendering.PointRendARM(
          self.num_classes, train_points=hp["arm_train_points"], oversample=hp["arm_oversample"],
          importance=hp["arm_importance"], subdivision_points=hp["arm_subdivision_points"],
          subdivision_steps=hp["arm_subdivision_steps"], fc_dim=hp["arm_fc_dim"],
          num_fc=hp["arm_num_fc"], dtype=dtype, name="arm")
      logits, points = arm(coarse_logits, fine_features, out_hw, train=train)
      if train:
        aux["arm"] = points
    elif hp["arm"] == "dense":
      logits, _ = rendering.DenseEdgeARM(self.num_classes, dtype=dtype, name="arm")(
          coarse_logits, fine_features, out_hw, train=train)
    else:
      logits = decoder.resize_to(coarse_logits, out_hw)
    return logits.astype(jnp.float32), aux  # (B, H, W, num_classes)
