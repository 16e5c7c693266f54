"""U-Net baseline on the PraNet polyp benchmark: configs/kvasir.py with only the model swapped.

  python launch.py --config=configs/kvasir_unet.py --workdir=workdirs/kvasir_unet          # GPU
  python launch.py --config=configs/kvasir_unet.py:small --workdir=workdirs/kvasir_unet_s  # CPU minutes
  python launch.py --config=configs/kvasir_unet.py:cpu --workdir=workdirs/kvasir_unet_cpu  # CPU budget

Same data, seeded validation carve-out, test sets, 256×256 inputs, batch, optimizer, epochs, structure
loss with deep supervision and metrics as BSA-Net, so the table rows compare like for like. 'classic'
is Ronneberger et al.'s 64..1024 widths (31.0 M parameters), trained from scratch. 'cpu' is
configs/kvasir.py:cpu (112 px, cosine, light augmentation) with the same full-size U-Net.
"""

import os

from bsa_jax import config_lib


def get_config(arg: str | None = None):
  """arg: '' (configs/kvasir.py's protocol), 'cpu' (its CPU budget) or 'small' (tiny U-Net)."""
  if arg not in (None, "", "cpu", "small"):
    raise ValueError(f"Unknown config argument {arg!r} for configs/kvasir_unet.py; use '', "
                     "'cpu' or 'small'.")
  base = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kvasir.py")
  c = config_lib.load_config(f"{base}:{arg}" if arg else base)
  c.model_name = "unet"
  c.model.variant = "tiny" if arg == "small" else "classic"
  del c.model["arm"]  # BSA-Net's own field
  c.model_init = ""  # U-Net has no ImageNet-initialised part: from scratch, as in its paper
  return c
