"""UNet++ baseline on the PraNet polyp benchmark: configs/kvasir.py with only the model swapped.

  python launch.py --config=configs/kvasir_unetpp.py --workdir=workdirs/kvasir_unetpp          # GPU
  python launch.py --config=configs/kvasir_unetpp.py:small --workdir=workdirs/kvasir_unetpp_s  # CPU
  python launch.py --config=configs/kvasir_unetpp.py:cpu --workdir=workdirs/kvasir_unetpp_cpu  # CPU budget

Same data, seeded validation carve-out, test sets, 256×256 inputs, batch, optimizer, epochs and
metrics as BSA-Net. 'classic' is Zhou et al.'s L^4 model (widths 32..512, 9.05 M parameters), trained
from scratch; its deep supervision over X^{0,1..4} is the trainer's main + side structure losses.
'cpu' is configs/kvasir.py:cpu (112 px, cosine, light augmentation) with the same full-size UNet++.
"""

from bsa_jax import config_lib


def get_config(arg: str | None = None):
  """arg: '' (configs/kvasir.py's protocol), 'cpu' (its CPU budget) or 'small' (tiny UNet++)."""
  # UNet++ has no ImageNet-initialised part: from scratch, as in its paper.
  return config_lib.model_swap(__file__, arg, "unetpp", "classic", model_init="")
