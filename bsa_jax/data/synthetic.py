"""SYNTHETIC polyp-like images for the offline demo; procedurally generated, not medical data.

Each image is a pinkish, textured "mucosa" with darker vessels, a vignette and specular highlights, and
one or two blobby polyps (redder, darker rim, soft edge, own highlights). Masks are exact: a pixel is
foreground iff it lies inside a polyp's boundary curve. Everything is a function of (seed, index), so
every machine writes identical PNGs. Files go to `<root>/synthetic_polyps/{images,masks}` on first use.

  python -m bsa_jax.data.synthetic [FOLDER]     # writes the set to FOLDER (default ./synthetic_polyps)
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from bsa_jax import cli

NUM_IMAGES = 240
SEED = 20240
VERSION = 1  # bump when the generator changes, so stale folders are rebuilt
_MARKER = "SYNTHETIC_DATA_README.txt"


def _smooth_noise(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
  """Zero-mean, unit-std low-frequency noise (h, w); coarse fields are drawn small and upsampled."""
  f = max(1, int(sigma // 2))
  small = ndimage.gaussian_filter(rng.standard_normal((-(-h // f), -(-w // f))), sigma / f, mode="wrap")
  field = ndimage.zoom(small, f, order=1)[:h, :w] if f > 1 else small
  return (field - field.mean()) / (field.std() + 1e-8)


def _vessels(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  """(h, w) float in [0, 1]: thin winding lines, blurred."""
  canvas = Image.new("L", (w, h), 0)
  draw = ImageDraw.Draw(canvas)
  for _ in range(int(rng.integers(3, 8))):
    x, y = rng.uniform(0, w), rng.uniform(0, h)
    angle = rng.uniform(0, 2 * np.pi)
    points = [(x, y)]
    for _ in range(int(rng.integers(8, 20))):
      angle += rng.normal(0, 0.5)
      step = rng.uniform(8, 20)
      x, y = x + step * np.cos(angle), y + step * np.sin(angle)
      points.append((x, y))
    draw.line(points, fill=int(rng.integers(120, 255)), width=int(rng.integers(1, 4)))
  return ndimage.gaussian_filter(np.asarray(canvas, np.float32) / 255.0, 0.8)


def _highlights(rng: np.random.Generator, h: int, w: int, n: int, region: np.ndarray | None = None):
  """(h, w) float in [0, 1]: small blurred white specks, inside `region` if given."""
  canvas = Image.new("L", (w, h), 0)
  draw = ImageDraw.Draw(canvas)
  ys, xs = np.nonzero(region) if region is not None else (None, None)
  for _ in range(n):
    if region is not None:
      if len(ys) == 0:
        break
      k = int(rng.integers(len(ys)))
      cx, cy = xs[k], ys[k]
    else:
      cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    rx, ry = rng.uniform(1, 5), rng.uniform(1, 3)
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
  return ndimage.gaussian_filter(np.asarray(canvas, np.float32) / 255.0, 1.0)


def _polyp(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
  """(normalised radius d (h, w): <1 inside, the polyp's pixel radius); the boundary is d == 1."""
  base = min(h, w)
  r0 = rng.uniform(0.10, 0.24) * base
  aspect = rng.uniform(0.7, 1.3)
  cx, cy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h
  rot = rng.uniform(0, np.pi)
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  dx, dy = xx - cx, yy - cy
  u = (dx * np.cos(rot) + dy * np.sin(rot)) / (r0 * aspect)
  v = (-dx * np.sin(rot) + dy * np.cos(rot)) / (r0 / aspect)
  rho, theta = np.hypot(u, v), np.arctan2(v, u)
  boundary = np.ones_like(theta)
  for k in (2, 3, 4, 5):  # blobby outline: a few low harmonics
    boundary += rng.uniform(0, 0.12 / (k - 1)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
  return rho / boundary, r0


def make_example(index: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 image (H, W, 3), bool mask (H, W)) for one index; H, W in 240..320."""
  rng = np.random.default_rng([seed, index])
  h, w = int(rng.integers(240, 321)), int(rng.integers(256, 321))
  # Mucosa: a pink base colour modulated by two scales of texture.
  base = np.array([rng.uniform(195, 225), rng.uniform(105, 135), rng.uniform(95, 120)], np.float32)
  texture = 0.07 * _smooth_noise(rng, h, w, 12) + 0.03 * _smooth_noise(rng, h, w, 2)
  img = base * (1 + texture[..., None])
  img = img * (1 - 0.45 * _vessels(rng, h, w)[..., None] * np.array([0.3, 1.0, 0.9], np.float32))
  mask = np.zeros((h, w), bool)
  for _ in range(1 if rng.random() < 0.7 else 2):
    d, r0 = _polyp(rng, h, w)
    inside = d < 1
    # Soft edge about 2 px wide straddling the boundary; the mask is the exact inside.
    alpha = np.clip((1 - d) * r0 / 2 + 0.5, 0, 1)[..., None]
    tint = np.array([rng.uniform(0.78, 0.92), rng.uniform(0.55, 0.72), rng.uniform(0.6, 0.75)],
                    np.float32)
    rim = 1 - 0.35 * np.clip(d, 0, 1) ** 4  # darker towards the rim
    light = 1 + 0.12 * np.clip(1 - d, 0, 1)  # dome shading
    polyp = base * tint * (rim * light)[..., None] * (1 + 0.05 * _smooth_noise(rng, h, w, 4))[..., None]
    img = img * (1 - alpha) + polyp * alpha
    img = img + 200 * _highlights(rng, h, w, int(rng.integers(1, 4)), inside)[..., None]
    mask |= inside
  img = img + 180 * _highlights(rng, h, w, int(rng.integers(2, 7)))[..., None]
  # Endoscope vignette: dark corners.
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  r = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2))
  img = img * np.clip(1.25 - 0.55 * r ** 2, 0.15, 1)[..., None]
  img = img + rng.normal(0, 2.0, img.shape)  # sensor noise
  return np.clip(np.round(img), 0, 255).astype(np.uint8), mask


def _is_complete(folder: str) -> bool:
  marker = os.path.join(folder, _MARKER)
  if not os.path.exists(marker):
    return False
  with open(marker) as f:
    return f"version={VERSION} count={NUM_IMAGES} seed={SEED}" in f.read()


def write_dataset(folder: str, num_images: int | None = None, seed: int = SEED) -> None:
  """Writes images/synth_XXX.png and masks/synth_XXX.png (0/255) plus a README marking them synthetic."""
  num_images = NUM_IMAGES if num_images is None else num_images
  os.makedirs(os.path.join(folder, "images"), exist_ok=True)
  os.makedirs(os.path.join(folder, "masks"), exist_ok=True)
  for i in range(num_images):
    image, mask = make_example(i, seed)
    name = f"synth_{i:03d}.png"
    Image.fromarray(image).save(os.path.join(folder, "images", name))
    Image.fromarray(mask.astype(np.uint8) * 255).save(os.path.join(folder, "masks", name))
  with open(os.path.join(folder, _MARKER), "w") as f:
    f.write("SYNTHETIC polyp-like images generated by bsa_jax/data/synthetic.py for the offline demo.\n"
            "They are NOT medical data; metrics on them mean nothing clinically.\n"
            f"version={VERSION} count={num_images} seed={seed}\n")


def ensure(folder: str) -> str:
  """Generates the synthetic dataset in `folder` unless a complete copy is there; returns `folder`.

  Written to a temporary sibling and renamed, so concurrent processes never see a half-written set.
  """
  if _is_complete(folder):
    return folder
  parent = os.path.dirname(os.path.abspath(folder))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".synthetic_polyps.", dir=parent)
  try:
    write_dataset(tmp)
    if os.path.isdir(folder) and not _is_complete(folder):
      shutil.rmtree(folder, ignore_errors=True)  # stale version or an interrupted old layout
    try:
      os.rename(tmp, folder)
    except OSError:
      if not _is_complete(folder):  # someone else finished first, or a real failure
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return folder


def main(argv) -> int:
  """Writes the dataset to the folder given (default ./synthetic_polyps) and prints its path."""
  if len(argv) > 2:
    raise cli.UserError(f"give at most one folder, not {argv[1:]}")
  print(ensure(argv[1] if len(argv) > 1 else "synthetic_polyps"))
  return 0


if __name__ == "__main__":
  cli.run(main, prog="python -m bsa_jax.data.synthetic")
