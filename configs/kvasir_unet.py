"""U-Net baseline on the PraNet polyp benchmark: configs/kvasir.py with only the model swapped.

  python launch.py --config=configs/kvasir_unet.py --workdir=workdirs/kvasir_unet          # GPU
  python launch.py --config=configs/kvasir_unet.py:small --workdir=workdirs/kvasir_unet_s  # CPU minutes
  python launch.py --config=configs/kvasir_unet.py:cpu --workdir=workdirs/kvasir_unet_cpu  # CPU budget

Same data, seeded validation carve-out, test sets, 256×256 inputs, batch, optimizer, epochs, structure
loss with deep supervision and metrics as BSA-Net, so the table rows compare like for like. 'classic'
is Ronneberger et al.'s 64..1024 widths (31.0 M parameters), trained from scratch. 'cpu' is
configs/kvasir.py:cpu (112 px, cosine, light augmentation) with the same full-size U-Net.
"""

from bsa_jax import config_lib


def get_config(arg: str | None = None):
  """arg: '' (configs/kvasir.py's protocol), 'cpu' (its CPU budget) or 'small' (tiny U-Net)."""
  # U-Net has no ImageNet-initialised part: from scratch, as in its paper.
  return config_lib.model_swap(__file__, arg, "unet", "classic", model_init="")
