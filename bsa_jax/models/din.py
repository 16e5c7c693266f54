"""DIN: the Dual Interaction Network (Jeong et al., "Dual Interaction Network with Cross-Image
Attention for Medical Image Segmentation", Pattern Recognit. Lett. 197 (2025) 332–338), in Linen.

The authors released figures, no code (JJeong-Gari/DIN); this follows their main figure as read in
docs/DECISIONS.md#d8 and D7:

- Two encoders with separate weights, one for the image and one for its enhanced copy (CLAHE by
  default, computed in the data pipeline: `bsa_jax/data/enhance.py`), each a 4-stage pyramid at strides
  4, 8, 16, 32. Backbone from config: our ResNeXt (`resnext.py`, timm-convertible) or Swin.
- Feature merging per stage and image (fig. c): f̃ = Conv-BN-ReLU(concat(f_low, f_high)), f_high
  being the stage's output and f_low the stage's input (the feature entering the stage: ResNeXt's
  max-pooled stem or Swin's patch embedding for the first stage, the previous stage's output after
  it), 2×2 average-pooled to the stage's resolution. The figure only shows a red arrow leaving the
  front of each stage and a blue one leaving its back.
- A DIFM per scale (fig. b): two cross-image attention branches, I←E (queries from the image's f̃,
  keys/values from the enhanced image's) and E←I (mirrored). Each branch: multi-head attention with
  Q/K/V and output projections and 1/√d scaling, residual with the query, an FFN, then global
  spatial attention GSA(f) = f·σ(mean_c f) (fig. d, parameter-free). The DIFM output is the sum of
  the two branches. Pre-norm LayerNorms are our addition (the figure draws none); the FFN has no
  residual by default, as drawn (`difm_ffn_residual`).
- Global attention at stride 4 of a 256² input is 4096 tokens (a 4096² matrix per head and image).
  `difm_kv_pool` says, per scale, how much the keys/values are average-pooled before the attention
  (1 = full attention; p = a p×p pool, PVT's spatial reduction without weights). Attention stays
  global (every query sees the whole image). Default (4, 2, 1, 1): at 256² every scale attends to at
  most 256 key positions (4096→256, 1024→256, 256, 64).
- One decoder for the four DIFM outputs: BSA-Net's U-Net decoder with multi-scale fusion
  (`decoder.py`), a stride-4 head upsampled to the input, and one deep-supervision head per level.
  (MERIT, which DIN says it builds on, sums four heads at inference; here the fused head is the
  prediction and the side heads are supervised.)

Variants (parameters with 4 classes; `python -m bsa_jax.models.summary --config=configs/acdc.py`):

  base    64,533,908  ResNeXt-50 32×4d encoders (timm `resnext50_32x4d`, 22.98 M each)
  swin_t  71,015,944  Swin-T encoders (timm `swin_tiny_patch4_window7_224`, 27.52 M each)
  small    1,013,556  a narrow ResNeXt from scratch, for CPU runs (configs/acdc.py:small)
  tiny        54,980  every module at a fraction of the cost, for tests

Contract (the trainer relies on it):

  model = Model(variant='base', num_classes=4, **overrides)   # overrides: any field below
  logits, aux = model.apply(variables, image=..., image_enhanced=..., train=train,
                            rngs={'dropout': ...},            # Swin stochastic depth (training)
                            mutable=['batch_stats'] if train else False)

- `image`, `image_enhanced`: (B, H, W, 3) float, normalised alike; the trainer passes every batch
  key starting with 'image', so the data config must set `enhance` (`config.data.enhance='clahe'`).
  `model.init(rng, image, train=False)` alone works (the enhanced input only matters for shapes).
- `logits`: (B, H, W, num_classes) float32 at the input resolution.
- `aux['side_outputs']`: float32 logits (B, H/s, W/s, K), s = 32, 16, 8, 4 (deepest first).
- Named intermediates, k = 0..3 at stride 4·2^k: 'merge_{k}/original', 'merge_{k}/enhanced' (f̃),
  'difm_{k}/i_from_e', 'difm_{k}/e_from_i' (each branch after GSA), 'difm_{k}/i_from_e/gsa' and
  'difm_{k}/e_from_i/gsa' (the (B, h, w, 1) spatial maps), 'difm_{k}/out' (the sum), and
  'decoder/fused' (stride 4), 'coarse_logits' (B, H/4, W/4, K).

`pretrained_mapping(config.model)` loads one converted ImageNet checkpoint into both encoders.
"""

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from bsa_jax import models
from bsa_jax.models import decoder
from bsa_jax.models import resnext
from bsa_jax.models import swin
from bsa_jax.models.attention import ConvBNReLU

