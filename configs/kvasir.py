"""BSA-Net on the PraNet polyp benchmark (train: Kvasir-900 + ClinicDB-550) with the paper's settings.

  python launch.py --config=configs/kvasir.py --workdir=workdirs/kvasir          # the paper's settings (GPU)
  python launch.py --config=configs/kvasir.py:small --workdir=workdirs/kvasir_small  # minutes on a CPU
  python launch.py --config=configs/kvasir.py:cpu --workdir=workdirs/kvasir_cpu      # ~45 min on 2 CPU cores
  python launch.py --config=configs/kvasir.py:cpu_hour --workdir=workdirs/kvasir_cpu_hour  # ~60 min, best so far

The data are the PraNet benchmark's, the field's reference split (DECISIONS D5), not the paper's own
7:1:2 protocol (that is configs/paper_protocol.py). The training settings are the paper's (section
4.1): 256×256, batch 16, Adam lr 1e-3, ~120 epochs, no augmentation, the ISAM's Swin blocks initialised
from ImageNet Swin-T (`model_init=timm:swin_tiny_patch4_window7_224`: fetched and converted on the
first run, then cached; offline the run stops before compiling with the commands that fetch and convert
them; `--config.model_init=none` trains from scratch instead). A validation subset is carved from
PraNet's train part (seeded, see bsa_jax/data/splits) so that the checkpoint is selected on validation
only; tests: PraNet's Kvasir-100 and CVC-ColonDB.

'cpu' is the CPU-budget recipe (README's reference row): the paper's network, FROM SCRATCH (no ImageNet
weights; every table it writes says so), at 112 px (the ISAM's 14x14 tokens are exactly 2x2 windows of
7, so no padded windows), 30 epochs with a cosine schedule and flips/rot90/mild-scale augmentation,
which is what fits in 60 minutes on 2 CPU cores. 'cpu_hour' is its successor from the recorded
experiments of docs/cpu_recipe.md (issue #19): 'cpu' plus the dense edge-gated ARM, a moving average of
the weights for evaluation, flip averaging in validation and tests, lr 2e-3 and 35 epochs, filling the
hour. 'small' (tiny model, 64 px) is from scratch too.
"""

# The ImageNet checkpoint the paper names for the ISAM's Swin blocks (DECISIONS D2).
IMAGENET_INIT = "timm:swin_tiny_patch4_window7_224"

from bsa_jax import config_lib


def get_config(arg: str | None = None):
  """arg: '' (paper protocol), 'cpu' / 'cpu_hour' (CPU recipes) or 'small' (a tiny model, minutes on CPU)."""
  c = config_lib.base_config()
  c.model_name = "bsanet"
  c.model.variant = "paper"
  # The Attention Rendering Module (DECISIONS D1): pointrend | dense | none, for the ablation in the
  # README (validation logs mDSC and mDSC_coarse, the prediction before the ARM, side by side).
  c.model.arm = "pointrend"
  c.data.image_size = 256
  c.train.batch_size = 16
  c.train.lr = 1e-3
  c.train.num_epochs = 120.0
  c.train.eval_every_epochs = 5.0
  c.model_init = IMAGENET_INIT

  if arg in ("small", "cpu", "cpu_hour"):
    c.model_init = ""  # from scratch: CPU budgets (provenance and tables say "none")
  if arg == "small":
    config_lib.small_budget(c)
  elif arg in ("cpu", "cpu_hour"):
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
    if arg == "cpu_hour":  # each lever measured on validation in docs/cpu_recipe.md
      c.model.arm = "dense"  # E1: +0.04 over PointRend at 2,430 steps, same step time
      c.train.ema_decay = 0.999  # E1: +0.002, free
      c.eval.tta = "flips"  # E1: +0.009; the tables record it
      c.train.lr = 2e-3  # S3: +0.020 at 1,159 steps
      c.train.num_epochs = 35.0  # 2,835 steps: the rest of the hour
  elif arg:
    raise ValueError(
        f"Unknown config argument {arg!r} for configs/kvasir.py; use '', 'cpu', 'cpu_hour' or 'small'.")
  return c
