"""Multi-class scoring (ACDC, Synapse): per-class DSC/HD95 per volume (TransUNet/MERIT), slice sets.

Volume protocol (DECISIONS R2; Beckschen/TransUNet:utils.py `test_single_volume`, kept by MERIT):
each slice is zoomed to the network size (scipy order 3), predicted, argmax'ed and zoomed back
(order 0); per volume and foreground class c, on the binary 3-D masks pred == c and label == c:
  both non-empty  -> DSC = 2|P∩G| / (|P| + |G|), HD95 = 95th percentile of the symmetric surface
                     distances (medpy's `hd95`: surfaces = mask minus its 6-connected erosion);
  P non-empty, G empty -> DSC 1, HD95 0;   P empty -> DSC 0, HD95 0.
HD95 is in voxels (their convention: medpy without voxelspacing) and, when a volume carries its
'spacing' (z, y, x in mm), also in mm. Each class is averaged over volumes; mDSC/mHD95 are the means
of the class means. Distance transforms run on the masks' bounding box plus one voxel (exactly the
same distances, much faster on 512² CT) with scipy.ndimage; medpy is only the tests' reference.

Slice sets (2-D validation, e.g. MT-UNet's ACDC 'valid'): the same prediction path per slice; DSC
and IoU per class pooled over all pixels of the set at their original size (a class absent from
both prediction and ground truth scores 1).

  evaluate_sets(predict, eval_sets, batch_size=...)  -> {'mDSC', 'DSC/<class>', 'mHD95', ...}
  write_tables_csv(out_dir, results)  -> DIN-style tables (CSV); bsa_jax.evaluate.write_results
  writes them with the JSON/Markdown summary and provenance
"""

from __future__ import annotations

import csv
import os
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from bsa_jax.data import enhance as enhance_lib
from bsa_jax.data import eval_data

CLASS_NAMES = {
    "acdc": ("RV", "Myo", "LV"),
    # Label order after TransUNet's remap (DECISIONS R1), as in DIN's Results.png legend.
    "synapse": ("Spleen", "RKidney", "LKidney", "Gallbladder", "Pancreas", "Liver", "Stomach",
                "Aorta"),
}
# Mean DSC (%) read off DIN's Main_figure.png scatter plot (DECISIONS R3, ±0.05; other splits/runs).
REPORTED_MEAN_DSC = {
    "DIN": {"synapse": 85.5, "acdc": 93.26},
    "nnFormer": {"synapse": 86.6, "acdc": 92.1},
    "MERIT": {"synapse": 84.9, "acdc": 92.3},
    "FCT": {"synapse": 83.5, "acdc": 92.8},
    "TransCASCADE": {"synapse": 82.7, "acdc": 91.6},
    "MISSFormer": {"synapse": 82.0, "acdc": 90.9},
    "SwinUNet": {"synapse": 79.1, "acdc": 90.0},
    "MT-UNet": {"synapse": 78.6, "acdc": 90.4},
    "TransUNet": {"synapse": 77.5, "acdc": 89.7},
    "R50+AttnUNet": {"synapse": 75.6, "acdc": 86.8},
}


def class_names(dataset: str | None, num_classes: int) -> tuple[str, ...]:
  """Foreground class names (labels 1..K-1): the dataset's, else 'class1', 'class2', ..."""
  names = CLASS_NAMES.get(dataset or "")
  if names is not None and len(names) == num_classes - 1:
    return names
  return tuple(f"class{c}" for c in range(1, num_classes))


# --------------------------------------------------------------------------------------------------
# Binary 3-D (or 2-D) metrics.
# --------------------------------------------------------------------------------------------------

def dice(pred: np.ndarray, gt: np.ndarray) -> float:
  """2|P∩G| / (|P| + |G|) of two boolean masks; 0 when both are empty (medpy `dc`)."""
  total = int(np.count_nonzero(pred)) + int(np.count_nonzero(gt))
  return 2.0 * int(np.count_nonzero(pred & gt)) / total if total else 0.0


