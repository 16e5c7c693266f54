"""PraNet baseline on the PraNet polyp benchmark: configs/kvasir.py with only the model swapped.

  python launch.py --config=configs/kvasir_pranet.py --workdir=workdirs/kvasir_pranet       # GPU
  python launch.py --config=configs/kvasir_pranet.py:small --workdir=workdirs/kvasir_pranet_s  # CPU
  python launch.py --config=configs/kvasir_pranet.py:cpu --workdir=workdirs/kvasir_pranet_cpu  # CPU budget

Same data, seeded validation carve-out, test sets, 256×256 inputs, batch, optimizer, epochs and
metrics as BSA-Net, so the rows compare like for like; the structure loss over the four maps with
deep_supervision_weight 1 is PraNet's own loss. Fan et al. trained at 352×352 with Adam lr 1e-4 for
20 epochs and multi-scale inputs; to reproduce that instead, override data.image_size, train.lr and
train.num_epochs. The Res2Net-50 26w×4s backbone starts from ImageNet, as in Fan et al.:
`model_init=timm:res2net50_26w_4s` is fetched and converted on the first run and cached (offline the
run stops before compiling with the commands that fetch and convert it; `--config.model_init=none`
trains from scratch); `pranet.pretrained_mapping` loads it into `backbone`. 'cpu' and 'small' train
from scratch.

'cpu' is configs/kvasir.py:cpu (cosine, light augmentation, from scratch) with the same full-size
PraNet, at 128 px instead of 112: the Res2Net's stride 32 does not divide 112, and 128 is the nearest
size that keeps at least BSA-Net's resolution (scores are at each mask's original size either way).
"""

from bsa_jax import config_lib


def get_config(arg: str | None = None):
  """arg: '' (configs/kvasir.py's protocol), 'cpu' (its CPU budget) or 'small' (tiny PraNet)."""
  # The ImageNet Res2Net PraNet names; on CPU, 128 px: a multiple of the backbone's stride 32.
  return config_lib.model_swap(__file__, arg, "pranet", "paper",
                               model_init="timm:res2net50_26w_4s", cpu_image_size=128)
