"""The local web page: its API and limits over real HTTP, and end to end in headless Chromium
(Playwright): upload a real Kvasir image, wait for the overlay, and the downloaded mask is `predict`'s."""

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from bsa_jax import config_lib
from bsa_jax.tools import serve
from tests.conftest import data_dir

REPO = config_lib.REPO_ROOT
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def kvasir_image():
  folder = data_dir("kvasir_seg", "images")
  return os.path.join(folder, sorted(os.listdir(folder))[0])


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def predict_mask(workdir: str, image: str, out: str) -> np.ndarray:
  from bsa_jax.tools import predict
  predict.run(workdir, [image], out)
  stem = os.path.splitext(os.path.basename(image))[0]
  return np.asarray(Image.open(os.path.join(out, "masks", f"{stem}.png")))


def decode_data_url(url: str) -> bytes:
  header, payload = url.split(",", 1)
  assert header.endswith(";base64")
  return base64.b64decode(payload)


@pytest.fixture(scope="module")
def server(tiny_run):
  """The app in a uvicorn thread on 127.0.0.1 with small limits: 300 KB, 1 megapixel, 30 frames."""
  import uvicorn
  from bsa_jax.workdir.load import load_trained
  trained = load_trained(tiny_run)
  app = serve.create_app(trained, tiny_run, max_upload_bytes=300_000, max_pixels=1_000_000,
                         max_video_frames=30)
  port = free_port()
  instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
  thread = threading.Thread(target=instance.run, daemon=True)
  thread.start()
  deadline = time.time() + 60
  while not instance.started:
    assert time.time() < deadline and thread.is_alive(), "the server did not start"
    time.sleep(0.05)
  yield f"http://127.0.0.1:{port}"
  instance.should_exit = True
  thread.join(timeout=10)


def post(url: str, data: bytes) -> tuple[int, dict]:
  request = urllib.request.Request(url + "/api/segment", data=data, method="POST",
                                   headers={"Content-Type": "application/octet-stream"})
  try:
    with urllib.request.urlopen(request, timeout=300) as response:
      return response.status, json.load(response)
  except urllib.error.HTTPError as e:
    return e.code, json.load(e)


