"""Train/val/test id lists: PraNet's benchmark split and the paper's seeded 7:1:2 split, as JSON.

Committed files `bsa_jax/data/splits/<dataset>.json` are the source of truth; regenerate them with

  python -m bsa_jax.data.split_lists [--root DATA_ROOT]

which must reproduce them byte for byte (tested). Split names:
  pranet_test      PraNet's test ids (Kvasir: the 100 of MANIFEST.md; ClinicDB: the 62; test-only sets: all).
  pranet_trainval  PraNet's whole train part (Kvasir 900, ClinicDB 550).
  pranet_train/val Our decision: PraNet has no validation split, so a seeded 10 % of its train part is
                   held out for model selection, and no test image is ever used to pick a checkpoint.
  paper712_*       The BSA-Net paper's per-dataset 70/10/20 % split (no public lists; ours is seeded).
  official_*       The release's own folders (ISIC train/val/test).
  all              Every pair on disk.
Datasets without a committed file (ids not known in advance: PH2, ISIC, HAM10000, CVC-300, synthetic)
get the same seeded splits computed from the ids found on disk.

One's own dataset is the entry `folder:<path>[:all|train|val]` (images/ and masks/ inside): `train`
and `val` are a seeded 90/10 split of its pairs, and `--config.data.train=folder:<path>` alone trains
on the first and selects checkpoints on the second (`resolve_folder_entries`).
"""

from __future__ import annotations

import json
import os
import zlib
from typing import Collection

import numpy as np
from absl import flags

from bsa_jax import cli
from bsa_jax import config_lib
from bsa_jax.data import io
from bsa_jax.data import registry

SPLITS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "splits")
SEED = 0
VAL_FRACTION = 0.1
PAPER_FRACTIONS = (0.7, 0.1, 0.2)

