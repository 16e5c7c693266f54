"""Reading prepared tfds datasets (`bsa_jax.data.tfds_builders`) as readers, for config.data.source='tfds'.

Decoding is skipped in tfds and done with PIL here, so arrays equal the folder reader's bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
import io as pyio
import os

import numpy as np
from PIL import Image

from bsa_jax.data import io
from bsa_jax.data import registry
from bsa_jax.data import split_lists
from bsa_jax.data import tfds_builders

os.environ.setdefault("TFDS_DISABLE_TF", "1")


def _open_blob(blob: bytes, where: str) -> Image.Image:
  """Decodes stored image bytes with PIL (the folder reader's decoder)."""
  try:
    img = Image.open(pyio.BytesIO(blob))
    img.load()
  except (OSError, SyntaxError, ValueError) as e:
    raise io.DataError(f"{where}: cannot decode the stored image ({e}); rebuild the tfds dataset.") from None
  return img


@functools.lru_cache(maxsize=16)
def _data_source(builder_dir: str):
  import tensorflow_datasets as tfds  # heavy: only for source=tfds
  builder = tfds.builder_from_directory(builder_dir)
  skip = tfds.decode.SkipDecoding()
  return builder.as_data_source("full", decoders={"image": skip, "mask": skip})


@functools.lru_cache(maxsize=16)
def _index(builder_dir: str) -> tuple[tuple[str, int, str], ...]:
  """(id, record index, official split) of every record, in id order (records are stored shuffled)."""
  ds = _data_source(builder_dir)
  rows = []
  for i in range(len(ds)):
    r = ds[i]
    rows.append((r["id"].decode(), i, r["official_split"].decode()))
  return tuple(sorted(rows, key=lambda row: registry.natural_key(row[0])))


@dataclasses.dataclass(frozen=True)
class TfdsReader:
  """Records of a prepared builder directory (picklable: the data source is reopened per process)."""
  builder_dir: str
  records: tuple[tuple[str, int], ...]  # (id, record index) in split order
  num_classes: int = 1

  def __len__(self) -> int:
    return len(self.records)

  @property
  def ids(self) -> list[str]:
    return [i for i, _ in self.records]

  def subset(self, indices) -> "TfdsReader":
    return dataclasses.replace(self, records=tuple(self.records[i] for i in indices))

  def read(self, i: int) -> dict:
    example_id, index = self.records[i]
    r = _data_source(self.builder_dir)[index]
    where = f"{self.builder_dir} record {index} ('{example_id}')"
    image = np.asarray(_open_blob(r["image"], where).convert("RGB"), np.uint8)  # (H, W, 3)
    mask = io.binarize_mask(np.asarray(_open_blob(r["mask"], where).convert("L"), np.uint8), where)
    if image.shape[:2] != mask.shape:
      raise io.DataError(f"{where}: image {image.shape[:2]} and mask {mask.shape} differ; rebuild.")
    return {"id": example_id, "image": image, "mask": mask}


def builder_dir(data_dir: str, name: str) -> str:
  """`<data_dir>/<name>/<newest version>`, or a DataError saying how to build it."""
  base = os.path.join(data_dir, name)
  versions = sorted((v for v in os.listdir(base) if v[:1].isdigit()),
                    key=lambda v: tuple(int(x) for x in v.split(".") if x.isdigit())) \
      if os.path.isdir(base) else []
  if not versions:
    raise io.DataError(f"no prepared tfds dataset '{name}' in {data_dir}. Build it with "
                       f"`python -m bsa_jax.data.tfds_builders {name} --data_dir {data_dir} "
                       "[--manual_dir <download>]`, or use --config.data.source=folder.")
  return os.path.join(base, versions[-1])


def reader(data_config, entry: str) -> TfdsReader:
  """The TfdsReader of '<dataset>:<split>' (ids selected by the same split JSONs as folders)."""
  dataset, split = split_lists.parse_entry(entry)
  registry.spec(dataset)
  data_dir = data_config.get("tfds_data_dir", "") or tfds_builders.default_data_dir(
      split_lists.data_root(data_config))
  path = builder_dir(data_dir, dataset)
  index = _index(path)
  examples = [registry.Example(i, "", "", official) for i, _, official in index]
  ids = split_lists.split_ids(dataset, split, examples, seed=int(data_config.get("split_seed", 0)))
  chosen = split_lists.select(examples, ids, path, entry)
  by_id = {i: idx for i, idx, _ in index}
  return TfdsReader(path, tuple((e.id, by_id[e.id]) for e in chosen))
