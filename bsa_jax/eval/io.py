"""Reading saved predictions and ground-truth masks, and pairing them by file stem.

Conventions of the PraNet toolbox (eval/main.m): an RGB mask is converted to grey with MATLAB's
`rgb2gray` weights, then binarised with `> 128`; an RGB prediction contributes its first channel.
Masks are read by the one mask rule of the whole code base, `bsa_jax.data.io.binary_mask`: the
toolbox's reading, extended to 1-bit and 0/1-coded files (which the toolbox would empty).

Memory: a file is decoded once into PIL's buffer and handed over as one uint8/bool array (no float
copies); files above `max_pixels` (default: PIL's decompression-bomb limit) are refused, naming them.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
from PIL import Image

from bsa_jax.data import io as data_io

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".ppm",
                    ".pgm", ".pbm")
GT_THRESHOLD = 128  # gt = grey > 128


class EvalInputError(ValueError):
  """A prediction or mask that cannot be used; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class Pair:
  name: str  # the ground truth's file stem
  pred_path: str
  gt_path: str


# ------------------------------------------------------------------------------------------------
# Files and pairing.
# ------------------------------------------------------------------------------------------------
def list_images(directory: str) -> dict[str, str]:
  """{stem: path} of the image files directly inside `directory`; duplicate stems are an error."""
  if not os.path.isdir(directory):
    raise EvalInputError(f"not a directory: {directory}")
  found: dict[str, str] = {}
  for entry in sorted(os.listdir(directory)):
    stem, ext = os.path.splitext(entry)
    if ext.lower() not in IMAGE_EXTENSIONS or entry.startswith("."):
      continue
    path = os.path.join(directory, entry)
    if stem in found:
      raise EvalInputError(f"two files with the stem '{stem}' in {directory}: "
                           f"{os.path.basename(found[stem])} and {entry}; keep one")
    found[stem] = path
  return found


def resolve_gt_dir(gt_dir: str) -> str:
  """`gt_dir` itself, or its `masks/` folder when given a dataset root (images/ + masks/)."""
  masks = os.path.join(gt_dir, "masks")
  if os.path.isdir(masks) and not list_images(gt_dir):
    return masks
  return gt_dir


def prediction_stems(gt_stem: str) -> list[str]:
  """File stems a prediction for this mask may have: the mask's own, then its image's.

  Image stems follow the public releases: CVC-ColonDB masks `p12` -> image `12`; PH2
  `IMD003_lesion` -> `IMD003`; ISIC `ISIC_0000000_segmentation` -> `ISIC_0000000`.
  """
  stems = [gt_stem]
  if re.fullmatch(r"p\d+", gt_stem):
    stems.append(gt_stem[1:])
  for suffix in ("_lesion", "_segmentation", "_mask"):
    if gt_stem.endswith(suffix) and len(gt_stem) > len(suffix):
      stems.append(gt_stem[:-len(suffix)])
  return stems


