"""DIN on Synapse multi-organ CT (background + 8 organs) with MERIT's Synapse recipe as the reference.

  python launch.py --config=configs/synapse.py --workdir=workdirs/synapse_din         # full (GPU)
  python launch.py --config=configs/synapse.py:lowmem --workdir=workdirs/synapse_lowmem  # less memory
  python launch.py --config=configs/synapse.py:small --workdir=workdirs/synapse_small  # CPU smoke run

Reference recipe (DECISIONS D10, SLDGroup/MERIT:train_synapse.py): TransUNet's preprocessed release
(train_npz slices of the 18 training cases, test_vol_h5 volumes of the 12 test cases, HU window
[-125, 275] -> [0, 1]), 256×256, batch 16, AdamW lr 1e-4 and weight decay 1e-4 at a constant rate,
300 epochs, seed 2222, loss 0.3·CE + 0.7·Dice (+ DIN's boundary loss), volume evaluation with the
TransUNet protocol (DECISIONS R2): per-organ DSC and HD95 (voxels) averaged over the 12 volumes.

TransUNet defines no validation split and MERIT picks its checkpoint on the test volumes; here
nothing is selected on test: the last checkpoint is reported (add `--config.data.val=...` with a
held-out part of the training cases to select on it). Enhancement CLAHE (clip 2, 8×8) per
DECISIONS D7; encoders ResNeXt-50 32×4d from timm's ImageNet `resnext50_32x4d`
(`model_init=timm:resnext50_32x4d`, fetched and converted once and cached; offline the run stops
before compiling with the commands that fetch and convert it; `--config.model_init=none`: scratch).
The shared data folder holds no Synapse release; point `--config.data.root` at one.

DIN as its paper draws it (see configs/acdc.py): no side losses (`train.deep_supervision_weight=0`)
and global DIFM attention with full keys/values (`model.difm_kv_pool=(1, 1, 1, 1)`). 'lowmem' pools
keys/values 4×/2× at the two finest scales (`(4, 2, 1, 1)`), for accelerators where the stride-4
attention does not fit: one train step at 256², batch 2 (`python -m bench.step_memory`, CPU,
float32): peak RSS 7.41 GiB full vs 5.98 GiB lowmem, XLA temporaries of the step 2.57 vs 1.63 GiB
(provisional, shared 2-core machine).
'small' is a CPU smoke run with the narrow scratch encoder, pooled keys/values and side losses.
"""

from bsa_jax import config_lib


def get_config(arg: str | None = None):
  """arg: '' (MERIT/DIN protocol), 'lowmem' (pooled DIFM keys/values) or 'small' (the 'small' DIN
  at 128 px on 256 slices)."""
  c = config_lib.base_config()
  c.seed = 2222
  c.model_name = "din"
  c.model.variant = "base"
  c.model.num_classes = 9

  c.data.train = ("synapse:train",)
  c.data.val = ()
  c.data.test = ("synapse:test",)
  c.data.image_size = 256
  c.data.enhance = "clahe"
  c.data.augment.enabled = True  # flips and 90° rotations (see configs/acdc.py)
  c.data.augment.scale_min = 1.0
  c.data.augment.scale_max = 1.0
  c.data.augment.color_jitter = 0.0

  c.train.batch_size = 16
  c.train.num_epochs = 300.0
  c.train.optimizer = "adamw"
  c.train.lr = 1e-4
  c.train.weight_decay = 1e-4
  c.train.schedule = "constant"
  c.train.loss = "din"
  c.train.checkpoint_every_steps = 1000
  config_lib.din_as_drawn(c, arg)  # the paper's loss, global attention, ImageNet encoders

  c.eval.kind = "multiclass"
  c.eval.select_metric = "mDSC"
  c.eval.batch_size = 16
  c.eval.num_overlays = 12

  if arg == "small":
    c.model.variant = "small"
    c.data.image_size = 128
    c.data.max_train_examples = 256
    c.train.batch_size = 8
    c.train.num_epochs = 4.0
    c.train.optimizer = "adam"
    c.train.lr = 2e-3
    c.train.weight_decay = 0.0
    c.train.log_every_steps = 8
    c.train.checkpoint_every_steps = 64
    c.eval.num_overlays = 4
  elif arg not in (None, "", "lowmem"):
    raise ValueError(f"Unknown config argument {arg!r} for configs/synapse.py; use '', 'lowmem' or "
                     "'small'.")
  return c
