"""Decoding image and mask files into numpy arrays, with errors that name the file and the fix.

Masks come in many encodings: RGB JPEGs with compression noise (Kvasir-SEG), 1-bit PNG/BMP
(CVC-ClinicDB, PH2), 8-bit TIFF (CVC-ColonDB), 24-bit BMP (PH2's IMD002), 0/1-coded PNGs. ONE rule,
`binary_mask` (stated in `MASK_RULE`), turns every one of them into foreground/background, for
`data.check`, training, evaluation overlays and the eval CLI alike; it is the PraNet toolbox's reading
(grey, with MATLAB's rgb2gray for colour, > 128) extended to 1-bit and 0/1-coded files.

Memory follows the network, not the file: files above `max_pixels` are refused before decoding, and
with `min_side` a large image is reduced by a power of two while decoding (JPEG draft mode) or right
after it (`Image.reduce`), keeping at least `min_side` pixels on its short side.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image
from PIL import ImageChops

# Formats PIL opens that we accept as image/mask files when listing a folder.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


class DataError(ValueError):
  """A dataset file or folder that cannot be used; the message names it and says what to do."""


# PIL warns above 89 Mpx and refuses above 179 Mpx. Our callers set their own limit (max_pixels) and say
# which file broke it, so the warning, which names no file, is only noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# Images above this many pixels are refused (config.data.max_pixels): 100 Mpx is 10000x10000, ~50x the
# largest benchmark frame, and bounds one decoded RGB file at 300 MB.
DEFAULT_MAX_PIXELS = 100_000_000
# Rows per strip when a mask is converted to grey: bounds the float64 temporaries of rgb2gray.
_STRIP_ROWS = 128
# Colour masks up to this size take PIL's faster equal-channel test (3 extra bytes per pixel).
_FAST_PIXELS = 16_000_000


def pixel_limit_message(path: str, width: int, height: int, max_pixels: int) -> str:
  return (f"{path}: {width}x{height} = {width * height / 1e6:.1f} Mpx is above the pixel limit of "
          f"{max_pixels / 1e6:g} Mpx, so it was not decoded. Downscale the file, or raise the limit "
          "(data.max_pixels in a training config, the max_pixels option of the command-line tools).")


def open_lazy(path: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
  """Opens `path` reading its header only; refuses it above `max_pixels` (None: PIL's bomb limit)."""
  try:
    img = Image.open(path)
  except FileNotFoundError:
    raise DataError(f"{path}: file not found.") from None
  except Image.DecompressionBombError as e:
    raise DataError(f"{path}: refused by PIL's decompression-bomb check ({e}). If the file is "
                    "genuine, downscale it (predictions: save them at their mask's size).") from None
  except (OSError, SyntaxError, ValueError) as e:
    raise DataError(f"{path}: cannot decode ({type(e).__name__}: {e}). The file is corrupt or not "
                    "an image; re-download it or remove the image and its mask.") from None
  w, h = img.size
  if max_pixels and w * h > max_pixels:
    img.close()
    raise DataError(pixel_limit_message(path, w, h, max_pixels))
  return img


def reduction_factor(size: tuple[int, int], min_side: int) -> int:
  """The largest power of two f with min(size) / f >= min_side (1 when min_side is 0)."""
  f = 1
  while min_side and min(size) / (2 * f) >= min_side:
    f *= 2
  return f


def _open(path: str, max_pixels: int | None = DEFAULT_MAX_PIXELS, min_side: int = 0,
          draft: bool = True) -> tuple[Image.Image, int]:
  """Opens and fully decodes `path` (PIL is lazy, so truncation only shows on `load`).

  Returns the image and the reduction factor still to apply: `reduction_factor(size, min_side)`,
  divided by the scale a JPEG was already decoded at (draft mode: 1/2, 1/4 or 1/8, ceil(size / scale))
  when `draft` is on.
  """
  img = open_lazy(path, max_pixels)
  w, h = img.size
  factor = reduction_factor((w, h), min_side)
  try:
    if draft and factor > 1 and img.format == "JPEG":
      img.draft(img.mode, (max(1, w // factor), max(1, h // factor)))
      scale = next((a for a in (8, 4, 2) if factor % a == 0 and img.size == (-(-w // a), -(-h // a))),
                   1)
      factor //= scale
    img.load()
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    img.close()
    raise DataError(f"{path}: cannot decode ({type(e).__name__}: {e}). The file is corrupt or "
                    "truncated; re-download it or remove the image and its mask.") from None
  return img, factor


def decode_rgb(path: str, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               min_side: int = 0) -> Image.Image:
  """The decoded RGB PIL image that `load_image` returns as an array (same arguments, same pixels).

  For callers that keep a large image only to read bands of it (`predict`'s overlays): PIL's buffer
  is the one copy, instead of PIL's buffer and an array side by side while converting.
  """
  img, rest = _open(path, max_pixels, min_side)
  if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
    # 16-bit/float images: scale the actual range to 0..255 rather than clipping.
    arr = np.asarray(img, np.float64)[::rest, ::rest]
    lo, hi = float(arr.min()), float(arr.max())
    arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
    return Image.fromarray(np.repeat(np.round(arr).astype(np.uint8)[..., None], 3, axis=-1))
  if rest > 1 and img.mode in ("L", "RGB", "LA", "RGBA"):  # reduce before converting: less memory
    img, rest = img.reduce(rest), 1
  if img.mode != "RGB":
    img = img.convert("RGB")
  if rest > 1:
    img = img.reduce(rest)
  return img


def rgb_rows(img: Image.Image, start: int = 0, stop: int | None = None) -> np.ndarray:
  """Rows start:stop of an RGB PIL image as a uint8 (rows, W, 3) array, in strips of rows.

  `np.asarray(img)` goes through `tobytes`, which holds the pixels twice more while joining its
  chunks (864 MB beside the 576 MB PIL holds for a 12000x12000 image); strips keep the extra
  memory to one strip.
  """
  w, h = img.size
  stop = h if stop is None else stop
  rows = max(1, (1 << 22) // max(1, w))  # ~12 MB strips
  if (start, stop) == (0, h) and h <= rows:  # one strip: the image itself
    return np.asarray(img, np.uint8)
  out = np.empty((stop - start, w, 3), np.uint8)
  for y0 in range(start, stop, rows):
    y1 = min(stop, y0 + rows)
    out[y0 - start:y1 - start] = np.asarray(img.crop((0, y0, w, y1)))
  return out


def load_image(path: str, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               min_side: int = 0) -> np.ndarray:
  """Reads an image file as uint8 (H, W, 3) RGB (grayscale is repeated, alpha dropped).

  Args:
    path: any file PIL reads.
    max_pixels: files with more pixels are refused (DataError naming the file and the limit) before
      any pixel is decoded; None leaves only PIL's decompression-bomb check.
    min_side: 0 decodes at full size. Otherwise the image is reduced by the largest power of two f
      that keeps min_side pixels on its short side (JPEG: while decoding): (H, W) = ceil(size / f).
  """
  img = decode_rgb(path, max_pixels=max_pixels, min_side=min_side)
  try:
    return rgb_rows(img)  # (H, W, 3)
  finally:
    img.close()


# ------------------------------------------------------------------------------------------------
# The mask convention (one rule for data.check, training, overlays and the eval CLI).
# ------------------------------------------------------------------------------------------------
# MATLAB rgb2gray: the first row of the inverse NTSC (YIQ) matrix, as the PraNet toolbox reads masks.
RGB2GRAY = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
# JPEG-compressed masks (Kvasir-SEG) have up to ~2 % of pixels between 0 and 255; a grey-level image or a
# probability map put in the masks folder has far more.
_MAX_GREY_FRACTION = 0.05
MASK_RULE = ("a mask is a 1-bit file, or grey/colour values (colour is made grey with MATLAB's "
             "rgb2gray, alpha is ignored) that are either all 0 or 1 (1 = foreground) or 0..255 with "
             "foreground > 128, a maximum above 128 and at most 5% of pixels in 32..223")


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
  """MATLAB's rgb2gray on uint8 RGB (..., 3): weighted sum rounded half away from zero."""
  grey = rgb[..., :3].astype(np.float64) @ RGB2GRAY
  return np.clip(np.floor(grey + 0.5), 0, 255).astype(np.uint8)


def _grey_values(arr: np.ndarray) -> np.ndarray:
  """uint8 grey levels of a decoded mask array: (H, W[, C]) uint8, 16-bit, float or bool."""
  if arr.dtype == bool:
    return arr.astype(np.uint8) * 255
  if arr.ndim == 3:
    if arr.shape[-1] < 3 or (np.array_equal(arr[..., 0], arr[..., 1])
                             and np.array_equal(arr[..., 0], arr[..., 2])):
      arr = arr[..., 0]  # rgb2gray of three equal channels is that channel (the weights sum to 1)
    else:
      arr = rgb_to_gray(arr)
  if arr.dtype == np.uint8:
    return arr
  floating = np.issubdtype(arr.dtype, np.floating)
  arr = np.nan_to_num(np.asarray(arr, np.float64))
  top = float(arr.max()) if arr.size else 0.0
  if top > 255:  # 16-bit masks on the 0..65535 scale
    arr = arr / 257
  elif floating and top <= 1:  # float masks in [0, 1]: soft values stay grey, so the rule sees them
    arr = arr * 255
  return np.clip(np.floor(arr + 0.5), 0, 255).astype(np.uint8)


def mask_threshold(hist: np.ndarray, path: str) -> int:
  """The grey level above which a mask with this (256,) histogram is foreground, by `MASK_RULE`.

  Raises DataError naming `path` and stating the rule for a mask that no reading makes binary.
  """
  values = np.flatnonzero(hist)
  top = int(values[-1]) if len(values) else 0
  if top <= 1:
    return 0  # 0/1-coded (or empty): 1 is foreground
  if top <= 128:
    what = (f"holds the label values {values.tolist()[:8]}, like a multi-class label map"
            if len(values) > 2 else f"has values up to {top} only")
    raise DataError(f"{path}: the mask {what}, so it is not a binary mask (the rule: {MASK_RULE}). "
                    "Save it with 0/255 (or 0/1) values.")
  grey = float(hist[32:224].sum() / hist.sum())
  if grey > _MAX_GREY_FRACTION:
    raise DataError(f"{path}: the mask is not binary: {grey:.0%} of its pixels are grey (32..223); "
                    f"the rule: {MASK_RULE}. Is it an image or a soft/probability map?")
  return 128


def binarize_mask(arr: np.ndarray, path: str = "mask") -> np.ndarray:
  """A decoded mask array (bool, uint8 grey/RGB, 16-bit, float) -> bool (H, W) by `MASK_RULE`."""
  if arr.dtype == bool:
    return (arr if arr.ndim == 2 else arr.any(axis=-1)) != 0  # canonical bools (see binary_mask)
  grey = _grey_values(arr)
  return grey > mask_threshold(np.bincount(grey.ravel(), minlength=256), path)


def binary_mask(img: Image.Image, path: str, stride: int = 1) -> np.ndarray:
  """A decoded PIL mask -> bool (ceil(H / stride), ceil(W / stride)) by `MASK_RULE`.

  The rule is decided on every pixel; `stride` then keeps every stride-th row and column. Histograms
  and the equal-channel test run in PIL; colour with unequal channels, and any colour mask above
  `_FAST_PIXELS`, is made grey in strips of rows, so memory stays near a byte per pixel beyond
  PIL's own buffer.
  """
  if img.mode == "1":
    # PIL's bool arrays store True as byte 255; compare to get canonical bools (XLA reads bytes).
    return np.asarray(img)[::stride, ::stride] != 0
  if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
    return binarize_mask(np.asarray(img), path)[::stride, ::stride]
  if img.mode in ("LA", "La"):
    img = img.getchannel(0)  # alpha is not a label
  elif img.mode not in ("L", "RGB"):
    img = img.convert("RGB")
  if img.mode == "RGB" and img.size[0] * img.size[1] <= _FAST_PIXELS:
    r, g, b = img.split()
    if (ImageChops.difference(r, g).getbbox() is None
        and ImageChops.difference(r, b).getbbox() is None):
      img = r  # rgb2gray of three equal channels is that channel (the weights sum to 1)
  if img.mode == "L":
    threshold = mask_threshold(np.asarray(img.histogram(), np.int64), path)
    return np.asarray(img)[::stride, ::stride] > threshold
  w, h = img.size
  hist = np.zeros(256, np.int64)
  rows = -(-_STRIP_ROWS // stride) * stride  # a multiple of stride keeps the subsampling aligned
  grey = np.empty((-(-h // stride), -(-w // stride)), np.uint8)
  for y0 in range(0, h, rows):
    strip = _grey_values(np.asarray(img.crop((0, y0, w, min(h, y0 + rows)))))
    hist += np.bincount(strip.ravel(), minlength=256)
    grey[y0 // stride:y0 // stride + -(-strip.shape[0] // stride)] = strip[::stride, ::stride]
  return np.greater(grey, mask_threshold(hist, path), out=np.empty(grey.shape, bool))


def load_mask(path: str, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
              min_side: int = 0) -> np.ndarray:
  """Reads a binary mask file as bool (H, W) by `MASK_RULE` (1-bit, 0/255, 0/1, RGB all work).

  `max_pixels` and `min_side` as in `load_image` (with the same min_side a mask has its image's
  size), except that a mask is always decoded at full size, so the rule sees every pixel, and then
  subsampled. Raises DataError naming the file if it is unreadable or the rule refuses it.
  """
  img, _ = _open(path, max_pixels, draft=False)
  try:
    return binary_mask(img, path, reduction_factor(img.size, min_side))
  finally:
    img.close()


def verify_file(path: str, *, mask: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                min_side: int = 0) -> tuple[int, int]:
  """Decodes `path` completely (a mask also through `MASK_RULE`); returns its (height, width).

  Raises DataError naming the file if it is truncated, undecodable, above `max_pixels` or, for a mask,
  refused by the rule. Images (not masks) that are JPEGs are decoded in draft mode down to
  `min_side`: that still reads every byte of the stream, so truncation is caught at less cost.
  """
  with open_lazy(path, max_pixels) as head:
    w, h = head.size
  img, _ = _open(path, max_pixels, 0 if mask else min_side, draft=not mask)
  try:
    if mask:
      binary_mask(img, path)
  finally:
    img.close()
  return h, w


def image_size(path: str) -> tuple[int, int]:
  """(height, width) from the file header without decoding pixels."""
  try:
    with Image.open(path) as img:
      w, h = img.size
  except FileNotFoundError:
    raise DataError(f"{path}: file not found.") from None
  except (OSError, SyntaxError, ValueError) as e:
    raise DataError(f"{path}: not a readable image ({type(e).__name__}: {e}).") from None
  return h, w


def is_image_file(name: str) -> bool:
  return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and not name.startswith(".")
