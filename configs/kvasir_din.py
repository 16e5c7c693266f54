"""DIN on the PraNet polyp benchmark: the same data, splits and metrics as BSA-Net (configs/kvasir.py).

  python launch.py --config=configs/kvasir_din.py --workdir=workdirs/kvasir_din          # GPU
  python launch.py --config=configs/kvasir_din.py:lowmem --workdir=workdirs/kvasir_din_lm  # less memory
  python launch.py --config=configs/kvasir_din.py:small --workdir=workdirs/kvasir_din_s  # CPU minutes

What is shared with configs/kvasir.py, so the two models are compared like for like: the training
set (Kvasir-900 + ClinicDB-550), the seeded validation carve-out used for checkpoint selection, the
test sets (Kvasir-100, CVC-ColonDB), 256×256 inputs, no augmentation, batch 16, ~120 epochs, and the
PraNet-toolbox metrics (`eval.kind='polyp'`, tables from `bsa_jax.eval.tables`).

What is DIN's own: the model, the enhanced second input (CLAHE, clip 2, 8×8 tiles, per RGB channel),
DIN's loss (0.3·CE + 0.7·Dice + multi-scale boundary loss, `train.loss='din'`) and MERIT's optimiser
(AdamW, lr 1e-4, weight decay 1e-4), which fits ImageNet-initialised encoders: timm's
`resnext50_32x4d` (`model_init=timm:resnext50_32x4d`, fetched and converted once and cached; offline
the run stops before compiling with the commands that fetch and convert it; `--config.model_init=none`
trains from scratch). As drawn in DIN's paper (see configs/acdc.py): no side losses
(`train.deep_supervision_weight=0`) and global DIFM attention (`model.difm_kv_pool=(1, 1, 1, 1)`);
'lowmem' pools keys/values 4×/2× at the two finest scales for smaller accelerators (one train step at
256², batch 2, `python -m bench.step_memory`, CPU float32: peak RSS 7.43 GiB full vs 5.93 GiB lowmem,
XLA temporaries of the step 2.52 vs 1.59 GiB; provisional, shared 2-core machine). 'small' is a
scratch CPU check (tiny variant, side losses).

One output channel (num_classes=1), not two: the polyp evaluator and tables read one foreground
logit, and the din loss treats a single logit l as the two-class logits (0, l), which is exactly a
2-class softmax with a redundant logit removed (CE = BCE; Dice and the boundary loss see background
and polyp probabilities 1 − σ(l) and σ(l)). So DIN keeps its loss and the metrics path is untouched.
"""

from bsa_jax import config_lib


def get_config(arg: str | None = None):
  """arg: '' (full protocol), 'lowmem' (pooled DIFM keys/values) or 'small' (tiny DIN, 64 px, a few
  hundred images, minutes on CPU)."""
  c = config_lib.base_config()  # data and metrics defaults are the PraNet benchmark's
  c.model_name = "din"
  c.model.variant = "base"
  c.model.num_classes = 1
  c.data.image_size = 256
  c.data.enhance = "clahe"
  c.train.batch_size = 16
  c.train.num_epochs = 120.0
  c.train.optimizer = "adamw"
  c.train.lr = 1e-4
  c.train.weight_decay = 1e-4
  c.train.loss = "din"
  c.train.eval_every_epochs = 5.0
  c.eval.kind = "polyp"
  config_lib.din_as_drawn(c, arg)  # the paper's loss, global attention, ImageNet encoders

  if arg == "small":
    config_lib.small_budget(c)
    c.train.optimizer = "adam"
    c.train.lr = 1e-3
    c.train.weight_decay = 0.0
  elif arg not in (None, "", "lowmem"):
    raise ValueError(f"Unknown config argument {arg!r} for configs/kvasir_din.py; use '', 'lowmem' "
                     "or 'small'.")
  return c
