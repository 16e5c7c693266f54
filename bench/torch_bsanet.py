"""BSA-Net in PyTorch: the same network as `bsa_jax.models.bsanet.Model`, for like-for-like benchmarks.

Every hyper-parameter comes from `bsanet.resolve_hparams`, and the Swin geometry (effective window,
relative-position index, shifted-window mask) from the numpy helpers of `bsa_jax.models.swin`, so the
two implementations cannot drift. Modules carry the Flax names ('stage0.block0.conv2',
'isam.blocks_3.attn.qkv', 'arm.point_head.fc1', ...), so `load_flax_variables` is a mechanical copy;
`tests/test_torch_twin.py` checks that the outputs then agree.

Written as a PyTorch user would: NCHW tensors (channels_last-friendly: `model.to(memory_format=
torch.channels_last)`), nn.Conv2d with `groups=` / BatchNorm2d / LayerNorm / Linear,
`F.scaled_dot_product_attention`, `F.grid_sample` for point sampling. Matched details: BatchNorm
momentum 0.1 (Flax 0.9) and eps 1e-5, LayerNorm eps 1e-5, exact-erf GELU, torch paddings (the Flax
model pads explicitly like torch), bilinear resizes with half-pixel centres (`align_corners=False`;
every resize in the network upsamples, where jax.image.resize and F.interpolate agree), and the Flax
initialisers (so scratch training starts from the same distribution).

Call contract (NCHW mirror of the Flax one):

  model = build_model('paper')                    # or 'tiny', 'swin_t_stage3', with overrides
  logits, aux = model(image)                       # image (B, 3, H, W) float32

- `logits` (B, K, H, W) float32: in eval mode the adaptive-subdivision output; in train mode the coarse
  logits upsampled bilinearly (PointRend's dense training target).
- `aux`: 'encoder/stem', 'encoder/stage{i}', 'isam/out', 'fsam/alpha' (B, C, 1, 1), 'fsam/out',
  'decoder/fused', 'coarse_logits' (B, K, H/4, W/4), 'side_outputs' (tuple of (B, K, H/s, W/s), deepest
  first) and, in train mode with arm='pointrend', 'arm': {'coords': (B, N, 2) (y, x) in [0, 1],
  'logits': (B, N, K)}.
- `model(image, point_coords=coords)` uses the given (B, N, 2) training points instead of sampling
  them (to reproduce another run's points; ignored in eval mode).

One known difference, in the training-mode *state update* only: torch's BatchNorm2d updates
running_var with the unbiased batch variance, Flax with the biased one (factor n/(n-1), n = B·H·W per
channel). Training-mode outputs, losses and gradients are unaffected; eval-mode outputs from loaded
statistics are identical.
"""

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bsa_jax.models import bsanet
from bsa_jax.models import swin as swin_geometry

# Flax BatchNorm(momentum=0.9, epsilon=1e-5) == torch BatchNorm2d(momentum=0.1, eps=1e-5).
BN_MOMENTUM = 0.1
BN_EPS = 1e-5
LN_EPS = 1e-5  # swin.LayerNorm (torch's default; Flax's own default would be 1e-6)


# ----------------------------------------------------------------------------------------------------
# Flax's initialisers, so a scratch-trained torch model starts from the same distributions.

def _variance_scaling_(weight: torch.Tensor, scale: float, mode: str, distribution: str) -> None:
  """jax.nn.initializers.variance_scaling on a torch weight (fans as torch computes them; equal)."""
  fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
  std = math.sqrt(scale / (fan_in if mode == "fan_in" else fan_out))
  with torch.no_grad():
    if distribution == "truncated_normal":
      std /= 0.87962566103423978  # std of a unit normal truncated to [-2, 2]
      nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)
    else:
      nn.init.normal_(weight, 0.0, std)


def _lecun_(layer: nn.Module) -> nn.Module:
  """Flax's default Conv/Dense init: lecun_normal kernel, zero bias."""
  _variance_scaling_(layer.weight, 1.0, "fan_in", "truncated_normal")
  if layer.bias is not None:
    nn.init.zeros_(layer.bias)
  return layer


def _kaiming_fan_out_(conv: nn.Conv2d) -> nn.Conv2d:
  """resnext.py's conv init: variance_scaling(2, fan_out, normal) (torch's ResNet init)."""
  _variance_scaling_(conv.weight, 2.0, "fan_out", "normal")
  return conv


