"""Prints a model's parameter table (Markdown) for a config, ending with `total_params: N`.

  python -m bsa_jax.models.summary --config=configs/kvasir.py
  python -m bsa_jax.models.summary --config=configs/kvasir.py \\
      --config.model.variant=swin_t_stage3 --depth=2

Shapes come from `jax.eval_shape` on one image of `config.data.image_size`, so nothing is computed
and any size works on a CPU.
"""

import collections
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from ml_collections import config_flags

from bsa_jax import cli
from bsa_jax import config_lib
from bsa_jax import models

FLAGS = flags.FLAGS


def param_shapes(model_name: str, model_kwargs: Mapping, image_size: int) -> dict[tuple, tuple]:
  """{param path: shape} of `Model(**model_kwargs)` on a (1, S, S, 3) image, in creation order."""
  model = models.get_model(model_name, **model_kwargs)
  image = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  shapes = {}

  def walk(tree, prefix=()):
    for name, value in tree.items():  # Flax builds the dict in creation order; jax.tree sorts keys
      if isinstance(value, Mapping):
        walk(value, prefix + (name,))
      else:
        shapes[prefix + (name,)] = tuple(value.shape)

  def init(x):
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    walk(variables["params"])
    return variables

  jax.eval_shape(init, image)
  return shapes


def count_by_prefix(shapes: Mapping[tuple, tuple], depth: int = 1) -> dict[str, int]:
  """Parameter counts keyed by the first `depth` module names ('isam/blocks_0' at depth 2)."""
  counts = collections.Counter()
  for path, shape in shapes.items():
    module_path = path[:-1] or path  # a top-level param counts under its own name
    counts["/".join(module_path[:depth])] += int(np.prod(shape))
  return dict(counts)


def markdown_table(counts: Mapping[str, int]) -> str:
  """| module | params | share | rows in model order, then the total."""
  total = sum(counts.values())
  lines = ["| module | params | share |", "|---|---:|---:|"]
  lines += [f"| {name} | {n:,} | {100 * n / total:.1f} % |" for name, n in counts.items()]
  lines.append(f"| **total** | **{total:,}** | 100 % |")
  return "\n".join(lines)


def define_flags() -> None:
  """The command's flags, defined only when it runs as one (importing the library defines none)."""
  config_flags.DEFINE_config_file("config", None, "Experiment config file, e.g. configs/kvasir.py.",
                                  lock_config=True)
  flags.DEFINE_integer("depth", 1, "Module nesting depth of the table's rows.")


def main(argv) -> int:
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments {argv[1:]}; flags look like --name=value.")
  config = FLAGS.config
  if config is None:
    raise cli.UserError("--config is required, e.g. --config=configs/kvasir.py")
  params = param_shapes(config.model_name, config.model.to_dict(), config.data.image_size)
  counts = count_by_prefix(params, FLAGS.depth)
  print(f"{config.model_name} {config.model.to_dict()} at {config.data.image_size}×"
        f"{config.data.image_size}\n")
  print(markdown_table(counts))
  print(f"\ntotal_params: {sum(counts.values())}")
  return 0


if __name__ == "__main__":
  define_flags()
  cli.run(main, prog="python -m bsa_jax.models.summary", check_argv=config_lib.check_overrides)
