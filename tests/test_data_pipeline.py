"""The train iterator's contract (shapes, multi-host rows, exact resume, workers) and the eval sets."""

import json
import os

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import data_dir

from bsa_jax import config_lib
from bsa_jax import data


def _config(train=("cvc_clinicdb:pranet_train",), size=32, **kw):
  c = config_lib.base_config().data
  c.root = os.path.dirname(data_dir("cvc_clinicdb_pranet_train"))
  c.image_size = size
  c.train = train
  c.val = ("cvc_clinicdb:pranet_val",)
  c.test = ("cvc_colondb:all",)
  for k, v in kw.items():
    c[k] = v
  return c


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_batch_shapes_dtypes_and_normalisation():
  c = _config(max_train_examples=16)
  batch = next(data.train_iterator(c, global_batch_size=4, seed=0))
  assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.float32
  assert batch["mask"].shape == (4, 32, 32, 1) and batch["mask"].dtype == np.float32
  assert set(np.unique(batch["mask"])) <= {0.0, 1.0}
  # ImageNet normalisation: values span roughly [-2.1, 2.6], not [0, 1].
  assert batch["image"].min() < -0.5 and batch["image"].max() <= (1 - 0.406) / 0.225 + 1e-5


def test_two_processes_reproduce_one():
  c = _config(max_train_examples=24)
  single = _take(data.train_iterator(c, global_batch_size=4, seed=3), 7)  # crosses an epoch (6/epoch)
  parts = [_take(data.train_iterator(c, global_batch_size=4, seed=3, process_index=p, process_count=2), 7)
           for p in range(2)]
  for k in range(7):
    for key in ("image", "mask"):
      np.testing.assert_array_equal(
          np.concatenate([parts[0][k][key], parts[1][k][key]]), single[k][key])


def test_epochs_reshuffle_and_drop_remainder():
  c = _config(max_train_examples=10)
  it = data.train_iterator(c, global_batch_size=4, seed=0)
  maker = it.maker
  assert maker.steps_per_epoch == 2  # 10 // 4, remainder dropped
  _, rows_e0 = maker.global_rows(0)
  _, rows_e1 = maker.global_rows(2)
  assert len(set(maker.global_rows(0)[1]) | set(maker.global_rows(1)[1])) == 8
  assert not np.array_equal(rows_e0, rows_e1)  # new permutation each epoch


def test_get_state_set_state_resumes_identically(tmp_path):
  c = _config(max_train_examples=24)
  it = data.train_iterator(c, global_batch_size=4, seed=1)
  _take(it, 3)
  state = it.get_state()
  expected = _take(it, 2)
  fresh = data.train_iterator(c, global_batch_size=4, seed=1)
  fresh.set_state(json.loads(json.dumps(state)))  # the state survives JSON
  for want, got in zip(expected, _take(fresh, 2)):
    np.testing.assert_array_equal(want["image"], got["image"])
  # Through Orbax with grain's handler, exactly as bsa_jax/workdir/checkpoint.py stores it.
  mngr = ocp.CheckpointManager(str(tmp_path / "ckpt"), item_names=("data",))
  it2 = data.train_iterator(c, global_batch_size=4, seed=1)
  _take(it2, 3)
  mngr.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it2)))
  mngr.wait_until_finished()
  restored = data.train_iterator(c, global_batch_size=4, seed=1)
  mngr.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
  np.testing.assert_array_equal(next(restored)["image"], expected[0]["image"])
  mngr.close()


def test_state_from_other_config_is_refused():
  c = _config(max_train_examples=24)
  state = data.train_iterator(c, global_batch_size=4, seed=1).get_state()
  with pytest.raises(ValueError, match="resuming would not continue"):
    data.train_iterator(c, global_batch_size=8, seed=1).set_state(state)