# ----------------------------------------------------------------------------------------------------
# Convolutional parts: attention.ConvBNReLU, resnext.Bottleneck.

class ConvBNReLU(nn.Sequential):
  """k×k conv (torch 'same' padding, dilation-aware) → BatchNorm → ReLU: the paper's conv module."""

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
               dilation: int = 1):
    pad = dilation * (kernel_size // 2)
    super().__init__()
    self.conv = _lecun_(nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad, dilation,
                                  bias=False))
    self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
    self.relu = nn.ReLU(inplace=True)


class Bottleneck(nn.Module):
  """ResNeXt v1.5 bottleneck: 1×1 → 3×3 grouped (stride) → 1×1 (×4), + shortcut, ReLU."""

  def __init__(self, in_channels: int, planes: int, stride: int, cardinality: int, base_width: int):
    super().__init__()
    width = planes * base_width // 64 * cardinality
    out_channels = 4 * planes

    def bn(c):
      return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)

    self.conv1 = _kaiming_fan_out_(nn.Conv2d(in_channels, width, 1, bias=False))
    self.bn1 = bn(width)
    self.conv2 = _kaiming_fan_out_(nn.Conv2d(width, width, 3, stride, 1, groups=cardinality,
                                             bias=False))
    self.bn2 = bn(width)
    self.conv3 = _kaiming_fan_out_(nn.Conv2d(width, out_channels, 1, bias=False))
    self.bn3 = bn(out_channels)
    self.has_downsample = stride != 1 or in_channels != out_channels
    if self.has_downsample:
      self.downsample_conv = _kaiming_fan_out_(nn.Conv2d(in_channels, out_channels, 1, stride,
                                                         bias=False))
      self.downsample_bn = bn(out_channels)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """(B, C_in, H, W) -> (B, 4·planes, H/s, W/s)."""
    y = F.relu(self.bn1(self.conv1(x)), inplace=True)
    y = F.relu(self.bn2(self.conv2(y)), inplace=True)
    y = self.bn3(self.conv3(y))
    shortcut = self.downsample_bn(self.downsample_conv(x)) if self.has_downsample else x
    return F.relu(y + shortcut, inplace=True)


class ResNeXtStage(nn.Sequential):
  """`depth` bottlenecks named block{i}; the first halves the resolution."""

  def __init__(self, in_channels: int, planes: int, depth: int, cardinality: int, base_width: int):
    super().__init__()
    for i in range(depth):
      self.add_module(f"block{i}", Bottleneck(in_channels if i == 0 else 4 * planes, planes,
                                              2 if i == 0 else 1, cardinality, base_width))


# ----------------------------------------------------------------------------------------------------
# Swin blocks (swin.SwinBlock), on NHWC token maps.

class DropPath(nn.Module):
  """Stochastic depth: drops the whole branch per sample in training, scaling kept ones by 1/keep."""

  def __init__(self, rate: float):
    super().__init__()
    self.rate = rate

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if not self.training or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    kept = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # one draw per sample
    return x * kept / keep


class Mlp(nn.Module):
  """fc1 → exact (erf) GELU → fc2."""

  def __init__(self, dim: int, hidden: int):
    super().__init__()
    self.fc1 = _lecun_(nn.Linear(dim, hidden))
    self.fc2 = _lecun_(nn.Linear(hidden, dim))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.fc2(F.gelu(self.fc1(x), approximate="none"))


