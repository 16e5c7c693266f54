"""tfds builders (array_record, no TensorFlow needed) for the 2D polyp and skin-lesion datasets.

  python -m bsa_jax.data.tfds_builders kvasir_seg [--manual_dir=DIR] [--data_dir=DIR]

Each builder writes one split, 'full' (every pair of the release, sorted by id, with the release's own
folder split in 'official_split'); our train/val/test splits are applied on top by id from the split JSONs
(`bsa_jax/data/splits/`), so there is one source of truth for ids. Features:
  id: text (the image's file stem)   image: Image (H, W, 3)   mask: Image (H, W, 1) 0/255 PNG
JPEG/PNG images are stored as their original bytes (no re-encoding); TIFF/BMP are stored as lossless PNG.
Masks are binarised exactly like the folder reader. Reading uses `tfds.builder_from_directory(...)
.as_data_source()` with decoding skipped and PIL decoding done by us, so both sources give identical
arrays (tfds itself would decode with OpenCV when installed, which can differ on JPEGs by a few levels).

Downloads: only Kvasir-SEG and the ISIC challenge archives are public URLs; the others need a manual
download (registration or a .rar archive) placed in --manual_dir. No checksums are registered: this
machine has no network, so none could be computed; tfds records them on the first online build when run
with `--register_checksums`.
"""

from __future__ import annotations

import os

import numpy as np
from absl import flags
from PIL import Image

from bsa_jax import cli
from bsa_jax import config_lib
from bsa_jax.data import io
from bsa_jax.data import registry

os.environ.setdefault("TFDS_DISABLE_TF", "1")
import tensorflow_datasets as tfds  # noqa: E402  (after the env var)

FULL_SPLIT = "full"
_ORIGINAL_BYTES = (".jpg", ".jpeg", ".png")

# name -> (homepage, citation, {key: url}, image encoding, manual instructions)
_KVASIR_URL = "https://datasets.simula.no/downloads/kvasir-seg.zip"
_ISIC = "https://isic-challenge-data.s3.amazonaws.com"  # public challenge archives (UNVERIFIED here)
SOURCES = {
    "kvasir_seg": ("https://datasets.simula.no/kvasir-seg/",
                   "Jha et al., Kvasir-SEG: A Segmented Polyp Dataset, MMM 2020.",
                   {"kvasir": _KVASIR_URL}, "jpeg"),
    "cvc_clinicdb": ("https://polyp.grand-challenge.org/CVCClinicDB/",
                     "Bernal et al., WM-DOVA maps for accurate polyp highlighting in colonoscopy, CMIG 2015.",
                     {}, "png"),
    "cvc_colondb": ("http://mv.cvc.uab.es/projects/colon-qa/cvccolondb",
                    "Bernal, Sanchez, Vilarino, Towards automatic polyp detection with a polyp appearance "
                    "model, Pattern Recognition 2012.", {}, "png"),
    "etis": ("https://polyp.grand-challenge.org/EtisLarib/",
             "Silva et al., Toward embedded detection of polyps in WCE images for early diagnosis of "
             "colorectal cancer, IJCARS 2014.", {}, "png"),
    "cvc_300": ("http://www.cvc.uab.es/CVC-Colon/index.php/databases/cvc-endoscenestill/",
                "Vazquez et al., A benchmark for endoluminal scene segmentation of colonoscopy images, "
                "J. Healthcare Eng. 2017.", {}, "png"),
    "isic2016": ("https://challenge.isic-archive.com/data/#2016",
                 "Gutman et al., Skin lesion analysis toward melanoma detection (ISBI 2016), "
                 "arXiv:1605.01397.",
                 {k: f"{_ISIC}/2016/{k}.zip" for k in (
                     "ISBI2016_ISIC_Part1_Training_Data", "ISBI2016_ISIC_Part1_Training_GroundTruth",
                     "ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth")}, "jpeg"),
    "isic2018": ("https://challenge.isic-archive.com/data/#2018",
                 "Codella et al., Skin lesion analysis toward melanoma detection 2018, arXiv:1902.03368.",
                 {k: f"{_ISIC}/2018/{k}.zip" for k in (
                     "ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth",
                     "ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth",
                     "ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth")}, "jpeg"),
    "ph2": ("https://www.fc.up.pt/addi/ph2%20database.html",
            "Mendonca et al., PH2 - A dermoscopic image database for research and benchmarking, EMBC 2013.",
            {}, "png"),
}


def _manual_instructions(name: str) -> str:
  s = registry.spec(name)
  return (f"Download {s.title} from {SOURCES[name][0]} and extract it into the manual dir, so that it "
          f"holds one of the folders {', '.join(s.dirs[:4])} (or the dataset's own files directly), with "
          f"e.g. {s.layouts[0].image_glob} and {s.layouts[0].mask_glob}. Then run "
          f"`python -m bsa_jax.data.tfds_builders {name} --manual_dir <dir>`.")


