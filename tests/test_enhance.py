"""CLAHE and histogram equalisation vs OpenCV on real images, dtypes, the pipeline hook."""

import glob
import os

import numpy as np
import pytest

from bsa_jax import config_lib
from bsa_jax.data import enhance
from bsa_jax.data import preprocess
from conftest import data_dir

cv2 = pytest.importorskip("cv2", reason="OpenCV (a pysodmetrics dependency) is the reference")

# (clip limit, tile grid (rows, cols)): the default, a non-square grid that leaves remainders,
# no clipping, and a grid where only one axis needs padding (OpenCV then pads both).
SETTINGS = [(2.0, (8, 8)), (4.0, (5, 7)), (0.0, (8, 8)), (1.0, (3, 3))]


def _real_grey_images() -> list[np.ndarray]:
  """uint8 grey images: 3 ACDC slices (MRI in [0, 1]) and the green channel of 2 Kvasir frames."""
  import h5py
  from bsa_jax.data import io
  acdc = sorted(glob.glob(os.path.join(data_dir("acdc_ssl4mis_subset"), "data", "*_slice_*.h5")))
  images = []
  for path in acdc[::30][:3]:
    with h5py.File(path, "r") as f:
      images.append(enhance.to_uint8(f["image"][()]))
  kvasir = sorted(glob.glob(os.path.join(data_dir("kvasir_seg"), "images", "*")))
  images += [io.load_image(p)[..., 1] for p in kvasir[:2]]
  return images


@pytest.fixture(scope="module")
def real_images():
  return _real_grey_images()


def test_clahe_equals_opencv_exactly_on_real_images(real_images):
  # Tolerance: 0 grey levels. Sizes 256×216 ... 1070×1348 exercise the padding rules.
  for image in real_images:
    for clip, (rows, cols) in SETTINGS:
      ours = enhance.clahe(image, clip, (rows, cols))
      ref = cv2.createCLAHE(clipLimit=clip, tileGridSize=(cols, rows)).apply(image)
      assert ours.dtype == np.uint8 and ours.shape == image.shape
      diff = np.abs(ours.astype(int) - ref.astype(int))
      assert diff.max() == 0, (image.shape, clip, rows, cols, diff.max(), (diff > 0).mean())


def test_histogram_equalisation_equals_opencv(real_images):
  for image in real_images:
    np.testing.assert_array_equal(enhance.equalize_histogram(image), cv2.equalizeHist(image))
  constant = np.full((9, 13), 77, np.uint8)
  np.testing.assert_array_equal(enhance.equalize_histogram(constant), constant)


def test_clahe_changes_contrast_and_clip_limit_matters(real_images):
  image = real_images[0]
  low, high = enhance.clahe(image, 1.0), enhance.clahe(image, 8.0)
  assert not np.array_equal(low, high)
  assert high.std() > low.std()  # a higher clip limit equalises harder


def test_float_input_is_quantised_and_returned_in_unit_range():
  rng = np.random.default_rng(0)
  image = rng.random((40, 52)).astype(np.float32)
  out = enhance.clahe(image)
  assert out.dtype == np.float32 and 0.0 <= out.min() and out.max() <= 1.0
  expected = enhance.clahe(enhance.to_uint8(image)).astype(np.float32)
  np.testing.assert_array_equal(out * 255.0, expected)


def test_enhance_grey_rgb_and_colour_channels():
  rng = np.random.default_rng(1)
  grey = rng.integers(0, 256, (48, 64), dtype=np.uint8)
  rgb_grey = np.repeat(grey[..., None], 3, axis=-1)
  out = enhance.enhance(rgb_grey, "clahe")
  assert out.shape == (48, 64, 3)
  for c in range(3):
    np.testing.assert_array_equal(out[..., c], enhance.clahe(grey))
  colour = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
  out = enhance.enhance(colour, "histeq")
  for c in range(3):
    np.testing.assert_array_equal(out[..., c], enhance.equalize_histogram(colour[..., c]))
  with pytest.raises(ValueError, match="Unknown enhancement"):
    enhance.enhance(grey, "gamma")


@pytest.mark.parametrize("normalize", ["imagenet", "unit"])
def test_add_enhanced_recovers_uint8_sources_exactly(normalize):
  rng = np.random.default_rng(2)
  uint8 = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
  batch = {"image": preprocess.normalize(uint8, normalize), "mask": np.zeros((2, 32, 32, 1))}
  out = enhance.add_enhanced(batch, normalize=normalize, method="clahe", clip_limit=2.0,
                             tile_grid=4)
  expected = np.stack([preprocess.normalize(enhance.enhance(x, "clahe", tile_grid=4), normalize)
                       for x in uint8])
  np.testing.assert_allclose(out["image_enhanced"], expected, atol=1e-6)
  assert out["image"] is batch["image"] and "mask" in out


def test_config_options():
  c = config_lib.base_config()
  assert enhance.options_from_config(c.data) is None
  c.data.enhance = "clahe"
  assert enhance.options_from_config(c.data) == {"method": "clahe", "clip_limit": 2.0,
                                                 "tile_grid": 8}
  c.data.enhance = "histeq"
  assert enhance.options_from_config(c.data) == {"method": "histeq"}
  c.data.enhance = "retinex"
  with pytest.raises(ValueError, match="config.data.enhance"):
    enhance.options_from_config(c.data)


def test_pipeline_emits_the_enhanced_pair_for_train_and_eval():
  from bsa_jax import data
  c = config_lib.base_config()
  c.data.root = os.path.dirname(data_dir("acdc_ssl4mis_subset"))
  c.data.train, c.data.val, c.data.test = ("acdc:train",), (), ("acdc:test",)
  c.data.image_size, c.data.enhance, c.data.max_eval_examples = 32, "clahe", 4
  iterator = data.train_iterator(c.data, global_batch_size=2, seed=0)
  try:
    batch = next(iterator)
  finally:
    iterator.close()
  assert batch["image_enhanced"].shape == batch["image"].shape == (2, 32, 32, 3)
  expected = enhance.add_enhanced({"image": batch["image"]}, normalize="imagenet", method="clahe",
                                  clip_limit=2.0, tile_grid=8)["image_enhanced"]
  np.testing.assert_allclose(batch["image_enhanced"], expected, atol=1e-6)
  eval_set = data.eval_sets(c.data, "test")["acdc:test"]
  eval_batch = next(eval_set.batches(4))
  assert eval_batch["image_enhanced"].shape == (4, 32, 32, 3)
