"""LDNet baseline on the PraNet polyp benchmark: configs/kvasir.py with the model, its input size and its
loss swapped.

  python launch.py --config=configs/kvasir_ldnet.py --workdir=workdirs/kvasir_ldnet            # GPU
  python launch.py --config=configs/kvasir_ldnet.py:small --workdir=workdirs/kvasir_ldnet_s  # CPU
  python launch.py --config=configs/kvasir_ldnet.py:cpu --workdir=workdirs/kvasir_ldnet_cpu  # CPU budget

Same data, seeded validation carve-out, test sets, batch, optimizer, epochs and metrics as BSA-Net;
LDNet's own parts are its 224×224 input and its loss (BCE + Dice on the full map and each of the four
side maps against the halved mask, `train.loss='ldnet'`, i.e. `bsa_jax.models.ldnet.loss`). The
Res2Net-50 v1b encoder starts from ImageNet by default (`model_init=timm:res2net50d`; see
configs/kvasir_sanet.py for converting the official file offline). Zhang et al. trained with flips, rotation, 0.9-1.1 zoom and 224 crops of
256-px images, SGD (momentum 0.9, weight decay 1e-5, lr 1e-3, poly 0.9) for 80 epochs at batch 16;
`--config.train.optimizer=sgd --config.train.lr=1e-3 --config.train.weight_decay=1e-5
--config.train.schedule=poly --config.train.num_epochs=80` is that optimizer (its poly decay
per step instead of per epoch).

'cpu' is configs/kvasir.py:cpu (cosine, light augmentation, from scratch) with the same full-size
LDNet at 128 px (a multiple of the encoder's stride 32); 'small' is the tiny LDNet at 64 px.
"""

from bsa_jax import config_lib


def get_config(arg: str | None = None):
  """arg: '' (configs/kvasir.py's protocol at 224 px), 'cpu' (its CPU budget) or 'small' (tiny LDNet)."""
  # Not kvasir.py's Swin-T init: the ImageNet Res2Net-50 v1b of the official code (= timm's
  # res2net50d), fetched and converted on the first run; the CPU and small budgets train from scratch.
  # 224 px: LDNet's train crop and test size; 128 px on CPU.
  return config_lib.model_swap(__file__, arg, "ldnet", "paper", loss="ldnet",
                               model_init="timm:res2net50d", image_size=224, cpu_image_size=128)
