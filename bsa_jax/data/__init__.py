"""Input pipelines: folder/tfds datasets, published splits, grain train iterator, padded eval sets.

  num_examples(config.data, 'train'|'val'|'test') -> int
  train_iterator(config.data, global_batch_size=..., seed=..., process_index=..., process_count=...)
      -> grain.DatasetIterator of {'image': f32 (b,S,S,3), 'mask': f32 (b,S,S,1)}; resumable.
  eval_sets(config.data, 'val'|'test') -> {'<dataset>:<split>': EvalSet}
  load_image(path) -> uint8 (H,W,3);  load_mask(path) -> bool (H,W)

Checkpointing the iterator with Orbax: `grain.checkpoint.CheckpointSave(it)` /
`grain.checkpoint.CheckpointRestore(it)` as an item of `ocp.args.Composite` (see bsa_jax/workdir/checkpoint.py),
or `iterator_state_json(it)` / `restore_iterator_state(it, text)` to keep it in a JSON item.
"""

from __future__ import annotations

import importlib
import json

from bsa_jax.data import eval_data
from bsa_jax.data import pipeline

# The public names, imported on first use (PEP 562) so `python -m bsa_jax.data.<tool>` does not import
# the tool twice and light users (load_image) do not pay for grain.
_LAZY = {
    "DataError": "bsa_jax.data.io", "load_image": "bsa_jax.data.io", "load_mask": "bsa_jax.data.io",
    "EvalSet": "bsa_jax.data.eval_data", "eval_sets": "bsa_jax.data.eval_data",
    "train_iterator": "bsa_jax.data.pipeline", "TrainIterator": "bsa_jax.data.pipeline",
}


def __getattr__(name: str):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'bsa_jax.data' has no attribute {name!r}")


def num_examples(data_config, which: str) -> int:
  """Number of examples in config.data.<which> (train after max_train_examples; val/test summed)."""
  if which == "train":
    return pipeline.num_train_examples(data_config)
  if which in ("val", "test"):
    return eval_data.num_eval_examples(data_config, which)
  raise ValueError(f"which={which!r} must be 'train', 'val' or 'test'.")


def iterator_state_json(iterator) -> str:
  """The iterator's position as a JSON string (grain states are JSON-compatible dicts)."""
  return json.dumps(iterator.get_state(), sort_keys=True)


def restore_iterator_state(iterator, state_json: str) -> None:
  """Moves `iterator` (built with the same config) to a position saved by `iterator_state_json`."""
  iterator.set_state(json.loads(state_json))


__all__ = ["DataError", "EvalSet", "TrainIterator", "eval_sets", "iterator_state_json", "load_image",
           "load_mask", "num_examples", "restore_iterator_state", "train_iterator"]
