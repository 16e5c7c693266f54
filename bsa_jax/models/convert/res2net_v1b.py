"""Deep-stem Res2Net state dicts (official `res2net50_v1b_26w_4s`, timm `res2net50d`) -> `Res2NetV1b`.

    python -m bsa_jax.models.convert --timm_model res2net50d --out weights/res2net50_v1b \\
        (--checkpoint res2net50_v1b_26w_4s-3cf99910.pth | --pretrained)

The backbone of SANet and LDNet (`bsa_jax/models/res2net_v1b.py`). Same interface as the other
family rules (`DONT_LOAD`, `infer_config`, `convert`); `convert.detect_family` picks this family for
any state dict with the deep stem (the official v1b checkpoint or timm's `res2net50d`, which share
keys and shapes), so `model_init=timm:res2net50d` works like the other families.

Key layout: the stem `conv1.{0,1,3,4,6}` (conv, BN, conv, BN, conv) + `bn1`, and in each block
`downsample.1/2` (`downsample.0` is the parameter-free average pool); everything else maps by
`convert.common`'s mechanical rules, as for the plain Res2Net.
"""

import re
from typing import Iterable, Mapping

import numpy as np

from bsa_jax.models import res2net_v1b
from bsa_jax.models.convert import common
from bsa_jax.models.convert import res2net as plain_rules
from bsa_jax.models.convert import resnet as resnet_rules

FAMILY = "res2net_v1b"
DONT_LOAD = (r"^fc\.",)  # the ImageNet classifier, which neither SANet nor LDNet registers
# torch key pattern -> our module name.
_RENAMES = {r"^conv1\.0\.": "stem_conv1.", r"^conv1\.1\.": "stem_bn1.", r"^conv1\.3\.": "stem_conv2.",
            r"^conv1\.4\.": "stem_bn2.", r"^conv1\.6\.": "stem_conv3.",
            r"\.downsample\.1\.": ".downsample_conv.", r"\.downsample\.2\.": ".downsample_bn."}


def is_deep_stem(state_dict: Mapping[str, np.ndarray]) -> bool:
  """A Res2Net state dict with the v1b / timm 'd' deep stem (what `detect_family` should check)."""
  return "conv1.6.weight" in state_dict and "layer1.0.convs.0.weight" in state_dict


def rename(torch_key: str) -> str:
  """Official / timm `res2net50d` key -> our naming, before the mechanical rules."""
  for pattern, replacement in _RENAMES.items():
    torch_key = re.sub(pattern, replacement, torch_key)
  return torch_key


def infer_config(state_dict: Mapping[str, np.ndarray]) -> dict:
  """`Res2NetV1b` kwargs read off a deep-stem Res2Net state dict's shapes."""
  if not is_deep_stem(state_dict):
    raise common.ConversionError("not a deep-stem Res2Net state dict (no conv1.6.weight / "
                                 "layer1.0.convs.0.weight)")
  # The plain-stem rules read the blocks; they only need a `conv1.weight` for the stem's output.
  config = plain_rules.infer_config({**state_dict, "conv1.weight": state_dict["conv1.6.weight"]})
  config["stem_out"] = config.pop("stem_width")
  config["stem_width"] = int(state_dict["conv1.0.weight"].shape[0])
  return config


def convert(state_dict: Mapping[str, np.ndarray], config: dict | None = None, *,
            dont_load: Iterable[str] = DONT_LOAD):
  """Deep-stem Res2Net state dict -> ({'params': ..., 'batch_stats': ...}, Res2NetV1b kwargs), strictly.

  Raises `common.ConversionError` listing every unmapped key, missing key and shape mismatch.
  """
  return resnet_rules.convert_family(state_dict, config, infer_config, res2net_v1b.Res2NetV1b,
                                    dont_load=dont_load, rename=rename, what=FAMILY)
