"""Segmenting videos and folders of frames as streams: bounded memory, batched inference, an overlay video.

`segment_stream(trained, frames, out_dir)` reads frames lazily from any iterator (a video decoded by
PyAV, `read_video`, or a folder of images in natural order, `read_frames`), predicts them `batch_size`
at a time exactly as `predict` does for still images, and writes as it goes:

- `<name>_overlay.mp4`: the prediction drawn over each frame (H.264, the input's frame rate);
- `<name>_frames.csv`: per frame its index, source, time (s), predicted area (fraction of the frame)
  and maximum probability;
- `<name>_masks/<frame>.png` with `write_masks`;
- `<name>_summary.json`: frame count, throughput in frames/s and the settings.

Only one batch of frames is held at a time, so memory does not grow with the stream's length.
`ema` > 0 smooths the probabilities over time (an exponential moving average,
p̄_t = (1 - ema)·p_t + ema·p̄_{t-1}, reset when the frame size changes); 0 (the default) is off.
"""

from __future__ import annotations

import csv
import json
import os
import time
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from bsa_jax.tools import segment
from bsa_jax.data import io
from bsa_jax.data import registry
from bsa_jax.data.io import DataError
from bsa_jax.data.io import load_image
from bsa_jax.eval import overlays
from bsa_jax.workdir.load import load_trained


VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v")
DEFAULT_FPS = 25.0  # frame rate of the overlay video made from a folder of frames


def is_video(path: str) -> bool:
  """A file whose extension is a video container we decode (mp4, avi, mov, mkv, m4v)."""
  return os.path.isfile(path) and os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def list_frames(folder: str) -> list[str]:
  """Image files of `folder` in natural order (`frame_2` before `frame_10`), not recursive."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"{folder}: not a folder of frames.")
  names = sorted((n for n in os.listdir(folder) if io.is_image_file(n)), key=registry.natural_key)
  if not names:
    raise FileNotFoundError(f"{folder}: no image files ({', '.join(io.IMAGE_EXTENSIONS)}) to use "
                            "as frames.")
  return [os.path.join(folder, n) for n in names]


def video_fps(path: str) -> float:
  """The video's average frame rate (DEFAULT_FPS if the container does not say)."""
  with _open_video(path) as container:
    rate = container.streams.video[0].average_rate
  return float(rate) if rate else DEFAULT_FPS


def _open_video(path: str):
  import av  # PyAV (FFmpeg): only for video files
  try:
    container = av.open(path)
  except (av.error.FFmpegError, OSError) as e:
    raise DataError(f"{path}: cannot open the video ({type(e).__name__}: {e}). Is it a complete "
                    "mp4/avi/mov file? Re-export or re-download it.") from None
  if not container.streams.video:
    container.close()
    raise DataError(f"{path}: has no video stream.")
  return container


def read_video(path: str) -> Iterator[tuple[str, float, np.ndarray]]:
  """Yields (frame label, time in s, uint8 (H, W, 3) RGB) for each decoded frame, one at a time.

  A stream that breaks off mid-way (a truncated file) ends with a `DataError` naming the file and
  the last good frame; the frames before it have been yielded.
  """
  import av  # PyAV (FFmpeg): only for video files
  with _open_video(path) as container:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    index = -1
    try:
      for index, frame in enumerate(container.decode(stream)):
        seconds = float(frame.time) if frame.time is not None else index / DEFAULT_FPS
        yield f"{index:06d}", seconds, frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as e:
      raise DataError(f"{path}: the video is corrupt after frame {index} ({type(e).__name__}: "
                      f"{e}); the frames before it were segmented.") from None


def read_frames(paths: Sequence[str], fps: float, skipped: list[tuple[str, str]]
                ) -> Iterator[tuple[str, float, np.ndarray]]:
  """Yields (file stem, time in s at `fps`, uint8 (H, W, 3)); unreadable files go to `skipped`."""
  for index, path in enumerate(paths):
    try:
      image = load_image(path)
    except (DataError, OSError) as e:
      skipped.append((path, str(e)))
      continue
    yield os.path.splitext(os.path.basename(path))[0], index / fps, image


class VideoWriter:
  """Writes uint8 (H, W, 3) RGB frames to an H.264 mp4 as they come (odd sizes padded by one pixel)."""

  def __init__(self, path: str, fps: float):
    import av  # PyAV (FFmpeg): only for video files
    from fractions import Fraction  # only for the video time base
    self.path = path
    self._container = av.open(path, mode="w")
    self._stream = self._container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
    self._stream.pix_fmt = "yuv420p"
    self._stream.options = {"crf": "20", "preset": "veryfast"}
    self._size = None

  def write(self, frame: np.ndarray) -> None:
    import av  # PyAV (FFmpeg): only for video files
    h, w = frame.shape[:2]
    even = (h + h % 2, w + w % 2)
    if self._size is None:
      self._size = even
      self._stream.height, self._stream.width = even
    if frame.shape[:2] != self._size:  # frames of another size (a folder): fit them
      frame = np.asarray(Image.fromarray(frame).resize(self._size[::-1], Image.BILINEAR))
    elif even != (h, w):
      frame = np.pad(frame, ((0, even[0] - h), (0, even[1] - w), (0, 0)), mode="edge")
    for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
      self._container.mux(packet)

  def close(self) -> None:
    for packet in self._stream.encode():  # flush the encoder
      self._container.mux(packet)
    self._container.close()


