"""BSA-Net on the PraNet polyp benchmark (train: Kvasir-900 + ClinicDB-550), the paper's protocol.

  python launch.py --config=configs/kvasir.py --workdir=workdirs/kvasir          # paper protocol (GPU)
  python launch.py --config=configs/kvasir.py:small --workdir=workdirs/kvasir_small  # minutes on a CPU
  python launch.py --config=configs/kvasir.py:cpu --workdir=workdirs/kvasir_cpu      # ~45 min on 2 CPU cores

Paper protocol (section 4.1): 256×256, batch 16, Adam lr 1e-3, ~120 epochs, no augmentation, Swin
blocks initialised from ImageNet (convert them first, see README: `--config.model_init=...`).
A validation subset is carved from PraNet's train part (seeded, see bsa_jax/data/splits) so that the
checkpoint is selected on validation only; tests: PraNet's Kvasir-100 and CVC-ColonDB.

'cpu' is the CPU-budget recipe (README's reference row): the paper's network, from scratch, at 112 px
(the ISAM's 14x14 tokens are exactly 2x2 windows of 7, so no padded windows), 30 epochs with a cosine
schedule and flips/rot90/mild-scale augmentation, which is what fits in 60 minutes on 2 CPU cores.
"""

from bsa_jax import config_lib


def get_config(arg: str | None = None):
  """arg: '' (paper protocol), 'cpu' (the 1-hour CPU recipe) or 'small' (a tiny model, minutes on CPU)."""
  c = config_lib.base_config()
  c.model_name = "bsanet"
  c.model.variant = "paper"
  c.data.image_size = 256
  c.train.batch_size = 16
  c.train.lr = 1e-3
  c.train.num_epochs = 120.0
  c.train.eval_every_epochs = 5.0

  if arg == "small":
    c.model.variant = "tiny"
    c.data.image_size = 64
    c.data.max_train_examples = 256
    c.data.max_eval_examples = 32
    c.train.batch_size = 8
    c.train.num_epochs = 2.0
    c.train.eval_every_epochs = 1.0
    c.train.log_every_steps = 4
    c.train.checkpoint_every_steps = 32
    c.eval.num_overlays = 8
  elif arg == "cpu":
    c.data.image_size = 112
    c.train.num_epochs = 30.0
    c.train.schedule = "cosine"
    c.train.warmup_steps = 50
    c.train.eval_every_epochs = 2.0
    c.train.checkpoint_every_steps = 162  # every 2 epochs of 81 steps
    c.data.augment.enabled = True
    c.data.augment.scale_min = 0.9
    c.data.augment.scale_max = 1.1
    c.data.augment.color_jitter = 0.05
    c.eval.num_overlays = 24
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r} for configs/kvasir.py; use '', 'cpu' or 'small'.")
  return c