def _natural_key(name: str):
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def match_pairs(pred_dir: str, gt_dir: str) -> tuple[list[Pair], list[str]]:
  """Pairs every GT mask with its prediction; returns (pairs, unused prediction paths).

  Raises EvalInputError naming the masks without a prediction.
  """
  gt_dir = resolve_gt_dir(gt_dir)
  gts = list_images(gt_dir)
  if not gts:
    raise EvalInputError(f"no mask images ({', '.join(IMAGE_EXTENSIONS)}) in {gt_dir}")
  preds = list_images(pred_dir)
  pairs, missing, used = [], [], set()
  for gt_stem in sorted(gts, key=_natural_key):
    stem = next((s for s in prediction_stems(gt_stem) if s in preds), None)
    if stem is None:
      missing.append(gt_stem)
      continue
    used.add(stem)
    pairs.append(Pair(gt_stem, preds[stem], gts[gt_stem]))
  if missing:
    shown = ", ".join(f"'{m}' (looked for {' or '.join(repr(s) for s in prediction_stems(m))})"
                      for m in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    raise EvalInputError(
        f"no prediction in {pred_dir} for {len(missing)} of {len(gts)} masks in {gt_dir}: "
        f"{shown}{more}. Save one prediction per mask, named by the mask's or its image's file stem "
        f"(any of {', '.join(IMAGE_EXTENSIONS[:5])}, ...).")
  unused = [preds[s] for s in sorted(preds, key=_natural_key) if s not in used]
  return pairs, unused


# ------------------------------------------------------------------------------------------------
# Reading.
# ------------------------------------------------------------------------------------------------
def _open(path: str, what: str, fix: str, max_pixels: int | None = None) -> Image.Image:
  """Decodes `path`; every failure (PIL's decompression-bomb check included) names the file."""
  try:
    image = Image.open(path)
  except Image.DecompressionBombError as e:
    raise EvalInputError(f"{what} {path}: refused by PIL's decompression-bomb check ({e}). "
                         f"If the file is genuine, save it at its mask's size.") from None
  except (OSError, ValueError, SyntaxError) as e:  # PIL raises these for bad or truncated files
    raise EvalInputError(f"cannot read {what} {path}: {e}. {fix}") from None
  w, h = image.size
  if max_pixels and w * h > max_pixels:
    image.close()
    raise EvalInputError(f"{what} {data_io.pixel_limit_message(path, w, h, max_pixels)}")
  try:
    image.load()
  except (OSError, ValueError, SyntaxError) as e:
    image.close()
    raise EvalInputError(f"cannot read {what} {path}: {e}. {fix}") from None
  return image


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
  """MATLAB's rgb2gray on uint8 RGB: weighted sum rounded half away from zero."""
  return data_io.rgb_to_gray(rgb)


def read_gt(path: str, max_pixels: int | None = None) -> np.ndarray:
  """(H, W) bool mask by the mask rule (`bsa_jax.data.io.MASK_RULE`): grey (rgb2gray for colour)
  > 128 as the toolbox reads it; 1-bit masks as they are; a 0/1-coded mask's ones are foreground.

  Raises EvalInputError naming the file for an unreadable file, one above `max_pixels` (None: PIL's
  decompression-bomb limit) or a mask the rule refuses (e.g. many grey levels, values up to 100).
  """
  image = _open(path, "mask", "Re-save it as an 8-bit or 1-bit PNG with 0/255 values.", max_pixels)
  try:
    return data_io.binary_mask(image, path)
  except data_io.DataError as e:
    raise EvalInputError(f"mask {e}") from None
  finally:
    image.close()


def read_prediction(path: str, max_pixels: int | None = None) -> np.ndarray:
  """(H, W) uint8 map, or float64 in [0, 1] for 16-bit and float images (first channel of colour).

  Raises EvalInputError naming the file if it is unreadable or above `max_pixels` (None: PIL's
  decompression-bomb limit).
  """
  fix = "Re-save it as an 8-bit grey PNG (0-255) or a float32 TIFF with values in [0, 1]."
  image = _open(path, "prediction", fix, max_pixels)
  try:
    return _prediction_array(image, path, fix)
  finally:
    image.close()


def _prediction_array(image: Image.Image, path: str, fix: str) -> np.ndarray:
  if image.mode in ("I;16", "I;16B", "I;16L"):
    return np.array(image, dtype=np.float64) / 65535
  if image.mode == "F":
    pred = np.array(image, dtype=np.float64)
    if not np.all(np.isfinite(pred)) or pred.min() < 0 or pred.max() > 1:
      raise EvalInputError(f"float prediction {path} has values outside [0, 1] "
                           f"(min {np.nanmin(pred):g}, max {np.nanmax(pred):g}). {fix}")
    return pred
  if image.mode == "I":
    raise EvalInputError(f"32-bit integer prediction {path} is not supported. {fix}")
  if image.mode == "L":
    return np.asarray(image)  # one copy of PIL's buffer, no conversion
  if image.mode in ("1", "LA", "P", "PA"):
    return np.asarray(image.convert("L"))
  if image.mode in ("RGB", "RGBA", "RGBX"):
    return np.asarray(image.getchannel(0))  # the toolbox reads sal(:,:,1)
  return np.asarray(image.convert("RGB").getchannel(0))
