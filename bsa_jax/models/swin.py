"""Swin Transformer v1 (Liu et al., ICCV 2021, arXiv:2103.14030) in Flax Linen, ported from timm 1.x.

Mirrors `timm/models/swin_transformer.py` (timm 1.0.31) so that timm checkpoints load by a mechanical
rename (`bsa_jax.models.convert`) and give the same outputs: exact-erf GELU, LayerNorm eps 1e-5, the
-100 shifted-window mask, timm 1.x padding (bottom/right to a multiple of the window, after the roll,
padded tokens not masked), PatchMerging at the start of stages 1..3, and the window shrinking to the
feature map (shift 0) when the map is no larger than the window. Features are NHWC throughout.

One deliberate difference: the relative-position table always has the configured window's shape
((2w-1)^2, heads). When the window shrinks to a smaller map, the block reads the centre of that table
(the offsets it needs), so parameter shapes never depend on the input size. timm instead builds a
smaller table; the converter embeds such a table in the centre of ours, which is exact.

The relative position index and the attention mask are recomputed here from static shapes (numpy at
trace time); they are buffers in timm and never loaded.
"""

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

# timm's Swin v1 family (ImageNet checkpoints: patch 4, window 7 at 224 or window 12 at 384).
VARIANTS = {
    "tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "small": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    "large": dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
    # Same code path at a fraction of the cost, for tests.
    "test": dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4)),
}

LayerNorm = functools.partial(nn.LayerNorm, epsilon=1e-5)  # torch's eps (Flax's default is 1e-6)


# ---------------------------------------------------------------------------------------------------
# Static geometry: windows, relative positions, shift mask (numpy, evaluated at trace time).
# ---------------------------------------------------------------------------------------------------