# From MANIFEST.md: file names of results/PraNet/Kvasir/ in DengPingFan/PraNet@3cbd18f.
PRANET_KVASIR_TEST = tuple("""
cju0u82z3cuma0835wlxrnrjv cju15wdt3zla10801odjiw7sy cju16ach3m1da0993r1dq3sn2 cju16whaj0e7n0855q7b6cjkm
cju17z0qongpa0993de4boim4 cju1amqw6p8pw0993d9gc5crl cju1bm8063nmh07996rsjjemq cju1c3218411b08014g9f6gig
cju1cbokpuiw70988j4lq1fpi cju1cj3f0qi5n0993ut8f49rj cju1cqc7n4gpy0855jt246k68 cju1ddr6p4k5z08780uuuzit2
cju1f8w0t65en0799m9oacq0q cju1h89h6xbnx08352k2790o9 cju1hp9i2xu8e0988u2dazk7m cju2hfqnmhisa0993gpleeldd
cju2hjrqcvi2j0801bx1i6gxg cju2hos57llxm08359g92p6jj cju2hqt33lmra0988fr5ijv8j cju2lberzkdzm09938cl40pog
cju2mh8t6p07008350e01tx2a cju2nnqrqzp580855z8mhzgd6 cju2np2k9zi3v079992ypxqkn cju2omjpeqj5a0988pjdlb8l1
cju2osuru0ki00855txo0n3uu cju2pag1f0s4r0878h52uq83s cju2rga4psq9n09881z519xx0 cju2rmd2rsw9g09888hh1efu0
cju2rqo702wpx0855fn7d5cxh cju2top2ruxxy0988p1svx36g cju2wve9v7esz0878mxsdcy04 cju2y40d8ulqo0993q0adtgtb
cju2yi9tz8vky0801yqip0xyl cju2yo1j1v0qz09934o0e683p cju2yv4imv6cz099314jveiib cju2zp89k9q1g0855k1x0f1xa
cju2zwg05a0oy0801yr73ig7g cju30ajhw09sx0988qyahx9s8 cju30gxjq0djk0988jytm49rs cju30j1rgadut0801vuyrsnt8
cju31w6goazci0799n014ly1q cju32srle1xfq083575i3fl75 cju34m7h536wq0988xz7gx79v cju34xspwzenf0993cyzajv9n
cju3tp94kfstl08181awh6z49 cju3uhb79gcgr0871orbrbi3x cju3v11mrgwwb0755u242ygye cju3x5u2tiihx0818914gzxy1
cju3xga12iixg0817dijbvjxw cju3ya7goj6at0818v2l5ay7f cju3ykamdj9u208503pygyuc8 cju40m0rjkpw80871z6n6yg1u
cju42qet0lsq90871e50xbnuv cju42wamblrqn098798r2yyok cju43jcqim2cp08172dvjvyui cju45rj7ln8980850a7821fov
cju45ty6zn9oz0850qy4qnck1 cju45v0pungu40871acnwtmu5 cju5cky5xb0ay0801oxet697t cju5clr68b48r0755cmuvponm
cju5hi52odyf90817prvcwg45 cju5hyi9yegob0755ho3do8en cju5k3j3uf6de0817hszzfr7n cju5o4pk9h0720755lgp9jq8m
cju5wrrs0m2af0818vmnajbtw cju5x00l6m5j608503k78ptee cju5xjn5mm78b09871spyqhhr cju5xkwzxmf0z0818gk4xabdm
cju5xq3tdm9fn0987pbedxdg5 cju5y4hgqmk0i08180rjhbwvp cju5yeqiwmkgl0801fzv2douc cju6us80mv1b50871ebyq2wxa
cju6uy20suzbl0987rzuhz7z9 cju6v1m1xv07w09870ah3njy1 cju6vifjlv55z0987un6y4zdo cju6vrs1ov8cr098788h8gs6j
cju6x0yqbvxqt0755dhxislgb cju7ajnbo1gvm098749rdouk0 cju7awzmu1ncs0871hziy65zx cju7bd1qu1mx409877xjxibox
cju7bgnvb1sf808717qa799ir cju7crgxa28550755wbsgqkel cju7da88w2eod0755wejzynvt cju7ddtz729960801uazp1knc
cju7do8c72dbo0801vxfzxdc4 cju7dymur2od30755eg8yv2ht cju7ecl9i2i060987xawjp4l0 cju7fbndk2sl608015ravktum
cju7fcgbe2z3p07550vaflqdb cju7fpfzq2wyf0818xxd1oziv cju84hibuktj80871u519o71q cju88cddensj00987788yotmg
cju88t4fvokxf07558ymyh281 cju88vx2uoocy075531lc63n3 cju8alhigqn2h0801zksudldd cju8aqq8uqmoq0987hphto9gg
cju8bk8oirjhw0817hgkua2w8 cju8c2rqzs5t80850d0zky5dy cju8d4jgatgpj0871q2ophhkm cju8dqkrqu83i0818ev74qpxq
""".split())
# From MANIFEST.md: results/PraNet/CVC-ClinicDB/ of DengPingFan/PraNet (frames of the 612-frame release).
PRANET_CLINICDB_TEST = tuple(str(i) for i in (
    14, 21, 25, 31, 42, 50, 52, 61, 65, 66, 73, 80, 89, 100, 106, 119, 134, 148, 154, 163, 166, 171,
    179, 181, 185, 191, 205, 240, 251, 266, 279, 287, 300, 307, 349, 353, 374, 381, 388, 397, 400, 404,
    425, 429, 431, 442, 453, 459, 464, 474, 481, 483, 492, 526, 529, 545, 555, 559, 561, 569, 571, 575))

# Datasets whose full id list is known without the data (frame numbers of the public release); Kvasir's
# 1000 ids come from the data once and then live in the committed JSON.
KNOWN_IDS = {
    "cvc_clinicdb": tuple(str(i) for i in range(1, 613)),
    "cvc_colondb": tuple(str(i) for i in range(1, 381)),
    "etis": tuple(str(i) for i in range(1, 197)),
}
PRANET_TEST = {"kvasir_seg": PRANET_KVASIR_TEST, "cvc_clinicdb": PRANET_CLINICDB_TEST}
PRANET_TEST_ONLY = ("cvc_colondb", "etis", "cvc_300")  # PraNet tests on all of these
COMMITTED = ("kvasir_seg", "cvc_clinicdb", "cvc_colondb", "etis")
SPLIT_NAMES = ("all", "pranet_train", "pranet_val", "pranet_test", "pranet_trainval",
               "paper712_train", "paper712_val", "paper712_test",
               "official_train", "official_val", "official_test")


FOLDER_PARTS = ("all", "train", "val")  # of a `folder:<path>` entry


def parse_entry(entry: str) -> tuple[str, str]:
  """(dataset, split) of '<dataset>:<split>'; `folder:<path>[:<part>]` gives ('folder:<abs path>', part)."""
  if registry.is_own_folder(entry):
    rest = entry[len(registry.OWN_FOLDER):].strip()
    path, sep, part = rest.rpartition(":")
    if not sep or part not in FOLDER_PARTS:
      path, part = rest, "all"
    if not path:
      raise io.DataError(f"dataset entry {entry!r} names no folder; write 'folder:/path/to/dataset' "
                         "(images/ and masks/ inside).")
    return registry.OWN_FOLDER + os.path.abspath(os.path.expanduser(path)), part
  dataset, sep, split = entry.partition(":")
  if not sep or not dataset or not split:
    raise io.DataError(f"dataset entry {entry!r} must look like '<dataset>:<split>', e.g. "
                       "'kvasir_seg:pranet_train'.")
  return dataset.strip(), split.strip()