def _surface(mask: np.ndarray) -> np.ndarray:
  """Voxels of `mask` with a face-neighbour outside it (outside the array counts as background)."""
  structure = ndimage.generate_binary_structure(mask.ndim, 1)
  return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(pred: np.ndarray, gt: np.ndarray,
                      spacing: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(distances from P's surface voxels to G's surface, and from G's to P's); both non-empty."""
  # Crop to the union's bounding box plus one voxel: every surface voxel and every distance target
  # lies inside it, and a one-voxel margin keeps the erosion's border behaviour unchanged.
  union = pred | gt
  box = tuple(slice(max(int(idx.min()) - 1, 0), int(idx.max()) + 2) for idx in np.nonzero(union))
  pred, gt = pred[box], gt[box]
  pred_surface, gt_surface = _surface(pred), _surface(gt)
  to_gt = ndimage.distance_transform_edt(~gt_surface, sampling=spacing)[pred_surface]
  to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)[gt_surface]
  return to_gt, to_pred


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None) -> float:
  """95th percentile of the symmetric surface distances (medpy `hd95`); both masks non-empty."""
  to_gt, to_pred = surface_distances(pred, gt, spacing)
  return float(np.percentile(np.concatenate([to_gt, to_pred]), 95))


def case_metrics(pred: np.ndarray, gt: np.ndarray,
                 spacing: Sequence[float] | None = None) -> dict[str, float]:
  """TransUNet's `calculate_metric_percase` on boolean masks: {'DSC', 'HD95'[, 'HD95_mm']}."""
  has_pred, has_gt = bool(pred.any()), bool(gt.any())
  if has_pred and has_gt:
    out = {"DSC": dice(pred, gt), "HD95": hd95(pred, gt)}
    if spacing is not None:
      out["HD95_mm"] = hd95(pred, gt, spacing)
    return out
  out = {"DSC": 1.0 if has_pred else 0.0, "HD95": 0.0}
  if spacing is not None:
    out["HD95_mm"] = 0.0
  return out


def score_volume(pred: np.ndarray, label: np.ndarray, num_classes: int,
                 spacing: Sequence[float] | None = None) -> list[dict[str, float]]:
  """Per foreground class c = 1..K-1: `case_metrics(pred == c, label == c)`."""
  return [case_metrics(pred == c, label == c, spacing) for c in range(1, num_classes)]


# --------------------------------------------------------------------------------------------------
# Prediction.
# --------------------------------------------------------------------------------------------------

def zoom_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """Nearest-neighbour (scipy order 0) zoom of a (S, S) label map back to `shape`, as TransUNet."""
  if labels.shape == tuple(shape):
    return labels
  factors = (shape[0] / labels.shape[0], shape[1] / labels.shape[1])
  out = ndimage.zoom(labels, factors, order=0)
  if out.shape != tuple(shape):  # scipy rounds the output size; never off for integer sizes
    raise ValueError(f"zoom produced {out.shape}, expected {shape}")
  return out


def _predict_labels(predict: Callable[[dict], np.ndarray], inputs: dict) -> np.ndarray:
  """argmax labels (B, S, S) int32 from `predict`'s logits (one logit = binary, threshold 0)."""
  logits = np.asarray(predict(inputs), np.float32)
  if logits.shape[-1] == 1:
    return (logits[..., 0] > 0).astype(np.int32)
  return np.argmax(logits, axis=-1).astype(np.int32)


def predict_volume(predict: Callable[[dict], np.ndarray], image: np.ndarray, *, size: int,
                   normalize: str, batch_size: int, enhance: Mapping | None = None) -> np.ndarray:
  """Slice-wise prediction of a (Z, H, W) volume in [0, 1] -> int32 labels (Z, H, W).

  Slices go in fixed-size batches (the last one zero-padded) so `predict` never recompiles.
  """
  depth, height, width = image.shape
  inputs = eval_data.volume_to_model_input(image, size=size, normalize=normalize)  # (Z, S, S, 3)
  labels = np.zeros((depth, height, width), np.int32)
  for start in range(0, depth, batch_size):
    chunk = inputs[start:start + batch_size]
    n = len(chunk)
    batch = {"image": np.concatenate([chunk, np.zeros((batch_size - n, *chunk.shape[1:]),
                                                      chunk.dtype)])}
    if enhance:
      batch = enhance_lib.add_enhanced(batch, normalize=normalize, **enhance)
    pred = _predict_labels(predict, batch)[:n]  # (n, S, S)
    for i in range(n):
      labels[start + i] = zoom_labels(pred[i], (height, width))
  return labels


# --------------------------------------------------------------------------------------------------
# Evaluation sets.
# --------------------------------------------------------------------------------------------------

def _set_info(eval_set) -> tuple[str | None, int]:
  reader = eval_set.reader
  return getattr(reader, "dataset", None), int(reader.num_classes)


def _is_volume_set(eval_set) -> bool:
  return bool(getattr(eval_set.reader, "volume_files", None))


def summarize_volumes(rows: Sequence[dict], names: Sequence[str]) -> dict[str, float]:
  """Class means over volumes and their mean, from `evaluate_volumes` rows."""
  out: dict[str, float] = {}
  metrics = ("DSC", "HD95") + (("HD95_mm",) if rows and "HD95_mm/" + names[0] in rows[0] else ())
  for metric in metrics:
    per_class = [float(np.mean([r[f"{metric}/{n}"] for r in rows])) for n in names]
    out[f"m{metric}"] = float(np.mean(per_class))
    out.update({f"{metric}/{n}": v for n, v in zip(names, per_class)})
  out["num_volumes"] = len(rows)
  out["num_images"] = int(sum(r["num_slices"] for r in rows))
  return out


def evaluate_volumes(predict: Callable[[dict], np.ndarray], eval_set, *, batch_size: int,
                     progress: bool = False) -> list[dict]:
  """One row per volume: {'id', 'num_slices', 'DSC/<class>', 'HD95/<class>'[, 'HD95_mm/<class>']}.

  A volume dict from `eval_set.volumes()` may carry 'spacing' (z, y, x) in mm for HD95_mm.
  """
  dataset, num_classes = _set_info(eval_set)
  names = class_names(dataset, num_classes)
  volumes: Iterable[dict] = eval_set.volumes()
  if progress:
    from tqdm import tqdm  # progress bar only
    volumes = tqdm(volumes, total=len(eval_set.reader.volume_files), desc=f"eval {eval_set.name}",
                   unit="volume", leave=False)
  rows = []
  for volume in volumes:
    pred = predict_volume(predict, volume["image"], size=eval_set.image_size,
                          normalize=eval_set.normalize, batch_size=batch_size,
                          enhance=getattr(eval_set, "enhance", None))
    spacing = volume.get("spacing")
    row = {"id": volume["id"], "num_slices": int(volume["image"].shape[0])}
    for name, metrics in zip(names, score_volume(pred, volume["label"], num_classes, spacing)):
      row.update({f"{k}/{name}": v for k, v in metrics.items()})
    rows.append(row)
  return rows


def evaluate_slices(predict: Callable[[dict], np.ndarray], eval_set, *, batch_size: int,
                    progress: bool = False) -> dict[str, float]:
  """Pooled per-class DSC/IoU of a 2-D slice set at the slices' original size."""
  dataset, num_classes = _set_info(eval_set)
  names = class_names(dataset, num_classes)
  confusion = np.zeros((num_classes, num_classes), np.int64)  # [true, predicted]
  batches = eval_set.batches(batch_size)
  if progress:
    from tqdm import tqdm  # progress bar only
    batches = tqdm(batches, total=-(-len(eval_set) // batch_size), desc=f"eval {eval_set.name}",
                   unit="batch", leave=False)
  num_images = 0
  for batch in batches:
    inputs = {k: v for k, v in batch.items() if k.startswith("image") and k != "image_orig"}
    pred = _predict_labels(predict, inputs)
    for i, valid in enumerate(batch["valid"]):
      if not valid:
        continue
      gt = np.asarray(batch["mask_orig"][i], np.int64)
      p = zoom_labels(pred[i], gt.shape).astype(np.int64)
      confusion += np.bincount(gt.ravel() * num_classes + p.ravel(),
                               minlength=num_classes ** 2).reshape(num_classes, num_classes)
      num_images += 1
  return pooled_scores(confusion, names, num_images)


def pooled_scores(confusion: np.ndarray, names: Sequence[str], num_images: int) -> dict[str, float]:
  """DSC and IoU per foreground class from a [true, predicted] confusion matrix, and their means."""
  tp = np.diag(confusion).astype(np.float64)
  fp = confusion.sum(axis=0) - tp
  fn = confusion.sum(axis=1) - tp
  dsc = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 1.0)[1:]
  iou = np.where(tp + fp + fn > 0, tp / np.maximum(tp + fp + fn, 1), 1.0)[1:]
  out = {"mDSC": float(dsc.mean()), "mIoU": float(iou.mean()), "num_images": num_images}
  out.update({f"DSC/{n}": float(v) for n, v in zip(names, dsc)})
  out.update({f"IoU/{n}": float(v) for n, v in zip(names, iou)})
  return out


def evaluate_sets(predict: Callable[[dict], np.ndarray], eval_sets: Mapping, *, batch_size: int,
                  progress: bool = False, overlay_dir: str | None = None,
                  num_overlays: int = 0) -> dict[str, float]:
  """Scores `predict` ({'image': (B,S,S,3), ...} -> logits (B,S,S,K)) on `eval_sets`, pooled.

  Volume sets (acdc/synapse ':test', SSL4MIS ':val') use the volume protocol and return 'mDSC',
  'mHD95' (voxels), 'DSC/<class>', 'HD95/<class>' (and '*HD95_mm*' when spacing is known),
  'num_volumes', 'num_images' (slices). Slice sets return pooled 'mDSC', 'mIoU', 'DSC/<class>',
  'IoU/<class>', 'num_images'. Several sets of one kind are pooled (volumes, or pixels).

  For volume sets with `overlay_dir`, also writes `per_volume.csv` there and up to `num_overlays`
  PNGs (image | prediction | ground truth) of the middle slice of the first volumes.
  """
  sets = list(eval_sets.values())
  kinds = {_is_volume_set(s) for s in sets}
  if len(kinds) > 1:
    raise ValueError("evaluate_sets got volume and slice sets together; score them separately.")
  if not sets:
    raise ValueError("evaluate_sets needs at least one eval set.")
  if kinds == {False}:
    if len(sets) == 1:
      return evaluate_slices(predict, sets[0], batch_size=batch_size, progress=progress)
    per_set = [evaluate_slices(predict, s, batch_size=batch_size, progress=progress) for s in sets]
    # Pixel pooling across sets would need the confusion matrices; average the sets' scores instead.
    return {k: float(np.mean([r[k] for r in per_set])) if k != "num_images"
            else int(sum(r[k] for r in per_set)) for k in per_set[0]}
  rows, names = [], None
  for s in sets:
    dataset, num_classes = _set_info(s)
    names = class_names(dataset, num_classes)
    rows += evaluate_volumes(predict, s, batch_size=batch_size, progress=progress)
  result = summarize_volumes(rows, names)
  if overlay_dir:
    write_per_volume_csv(os.path.join(overlay_dir, "per_volume.csv"), rows)
    if num_overlays > 0:
      write_volume_overlays(overlay_dir, predict, sets, batch_size=batch_size,
                            num_overlays=num_overlays)
  return result


# --------------------------------------------------------------------------------------------------
# Files: per-volume CSV, overlays, DIN-style tables.
# --------------------------------------------------------------------------------------------------

def write_per_volume_csv(path: str, rows: Sequence[dict]) -> str:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return path


_PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
                     [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230]], np.uint8)