BACKBONES = ("resnext", "swin")

# Variant -> hyper-parameters; every key is also a `Model` field that overrides it.
_BASE = dict(
    backbone="resnext",
    encoder_depths=(3, 4, 6, 3),  # blocks per stage (ResNeXt or Swin)
    encoder_planes=(64, 128, 256, 512),  # ResNeXt: stage k outputs 4·planes channels
    stem_width=64,
    cardinality=32,
    base_width=4,
    swin_embed_dim=96,  # Swin: stage k has embed_dim·2^k channels
    swin_heads=(3, 6, 12, 24),
    swin_window=7,
    drop_path=0.1,  # Swin stochastic depth (the last block's rate)
    merge_widths=(64, 128, 256, 512),  # f̃ channels per scale = DIFM width
    merge_kernel=1,
    difm_heads=(1, 2, 4, 8),  # head dim 64 everywhere
    difm_kv_pool=(4, 2, 1, 1),
    difm_mlp_ratio=4.0,
    difm_ffn_residual=False,
    decoder_widths=(64, 128, 256, 512),
    fused_width=64,
)

VARIANTS = {
    "base": _BASE,
    "swin_t": dict(_BASE, backbone="swin", encoder_depths=(2, 2, 6, 2), swin_embed_dim=96,
                   swin_heads=(3, 6, 12, 24), swin_window=7),
    "small": dict(
        _BASE,
        encoder_depths=(1, 1, 2, 1),
        encoder_planes=(8, 16, 32, 64),  # -> 32, 64, 128, 256 channels
        stem_width=16,
        cardinality=4,
        base_width=32,
        merge_widths=(16, 32, 64, 96),
        difm_heads=(1, 1, 2, 2),
        difm_mlp_ratio=2.0,
        decoder_widths=(16, 32, 64, 96),
        fused_width=16,
    ),
    "tiny": dict(
        _BASE,
        encoder_depths=(1, 1, 1, 1),
        encoder_planes=(4, 8, 8, 16),  # -> 16, 32, 32, 64 channels
        stem_width=8,
        cardinality=2,
        base_width=32,
        swin_embed_dim=8,
        swin_heads=(1, 1, 2, 2),
        swin_window=4,
        merge_widths=(8, 8, 16, 16),
        difm_heads=(1, 1, 2, 2),
        difm_kv_pool=(2, 1, 1, 1),
        difm_mlp_ratio=2.0,
        decoder_widths=(8, 8, 16, 16),
        fused_width=8,
    ),
}

NUM_SCALES = 4


def resolve_hparams(variant: str, **overrides) -> dict[str, Any]:
  """The variant's hyper-parameters with every non-None override applied; rejects unknown names."""
  hparams = models.decode_variant(VARIANTS, variant, overrides, "DIN")
  if hparams["backbone"] not in BACKBONES:
    raise ValueError(f"backbone={hparams['backbone']!r}; choose from {BACKBONES}.")
  for key in ("encoder_depths", "merge_widths", "difm_heads", "difm_kv_pool", "decoder_widths"):
    if len(hparams[key]) != NUM_SCALES:
      raise ValueError(f"{key}={hparams[key]} needs one entry per scale ({NUM_SCALES}).")
  for width, heads in zip(hparams["merge_widths"], hparams["difm_heads"]):
    if width % heads:
      raise ValueError(f"merge width {width} is not divisible by its {heads} DIFM heads.")
  return hparams