class WindowAttention(nn.Module):
  """Window multi-head self-attention with a learned relative-position bias (table for `window_size`)."""

  def __init__(self, dim: int, num_heads: int, window_size: int):
    super().__init__()
    self.num_heads = num_heads
    self.qkv = _lecun_(nn.Linear(dim, 3 * dim))
    self.proj = _lecun_(nn.Linear(dim, dim))
    self.relative_position_bias_table = nn.Parameter(
        torch.empty((2 * window_size - 1) ** 2, num_heads))
    nn.init.trunc_normal_(self.relative_position_bias_table, 0.0, 0.02, -0.04, 0.04)

  def forward(self, x: torch.Tensor, index: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """x (B·nW, N, C) window tokens; index (N·N,) table rows; mask (nW, N, N) or None."""
    bw, n, c = x.shape
    heads = self.num_heads
    q, k, v = self.qkv(x).reshape(bw, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
    bias = self.relative_position_bias_table[index].view(n, n, heads).permute(2, 0, 1)  # (h, N, N)
    if mask is None:
      attn_mask = bias.unsqueeze(0)  # (1, h, N, N), broadcast over windows
    else:
      nw = mask.shape[0]
      attn_mask = (bias.unsqueeze(0) + mask.unsqueeze(1)).unsqueeze(0)  # (1, nW, h, N, N)
      attn_mask = attn_mask.expand(bw // nw, -1, -1, -1, -1).reshape(bw, heads, n, n)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B·nW, h, N, d)
    return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class SwinBlock(nn.Module):
  """x + (S)W-MSA(LN(x)), then x + MLP(LN(x)), on (B, H, W, C) maps of any size (timm 1.x padding)."""

  def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, drop_path: float,
               mlp_ratio: float = 4.0):
    super().__init__()
    self.window_size, self.shift_size = window_size, shift_size
    self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
    self.attn = WindowAttention(dim, num_heads, window_size)
    self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
    self.mlp = Mlp(dim, int(dim * mlp_ratio))
    self.drop_path = DropPath(drop_path)
    self._geometry: dict[Any, tuple] = {}  # (h, w, device) -> static windows, index and mask

  def geometry(self, h: int, w: int, device: torch.device) -> tuple:
    """Window, shift, padding, table index and shift mask for an h×w map (computed once per size)."""
    key = (h, w, device)
    if key not in self._geometry:
      window, shift = swin_geometry.effective_window((h, w), self.window_size, self.shift_size)
      pad_h, pad_w = (-h) % window[0], (-w) % window[1]
      index = swin_geometry.relative_position_index(window, self.window_size).reshape(-1)
      mask = None
      if any(shift):
        mask = torch.from_numpy(swin_geometry.shifted_window_mask(
            (h + pad_h, w + pad_w), window, shift)).to(device)  # (nW, N, N)
      self._geometry[key] = (window, shift, pad_h, pad_w,
                             torch.from_numpy(index.astype(np.int64)).to(device), mask)
    return self._geometry[key]

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) -> (B, H, W, C)."""
    b, h, w, c = x.shape
    (win_h, win_w), shift, pad_h, pad_w, index, mask = self.geometry(h, w, x.device)
    y = self.norm1(x)
    if any(shift):
      y = torch.roll(y, (-shift[0], -shift[1]), (1, 2))
    y = F.pad(y, (0, 0, 0, pad_w, 0, pad_h))  # timm 1.x: pad after the roll, bottom/right
    hp, wp = h + pad_h, w + pad_w
    windows = y.reshape(b, hp // win_h, win_h, wp // win_w, win_w, c).permute(0, 1, 3, 2, 4, 5)
    windows = self.attn(windows.reshape(-1, win_h * win_w, c), index, mask)  # (B·nW, N, C)
    y = windows.view(b, hp // win_h, wp // win_w, win_h, win_w, c).permute(0, 1, 3, 2, 4, 5)
    y = y.reshape(b, hp, wp, c)[:, :h, :w]  # (B, H, W, C)
    if any(shift):
      y = torch.roll(y, shift, (1, 2))
    x = x + self.drop_path(y)
    return x + self.drop_path(self.mlp(self.norm2(x)))


# ----------------------------------------------------------------------------------------------------
# The bilateral spatial attention pair (attention.ISAM, attention.FSAM).

class ISAM(nn.Module):
  """Swin blocks (1×1 projections when widths differ) → 3×3 Conv-BN-ReLU → + input."""

  def __init__(self, channels: int, dim: int, num_heads: int, depth: int, window_size: int,
               drop_path: float):
    super().__init__()
    self.project = channels != dim
    if self.project:
      self.proj_in = _lecun_(nn.Linear(channels, dim))
    for j in range(depth):
      self.add_module(f"blocks_{j}", SwinBlock(
          dim, num_heads, window_size, 0 if j % 2 == 0 else window_size // 2,
          drop_path * j / max(depth - 1, 1)))
    self.depth = depth
    if self.project:
      self.proj_out = _lecun_(nn.Linear(dim, channels))
    self.conv = ConvBNReLU(channels, channels)

  def forward(self, f0: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, h, w)."""
    x = f0.permute(0, 2, 3, 1).contiguous()  # (B, h, w, C); free under channels_last
    if self.project:
      x = self.proj_in(x)  # (B, h, w, D)
    for j in range(self.depth):
      x = getattr(self, f"blocks_{j}")(x)
    if self.project:
      x = self.proj_out(x)
    return f0 + self.conv(x.permute(0, 3, 1, 2))


class ChannelMLP(nn.Module):
  """FSAM's shared C → C/r → C stack (ReLU between) on pooled (B, C) vectors."""

  def __init__(self, channels: int, hidden: int):
    super().__init__()
    self.fc1 = _lecun_(nn.Linear(channels, hidden))
    self.fc2 = _lecun_(nn.Linear(hidden, channels))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.fc2(F.relu(self.fc1(x)))


class FSAM(nn.Module):
  """Feature space attention: c = Conv(f), g = DConv(c), α = σ(MLP(GAP g) + MLP(GMP g)), out = α·f + c."""

  def __init__(self, channels: int, reduction: int):
    super().__init__()
    self.conv = ConvBNReLU(channels, channels)
    self.dconv = ConvBNReLU(channels, channels, dilation=2)
    self.mlp = ChannelMLP(channels, max(channels // reduction, 1))

  def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, h, w) -> ((B, C, h, w) output, (B, C, 1, 1) attention α)."""
    conv = self.conv(f)
    g = self.dconv(conv)
    alpha = torch.sigmoid(self.mlp(g.mean((2, 3))) + self.mlp(g.amax((2, 3))))  # (B, C)
    alpha = alpha[:, :, None, None]
    return alpha * f + conv, alpha


# ----------------------------------------------------------------------------------------------------
# Decoder (decoder.Decoder).

def resize_to(x: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
  """Bilinear resize with half-pixel centres of (B, C, h, w) to `hw`; a no-op at the same size."""
  if tuple(x.shape[-2:]) == tuple(hw):
    return x
  return F.interpolate(x, size=tuple(hw), mode="bilinear", align_corners=False)


class UpBlock(nn.Module):
  """Upsample the deeper map to the skip's size, concatenate [deeper, skip], two 3×3 conv modules."""

  def __init__(self, deeper_channels: int, skip_channels: int, width: int):
    super().__init__()
    self.conv1 = ConvBNReLU(deeper_channels + skip_channels, width)
    self.conv2 = ConvBNReLU(width, width)

  def forward(self, deeper: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    x = torch.cat([resize_to(deeper, skip.shape[-2:]), skip], dim=1)
    return self.conv2(self.conv1(x))


class Decoder(nn.Module):
  """U-Net levels from the deepest map up, side heads per level, every level fused at the finest size."""

  def __init__(self, skip_channels: Sequence[int], widths: Sequence[int], fused_width: int,
               num_classes: int):
    super().__init__()
    self.num_levels = len(widths)
    self.center = ConvBNReLU(skip_channels[-1], widths[-1])
    for i in reversed(range(self.num_levels - 1)):
      self.add_module(f"up{i}", UpBlock(widths[i + 1], skip_channels[i], widths[i]))
    for j in range(self.num_levels):  # side{j}: level j, deepest first
      self.add_module(f"side{j}", _lecun_(nn.Conv2d(widths[-1 - j], num_classes, 1)))
    self.fuse = ConvBNReLU(sum(widths), fused_width)
    self.coarse_head = _lecun_(nn.Conv2d(fused_width, num_classes, 1))

  def forward(self, skips: Sequence[torch.Tensor]):
    """Encoder maps, shallowest first -> (fused, coarse_logits, side_outputs deepest first)."""
    x = self.center(skips[-1])
    levels = [x]  # deepest first
    for i in reversed(range(self.num_levels - 1)):
      x = getattr(self, f"up{i}")(x, skips[i])
      levels.append(x)
    side_outputs = tuple(getattr(self, f"side{j}")(level) for j, level in enumerate(levels))
    finest_hw = skips[0].shape[-2:]
    fused = self.fuse(torch.cat([resize_to(level, finest_hw) for level in levels], dim=1))
    return fused, self.coarse_head(fused), side_outputs


# ----------------------------------------------------------------------------------------------------
# Attention Rendering Module (rendering.PointRendARM / DenseEdgeARM). Points are (y, x) in [0, 1].

def point_sample(features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
  """Bilinear samples of (B, C, h, w) at (B, N, 2) (y, x) in [0, 1] -> (B, N, C), edge-clamped.

  grid_sample with align_corners=False and border padding is rendering.point_sample exactly: pixel
  coordinate u·n − 0.5, clamped to the outermost centres.
  """
  grid = (coords.flip(-1) * 2.0 - 1.0).unsqueeze(1).to(features.dtype)  # (B, 1, N, 2) (x, y)
  out = F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=False)
  return out.squeeze(2).transpose(1, 2)  # (B, N, C)


def uncertainty(logits: torch.Tensor, dim: int) -> torch.Tensor:
  """PointRend's uncertainty along the class axis `dim`: −|logit| for one logit, else top2 − top1."""
  logits = logits.float()
  if logits.shape[dim] == 1:
    return -logits.abs().squeeze(dim)
  top2 = logits.topk(2, dim=dim).values
  return top2.select(dim, 1) - top2.select(dim, 0)


def flat_index_to_coords(index: torch.Tensor, height: int, width: int) -> torch.Tensor:
  """Centres (..., 2) (y, x) in [0, 1] of the pixels with row-major flat `index` on a height×width grid."""
  y = torch.div(index, width, rounding_mode="floor").float() + 0.5
  x = (index % width).float() + 0.5
  return torch.stack([y / height, x / width], dim=-1)


def sample_training_points(coarse_logits: torch.Tensor, grid_hw: Sequence[int], num_points: int,
                           oversample: int, importance: float,
                           candidate_index: torch.Tensor | None = None,
                           uniform_index: torch.Tensor | None = None) -> torch.Tensor:
  """PointRend training points (B, N, 2): the β·N most uncertain of k·N uniform candidates + (1−β)·N uniform.

  Candidates are output-pixel centres (flat indices drawn uniformly); pass `candidate_index`
  (B, k·N) and `uniform_index` (B, N − β·N) to fix the draws (tests compare with Flax on equal draws).
  """
  b = coarse_logits.shape[0]
  height, width = grid_hw
  num_uncertain = round(importance * num_points)
  device = coarse_logits.device
  if candidate_index is None:
    candidate_index = torch.randint(height * width, (b, oversample * num_points), device=device)
  if uniform_index is None:
    uniform_index = torch.randint(height * width, (b, num_points - num_uncertain), device=device)
  candidates = flat_index_to_coords(candidate_index, height, width)  # (B, kN, 2)
  scores = uncertainty(point_sample(coarse_logits.detach(), candidates), -1)  # (B, kN)
  top = scores.topk(num_uncertain, dim=1).indices  # (B, βN)
  chosen = candidates.gather(1, top.unsqueeze(-1).expand(-1, -1, 2))
  return torch.cat([chosen, flat_index_to_coords(uniform_index, height, width)], dim=1)


class PointHead(nn.Module):
  """FC-ReLU layers over point features with the coarse logit re-concatenated before every layer."""

  def __init__(self, in_features: int, num_classes: int, fc_dim: int, num_fc: int):
    super().__init__()
    self.num_fc = num_fc
    for i in range(num_fc):
      fc = nn.Linear((in_features if i == 0 else fc_dim) + num_classes, fc_dim)
      _variance_scaling_(fc.weight, 2.0, "fan_in", "truncated_normal")  # he_normal
      nn.init.zeros_(fc.bias)
      self.add_module(f"fc{i + 1}", fc)
    self.predictor = nn.Linear(fc_dim + num_classes, num_classes)
    nn.init.normal_(self.predictor.weight, 0.0, 1e-3)  # early point logits ≈ 0 (detectron2)
    nn.init.zeros_(self.predictor.bias)

  def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
    """(B, N, C) fine features, (B, N, K) coarse logits -> (B, N, K) point logits."""
    x = fine
    for i in range(self.num_fc):
      x = F.relu(getattr(self, f"fc{i + 1}")(torch.cat([x, coarse], dim=-1)))
    return self.predictor(torch.cat([x, coarse], dim=-1))


class PointRendARM(nn.Module):
  """PointRend: random/uncertain training points, adaptive ×2 subdivision at inference."""

  def __init__(self, fine_channels: int, num_classes: int, hp: dict[str, Any]):
    super().__init__()
    self.train_points, self.oversample = hp["arm_train_points"], hp["arm_oversample"]
    self.importance = hp["arm_importance"]
    self.subdivision_points, self.subdivision_steps = (hp["arm_subdivision_points"],
                                                       hp["arm_subdivision_steps"])
    self.point_head = PointHead(fine_channels, num_classes, hp["arm_fc_dim"], hp["arm_num_fc"])

  def forward(self, coarse_logits: torch.Tensor, fine_features: Sequence[torch.Tensor],
              out_hw: Sequence[int], point_coords: torch.Tensor | None = None):
    """(B, K, h, w) coarse logits -> ((B, K, H, W) logits, {'coords', 'logits'} in training else {})."""

    def predict_points(coords):  # (B, N, 2) -> (B, N, K)
      fine = torch.cat([point_sample(f, coords) for f in fine_features], dim=-1)
      return self.point_head(fine, point_sample(coarse_logits, coords))

    if self.training:
      coords = point_coords
      if coords is None:
        coords = sample_training_points(coarse_logits, out_hw, self.train_points, self.oversample,
                                        self.importance)
      logits = resize_to(coarse_logits, out_hw)
      return logits, {"coords": coords, "logits": predict_points(coords)}

    logits = coarse_logits
    b, k = logits.shape[:2]
    for _ in range(self.subdivision_steps):
      h, w = logits.shape[-2:]
      height, width = min(2 * h, out_hw[0]), min(2 * w, out_hw[1])
      up = resize_to(logits, (height, width))  # (B, K, H', W')
      n = min(self.subdivision_points, height * width)
      index = uncertainty(up, 1).flatten(1).topk(n, dim=1).indices  # (B, N)
      point_logits = predict_points(flat_index_to_coords(index, height, width))  # (B, N, K)
      logits = up.flatten(2).scatter(2, index.unsqueeze(1).expand(-1, k, -1),
                                     point_logits.transpose(1, 2).to(up.dtype))
      logits = logits.view(b, k, height, width)
    return resize_to(logits, out_hw), {}


class DenseEdgeARM(nn.Module):
  """out = L + Conv(F·w) at the finest feature grid, w = 1 − (p_top1 − p_top2)."""

  def __init__(self, fine_channels: int, num_classes: int, kernel_size: int = 3):
    super().__init__()
    self.refine = _lecun_(nn.Conv2d(fine_channels, num_classes, kernel_size,
                                    padding=kernel_size // 2))

  def forward(self, coarse_logits, fine_features, out_hw, point_coords=None):
    del point_coords
    hw = fine_features[0].shape[-2:]
    fine = torch.cat([resize_to(f, hw) for f in fine_features], dim=1)  # (B, ΣC, h, w)
    coarse = resize_to(coarse_logits.float(), hw)
    if coarse.shape[1] == 1:
      weight = 1.0 - (2.0 * torch.sigmoid(coarse) - 1.0).abs()
    else:
      top2 = coarse.softmax(1).topk(2, dim=1).values
      weight = 1.0 - (top2[:, :1] - top2[:, 1:2])
    return resize_to(coarse + self.refine(fine * weight), out_hw), {}


# ----------------------------------------------------------------------------------------------------
# The network.

class BSANet(nn.Module):
  """BSA-Net (see the module docstring for the call contract); build with `build_model`."""

  def __init__(self, hp: dict[str, Any], num_classes: int = 1):
    super().__init__()
    self.hp = dict(hp)
    self.isam_stage = hp["isam_stage"]
    self.num_stages = len(hp["encoder_planes"])
    self.stem1 = ConvBNReLU(3, hp["stem_width"], stride=2)
    self.stem2 = ConvBNReLU(hp["stem_width"], hp["stem_width"])
    channels, skip_channels = hp["stem_width"], []
    for i, (planes, depth) in enumerate(zip(hp["encoder_planes"], hp["encoder_depths"])):
      self.add_module(f"stage{i}", ResNeXtStage(channels, planes, depth, hp["cardinality"],
                                                hp["base_width"]))
      channels = 4 * planes
      skip_channels.append(channels)
      if i == self.isam_stage:
        self.isam = ISAM(channels, hp["isam_dim"], hp["isam_heads"], hp["isam_depth"],
                         hp["isam_window"], hp["isam_drop_path"])
        self.fsam = FSAM(channels, hp["fsam_reduction"])
    self.decoder = Decoder(skip_channels, hp["decoder_widths"], hp["fused_width"], num_classes)
    fine_channels = hp["stem_width"] + hp["fused_width"]  # stem (stride 2) and fused (stride 4)
    if hp["arm"] == "pointrend":
      self.arm = PointRendARM(fine_channels, num_classes, hp)
    elif hp["arm"] == "dense":
      self.arm = DenseEdgeARM(fine_channels, num_classes)
    else:
      self.arm = None

  def forward(self, image: torch.Tensor, point_coords: torch.Tensor | None = None):
    """(B, 3, H, W) -> ((B, K, H, W) float32 logits, aux dict); see the module docstring."""
    height, width = image.shape[-2:]
    aux: dict[str, Any] = {}

    # ------------------------------------------------------------------ encoder
    stem = self.stem2(self.stem1(image))  # (B, C, H/2, W/2)
    aux["encoder/stem"] = stem
    x, skips = stem, []
    for i in range(self.num_stages):
      x = getattr(self, f"stage{i}")(x)  # (B, 4·planes, H/2^(i+2), W/2^(i+2))
      aux[f"encoder/stage{i}"] = x
      if i == self.isam_stage:
        x = self.isam(x)
        aux["isam/out"] = x
        x, alpha = self.fsam(x)
        aux["fsam/alpha"] = alpha
        aux["fsam/out"] = x
      skips.append(x)

    # ------------------------------------------------------------------ decoder
    fused, coarse_logits, side_outputs = self.decoder(skips)
    aux["decoder/fused"] = fused
    aux["coarse_logits"] = coarse_logits
    aux["side_outputs"] = side_outputs

    # ------------------------------------------------------------------ attention rendering
    if self.arm is None:
      return resize_to(coarse_logits, (height, width)), aux
    logits, points = self.arm(coarse_logits, (stem, fused), (height, width), point_coords)
    if points:
      aux["arm"] = points
    return logits, aux


def build_model(variant: str = "paper", *, num_classes: int = 1, **overrides) -> nn.Module:
  """The torch BSA-Net for a `bsanet.VARIANTS` key, hyper-parameters from `bsanet.resolve_hparams`."""
  return BSANet(bsanet.resolve_hparams(variant, **overrides), num_classes)


def num_params(model: nn.Module) -> int:
  """Trainable parameters (BatchNorm statistics are buffers, as they are 'batch_stats' in Flax)."""
  return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------------
# Loss: losses.segmentation_loss with loss='structure' (the trainer's bsanet default).

def structure_loss(logits: torch.Tensor, mask: torch.Tensor,
                   weight: torch.Tensor | None = None) -> torch.Tensor:
  """PraNet's weighted BCE + weighted IoU on (B, 1, H, W) logits and mask, averaged over the batch.

  `weight` is the edge weight 1 + 5·|avgpool31(mask) − mask| (computed here if not given; XLA
  computes it once per step for all five terms, so `train_loss` passes it in).
  """
  logits = logits.float()
  if weight is None:
    weight = edge_weight(mask)
  bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
  wbce = (weight * bce).sum((1, 2, 3)) / weight.sum((1, 2, 3))
  prob = torch.sigmoid(logits)
  inter = (prob * mask * weight).sum((1, 2, 3))
  union = ((prob + mask) * weight).sum((1, 2, 3))
  wiou = 1.0 - (inter + 1.0) / (union - inter + 1.0)
  return (wbce + wiou).mean()


def edge_weight(mask: torch.Tensor, kernel: int = 31) -> torch.Tensor:
  """1 + 5·|avgpool(mask) − mask|, zero padding counted (torch's avg_pool2d default)."""
  return 1.0 + 5.0 * (F.avg_pool2d(mask, kernel, 1, kernel // 2) - mask).abs()


def sample_nearest(mask: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
  """(B, C, H, W) mask at (B, N, 2) (y, x) in [0, 1], nearest pixel -> (B, N, C)."""
  _, c, h, w = mask.shape
  rows = (coords[..., 0] * h).floor().clamp(0, h - 1).long()  # (B, N)
  cols = (coords[..., 1] * w).floor().clamp(0, w - 1).long()
  flat = (rows * w + cols).unsqueeze(1).expand(-1, c, -1)  # (B, C, N)
  return mask.flatten(2).gather(2, flat).transpose(1, 2)


def train_loss(model: nn.Module, image: torch.Tensor, mask: torch.Tensor, *,
               point_coords: torch.Tensor | None = None,
               deep_supervision_weight: float | None = None,
               point_loss_weight: float | None = None) -> torch.Tensor:
  """One training forward and the trainer's bsanet loss: main + Σ side outputs + point BCE.

  image (B, 3, H, W), mask (B, 1, H, W) in {0, 1}; `model` must be in train mode. Weights default to
  `config_lib.base_config().train` (1.0 and 1.0). `point_coords` fixes the ARM's training points.
  """
  if not model.training:
    raise ValueError("train_loss needs model.train() (the eval forward has no point logits).")
  if deep_supervision_weight is None or point_loss_weight is None:
    from bsa_jax import config_lib  # only for the defaults
    defaults = config_lib.base_config().train
    if defaults.loss != "structure":
      raise ValueError(f"base config loss is {defaults.loss!r}; this twin implements 'structure'.")
    if deep_supervision_weight is None:
      deep_supervision_weight = defaults.deep_supervision_weight
    if point_loss_weight is None:
      point_loss_weight = defaults.point_loss_weight
  mask = mask.float()
  height, width = mask.shape[-2:]
  logits, aux = model(image, point_coords=point_coords)
  weight = edge_weight(mask)  # (B, 1, H, W), shared by every structure term
  total = structure_loss(resize_to(logits, (height, width)), mask, weight)
  side_outputs = aux.get("side_outputs", ())
  if side_outputs and deep_supervision_weight:
    side = sum(structure_loss(resize_to(s, (height, width)), mask, weight) for s in side_outputs)
    total = total + deep_supervision_weight * side
  if "arm" in aux and point_loss_weight:
    labels = sample_nearest(mask, aux["arm"]["coords"])  # (B, N, 1)
    points = F.binary_cross_entropy_with_logits(aux["arm"]["logits"].float(), labels)
    total = total + point_loss_weight * points
  return total


# ----------------------------------------------------------------------------------------------------
# Flax variables -> torch.

def _flatten(tree: dict, prefix: tuple = ()) -> dict[tuple, Any]:
  """Nested dict -> {path tuple: leaf}."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict) or hasattr(value, "items"):
      flat.update(_flatten(value, prefix + (key,)))
    else:
      flat[prefix + (key,)] = value
  return flat


def load_flax_variables(model: nn.Module, variables: dict) -> None:
  """Copies Flax {'params', 'batch_stats'} into `model` in place; strict both ways on names and shapes.

  Conv kernels HWIO -> OIHW, Dense kernels (in, out) -> (out, in), scale -> weight, BatchNorm
  mean/var -> running_mean/var; relative-position tables copy as they are (the index and masks are
  recomputed, as in Flax).
  """
  targets = {name: t for name, t in model.state_dict(keep_vars=True).items()
             if not name.endswith("num_batches_tracked")}
  leaf_names = {("params", "kernel"): "weight", ("params", "scale"): "weight",
                ("params", "bias"): "bias",
                ("params", "relative_position_bias_table"): "relative_position_bias_table",
                ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}
  loaded = set()
  for collection in ("params", "batch_stats"):
    for path, value in _flatten(dict(variables.get(collection, {}))).items():
      if (collection, path[-1]) not in leaf_names:
        raise KeyError(f"no torch counterpart for Flax {collection}/{'/'.join(path)}")
      name = ".".join(path[:-1] + (leaf_names[collection, path[-1]],))
      if name not in targets:
        raise KeyError(f"Flax {collection}/{'/'.join(path)} -> torch {name!r}: no such tensor")
      array = np.asarray(value, dtype=np.float32)
      if path[-1] == "kernel":
        array = array.transpose(3, 2, 0, 1) if array.ndim == 4 else array.T
      target = targets[name]
      if tuple(array.shape) != tuple(target.shape):
        raise ValueError(f"{name}: Flax shape {array.shape} (converted) != torch {tuple(target.shape)}")
      with torch.no_grad():
        target.copy_(torch.tensor(array))
      loaded.add(name)
  missing = sorted(set(targets) - loaded)
  if missing:
    raise KeyError(f"torch tensors without a Flax value: {missing}")
