"""timm Res2Net state dicts (`res2net50_26w_4s` and siblings: plain 7×7 stem) -> `res2net.Res2Net`.

Key layout (timm 1.x `res2net.py`, blocks inside timm's `ResNet`): `conv1/bn1` stem,
`layer<k>.<i>.{conv1,bn1,convs.<j>,bns.<j>,conv3,bn3,downsample.0,downsample.1}`, `fc`. Everything
maps mechanically except the shortcut's `downsample.0/1`, renamed as for ResNet.
"""

from typing import Mapping

import numpy as np

from bsa_jax.models import res2net
from bsa_jax.models.convert import common
# The same `downsample.0/1` -> `downsample_conv/bn` renaming, stage reading and driver as ResNet's.
from bsa_jax.models.convert import resnet as resnet_rules

DONT_LOAD = (r"^fc\.",)  # the ImageNet classifier


def infer_config(state_dict: Mapping[str, np.ndarray]) -> dict:
  """`Res2Net` kwargs read off a timm state dict's shapes."""
  if "conv1.weight" not in state_dict or "layer1.0.convs.0.weight" not in state_dict:
    raise common.ConversionError(
        "not a plain-stem timm Res2Net state dict (no conv1.weight / layer1.0.convs.0.weight); "
        "deep-stem variants (res2net50d, ...) are not supported")
  layers = resnet_rules.stage_depths(state_dict)
  stages = range(1, len(layers) + 1)
  widths = tuple(state_dict[f"layer{k}.0.conv3.weight"].shape[0] // res2net.Bottle2neck.expansion
                 for k in stages)
  width = state_dict["layer1.0.convs.0.weight"].shape[0]  # one group's channels
  scale = state_dict["layer1.0.conv1.weight"].shape[0] // width
  # width = floor(planes * base_width / 64): the smallest base_width that gives it.
  base_width = -(-width * 64 // widths[0])
  return dict(layers=layers, widths=widths,
              stem_width=int(state_dict["conv1.weight"].shape[0]), base_width=int(base_width),
              scale=int(scale))


def convert(state_dict: Mapping[str, np.ndarray], config: dict | None = None, *,
            dont_load=DONT_LOAD):
  """timm Res2Net state dict -> ({'params': ..., 'batch_stats': ...}, Res2Net kwargs).

  The arguments are `resnet.convert`'s, with `Res2Net` kwargs as `config`.
  """
  return resnet_rules.convert_family(state_dict, config, infer_config, res2net.Res2Net,
                                    dont_load=dont_load, rename=resnet_rules.rename, what="res2net")
