"""The band-by-band PNG writer `predict` streams its outputs through: PIL reads back the exact pixels,
and a file is complete or absent."""

import os

import numpy as np
import pytest
from PIL import Image

from bsa_jax.tools.png_rows import PngRows


@pytest.mark.parametrize("mode,channels", [("L", ()), ("RGB", (3,))])
def test_rows_written_in_uneven_bands_read_back_exactly(tmp_path, mode, channels):
  rng = np.random.default_rng(0)
  smooth = np.linspace(0, 255, 37 * 53).reshape((37, 53) + (1,) * len(channels))
  pixels = (smooth + rng.integers(0, 30, (37, 53) + channels)).clip(0, 255).astype(np.uint8)
  path = tmp_path / f"x_{mode}.png"
  with PngRows(str(path), 53, 37, mode) as png:
    for start, stop in ((0, 1), (1, 11), (11, 11), (11, 36), (36, 37)):
      png.write(pixels[start:stop])
  with Image.open(path) as back:
    assert back.mode == mode and back.size == (53, 37)
    np.testing.assert_array_equal(np.asarray(back), pixels)
  assert os.listdir(tmp_path) == [path.name]


def test_an_interrupted_or_short_file_is_removed(tmp_path):
  path = tmp_path / "y.png"
  with pytest.raises(RuntimeError):
    with PngRows(str(path), 8, 4, "L") as png:
      png.write(np.zeros((2, 8), np.uint8))
      raise RuntimeError("the computation of the next band failed")
  with pytest.raises(ValueError, match="2 of 4 rows"):
    with PngRows(str(path), 8, 4, "L") as png:
      png.write(np.zeros((2, 8), np.uint8))
  with pytest.raises(ValueError, match="uint8"):
    with PngRows(str(path), 8, 4, "L") as png:
      png.write(np.zeros((4, 8), np.float32))
  assert not os.listdir(tmp_path)
