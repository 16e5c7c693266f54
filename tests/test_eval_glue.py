"""The evaluation glue against an outside reference: `evaluate.evaluate_sets` (which produces every
validation and test number and chooses the checkpoint) on real evaluation sets, with a model whose
logits are a fixed, known function of its input, equals pysodmetrics applied by hand in PraNet's order.

The hand path shares nothing with `evaluate_sets` but the logit function: images and masks are read
from disk by id with PIL, logits are resized to the mask's size with torch's
`F.interpolate(bilinear, align_corners=False)` (PraNet's MyTest.py), then sigmoid, min–max, and
pysodmetrics. A wrong image/mask pairing, a resize after the sigmoid, a transposed resize or a
scored padding row changes the numbers.
"""

import os

import numpy as np
import pytest
from PIL import Image

from bsa_jax import config_lib
from bsa_jax import data
from bsa_jax.data import split_lists
from bsa_jax.eval import evaluate
from bsa_jax.eval import io as eval_io
from bsa_jax.eval import metrics as metrics_lib
from conftest import DATA_ROOT, data_dir
from tests.test_metrics import pysod_scores

torch = pytest.importorskip("torch")
psm = pytest.importorskip("py_sod_metrics")

SIZE = 64  # network resolution; the masks are 332–1920 px wide, so every resize is a large upscale
PER_SET = 7  # with batch 4: one padding row per set


def known_logits(image: np.ndarray) -> np.ndarray:
  """(..., S, S, 3) in [0, 1] -> (..., S, S): depends on the pixels (pairing) and on the position
  (orientation); values of ±10 so that the sigmoid's non-linearity matters."""
  s = image.shape[-2]
  rows = np.linspace(-3.0, 3.0, s)[:, None]
  cols = np.linspace(-1.0, 2.0, s)[None, :]
  return 12.0 * (image[..., 0] - image[..., 1]) - 2.0 + rows - cols


def _predict(inputs):
  """The 'model': {'image': (B, S, S, 3)} -> (B, S, S, 1) logits."""
  return known_logits(np.asarray(inputs["image"], np.float64))[..., None].astype(np.float32)


def _paths(dataset_dir, example_id):
  """(image, mask) files of one id, by the MANIFEST's pairing rules."""
  if dataset_dir == "cvc_colondb_subset":  # N.tiff (or N.tif) <-> pN.tiff
    image = os.path.join(DATA_ROOT, dataset_dir, "images", f"{example_id}.tiff")
    if not os.path.exists(image):
      image = image[:-1]
    return image, os.path.join(DATA_ROOT, dataset_dir, "masks", f"p{example_id}.tiff")
  return (os.path.join(DATA_ROOT, dataset_dir, "images", f"{example_id}.jpg"),
          os.path.join(DATA_ROOT, dataset_dir, "masks", f"{example_id}.jpg"))


def _pranet_order_probability(image_path, gt_shape):
  """PraNet's test-time order on our fixed logits: resize logits to the GT size, sigmoid, min–max.

  Min–max without PraNet's `+ 1e-8` in the denominator: the toolbox (MATLAB `mapminmax`) and our
  metrics normalise exactly; the 1e-8 alone moves E_phi_adaptive (a threshold at 2·mean) by ~5e-5.
  """
  image = Image.open(image_path).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
  logits = known_logits(np.asarray(image, np.float64) / 255.0)  # (S, S)
  upsampled = torch.nn.functional.interpolate(
      torch.from_numpy(logits)[None, None], size=gt_shape, mode="bilinear", align_corners=False)
  prob = torch.sigmoid(upsampled)[0, 0].numpy()
  return (prob - prob.min()) / (prob.max() - prob.min())


def _pysodmetrics(pairs):
  """Dataset-level scores of (float prob in [0, 1], bool gt) pairs, as the polyp papers' ports do."""
  return pysod_scores(dict(pred=pred, gt=gt, normalize=False) for pred, gt in pairs)


def test_evaluate_sets_equals_pysodmetrics_in_pranets_order_on_real_sets():
  folders = {"kvasir_seg:pranet_test": "kvasir_seg", "cvc_colondb:all": "cvc_colondb_subset"}
  for folder in folders.values():
    data_dir(folder)
  c = config_lib.base_config().data
  c.root, c.image_size, c.normalize = DATA_ROOT, SIZE, "unit"
  c.test, c.max_eval_examples = tuple(folders), PER_SET
  eval_sets = data.eval_sets(c, "test")

  got = evaluate.evaluate_sets(_predict, eval_sets, batch_size=4)

  published = {"kvasir_seg:pranet_test": set(split_lists.PRANET_KVASIR_TEST),
               "cvc_colondb:all": {str(i) for i in range(1, 381)}}
  pairs = []
  for name, eval_set in eval_sets.items():
    assert len(eval_set.ids) == PER_SET and set(eval_set.ids) <= published[name], name
    for example_id in eval_set.ids:
      image_path, mask_path = _paths(folders[name], example_id)
      gt = eval_io.read_gt(mask_path)  # the toolbox's reader: grey > 128
      pairs.append((_pranet_order_probability(image_path, gt.shape), gt))
  assert len({gt.shape for _, gt in pairs}) > 2, "the sets should hold masks of several sizes"
  want = _pysodmetrics(pairs)

  assert got["num_images"] == 2 * PER_SET  # padding rows are not scored
  diffs = {k: abs(got[k] - float(want[k])) for k in metrics_lib.ALL_METRIC_NAMES}
  bad = {k: v for k, v in diffs.items() if not v <= 1e-6}
  assert not bad, f"evaluate_sets differs from pysodmetrics in PraNet's order: {bad}"
