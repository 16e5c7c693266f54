"""Strict timm -> Flax weight conversion for the Swin v1, ResNet/ResNeXt and Res2Net families.

    python -m bsa_jax.models.convert --timm_model swin_tiny_patch4_window7_224 \\
        (--checkpoint FILE | --random_init | --pretrained) --out DIR [--check]

Library: `convert_state_dict` (numpy state dict -> our variables, strict), `convert_timm_model` (a live
timm model), `save_converted` / `load_converted` (orbax directory + `source.json`), `build_model` (our
module from that JSON) and `merge_params` (strict loading of a (sub-)tree into initialised params,
big_vision style; `merge_pretrained` applies it per collection with a prefix mapping, as the trainer
does). Unmapped keys, missing keys and shape mismatches all raise `ConversionError`
listing every offending key; only `dont_load` regexes (the classifier heads by default) excuse keys.
`from_timm.convert_to_dir` is the whole command as a function (timm model + weights -> directory).
"""

import dataclasses
import json
import os
from typing import Any, Iterable, Mapping

import numpy as np
from flax import linen as nn

from bsa_jax.models import res2net as res2net_model
from bsa_jax.models import res2net_v1b as res2net_v1b_model
from bsa_jax.models import resnext as resnext_model
from bsa_jax.models import swin as swin_model
from bsa_jax.models.convert import common
from bsa_jax.models.convert import res2net as res2net_rules
from bsa_jax.models.convert import res2net_v1b as res2net_v1b_rules
from bsa_jax.models.convert import resnet as resnet_rules
from bsa_jax.models.convert import swin as swin_rules
from bsa_jax.models.convert.common import ConversionError, load_state_dict, merge_params

__all__ = [
    "ConversionError", "Converted", "build_model", "convert_state_dict", "convert_timm_model",
    "detect_family", "load_converted", "load_state_dict", "merge_params", "merge_pretrained",
    "read_metadata", "save_converted",
]

_RULES = {"swin": swin_rules, "resnet": resnet_rules, "res2net": res2net_rules,
          "res2net_v1b": res2net_v1b_rules}
# Aliased: the rule modules convert/swin.py and convert/resnet.py take the bare names in this package.
_MODELS = {"swin": swin_model.SwinTransformer, "resnet": resnext_model.ResNet,
           "res2net": res2net_model.Res2Net, "res2net_v1b": res2net_v1b_model.Res2NetV1b}
VARIABLES_DIR = "variables"  # orbax StandardCheckpointer directory inside the output
METADATA_FILE = "source.json"


@dataclasses.dataclass
class Converted:
  """Our variables for one timm model, with what is needed to rebuild the Flax module."""
  family: str  # 'swin' | 'resnet'
  config: dict  # kwargs of swin.SwinTransformer or resnext.ResNet
  variables: dict  # {'params': ..., 'batch_stats': ...} nested dicts of numpy arrays

  def model(self, **overrides) -> nn.Module:
    return _MODELS[self.family](**{**self.config, **overrides})


def detect_family(state_dict: Mapping[str, Any]) -> str:
  if "patch_embed.proj.weight" in state_dict:
    return "swin"
  if res2net_v1b_rules.is_deep_stem(state_dict):  # v1b / timm 'd': the deep stem (SANet, LDNet)
    return "res2net_v1b"
  if "layer1.0.convs.0.weight" in state_dict:  # Res2Net's hierarchical 3x3 convs
    return "res2net"
  if "conv1.weight" in state_dict or "conv1.0.weight" in state_dict:
    return "resnet"
  raise ConversionError("cannot tell the model family: neither a Swin (patch_embed.proj.weight) nor a "
                        "ResNet (conv1.weight) state dict")


def convert_state_dict(state_dict: Mapping[str, np.ndarray], *, family: str | None = None,
                       config: dict | None = None, dont_load: Iterable[str] | None = None,
                       **family_kwargs) -> Converted:
  """timm (or Microsoft Swin) state dict -> `Converted`, strictly.

  Args:
    state_dict: torch key -> numpy array (see `load_state_dict`).
    family: 'swin' or 'resnet'; detected from the keys when None.
    config: our module's kwargs; inferred from the tensor shapes when None.
    dont_load: regexes of keys to skip; None = the family's classifier head.
    **family_kwargs: passed to the family's `convert` (Swin: `table_windows`).

  Raises:
    ConversionError: listing every unmapped key, missing key and shape mismatch.
  """
  family = family or detect_family(state_dict)
  rules = _RULES[family]
  dont_load = rules.DONT_LOAD if dont_load is None else tuple(dont_load)
  variables, config = rules.convert(state_dict, config, dont_load=dont_load, **family_kwargs)
  return Converted(family, config, variables)


