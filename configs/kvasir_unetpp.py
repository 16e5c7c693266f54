"""UNet++ baseline on the PraNet polyp benchmark: configs/kvasir.py with only the model swapped.

  python launch.py --config=configs/kvasir_unetpp.py --workdir=workdirs/kvasir_unetpp          # GPU
  python launch.py --config=configs/kvasir_unetpp.py:small --workdir=workdirs/kvasir_unetpp_s  # CPU
  python launch.py --config=configs/kvasir_unetpp.py:cpu --workdir=workdirs/kvasir_unetpp_cpu  # CPU budget

Same data, seeded validation carve-out, test sets, 256×256 inputs, batch, optimizer, epochs and
metrics as BSA-Net. 'classic' is Zhou et al.'s L^4 model (widths 32..512, 9.05 M parameters), trained
from scratch; its deep supervision over X^{0,1..4} is the trainer's main + side structure losses.
'cpu' is configs/kvasir.py:cpu (112 px, cosine, light augmentation) with the same full-size UNet++.
"""

import os

from bsa_jax import config_lib


def get_config(arg: str | None = None):
  """arg: '' (configs/kvasir.py's protocol), 'cpu' (its CPU budget) or 'small' (tiny UNet++)."""
  if arg not in (None, "", "cpu", "small"):
    raise ValueError(f"Unknown config argument {arg!r} for configs/kvasir_unetpp.py; use '', "
                     "'cpu' or 'small'.")
  base = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kvasir.py")
  c = config_lib.load_config(f"{base}:{arg}" if arg else base)
  c.model_name = "unetpp"
  c.model.variant = "tiny" if arg == "small" else "classic"
  del c.model["arm"]  # BSA-Net's own field
  c.model_init = ""  # UNet++ has no ImageNet-initialised part: from scratch, as in its paper
  return c