def label_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
  """A grey (H, W) image in [0, 1] with labels tinted in a fixed palette -> uint8 (H, W, 3)."""
  grey = np.repeat((np.clip(image, 0, 1) * 255)[..., None], 3, axis=-1)
  colours = _PALETTE[labels % len(_PALETTE)].astype(np.float32)
  out = np.where(labels[..., None] > 0, (1 - alpha) * grey + alpha * colours, grey)
  return out.astype(np.uint8)


def write_volume_overlays(out_dir: str, predict, sets, *, batch_size: int, num_overlays: int):
  """`<volume>_slice<z>.png`: image | prediction | ground truth, for the middle slice of volumes."""
  from PIL import Image  # only for saving the per-case PNGs
  os.makedirs(out_dir, exist_ok=True)
  written = 0
  for s in sets:
    for volume in s.volumes():
      if written >= num_overlays:
        return
      z = volume["image"].shape[0] // 2
      image = volume["image"][z:z + 1]
      pred = predict_volume(predict, image, size=s.image_size, normalize=s.normalize,
                            batch_size=batch_size, enhance=getattr(s, "enhance", None))[0]
      panel = np.concatenate([label_overlay(image[0], np.zeros_like(pred)),
                              label_overlay(image[0], pred),
                              label_overlay(image[0], volume["label"][z])], axis=1)
      Image.fromarray(panel).save(os.path.join(out_dir, f"{volume['id']}_slice{z:03d}.png"))
      written += 1


