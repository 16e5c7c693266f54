"""Video and frame-stream inference: natural frame order, a video made of real Kvasir frames segmented
as a stream (overlay video, per-frame CSV, frames/s), equality with `predict` on the same frames, EMA
smoothing, corrupt input, and peak memory that does not grow with the number of frames."""

import csv
import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest
from PIL import Image

from bsa_jax import config_lib
from bsa_jax.data.io import DataError
from bsa_jax.tools import video
from tests.conftest import data_dir

REPO = config_lib.REPO_ROOT
FRAME_HW = (144, 176)  # (H, W) of the test videos' frames


@pytest.fixture(scope="module")
def kvasir_frames():
  """24 real Kvasir images at FRAME_HW: the material of the test videos."""
  folder = data_dir("kvasir_seg", "images")
  names = sorted(os.listdir(folder))[:24]
  return [np.asarray(Image.open(os.path.join(folder, n)).convert("RGB").resize(FRAME_HW[::-1]))
          for n in names]


def write_video(path: str, frames, count: int, fps: int = 25) -> str:
  """An H.264 mp4 of `count` frames cycling through `frames`, each shifted a little (camera motion)."""
  writer = video.VideoWriter(path, fps)
  for i in range(count):
    writer.write(np.roll(frames[(i // 5) % len(frames)], shift=i % 5, axis=1))
  writer.close()
  return path


def decoded_frames(path: str) -> list:
  with av.open(path) as container:
    return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


# ----------------------------------------------------------------------------------------------------
# Pure functions.

def test_frames_are_listed_in_natural_order(tmp_path):
  for name in ["frame_10.png", "frame_2.png", "frame_1.png", "frame_9.jpg", "notes.txt", ".x.png"]:
    (tmp_path / name).write_bytes(b"")
  assert [os.path.basename(p) for p in video.list_frames(str(tmp_path))] == [
      "frame_1.png", "frame_2.png", "frame_9.jpg", "frame_10.png"]
  with pytest.raises(FileNotFoundError, match="not a folder"):
    video.list_frames(str(tmp_path / "missing"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no image files"):
    video.list_frames(str(tmp_path / "empty"))


def test_is_video_by_extension(tmp_path):
  for name in ["a.mp4", "b.AVI", "c.mov", "d.png"]:
    (tmp_path / name).write_bytes(b"x")
  assert [video.is_video(str(tmp_path / n)) for n in ["a.mp4", "b.AVI", "c.mov", "d.png"]] == [
      True, True, True, False]
  assert not video.is_video(str(tmp_path / "missing.mp4"))


def test_ema_smoothing_is_off_by_default_and_resets_on_a_new_size():
  a, b = np.full((2, 2), 1.0), np.zeros((2, 2))
  assert video.smooth(b, a, 0.0) is b
  np.testing.assert_allclose(video.smooth(b, a, 0.75), np.full((2, 2), 0.75))
  assert video.smooth(np.zeros((3, 3)), a, 0.75).shape == (3, 3)


def test_video_writer_round_trip_keeps_count_and_pads_odd_sizes(tmp_path):
  frames = [np.full((15, 21, 3), 40 * i, np.uint8) for i in range(6)]
  path = str(tmp_path / "odd.mp4")
  writer = video.VideoWriter(path, 10)
  for f in frames:
    writer.write(f)
  writer.close()
  got = decoded_frames(path)
  assert len(got) == 6 and got[0].shape == (16, 22, 3)
  assert abs(int(got[3][:15, :21].mean()) - 120) <= 3  # lossy, but the frame content is kept


# ----------------------------------------------------------------------------------------------------
# Streams end to end.

def test_a_video_of_real_kvasir_frames_is_segmented_as_a_stream(tiny_run, kvasir_frames, tmp_path,
                                                                run_command):
  """`python -m bsa_jax.predict --input colonoscopy.mp4` (300 frames), run in this process."""
  source = write_video(str(tmp_path / "colonoscopy.mp4"), kvasir_frames, 300)
  out = tmp_path / "out"
  status, stdout, stderr = run_command("bsa_jax.predict", "--workdir", tiny_run, "--input", source,
                                       "--output", str(out), "--batch_size", "16")
  assert status == 0, stderr[-3000:]
  assert "300 image(s)" in stdout
  summary = json.load(open(out / "colonoscopy_summary.json"))
  assert summary["frames"] == 300 and summary["frames_per_second"] > 0
  rows = list(csv.DictReader(open(out / "colonoscopy_frames.csv")))
  assert [int(r["frame"]) for r in rows] == list(range(300))
  assert list(rows[0]) == list(video.CSV_COLUMNS)
  np.testing.assert_allclose([float(r["time_s"]) for r in rows[:3]], [0, 0.04, 0.08], atol=1e-3)
  for r in rows[::50]:
    assert 0 <= float(r["predicted_area"]) <= 1 and 0 < float(r["max_probability"]) <= 1
  overlay = decoded_frames(str(out / "colonoscopy_overlay.mp4"))
  assert len(overlay) == 300 and overlay[0].shape == (*FRAME_HW, 3)
  assert not (out / "colonoscopy_masks").exists()  # masks only on request


def test_a_folder_of_frames_gives_predicts_masks_and_ema_changes_them(tiny_run, kvasir_frames,
                                                                      tmp_path):
  from bsa_jax.tools import predict
  from bsa_jax.workdir.load import load_trained
  folder = tmp_path / "frames"
  folder.mkdir()
  for i, frame in enumerate(kvasir_frames[:10]):
    Image.fromarray(frame).save(folder / f"frame_{i + 1}.png")
  (folder / "frame_11.png").write_bytes(b"\x89PNG broken")  # unreadable: skipped, reported
  trained = load_trained(tiny_run)
  result = video.run(tiny_run, [str(folder)], str(tmp_path / "plain"), batch_size=4,
                     write_masks=True, trained=trained)
  assert [os.path.basename(p) for p, _ in result["skipped"]] == ["frame_11.png"]
  rows = list(csv.DictReader(open(tmp_path / "plain" / "frames_frames.csv")))
  assert [r["source"] for r in rows] == [f"frame_{i}" for i in range(1, 11)]  # natural order
  predict.run(tiny_run, [str(folder / f"frame_{i}.png") for i in range(1, 11)],
              str(tmp_path / "still"), batch_size=4)
  for i in range(1, 11):  # the stream's masks are predict's masks
    stream_mask = np.asarray(Image.open(tmp_path / "plain" / "frames_masks" / f"frame_{i}.png"))
    still_mask = np.asarray(Image.open(tmp_path / "still" / "masks" / f"frame_{i}.png"))
    np.testing.assert_array_equal(stream_mask, still_mask)
    assert (stream_mask == 255).mean() == pytest.approx(float(rows[i - 1]["predicted_area"]),
                                                        abs=1e-6)
  smoothed = video.run(tiny_run, [str(folder)], str(tmp_path / "ema"), batch_size=4, ema=0.9,
                       trained=trained)
  assert smoothed["streams"][str(folder)]["ema"] == 0.9
  ema_rows = list(csv.DictReader(open(tmp_path / "ema" / "frames_frames.csv")))
  assert ema_rows[0]["max_probability"] == rows[0]["max_probability"]  # nothing to smooth yet
  assert [r["max_probability"] for r in ema_rows[1:]] != [r["max_probability"] for r in rows[1:]]


def test_a_corrupt_video_is_refused_naming_the_file(tiny_run, kvasir_frames, tmp_path):
  good = write_video(str(tmp_path / "good.mp4"), kvasir_frames, 20)
  broken = tmp_path / "broken.mp4"
  broken.write_bytes(open(good, "rb").read()[:3000])
  with pytest.raises(DataError, match="broken.mp4"):
    video.run(tiny_run, [str(broken)], str(tmp_path / "out"))
  with pytest.raises(ValueError, match="ema"):
    video.run(tiny_run, [good], str(tmp_path / "out"), ema=1.0)


# Loads the run, streams a short warm-up video (compiles the batch shape), resets the kernel's peak-RSS
# mark (/proc/self/clear_refs, 5), streams the measured video and reports that stream's own peak.
PEAK_RSS = """
import json, resource, sys
from bsa_jax.tools import video
from bsa_jax.workdir.load import load_trained
workdir, warm_up, source, out = sys.argv[1:5]
trained = load_trained(workdir)
video.run(workdir, [warm_up], out + "_warm_up", batch_size=20, trained=trained)
with open("/proc/self/clear_refs", "w") as f:
  f.write("5")
result = video.run(workdir, [source], out, batch_size=20, trained=trained)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
summary = result["streams"][source]
print(json.dumps({"frames": summary["frames"], "fps": summary["frames_per_second"],
                  "stream_peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024,
                  "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def stream_peak_rss(workdir: str, warm_up: str, source: str, out: str) -> dict:
  """Runs PEAK_RSS in a fresh process; returns its figures."""
  proc = subprocess.run([sys.executable, "-c", PEAK_RSS, workdir, warm_up, source, out], cwd=REPO,
                        capture_output=True, text=True, timeout=1800)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # two child processes measuring their peak RSS (~25 s)
def test_peak_memory_does_not_grow_with_the_number_of_frames(tiny_run, kvasir_frames, tmp_path):
  """Peak RSS while streaming 300 and 1,200 frames (after load and compilation): the same within
  noise, where keeping the frames would add ~4 x 900 x 76 KB = 270 MB at 1,200."""
  warm_up = write_video(str(tmp_path / "warm_up.mp4"), kvasir_frames, 40)
  measured = {}
  for count in (300, 1200):
    source = write_video(str(tmp_path / f"v{count}.mp4"), kvasir_frames, count)
    measured[count] = stream_peak_rss(tiny_run, warm_up, source, str(tmp_path / f"out{count}"))
    assert measured[count]["frames"] == count
  print("stream peak RSS (MB) at 300 / 1200 frames:", measured[300]["stream_peak_rss_mb"],
        measured[1200]["stream_peak_rss_mb"])
  assert measured[1200]["stream_peak_rss_mb"] <= measured[300]["stream_peak_rss_mb"] + 40