def png_bytes(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


# ----------------------------------------------------------------------------------------------------
# API over HTTP.

def test_page_and_model_card(server, tiny_run):
  with urllib.request.urlopen(server + "/", timeout=30) as response:
    page = response.read().decode()
    assert "Choose a file" in page and "Model card" in page
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
  with urllib.request.urlopen(server + "/api/model", timeout=30) as response:
    card = json.load(response)
  results = json.load(open(os.path.join(tiny_run, "results", "test_metrics.json")))
  assert card["model"] == "bsanet" and card["image_size"] == 64
  assert card["checkpoint_step"] == results["provenance"]["checkpoint_step"]
  assert card["provenance"]["config_hash"] == results["provenance"]["config_hash"]
  assert card["test_metrics"] == results["results"]


def test_image_upload_returns_predicts_mask(server, tiny_run, kvasir_image, tmp_path):
  status, result = post(server, open(kvasir_image, "rb").read())
  assert status == 200, result
  mask = np.asarray(Image.open(io.BytesIO(decode_data_url(result["mask"]))))
  np.testing.assert_array_equal(mask, predict_mask(tiny_run, kvasir_image, str(tmp_path)))
  assert result["predicted_area"] == pytest.approx((mask == 255).mean())
  overlay = Image.open(io.BytesIO(decode_data_url(result["overlay"])))
  assert overlay.size == Image.open(kvasir_image).size == (result["width"], result["height"])
  assert Image.open(io.BytesIO(decode_data_url(result["probability"]))).size == overlay.size


def test_limits_and_corrupt_files_are_refused_with_reasons(server, kvasir_image):
  jpeg = open(kvasir_image, "rb").read()
  cases = [
      (b"", 400, "empty"),
      (b"plain text, not an image" * 10, 415, "neither an image"),
      (jpeg[:len(jpeg) // 3], 422, "cannot be decoded"),  # truncated JPEG
      (png_bytes(np.zeros((1100, 1000, 3), np.uint8)), 413, "pixels"),  # small file, many pixels
      (os.urandom(400_000), 413, "at most"),  # above the 300 KB cap
  ]
  for data, status, words in cases:
    got_status, result = post(server, data)
    assert got_status == status and words in result["error"], (status, result)


def test_short_video_upload_and_its_frame_limit(server, tmp_path, kvasir_image):
  from bsa_jax.tools import video
  frame = np.asarray(Image.open(kvasir_image).convert("RGB").resize((128, 96)))

  def clip(count):
    path = str(tmp_path / f"clip{count}.mp4")
    writer = video.VideoWriter(path, 10)
    for i in range(count):
      writer.write(np.roll(frame, i, axis=1))
    writer.close()
    return open(path, "rb").read()

  status, result = post(server, clip(12))
  assert status == 200, result
  assert result["kind"] == "video" and result["frames"] == 12 and result["frames_per_second"] > 0
  assert decode_data_url(result["video"])[4:8] == b"ftyp"  # an mp4 the browser plays
  assert len(decode_data_url(result["csv"]).decode().strip().splitlines()) == 13
  status, result = post(server, clip(40))
  assert status == 413 and "30" in result["error"]


def test_loopback_by_default():
  assert serve.is_loopback("127.0.0.1") and not serve.is_loopback("0.0.0.0")
  import inspect
  assert inspect.signature(serve.serve).parameters["host"].default == "127.0.0.1"


# ----------------------------------------------------------------------------------------------------
# End to end in a real browser.

@pytest.fixture(scope="module")
def served_page(tiny_run):
  """`python -m bsa_jax.serve --workdir W --port P` as a user starts it."""
  port = free_port()
  proc = subprocess.Popen([sys.executable, "-m", "bsa_jax.serve", "--workdir", tiny_run, "--port",
                           str(port)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  deadline = time.time() + 300
  while True:
    try:
      urllib.request.urlopen(f"http://127.0.0.1:{port}/api/model", timeout=5).close()
      break
    except OSError:
      if proc.poll() is not None or time.time() > deadline:
        proc.kill()
        pytest.fail(f"serve did not start: {proc.stdout.read()[-3000:]}")
      time.sleep(0.5)
  yield f"http://127.0.0.1:{port}/"
  proc.terminate()
  proc.wait(timeout=30)


def test_browser_upload_shows_overlay_and_downloads_predicts_mask(served_page, tiny_run,
                                                                  kvasir_image, tmp_path):
  if not os.path.exists(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
  from playwright.sync_api import sync_playwright
  with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
    try:
      page = browser.new_page(viewport={"width": 1280, "height": 900})
      page.goto(served_page)
      # Selectors, not wait_for_function: the page's CSP forbids the eval that would need.
      page.wait_for_selector("#card-body table")
      page.set_input_files("#file", kvasir_image)
      page.wait_for_selector("body[data-state='done'], body[data-state='error']", timeout=240_000)
      assert page.get_attribute("body", "data-state") == "done", page.inner_text("#status")
      assert page.get_attribute("#overlay", "src").startswith("data:image/png;base64,")
      assert page.locator("#overlay").evaluate("img => img.naturalWidth") == \
          Image.open(kvasir_image).size[0]
      assert "Predicted area" in page.inner_text("#area")
      with page.expect_download() as download_info:
        page.click("#download")
      download_path = str(tmp_path / "downloaded_mask.png")
      download_info.value.save_as(download_path)
      screenshot = os.environ.get("BSA_SERVE_SCREENSHOT")  # e.g. docs/serve_screenshot.png
      if screenshot:
        page.screenshot(path=screenshot, full_page=True)
    finally:
      browser.close()
  mask = np.asarray(Image.open(download_path))
  np.testing.assert_array_equal(mask, predict_mask(tiny_run, kvasir_image, str(tmp_path / "pred")))
