"""Resolving `config.model_init` to a converted-weights directory (see `bsa_jax.models.convert`).

  --config.model_init=weights/swin_t                          # made by `python -m bsa_jax.models.convert`
  --config.model_init=timm:swin_tiny_patch4_window7_224       # fetched through timm's cache, converted once
  --config.model_init=none                                    # from scratch ('' too)

`timm:` needs torch + timm and the network the first time; the converted copy is cached in
`$BSA_CACHE_DIR/converted/<name>` (default ~/.cache/bsa_jax). Offline (huggingface.co unreachable,
or $HF_HUB_OFFLINE set) it converts the file from the Hugging Face cache if timm fetched it before;
otherwise it fails at once, before training starts, with the commands that fetch and convert the
weights into that cache (`WeightsUnavailable`).
"""

import json
import os
import socket
import urllib.parse

from bsa_jax import models
from bsa_jax.models import convert
from bsa_jax.models.convert import METADATA_FILE


def cache_dir() -> str:
  return os.environ.get("BSA_CACHE_DIR", os.path.expanduser("~/.cache/bsa_jax"))


SCRATCH = ("", "none")  # model_init values that mean: no pretrained weights


class WeightsUnavailable(FileNotFoundError):
  """The pretrained weights a config asks for are not on this machine and cannot be fetched now."""


def requested(model_init: str) -> bool:
  """Whether `config.model_init` asks for pretrained weights ('' and 'none' mean from scratch)."""
  return model_init.strip().lower() not in SCRATCH


def describe(model_init: str, resume: str = "") -> str:
  """The initialisation in words, for provenance lines and tables."""
  if resume:
    return f"resumed from {resume} (--config.resume)"
  if not requested(model_init):
    return "none: trained from scratch, no ImageNet weights"
  if model_init.startswith("timm:"):
    return f"{model_init} (timm's ImageNet weights, converted)"
  source = {}
  try:
    with open(os.path.join(model_init, METADATA_FILE)) as f:
      source = json.load(f)  # what `convert.save_converted` recorded
  except (OSError, ValueError):
    pass
  what = ", ".join(f"{k} {source[k]}" for k in ("timm_model", "source", "pretrained_tag", "checkpoint")
                   if source.get(k))
  return f"{model_init} (converted weights{': ' + what if what else ''})"


# timm's default weights for the names our configs use (timm 1.0: `get_pretrained_cfg(name).hf_hub_id`),
# so the offline message needs no torch import.
HUB_IDS = {"swin_tiny_patch4_window7_224": "timm/swin_tiny_patch4_window7_224.ms_in1k",
           "res2net50_26w_4s": "timm/res2net50_26w_4s.in1k",
           "res2net50d": "timm/res2net50d.in1k",  # = the official Res2Net-50 v1b of SANet/LDNet
           "resnext50_32x4d": "timm/resnext50_32x4d.a1h_in1k"}


def _hub_id(name: str) -> str:
  """The Hugging Face repository timm fetches `name` from (e.g. timm/swin_tiny_..._224.ms_in1k)."""
  if name in HUB_IDS:
    return HUB_IDS[name]
  if "." in name:  # a name with its pretrained tag, e.g. resnext50_32x4d.tv_in1k
    return f"timm/{name}"
  try:
    import timm  # optional; without it, timm's naming convention
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is not None and cfg.hf_hub_id:
      return cfg.hf_hub_id
  except Exception:  # timm missing, or a name timm does not know: the convert command will say so
    pass
  return f"timm/{name}"


def _hub_reachable(timeout: float = 3.0) -> bool:
  """False when $HF_HUB_OFFLINE is set or huggingface.co does not answer within `timeout` (no
  minute of retries before the error); True behind a proxy, which timm then uses."""
  if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
    return False
  if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
    return True
  host = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
  try:
    socket.create_connection((host or "huggingface.co", 443), timeout=timeout).close()
    return True
  except OSError:
    return False


def _cached_hub_file(hub_id: str) -> str | None:
  """timm's weights file for `hub_id` in the Hugging Face cache, if it was fetched before."""
  try:
    from huggingface_hub import try_to_load_from_cache  # optional: comes with timm
  except ImportError:
    return None
  for filename in ("model.safetensors", "pytorch_model.bin"):
    path = try_to_load_from_cache(hub_id, filename)
    if isinstance(path, str) and os.path.isfile(path):
      return path
  return None


def fetch_commands(name: str, out: str) -> str:
  """The shell commands that fetch timm's `name` weights and convert them into `out`."""
  hub_id = _hub_id(name)
  local = f"{name.replace('/', '_')}.safetensors"
  return (f"  curl -L -o {local} https://huggingface.co/{hub_id}/resolve/main/model.safetensors\n"
          f"  python -m bsa_jax.models.convert --timm_model={name} --checkpoint={local} --out={out}")


def resolve(model_init: str) -> str:
  """A local converted-weights directory for `model_init` (converting a `timm:` name if needed).

  Raises:
    FileNotFoundError: `model_init` is neither a converted directory nor a `timm:` name.
    WeightsUnavailable: a `timm:` name whose weights are neither cached nor fetchable (offline);
      the message holds the commands that fetch and convert them.
  """
  if not requested(model_init):
    raise ValueError(f"--config.model_init={model_init!r} asks for no weights (from scratch).")
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
  how = (f"Fetch and convert them once, on any machine with internet (converting needs torch and "
         f"timm: pip install -r requirements-test.txt), into the cache this run reads:\n"
         f"{fetch_commands(name, out)}\n"
         f"then rerun the same command. Or train from scratch: --config.model_init=none.")
  cached = None
  if not _hub_reachable():
    cached = _cached_hub_file(_hub_id(name))
    if cached is None:
      raise WeightsUnavailable(
          f"--config.model_init={model_init}: ImageNet weights needed, but they are not converted "
          f"in {out} and huggingface.co cannot be reached (offline). {how}")
  from bsa_jax.models.convert import from_timm  # needs torch and timm
  try:
    if cached is not None:
      from_timm.convert_to_dir(name, out, checkpoint=cached)
    else:
      from_timm.convert_to_dir(name, out, pretrained=True)
  except (convert.ConversionError, ImportError) as e:
    raise WeightsUnavailable(f"--config.model_init={model_init} could not fetch or convert timm's "
                             f"pretrained weights: {e}\n{how}") from None
  return out


def merge_into(config, params: dict, batch_stats: dict) -> tuple[dict, dict]:
  """`(params, batch_stats)` with the converted checkpoint of `config.model_init` merged in, strictly
  (the model module's `pretrained_mapping` says where the converted tree goes, if it has one)."""
  loaded = convert.load_converted(resolve(config.model_init))
  mapping = getattr(models.get_model_module(config.model_name), "pretrained_mapping", None)
  return convert.merge_pretrained(params, batch_stats, loaded,
                                  mapping=mapping(config.model) if mapping else None)