def _dataset_of(set_name: str) -> str:
  return set_name.partition(":")[0]


def table_rows(results: Mapping[str, Mapping[str, float]]) -> dict[str, tuple[list, list]]:
  """{dataset: (header, rows)} in DIN's layout: DSC (%) and HD95 means, then per-class DSC (%).

  Our rows come first, then the mean DSC the DIN figure reports for each method (no per-class or
  HD95 values were published with it).
  """
  tables: dict[str, tuple[list, list]] = {}
  for set_name, metrics in results.items():
    dataset = _dataset_of(set_name)
    names = [k.partition("/")[2] for k in metrics if k.startswith("DSC/")]
    header = ["Method", "DSC (%) ↑", "HD95 (voxels) ↓"]
    has_mm = "mHD95_mm" in metrics
    if has_mm:
      header.append("HD95 (mm) ↓")
    header += names
    row = [f"ours on {set_name} ({int(metrics.get('num_volumes', metrics['num_images']))} "
           f"{'volumes' if 'num_volumes' in metrics else 'slices'})",
           100 * metrics["mDSC"], metrics.get("mHD95")]
    if has_mm:
      row.append(metrics["mHD95_mm"])
    row += [100 * metrics[f"DSC/{n}"] for n in names]
    if dataset not in tables:
      reported = [[f"{method} (figure)", values[dataset], None] + ([None] if has_mm else [])
                  + [None] * len(names) for method, values in REPORTED_MEAN_DSC.items()
                  if dataset in values]
      tables[dataset] = (header, [row], reported)
    else:
      tables[dataset][1].append(row)
  return {d: (h, ours + reported) for d, (h, ours, reported) in tables.items()}


