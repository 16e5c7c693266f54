"""Writing a very large PNG: our band writer (`bsa_jax.tools.png_rows.PngRows`) vs pypng vs PIL.

`predict` writes its outputs band by band so that a 12000x12000 input does not need whole-image
buffers. pypng is the well-kept library that can also stream rows; PIL needs the whole image. This
benchmark writes the same pixels with each and reports wall time, the writer process's peak RSS,
the file size, and whether the decoded pixels equal the source (checked band by band with PIL).

  python -m bench.png_bench                     # 12000x12000 RGB overlay and grey mask
  python -m bench.png_bench --size=4000 --repeats=3

The pixels are a real Kvasir-SEG image and its mask scaled up bilinearly, one band at a time, so
the streaming writers never hold the whole picture. Each writer runs in its own
process (`--one=...`) that imports only numpy, scipy, PIL and the writer (not jax), so that peak RSS
is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # children run `-m bench...` here
BAND_ROWS = 64
# "pixels": the bands made and dropped, no file: the cost every writer row includes.
WRITERS = ("pixels", "ours", "pypng", "pil")


def source_image(mode: str) -> np.ndarray:
  """The first Kvasir-100 image (RGB) or its mask (L, 0/255), as uint8."""
  from PIL import Image
  from bsa_jax import config_lib
  from bsa_jax.data import sources
  example = sources.reader_for(config_lib.base_config().data, "kvasir_seg:pranet_test").examples[0]
  if mode == "RGB":
    return np.asarray(Image.open(example.image).convert("RGB"))
  return np.where(np.asarray(Image.open(example.mask).convert("L")) > 127, 255, 0).astype(np.uint8)


def bands(src: np.ndarray, size: int):
  """Yields uint8 row bands of `src` scaled to (size, size) bilinearly (`metrics.resize_rows`, the
  eval CLI's band resize): smooth content like a large photograph's, with no two rows repeated
  (nearest-neighbour scaling would repeat each row ~20 times, which flatters a writer that filters
  rows against the one above)."""
  from bsa_jax.eval.metrics import resize_rows  # numpy/scipy only
  channels_first = src[None] if src.ndim == 2 else np.moveaxis(src, -1, 0)  # (C, h, w)
  for y0 in range(0, size, BAND_ROWS):
    band = resize_rows(channels_first, (size, size), y0, min(y0 + BAND_ROWS, size))  # [0, 1]
    band = np.rint(band * 255).astype(np.uint8)  # (C, n, size)
    yield band[0] if src.ndim == 2 else np.moveaxis(band, 0, -1)


def write(writer: str, src: np.ndarray, mode: str, size: int, path: str) -> None:
  """Writes `src` scaled to (size, size) to `path` with one writer."""
  if writer == "pixels":
    for _ in bands(src, size):
      pass
  elif writer == "ours":
    from bsa_jax.tools.png_rows import PngRows
    with PngRows(path, size, size, mode) as png:
      for band in bands(src, size):
        png.write(band)
  elif writer == "pypng":
    import png  # pypng: a benchmark reference only (requirements-test.txt)

    def rows():
      for band in bands(src, size):
        for row in band.reshape(len(band), -1):
          yield row.tobytes()

    with open(path, "wb") as f:
      png.Writer(size, size, greyscale=mode == "L", bitdepth=8, compression=6).write(f, rows())
  elif writer == "pil":
    from PIL import Image
    whole = np.concatenate(list(bands(src, size)))
    Image.fromarray(whole, mode).save(path, compress_level=6)
  else:
    raise ValueError(f"unknown writer {writer!r}; one of {WRITERS}")


def decoded_equal(path: str, mode: str, size: int) -> bool:
  """True if the file decodes (PIL) to exactly the scaled source pixels."""
  from PIL import Image
  limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our own file, however large
  try:
    with Image.open(path) as image:
      decoded = np.asarray(image.convert(mode))
  finally:
    Image.MAX_IMAGE_PIXELS = limit
  return all(np.array_equal(decoded[i * BAND_ROWS:i * BAND_ROWS + len(band)], band)
             for i, band in enumerate(bands(source_image(mode), size)))


def high_water_mb() -> float:
  """This process's peak resident memory (VmHWM). Unlike getrusage's ru_maxrss, which a child
  inherits from its parent across fork, VmHWM belongs to the address space and starts anew at exec."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  raise RuntimeError("no VmHWM in /proc/self/status (this benchmark reads Linux's process status)")


def run_one(writer: str, source: str, mode: str, size: int, path: str) -> dict:
  """Runs in the child process: times one write; peak RSS is counted above the process's peak
  before writing (interpreter, numpy, the small source image)."""
  src = np.load(source)
  if writer == "pypng":
    import png  # noqa: F401  (imported before the baseline, as PIL and our writer are)
  from bsa_jax.eval import metrics  # noqa: F401  (the band resize)
  from bsa_jax.tools import png_rows  # noqa: F401
  before = high_water_mb()
  start = time.perf_counter()
  write(writer, src, mode, size, path)
  seconds = time.perf_counter() - start
  after = high_water_mb()
  return {"writer": writer, "mode": mode, "size": size, "seconds": seconds,
          "peak_rss_mb": after - before,
          "bytes": os.path.getsize(path) if os.path.exists(path) else 0}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="python -m bench.png_bench", description=__doc__.split("\n")[0])
  parser.add_argument("--size", type=int, default=12000, help="side of the square image, pixels")
  parser.add_argument("--repeats", type=int, default=1, help="writes per writer; the median is shown")
  parser.add_argument("--writers", default=",".join(WRITERS), help=f"comma-separated subset of {WRITERS}")
  parser.add_argument("--one", help=argparse.SUPPRESS)  # child: "writer:mode:source.npy:path"
  args = parser.parse_args(argv)
  if args.one:
    writer, mode, source, path = args.one.split(":", 3)
    print(json.dumps(run_one(writer, source, mode, args.size, path)))
    return
  print(f"| image | writer | time (s) | peak RSS while writing (MB) | file (MB) | pixels equal |")
  print("|---|---|---|---|---|---|")
  with tempfile.TemporaryDirectory() as tmp:
    for mode in ("RGB", "L"):
      source = os.path.join(tmp, f"source_{mode}.npy")
      np.save(source, source_image(mode))  # the child imports neither jax nor the data code
      for writer in args.writers.split(","):
        path = os.path.join(tmp, f"{writer}_{mode}.png")
        runs = []
        for _ in range(args.repeats):
          out = subprocess.run([sys.executable, "-m", "bench.png_bench", f"--size={args.size}",
                                f"--one={writer}:{mode}:{source}:{path}"], capture_output=True, text=True,
                               check=True, cwd=REPO)
          runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        seconds = float(np.median([r["seconds"] for r in runs]))
        peak = max(r["peak_rss_mb"] for r in runs)
        if writer == "pixels":
          print(f"| {args.size}² {mode} | (making the pixels only) | {seconds:.1f} | {peak:.0f} | – | – |",
                flush=True)
          continue
        equal = decoded_equal(path, mode, args.size)
        print(f"| {args.size}² {mode} | {writer} | {seconds:.1f} | {peak:.0f} | "
              f"{runs[0]['bytes'] / 1e6:.1f} | {'yes' if equal else 'NO'} |", flush=True)
        os.remove(path)


if __name__ == "__main__":
  main()
