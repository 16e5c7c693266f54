"""One behaviour for every command: absl flags, `--help` exits 0, a user mistake is one line and exit 2.

Every entry point (`launch.py`, `python -m bsa_jax.<tool>`) defines its flags with `absl.flags` and
ends with `cli.run(main, prog="python -m bsa_jax.<tool>")`: a thin command module at module level, a
library module that is also a command (`data.check`, `eval.workdir`, `models.summary`, ...) in a
`define_flags()` called only under `__main__`, so importing the library defines no flag. Flag names use
underscores (`--pred_dir`, `--batch_size`), as absl and `--config.train.lr` do; the hyphenated
spellings of older releases (`--pred-dir`) are still accepted, and a list flag also takes the
values that follow it up to the next flag (`--workers 0 2` = `--workers=0,2`), as argparse's
`nargs="+"` did. Dynamic flags absl cannot know in advance (compare's `--<model>.config.<key>=v`)
are withheld from absl by `run(..., passthrough=...)` and handed to `main` after the positionals.
"""

from __future__ import annotations

import re
import sys
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging

from bsa_jax import xla_defaults

FLAGS = flags.FLAGS
HELP_FLAGS = ("-h", "--help", "-?", "--helpshort", "--helpfull")
USAGE_STATUS = 2  # what argparse and most Unix tools return for a command-line mistake


class UserError(Exception):
  """A mistake the user can fix (a missing file, a wrong flag value): printed as one line, exit 2."""


# Exceptions that are the user's to fix: printed as `<prog>: error: <message>` without a traceback.
USER_ERRORS = (UserError, app.UsageError, flags.Error, FileNotFoundError, NotADirectoryError,
               FileExistsError, IsADirectoryError)


def _defined_flag_names() -> set[str]:
  return set(FLAGS)


def normalise_flag_names(argv: Sequence[str]) -> list[str]:
  """`--pred-dir=x` → `--pred_dir=x`, `--no-per-image` → `--noper_image` for defined flags (older
  releases used hyphens); anything else is left for absl to judge."""
  names, out = _defined_flag_names(), []
  for arg in argv:
    match = re.match(r"^(--?)([A-Za-z][\w-]*)(=.*)?$", arg, flags=re.S)
    if match and "-" in match.group(2):
      dashes, name, value = match.group(1), match.group(2).replace("-", "_"), match.group(3) or ""
      negated = name[2:].lstrip("_") if name.startswith("no") else None
      if name in names:
        arg = f"{dashes}{name}{value}"
      elif negated in names:  # a boolean's negation
        arg = f"{dashes}no{negated}{value}"
    out.append(arg)
  return out


def _is_value(arg: str) -> bool:
  """A value, not a flag: `2`, `a.jpg`, `-1` (a negative number)."""
  return not arg.startswith("-") or re.fullmatch(r"-\d[\d.e+-]*", arg) is not None


def join_list_values(argv: Sequence[str]) -> list[str]:
  """`--workers 0 2` → `--workers=0,2` (a list flag); `--input a b` → `--input=a --input=b` (multi)."""
  out, i = [], 0
  while i < len(argv):
    arg, i = argv[i], i + 1
    match = re.fullmatch(r"--?([A-Za-z]\w*)", arg)
    flag = FLAGS[match.group(1)] if match and match.group(1) in FLAGS else None
    multi = isinstance(flag, flags.MultiFlag)
    if not (multi or (flag is not None and isinstance(flag.parser, flags.BaseListParser))):
      out.append(arg)
      continue
    values = []
    while i < len(argv) and _is_value(argv[i]):
      values.append(argv[i])
      i += 1
    if not values:
      out.append(arg)  # absl says what is missing
    elif multi:
      out += [f"--{flag.name}={v}" for v in values]
    else:
      out.append(f"--{flag.name}={','.join(values)}")
  return out


def help_text(prog: str, doc: str | None, flag_module: str) -> str:
  """The command's docstring (its usage lines) and its own flags with their help and defaults."""
  lines = [(doc or f"usage: {prog} [flags]").strip(), ""]
  own = FLAGS.flags_by_module_dict().get(flag_module, [])
  if own:
    lines.append("flags:")
    lines.append(FLAGS.module_help(flag_module).strip().split("\n", 1)[-1])
  lines.append(f"\nAny --<flag>: see `{prog} --helpfull` for absl's own flags too.")
  return "\n".join(lines).replace("python -m bsa_jax.__main__", prog)


def fail(prog: str, message: str) -> None:
  """Prints `<prog>: error: <message>` to stderr and exits with status 2."""
  print(f"{prog}: error: {str(message).strip()}", file=sys.stderr)
  sys.exit(USAGE_STATUS)


def parse(argv: Sequence[str], prog: str, doc: str | None, flag_module: str,
          check_argv: Callable[[list[str]], None] | None = None,
          passthrough: Callable[[str], bool] | None = None) -> list[str]:
  """Parses absl flags; `--help` prints the help and exits 0, a bad flag exits 2 in one line.

  `check_argv(args)` may refuse the arguments before absl reads them (raise a `UserError`);
  arguments for which `passthrough(arg)` is true skip absl and follow the positionals in the result.
  """
  args = list(argv[1:])
  if "--" in args:
    args = args[:args.index("--")]
  if "--helpfull" in args:
    print(help_text(prog, doc, flag_module))
    print(FLAGS.get_help())
    sys.exit(0)
  if any(a in HELP_FLAGS for a in args):
    print(help_text(prog, doc, flag_module))
    sys.exit(0)
  withheld = [a for a in argv[1:] if passthrough and passthrough(a)]
  try:
    if check_argv is not None:
      check_argv(list(argv[1:]))
    kept = [a for a in argv[1:] if not (passthrough and passthrough(a))]
    return FLAGS([prog, *join_list_values(normalise_flag_names(kept))]) + withheld
  except flags.Error as e:
    fail(prog, f"{e} (see `{prog} --help`)")
  except USER_ERRORS as e:
    fail(prog, str(e))


def run(main: Callable[[list[str]], int | None], *, prog: str, argv: Sequence[str] | None = None,
        doc: str | None = None, check_argv: Callable[[list[str]], None] | None = None,
        passthrough: Callable[[str], bool] | None = None) -> None:
  """Parses flags for `prog`, runs `main(remaining_argv)` and exits with its status.

  A `UserError` (or a missing file, a usage error) becomes one line on stderr and status 2; any
  other exception keeps its traceback, since it is a bug to report. `check_argv` and `passthrough`
  are hooks that run before absl parses (see `parse`).
  """
  argv = list(sys.argv if argv is None else argv)
  main_module = sys.modules.get(main.__module__)
  # absl files the flags of a `python -m` module under the path Python ran it by.
  flag_module = argv[0] if main.__module__ == "__main__" else main.__module__
  doc = doc if doc is not None else getattr(main_module, "__doc__", None)
  remaining = parse(argv, prog, doc, flag_module, check_argv, passthrough)
  sys.argv[0] = prog
  xla_defaults.apply()  # before the command starts JAX's backend
  logging.use_absl_handler()
  try:
    status = main(remaining)
  except USER_ERRORS as e:
    fail(prog, str(e))
  sys.exit(status or 0)
