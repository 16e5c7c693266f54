"""Converting a timm model to a weights directory: the library behind `python -m bsa_jax.models.convert`.

The timm model name (built with random weights, plus `timm_kwargs`) defines the architecture; the
weights come from a checkpoint file (safetensors preferred; a torch pickle only with
`weights_only=True`), from timm's pretrained weights (network), or stay timm's random ones (offline
parity tests). Needs torch and timm.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterable

import numpy as np

from bsa_jax.models import convert
from bsa_jax.models.convert import common
from bsa_jax.models.convert import parity


@dataclasses.dataclass
class Result:
  """What `convert_to_dir` wrote, and the parity report when asked for one."""
  converted: convert.Converted
  source: dict  # as recorded in source.json: timm model, where the weights came from
  report: dict | None = None  # {stage: {'max_abs_diff', 'scale'}} of `parity.check`


def check_out(out: str, overwrite: bool) -> None:
  """Refuses an existing output before any work is done (an empty folder is fine).

  Raises:
    FileExistsError: `out` exists, holds files and `overwrite` is false.
  """
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)) and not overwrite:
    raise FileExistsError(f"--out {out} already exists; pass --overwrite to replace it, or choose "
                          "another --out.")


def _import_timm():
  try:
    import timm  # optional (requirements-test.txt): only to convert
    import torch  # optional, as timm
  except ImportError as e:
    raise ImportError(f"the converter needs torch and timm (pip install -r requirements-test.txt): "
                      f"{e}") from e
  return timm, torch


def _create(timm, name: str, kwargs: dict, **extra):
  return timm.create_model(name, **{**kwargs, **extra}).eval()


def _pretrained(timm, name: str, kwargs: dict, reference, **extra):
  try:
    return _create(timm, name, kwargs, pretrained=True, **extra)
  except Exception as e:  # network, hub or file errors: say how to do it offline
    hub_id = reference.pretrained_cfg.get("hf_hub_id") or f"timm/{name}"
    raise convert.ConversionError(
        f"could not load pretrained weights for {name}: {e}\nOffline, download the checkpoint "
        f"elsewhere (e.g. model.safetensors from https://huggingface.co/{hub_id}) and pass "
        "--checkpoint FILE.") from e


def _check_image(model, seed: int) -> np.ndarray:
  patch_embed = getattr(model, "patch_embed", None)
  h, w = (tuple(patch_embed.img_size) if patch_embed is not None
          else tuple(model.pretrained_cfg["input_size"][1:]))
  return np.random.RandomState(seed).randn(1, h, w, 3).astype(np.float32)


def convert_to_dir(timm_model: str, out: str, *, checkpoint: str | None = None,
                   pretrained: bool = False, timm_kwargs: dict | None = None,
                   dont_load: Iterable[str] | None = None, seed: int = 0, overwrite: bool = False,
                   check: bool = False, float64: bool = False) -> Result:
  """Converts `timm_model`'s weights into `out` (see `convert.save_converted`).

  Args:
    timm_model: timm model name, e.g. 'swin_tiny_patch4_window7_224'.
    out: output directory; refused up front if it exists, unless `overwrite`.
    checkpoint: a weights file (see `common.load_state_dict`); None with `pretrained=False` keeps
      timm's random weights (norms and BatchNorm statistics randomised too, `parity.randomize_`).
    pretrained: fetch timm's pretrained weights (needs the network or timm's cache).
    timm_kwargs: extra `timm.create_model` kwargs (e.g. {'img_size': 256}).
    dont_load: regexes of keys to skip; None = the classifier head.
    seed: of the random init and the check input.
    overwrite: replace an existing `out`.
    check: run timm and our port on one random image and report the difference per stage.
    float64: run that check in double precision on both sides.

  Raises:
    FileExistsError: `out` exists (before anything is converted).
    ConversionError: an unreadable or refused checkpoint (named), or keys/shapes that do not match.
    ImportError: torch or timm is missing.
  """
  if checkpoint is not None and pretrained:
    raise ValueError("give a checkpoint or pretrained=True, not both")
  check_out(out, overwrite)
  if checkpoint is not None:  # a refused or damaged file fails before timm builds anything
    path = common.preferred_checkpoint(checkpoint)
    state_dict = common.load_state_dict(path)
  timm, torch = _import_timm()
  timm_kwargs = dict(timm_kwargs or {})
  torch.manual_seed(seed)

  # The architecture (and, for the random init, the weights) from timm's own constructor.
  reference = parity.randomize_(_create(timm, timm_model, timm_kwargs), seed=seed)
  architecture = convert.convert_timm_model(reference, dont_load=dont_load)
  source = {"timm_model": timm_model, "timm_kwargs": timm_kwargs}
  if checkpoint is not None:
    layout = "microsoft" if convert.swin.is_microsoft_layout(state_dict) else "timm"
    converted = convert.convert_state_dict(state_dict, family=architecture.family,
                                           config=architecture.config, dont_load=dont_load)
    source.update(source="checkpoint", checkpoint=path, layout=layout)
    timm_model_ref = None
    if check:  # timm's own loader (with its checkpoint filter) is the reference
      timm_model_ref = _pretrained(timm, timm_model, timm_kwargs, reference,
                                   pretrained_cfg_overlay=dict(file=path))
  elif pretrained:
    timm_model_ref = _pretrained(timm, timm_model, timm_kwargs, reference)
    converted = convert.convert_timm_model(timm_model_ref, config=architecture.config,
                                           dont_load=dont_load)
    source.update(source="pretrained", pretrained_tag=timm_model_ref.pretrained_cfg.get("tag"))
  else:
    converted, timm_model_ref = architecture, reference
    source.update(source="random-init", seed=seed)

  convert.save_converted(out, converted, source=source, overwrite=overwrite)
  report = None
  if check:
    report = parity.check(timm_model_ref, converted, _check_image(timm_model_ref, seed),
                          float64=float64)
  return Result(converted, source, report)