def pretrained_mapping(model_config) -> dict[str, str]:
  """Both encoders start from the same converted ImageNet backbone (`--config.model_init`).

  The converted checkpoint must be the variant's backbone: timm `resnext50_32x4d` for 'base',
  `swin_tiny_patch4_window7_224` for 'swin_t' (`python -m bsa_jax.models.convert`).
  """
  del model_config  # every variant's encoders are complete timm-shaped backbones
  return {"encoder_original": "", "encoder_enhanced": ""}


def avg_pool_to_half(x: jax.Array) -> jax.Array:
  """2×2 average pool, stride 2: (B, h, w, C) -> (B, ceil(h/2), ceil(w/2), C).

  An odd map's last row/column is averaged on its own, so the size is the one every stride-2 stage
  of both backbones produces.
  """
  _, h, w, _ = x.shape
  return nn.avg_pool(x, (2, 2), strides=(2, 2), padding=((0, h % 2), (0, w % 2)),
                     count_include_pad=False)


class SwinPyramid(nn.Module):
  """Swin backbone returning each stage's input and output.

  Module names are `swin.SwinTransformer`'s, so converted timm checkpoints load unchanged; the final
  LayerNorm is applied to the last stage's output.
  """
  embed_dim: int
  depths: Sequence[int]
  num_heads: Sequence[int]
  window_size: int
  drop_path_rate: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array, *, train: bool):
    """(B, H, W, 3) -> ([stage inputs], [stage outputs]), output k (B, H/4/2^k, W/4/2^k, D·2^k)."""
    x = swin.PatchEmbed(self.embed_dim, dtype=self.dtype, name="patch_embed")(
        image.astype(self.dtype))
    rates = swin.drop_path_rates(self.drop_path_rate, self.depths)
    inputs, outputs = [], []
    for s, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
      inputs.append(x)
      x = swin.SwinStage(self.embed_dim * 2**s, depth, heads, self.window_size, downsample=s > 0,
                         drop_path=tuple(rates[s]), dtype=self.dtype, name=f"layers_{s}")(
                             x, train=train)
      outputs.append(x)
    outputs[-1] = swin.LayerNorm(dtype=self.dtype, name="norm")(x)
    return inputs, outputs


def encoder_pyramid(hp: dict, dtype: Any, name: str, image: jax.Array, *, train: bool):
  """Runs one encoder: ([stage inputs], [stage outputs]), four each, outputs at stride 4·2^k."""
  if hp["backbone"] == "swin":
    return SwinPyramid(hp["swin_embed_dim"], tuple(hp["encoder_depths"]), tuple(hp["swin_heads"]),
                       hp["swin_window"], hp["drop_path"], dtype=dtype, name=name)(
                           image, train=train)
  net = resnext.ResNet(block="bottleneck", layers=tuple(hp["encoder_depths"]),
                       widths=tuple(hp["encoder_planes"]), stem_width=hp["stem_width"],
                       cardinality=hp["cardinality"], base_width=hp["base_width"], dtype=dtype,
                       name=name)
  features = net(image, train=train)
  # The first stage's input is the max-pooled stem (recomputed: ResNet returns the stem before it).
  pooled_stem = resnext.pool_stem(features["stem"])
  outputs = [features[f"stage{k}"] for k in range(1, NUM_SCALES + 1)]
  return [pooled_stem] + outputs[:-1], outputs


class FeatureMerge(nn.Module):
  """Fig. c: f̃ = Conv-BN-ReLU(concat(f_low, f_high)), f_low pooled to f_high's size if larger."""
  features: int
  kernel_size: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, f_low: jax.Array, f_high: jax.Array, *, train: bool) -> jax.Array:
    """f_low (B, h or 2h, w or 2w, C_l), f_high (B, h, w, C_h) -> (B, h, w, features)."""
    if f_low.shape[1:3] != f_high.shape[1:3]:
      f_low = avg_pool_to_half(f_low)
    x = jnp.concatenate([f_low.astype(f_high.dtype), f_high], axis=-1)
    conv = ConvBNReLU(self.features, self.kernel_size, dtype=self.dtype, name="conv")
    return conv(x, train=train)