def smooth(prob: np.ndarray, previous: np.ndarray | None, ema: float) -> np.ndarray:
  """(1 - ema)·prob + ema·previous; `prob` alone when off, at the start or after a size change."""
  if ema <= 0 or previous is None or previous.shape != prob.shape:
    return prob
  return (1.0 - ema) * prob + ema * previous


def _batches(frames: Iterable, size: int) -> Iterator[list]:
  batch = []
  for item in frames:
    batch.append(item)
    if len(batch) == size:
      yield batch
      batch = []
  if batch:
    yield batch


CSV_COLUMNS = ("frame", "source", "time_s", "predicted_area", "max_probability")


def segment_stream(trained, frames: Iterable[tuple[str, float, np.ndarray]], out_dir: str, *,
                   name: str = "video", fps: float = DEFAULT_FPS, batch_size: int = 8,
                   threshold: float = 0.5, ema: float = 0.0, write_masks: bool = False) -> dict:
  """Segments a stream of (label, time s, uint8 (H, W, 3)) frames; returns the summary (also saved).

  Args:
    trained: a loaded run (`bsa_jax.workdir.load.load_trained`, whose `tta` sets the flip averaging).
    frames: the frames, read lazily (`read_video`, `read_frames`).
    out_dir: where `<name>_overlay.mp4`, `<name>_frames.csv`, `<name>_summary.json` go.
    name: prefix of the output files.
    fps: frame rate of the overlay video.
    batch_size: frames per forward pass.
    threshold: probability threshold of the mask.
    ema: weight of the past in the temporal smoothing; 0 disables it.
    write_masks: also write each binary mask as `<name>_masks/<label>.png`.
  """
  if not 0.0 <= ema < 1.0:
    raise ValueError(f"--ema={ema}: the weight of the past must be in [0, 1) (0 disables smoothing).")
  os.makedirs(out_dir, exist_ok=True)
  mask_dir = os.path.join(out_dir, f"{name}_masks")
  if write_masks:
    os.makedirs(mask_dir, exist_ok=True)
  paths = {"video": os.path.join(out_dir, f"{name}_overlay.mp4"),
           "csv": os.path.join(out_dir, f"{name}_frames.csv"),
           "summary": os.path.join(out_dir, f"{name}_summary.json")}
  writer = VideoWriter(paths["video"], fps)
  count, model_seconds, first_batch_seconds, previous = 0, 0.0, None, None
  start = time.perf_counter()
  with open(paths["csv"], "w", newline="") as table:
    rows = csv.writer(table)
    rows.writerow(CSV_COLUMNS)
    try:
      for batch in _batches(frames, batch_size):
        tick = time.perf_counter()
        probs, _ = segment.predict_probabilities(trained, [f[2] for f in batch])
        elapsed = time.perf_counter() - tick
        if first_batch_seconds is None:
          first_batch_seconds = elapsed  # includes compilation: kept out of the model's frames/s
        else:
          model_seconds += elapsed
        for (label, seconds, frame), prob in zip(batch, probs):  # prob (H, W) in [0, 1]
          prob = previous = smooth(prob, previous, ema)
          mask = prob >= threshold
          writer.write(overlays.overlay(frame, prob, None, threshold))
          if write_masks:
            Image.fromarray(mask.astype(np.uint8) * 255).save(os.path.join(mask_dir, f"{label}.png"))
          rows.writerow([count, label, f"{seconds:.4f}", f"{float(mask.mean()):.6f}",
                         f"{float(prob.max()):.6f}"])
          count += 1
    finally:
      writer.close()
  total = time.perf_counter() - start
  after_first = max(count - min(batch_size, count), 0)
  summary = {
      "frames": count, "seconds": round(total, 3),
      "frames_per_second": round(count / total, 2) if total > 0 else None,
      "model_frames_per_second": (round(after_first / model_seconds, 2) if model_seconds > 0
                                  else None),
      "batch_size": batch_size, "threshold": threshold, "ema": ema, "tta": trained.tta,
      "checkpoint_step": int(trained.step), "outputs": {k: os.path.basename(v)
                                                       for k, v in paths.items()},
  }
  with open(paths["summary"], "w") as f:
    json.dump(summary, f, indent=2)
  return summary


def run(workdir: str, inputs: Sequence[str], output: str, *, step: str = "best",
        batch_size: int = 8, threshold: float = 0.5, ema: float = 0.0, write_masks: bool = False,
        tta: bool = False, fps: float | None = None, trained=None) -> dict:
  """Segments each video file and each folder of frames in `inputs`; returns per-input summaries.

  A folder is one stream of frames in natural order, at `fps` (default 25); a video keeps its rate.
  Unreadable frames of a folder are skipped and listed; a corrupt video stops at its last good frame
  with an error naming it.
  """
  trained = trained or load_trained(workdir, step, tta=tta)
  results, skipped = {}, []
  for item in inputs:
    name = os.path.splitext(os.path.basename(os.path.normpath(item)))[0]
    options = dict(name=name, batch_size=batch_size, threshold=threshold, ema=ema,
                   write_masks=write_masks)
    if is_video(item):
      rate = fps or video_fps(item)
      results[item] = segment_stream(trained, read_video(item), output, fps=rate, **options)
    elif os.path.isdir(item):
      rate = fps or DEFAULT_FPS
      frames = read_frames(list_frames(item), rate, skipped)
      results[item] = segment_stream(trained, frames, output, fps=rate, **options)
    else:
      raise FileNotFoundError(f"--input {item}: neither a video ({', '.join(VIDEO_EXTENSIONS)}) nor "
                              "a folder of frames.")
  return {"streams": results, "skipped": skipped, "step": trained.step}
