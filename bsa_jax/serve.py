"""A local web page for a trained run: upload an image or a short video, see and download the mask.

  python -m bsa_jax.serve --workdir workdirs/kvasir            # then open http://127.0.0.1:8000/
  python -m bsa_jax.serve --workdir W --port 8080 --max_upload_mb 50

Shows the overlay and the probability map side by side with the predicted area, a link to download
the mask (the same mask `predict` writes), and a model card with the run's provenance and test
metrics. It listens on 127.0.0.1 only unless --host is given; uploads are capped by --max_upload_mb,
--max_pixels and --max_video_frames, and nothing the browser sends is used as a file path.
"""

from __future__ import annotations

from absl import flags

from bsa_jax import cli
from bsa_jax.tools import serve

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run's workdir (holds config.json).")
_HOST = flags.DEFINE_string("host", "127.0.0.1",
                            "Interface to listen on; anything but loopback exposes the page.")
_PORT = flags.DEFINE_integer("port", 8000, "TCP port.")
_STEP = flags.DEFINE_string("step", "best", "Checkpoint: best (on validation), latest, or a step.")
_THRESHOLD = flags.DEFINE_float("threshold", 0.5, "Probability threshold for the binary mask.")
_MAX_UPLOAD = flags.DEFINE_float("max_upload_mb", serve.DEFAULT_MAX_UPLOAD_MB,
                                 "Largest accepted upload, in MiB.")
_MAX_PIXELS = flags.DEFINE_integer("max_pixels", serve.DEFAULT_MAX_PIXELS,
                                   "Largest accepted image (or video frame), in pixels.")
_MAX_FRAMES = flags.DEFINE_integer("max_video_frames", serve.DEFAULT_MAX_VIDEO_FRAMES,
                                   "Longest accepted video, in frames.")


def main(argv) -> int:
  del argv
  if not _WORKDIR.value:
    raise cli.UserError("--workdir is required (see --help).")
  serve.serve(_WORKDIR.value, host=_HOST.value, port=_PORT.value, step=_STEP.value,
              threshold=_THRESHOLD.value, max_upload_mb=_MAX_UPLOAD.value,
              max_pixels=_MAX_PIXELS.value, max_video_frames=_MAX_FRAMES.value)
  return 0


if __name__ == "__main__":
  cli.run(main, prog="python -m bsa_jax.serve")
