"""Where each 2D dataset lives under the data root and how its images pair with their masks.

A dataset is found in the first candidate folder that exists under `data_config.root`; both our shared
folder names (`kvasir_seg/`, `cvc_clinicdb_pranet_train/`, ...) and the names of the official downloads
(`Kvasir-SEG/`, `CVC-ClinicDB/`, `CVC-ColonDB/`, PraNet's `TestDataset/<name>/`, ...) are listed.
Pairing is by file stem: mask stem == image stem, or the release's rule (PH2 `IMD003` <-> `IMD003_lesion`,
CVC-ColonDB/ETIS `12` <-> `p12`, ISIC `ISIC_0000000` <-> `ISIC_0000000_segmentation`).
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import os
import re

from bsa_jax.data import io
from bsa_jax.data import synthetic


@dataclasses.dataclass(frozen=True)
class Layout:
  """One way a release arranges its files, relative to the dataset folder."""
  image_glob: str
  mask_glob: str
  image_re: str = r".+"  # full-match on the file stem; lets images and masks share one folder
  mask_re: str = r".+"
  official_split: str = ""  # ISIC releases ship train/test in separate folders


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  name: str
  title: str
  dirs: tuple[str, ...]  # candidate folders under the data root, first existing wins
  layouts: tuple[Layout, ...]
  combine_layouts: bool = False  # use every layout that exists (ISIC train + test) instead of the first
  synthetic: bool = False


@dataclasses.dataclass(frozen=True)
class Example:
  """One image/mask pair on disk."""
  id: str  # the image's file stem, unique within the dataset
  image: str
  mask: str
  official_split: str = ""


_STD = Layout("images/*", "masks/*")  # our shared layout and PraNet's TestDataset/TrainDataset layout


def _pranet(name: str) -> tuple[str, ...]:
  return (f"TestDataset/{name}", f"PraNet/TestDataset/{name}")


def _isic(prefix: str, parts: tuple[tuple[str, str, str], ...]) -> tuple[Layout, ...]:
  return tuple(Layout(f"{prefix}{img}/*", f"{prefix}{gt}/*", image_re=r"ISIC_\d+",
                      mask_re=r"ISIC_\d+_[Ss]egmentation", official_split=split)
               for img, gt, split in parts)


_ISIC2016 = (("ISBI2016_ISIC_Part1_Training_Data", "ISBI2016_ISIC_Part1_Training_GroundTruth", "train"),
             ("ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth", "test"))
_ISIC2018 = (("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth", "train"),
             ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth", "val"),
             ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth", "test"))

# Layouts of our shared folders and PraNet's TestDataset were checked on real files. ETIS and CVC-300 are
# not in shared/data: PraNet's TestDataset/{ETIS-LaribPolypDB,CVC-300}/{images,masks}/N.png and the
# ETIS release's ETIS-LaribPolypDB/ETIS-LaribPolypDB/N.tif + ETIS-LaribPolypDB/Ground Truth/pN.tif are
# tested on fixtures renamed from our real images (tests/test_paper_protocol.py). The release layouts of
# CVC-300 (bbdd/ + gtpolyp/), CVC-ClinicDB (Original/ + Ground Truth/), ISIC and HAM10000 are from their
# documentation/common usage (UNVERIFIED here: no copies).
DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("kvasir_seg", "Kvasir-SEG",
                ("kvasir_seg", "Kvasir-SEG", "kvasir-seg", "Kvasir") + _pranet("Kvasir"), (_STD,)),
    DatasetSpec("cvc_clinicdb", "CVC-ClinicDB",
                ("cvc_clinicdb", "cvc_clinicdb_pranet_train", "CVC-ClinicDB", "CVC-ClinicDB/CVC-ClinicDB",
                 "CVC-612") + _pranet("CVC-ClinicDB"),
                (_STD, Layout("Original/*", "Ground Truth/*"), Layout("PNG/Original/*", "PNG/Ground Truth/*"),
                 Layout("TIF/Original/*", "TIF/Ground Truth/*"), Layout("Original/*", "GroundTruth/*"))),
    DatasetSpec("cvc_colondb", "CVC-ColonDB",
                ("cvc_colondb", "cvc_colondb_subset", "CVC-ColonDB", "CVC-ColonDB/CVC-ColonDB")
                + _pranet("CVC-ColonDB"),
                # The original release is one flat folder: frames N.tiff, masks pN.tiff, contours cpN.tiff.
                (_STD, Layout("*", "*", image_re=r"\d+", mask_re=r"p\d+"))),
    DatasetSpec("etis", "ETIS-LaribPolypDB",
                ("etis", "ETIS-LaribPolypDB", "ETIS-LaribPolypDB/ETIS-LaribPolypDB", "ETIS")
                + _pranet("ETIS-LaribPolypDB"),
                (_STD, Layout("ETIS-LaribPolypDB/*", "GroundTruth/*", image_re=r"\d+"),
                 Layout("ETIS-LaribPolypDB/*", "Ground Truth/*", image_re=r"\d+"))),
    DatasetSpec("cvc_300", "CVC-300",
                ("cvc_300", "CVC-300", "EndoScene/CVC-300", "CVC-EndoSceneStill/CVC-300")
                + _pranet("CVC-300"),
                (_STD, Layout("bbdd/*", "gtpolyp/*"))),
    DatasetSpec("isic2016", "ISIC 2016",
                ("isic2016", "ISIC2016", "ISIC-2016", "ISBI2016", "."),
                (Layout("images/*", "masks/*", image_re=r"ISIC_\d+"),) + _isic("", _ISIC2016),
                combine_layouts=True),
    DatasetSpec("isic2018", "ISIC 2018 Task 1",
                ("isic2018", "ISIC2018", "ISIC-2018", "."),
                (Layout("images/*", "masks/*", image_re=r"ISIC_\d+"),) + _isic("", _ISIC2018),
                combine_layouts=True),
    DatasetSpec("ph2", "PH2",
                ("ph2", "ph2_subset", "PH2", "PH2Dataset", "PH2 Dataset"),
                (Layout("images/*", "masks/*", image_re=r"IMD\d+", mask_re=r"IMD\d+_lesion"),
                 Layout("PH2 Dataset images/*/*_Dermoscopic_Image/*", "PH2 Dataset images/*/*_lesion/*",
                        image_re=r"IMD\d+", mask_re=r"IMD\d+_lesion"),
                 Layout("*/*_Dermoscopic_Image/*", "*/*_lesion/*", image_re=r"IMD\d+",
                        mask_re=r"IMD\d+_lesion"))),
    DatasetSpec("ham10000", "HAM10000",
                ("ham10000", "ham10000_mini", "HAM10000"),
                (_STD, Layout("HAM10000_images*/*", "HAM10000_segmentations_lesion_tsdf/*",
                              image_re=r"ISIC_\d+", mask_re=r"ISIC_\d+_segmentation"))),
    DatasetSpec("synthetic_polyps", "Synthetic polyps (procedural, not medical data)",
                ("synthetic_polyps",), (_STD,), synthetic=True),
)}


# `folder:<path>` names one's own dataset: images/ and masks/ inside, paired by file stem.
OWN_FOLDER = "folder:"


def is_own_folder(name: str) -> bool:
  return name.startswith(OWN_FOLDER)


def spec(name: str) -> DatasetSpec:
  if is_own_folder(name):
    path = name[len(OWN_FOLDER):]
    return DatasetSpec(name, f"your dataset in {path}", (path,), (_STD,))
  if name not in DATASETS:
    raise io.DataError(f"unknown dataset '{name}'; known: {', '.join(DATASETS)}. Datasets are named "
                       "'<dataset>:<split>' in config.data.train/val/test.")
  return DATASETS[name]


def mask_stems(image_stem: str) -> tuple[str, ...]:
  """Mask file stems that may belong to an image stem, in order of preference."""
  return (image_stem, f"{image_stem}_lesion", f"{image_stem}_segmentation",
          f"{image_stem}_Segmentation", f"p{image_stem}", f"{image_stem}_mask")


def natural_key(name: str):
  """Sort key so '2' < '10' (frame numbers) while other ids sort as strings."""
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def list_files(folder: str, pattern: str, stem_re: str = r".+",
               duplicates: list[str] | None = None) -> dict[str, str]:
  """{stem: path} of image files matching `pattern` under `folder`.

  Two files with one stem are an error, or are appended to `duplicates` if a list is given (check).
  """
  found: dict[str, str] = {}
  for path in sorted(glob.glob(os.path.join(glob.escape(folder), pattern))):
    name = os.path.basename(path)
    stem = os.path.splitext(name)[0]
    if not os.path.isfile(path) or not io.is_image_file(name) or not re.fullmatch(stem_re, stem):
      continue
    if stem in found:
      if duplicates is not None:
        duplicates.append(f"{path}: same id '{stem}' as {found[stem]}; keep one")
        continue
      raise io.DataError(f"two files with the stem '{stem}': {found[stem]} and {path}. Keep one "
                         "(ids are file stems, so they must be unique within a dataset).")
    found[stem] = path
  return found


def layout_exists(folder: str, layout: Layout) -> bool:
  """Whether the folders named by the layout's globs exist (a flat layout always does)."""
  def exists(pattern: str) -> bool:
    sub = os.path.dirname(pattern)
    return not sub or any(os.path.isdir(p) for p in glob.glob(os.path.join(glob.escape(folder), sub)))
  return exists(layout.image_glob) and exists(layout.mask_glob)


