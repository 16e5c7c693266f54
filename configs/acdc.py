"""DIN on ACDC (cine MRI; background, RV, Myo, LV) with MERIT's ACDC recipe as the reference.

  python launch.py --config=configs/acdc.py --workdir=workdirs/acdc_din           # full protocol (GPU)
  python launch.py --config=configs/acdc.py:small --workdir=workdirs/acdc_small   # minutes on a CPU

Reference recipe (DECISIONS D10, SLDGroup/MERIT:train_ACDC.py, which DIN says it builds on): 256×256
slices, batch 12, AdamW lr 1e-4 and weight decay 1e-4 at a constant rate, 400 epochs, seed 2222;
loss 0.3·CE + 0.7·Dice (+ DIN's boundary loss); test on volumes with the TransUNet protocol (per-class
DSC and HD95 per volume, DECISIONS R2). DIN's enhancement is undisclosed: CLAHE (clip 2, 8×8 tiles) per
DECISIONS D7. Augmentation: random flips and 90° rotations (MERIT also rotates by ±20° with
p=0.25, which `bsa_jax.data.augment` does not offer). Encoders: ResNeXt-50 32×4d; start them from
ImageNet with `--config.model_init=<converted resnext50_32x4d>` (see README, `bsa_jax.models.convert`).

Data: the SSL4MIS layout (`acdc:train` slices, `acdc:val`/`acdc:test` volumes, needs val.list and
test.list) or MT-UNet's (train/valid/test folders). The `small` variant runs on the shared 10-patient
subset (84 training slices, 10 test volumes, no validation list), so it selects no checkpoint and
reports the last one.
"""

from bsa_jax import config_lib


def get_config(arg: str | None = None):
  """arg: '' (MERIT/DIN protocol) or 'small' (the 'small' DIN at 128 px, a few CPU minutes)."""
  c = config_lib.base_config()
  c.seed = 2222
  c.model_name = "din"
  c.model.variant = "base"
  c.model.num_classes = 4

  c.data.train = ("acdc:train",)
  c.data.val = ("acdc:val",)
  c.data.test = ("acdc:test",)
  c.data.image_size = 256
  c.data.enhance = "clahe"
  c.data.augment.enabled = True
  c.data.augment.scale_min = 1.0
  c.data.augment.scale_max = 1.0
  c.data.augment.color_jitter = 0.0

  c.train.batch_size = 12
  c.train.num_epochs = 400.0
  c.train.optimizer = "adamw"
  c.train.lr = 1e-4
  c.train.weight_decay = 1e-4
  c.train.schedule = "constant"
  c.train.loss = "din"
  c.train.eval_every_epochs = 5.0

  c.eval.kind = "multiclass"
  c.eval.select_metric = "mDSC"
  c.eval.batch_size = 16
  c.eval.num_overlays = 8

  if arg == "small":
    c.model.variant = "small"
    c.data.val = ()  # the shared subset has no validation volumes
    c.data.image_size = 128
    c.train.batch_size = 8
    c.train.num_epochs = 30.0
    c.train.optimizer = "adam"
    c.train.lr = 2e-3
    c.train.weight_decay = 0.0
    c.train.log_every_steps = 10
    c.train.checkpoint_every_steps = 100
    c.eval.batch_size = 16
    c.eval.num_overlays = 4
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r} for configs/acdc.py; use '' or 'small'.")
  return c
