"""CLI: convert a timm Swin v1 / ResNet / ResNeXt into our Flax format, optionally checking parity.

    python -m bsa_jax.models.convert --timm-model swin_tiny_patch4_window7_224 \\
        --checkpoint swin_tiny_patch4_window7_224.pth --out /tmp/swin_t --check
    python -m bsa_jax.models.convert --timm-model resnext50_32x4d --random-init --out /tmp/rx --check
    python -m bsa_jax.models.convert --timm-model swin_tiny_patch4_window7_224 --pretrained --out DIR

The timm model NAME (built with random weights, plus `--timm-kwargs`) defines the architecture; the
weights must match it exactly. `--checkpoint` reads safetensors or a torch file with
`weights_only=True` (timm or original Microsoft Swin layout); `--pretrained` fetches through timm's
hub cache (needs network); `--random-init` keeps timm's random weights (norms and BatchNorm statistics
randomised too, see `parity.randomize_`), which is how parity is tested offline. `--check` runs timm
and our port on one random image and prints the max abs difference per stage, then
`max_abs_diff: X`; the exit status is 1 when a stage exceeds `--tol` (relative to max(1, max|x|)).
`--float64` runs that check in double precision on both sides.
Needs torch and timm (requirements-test.txt); reading the output back (`load_converted`) does not.
"""

import argparse
import json
import sys

import numpy as np

from bsa_jax.models import convert
from bsa_jax.models.convert import parity


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m bsa_jax.models.convert",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--timm-model", required=True, help="timm model name, e.g. resnext50_32x4d")
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--checkpoint", help="local .safetensors / .pth / .bin with the weights")
  source.add_argument("--random-init", action="store_true", help="timm's random weights (offline)")
  source.add_argument("--pretrained", action="store_true", help="fetch timm's weights (network)")
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--check", action="store_true", help="compare timm and ours per stage")
  parser.add_argument("--timm-kwargs", default="{}",
                      help='JSON kwargs for timm.create_model, e.g. \'{"img_size": 256}\'')
  parser.add_argument("--dont-load", action="append", default=None, metavar="REGEX",
                      help="keys to skip (repeatable); default: the classifier head")
  parser.add_argument("--seed", type=int, default=0, help="random init and check input")
  parser.add_argument("--tol", type=float, default=1e-4, help="--check failure threshold")
  parser.add_argument("--float64", action="store_true",
                      help="--check in float64 on both sides (separates rounding from porting errors)")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
  return parser.parse_args(argv)


def _create(timm, name: str, kwargs: dict, **extra):
  return timm.create_model(name, **{**kwargs, **extra}).eval()


def _pretrained(timm, name: str, kwargs: dict, reference, **extra):
  try:
    return _create(timm, name, kwargs, pretrained=True, **extra)
  except Exception as e:  # network, hub or file errors: say how to do it offline
    hub_id = reference.pretrained_cfg.get("hf_hub_id") or f"timm/{name}"
    raise SystemExit(f"could not load pretrained weights for {name}: {e}\n"
                     f"Offline, download the checkpoint elsewhere (e.g. model.safetensors from "
                     f"https://huggingface.co/{hub_id}) and pass --checkpoint FILE.") from e


def _check_image(model, seed: int) -> np.ndarray:
  patch_embed = getattr(model, "patch_embed", None)
  h, w = (tuple(patch_embed.img_size) if patch_embed is not None
          else tuple(model.pretrained_cfg["input_size"][1:]))
  return np.random.RandomState(seed).randn(1, h, w, 3).astype(np.float32)


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    import timm
    import torch
  except ImportError as e:
    raise SystemExit(f"the converter needs torch and timm (pip install -r requirements-test.txt): {e}")
  timm_kwargs = json.loads(args.timm_kwargs)
  torch.manual_seed(args.seed)

  # The architecture (and, for --random-init, the weights) from timm's own constructor.
  reference = parity.randomize_(_create(timm, args.timm_model, timm_kwargs), seed=args.seed)
  architecture = convert.convert_timm_model(reference, dont_load=args.dont_load)
  source = {"timm_model": args.timm_model, "timm_kwargs": timm_kwargs}
  if args.random_init:
    converted, timm_model = architecture, reference
    source.update(source="random-init", seed=args.seed)
  elif args.pretrained:
    timm_model = _pretrained(timm, args.timm_model, timm_kwargs, reference)
    converted = convert.convert_timm_model(timm_model, config=architecture.config,
                                           dont_load=args.dont_load)
    source.update(source="pretrained", pretrained_tag=timm_model.pretrained_cfg.get("tag"))
  else:
    state_dict = convert.load_state_dict(args.checkpoint)
    layout = "microsoft" if convert.swin.is_microsoft_layout(state_dict) else "timm"
    converted = convert.convert_state_dict(state_dict, family=architecture.family,
                                           config=architecture.config, dont_load=args.dont_load)
    source.update(source="checkpoint", checkpoint=args.checkpoint, layout=layout)
    timm_model = None
    if args.check:  # timm's own loader (with its checkpoint filter) is the reference
      timm_model = _pretrained(timm, args.timm_model, timm_kwargs, reference,
                               pretrained_cfg_overlay=dict(file=args.checkpoint))

  convert.save_converted(args.out, converted, source=source, overwrite=args.overwrite)
  print(f"wrote {args.out} ({converted.family}, {json.dumps(source)})")
  if not args.check:
    return 0

  report = parity.check(timm_model, converted, _check_image(timm_model, args.seed),
                        float64=args.float64)
  failed = False
  for name, r in report.items():
    bad = r["max_abs_diff"] > args.tol * max(1.0, r["scale"])
    failed |= bad
    print(f"{name}: max_abs_diff={r['max_abs_diff']:.3e} (max|timm|={r['scale']:.3g})"
          f"{'  FAIL' if bad else ''}")
  print(f"max_abs_diff: {max(r['max_abs_diff'] for r in report.values()):.3e}")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