def match_files(images: dict[str, str], masks: dict[str, str],
                official_split: str = "") -> tuple[list[Example], list[str], list[str]]:
  """(pairs, image paths without a mask, mask paths without an image), matching by stem rules."""
  examples, missing, used = [], [], set()
  for stem in sorted(images, key=natural_key):
    mask_stem = next((m for m in mask_stems(stem) if m in masks), None)
    if mask_stem is None:
      missing.append(images[stem])
      continue
    used.add(mask_stem)
    examples.append(Example(stem, images[stem], masks[mask_stem], official_split))
  extra = [masks[m] for m in sorted(masks, key=natural_key) if m not in used]
  return examples, missing, extra


def pair_files(images: dict[str, str], masks: dict[str, str], where: str,
               official_split: str = "") -> list[Example]:
  """Pairs image and mask files by stem; a missing or an extra mask is an error naming the files."""
  examples, missing, extra = match_files(images, masks, official_split)
  problems = []
  if missing:
    problems.append(f"{len(missing)} image(s) without a mask: {_few(missing)}")
  if extra:
    problems.append(f"{len(extra)} mask(s) without an image: {_few(extra)}")
  if problems:
    raise io.DataError(f"{where}: " + "; ".join(problems) + ". Each image needs exactly one mask with "
                       "the same file stem (or the release's rule, e.g. IMD003 <-> IMD003_lesion, "
                       "12 <-> p12); add the missing files or remove the strays. Run "
                       "`python -m bsa_jax.data.check <dir>` to list every problem.")
  return examples


