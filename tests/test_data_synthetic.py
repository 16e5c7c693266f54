"""The synthetic polyp dataset behind the offline demo: deterministic, exact masks, learnable, labelled."""

import os

import numpy as np

from bsa_jax import config_lib
from bsa_jax import data
from bsa_jax.data import registry
from bsa_jax.data import synthetic


def test_examples_are_deterministic_and_varied():
  a_img, a_mask = synthetic.make_example(3)
  b_img, b_mask = synthetic.make_example(3)
  np.testing.assert_array_equal(a_img, b_img)
  np.testing.assert_array_equal(a_mask, b_mask)
  shapes = {synthetic.make_example(i)[0].shape for i in range(6)}
  assert len(shapes) > 1 and all(240 <= h <= 320 and 256 <= w <= 320 and c == 3 for h, w, c in shapes)
  for i in range(6):
    img, mask = synthetic.make_example(i)
    assert img.dtype == np.uint8 and mask.dtype == bool and 0.01 < mask.mean() < 0.6


def test_polyps_are_separable_from_mucosa():
  """Learnability proxy: one colour-ratio threshold already gives a pooled Dice > 0.7."""
  ratios, masks = [], []
  for i in range(12):
    img, mask = synthetic.make_example(i)
    x = img.astype(np.float32)
    ratios.append((x[..., 1] / (x[..., 0] + 1)).ravel())
    masks.append(mask.ravel())
  r, m = np.concatenate(ratios), np.concatenate(masks)
  best = max(2 * np.sum((r < t) & m) / (np.sum(r < t) + m.sum()) for t in np.linspace(0.3, 0.7, 21))
  assert best > 0.7


def test_ensure_writes_once_and_is_read_like_any_dataset(tmp_path, monkeypatch):
  monkeypatch.setattr(synthetic, "NUM_IMAGES", 10)
  folder = registry.dataset_dir("synthetic_polyps", str(tmp_path))
  assert folder == os.path.join(str(tmp_path), "synthetic_polyps")
  marker = os.path.join(folder, "SYNTHETIC_DATA_README.txt")
  assert "NOT medical data" in open(marker).read()
  first = os.path.getmtime(marker)
  synthetic.ensure(folder)  # complete: not regenerated
  assert os.path.getmtime(marker) == first
  img, mask = synthetic.make_example(4)
  np.testing.assert_array_equal(data.load_image(os.path.join(folder, "images", "synth_004.png")), img)
  np.testing.assert_array_equal(data.load_mask(os.path.join(folder, "masks", "synth_004.png")), mask)
  c = config_lib.base_config().data
  c.root, c.image_size = str(tmp_path), 32
  c.train, c.val, c.test = (("synthetic_polyps:paper712_train",), ("synthetic_polyps:paper712_val",),
                            ("synthetic_polyps:paper712_test",))
  assert [data.num_examples(c, w) for w in ("train", "val", "test")] == [7, 1, 2]
  batch = next(data.train_iterator(c, global_batch_size=2, seed=0))
  assert batch["image"].shape == (2, 32, 32, 3)