def data_root(data_config) -> str:
  return os.path.abspath(os.path.expanduser(data_config.root or config_lib.default_data_root()))


def select(examples: list[registry.Example], ids: list[str], where: str, entry: str) -> list:
  """The examples with `ids` in that order; ids missing on disk are an error naming them."""
  by_id = {e.id: e for e in examples}
  missing = [i for i in ids if i not in by_id]
  if missing:
    shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
    raise io.DataError(
        f"'{entry}': {len(missing)} of the split's {len(ids)} ids are not on disk in {where}: {shown}. "
        "The folder holds only part of the release (the shared data has e.g. only PraNet's ClinicDB "
        "train part and 60 ColonDB frames); download the full dataset, or use the split "
        f"'{entry.partition(':')[0]}:all' to take whatever is present.")
  return [by_id[i] for i in ids]


def _rng(dataset: str, purpose: str, seed: int) -> np.random.Generator:
  """A generator that depends only on (seed, dataset, purpose): stable across numpy versions' APIs."""
  return np.random.default_rng([seed, zlib.crc32(dataset.encode()), zlib.crc32(purpose.encode())])


def _sorted(ids) -> list[str]:
  return sorted(ids, key=registry.natural_key)


def make_splits(dataset: str, all_ids, seed: int = SEED) -> dict[str, list[str]]:
  """All seeded splits of `dataset` over `all_ids` (order-insensitive); same input -> same output."""
  ids = _sorted(set(all_ids))
  splits: dict[str, list[str]] = {"all": ids}
  if dataset in PRANET_TEST:
    test = set(PRANET_TEST[dataset])
    unknown = test - set(ids)
    if unknown:
      raise ValueError(f"{dataset}: PraNet test ids not among the dataset's ids: {_sorted(unknown)[:5]}")
    trainval = [i for i in ids if i not in test]
    n_val = int(round(VAL_FRACTION * len(trainval)))
    val = set(_rng(dataset, "pranet_val", seed).permutation(trainval)[:n_val].tolist())
    splits.update(pranet_train=[i for i in trainval if i not in val], pranet_val=_sorted(val),
                  pranet_test=_sorted(test), pranet_trainval=trainval)
  elif dataset in PRANET_TEST_ONLY:
    splits["pranet_test"] = ids
  n = len(ids)
  n_train, n_val = int(round(PAPER_FRACTIONS[0] * n)), int(round(PAPER_FRACTIONS[1] * n))
  perm = _rng(dataset, "paper712", seed).permutation(ids).tolist()
  splits.update(paper712_train=_sorted(perm[:n_train]), paper712_val=_sorted(perm[n_train:n_train + n_val]),
                paper712_test=_sorted(perm[n_train + n_val:]))
  return splits


def split_file(dataset: str, directory: str = SPLITS_DIR) -> str:
  return os.path.join(directory, f"{dataset}.json")


def to_json(dataset: str, splits: dict[str, list[str]], seed: int = SEED) -> str:
  """The committed file's text: metadata, then one line per split (readable diffs, small files)."""
  head = {
      "dataset": dataset,
      "generator": "python -m bsa_jax.data.split_lists",
      "seed": seed,
      "notes": ("Ids are file stems. pranet_val is our seeded 10% hold-out of PraNet's train part "
                "(PraNet has no validation split); paper712 is our seeded 70/10/20 split."),
      "sizes": {k: len(v) for k, v in splits.items()},
  }
  lines = [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
  body = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in splits.items())
  return "{\n" + "\n".join(lines) + '\n  "splits": {\n' + body + "\n  }\n}\n"


def load_committed(dataset: str, directory: str = SPLITS_DIR) -> dict[str, list[str]] | None:
  path = split_file(dataset, directory)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)["splits"]


def folder_split(ids, part: str, seed: int = SEED) -> list[str]:
  """One's own folder: 'val' is a seeded VAL_FRACTION of `ids` (at least one), 'train' the rest."""
  ids = _sorted(set(ids))
  if part == "all":
    return ids
  n_val = max(1, int(round(VAL_FRACTION * len(ids)))) if len(ids) > 1 else 0
  val = set(_rng(registry.OWN_FOLDER, "val", seed).permutation(ids)[:n_val].tolist())
  return [i for i in ids if (i in val) == (part == "val")]


