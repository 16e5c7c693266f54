"""Volume and slice scoring: DSC/HD95 equal medpy's on real ACDC volumes, TransUNet's inference
loop, edge cases, result tables."""

import glob
import json
import os

import numpy as np
import pytest
from scipy import ndimage

from bsa_jax import config_lib
from bsa_jax.eval import evaluate
from bsa_jax.eval import multiclass as em
from bsa_jax.data import eval_data
from bsa_jax.data import readers
from bsa_jax.data import volumes
from conftest import data_dir

binary = pytest.importorskip("medpy.metric.binary", reason="medpy is the DSC/HD95 reference")

SPACING = (10.0, 1.5625, 1.25)  # a plausible cine-MRI (z, y, x) voxel size in mm


def _acdc_volumes(n: int):
  folder = os.path.join(data_dir("acdc_ssl4mis_subset"), "data")
  paths = sorted(p for p in glob.glob(os.path.join(folder, "patient*.h5")) if "_slice_" not in p)
  return [volumes.load_volume("acdc", p) for p in paths[:n]]


def _perturbed(label: np.ndarray, seed: int) -> np.ndarray:
  """A plausible prediction: the labels shifted a few voxels in-plane with sparse label noise."""
  rng = np.random.default_rng(seed)
  pred = np.roll(label, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(1, 2))
  noise = rng.random(pred.shape) < 0.001
  pred[noise] = rng.integers(0, 4, int(noise.sum()))
  pred[:, :, :40] = np.where(pred[:, :, :40] == 1, 0, pred[:, :, :40])  # erode RV on one side
  return pred


def test_dsc_and_hd95_equal_medpy_on_real_acdc_volumes():
  max_dsc, max_hd, max_hd_mm, cases = 0.0, 0.0, 0.0, 0
  for i, (_, label) in enumerate(_acdc_volumes(3)):
    pred = _perturbed(label, i)
    for c in (1, 2, 3):
      p, g = pred == c, label == c
      ours = em.case_metrics(p, g, SPACING)
      max_dsc = max(max_dsc, abs(ours["DSC"] - binary.dc(p, g)))
      max_hd = max(max_hd, abs(ours["HD95"] - binary.hd95(p, g)))
      max_hd_mm = max(max_hd_mm, abs(ours["HD95_mm"] - binary.hd95(p, g, voxelspacing=SPACING)))
      cases += 1
  assert cases == 9
  assert max_dsc == 0.0 and max_hd == 0.0 and max_hd_mm == 0.0, (max_dsc, max_hd, max_hd_mm)


def test_hd95_crop_is_exact_when_masks_touch_the_border():
  rng = np.random.default_rng(0)
  a = ndimage.binary_dilation(rng.random((6, 40, 30)) > 0.97, iterations=2)
  b = np.roll(a, 3, axis=2)
  a[:, 0, :5] = True  # on the array's border: there the outside counts as background
  assert em.hd95(a, b) == binary.hd95(a, b)
  assert em.hd95(a, b, (2.0, 1.0, 0.5)) == binary.hd95(a, b, voxelspacing=(2.0, 1.0, 0.5))


def test_transunet_edge_cases():
  empty, blob = np.zeros((3, 8, 8), bool), np.zeros((3, 8, 8), bool)
  blob[1, 2:5, 2:5] = True
  assert em.case_metrics(blob, empty) == {"DSC": 1.0, "HD95": 0.0}  # predicted, absent in GT
  assert em.case_metrics(empty, blob) == {"DSC": 0.0, "HD95": 0.0}  # missed
  assert em.case_metrics(empty, empty, SPACING) == {"DSC": 0.0, "HD95": 0.0, "HD95_mm": 0.0}
  assert em.case_metrics(blob, blob, SPACING) == {"DSC": 1.0, "HD95": 0.0, "HD95_mm": 0.0}


class _IntensityModel:
  """A stand-in network: class = intensity quartile of the first channel ('unit' normalisation).

  Records every batch shape so the test can check the fixed-size batching.
  """

  def __init__(self, num_classes: int = 4):
    self.num_classes = num_classes
    self.shapes = []

  def labels(self, grey: np.ndarray) -> np.ndarray:
    return np.clip((grey * self.num_classes).astype(np.int32), 0, self.num_classes - 1)

  def __call__(self, inputs):
    image = inputs["image"]
    self.shapes.append(image.shape)
    return np.eye(self.num_classes, dtype=np.float32)[self.labels(image[..., 0])] * 5.0


def test_predict_volume_follows_transunet_inference_loop():
  image, _ = _acdc_volumes(1)[0]
  model = _IntensityModel()
  size = 64
  pred = em.predict_volume(model, image, size=size, normalize="unit", batch_size=4)
  assert pred.shape == image.shape and pred.dtype == np.int32
  assert set(model.shapes) == {(4, size, size, 3)}  # padded to fixed batches: no recompiles
  depth, height, width = image.shape
  for z in range(depth):  # TransUNet utils.test_single_volume, restated per slice
    zoomed = ndimage.zoom(image[z], (size / height, size / width), order=3)
    out = model.labels(zoomed.astype(np.float32))
    back = ndimage.zoom(out, (height / size, width / size), order=0)
    np.testing.assert_array_equal(pred[z], back)


