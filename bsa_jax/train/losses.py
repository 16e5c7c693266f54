"""The training loss a config names (`config.train.loss`): one entry point for the train step.

'structure' is the binary polyp/lesion loss of `losses_binary` (PraNet's structure loss with deep
supervision and the ARM's point loss); 'din' is DIN's multi-class loss of `losses_multiclass`.
"""

import jax
import ml_collections as mlc

from bsa_jax.train import losses_binary
from bsa_jax.train import losses_multiclass

LOSSES = {"structure": losses_binary.binary_loss, "din": losses_multiclass.din_loss}


def segmentation_loss(logits: jax.Array, aux: dict, mask: jax.Array,
                      train_config: mlc.ConfigDict) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(total loss, named parts) of the loss `train_config.loss` names."""
  if train_config.loss not in LOSSES:
    raise ValueError(f"Unknown --config.train.loss={train_config.loss!r}; use one of {sorted(LOSSES)}.")
  return LOSSES[train_config.loss](logits, aux, mask, train_config)