def test_worker_processes_give_the_same_batches_and_state():
  c = _config(max_train_examples=24)
  ref = _take(data.train_iterator(c, global_batch_size=4, seed=2), 4)
  c.num_workers = 2
  it = data.train_iterator(c, global_batch_size=4, seed=2)
  got = _take(it, 2)
  state = it.get_state()
  it.close()
  c.num_workers = 0  # resume in-process from a state saved with workers
  resumed = data.train_iterator(c, global_batch_size=4, seed=2)
  resumed.set_state(state)
  got += _take(resumed, 2)
  for want, have in zip(ref, got):
    np.testing.assert_array_equal(want["image"], have["image"])


def _dihedral(x):
  """The 8 flips/rotations of an (S, S, C) array."""
  for k in range(4):
    r = np.rot90(x, k)
    yield r
    yield r[:, ::-1]


def test_augmentation_keeps_image_and_mask_aligned():
  c = _config(max_train_examples=8, size=48, normalize="unit")
  c.augment.update({"enabled": True, "color_jitter": 0.0, "scale_min": 1.0, "scale_max": 1.0})
  aug = next(data.train_iterator(c, global_batch_size=4, seed=0))
  again = next(data.train_iterator(c, global_batch_size=4, seed=0))
  np.testing.assert_array_equal(aug["image"], again["image"])  # deterministic per (seed, position)
  c.augment.enabled = False
  plain = next(data.train_iterator(c, global_batch_size=4, seed=0))
  assert not np.array_equal(aug["image"], plain["image"])
  for i in range(4):  # the same flip/rotation moved the image and its mask
    both = np.concatenate([plain["image"][i], plain["mask"][i]], -1)
    target = np.concatenate([aug["image"][i], aug["mask"][i]], -1)
    assert any(np.array_equal(t, target) for t in _dihedral(both))
  c.augment.update({"enabled": True, "color_jitter": 0.2, "scale_min": 0.75, "scale_max": 1.25})
  jittered = next(data.train_iterator(c, global_batch_size=4, seed=0))
  assert set(np.unique(jittered["mask"])) <= {0.0, 1.0}
  assert jittered["image"].min() >= 0 and jittered["image"].max() <= 1


def test_num_examples_and_eval_sets_padding():
  c = _config()
  assert data.num_examples(c, "train") == 495
  assert data.num_examples(c, "val") == 55
  sets = data.eval_sets(c, "test")
  (name, colon), = sets.items()
  assert name == "cvc_colondb:all" and len(colon) == 60
  c.max_eval_examples = 5
  small = data.eval_sets(c, "test")["cvc_colondb:all"]
  batches = list(small.batches(4, with_original_images=True))
  assert [b["valid"].tolist() for b in batches] == [[True] * 4, [True, False, False, False]]
  last = batches[-1]
  assert last["image"].shape == (4, 32, 32, 3) and last["mask"].shape == (4, 32, 32, 1)
  assert last["id"][0] == small.ids[4] and last["id"][1:] == ["", "", ""]
  gt = last["mask_orig"][0]
  assert gt.dtype == bool and gt.shape == (500, 574)  # ColonDB's original size
  assert last["image_orig"][0].shape == (500, 574, 3) and last["image_orig"][0].dtype == np.uint8
  assert "image_orig" not in next(small.batches(4))


def test_color_exchange_recolours_each_image_with_another_training_image():
  """SANet's colour exchange in the pipeline: every image takes another training image's Lab
  statistics (so the batch changes, deterministically), and the masks are untouched."""
  c = _config(max_train_examples=8, size=48, normalize="unit")
  still = {"enabled": True, "hflip": 0.0, "vflip": 0.0, "rotate90": False, "scale_min": 1.0,
           "scale_max": 1.0, "color_jitter": 0.0}
  c.augment.update(still)
  plain = next(data.train_iterator(c, global_batch_size=4, seed=0))
  c.augment.color_exchange = 1.0
  moved = next(data.train_iterator(c, global_batch_size=4, seed=0))
  again = next(data.train_iterator(c, global_batch_size=4, seed=0))
  np.testing.assert_array_equal(moved["image"], again["image"])
  np.testing.assert_array_equal(moved["mask"], plain["mask"])
  shift = np.abs(moved["image"] - plain["image"]).mean(axis=(1, 2, 3))
  assert (shift > 0.01).sum() >= 3, shift  # an image may draw itself as its reference