def _acdc_config(image_size=64):
  c = config_lib.base_config()
  c.data.root = os.path.dirname(data_dir("acdc_ssl4mis_subset"))
  c.data.train, c.data.val, c.data.test = ("acdc:train",), (), ("acdc:test",)
  c.data.image_size, c.data.normalize = image_size, "unit"
  return c


def test_evaluate_sets_on_volumes_writes_per_volume_rows_and_overlays(tmp_path):
  c = _acdc_config()
  c.data.max_eval_examples = 17  # the first two volumes (10 + 7 slices)
  sets = eval_data.eval_sets(c.data, "test")
  evaluator = evaluate.get_evaluator("multiclass")
  result = evaluator(_IntensityModel(), sets, batch_size=8, overlay_dir=str(tmp_path),
                     num_overlays=1)
  assert result["num_volumes"] == 2 and result["num_images"] == 20  # whole volumes are scored
  names = em.CLASS_NAMES["acdc"]
  assert {f"DSC/{n}" for n in names} | {f"HD95/{n}" for n in names} <= set(result)
  assert result["mDSC"] == pytest.approx(np.mean([result[f"DSC/{n}"] for n in names]))
  rows = (tmp_path / "per_volume.csv").read_text().splitlines()
  assert rows[0].startswith("id,num_slices,DSC/RV,HD95/RV") and len(rows) == 3
  assert len(list(tmp_path.glob("*.png"))) == 1
  # The per-volume numbers are the medpy-equal case metrics of predict_volume's labels.
  first = next(next(iter(sets.values())).volumes())
  pred = em.predict_volume(_IntensityModel(), first["image"], size=64, normalize="unit",
                           batch_size=8)
  expected = em.case_metrics(pred == 3, first["label"] == 3)
  assert rows[1].split(",")[-2:] == [repr(expected["DSC"]), repr(expected["HD95"])]


def test_evaluate_sets_on_slices_pools_pixels():
  c = _acdc_config(image_size=32)
  c.data.test = ("acdc:train",)  # 2-D slice files
  c.data.max_eval_examples = 6
  sets = eval_data.eval_sets(c.data, "test")
  model = _IntensityModel()
  result = em.evaluate_sets(model, sets, batch_size=4)
  confusion = np.zeros((4, 4), np.int64)
  eval_set = sets["acdc:train"]
  for i in range(len(eval_set)):
    example = eval_set.reader.read(i)
    image = readers.to_model_input(example, size=32, normalize="unit", num_classes=4)["image"]
    small = model({"image": image[None]}).argmax(-1)[0]
    pred = em.zoom_labels(small, example["mask"].shape)
    np.add.at(confusion, (example["mask"].ravel(), pred.ravel()), 1)
  tp = np.diag(confusion)[1:]
  dsc = 2 * tp / (confusion.sum(0)[1:] + confusion.sum(1)[1:])
  assert result["num_images"] == 6
  assert result["mDSC"] == pytest.approx(dsc.mean())
  assert result["DSC/LV"] == pytest.approx(dsc[2])


def test_mixed_volume_and_slice_sets_are_rejected():
  c = _acdc_config()
  c.data.max_eval_examples = 2
  c.data.test = ("acdc:train", "acdc:test")
  with pytest.raises(ValueError, match="volume and slice sets"):
    em.evaluate_sets(_IntensityModel(), eval_data.eval_sets(c.data, "test"), batch_size=2)


def test_din_style_tables(tmp_path):
  results = {"acdc:test": {"mDSC": 0.9, "mHD95": 2.5, "DSC/RV": 0.85, "DSC/Myo": 0.88,
                           "DSC/LV": 0.97, "HD95/RV": 3.0, "HD95/Myo": 2.0, "HD95/LV": 2.5,
                           "num_volumes": 20, "num_images": 200}}
  text = em.markdown_summary(results)
  assert "| Method | DSC (%) ↑ | HD95 (voxels) ↓ | RV | Myo | LV |" in text
  assert "| ours on acdc:test (20 volumes) | 90.00 | 2.50 | 85.00 | 88.00 | 97.00 |" in text
  assert "| DIN (figure) | 93.26 |" in text
  config = config_lib.base_config()
  config.model_name, config.eval.kind = "din", "multiclass"
  paths = evaluate.write_results(str(tmp_path), results, config=config, checkpoint_step=7,
                                 selection="last step")
  assert [os.path.basename(p) for p in paths] == ["test_metrics.json", "test_metrics.md",
                                                   "din_tables.csv"]
  saved = json.loads((tmp_path / "results" / "test_metrics.json").read_text())
  assert saved["results"] == results and saved["provenance"]["checkpoint_step"] == 7
  assert "acdc,ours on acdc:test (20 volumes),90.00,2.50,85.00,88.00,97.00" in (
      tmp_path / "results" / "din_tables.csv").read_text()
