"""Model registry: the module path is the registry (`bsa_jax.models.<name>.Model`).

Every model module exposes `Model`, a Linen module called as `Model(**config.model)` and applied as
`logits, aux = model.apply(variables, image, train=...)` with `image` (B, H, W, 3) and `logits`
(B, H, W, num_classes) at the input resolution; `aux` is a dict of named intermediates
(`side_outputs` for deep supervision, attention maps, ...).
"""

import importlib

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
  """Builds `bsa_jax.models.<name>.Model(**kwargs)`."""
  return get_model_module(name).Model(**kwargs)


def available_models() -> list[str]:
  import pkgutil
  import bsa_jax.models as pkg
  names = []
  for info in pkgutil.iter_modules(pkg.__path__):
    if info.ispkg:
      continue
    if hasattr(importlib.import_module(f"bsa_jax.models.{info.name}"), "Model"):
      names.append(info.name)
  return sorted(names)