def convert_timm_model(model, *, config: dict | None = None,
                       dont_load: Iterable[str] | None = None) -> Converted:
  """A live timm model -> `Converted`; also handles windows that timm shrank for a small img_size."""
  state_dict = {k: common.to_numpy(v) for k, v in model.state_dict().items()}
  family = detect_family(state_dict)
  kwargs = {}
  if family == "swin":
    kwargs["table_windows"] = {
        f"{name}.relative_position_bias_table": tuple(module.window_size)
        for name, module in model.named_modules() if hasattr(module, "relative_position_bias_table")}
    reference_windows = getattr(model, "_ref_window_sizes", None)  # private in timm 1.0.31
    if config is None and reference_windows:  # the configured window, which shrunk tables hide
      config = swin_rules.infer_config(state_dict, window_size=int(reference_windows[0][0]))
  return convert_state_dict(state_dict, family=family, config=config, dont_load=dont_load, **kwargs)


def _jsonable(config: dict) -> dict:
  return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def save_converted(out_dir: str, converted: Converted, *, source: Mapping[str, Any],
                   overwrite: bool = False) -> None:
  """Writes `out_dir/variables` (orbax StandardCheckpointer) and `out_dir/source.json`.

  `source` is recorded as-is (e.g. {'timm_model': name, 'checkpoint': path}).
  """
  import orbax.checkpoint as ocp  # orbax: only when converted weights are saved or read
  out_dir = os.path.abspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  tree = {k: v for k, v in converted.variables.items() if v}  # orbax rejects empty collections
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.join(out_dir, VARIABLES_DIR), tree, force=overwrite)
  meta = {**dict(source), "family": converted.family, "config": _jsonable(converted.config),
          "collections": sorted(tree)}
  with open(os.path.join(out_dir, METADATA_FILE), "w") as f:
    json.dump(meta, f, indent=2)


def read_metadata(path: str) -> dict:
  """The `source.json` of a converted directory (family, config, timm model name, source)."""
  with open(os.path.join(path, METADATA_FILE)) as f:
    return json.load(f)


def load_converted(path: str) -> dict[str, dict]:
  """{'params': ..., 'batch_stats': ...} (nested dicts of numpy arrays) from `save_converted`'s output.

  `batch_stats` is {} for models without BatchNorm.
  """
  import orbax.checkpoint as ocp  # orbax: only when converted weights are saved or read
  path = os.path.abspath(path)
  meta = read_metadata(path)
  with ocp.StandardCheckpointer() as checkpointer:
    tree = checkpointer.restore(os.path.join(path, VARIABLES_DIR))
  tree = {k: tree.get(k, {}) for k in ("params", "batch_stats")}
  missing = set(meta["collections"]) - {k for k, v in tree.items() if v}
  if missing:
    raise ConversionError(f"{path}: collections {sorted(missing)} listed in {METADATA_FILE} not found")
  return {k: _to_numpy_tree(v) for k, v in tree.items()}


def _to_numpy_tree(tree):
  return common.unflatten({k: np.asarray(v) for k, v in common.flatten(tree).items()}) if tree else {}


def build_model(path_or_meta: str | Mapping[str, Any], **overrides) -> nn.Module:
  """Our Flax module for a converted directory (or its metadata dict), e.g. dtype=jnp.bfloat16."""
  meta = read_metadata(path_or_meta) if isinstance(path_or_meta, str) else path_or_meta
  config = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()}
  return _MODELS[meta["family"]](**{**config, **overrides})


def subtree(tree: Mapping[str, Any], prefix: str) -> dict:
  """The nested dict at '/'-joined `prefix` ('' = the whole tree); {} when absent."""
  for part in filter(None, prefix.split("/")):
    if not isinstance(tree, Mapping) or part not in tree:
      return {}
    tree = tree[part]
  return dict(tree)


def merge_pretrained(params: Mapping[str, Any], batch_stats: Mapping[str, Any],
                     loaded: Mapping[str, Mapping[str, Any]], *,
                     mapping: Mapping[str, str] | None = None,
                     dont_load: Iterable[str] = ()) -> tuple[dict, dict]:
  """Loads `load_converted` output into a model's initialised params and batch_stats, strictly.

  Args:
    params, batch_stats: the model's initialised collections.
    loaded: {'params': ..., 'batch_stats': ...} as returned by `load_converted`.
    mapping: {target prefix in our model: source prefix in `loaded`}, e.g.
      {'isam/blocks_0': 'layers_2/blocks_0', 'encoder': ''}; None = {'': ''} (same structure).
      Each target sub-tree must be matched exactly by its source sub-tree (see `merge_params`);
      source leaves outside the mapped prefixes are not used.
    dont_load: regexes of paths (relative to each target prefix) to keep from init.

  Returns:
    (params, batch_stats) as new nested dicts.
  """
  mapping = {"": ""} if mapping is None else dict(mapping)
  out = {"params": dict(params), "batch_stats": dict(batch_stats)}
  for target, source in mapping.items():
    for collection in out:
      source_tree = subtree(loaded.get(collection, {}), source)
      if not source_tree and not subtree(out[collection], target):
        continue  # e.g. no BatchNorm on either side
      if not source_tree:
        raise ConversionError(f"merge_pretrained: {collection}/{source or '<root>'} is empty in the "
                              f"converted checkpoint but {collection}/{target or '<root>'} is not")
      out[collection] = merge_params(out[collection], source_tree, dont_load, prefix=target)
  return out["params"], out["batch_stats"]