def global_spatial_attention(f: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Fig. d: f·σ(mean over channels of f); returns (output, the (B, h, w, 1) map σ(·))."""
  gate = jax.nn.sigmoid(jnp.mean(f.astype(jnp.float32), axis=-1, keepdims=True))
  return f * gate.astype(f.dtype), gate


class CrossImageBranch(nn.Module):
  """One DIFM direction: the query image's features attend to the other image's, globally.

  x = q + Wo·MHA(Wq·LN(q), Wk·P(LN(c)), Wv·P(LN(c))) with 1/√d scaling and P a p×p average pool of
  the context (p = `kv_pool`; 1 = every position); y = FFN(LN(x)) (+ x if `ffn_residual`);
  out = GSA(y).

  Attributes:
    num_heads: attention heads (the width must be divisible by them).
    kv_pool: key/value average-pool factor.
    mlp_ratio: FFN hidden width / width.
    ffn_residual: add the FFN's input to its output (not drawn in the paper's figure).
    dtype: compute dtype.
  """
  num_heads: int
  kv_pool: int = 1
  mlp_ratio: float = 4.0
  ffn_residual: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, query: jax.Array, context: jax.Array) -> tuple[jax.Array, jax.Array]:
    """query, context: (B, h, w, C) -> ((B, h, w, C) output, (B, h, w, 1) GSA map)."""
    b, h, w, c = query.shape
    head_dim = c // self.num_heads
    dense = lambda features, name: nn.Dense(features, dtype=self.dtype, name=name)
    q = swin.LayerNorm(dtype=self.dtype, name="norm_q")(query)
    kv = swin.LayerNorm(dtype=self.dtype, name="norm_kv")(context)
    if self.kv_pool > 1:
      p = self.kv_pool
      kv = nn.avg_pool(kv, (p, p), strides=(p, p), padding=((0, -h % p), (0, -w % p)),
                       count_include_pad=False)  # (B, ceil(h/p), ceil(w/p), C)
    q = dense(c, "q")(q).reshape(b, h * w, self.num_heads, head_dim)  # (B, N, heads, d)
    k = dense(c, "k")(kv).reshape(b, -1, self.num_heads, head_dim)  # (B, M, heads, d)
    v = dense(c, "v")(kv).reshape(b, -1, self.num_heads, head_dim)
    attended = jax.nn.dot_product_attention(q, k, v)  # softmax(q·kᵀ/√d)·v, (B, N, heads, d)
    x = query + dense(c, "out")(attended.reshape(b, h, w, c))  # residual with the query
    y = swin.LayerNorm(dtype=self.dtype, name="norm_ffn")(x)
    y = swin.gelu_mlp(y, int(c * self.mlp_ratio), dtype=self.dtype)
    if self.ffn_residual:
      y = x + y
    return global_spatial_attention(y)


class DIFM(nn.Module):
  """Dual interactive fusion module: I←E and E←I cross-image branches, summed (fig. b).

  Attributes: as `CrossImageBranch` (both branches share the settings, not the weights).
  """
  num_heads: int
  kv_pool: int = 1
  mlp_ratio: float = 4.0
  ffn_residual: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, f_original: jax.Array, f_enhanced: jax.Array) -> dict[str, jax.Array]:
    """(B, h, w, C) twice -> {'out', 'i_from_e', 'e_from_i', 'i_from_e/gsa', 'e_from_i/gsa'}."""
    branch = lambda name: CrossImageBranch(self.num_heads, self.kv_pool, self.mlp_ratio,
                                           self.ffn_residual, dtype=self.dtype, name=name)
    i_from_e, i_gate = branch("i_from_e")(f_original, f_enhanced)  # queries from the original
    e_from_i, e_gate = branch("e_from_i")(f_enhanced, f_original)  # queries from the enhanced
    return {"out": i_from_e + e_from_i, "i_from_e": i_from_e, "e_from_i": e_from_i,
            "i_from_e/gsa": i_gate, "e_from_i/gsa": e_gate}


class Model(nn.Module):
  """DIN (see the module docstring for the call contract).

  Attributes:
    variant: key of `VARIANTS`; every other field left at None takes the variant's value.
    num_classes: output logits per pixel.
    dtype: compute dtype (params stay float32; logits are float32).
    backbone: 'resnext' | 'swin' (both encoders alike, separate weights).
    encoder_depths: blocks per stage.
    encoder_planes, stem_width, cardinality, base_width: the ResNeXt (see `resnext.ResNet`).
    swin_embed_dim, swin_heads, swin_window, drop_path: the Swin (see `swin.SwinTransformer`).
    merge_widths, merge_kernel: feature-merging conv per scale (its width is the DIFM width).
    difm_heads, difm_kv_pool: attention heads and key/value pooling per scale.
    difm_mlp_ratio, difm_ffn_residual: the branches' FFN.
    decoder_widths, fused_width: the decoder (see `decoder.Decoder`).
  """
  variant: str = "base"
  num_classes: int = 4
  dtype: Any = jnp.float32
  backbone: str | None = None
  encoder_depths: Sequence[int] | None = None
  encoder_planes: Sequence[int] | None = None
  stem_width: int | None = None
  cardinality: int | None = None
  base_width: int | None = None
  swin_embed_dim: int | None = None
  swin_heads: Sequence[int] | None = None
  swin_window: int | None = None
  drop_path: float | None = None
  merge_widths: Sequence[int] | None = None
  merge_kernel: int | None = None
  difm_heads: Sequence[int] | None = None
  difm_kv_pool: Sequence[int] | None = None
  difm_mlp_ratio: float | None = None
  difm_ffn_residual: bool | None = None
  decoder_widths: Sequence[int] | None = None
  fused_width: int | None = None

  def hparams(self) -> dict[str, Any]:
    """The resolved hyper-parameters (variant table + overrides)."""
    return resolve_hparams(self.variant, **models.field_overrides(self, VARIANTS))

  @nn.compact
  def __call__(self, image: jax.Array, image_enhanced: jax.Array | None = None, *,
               train: bool = False):
    hp = self.hparams()
    dtype = self.dtype
    if image_enhanced is None:
      if not self.is_initializing():
        raise ValueError("DIN needs `image_enhanced` (B, H, W, 3): set --config.data.enhance "
                         "(e.g. 'clahe') so the data pipeline adds it to every batch.")
      image_enhanced = image  # shapes are all that initialisation needs
    if image_enhanced.shape != image.shape:
      raise ValueError(f"image {image.shape} and image_enhanced {image_enhanced.shape} differ.")
    _, height, width, _ = image.shape
    aux = {}

    # ------------------------------------------------------------------ two encoders + merging
    merged = {}
    for which, x in (("original", image), ("enhanced", image_enhanced)):
      lows, highs = encoder_pyramid(hp, dtype, f"encoder_{which}", x, train=train)
      merged[which] = []
      for k in range(NUM_SCALES):
        f = FeatureMerge(hp["merge_widths"][k], hp["merge_kernel"], dtype=dtype,
                         name=f"merge_{which}_{k}")(lows[k], highs[k], train=train)
        aux[f"merge_{k}/{which}"] = f  # (B, H/4/2^k, W/4/2^k, merge_widths[k])
        merged[which].append(f)

    # ------------------------------------------------------------------ DIFM per scale
    skips = []
    for k in range(NUM_SCALES):
      fused = DIFM(hp["difm_heads"][k], hp["difm_kv_pool"][k], hp["difm_mlp_ratio"],
                   hp["difm_ffn_residual"], dtype=dtype, name=f"difm_{k}")(
                       merged["original"][k], merged["enhanced"][k])
      aux.update({f"difm_{k}/{name}": value for name, value in fused.items()})
      skips.append(fused["out"])

    # ------------------------------------------------------------------ decoder
    aux.update(decoder.decode(skips, hp["decoder_widths"], hp["fused_width"], self.num_classes,
                              train=train, dtype=dtype))
    logits = decoder.resize_to(aux["coarse_logits"], (height, width))
    return logits.astype(jnp.float32), aux  # (B, H, W, num_classes)
