"""Where the train step's time goes (issue #15 item 1): a per-instruction profile of the compiled step.

  python -m bench.profile_step --size=256 --batch=16            # the top 20, as Markdown
  python -m bench.profile_step --size=128 --batch=16 --top=30 --xla_flags=--xla_cpu_use_onednn=true

The step is the trainer's own (`bench.jax_step.build`: model, optimizer, shardings, donation), on one
device. After warm-up, a few steps run under `jax.profiler.trace`; XLA:CPU records one trace event per
executed instruction (a fusion, a convolution, a custom call), named as in the optimised HLO. Each
event is attributed through that HLO to what it computes (convolution, dot, reduction, data movement,
elementwise) and to where it comes from (the Flax module path of its `op_name`, forward or backward),
then summed per instruction and per category.

Shares are of the summed instruction time, which can exceed the wall time when XLA runs independent
instructions on both cores at once; the wall time per step is printed beside them. Convolutions
compiled by XLA's own emitters (the default since `bsa_jax/xla_defaults.py`) are not all recorded
as events: compare the instruction sum with the wall time, and profile under `BSA_XLA_DEFAULTS=off`
for full coverage (bench/NOTES.md §8).
"""

from __future__ import annotations

import collections
import glob
import os
import re
import sys
import tempfile
import time

_XLA_FLAGS_ARG = "--xla_flags="

