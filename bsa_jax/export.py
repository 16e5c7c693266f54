"""Export a trained run for use outside JAX training code: ONNX, StableHLO (jax.export), a model card.

  python -m bsa_jax.export --workdir workdirs/kvasir --out exported/kvasir --check

Writes `model.onnx`, `model.jax_export` (StableHLO through `jax.export`, batch-polymorphic) and
`model.json` (input size, channel order, normalisation, output meaning, threshold, provenance) for the
validation-selected checkpoint. `--check` runs both artifacts on real images (onnxruntime, and
`jax.export.deserialize`) against the JAX model and ends with `max_abs_diff: X`; it exits 1 if X is
above 1e-4. `--check_images` picks the images (default: the run's first test dataset).
"""

from __future__ import annotations

import os
import sys

from absl import flags

from bsa_jax import cli
from bsa_jax.tools import export

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run's workdir (holds config.json).")
_OUT = flags.DEFINE_string("out", None, "Output folder for model.onnx, model.jax_export, model.json.")
_STEP = flags.DEFINE_string("step", "best", "Checkpoint: best (on validation), latest, or a step.")
_CHECK = flags.DEFINE_bool("check", False, "Compare both artifacts with the JAX model on real images.")
_CHECK_IMAGES = flags.DEFINE_multi_string(
    "check_images", [], "Images or folders for --check (default: the run's first test dataset).")
_NUM_CHECK = flags.DEFINE_integer("num_check_images", 8, "How many default images --check uses.")
_PLATFORMS = flags.DEFINE_list("platforms", list(export.DEFAULT_PLATFORMS),
                               "jax.export lowering platforms of the StableHLO artifact.")
_THRESHOLD = flags.DEFINE_float("threshold", 0.5, "Mask threshold recorded in model.json.")


def main(argv) -> int:
  del argv
  if not (_WORKDIR.value and _OUT.value):
    raise cli.UserError("--workdir and --out are required (see --help).")
  try:
    result = export.run(_WORKDIR.value, _OUT.value, step=_STEP.value, check=_CHECK.value,
                        check_images=_CHECK_IMAGES.value, num_check_images=_NUM_CHECK.value,
                        platforms=_PLATFORMS.value, threshold=_THRESHOLD.value)
  except export.ExportError as e:
    raise cli.UserError(str(e)) from None
  card = result["card"]
  stablehlo, onnx_entry = card["artifacts"]["stablehlo"], card["artifacts"]["onnx"]
  print(f"{card['model']['name']} step {card['provenance']['checkpoint_step']} "
        f"({card['provenance']['selection']}) exported to {_OUT.value}:")
  print(f"  {onnx_entry['file']} (ONNX opset {onnx_entry['opset']})")
  print(f"  {stablehlo['file']} (StableHLO via jax.export, platforms "
        f"{','.join(stablehlo['platforms'])})")
  print(f"  {os.path.join(_OUT.value, export.CARD_FILE)}")
  report = result["check"]
  if report is None:
    return 0
  print(f"check on {report['images']} real image(s), probabilities vs the JAX model:")
  for name, values in report["per_artifact"].items():
    print(f"  {name}: max_abs_diff {values['max_abs_diff']:.3g}, mask pixels differing "
          f"{100 * values['mask_pixels_differing']:.4f}%")
  if not report["passed"]:  # stderr, so that stdout still ends with the figure
    print(f"check FAILED: max_abs_diff above the tolerance {export.TOLERANCE:g}", file=sys.stderr)
  print(f"max_abs_diff: {report['max_abs_diff']:.3g}")
  return 0 if report["passed"] else 1


if __name__ == "__main__":
  cli.run(main, prog="python -m bsa_jax.export")
