"""A local web page that segments an uploaded image or short video: the library behind `bsa_jax.serve`.

`create_app(trained, ...)` is a Starlette application:

- `GET /` the page (`serve_static/index.html`, `app.js`, `style.css`, read once at start);
- `GET /api/model` the model card: model, checkpoint and how it was chosen, provenance, test metrics;
- `POST /api/segment` the raw bytes of one image or video as the request body. An image comes back
  as PNG data URLs of the overlay, the probability map and the binary mask (the same mask as
  `predict` writes) with the predicted area; a video as an H.264 overlay video, its per-frame CSV
  and its frames/s.

Safe by default: uploads are read into memory up to `max_upload_bytes` (413 beyond), images are
refused above `max_pixels` before decoding (and by PIL's decompression-bomb rule), videos above
`max_video_frames` frames or `max_pixels` per frame, corrupt files get a 422 naming the problem, and
nothing from the client (no file name, no path) is ever used to touch the file system: a video is
segmented in a fresh temporary folder that is deleted afterwards. Predictions run one at a time.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tempfile
import threading
from typing import Any

import numpy as np
from PIL import Image

from bsa_jax.tools import segment

from bsa_jax.data import io as data_io
from bsa_jax.data.io import DataError
from bsa_jax.eval import overlays
from bsa_jax.tools import video
from bsa_jax.workdir.load import load_trained


STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "serve_static")
STATIC_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
                "/app.js": ("app.js", "text/javascript; charset=utf-8"),
                "/style.css": ("style.css", "text/css; charset=utf-8")}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; media-src 'self' data:; "
                                "connect-src 'self'; frame-ancestors 'none'"),
}
DEFAULT_MAX_UPLOAD_MB = 25.0
DEFAULT_MAX_PIXELS = 25_000_000  # 25 megapixels per image or video frame
DEFAULT_MAX_VIDEO_FRAMES = 300


class UploadError(ValueError):
  """An upload that is refused; `status` is the HTTP status and the message says why."""

  def __init__(self, message: str, status: int = 422):
    super().__init__(message)
    self.status = status


# ----------------------------------------------------------------------------------------------------
# Decoding uploads (pure functions, testable without a server).

def _png_data_url(array: np.ndarray) -> str:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _data_url(data: bytes, mime: str) -> str:
  return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def sniff(data: bytes) -> str:
  """'image' if PIL recognises the bytes, 'video' if FFmpeg finds a video stream, else refuses."""
  try:
    with Image.open(io.BytesIO(data)):
      return "image"
  except Image.DecompressionBombError as e:
    raise UploadError(f"the image is too large to decode safely ({e}).", 413) from None
  except (OSError, ValueError, SyntaxError):
    pass
  import av  # PyAV (FFmpeg): only for video files
  try:
    with av.open(io.BytesIO(data)) as container:
      if container.streams.video:
        return "video"
  except (av.error.FFmpegError, OSError, ValueError):
    pass
  raise UploadError("the upload is neither an image PIL reads (PNG, JPEG, BMP, TIFF, ...) nor a "
                    "video FFmpeg decodes (mp4, avi, mov); choose another file.", 415)


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
  """uint8 (H, W, 3) RGB of an uploaded image, refusing more than `max_pixels` before decoding."""
  try:
    with Image.open(io.BytesIO(data)) as header:
      width, height = header.size
  except Image.DecompressionBombError as e:
    raise UploadError(f"the image is too large to decode safely ({e}).", 413) from None
  except (OSError, ValueError, SyntaxError) as e:
    raise UploadError(f"the upload is not a readable image ({type(e).__name__}: {e}).") from None
  if width * height > max_pixels:
    raise UploadError(f"the image is {width}x{height} = {width * height:,} pixels; this page takes "
                      f"at most {max_pixels:,} (start it with a larger --max_pixels).", 413)
  try:  # the same decoder (and corrupt/truncated-file rule) as training and predict
    return data_io.load_image(io.BytesIO(data))
  except data_io.DataError as e:
    reason = str(e).split(": ", 1)[-1]
    raise UploadError(f"the uploaded image cannot be decoded: {reason}") from None


def check_video(data: bytes, max_pixels: int, max_frames: int) -> None:
  """Refuses a video whose frame size or frame count is above the limits (from its header)."""
  import av  # PyAV (FFmpeg): only for video files
  try:
    with av.open(io.BytesIO(data)) as container:
      stream = container.streams.video[0]
      width, height = stream.codec_context.width, stream.codec_context.height
      frames = stream.frames
  except (av.error.FFmpegError, OSError, ValueError, IndexError) as e:
    raise UploadError(f"the uploaded video cannot be opened ({type(e).__name__}: {e}).") from None
  if width * height > max_pixels:
    raise UploadError(f"the video's frames are {width}x{height}; this page takes at most "
                      f"{max_pixels:,} pixels per frame.", 413)
  if frames and frames > max_frames:
    raise UploadError(f"the video has {frames} frames; this page takes at most {max_frames} "
                      "(use `python -m bsa_jax.predict --input video.mp4` for long videos).", 413)


# ----------------------------------------------------------------------------------------------------
# Predictions.

def segment_image(trained, image: np.ndarray, threshold: float) -> dict[str, Any]:
  """Overlay, probability map and mask of one uint8 (H, W, 3) image, computed as `predict` does."""
  (prob,), _ = segment.predict_probabilities(trained, [image])  # (H, W) in [0, 1]
  mask = ((prob >= threshold) * 255).astype(np.uint8)  # exactly predict's masks/<stem>.png
  return {
      "kind": "image", "width": int(image.shape[1]), "height": int(image.shape[0]),
      "predicted_area": float((prob >= threshold).mean()), "max_probability": float(prob.max()),
      "threshold": threshold,
      "overlay": _png_data_url(overlays.overlay(image, prob, None, threshold)),
      "probability": _png_data_url(overlays.colorize(prob)),
      "mask": _png_data_url(mask),
  }


def _limited_frames(frames, max_frames: int):
  """Passes frames through, refusing the stream at frame `max_frames` + 1 (headers can lie)."""
  for index, frame in enumerate(frames):
    if index >= max_frames:
      raise UploadError(f"the video has more than {max_frames} frames; this page takes at most "
                        f"{max_frames}.", 413)
    yield frame


def segment_video(trained, data: bytes, threshold: float, max_pixels: int, max_frames: int,
                  batch_size: int = 8) -> dict[str, Any]:
  """Overlay video (H.264 data URL), per-frame CSV and throughput of an uploaded short video."""
  check_video(data, max_pixels, max_frames)
  with tempfile.TemporaryDirectory(prefix="bsa_serve_") as work:  # server-chosen, deleted after
    source = os.path.join(work, "upload.bin")
    with open(source, "wb") as f:
      f.write(data)
    try:
      frames = _limited_frames(video.read_video(source), max_frames)
      summary = video.segment_stream(trained, frames, work, name="upload",
                                     fps=video.video_fps(source), batch_size=batch_size,
                                     threshold=threshold)
    except DataError as e:
      raise UploadError(f"the uploaded video cannot be decoded: {str(e).split(': ', 1)[-1]}") from None
    with open(os.path.join(work, summary["outputs"]["video"]), "rb") as f:
      overlay_video = f.read()
    with open(os.path.join(work, summary["outputs"]["csv"]), "rb") as f:
      table = f.read()
  areas = [float(line.split(b",")[3]) for line in table.splitlines()[1:]]
  return {"kind": "video", "frames": summary["frames"],
          "frames_per_second": summary["frames_per_second"], "threshold": threshold,
          "mean_predicted_area": float(np.mean(areas)) if areas else 0.0,
          "max_predicted_area": float(np.max(areas)) if areas else 0.0,
          "video": _data_url(overlay_video, "video/mp4"), "csv": _data_url(table, "text/csv")}


# ----------------------------------------------------------------------------------------------------
# The model card.

def model_card(trained, workdir: str, threshold: float) -> dict[str, Any]:
  """Model, checkpoint, provenance and test metrics of the served run (from results/)."""
  import jax  # jax only for this check, not to import the module
  config = trained.config
  path = os.path.join(workdir, "results", "test_metrics.json")
  results = {}
  if os.path.exists(path):
    with open(path) as f:
      results = json.load(f)
  params = int(sum(np.size(x) for x in jax.tree.leaves(trained.variables.get("params", {}))))
  return {
      "model": config.model_name, "variant": config.model.get("variant", ""), "parameters": params,
      "image_size": trained.image_size, "threshold": threshold,
      "checkpoint_step": int(trained.step), "selection": trained.selection,
      "workdir": os.path.basename(os.path.normpath(workdir)),
      "provenance": results.get("provenance", {}), "test_metrics": results.get("results", {}),
  }


# ----------------------------------------------------------------------------------------------------
# The application.

async def _read_body(request, limit: int) -> bytes:
  """The request body, refused with 413 as soon as it exceeds `limit` bytes."""
  declared = request.headers.get("content-length")
  if declared is not None and declared.isdigit() and int(declared) > limit:
    raise UploadError(f"the upload is {int(declared):,} bytes; this page takes at most {limit:,} "
                      "(start it with a larger --max_upload_mb).", 413)
  chunks, size = [], 0
  async for chunk in request.stream():
    size += len(chunk)
    if size > limit:
      raise UploadError(f"the upload is larger than {limit:,} bytes; this page takes at most that "
                        "(start it with a larger --max_upload_mb).", 413)
    chunks.append(chunk)
  return b"".join(chunks)


def create_app(trained, workdir: str, *, threshold: float = 0.5,
               max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 2**20),
               max_pixels: int = DEFAULT_MAX_PIXELS,
               max_video_frames: int = DEFAULT_MAX_VIDEO_FRAMES):
  """The Starlette app serving `trained` (a loaded run of `workdir`)."""
  from starlette.applications import Starlette  # web framework: only when the page is served
  from starlette.concurrency import run_in_threadpool  # web framework: only when the page is served
  from starlette.responses import JSONResponse, Response  # web framework: only when the page is served
  from starlette.routing import Route  # web framework: only when the page is served

  assets = {}
  for route, (name, mime) in STATIC_FILES.items():
    with open(os.path.join(STATIC_DIR, name), "rb") as f:
      assets[route] = (f.read(), mime)
  card = model_card(trained, workdir, threshold)
  lock = threading.Lock()  # one prediction at a time: the model is large, the cores few

  def predict(data: bytes) -> dict:
    kind = sniff(data)
    with lock:
      if kind == "image":
        return segment_image(trained, decode_image(data, max_pixels), threshold)
      return segment_video(trained, data, threshold, max_pixels, max_video_frames)

  async def static(request):
    body, mime = assets[request.url.path]
    return Response(body, media_type=mime, headers=SECURITY_HEADERS)

  async def model(request):
    return JSONResponse(card, headers=SECURITY_HEADERS)

  async def segment(request):
    try:
      data = await _read_body(request, max_upload_bytes)
      if not data:
        raise UploadError("the upload is empty; choose an image or a video.", 400)
      result = await run_in_threadpool(predict, data)
    except UploadError as e:
      return JSONResponse({"error": str(e)}, status_code=e.status, headers=SECURITY_HEADERS)
    return JSONResponse(result, headers=SECURITY_HEADERS)

  routes = [Route(path, static, methods=["GET"]) for path in STATIC_FILES]
  routes += [Route("/api/model", model, methods=["GET"]),
             Route("/api/segment", segment, methods=["POST"])]
  return Starlette(routes=routes)


def warm_up(trained) -> None:
  """Compiles the one-image predictor before the first visitor waits for it."""
  segment.predict_probabilities(trained, [np.zeros((32, 32, 3), np.uint8)])


def is_loopback(host: str) -> bool:
  return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def serve(workdir: str, *, host: str = "127.0.0.1", port: int = 8000, step: str = "best",
          threshold: float = 0.5, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
          max_pixels: int = DEFAULT_MAX_PIXELS,
          max_video_frames: int = DEFAULT_MAX_VIDEO_FRAMES) -> None:
  """Loads the run, builds the app and serves it with uvicorn until interrupted."""
  import uvicorn  # ASGI server: only when the page is served
  from absl import logging  # only when the page is served
  trained = load_trained(workdir, step)
  app = create_app(trained, workdir, threshold=threshold,
                   max_upload_bytes=int(max_upload_mb * 2**20), max_pixels=max_pixels,
                   max_video_frames=max_video_frames)
  warm_up(trained)
  if not is_loopback(host):
    logging.warning("Serving on %s: anyone who can reach this machine can upload files. "
                    "Use the default 127.0.0.1 unless you need otherwise.", host)
  print(f"Serving {trained.config.model_name} (step {trained.step}) on http://{host}:{port}/ "
        "(Ctrl+C stops)", flush=True)
  uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False,
              limit_concurrency=32, timeout_keep_alive=5)