# Trace events that are the runtime's bookkeeping, not an instruction of the program.
_NOT_INSTRUCTIONS = re.compile(r"^(ThreadpoolListener::|ThunkExecutor::|end: |PjitFunction|\$)")
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*.*?\s(?P<op>[a-z][\w\-]*)\((?P<rest>.*)$")
_COMPUTATION = re.compile(r"^\s*(?:ENTRY\s+)?%?(?P<name>[\w.\-]+)\s.*\{\s*$")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_KIND = re.compile(r"kind=(k\w+)")
_CUSTOM_TARGET = re.compile(r'custom_call_target="([^"]*)"')
_LIBRARY_KIND = re.compile(r'"kind":"(__\w+_fusion)"')


def parse_hlo(text: str) -> dict[str, dict]:
  """{instruction name: {'op', 'kind', 'calls', 'op_name', 'target', 'computation'}} of an HLO module,
  plus {computation name: {'ops': set of opcodes}} under the key '__computations__'."""
  instructions, computations, current = {}, {}, None
  for line in text.splitlines():
    head = _COMPUTATION.match(line)
    if head and "=" not in line.split("{")[0]:
      current = head.group("name")
      computations[current] = set()
      continue
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    rest = m.group("rest")
    info = {"op": m.group("op"), "computation": current,
            "kind": (_KIND.search(rest) or [None, None])[1],
            "calls": _CALLS.findall(rest),
            "op_name": (_OP_NAME.search(rest) or [None, ""])[1],
            "target": (_CUSTOM_TARGET.search(rest) or [None, ""])[1],
            "library": (_LIBRARY_KIND.search(rest) or [None, ""])[1]}
    instructions[m.group("name")] = info
    if current is not None:
      computations[current].add(info["op"])
  instructions["__computations__"] = computations
  return instructions


def _called_ops(info: dict, computations: dict) -> set[str]:
  """The opcodes inside the computations an instruction (a fusion) calls."""
  ops = set()
  for name in info.get("calls", ()):
    ops |= computations.get(name, set())
  return ops


def category(info: dict | None, computations: dict) -> str:
  """What an instruction computes: convolution, dot, reduce, gather/scatter, data movement,
  elementwise, a library call, or other."""
  if info is None:
    return "unknown"
  op = info["op"]
  if info.get("library"):
    return f"library:{info['library'].strip('_')}"
  if op == "custom-call":
    return f"custom-call:{info['target']}"
  ops = {op} | (_called_ops(info, computations) if op == "fusion" else set())
  for name, members in (("convolution", {"convolution"}), ("dot", {"dot"}),
                        ("gather/scatter", {"gather", "scatter", "dynamic-slice",
                                            "dynamic-update-slice"}),
                        ("reduce", {"reduce", "reduce-window", "select-and-scatter"}),
                        ("sort", {"sort"})):
    if ops & members:
      return name
  if ops <= {"transpose", "copy", "bitcast", "reshape", "pad", "slice", "concatenate", "broadcast",
             "parameter", "tuple", "get-tuple-element", "fusion"}:
    return "data movement"
  return "elementwise"


_MODEL_ROOT = re.compile(r"^(?:transpose\()?jvp\((\w+)\)+$")


def source(op_name: str, depth: int = 2) -> tuple[str, str]:
  """(module path to `depth` levels, 'fwd' | 'bwd') of an HLO op_name such as
  'jit(train_step)/transpose(jvp(Model))/isam/blocks_3/attn/dot_general'; ops of the loss are
  '(loss)', the rest of the step (optimizer update, metrics) '(optimizer, glue)'."""
  direction = "bwd" if "transpose(" in op_name else "fwd"
  parts = op_name.split("/")
  for i, part in enumerate(parts):
    root = _MODEL_ROOT.match(part)
    if root:
      scopes = [p for p in parts[i + 1:-1] if "(" not in p][:depth]
      return "/".join(scopes) or root.group(1), direction
    if part.startswith(("jvp(", "transpose(jvp(")):
      return "(loss)", direction
  return "(optimizer, glue)", direction


def events_per_instruction(xplane_path: str) -> dict[str, list[float]]:
  """{instruction name: [duration in seconds of each execution]} from a host trace."""
  from jax.profiler import ProfileData  # reason: jax only in the measuring process
  data = ProfileData.from_file(xplane_path)
  durations = collections.defaultdict(list)
  for plane in data.planes:
    if not plane.name.startswith("/host:CPU"):
      continue
    for line in plane.lines:
      if line.name == "python":
        continue
      for event in line.events:
        if event.duration_ns > 0 and not _NOT_INSTRUCTIONS.match(event.name):
          durations[event.name].append(event.duration_ns * 1e-9)
  return durations


def profile(spec: dict, steps: int = 5, warmup: int = 2) -> dict:
  """The profile of `steps` train steps of `spec` (jax_step's spec: variant, size, batch)."""
  import jax  # reason: jax only in the measuring process (the module's --help stays light)
  from bench import jax_step
  state, batch, base_rng, step_fn, _, num_params = jax_step.build(spec)
  compiled, compile_info = jax_step.compile_timed(step_fn, state, batch, base_rng)
  hlo = parse_hlo(compiled.as_text() or "")
  computations = hlo.pop("__computations__")
  holder = {"state": state}
  del state

  def once():
    holder["state"], metrics = compiled(holder["state"], batch, base_rng)
    jax.block_until_ready((holder["state"], metrics))

  for _ in range(warmup):
    once()
  trace_dir = tempfile.mkdtemp(prefix="bsa_profile_")
  start = time.perf_counter()
  with jax.profiler.trace(trace_dir):
    for _ in range(steps):
      once()
  wall_s = (time.perf_counter() - start) / steps
  untraced = []
  for _ in range(steps):  # the same steps without the profiler: its overhead, for the record
    t = time.perf_counter()
    once()
    untraced.append(time.perf_counter() - t)
  path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))[-1]
  durations = events_per_instruction(path)

  rows = []
  for name, times in durations.items():
    info = hlo.get(name)
    where, direction = source(info["op_name"]) if info else ("?", "?")
    rows.append({"name": name, "op": info["op"] if info else "?",
                 "category": category(info, computations), "where": where, "dir": direction,
                 "ms_per_step": 1e3 * sum(times) / steps, "calls_per_step": len(times) / steps})
  total_ms = sum(r["ms_per_step"] for r in rows)
  for r in rows:
    r["share"] = r["ms_per_step"] / total_ms if total_ms else float("nan")
  rows.sort(key=lambda r: -r["ms_per_step"])
  by_category = collections.defaultdict(float)
  by_where = collections.defaultdict(float)
  for r in rows:
    by_category[(r["category"], r["dir"])] += r["ms_per_step"]
    by_where[(r["where"], r["dir"])] += r["ms_per_step"]
  return {"spec": spec, "num_params": num_params, "compile_s": compile_info["compile_s"],
          "traced_wall_ms": 1e3 * wall_s, "untraced_wall_ms": 1e3 * sorted(untraced)[len(untraced) // 2],
          "instruction_ms": total_ms, "matched": sum(r["op"] != "?" for r in rows), "rows": rows,
          "by_category": sorted(by_category.items(), key=lambda kv: -kv[1]),
          "by_where": sorted(by_where.items(), key=lambda kv: -kv[1]),
          "xla_flags": os.environ.get("XLA_FLAGS", ""), "trace_dir": trace_dir,
          "cores": len(os.sched_getaffinity(0))}


def run(spec: dict) -> dict:
  """Worker entry (the harness's `profile` section): the profile of spec's cell, cut to what the
  report shows (`top` instructions and places), its trace directory removed."""
  import shutil
  result = profile(spec, steps=int(spec.get("steps", 5)), warmup=int(spec.get("warmup", 2)))
  shutil.rmtree(result.pop("trace_dir"), ignore_errors=True)
  top = int(spec.get("top", 20))
  result["instructions"] = len(result["rows"])
  result["rows"] = result["rows"][:top]
  result["by_where"] = result["by_where"][:top]
  return result


def markdown(result: dict, top: int = 20, label: str = "") -> str:
  """The profile as Markdown: totals, the top instructions, and the sums per category and per place."""
  spec, total = result["spec"], result["instruction_ms"]
  cores = result["cores"]
  coverage = total / (cores * result["traced_wall_ms"]) if result["traced_wall_ms"] else float("nan")
  lines = [f"### Train step profile: {spec['variant']} {spec['size']}² batch {spec['batch']}"
           + (f", {label}" if label else ""),
           "",
           f"Wall time per step {result['untraced_wall_ms']:.0f} ms untraced, "
           f"{result['traced_wall_ms']:.0f} ms traced; instruction time {total:.0f} ms per step "
           f"summed over {cores} core{'s' if cores != 1 else ''} ({coverage:.0%} of {cores} × the "
           "traced wall time; the rest is "
           f"idle cores or work the trace does not record). "
           f"XLA_FLAGS: `{result['xla_flags'] or '(none)'}`.",
           "", "| # | instruction | what | where | fwd/bwd | ms/step | share |",
           "|---:|---|---|---|---|---:|---:|"]
  for i, r in enumerate(result["rows"][:top], 1):
    lines.append(f"| {i} | `{r['name']}` | {r['category']} | {r['where']} | {r['dir']} | "
                 f"{r['ms_per_step']:.1f} | {100 * r['share']:.1f} % |")
  lines += ["", "| what | fwd/bwd | ms/step | share |", "|---|---|---:|---:|"]
  for (cat, direction), ms in result["by_category"]:
    if ms / total >= 0.005:
      lines.append(f"| {cat} | {direction} | {ms:.1f} | {100 * ms / total:.1f} % |")
  lines += ["", "| where (module) | fwd/bwd | ms/step | share |", "|---|---|---:|---:|"]
  for (where, direction), ms in result["by_where"][:top]:
    lines.append(f"| {where} | {direction} | {ms:.1f} | {100 * ms / total:.1f} % |")
  return "\n".join(lines) + "\n"


def _xla_flags_from_argv(argv: list[str]) -> None:
  """`--xla_flags=...` must reach XLA_FLAGS before jax is imported, hence before absl parses."""
  for arg in argv:
    if arg.startswith(_XLA_FLAGS_ARG):
      os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + arg[len(_XLA_FLAGS_ARG):]).strip()


def main() -> int:
  from absl import flags  # reason: parsed here, after XLA_FLAGS is set from the command line
  from bsa_jax import cli
  flags.DEFINE_integer("size", 256, "Image size.")
  flags.DEFINE_integer("batch", 16, "Batch size.")
  flags.DEFINE_string("variant", "paper", "BSA-Net variant.")
  flags.DEFINE_integer("steps", 5, "Traced steps.")
  flags.DEFINE_integer("top", 20, "Instructions listed.")
  flags.DEFINE_string("xla_flags", "", "Added to XLA_FLAGS for this run.")
  flags.DEFINE_string("md", "", "Also append the Markdown to this file.")

  def run(argv) -> int:
    del argv
    f = flags.FLAGS
    spec = {"variant": f.variant, "size": f.size, "batch": f.batch}
    result = profile(spec, steps=f.steps)
    text = markdown(result, top=f.top)
    print(text)
    if f.md:
      with open(f.md, "a") as out:
        out.write(text + "\n")
    return 0

  _xla_flags_from_argv(sys.argv[1:])
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  return cli.run(run, prog="python -m bench.profile_step")


if __name__ == "__main__":
  sys.exit(main())