def _few(paths: list[str], n: int = 5) -> str:
  shown = ", ".join(paths[:n])
  return shown + (f" and {len(paths) - n} more" if len(paths) > n else "")


def dataset_dir(name: str, root: str) -> str:
  """The first candidate folder of `name` under `root` holding one of its layouts."""
  s = spec(name)
  if s.synthetic:
    return synthetic.ensure(os.path.join(root, s.dirs[0]))
  for d in s.dirs:
    folder = os.path.normpath(os.path.join(root, d))
    if os.path.isdir(folder) and any(layout_exists(folder, l) for l in s.layouts):
      return folder
  if is_own_folder(name):
    raise io.DataError(f"{s.dirs[0]}: no images/ and masks/ folders inside, as '{name}' needs (one mask "
                       "per image with the same file stem, e.g. images/case1.jpg and masks/case1.png).")
  raise io.DataError(
      f"dataset '{name}' ({s.title}) not found under the data root {root}: looked for the folders "
      f"{', '.join(s.dirs)} holding e.g. {s.layouts[0].image_glob} and {s.layouts[0].mask_glob}. "
      "Set --config.data.root (or $BSA_DATA_DIR) to the folder that holds the download, or "
      "build the tfds dataset (python -m bsa_jax.data.tfds_builders).")


@functools.lru_cache(maxsize=64)
def _find_examples(name: str, folder: str) -> tuple[Example, ...]:
  s = spec(name)
  examples: list[Example] = []
  for layout in s.layouts:
    if not layout_exists(folder, layout):
      continue
    images = list_files(folder, layout.image_glob, layout.image_re)
    masks = list_files(folder, layout.mask_glob, layout.mask_re)
    if not images and not masks:
      continue
    where = os.path.join(folder, os.path.dirname(layout.image_glob))
    examples += pair_files(images, masks, where, layout.official_split)
    if not s.combine_layouts:
      break
  if not examples:
    raise io.DataError(f"{folder}: no image/mask files ({', '.join(io.IMAGE_EXTENSIONS)}) found for "
                       f"dataset '{name}'. The folder is empty or laid out differently; expected e.g. "
                       f"{s.layouts[0].image_glob} and {s.layouts[0].mask_glob}.")
  ids = [e.id for e in examples]
  if len(set(ids)) != len(ids):
    dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
    raise io.DataError(f"{folder}: the ids {dup} occur in more than one folder of dataset '{name}'.")
  return tuple(examples)


def find_examples(name: str, root: str) -> list[Example]:
  """All image/mask pairs of dataset `name` under `root`, sorted by id (naturally)."""
  return list(_find_examples(name, dataset_dir(name, root)))
