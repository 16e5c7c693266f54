"""Res2Net-50 v1b (deep stem, average-pool shortcuts): the backbone of SANet's and LDNet's official code.

SANet (weijun88/SANet `res2net.py`) and LDNet (ReaFly/LDNet `models/res2net.py`) both build
`res2net50_v1b_26w_4s` of the Res2Net authors' "PretrainedModels" release, not the plain-stem
`res2net50_26w_4s` that `res2net.py` mirrors. The two differ only outside the blocks' Res2Net
hierarchy (0.019 M parameters):

- stem: three 3×3 convs (3 -> 32 stride 2 -> 32 -> 64, BN + ReLU between) instead of one 7×7;
- shortcut of a shape-changing block: 2×2 average pool with the block's stride (`ceil_mode`, padding
  not counted) then a stride-1 1×1 conv + BN, instead of a strided 1×1 conv.

timm's `res2net50d` is the same network with the same state-dict keys (`conv1.0/1/3/4/6`, `bn1`,
`layer<k>.<i>.{conv1,bn1,convs.<j>,bns.<j>,conv3,bn3,downsample.1,downsample.2}`); on shared random
weights the two give bit-equal features. `convert/res2net_v1b.py` loads either strictly into
`Res2NetV1b`; `backbone_from_variant` builds either Res2Net family by name, so a model can offer the
official v1b backbone and timm's plain one side by side.
"""

import functools

import jax
from flax import linen as nn

from bsa_jax.models import res2net
from bsa_jax.models.resnext import batch_norm, conv, stem_and_stages

# Variant -> Res2NetV1b kwargs. Names differ from `res2net.VARIANTS` so `backbone_from_variant` can
# serve both tables.
VARIANTS = {
    "res2net50_v1b_26w_4s": dict(layers=(3, 4, 6, 3), base_width=26, scale=4),
    "res2net101_v1b_26w_4s": dict(layers=(3, 4, 23, 3), base_width=26, scale=4),
    # Same code paths at a fraction of the cost, for tests (width per group: 16 * 32 // 64 = 8).
    "v1b_test": dict(layers=(1, 2, 1, 1), widths=(16, 16, 32, 32), stem_width=8, stem_out=16,
                     base_width=32, scale=4),
}


def avg_down(x: jax.Array, strides: int) -> jax.Array:
  """torch AvgPool2d(strides, strides, ceil_mode=True, count_include_pad=False) on (B, H, W, C)."""
  if strides == 1:
    return x
  _, h, w, _ = x.shape
  pad = ((0, -h % strides), (0, -w % strides))  # ceil_mode: a partial last window, averaged as such
  return nn.avg_pool(x, (strides, strides), strides=(strides, strides), padding=pad,
                     count_include_pad=False)


class Bottle2neckV1b(res2net.Bottle2neck):
  """Res2Net bottleneck with the v1b shortcut (see module docstring): `res2net.Bottle2neck`'s fields
  and residual branch (y_1 = K_1(x_1), y_i = K_i(x_i + y_{i-1}), the last group passed through,
  average-pooled with the stride in a stage's first block, which also drops the sums); the shortcut
  of a shape-changing block average-pools with the stride before its stride-1 1×1 conv.
  """

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    """x: (B, H, W, C_in) -> (B, H/s, W/s, 4 * features)."""
    out_features = self.features * self.expansion
    y = res2net.multi_scale_branch(x, self.features, self.strides, self.base_width, self.scale,
                                   train=train, dtype=self.dtype)
    if res2net.starts_stage(x, out_features, self.strides):
      x = conv(out_features, 1, dtype=self.dtype, name="downsample_conv")(avg_down(x, self.strides))
      x = batch_norm(train, dtype=self.dtype, name="downsample_bn")(x)
    return nn.relu(y + x)


class Res2NetV1b(res2net.Res2Net):
  """Res2Net v1b backbone without the classifier: deep 3×3 stem, 3×3/2 max-pool, four stages.

  Attributes: `res2net.Res2Net`'s, with
    stem_width: channels of the stem's first two convs (32 in v1b).
    stem_out: channels of the stem's last conv and of `stem` (64).
  """
  stem_width: int = 32
  stem_out: int = 64

  @nn.compact
  def __call__(self, image, *, train: bool = False) -> dict[str, jax.Array]:
    """image: (B, H, W, 3) -> {'stem': (B, H/2, W/2, stem_out), 'stage{k}': (B, H/2^(k+1), ...)}."""
    x = image.astype(self.dtype)
    for i, (features, strides) in enumerate(
        ((self.stem_width, 2), (self.stem_width, 1), (self.stem_out, 1)), start=1):
      x = conv(features, 3, strides, dtype=self.dtype, name=f"stem_conv{i}")(x)
      if i < 3:  # the last conv's BN is `bn1`, as in the state dict
        x = nn.relu(batch_norm(train, dtype=self.dtype, name=f"stem_bn{i}")(x))
    stem = nn.relu(batch_norm(train, dtype=self.dtype, name="bn1")(x))  # (B, H/2, W/2, stem_out)
    make_block = functools.partial(Bottle2neckV1b, base_width=self.base_width, scale=self.scale,
                                   dtype=self.dtype)
    return stem_and_stages(stem, self.layers, self.widths, make_block, train=train)


def backbone_from_variant(variant: str, **overrides) -> nn.Module:
  """A v1b `Res2NetV1b` (`VARIANTS` key) or a plain-stem `res2net.Res2Net` (`res2net.VARIANTS` key)."""
  if variant in VARIANTS:
    return Res2NetV1b(**{**VARIANTS[variant], **overrides})
  if variant in res2net.VARIANTS:
    return res2net.res2net_from_variant(variant, **overrides)
  raise ValueError(f"unknown Res2Net variant {variant!r}; choose from "
                   f"{sorted(VARIANTS) + sorted(res2net.VARIANTS)}")
