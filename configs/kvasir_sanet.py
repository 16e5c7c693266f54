"""SANet baseline on the PraNet polyp benchmark: configs/kvasir.py with the model, its input size and its
loss swapped.

  python launch.py --config=configs/kvasir_sanet.py --workdir=workdirs/kvasir_sanet            # GPU
  python launch.py --config=configs/kvasir_sanet.py:small --workdir=workdirs/kvasir_sanet_s  # CPU
  python launch.py --config=configs/kvasir_sanet.py:cpu --workdir=workdirs/kvasir_sanet_cpu  # CPU budget

Same data, seeded validation carve-out, test sets, batch, optimizer, epochs and metrics as BSA-Net;
SANet's own parts are its 352×352 input and its loss (BCE + Dice, `train.loss='sanet'`, i.e.
`bsa_jax.models.sanet.loss`). Eval-mode predictions carry SANet's probability correction
(`--config.model.probability_correction=False` turns it off). The Res2Net-50 v1b backbone starts
from ImageNet by default (`model_init=timm:res2net50d`, timm's copy of the official v1b weights,
fetched and converted once; offline, convert the official `res2net50_v1b_26w_4s-3cf99910.pth` with
`python -m bsa_jax.models.convert --timm_model res2net50d --checkpoint FILE --out DIR` and pass
`--config.model_init=DIR`). Wei et al. also trained with their colour exchange, flips and rot90,
random 256-352 input sizes per batch, SGD (Nesterov, momentum 0.9, weight decay 5e-4, lr 0.4 for the
head and 0.04 for the backbone, batch 64, halved at epochs 64 and 96) for 128 epochs; those are not
part of this like-for-like recipe. The first two are available as options:
`--config.data.augment.enabled=True --config.data.augment.color_exchange=1.0` and
`--config.train.size_schedule='((0.0, (256, 288, 320, 352)),)'`.

'cpu' is configs/kvasir.py:cpu (cosine, light augmentation, from scratch) with the same full-size
SANet at 128 px (a multiple of the backbone's stride 32); 'small' is the tiny SANet at 64 px.
"""

from bsa_jax import config_lib


def get_config(arg: str | None = None):
  """arg: '' (configs/kvasir.py's protocol at 352 px), 'cpu' (its CPU budget) or 'small' (tiny SANet)."""
  # Not kvasir.py's Swin-T init: the ImageNet Res2Net-50 v1b of the official code (= timm's
  # res2net50d), fetched and converted on the first run; the CPU and small budgets train from scratch.
  # 352 px: SANet's train/test size; 128 px on CPU.
  return config_lib.model_swap(__file__, arg, "sanet", "paper", loss="sanet",
                               model_init="timm:res2net50d", image_size=352, cpu_image_size=128)
