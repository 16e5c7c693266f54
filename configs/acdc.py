"""DIN on ACDC (cine MRI; background, RV, Myo, LV) with MERIT's ACDC recipe as the reference.

  python launch.py --config=configs/acdc.py --workdir=workdirs/acdc_din           # full protocol (GPU)
  python launch.py --config=configs/acdc.py:lowmem --workdir=workdirs/acdc_lowmem # less memory
  python launch.py --config=configs/acdc.py:small --workdir=workdirs/acdc_small   # minutes on a CPU

Reference recipe (DECISIONS D10, SLDGroup/MERIT:train_ACDC.py, which DIN says it builds on): 256×256
slices, batch 12, AdamW lr 1e-4 and weight decay 1e-4 at a constant rate, 400 epochs, seed 2222;
loss 0.3·CE + 0.7·Dice (+ DIN's boundary loss); test on volumes with the TransUNet protocol (per-class
DSC and HD95 per volume, DECISIONS R2). DIN's enhancement is undisclosed: CLAHE (clip 2, 8×8 tiles) per
DECISIONS D7. Augmentation: random flips and 90° rotations (MERIT also rotates by ±20° with
p=0.25, which `bsa_jax.data.augment` does not offer). Encoders: ResNeXt-50 32×4d (our reading of
the figure, DECISIONS D8; the paper names no checkpoint), both started from timm's ImageNet
`resnext50_32x4d` (`model_init=timm:resnext50_32x4d`, fetched and converted on the first run and
cached; offline the run stops before compiling with the commands that fetch and convert it;
`--config.model_init=none` trains from scratch).

DIN as its paper draws it (DECISIONS D8, D9; configs/synapse.py and kvasir_din.py alike): the loss
is 0.3·CE + 0.7·Dice + L_bnd on the prediction only (`train.deep_supervision_weight=0`; the side
heads get no loss), and every DIFM attends globally with full keys and values
(`model.difm_kv_pool=(1, 1, 1, 1)`). 'lowmem' keeps that loss and pools keys/values 4×/2× at the two
finest scales (`difm_kv_pool=(4, 2, 1, 1)`, PVT-style, no weights: at 256² no scale attends to more
than 256 positions), for accelerators where the stride-4 4096×4096 attention matrices do not fit;
one train step at 256², batch 2, measured with `python -m bench.step_memory` (one process each, CPU,
float32): peak RSS 7.41 GiB full vs 5.93 GiB lowmem, XLA temporaries of the step 2.54 vs 1.60 GiB
(provisional: measured on a shared 2-core machine). Side losses (our earlier default) are
`--config.train.deep_supervision_weight=1`.

Data: the SSL4MIS layout (`acdc:train` slices, `acdc:val`/`acdc:test` volumes, needs val.list and
test.list) or MT-UNet's (train/valid/test folders). The `small` variant runs on the shared 10-patient
subset (84 training slices, 10 test volumes, no validation list), so it selects no checkpoint and
reports the last one. 'small' is a CPU pipeline check, not DIN's recipe: the narrow scratch encoder
(no ImageNet weights), its variant's pooled keys/values and side losses (weight 1).
"""

from bsa_jax import config_lib


def get_config(arg: str | None = None):
  """arg: '' (MERIT/DIN protocol), 'lowmem' (the same with pooled DIFM keys/values) or 'small' (the
  'small' DIN at 128 px, a few CPU minutes)."""
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
  config_lib.din_as_drawn(c, arg)

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
  elif arg not in (None, "", "lowmem"):
    raise ValueError(f"Unknown config argument {arg!r} for configs/acdc.py; use '', 'lowmem' or "
                     "'small'.")
  return c
