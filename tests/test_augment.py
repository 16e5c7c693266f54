"""The photometric augmentations: each does what its name says to the image alone, and an op left at
strength 0 draws nothing, so configs that do not use it keep their exact batches."""

import numpy as np
import pytest

from bsa_jax import config_lib
from bsa_jax.data import augment

NEW_OPS = ("color_exchange", "channel_gain", "gamma", "blur", "specular")


def _cfg(**kw):
  cfg = config_lib.base_config().data.augment.to_dict()
  cfg.update(kw)
  return cfg


def _example(seed=0, size=48):
  rng = np.random.default_rng(seed)
  image = rng.integers(30, 220, size=(size, size, 3)).astype(np.uint8)
  mask = (rng.random((size, size)) > 0.6).astype(np.uint8) * 255
  return image, mask


def test_ops_left_off_draw_nothing_and_change_nothing():
  image, mask = _example()
  old = {k: v for k, v in _cfg().items() if k not in NEW_OPS}  # the config before these ops existed
  a_rng, b_rng = np.random.default_rng(3), np.random.default_rng(3)
  a = augment.augment(image, mask, old, a_rng)
  b = augment.augment(image, mask, _cfg(), b_rng)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert a_rng.random() == b_rng.random()  # the same number of draws


@pytest.mark.parametrize("op", NEW_OPS)
def test_each_op_changes_the_image_and_never_the_mask(op):
  image, mask = _example()
  cfg = _cfg(hflip=0.0, vflip=0.0, rotate90=False, scale_min=1.0, scale_max=1.0, color_jitter=0.0,
             **{op: 1.0 if op in ("color_exchange", "blur", "specular") else 0.3})
  reference = _example(seed=5)[0] // 2 + 100  # another image, of other colours
  out_image, out_mask = augment.augment(image, mask, cfg, np.random.default_rng(1),
                                        reference=lambda rng: reference)
  np.testing.assert_array_equal(out_mask, mask)
  assert out_image.dtype == np.uint8 and out_image.shape == image.shape
  assert not np.array_equal(out_image, image)


def test_what_each_op_does():
  rng = np.random.default_rng(0)
  grey = np.full((32, 32, 3), 128, np.uint8)
  cast = augment._channel_gain(grey, 0.3, rng)
  assert len(set(cast[0, 0].tolist())) == 3 and (cast == cast[0, 0]).all()  # one gain per channel
  ramp = np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (2, 1, 3))
  curved = augment._gamma(ramp, 0.5, rng).astype(int)
  assert curved[0, 0, 0] == 0 and curved[0, -1, 0] == 255 and (np.diff(curved[0, :, 0]) >= 0).all()
  noisy = rng.integers(0, 256, size=(32, 32, 3)).astype(np.uint8)
  assert augment._blur(noisy, rng).astype(float).std() < 0.8 * noisy.astype(float).std()
  dark = np.full((64, 64, 3), 40, np.uint8)
  lit = augment._specular(dark, rng)
  assert lit.max() >= 250 and (lit >= 40).all() and (lit == 40).mean() > 0.5  # small bright spots


def test_color_exchange_outside_the_training_pipeline_says_why_it_cannot_run():
  image, mask = _example()
  with pytest.raises(ValueError, match="color_exchange needs the training set"):
    augment.augment(image, mask, _cfg(color_exchange=1.0), np.random.default_rng(0))