def resolve_folder_entries(data_config, overridden: Collection[str] = ()) -> list[str]:
  """Training on one's own folder with one override: `--config.data.train=folder:/path/to/dataset`.

  Makes every `folder:` entry absolute (config.json records where the data was). When `data.train`
  names a whole folder and `data.val` was not overridden, training takes the folder's seeded 90 %
  ('train' part) and validation, which picks the checkpoint, the other 10 % ('val'); without a
  `data.test` override there is no test set (the config's benchmark sets are not the folder's).

  Args:
    data_config: `config.data`, changed in place.
    overridden: the config keys given on the command line, e.g. {'data.train', 'data.val'}.

  Returns:
    What was decided, one line each, for the log.
  """
  for which in ("train", "val", "test"):
    data_config[which] = tuple(":".join(parse_entry(e)) if registry.is_own_folder(e) else e
                               for e in data_config[which])
  whole = [e for e in data_config.train if registry.is_own_folder(e) and parse_entry(e)[1] == "all"]
  notes = []
  if whole and "data.val" not in overridden:
    folders = [parse_entry(e)[0] for e in whole]
    data_config.train = tuple(f"{parse_entry(e)[0]}:train" if e in whole else e
                              for e in data_config.train)
    data_config.val = tuple(f"{f}:val" for f in folders)
    notes.append(f"config.data.train={data_config.train}: a seeded {VAL_FRACTION:.0%} of each folder "
                 f"is held out for validation, config.data.val={data_config.val} (or pass "
                 "--config.data.val).")
  if whole and "data.test" not in overridden:
    data_config.test = ()
    notes.append("config.data.test=(): no test set for a folder of your own; pass e.g. "
                 "--config.data.test=folder:/path/to/test_set to score one.")
  return notes


def split_ids(dataset: str, split: str, examples: list[registry.Example],
              seed: int = SEED) -> list[str]:
  """Ids of `dataset:split`: from the committed JSON, else seeded from the ids on disk."""
  if registry.is_own_folder(dataset):
    return folder_split([e.id for e in examples], split, seed)
  if split not in SPLIT_NAMES:
    raise io.DataError(f"unknown split '{dataset}:{split}'; splits are {', '.join(SPLIT_NAMES)}.")
  on_disk = [e.id for e in examples]
  if split == "all":
    return on_disk
  if split.startswith("official_"):
    part = split[len("official_"):]
    ids = [e.id for e in examples if e.official_split == part]
    if not ids:
      raise io.DataError(f"'{dataset}:{split}': no files in an official '{part}' folder (official splits "
                         "exist only for releases that ship them as folders, e.g. ISIC).")
    return ids
  splits = load_committed(dataset) if seed == SEED else None
  if splits is None:
    splits = make_splits(dataset, KNOWN_IDS.get(dataset, on_disk), seed)
  if split not in splits:
    raise io.DataError(f"'{dataset}:{split}' does not exist: PraNet trains only on kvasir_seg and "
                       f"cvc_clinicdb; {dataset} has the splits {', '.join(splits)}.")
  return splits[split]


def define_flags() -> None:
  """The command's flags, defined only when it runs as one (importing the library defines none)."""
  flags.DEFINE_string("root", config_lib.default_data_root(), "Data root holding kvasir_seg.")
  flags.DEFINE_string("out", SPLITS_DIR, "Folder for the split JSONs.")


def main(argv) -> int:
  """Regenerates bsa_jax/data/splits/*.json."""
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments {argv[1:]}; flags look like --name=value.")
  root, out = flags.FLAGS.root, flags.FLAGS.out
  os.makedirs(out, exist_ok=True)
  for dataset in COMMITTED:
    if dataset in KNOWN_IDS:
      ids = KNOWN_IDS[dataset]
    else:  # Kvasir: take the ids from disk, or from the committed file when the data is absent
      try:
        ids = [e.id for e in registry.find_examples(dataset, root)]
      except io.DataError:
        ids = (load_committed(dataset) or {}).get("all")
        if not ids:
          raise
    with open(split_file(dataset, out), "w") as f:
      f.write(to_json(dataset, make_splits(dataset, ids)))
    print(f"wrote {split_file(dataset, out)}")
  return 0


if __name__ == "__main__":
  define_flags()
  cli.run(main, prog="python -m bsa_jax.data.split_lists")
