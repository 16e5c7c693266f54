"""Offline demo on SYNTHETIC polyp-like images: trains a small BSA-Net in minutes on a 2-core CPU.

  python launch.py --config=configs/demo.py --workdir=workdirs/demo

The images are procedurally generated (bsa_jax/data/synthetic.py) on first use into
`$BSA_CACHE_DIR/synthetic_polyps` (default ~/.cache/bsa_jax); they are not medical data and their numbers mean nothing clinically.
The run ends with a metrics table in workdirs/demo/results/ and overlays in workdirs/demo/overlays/.
"""

import os

from bsa_jax import config_lib


def get_config(arg: str | None = None):
  c = config_lib.base_config()
  c.model_name = "bsanet"
  c.model.variant = "tiny"
  c.data.root = os.environ.get("BSA_CACHE_DIR", os.path.expanduser("~/.cache/bsa_jax"))
  c.data.image_size = 64
  c.data.train = ("synthetic_polyps:paper712_train",)
  c.data.val = ("synthetic_polyps:paper712_val",)
  c.data.test = ("synthetic_polyps:paper712_test",)
  c.train.batch_size = 8
  c.train.num_epochs = 6.0
  c.train.lr = 3e-3
  c.train.schedule = "cosine"
  c.train.eval_every_epochs = 2.0
  c.train.log_every_steps = 5
  c.train.checkpoint_every_steps = 100
  c.eval.num_overlays = 12
  if arg:
    raise ValueError(f"configs/demo.py takes no argument (got {arg!r}).")
  return c
