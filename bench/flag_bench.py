"""The XLA flag study (issue #15 item 2): the train step and convolution micro-benchmarks under one
set of XLA flags (applied to XLA_FLAGS by `_worker.configure`), with the values to compare.

Every flag set runs in its own worker on the same synthetic batch and the same initial parameters.
The worker times the train step (Adam, as in the trainer) and each convolution case, and saves the
first step's loss and raw gradients and each case's output and gradients to an .npz file; the parent
(`sections.flags_diff`) compares them with the baseline set's file. The compiled train step's HLO is
fingerprinted, so a flag that leaves it unchanged (and only changes code generation, or nothing)
shows as such.
"""

from __future__ import annotations

import hashlib
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench import common
from bench import jax_step
from bsa_jax.models import resnext

# Convolution micro-benchmarks at image size S and batch B: (name, H/W as a fraction of S, input
# channels, output channels, groups, GroupedConv impl). The dense 3x3 convolutions of the decoder
# and encoder widths, and the ResNeXt grouped 3x3 convolutions (8 groups) both as the model computes
# them on CPU (`auto`: block-diagonal or per group) and as XLA's native grouped convolution, whose
# gradient was 20-60x slower (bench/NOTES.md section 1).
CONV_CASES = (
    ("dense3x3_s4_c64", 4, 64, 64, 1, "native"),
    ("dense3x3_s8_c128", 8, 128, 128, 1, "native"),
    ("grouped3x3_s4_c16_auto", 4, 16, 16, 8, "auto"),
    ("grouped3x3_s4_c16_native", 4, 16, 16, 8, "native"),
    ("grouped3x3_s16_c80_auto", 16, 80, 80, 8, "auto"),
    ("grouped3x3_s16_c80_native", 16, 80, 80, 8, "native"),
)
LIBRARY_FUSIONS = ("__ynn_fusion", "__onednn_fusion", "__xnn_fusion")


def capturing(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """`tx` whose state also holds the last raw gradient, so the train step itself reports it."""
  def init(params):
    return {"inner": tx.init(params), "grads": jax.tree.map(jnp.zeros_like, params)}

  def update(grads, state, params=None):
    updates, inner = tx.update(grads, state["inner"], params)
    return updates, {"inner": inner, "grads": grads}

  return optax.GradientTransformation(init, update)


def hlo_fingerprint(text: str) -> str:
  """12 hex digits of the optimised HLO's instructions without their names, metadata and order
  (instruction and computation names are not the same from one compile to the next)."""
  lines = []
  for line in text.splitlines():
    line = re.sub(r", metadata=\{[^}]*\}", "", line)
    lines.append(re.sub(r"%[\w.\-]+", "%", line).strip())
  return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()[:12]


def hlo_summary(compiled) -> dict:
  """A fingerprint of the optimised HLO and the count of each library fusion kind in it."""
  text = compiled.as_text() or ""
  kinds = {k: len(re.findall(rf'"kind":"{k}"', text)) for k in LIBRARY_FUSIONS}
  return {"hlo_sha": hlo_fingerprint(text), "fusions": kinds}


def train_case(spec: dict, arrays: dict) -> dict:
  """Compiles and times the train step; stores its first loss and gradient in `arrays`."""
  state, batch, base_rng, step_fn, _, num_params = jax_step.build(spec, wrap_tx=capturing)
  step, info = jax_step.compile_timed(step_fn, state, batch, base_rng)
  out = {"num_params": num_params, "compile_s": info["compile_s"], "flops": info["flops"],
         **hlo_summary(step)}
  first_state, first_metrics = step(state, batch, base_rng)
  del state  # donated
  first_loss = float(jax.device_get(first_metrics["loss"]))
  holder = {"state": first_state}
  grads = jax_step.flat_params(holder["state"]["opt_state"]["grads"])
  arrays.update({f"grad/{k}": v for k, v in grads.items()})

  def once():
    holder["state"], holder["metrics"] = step(holder["state"], batch, base_rng)
    jax.block_until_ready(holder)

  timing = common.time_calls(once, warmup=max(0, spec["warmup"] - 1), repeats=spec["repeats"])
  arrays["first_loss"] = np.asarray(first_loss)
  out.update({"median_s": timing["median_s"], "times_s": timing["times_s"],
              "images_per_s": spec["batch"] / timing["median_s"], "first_loss": first_loss})
  return out


def conv_case(name, frac, cin, cout, groups, impl, *, size: int, batch: int, warmup: int,
              repeats: int, arrays: dict) -> dict:
  """Forward + input and kernel gradients of one 3x3 convolution; stores output and gradients."""
  hw = max(1, size // frac)
  module = resnext.GroupedConv(features=cout, kernel_size=3, groups=groups, impl=impl)
  kx, kp, kc = jax.random.split(jax.random.key(1), 3)
  x = jax.random.normal(kx, (batch, hw, hw, cin), jnp.float32)
  params = module.init(kp, x)["params"]
  cotangent = jax.random.normal(kc, (batch, hw, hw, cout), jnp.float32)

  def loss(p, inputs):
    y = module.apply({"params": p}, inputs)
    return jnp.sum(y * cotangent), y

  fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)).lower(params, x).compile()
  (_, y), (gp, gx) = fn(params, x)
  arrays.update({f"conv/{name}/out": np.asarray(y), f"conv/{name}/dx": np.asarray(gx),
                 f"conv/{name}/dw": np.asarray(gp["kernel"])})
  timing = common.time_calls(lambda: jax.block_until_ready(fn(params, x)), warmup=warmup,
                             repeats=repeats)
  return {"name": name, "shape": [batch, hw, hw, cin, cout, groups], "impl": impl,
          "median_s": timing["median_s"], **hlo_summary(fn)}


def run(spec: dict) -> dict:
  """Worker entry (`kind='flags'`): the train step and every conv case under this flag set."""
  arrays: dict[str, np.ndarray] = {}
  out = {"xla_flags": os.environ.get("XLA_FLAGS", ""), "study_flags": spec.get("study_flags", ""),
         "load_average": [round(x, 2) for x in os.getloadavg()], "train": train_case(spec, arrays)}
  out["convs"] = [conv_case(*case, size=spec["size"], batch=spec["batch"], warmup=spec["warmup"],
                            repeats=spec["repeats"], arrays=arrays) for case in CONV_CASES]
  os.makedirs(spec["save_dir"], exist_ok=True)
  path = os.path.join(spec["save_dir"], f"flags_{spec['set_index']}.npz")
  np.savez(path, **arrays)
  out["arrays_path"] = path
  return out
