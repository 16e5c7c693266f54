"""The BSA-Net paper's own protocol (section 4.1) for its Tables 1–4, for BSA-Net or a baseline.

  python launch.py --config=configs/paper_protocol.py --workdir=workdirs/paper712           # BSA-Net (GPU)
  python launch.py --config=configs/paper_protocol.py:pranet --workdir=workdirs/paper712_pranet
  python launch.py --config=configs/paper_protocol.py:small --workdir=workdirs/paper712_small  # CPU minutes
  python launch.py --config=configs/paper_protocol.py:unet,cpu --workdir=workdirs/paper712_unet_cpu

Data (DECISIONS D5): a seeded 7:1:2 split of each dataset on its own (`paper712_*`, committed in
bsa_jax/data/splits): train and validation are the 70 % and 10 % parts of Kvasir-SEG, CVC-ColonDB and
CVC-EndoScene (= CVC-ClinicDB + CVC-300, each split separately); the tests are the held-out 20 % of
Kvasir (Table 1), of CVC-ColonDB (Table 3) and of CVC-EndoScene (Table 4), and all of ETIS (Table 2;
`etis:pranet_test` is the whole 196-frame release, since the paper says no ETIS image took part in
training). Validation alone picks the checkpoint. The run writes results/paper_tables.{md,csv} in the
paper's layout, its rows beside the paper's.

Everything else is the model's full-protocol config (configs/kvasir.py for BSA-Net, kvasir_<model>.py
for a baseline): the paper's 256×256, batch 16, Adam 1e-3, ~120 epochs, no augmentation, and the
model's ImageNet initialisation (BSA-Net: timm Swin-T for the ISAM; PraNet: Res2Net-50; SANet and
LDNet: Res2Net-50 v1b; offline the run stops before compiling with the commands that fetch and
convert the weights, or
`--config.model_init=none` trains from scratch). The argument is `[model][,cpu|small]`: model one of
bsanet (default), unet, unetpp, pranet, sanet, ldnet; `cpu`/`small` take that config's CPU budget
(from scratch; the tables say so).

Datasets not on disk (`data.missing='skip'`): an entry whose dataset folder is absent is left out
with a warning naming where it was expected; a test set left out is a "not run" cell of its table, a
partial one (e.g. CVC-EndoScene without CVC-300, or 60 of ColonDB's 380 frames) is scored on what is
there and its row says "n of N". Training or validation with nothing on disk is an error;
`--config.data.missing=error` makes any absent dataset or image an error.
"""

import os

from bsa_jax import config_lib

TRAIN = ("kvasir_seg:paper712_train", "cvc_colondb:paper712_train", "cvc_endoscene:paper712_train")
VAL = ("kvasir_seg:paper712_val", "cvc_colondb:paper712_val", "cvc_endoscene:paper712_val")
# In the paper's table order: Kvasir, ETIS, CVC-ColonDB, CVC-EndoScene.
TEST = ("kvasir_seg:paper712_test", "etis:pranet_test", "cvc_colondb:paper712_test",
        "cvc_endoscene:paper712_test")
MODEL_CONFIGS = {"bsanet": "kvasir.py", "unet": "kvasir_unet.py", "unetpp": "kvasir_unetpp.py",
                 "pranet": "kvasir_pranet.py", "sanet": "kvasir_sanet.py", "ldnet": "kvasir_ldnet.py"}
BUDGETS = ("cpu", "small")


def get_config(arg: str | None = None):
  """arg: '[model][,cpu|small]', e.g. '' (BSA-Net), 'pranet', 'small', 'unet,cpu'."""
  parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
  models = [p for p in parts if p in MODEL_CONFIGS]
  budgets = [p for p in parts if p in BUDGETS]
  if len(models) > 1 or len(budgets) > 1 or len(models) + len(budgets) != len(parts):
    raise ValueError(f"Unknown config argument {arg!r} for configs/paper_protocol.py; use "
                     f"'[model][,cpu|small]' with model one of {', '.join(MODEL_CONFIGS)}.")
  model, budget = (models or ["bsanet"])[0], (budgets or [""])[0]
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), MODEL_CONFIGS[model])
  c = config_lib.load_config(f"{path}:{budget}" if budget else path)
  c.data.train, c.data.val, c.data.test = TRAIN, VAL, TEST
  c.data.missing = "skip"
  return c
