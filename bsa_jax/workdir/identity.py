"""A run's identity: the config stored in `<workdir>/config.json` is what the run is.

Rerunning `launch.py` on a workdir that already holds a run compares the newly resolved config with
the stored one. Keys that change what is trained (model, data, loss, optimizer, schedule, seed,
image size, ...) stop the run before anything is written, naming each key with both values. Keys
that cannot change results (logging, evaluation batch size, overlays, checkpoint cadence, the data
loaders, the device mesh) may differ freely. `allow_change=True` (launch.py
`--allow_config_change`) accepts a change and records it in `config_history.jsonl` beside
`config.json`, so the history of the run is never rewritten silently.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

import ml_collections as mlc

from bsa_jax import cli

CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"
# Keys (or key prefixes) that cannot change what a run computes.
HARMLESS = ("data.root", "data.num_workers", "data.prefetch", "data.verify", "data.max_pixels",
            "data.tfds_data_dir", "train.log_every_steps", "train.checkpoint_every_steps",
            "train.keep_checkpoints", "train.progress_bar", "eval.batch_size", "eval.num_overlays",
            "mesh")
# Files whose presence means the workdir already holds (part of) a run.
RUN_MARKERS = ("checkpoints", "metrics.jsonl", "results", "summary.json")


class ConfigChangedError(cli.UserError):
  """The workdir holds a run of another config; nothing was written."""


def as_json(config: mlc.ConfigDict) -> dict:
  """The config as config.json stores it (JSON types: tuples become lists)."""
  return json.loads(config.to_json_best_effort())


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(flatten(value, name + "."))
    else:
      out[name] = value
  return out


def is_harmless(key: str) -> bool:
  return any(key == h or key.startswith(h + ".") for h in HARMLESS)


def differences(stored: dict, new: dict) -> dict[str, tuple[Any, Any]]:
  """{key: (stored value, new value)} for keys whose values differ. Keys the stored config does not
  have (added to the code since the run started) are not differences: their defaults apply."""
  old_flat, new_flat = flatten(stored), flatten(new)
  return {k: (old_flat[k], new_flat.get(k)) for k in sorted(old_flat)
          if k in new_flat and old_flat[k] != new_flat[k]} | {
              k: (old_flat[k], None) for k in sorted(set(old_flat) - set(new_flat))}


def holds_run(workdir: str) -> bool:
  return any(os.path.exists(os.path.join(workdir, m)) for m in RUN_MARKERS)


def read_stored(workdir: str) -> dict | None:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def check(workdir: str, config: mlc.ConfigDict, *, allow_change: bool = False) -> dict:
  """Returns the identity-changing differences (empty for the same run or a new workdir).

  Raises ConfigChangedError, touching nothing, if the workdir holds a run whose stored config
  differs from `config` in a key that changes results and `allow_change` is False.
  """
  stored = read_stored(workdir)
  if stored is None or not holds_run(workdir):
    return {}
  changed = {k: v for k, v in differences(stored, as_json(config)).items() if not is_harmless(k)}
  if changed and not allow_change:
    listed = "; ".join(f"{k}: {old!r} (stored) vs {new!r} (now)" for k, (old, new) in changed.items())
    raise ConfigChangedError(
        f"{workdir} holds a run of another config, so nothing was written. Differing keys: "
        f"{listed}. Start a new run with another --workdir, or rerun with --allow_config_change "
        f"to continue this run with the change recorded in {HISTORY_FILE}.")
  return changed


def store(workdir: str, config: mlc.ConfigDict, changed: dict, *, step: int | None = None) -> None:
  """Writes config.json; an accepted change is first appended to config_history.jsonl."""
  if changed:
    record = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "latest_step": step, "previous": read_stored(workdir),
              "changes": {k: {"stored": old, "now": new} for k, (old, new) in changed.items()}}
    with open(os.path.join(workdir, HISTORY_FILE), "a") as f:
      f.write(json.dumps(record) + "\n")
  with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