def effective_window(hw: tuple[int, int], window_size: int,
                     shift_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """Per-axis (window, shift): window shrinks to the map and shift drops to 0 where map <= window.

  This is timm's `_calc_window_shift` (always_partition=False): a map no larger than the window is a
  single window, where a cyclic shift would change nothing but the mask.
  """
  window = tuple(size if size <= window_size else window_size for size in hw)
  shift = tuple(0 if size <= window_size else shift_size for size in hw)
  return window, shift


def relative_position_index(window: tuple[int, int], table_window: int) -> np.ndarray:
  """(N, N) rows of a ((2t-1)^2, heads) table for every token pair of a `window`, N = wh*ww.

  idx = (yi - yj + t - 1) * (2t - 1) + (xi - xj + t - 1) with t = `table_window`; for window == (t, t)
  this is timm's `get_relative_position_index`, for a smaller window it addresses the table's centre.
  """
  win_h, win_w = window
  if max(window) > table_window:
    raise ValueError(f"window {window} larger than the table's window {table_window}")
  ys, xs = np.meshgrid(np.arange(win_h), np.arange(win_w), indexing="ij")
  ys, xs = ys.reshape(-1), xs.reshape(-1)  # (N,) row-major inside the window
  dy = ys[:, None] - ys[None, :] + table_window - 1  # (N, N)
  dx = xs[:, None] - xs[None, :] + table_window - 1
  return dy * (2 * table_window - 1) + dx


def _region_ids(size: int, window: int, shift: int) -> np.ndarray:
  """(size,) ids of the three slices [0:-w], [-w:-s], [-s:] along one padded axis (one slice if s=0)."""
  ids = np.zeros(size, np.int32)
  if shift:
    ids[size - window:] = 1
    ids[size - shift:] = 2
  return ids


def shifted_window_mask(padded_hw: tuple[int, int], window: tuple[int, int],
                        shift: tuple[int, int]) -> np.ndarray:
  """(nW, N, N) additive mask: -100 between tokens that the cyclic shift brought from different regions.

  Built on the padded map like timm 1.x, so padded tokens share the bottom/right region's id and are
  attended to like real ones (this mirrors timm rather than masking them).
  """
  hp, wp = padded_hw
  (win_h, win_w), (shift_h, shift_w) = window, shift
  labels = (_region_ids(hp, win_h, shift_h)[:, None] * 3
            + _region_ids(wp, win_w, shift_w)[None, :])  # (Hp, Wp)
  labels = labels.reshape(hp // win_h, win_h, wp // win_w, win_w).transpose(0, 2, 1, 3)
  labels = labels.reshape(-1, win_h * win_w)  # (nW, N)
  return np.where(labels[:, :, None] != labels[:, None, :], -100.0, 0.0).astype(np.float32)


def window_partition(x: jax.Array, window: tuple[int, int]) -> jax.Array:
  """(B, H, W, C) -> (B, nW, wh*ww, C), windows row-major over the window grid."""
  b, h, w, c = x.shape
  win_h, win_w = window
  x = x.reshape(b, h // win_h, win_h, w // win_w, win_w, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)  # (B, H/wh, W/ww, wh, ww, C)
  return x.reshape(b, -1, win_h * win_w, c)


def window_reverse(windows: jax.Array, window: tuple[int, int], h: int, w: int) -> jax.Array:
  """(B, nW, wh*ww, C) -> (B, H, W, C); inverse of `window_partition`."""
  b, _, _, c = windows.shape
  win_h, win_w = window
  x = windows.reshape(b, h // win_h, w // win_w, win_h, win_w, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)  # (B, H/wh, wh, W/ww, ww, C)
  return x.reshape(b, h, w, c)


# ---------------------------------------------------------------------------------------------------
# Layers.
# ---------------------------------------------------------------------------------------------------

class DropPath(nn.Module):
  """Stochastic depth: drops the whole residual branch per sample (rng 'dropout'), scaled by 1/keep."""
  rate: float = 0.0

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    if not train or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # one draw per sample
    kept = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
    return jnp.where(kept, x / keep, jnp.zeros_like(x))


def gelu_mlp(x: jax.Array, hidden_dim: int, *, dtype: Any) -> jax.Array:
  """fc1 -> exact (erf) GELU, as torch's nn.GELU default -> fc2 back to x's width.

  A function, so `fc1`/`fc2` are named in the calling module (the transformer MLPs of Swin, LDNet and
  DIN keep their own state-dict names).
  """
  out_dim = x.shape[-1]
  x = nn.gelu(nn.Dense(hidden_dim, dtype=dtype, name="fc1")(x), approximate=False)
  return nn.Dense(out_dim, dtype=dtype, name="fc2")(x)


class Mlp(nn.Module):
  """fc1 -> exact (erf) GELU -> fc2 (`gelu_mlp`)."""
  hidden_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    return gelu_mlp(x, self.hidden_dim, dtype=self.dtype)


class WindowAttention(nn.Module):
  """Multi-head self-attention inside each window, with a learned relative position bias.

  Attributes:
    num_heads: attention heads; head dim = C / num_heads.
    window_size: the window the bias table is sized for; the call may use a smaller window.
    qkv_bias: bias on the fused qkv projection.
    dtype: compute dtype; the softmax runs in float32.
  """
  num_heads: int
  window_size: int = 7
  qkv_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, window: tuple[int, int], mask: np.ndarray | None = None):
    """x: (B, nW, N, C) tokens of `window`-shaped windows (N = wh*ww); mask: (nW, N, N) or None."""
    b, num_windows, n, c = x.shape
    head_dim = c // self.num_heads
    table = self.param("relative_position_bias_table", nn.initializers.truncated_normal(0.02),
                       ((2 * self.window_size - 1) ** 2, self.num_heads))
    qkv = nn.Dense(3 * c, use_bias=self.qkv_bias, dtype=self.dtype, name="qkv")(x)
    qkv = qkv.reshape(b, num_windows, n, 3, self.num_heads, head_dim)  # (B, nW, N, 3, h, d)
    q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]  # (B, nW, N, h, d)
    q = q * head_dim**-0.5

    logits = jnp.einsum("bwqhd,bwkhd->bwhqk", q, k).astype(jnp.float32)  # (B, nW, h, N, N)
    index = relative_position_index(window, self.window_size)  # (N, N)
    bias = table[index.reshape(-1)].reshape(n, n, self.num_heads).transpose(2, 0, 1)  # (h, N, N)
    logits = logits + bias
    if mask is not None:
      logits = logits + mask[:, None]  # (nW, 1, N, N) broadcast over batch and heads
    attn = jax.nn.softmax(logits, axis=-1).astype(self.dtype)

    out = jnp.einsum("bwhqk,bwkhd->bwqhd", attn, v).reshape(b, num_windows, n, c)  # (B, nW, N, C)
    return nn.Dense(c, dtype=self.dtype, name="proj")(out)


class SwinBlock(nn.Module):
  """Swin block: x + W-MSA/SW-MSA(LN(x)), then x + MLP(LN(x)), on an NHWC map of any size.

  Attributes:
    dim: channels C.
    num_heads: attention heads.
    window_size: window side w (shrinks to the map per axis when the map is <= w).
    shift_size: cyclic shift (w // 2 on odd blocks of a stage, 0 on even ones).
    mlp_ratio: MLP hidden width / C.
    qkv_bias: bias on the qkv projection.
    drop_path: stochastic-depth rate of both residual branches.
    dtype: compute dtype; params float32.
  """
  dim: int
  num_heads: int
  window_size: int = 7
  shift_size: int = 0
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  drop_path: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    """x: (B, H, W, C) -> (B, H, W, C)."""
    b, h, w, c = x.shape
    if c != self.dim:
      raise ValueError(f"SwinBlock(dim={self.dim}) got {c} channels")
    x = x.astype(self.dtype)  # the residual stream is in the compute dtype too
    window, shift = effective_window((h, w), self.window_size, self.shift_size)
    has_shift = any(shift)

    y = LayerNorm(dtype=self.dtype, name="norm1")(x)
    if has_shift:
      y = jnp.roll(y, (-shift[0], -shift[1]), axis=(1, 2))
    # timm 1.x pads after the roll, so the padding sits bottom/right of the shifted map.
    pad_h, pad_w = (-h) % window[0], (-w) % window[1]
    y = jnp.pad(y, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))  # (B, Hp, Wp, C)
    hp, wp = h + pad_h, w + pad_w
    mask = shifted_window_mask((hp, wp), window, shift) if has_shift else None

    windows = window_partition(y, window)  # (B, nW, wh*ww, C)
    windows = WindowAttention(self.num_heads, self.window_size, self.qkv_bias, self.dtype,
                              name="attn")(windows, window=window, mask=mask)
    y = window_reverse(windows, window, hp, wp)[:, :h, :w]  # (B, H, W, C)
    if has_shift:
      y = jnp.roll(y, shift, axis=(1, 2))
    x = x + DropPath(self.drop_path)(y, train=train)

    y = LayerNorm(dtype=self.dtype, name="norm2")(x)
    y = Mlp(int(self.dim * self.mlp_ratio), self.dtype, name="mlp")(y)
    return x + DropPath(self.drop_path)(y, train=train)


class PatchEmbed(nn.Module):
  """p x p stride-p conv to `embed_dim`, then LayerNorm: (B, H, W, 3) -> (B, H/p, W/p, D)."""
  embed_dim: int
  patch_size: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    p = self.patch_size
    x = nn.Conv(self.embed_dim, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                name="proj")(x)
    return LayerNorm(dtype=self.dtype, name="norm")(x)


class PatchMerging(nn.Module):
  """2x2 neighbours -> channels (timm 1.x order), LayerNorm(4C), Linear 4C -> out_dim without bias.

  Odd maps are zero-padded bottom/right first, as in timm.
  """
  out_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    """x: (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), out_dim)."""
    b, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    h2, w2 = (h + 1) // 2, (w + 1) // 2
    # (B, H/2, dy, W/2, dx, C) -> (B, H/2, W/2, dx, dy, C): channel blocks (0,0),(1,0),(0,1),(1,1)
    x = x.reshape(b, h2, 2, w2, 2, c).transpose(0, 1, 3, 4, 2, 5).reshape(b, h2, w2, 4 * c)
    x = LayerNorm(dtype=self.dtype, name="norm")(x)
    return nn.Dense(self.out_dim, use_bias=False, dtype=self.dtype, name="reduction")(x)


class SwinStage(nn.Module):
  """Optional PatchMerging (timm 1.x: at the start of the stage), then `depth` alternating blocks.

  Attributes:
    dim: channels of the stage's blocks (the merge maps 4*C_in to it).
    depth: number of blocks; odd-indexed ones are shifted by window // 2.
    num_heads, window_size, mlp_ratio, qkv_bias, dtype: as in `SwinBlock`.
    downsample: whether the stage starts with a PatchMerging.
    drop_path: one rate per block, or one rate for all.
  """
  dim: int
  depth: int
  num_heads: int
  window_size: int = 7
  downsample: bool = False
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  drop_path: float | Sequence[float] = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    """x: (B, H, W, C_in) -> (B, H', W', dim), H' = ceil(H/2) with downsample."""
    if self.downsample:
      x = PatchMerging(self.dim, self.dtype, name="downsample")(x)
    rates = (self.drop_path if isinstance(self.drop_path, Sequence)
             else (self.drop_path,) * self.depth)
    for i in range(self.depth):
      x = SwinBlock(self.dim, self.num_heads, self.window_size,
                    shift_size=0 if i % 2 == 0 else self.window_size // 2,
                    mlp_ratio=self.mlp_ratio, qkv_bias=self.qkv_bias, drop_path=rates[i],
                    dtype=self.dtype, name=f"blocks_{i}")(x, train=train)
    return x


def drop_path_rates(rate: float, depths: Sequence[int]) -> list[list[float]]:
  """timm's schedule: linear 0 -> rate over all blocks, split per stage."""
  flat = np.linspace(0.0, rate, sum(depths)).tolist()
  starts = np.cumsum((0,) + tuple(depths))
  return [flat[s:e] for s, e in zip(starts[:-1], starts[1:])]


class SwinTransformer(nn.Module):
  """Swin v1 backbone without the classifier head (timm `forward_intermediates` semantics).

  Attributes:
    embed_dim: channels of stage 0 (doubled at each later stage).
    depths: blocks per stage.
    num_heads: heads per stage.
    window_size: window side of every stage.
    patch_size: patch-embedding stride.
    mlp_ratio, qkv_bias: as in `SwinBlock`.
    drop_path_rate: largest stochastic-depth rate (timm default 0.1).
    dtype: compute dtype; params float32.
  """
  embed_dim: int = 96
  depths: Sequence[int] = (2, 2, 6, 2)
  num_heads: Sequence[int] = (3, 6, 12, 24)
  window_size: int = 7
  patch_size: int = 4
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  drop_path_rate: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image, *, train: bool = False) -> dict[str, jax.Array]:
    """image: (B, H, W, 3) -> {'stage1'..'stageS': (B, H/4/2^s, W/4/2^s, C_s), 'norm': LN(last stage)}.

    Stage features are the raw stage outputs (as timm's intermediates); 'norm' is the final
    LayerNorm applied to the last stage.
    """
    x = PatchEmbed(self.embed_dim, self.patch_size, self.dtype, name="patch_embed")(
        image.astype(self.dtype))  # (B, H/4, W/4, D)
    rates = drop_path_rates(self.drop_path_rate, self.depths)
    features = {}
    for s, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
      x = SwinStage(self.embed_dim * 2**s, depth, heads, self.window_size, downsample=s > 0,
                    mlp_ratio=self.mlp_ratio, qkv_bias=self.qkv_bias, drop_path=tuple(rates[s]),
                    dtype=self.dtype, name=f"layers_{s}")(x, train=train)
      features[f"stage{s + 1}"] = x
    features["norm"] = LayerNorm(dtype=self.dtype, name="norm")(x)
    return features


def swin_from_variant(variant: str, **overrides) -> SwinTransformer:
  """`SwinTransformer` for a `VARIANTS` key, e.g. swin_from_variant('tiny', window_size=7)."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown Swin variant {variant!r}; choose from {sorted(VARIANTS)}")
  return SwinTransformer(**{**VARIANTS[variant], **overrides})
