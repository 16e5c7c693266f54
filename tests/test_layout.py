"""The package's floor plan stays true: imports run downward only, no cycles, no hidden imports.

Reads the source (nothing is imported): every `import` / `from ... import` of a `bsa_jax` module,
at module level or inside a function, is an edge from one room (a sub-package or a top-level
module) to another. The layers below are the README's "Layout" section.
"""

import ast
import os

import pytest

PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bsa_jax")

# Bottom to top; a room may import only from rooms of lower layers (and from itself).
LAYERS = (
    ("cli", "config_lib", "compile_cache", "xla_defaults", "hostinfo"),  # shared by every command
    ("data", "models"),                    # datasets and pipelines; networks and weight porting
    ("workdir",),                          # a run folder: checkpoints, metric log, loading a run
    ("eval",),                             # metrics, evaluation of a model on data sets, tables
    ("train",),                            # the train step and the run loop
    ("tools",),                            # libraries of the commands: predict, compare, ...
    ("predict", "compare", "seeds", "bench", "export", "serve"),  # thin command modules
)
# Within layer 0, the config tool's own command line uses cli.
SAME_LAYER_ALLOWED = {("config_lib", "cli"), ("cli", "xla_defaults")}


def _modules() -> dict[str, str]:
  """{'bsa_jax.x.y': path} for every .py file of the package."""
  out = {}
  for root, _, files in os.walk(PACKAGE_DIR):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(root, name)
        rel = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))[:-3].replace(os.sep, ".")
        out[rel.removesuffix(".__init__")] = path
  return out


MODULES = _modules()


def _parse_all() -> dict[str, tuple[list[str], ast.AST]]:
  """{path: (source lines, syntax tree)}, parsed once while the test file is collected.

  Python 3.11.7's `ast` keeps one recursion counter per interpreter: parsing while another test's
  leftover thread (Orbax, grain) also compiles code can raise "AST constructor recursion depth
  mismatch". At collection time no such thread runs yet.
  """
  out = {}
  for path in MODULES.values():
    with open(path) as f:
      source = f.read()
    out[path] = (source.splitlines(), ast.parse(source))
  return out


PARSED = _parse_all()


def _resolve(name: str) -> str | None:
  while name and name not in MODULES:
    name = name.rpartition(".")[0]
  return name or None


def _imports(module: str, path: str):
  """Yields (imported bsa_jax module, line number, is_function_local, source line)."""
  lines, tree = PARSED[path]
  local = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      local |= {id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = module.split(".")
        parts = parts if path.endswith("__init__.py") else parts[:-1]
        base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
      names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    for name in names:
      target = _resolve(name) if name.startswith("bsa_jax") else None
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield target, node.lineno, id(node) in local, lines[node.lineno - 1]


def _room(module: str) -> str:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else "__init__"


def _layer(room: str) -> int:
  for i, rooms in enumerate(LAYERS):
    if room in rooms:
      return i
  raise AssertionError(f"bsa_jax/{room} is in no layer of tests/test_layout.py: add it to LAYERS "
                       "(and to README's Layout section).")


def test_every_room_has_a_layer():
  for module in MODULES:
    room = _room(module)
    if room != "__init__":
      _layer(room)


def test_imports_run_downward_only():
  upward = []
  for module, path in MODULES.items():
    src = _room(module)
    if src == "__init__":
      continue
    for target, lineno, _, line in _imports(module, path):
      if target is None or _room(target) in (src, "__init__"):
        continue
      dst = _room(target)
      if _layer(dst) > _layer(src) or (_layer(dst) == _layer(src)
                                       and (src, dst) not in SAME_LAYER_ALLOWED):
        upward.append(f"{os.path.relpath(path, PACKAGE_DIR)}:{lineno}: {src} -> {dst}: {line.strip()}")
  assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_no_import_cycles_between_files():
  """Function-local imports count. A package's `__init__` exposing its own submodules is not a cycle."""
  edges = {m: set() for m in MODULES}
  for module, path in MODULES.items():
    for target, *_ in _imports(module, path):
      if target and target != module and not target.startswith(module + "."):
        edges[module].add(target)
  state, cycles = {}, []

  def visit(node, stack):
    state[node] = "open"
    for nxt in sorted(edges[node]):
      if state.get(nxt) == "open":
        cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
      elif nxt not in state:
        visit(nxt, stack + [nxt])
    state[node] = "done"

  for module in sorted(MODULES):
    if module not in state:
      visit(module, [module])
  assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_function_local_imports_say_why():
  """An import inside a function is kept only for a heavy or optional dependency, and says so."""
  silent = []
  for module, path in MODULES.items():
    for _, lineno, is_local, line in _imports(module, path):
      if is_local and "#" not in line:
        silent.append(f"{os.path.relpath(path, PACKAGE_DIR)}:{lineno}: {line.strip()}")
  # Third-party imports are listed by _imports only for bsa_jax targets; check all of them too.
  for path in MODULES.values():
    lines, tree = PARSED[path]
    for node in ast.walk(tree):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        for sub in ast.walk(node):
          if isinstance(sub, (ast.Import, ast.ImportFrom)) and "#" not in lines[sub.lineno - 1]:
            entry = f"{os.path.relpath(path, PACKAGE_DIR)}:{sub.lineno}: {lines[sub.lineno - 1].strip()}"
            if entry not in silent:
              silent.append(entry)
  assert not silent, ("function-local imports without a reason (move them to the top, or add a "
                      "comment naming the heavy/optional dependency):\n" + "\n".join(sorted(silent)))


@pytest.mark.parametrize("needle", ["../shared", "/work/", "SPEC.md"])
def test_code_names_no_file_outside_the_repository(needle):
  hits = []
  for path in MODULES.values():
    with open(path) as f:
      for lineno, line in enumerate(f, 1):
        if needle in line:
          hits.append(f"{os.path.relpath(path, PACKAGE_DIR)}:{lineno}: {line.strip()}")
  assert not hits, f"code naming {needle!r}:\n" + "\n".join(hits)
