"""Segment a user's own images with a trained workdir: masks, probability maps, overlays, a web page.

  python -m bsa_jax.predict --workdir workdirs/kvasir --input my_images/ --output predictions/
  python -m bsa_jax.predict --workdir W --input a.jpg b.png --output out/ --tta

For each image (any size, any format PIL reads) it writes, at the original size, `masks/<stem>.png`
(binary), `probabilities/<stem>.png` (8-bit), `overlays/<stem>_overlay.png`, and an `index.html` with
thumbnails and the predicted area; with --attention also `attention/<stem>_{isam,fsam}.png`, heat maps
of the energy of the Image- and Feature-Space Attention Modules' outputs. A corrupt or unreadable file is reported and skipped, and the count is printed.
"""

from __future__ import annotations

import sys

from absl import flags

from bsa_jax import cli
from bsa_jax.tools import predict

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run's workdir (holds config.json).")
_INPUT = flags.DEFINE_multi_string(
    "input", None, "Image files and/or folders of images; repeat the flag or list them after it.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder for masks, probability maps and overlays.")
_STEP = flags.DEFINE_string("step", "best", "Checkpoint: best (on validation), latest, or a step.")
_TTA = flags.DEFINE_bool(
    "tta", False, "Average with the horizontally flipped prediction (a run trained with "
    "config.eval.tta always predicts with its own flips, as its tables were scored).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Images per forward pass.")
_THRESHOLD = flags.DEFINE_float("threshold", 0.5, "Probability threshold for the binary mask.")
_ATTENTION = flags.DEFINE_bool(
    "attention", False, "Also write heat maps of the attention modules' outputs (ISAM, FSAM energy).")
_FRAMES = flags.DEFINE_bool(
    "frames", False, "Treat each --input folder as the frames of one video (natural order): overlay "
    "video, per-frame CSV, frames/s.")
_EMA = flags.DEFINE_float("ema", 0.0, "Videos/frame folders: weight of the past in an exponential "
                          "moving average of the probabilities; 0 = off.")
_WRITE_MASKS = flags.DEFINE_bool("write_masks", False,
                                 "Videos/frame folders: also write each frame's binary mask.")
_FPS = flags.DEFINE_float("fps", None, "Frame rate of a frame folder's overlay video (default 25; a "
                          "video keeps its own).")
_MAX_PIXELS = flags.DEFINE_integer(
    "max_pixels", 100_000_000, "Images above this many pixels are skipped, naming the file "
    "(<= 0: only PIL's decompression-bomb limit).")


def main(argv) -> int:
  inputs = [*(_INPUT.value or []), *argv[1:]]  # `--input a.jpg b.png`: b.png is an input too
  if not (_WORKDIR.value and inputs and _OUTPUT.value):
    raise cli.UserError("--workdir, --input and --output are required (see --help).")
  result = predict.run(_WORKDIR.value, inputs, _OUTPUT.value, step=_STEP.value,
                       tta=_TTA.value, batch_size=_BATCH.value, threshold=_THRESHOLD.value,
                       attention=_ATTENTION.value,
                       max_pixels=_MAX_PIXELS.value if _MAX_PIXELS.value > 0 else None,
                       frames=_FRAMES.value, ema=_EMA.value, write_masks=_WRITE_MASKS.value,
                       fps=_FPS.value)
  for path, reason in result["skipped"]:
    print(f"skipped {path}: {reason}", file=sys.stderr)
  reasons = ", ".join(f"{n} {kind}" for kind, n in sorted(result["skip_reasons"].items()))
  print(f"{result['predicted']} image(s) segmented with checkpoint step {result['step']} "
        f"(masks, probabilities and overlays written for each), {len(result['skipped'])} skipped"
        + (f" ({reasons})" if reasons else "") + f"; see {result['index']}")
  return 1 if result["skipped"] and not result["predicted"] else 0


if __name__ == "__main__":
  cli.run(main, prog="python -m bsa_jax.predict")