def find_in_folder(name: str, folder: str) -> list[registry.Example]:
  """The pairs of `name` in a folder that is either the dataset folder itself or a root holding it."""
  s = registry.spec(name)
  if any(registry.layout_exists(folder, l) and registry.list_files(folder, l.image_glob, l.image_re)
         for l in s.layouts):
    return list(registry._find_examples(name, os.path.abspath(folder)))
  return registry.find_examples(name, folder)


def _image_for_tfds(path: str):
  """Original bytes for JPEG/PNG (exact, small); decoded pixels as a PIL image (-> PNG) otherwise."""
  if path.lower().endswith(_ORIGINAL_BYTES):
    io.load_image(path)  # fail here, naming the file, rather than deep inside tfds
    with open(path, "rb") as f:
      return f.read()
  return Image.fromarray(io.load_image(path))


def _mask_for_tfds(path: str) -> Image.Image:
  return Image.fromarray(io.load_mask(path).astype(np.uint8) * 255)


class _SegBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A binary segmentation release: image/mask pairs found with `bsa_jax.data.registry`."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: one 'full' split, ids are file stems."}
  DATASET = ""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    # tfds derives this from the package via importlib_resources (not installed here); a checksums.tsv
    # registered online would live next to this file.
    from etils import epath  # etils comes with tensorflow_datasets: only when building tfds datasets
    return epath.Path(os.path.abspath(__file__))

  @property
  def MANUAL_DOWNLOAD_INSTRUCTIONS(self) -> str:  # noqa: N802  (tfds's attribute name)
    return _manual_instructions(self.DATASET)

  def _info(self) -> tfds.core.DatasetInfo:
    homepage, citation, _, encoding = SOURCES[self.DATASET]
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"{registry.spec(self.DATASET).title}: images with binary masks (bsa_jax).",
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Text(),
            "official_split": tfds.features.Text(),
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format=encoding),
            "mask": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
        }),
        homepage=homepage,
        citation=citation,
    )

  def _split_generators(self, dl_manager):
    urls = SOURCES[self.DATASET][2]
    manual = dl_manager._manual_dir  # None when not given
    if manual is not None and os.path.isdir(manual):
      folder = os.fspath(manual)
    elif urls:
      extracted = dl_manager.download_and_extract(urls)
      folder = os.path.commonpath([os.fspath(p) for p in extracted.values()])
    else:
      raise io.DataError(f"{self.DATASET} has no public download URL. " + _manual_instructions(self.DATASET))
    return {FULL_SPLIT: self._generate_examples(find_in_folder(self.DATASET, folder))}

  def _generate_examples(self, examples):
    for e in examples:
      h, w = io.image_size(e.image)
      mh, mw = io.image_size(e.mask)
      if (h, w) != (mh, mw):
        raise io.DataError(f"{e.mask}: mask is {mw}x{mh} (WxH) but its image is {w}x{h}.")
      yield e.id, {"id": e.id, "official_split": e.official_split, "image": _image_for_tfds(e.image),
                   "mask": _mask_for_tfds(e.mask)}


def _make_builder_class(dataset: str):
  """One tfds builder class per dataset, registered under its name (`tfds.builder("kvasir_seg")`).

  Run as `python -m` (module `__main__`), the classes are not registered: the command builds by class,
  and the library module may already have registered the same names in this process.
  """
  cls_name = "".join(p.capitalize() for p in dataset.split("_"))
  namespace = {"name": dataset, "DATASET": dataset, "__module__": __name__}
  return type(_SegBuilder)(cls_name, (_SegBuilder,), namespace, skip_registration=__name__ == "__main__")


BUILDERS = {name: _make_builder_class(name) for name in SOURCES}


def default_data_dir(root: str) -> str:
  return os.path.join(root, "tfds")


def build(name: str, *, data_dir: str, manual_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """Prepares `name` as array_record files under `data_dir` (offline with `manual_dir`)."""
  if name not in BUILDERS:
    raise io.DataError(f"no tfds builder for '{name}'; builders: {', '.join(BUILDERS)}.")
  builder = BUILDERS[name](data_dir=data_dir, file_format="array_record")
  config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
  builder.download_and_prepare(download_config=config)
  return builder


def define_flags() -> None:
  """The command's flags, defined only when it runs as one (importing the library defines none)."""
  flags.DEFINE_string("manual_dir", None, "Folder holding the downloaded release.")
  flags.DEFINE_string("data_dir", default_data_dir(config_lib.default_data_root()),
                      "tfds data_dir the dataset is built into.")


def main(argv) -> int:
  if len(argv) != 2 or argv[1] not in BUILDERS:
    raise cli.UserError(f"give one dataset name: {', '.join(sorted(BUILDERS))}")
  name = argv[1]
  builder = build(name, data_dir=flags.FLAGS.data_dir, manual_dir=flags.FLAGS.manual_dir)
  print(f"built {name}: {builder.info.splits[FULL_SPLIT].num_examples} examples in {builder.data_dir}")
  return 0


if __name__ == "__main__":
  define_flags()
  cli.run(main, prog="python -m bsa_jax.data.tfds_builders")
