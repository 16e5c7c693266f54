"""F^w on large maps works in bands of rows and sums in blocks (bsa_jax.eval.metrics), so that one
12000x12000 pair fits in a few GB; these tests hold it to the bits of the one-piece computation."""

import numpy as np
import pytest
from scipy import ndimage

from bsa_jax.eval import metrics


def _disc(h, w, cy, cx, r):
  yy, xx = np.mgrid[:h, :w]
  return (yy - cy)**2 + (xx - cx)**2 <= r * r


def _cases():
  """(uint8 map, gt): objects inside and on the border, a map with exact zeros (a small distance
  window, so strips outside it), a noisy one, and one reaching past FAR_DISTANCE."""
  rng = np.random.default_rng(3)
  cases = []
  for h, w, objects in ((61, 83, ((30, 40, 12),)), (97, 45, ((0, 44, 9), (70, 10, 6))),
                        (640, 700, ((60, 80, 25),))):
    gt = np.zeros((h, w), bool)
    for cy, cx, r in objects:
      gt |= _disc(h, w, cy, cx, r)
    smooth = ndimage.gaussian_filter(gt.astype(np.float64), 3)
    scaled = np.round(smooth / smooth.max() * 255).astype(np.uint8)
    cases += [(np.where(scaled < 40, 0, scaled).astype(np.uint8), gt),
              (rng.integers(0, 256, (h, w)).astype(np.uint8), gt)]
  far = cases[-2][0].copy()
  far[600:620, 650:690] = 180  # nonzero far from the object
  return cases + [(far, cases[-1][1])]


def test_pairwise_sum_has_the_bits_of_np_sum(monkeypatch):
  monkeypatch.setattr(metrics, "SUM_BLOCK", 1000)
  rng = np.random.default_rng(0)
  for size in (1, 7, 128, 129, 999, 1000, 1001, 8193, 123_457):
    x = rng.random(size) * rng.choice([1e-6, 1.0, 1e6], size)
    got = metrics.pairwise_sum(lambda start, n: np.sum(x[start:start + n]), size)
    assert got == np.sum(x), size


@pytest.mark.parametrize("zeros_known", [False, True])
def test_weighted_fmeasure_in_bands_and_blocks_has_the_bits_of_one_piece(monkeypatch, zeros_known):
  for pred, gt in _cases():
    lo, hi = int(pred.min()), int(pred.max())
    values = metrics.value_tables([lo], [hi])[0]
    prob = metrics.normalize_prediction(pred)
    zeros = int(np.count_nonzero(prob == 0)) if zeros_known else None
    with monkeypatch.context() as patch:  # one band, one block: the whole-window computation
      patch.setattr(metrics, "BAND_PIXELS", 10**9)
      patch.setattr(metrics, "SUM_BLOCK", 10**9)
      whole = metrics.weighted_fmeasure(prob, gt, zeros=zeros)
    patch_small = {"BAND_PIXELS": 50, "SUM_BLOCK": 300}
    with monkeypatch.context() as patch:
      for name, value in patch_small.items():
        patch.setattr(metrics, name, value)
      banded = metrics.weighted_fmeasure(prob, gt, zeros=zeros)
      looked_up = metrics.weighted_fmeasure(pred, gt, zeros=zeros, values=values)
    assert banded == whole and looked_up == whole, (gt.shape, banded, looked_up, whole)


def test_scores_normalised_in_place_equal_the_copying_ones():
  """The eval CLI normalises its resized float maps in place; the records keep their bits."""
  for pred, gt in _cases():
    prob = np.clip(ndimage.zoom(pred / 255, 1.3, order=1)[:gt.shape[0], :gt.shape[1]], 0, 1)
    prob = np.pad(prob, [(0, gt.shape[0] - prob.shape[0]), (0, gt.shape[1] - prob.shape[1])])
    expected = metrics.pixel_image_scores(prob, gt)
    got = metrics.pixel_image_scores(prob.copy(), gt, in_place=True)
    assert set(got) == set(expected)
    for k in expected:
      np.testing.assert_array_equal(got[k], expected[k], err_msg=k)
