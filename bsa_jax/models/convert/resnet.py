"""timm ResNet/ResNeXt state dicts (plain 7x7 stem, any depth/width/cardinality) -> `resnext.ResNet`.

Key layout: docs/DECISIONS.md#r5 (timm 1.x `resnet.py`). The only non-mechanical names are the
shortcut's `downsample.0` (conv) and `downsample.1` (BN), which become `downsample_conv/bn`.
"""

import re
from typing import Iterable, Mapping

import numpy as np

from bsa_jax.models import resnext
from bsa_jax.models.convert import common

DONT_LOAD = (r"^fc\.",)  # the ImageNet classifier


def rename(key: str) -> str:
  return re.sub(r"\.downsample\.([01])\.",
                lambda m: (".downsample_conv." if m[1] == "0" else ".downsample_bn."), key)


def stage_depths(state_dict: Mapping[str, np.ndarray]) -> tuple[int, ...]:
  """Blocks per stage of a timm ResNet-family state dict, read off its `layer<k>.<i>.` keys.

  Stages count from layer1 up to the first missing one; a stray later stage is left to the strict
  check of the conversion.
  """
  depths = {}
  for key in state_dict:
    if m := re.match(r"layer(\d+)\.(\d+)\.", key):
      stage, block = int(m[1]), int(m[2])
      depths[stage] = max(depths.get(stage, 0), block + 1)
  layers = []
  while len(layers) + 1 in depths:
    layers.append(depths[len(layers) + 1])
  return tuple(layers)


def convert_family(state_dict: Mapping[str, np.ndarray], config: dict | None, infer_config,
                   build, *, dont_load: Iterable[str], rename, what: str):
  """`state_dict` loaded strictly into `build(**config)` -> (variables, config).

  The shared driver of the ResNet-family rules: `config` is read off the shapes by `infer_config`
  when None; the shapes of every family are input-size independent, so a 64-px trace serves.
  """
  config = dict(config or infer_config(state_dict))
  variables = common.convert_state_dict(state_dict, build(**config), input_shape=(1, 64, 64, 3),
                                        dont_load=tuple(dont_load), rename=rename, what=what)
  return variables, config


def infer_config(state_dict: Mapping[str, np.ndarray]) -> dict:
  """`ResNet` kwargs read off a timm state dict's shapes."""
  if "conv1.weight" not in state_dict or "layer1.0.conv1.weight" not in state_dict:
    raise common.ConversionError(
        "not a plain timm ResNet/ResNeXt state dict (no conv1.weight / layer1.0.conv1.weight); "
        "deep-stem variants (resnet50d, ...) are not supported")
  layers = stage_depths(state_dict)
  stages = range(1, len(layers) + 1)
  bottleneck = "layer1.0.conv3.weight" in state_dict
  if bottleneck:
    widths = tuple(state_dict[f"layer{k}.0.conv3.weight"].shape[0] // resnext.Bottleneck.expansion
                   for k in stages)
    inner, per_group = state_dict["layer1.0.conv2.weight"].shape[:2]  # (width, width/groups, 3, 3)
    cardinality = inner // per_group
    base_width = inner // cardinality * 64 // widths[0]
  else:
    widths = tuple(state_dict[f"layer{k}.0.conv2.weight"].shape[0] for k in stages)
    cardinality, base_width = 1, 64
  return dict(block="bottleneck" if bottleneck else "basic", layers=layers, widths=widths,
              stem_width=int(state_dict["conv1.weight"].shape[0]), cardinality=int(cardinality),
              base_width=int(base_width))


def convert(state_dict: Mapping[str, np.ndarray], config: dict | None = None, *,
            dont_load=DONT_LOAD):
  """timm ResNet state dict -> ({'params': ..., 'batch_stats': ...}, ResNet kwargs).

  Args:
    state_dict: torch key -> numpy array.
    config: `ResNet` kwargs; inferred from the shapes when None.
    dont_load: regexes of keys to skip (the classifier by default).
  """
  return convert_family(state_dict, config, infer_config, resnext.ResNet, dont_load=dont_load,
                        rename=rename, what="resnet")
