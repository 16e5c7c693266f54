"""Resolving `config.model_init` to a converted-weights directory (see `bsa_jax.models.convert`).

  --config.model_init=weights/swin_t                          # made by `python -m bsa_jax.models.convert`
  --config.model_init=timm:swin_tiny_patch4_window7_224       # fetched through timm's cache, converted once

`timm:` needs torch + timm and the network the first time; the converted copy is cached in
`$BSA_CACHE_DIR/converted/<name>` (default ~/.cache/bsa_jax). Offline it fails before training starts
and says how to convert a local checkpoint file instead.
"""

import os

from bsa_jax import models
from bsa_jax.models import convert
from bsa_jax.models.convert import METADATA_FILE


def cache_dir() -> str:
  return os.environ.get("BSA_CACHE_DIR", os.path.expanduser("~/.cache/bsa_jax"))


def resolve(model_init: str) -> str:
  """A local converted-weights directory for `model_init` (converting a `timm:` name if needed)."""
  if not model_init.startswith("timm:"):
    if not os.path.exists(os.path.join(model_init, METADATA_FILE)):
      raise FileNotFoundError(
          f"--config.model_init={model_init!r} is not a converted-weights directory (no "
          f"{METADATA_FILE}). Make one with `python -m bsa_jax.models.convert --timm_model NAME "
          "--checkpoint FILE --out DIR`, or use --config.model_init=timm:NAME.")
    return model_init
  name = model_init[len("timm:"):]
  out = os.path.join(cache_dir(), "converted", name)
  if os.path.exists(os.path.join(out, METADATA_FILE)):
    return out
  from bsa_jax.models.convert import from_timm  # needs torch and timm
  try:
    from_timm.convert_to_dir(name, out, pretrained=True)
  except (convert.ConversionError, ImportError) as e:
    raise RuntimeError(
        f"--config.model_init={model_init} could not fetch timm's pretrained weights: {e}\n"
        f"Offline: copy the checkpoint file here, run `python -m bsa_jax.models.convert "
        f"--timm_model {name} --checkpoint FILE --out weights/{name}` and pass "
        f"--config.model_init=weights/{name}.") from None
  return out


def merge_into(config, params: dict, batch_stats: dict) -> tuple[dict, dict]:
  """`(params, batch_stats)` with the converted checkpoint of `config.model_init` merged in, strictly
  (the model module's `pretrained_mapping` says where the converted tree goes, if it has one)."""
  loaded = convert.load_converted(resolve(config.model_init))
  mapping = getattr(models.get_model_module(config.model_name), "pretrained_mapping", None)
  return convert.merge_pretrained(params, batch_stats, loaded,
                                  mapping=mapping(config.model) if mapping else None)
