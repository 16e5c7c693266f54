"""The training loss a config names (`config.train.loss`): one entry point for the train step.

'structure' is the binary polyp/lesion loss of `losses_binary` (PraNet's structure loss with deep
supervision and the ARM's point loss); 'din' is DIN's multi-class loss of `losses_multiclass`;
'sanet' and 'ldnet' are those baselines' official losses.
"""

import jax
import ml_collections as mlc

from bsa_jax.models import ldnet
from bsa_jax.models import sanet
from bsa_jax.train import losses_binary
from bsa_jax.train import losses_multiclass

# SANet and LDNet train with their official losses, which live beside their networks.
LOSSES = {"structure": losses_binary.binary_loss, "din": losses_multiclass.din_loss,
          "sanet": sanet.loss, "ldnet": ldnet.loss}


def segmentation_loss(logits: jax.Array, aux: dict, mask: jax.Array,
                      train_config: mlc.ConfigDict) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(total loss, named parts) of the loss `train_config.loss` names."""
  if train_config.loss not in LOSSES:
    raise ValueError(f"Unknown --config.train.loss={train_config.loss!r}; use one of {sorted(LOSSES)}.")
  return LOSSES[train_config.loss](logits, aux, mask, train_config)