def _fmt(value) -> str:
  if value is None:
    return ""
  return f"{value:.2f}" if isinstance(value, float) else str(value)


def markdown_summary(results: Mapping[str, Mapping[str, float]]) -> str:
  """The DIN-style tables (ours first, then the figure's reported mean DSCs) in Markdown."""
  blocks = []
  for dataset, (header, rows) in table_rows(results).items():
    lines = [f"**{dataset}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    lines += ["", "(figure): mean DSC read off DIN's Main_figure.png (±0.05; the authors' splits "
              "and runs, not this one)."]
    blocks.append("\n".join(lines))
  return "\n\n".join(blocks)


PROTOCOL = "TransUNet/MERIT volume evaluation; HD95 in voxels unless marked mm"


def write_tables_csv(out_dir: str, results: Mapping[str, Mapping[str, float]]) -> str:
  """`din_tables.csv`: the DIN-style rows of every evaluated set; returns its path."""
  csv_path = os.path.join(out_dir, "din_tables.csv")
  with open(csv_path, "w", newline="") as f:
    writer = csv.writer(f)
    for dataset, (header, rows) in table_rows(results).items():
      writer.writerow(["dataset"] + header)
      writer.writerows([[dataset] + [_fmt(v) for v in row] for row in rows])
  return csv_path
