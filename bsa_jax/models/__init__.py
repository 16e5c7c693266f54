"""Model registry: the module path is the registry (`bsa_jax.models.<name>.Model`).

Every model module exposes `Model`, a Linen module called as `Model(**config.model)` and applied as
`logits, aux = model.apply(variables, image, train=...)` with `image` (B, H, W, 3) and `logits`
(B, H, W, num_classes) at the input resolution; `aux` is a dict of named intermediates
(`side_outputs` for deep supervision, attention maps, ...).
"""

import dataclasses
import importlib

import jax.numpy as jnp
import ml_collections as mlc
from flax import linen as nn


def decode_variant(table: dict, variant: str, overrides: dict, label: str) -> dict:
  """A variant's hyper-parameters from `table`, with every non-None override applied (big_vision's
  `decode_variant` habit); unknown variants or override names fail naming the valid ones."""
  if variant not in table:
    raise ValueError(f"Unknown {label} variant {variant!r}; choose from {sorted(table)}.")
  hparams = dict(table[variant])
  unknown = sorted(set(overrides) - set(hparams))
  if unknown:
    raise ValueError(f"Unknown {label} hyper-parameters {unknown}; known: {sorted(hparams)}.")
  hparams.update({k: v for k, v in overrides.items() if v is not None})
  return hparams


def field_overrides(module: nn.Module, table: dict) -> dict:
  """The values of `module`'s fields named in its variant's row of `table` (None: not overridden).

  For the models whose every hyper-parameter is both a variant-table key and a field; an unknown
  variant gives {}, so `decode_variant` is left to name the valid ones.
  """
  return {k: getattr(module, k) for k in table.get(module.variant, {})}


def check_input_size(image_shape: tuple[int, ...], multiple: int, model: str, *, reason: str = "",
                     paper_size: int | None = None) -> None:
  """Refuses a (B, H, W, C) input whose H or W is not a multiple of `multiple`, naming the fix.

  A network that halves the resolution k times needs multiples of 2^k so that its skips line up;
  the message says so in the model's words (`reason`, e.g. "the backbone's stride") and, when given,
  the paper's input size.
  """
  _, h, w, _ = image_shape
  if h % multiple or w % multiple:
    why = f" ({reason})" if reason else ""
    paper = f" (the paper's is {paper_size})" if paper_size else ""
    raise ValueError(f"{model} needs H and W divisible by {multiple}{why}; got {h}×{w}. "
                     f"Set --config.data.image_size to a multiple of {multiple}{paper}.")


def get_model_module(name: str):
  """Imports `bsa_jax.models.<name>`; a clear error names the registered modules."""
  try:
    return importlib.import_module(f"bsa_jax.models.{name}")
  except ModuleNotFoundError as e:
    if e.name != f"bsa_jax.models.{name}":
      raise
    raise ValueError(
        f"Unknown model_name {name!r}: there is no module bsa_jax/models/{name}.py. "
        f"Set --config.model_name to one of: {', '.join(available_models())}.") from None


def get_model(name: str, **kwargs) -> nn.Module:
  """The one model factory: `bsa_jax.models.<name>.Model(**kwargs)`, refusing unknown fields by name."""
  model_cls = get_model_module(name).Model
  field_names = {f.name for f in dataclasses.fields(model_cls)}
  unknown = sorted(set(kwargs) - field_names)
  if unknown:
    raise ValueError(f"--config.model has keys {unknown} that {name}.Model does not "
                     f"take; its fields are {sorted(field_names - {'parent', 'name'})}.")
  return model_cls(**kwargs)


def build_model(config: mlc.ConfigDict) -> nn.Module:
  """`get_model(config.model_name, **config.model)` with the config's compute dtype where the model
  takes one."""
  kwargs = config.model.to_dict()
  model_cls = get_model_module(config.model_name).Model
  if "dtype" in {f.name for f in dataclasses.fields(model_cls)} and "dtype" not in kwargs:
    kwargs["dtype"] = jnp.dtype(config.train.compute_dtype)
  return get_model(config.model_name, **kwargs)


def available_models() -> list[str]:
  import pkgutil  # only for listing the registry in an error message
  names = []
  for info in pkgutil.iter_modules(__path__):
    if info.ispkg:
      continue
    if hasattr(importlib.import_module(f"bsa_jax.models.{info.name}"), "Model"):
      names.append(info.name)
  return sorted(names)
