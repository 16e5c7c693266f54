"""Convert a timm Swin v1 / ResNet / ResNeXt / Res2Net into our Flax format, optionally checking parity.

    python -m bsa_jax.models.convert --timm_model swin_tiny_patch4_window7_224 \\
        --checkpoint swin_tiny_patch4_window7_224.safetensors --out /tmp/swin_t --check
    python -m bsa_jax.models.convert --timm_model resnext50_32x4d --random_init --out /tmp/rx --check
    python -m bsa_jax.models.convert --timm_model swin_tiny_patch4_window7_224 --pretrained --out DIR

The timm model NAME (built with random weights, plus `--timm_kwargs`) defines the architecture; the
weights must match it exactly. `--checkpoint` prefers safetensors (a `.safetensors` file beside a
`.pth` is read instead); a torch pickle is read with `weights_only=True` only, and one that holds
more than tensors is refused, naming the file and how to convert it to safetensors. A truncated file
is named. `--pretrained` fetches through timm's hub cache (needs network); `--random_init` keeps timm's
random weights (norms and BatchNorm statistics randomised too), which is how parity is tested offline.
An existing `--out` is refused before anything is converted (`--overwrite` replaces it). `--check` runs
timm and our port on one random image and prints the max abs difference per stage, then
`max_abs_diff: X`; the exit status is 1 when a stage exceeds `--tol` (relative to max(1, max|x|)).
`--float64` runs that check in double precision on both sides.
Needs torch and timm (requirements-test.txt); reading the output back (`load_converted`) does not.
"""

import json
import sys

from absl import flags

from bsa_jax import cli
from bsa_jax.models import convert
from bsa_jax.models.convert import from_timm

_TIMM_MODEL = flags.DEFINE_string("timm_model", None, "timm model name, e.g. resnext50_32x4d.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Local weights: .safetensors (preferred), or a torch .pth/.bin (read with "
    "weights_only=True).")
_RANDOM_INIT = flags.DEFINE_bool("random_init", False, "Keep timm's random weights (offline).")
_PRETRAINED = flags.DEFINE_bool("pretrained", False, "Fetch timm's pretrained weights (network).")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --out.")
_CHECK = flags.DEFINE_bool("check", False, "Compare timm and ours per stage.")
_TIMM_KWARGS = flags.DEFINE_string(
    "timm_kwargs", "{}", 'JSON kwargs for timm.create_model, e.g. \'{"img_size": 256}\'.')
_DONT_LOAD = flags.DEFINE_multi_string(
    "dont_load", None, "Regex of keys to skip (repeatable); default: the classifier head.")
_SEED = flags.DEFINE_integer("seed", 0, "Random init and check input.")
_TOL = flags.DEFINE_float("tol", 1e-4, "--check failure threshold.")
_FLOAT64 = flags.DEFINE_bool(
    "float64", False, "--check in float64 on both sides (separates rounding from porting errors).")


def main(argv) -> int:
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments {argv[1:]}; flags look like --name=value.")
  sources = [s for s, given in (("--checkpoint", _CHECKPOINT.value is not None),
                                ("--random_init", _RANDOM_INIT.value),
                                ("--pretrained", _PRETRAINED.value)) if given]
  if not _TIMM_MODEL.value or not _OUT.value or len(sources) != 1:
    raise cli.UserError("give --timm_model, --out and one of --checkpoint FILE, --random_init, "
                        f"--pretrained{f' (got {sources})' if sources else ''}.")
  try:
    timm_kwargs = json.loads(_TIMM_KWARGS.value)
  except json.JSONDecodeError as e:
    raise cli.UserError(f"--timm_kwargs={_TIMM_KWARGS.value}: not JSON ({e}).") from None
  try:
    result = from_timm.convert_to_dir(
        _TIMM_MODEL.value, _OUT.value, checkpoint=_CHECKPOINT.value, pretrained=_PRETRAINED.value,
        timm_kwargs=timm_kwargs, dont_load=_DONT_LOAD.value, seed=_SEED.value,
        overwrite=_OVERWRITE.value, check=_CHECK.value, float64=_FLOAT64.value)
  except (convert.ConversionError, ImportError) as e:  # the user's file or install, not a bug
    raise cli.UserError(str(e)) from None
  if _CHECKPOINT.value is not None and result.source["checkpoint"] != _CHECKPOINT.value:
    print(f"read {result.source['checkpoint']} (safetensors) instead of {_CHECKPOINT.value}",
          file=sys.stderr)
  print(f"wrote {_OUT.value} ({result.converted.family}, {json.dumps(result.source)})")
  if result.report is None:
    return 0
  failed = False
  for name, r in result.report.items():
    bad = r["max_abs_diff"] > _TOL.value * max(1.0, r["scale"])
    failed |= bad
    print(f"{name}: max_abs_diff={r['max_abs_diff']:.3e} (max|timm|={r['scale']:.3g})"
          f"{'  FAIL' if bad else ''}")
  print(f"max_abs_diff: {max(r['max_abs_diff'] for r in result.report.values()):.3e}")
  return 1 if failed else 0


if __name__ == "__main__":
  cli.run(main, prog="python -m bsa_jax.models.convert")
