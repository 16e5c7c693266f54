"""A whole comparison table, BSA-Net and the baselines on the same data and budget: the library behind
`python -m bsa_jax.compare` (see that command for usage).

Each model trains its config (`MODEL_CONFIGS`, with the budget's argument) in `<workdir>/<model>` in
its own `launch.py` subprocess, whose output goes to `<workdir>/<model>/compare.log`: a crash stays
in its row, and rerunning the same command resumes unfinished runs and only re-reads finished ones.
Several seeds use `launch.py --seeds` (runs in `<workdir>/<model>/seed_<k>`). The table goes to
`<workdir>/comparison.{md,csv,json}`: per model its parameters, logged train time and the six polyp
metrics per test set (mean ± sample std over seeds), with each run's provenance.

With a wall-clock budget (`minutes`), each model first runs a short timed calibration (its real
`launch.py` run, `CALIBRATION_STEPS` steps, no evaluation) in `<workdir>/<model>/calibration`; its
median seconds per step after compilation fixes the model's `train.num_steps` to fill the budget.
The figures go to `<workdir>/<model>/calibration.json` and are reused by every rerun, so a rerun
(or a resumed run) trains exactly the same number of steps whatever the machine's load then.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Sequence

from bsa_jax import cli
from bsa_jax import config_lib
from bsa_jax.eval import tables
from bsa_jax.tools import seeds as seeds_lib

MODEL_CONFIGS = {"bsanet": "configs/kvasir.py", "unet": "configs/kvasir_unet.py",
                 "unetpp": "configs/kvasir_unetpp.py", "pranet": "configs/kvasir_pranet.py",
                 "sanet": "configs/kvasir_sanet.py", "ldnet": "configs/kvasir_ldnet.py"}
MODEL_LABELS = {"bsanet": "BSA-Net", "unet": "U-Net", "unetpp": "UNet++", "pranet": "PraNet",
                "sanet": "SANet", "ldnet": "LDNet"}
# Budget -> the configs' argument; 'small' (tiny models, minutes) is for smoke tests.
BUDGETS = {"paper": "", "cpu": "cpu", "small": "small"}
BUDGET_TITLES = {"paper": "Paper budget", "cpu": "CPU budget", "small": "Smoke budget (tiny models)"}
DEFAULT_EPOCHS = {"cpu": 3.0}  # the others keep their config's epochs unless --epochs is given
SET_LABELS = {"kvasir_seg:pranet_test": "Kvasir-100", "cvc_colondb:all": "ColonDB"}
COLUMNS = tables.COLUMNS  # mDSC, mIoU, S_alpha, F_beta_w, E_phi_max, MAE
RECORD = "compare_run.json"  # per model: the launch arguments and the wall time of every launch
LOG = "compare.log"
CALIBRATION = "calibration.json"  # per model, budget mode: the timed steps and the steps they fix
CALIBRATION_STEPS, CALIBRATION_LOG_EVERY = 24, 4  # 6 timed intervals; the first holds compilation


class RunError(RuntimeError):
  """One model's run cannot give a row (its launch failed, or its workdir holds another run)."""


# ---------------------------------------------------------------- command line

def is_override(arg: str) -> bool:
  """`--config.<key>=v` (every model) or `--<model>.config.<key>=v` (one model): not absl flags."""
  name = arg[2:].partition("=")[0]
  return arg.startswith("--") and (name.startswith("config.") or ".config." in name)


def split_overrides(args: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
  """The overrides for every model, and {model: its own overrides as `--config.k=v`}.

  Raises:
    cli.UserError: an argument that is neither kind, or names an unknown model.
  """
  common, per_model = [], {m: [] for m in MODEL_CONFIGS}
  for arg in args:
    model, _, key = arg[2:].partition(".")
    if arg.startswith("--config.") and "=" in arg:
      common.append(arg)
    elif arg.startswith("--") and model in MODEL_CONFIGS and key.startswith("config.") and "=" in arg:
      per_model[model].append("--" + key)
    else:
      raise cli.UserError(f"unexpected argument {arg!r}; overrides are --config.<key>=<value> (every "
                          "model) or --<model>.config.<key>=<value> (one model, of "
                          f"{','.join(MODEL_CONFIGS)})")
  return common, per_model


def check_models(models: Sequence[str]) -> list[str]:
  """The model names, stripped; refuses an unknown one or none."""
  models = [m.strip() for m in models if m.strip()]
  unknown = [m for m in models if m not in MODEL_CONFIGS]
  if unknown or not models:
    raise cli.UserError(f"--models: unknown {unknown}; choose from {','.join(MODEL_CONFIGS)}")
  return models


def config_spec(model: str, budget: str) -> str:
  """`configs/<file>.py[:arg]` of `model` at `budget`, relative to the repository."""
  arg = BUDGETS[budget]
  return MODEL_CONFIGS[model] + (f":{arg}" if arg else "")


def run_overrides(budget: str, epochs: float | None, overrides: Sequence[str],
                  minutes: float | None = None) -> list[str]:
  """The budget's epochs (none with a wall-clock budget: the calibration sets the steps), no
  progress bar (output goes to a log), then the user's overrides."""
  epochs = DEFAULT_EPOCHS.get(budget) if epochs is None and not minutes else epochs
  out = [f"--config.train.num_epochs={epochs:g}"] if epochs is not None else []
  return out + ["--config.train.progress_bar=False", *overrides]


def launch_request(model: str, budget: str, seeds: Sequence[int], overrides: Sequence[str],
                   minutes: float | None = None) -> dict:
  """What a model's run is: config, overrides, seeds and the wall-clock budget if any (the record a
  rerun must match)."""
  request = {"model": model, "config": config_spec(model, budget), "overrides": list(overrides),
             "seeds": list(seeds)}
  if minutes:
    request["train_minutes"] = minutes
  return request


def launch_argv(request: dict, model_dir: str) -> list[str]:
  """The `launch.py` command line of a request."""
  seeds = request["seeds"]
  seed_args = ([f"--seeds={','.join(map(str, seeds))}"] if len(seeds) > 1
               else [f"--config.seed={seeds[0]}"])
  return [sys.executable, os.path.join(config_lib.REPO_ROOT, "launch.py"),
          f"--config={os.path.join(config_lib.REPO_ROOT, request['config'])}",
          f"--workdir={model_dir}", *seed_args, *request["overrides"]]


# ---------------------------------------------------------------- runs

def run_dirs(model_dir: str, seeds: Sequence[int]) -> list[str]:
  """One run in the model's dir, or `seed_<k>` subdirs as `launch.py --seeds` makes them."""
  if len(seeds) == 1:
    return [model_dir]
  return [os.path.join(model_dir, f"seed_{s}") for s in seeds]


def is_finished(run_dir: str) -> bool:
  """Tested and summarised (the trainer writes summary.json last)."""
  return all(os.path.isfile(os.path.join(run_dir, p))
             for p in ("results/test_metrics.json", "summary.json"))


def _has_state(run_dir: str) -> bool:
  return os.path.isdir(os.path.join(run_dir, "checkpoints")) or is_finished(run_dir)


def _read_json(path: str, default=None):
  if not os.path.isfile(path):
    return default
  with open(path) as f:
    return json.load(f)


def _write_json(path: str, value) -> None:
  with open(path, "w") as f:
    json.dump(value, f, indent=2)


def _difference(old: dict, new: dict) -> str:
  """What changed between two requests, e.g. 'overrides: was --config.a=1, now --config.a=2'."""
  parts = []
  for key in new:
    if old.get(key) == new[key]:
      continue
    if isinstance(new[key], list) and isinstance(old.get(key), list):
      gone = " ".join(str(v) for v in old[key] if v not in new[key])
      added = " ".join(str(v) for v in new[key] if v not in old[key])
      parts.append(f"{key}: " + ", ".join(
          [f"was {gone}"] * bool(gone) + [f"now {added}"] * bool(added) or ["reordered"]))
    else:
      parts.append(f"{key}: {old.get(key)!r} -> {new[key]!r}")
  return "; ".join(parts)


def check_record(model_dir: str, request: dict) -> dict:
  """The model's record; raises if its workdir holds a run of a different request."""
  record = _read_json(os.path.join(model_dir, RECORD), {})
  old = record.get("request")
  if old is not None and old != request and any(
      _has_state(d) for d in [model_dir] + run_dirs(model_dir, old["seeds"])):
    raise RunError(f"{model_dir} holds a {request['model']} run of another request "
                   f"({_difference(old, request)}); delete it or choose another --workdir.")
  return {"request": request, "launches": record.get("launches", []) if old == request else []}


def launch(model: str, argv: Sequence[str], log_path: str) -> int:
  """Runs `argv`, appending its output to `log_path` and echoing it with a `[model]` prefix."""
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  with open(log_path, "a") as log:
    log.write(f"\n=== {datetime.datetime.now().isoformat(timespec='seconds')}: {' '.join(argv)}\n")
    log.flush()
    proc = subprocess.Popen(argv, cwd=config_lib.REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    for line in proc.stdout:
      log.write(line)
      print(f"[{model}] {line}", end="", flush=True)
    return proc.wait()


def train_model(model: str, model_dir: str, request: dict, index: str) -> None:
  """Launches the model's run unless every seed is finished; raises RunError when it fails."""
  dirs = run_dirs(model_dir, request["seeds"])
  os.makedirs(model_dir, exist_ok=True)
  record = check_record(model_dir, request)
  if all(is_finished(d) for d in dirs):
    print(f"[compare] {index} {model}: finished run in {model_dir}, re-reading it", flush=True)
    return
  log_path = os.path.join(model_dir, LOG)
  print(f"[compare] {index} {model}: training {request['config']} in {model_dir} "
        f"(log: {log_path})", flush=True)
  _write_json(os.path.join(model_dir, RECORD), record)
  start = time.time()
  code = launch(model, launch_argv(request, model_dir), log_path)
  seconds = time.time() - start
  record["launches"].append({"started": datetime.datetime.fromtimestamp(start).isoformat(
      timespec="seconds"), "seconds": round(seconds, 1), "returncode": code})
  _write_json(os.path.join(model_dir, RECORD), record)
  if code != 0:
    raise RunError(f"{model} failed: launch.py exited with code {code} after {seconds:.0f} s; "
                   f"workdir {model_dir}, log {log_path} (rerun the same command to resume)")
  unfinished = [d for d in dirs if not is_finished(d)]
  if unfinished:
    raise RunError(f"{model}: launch.py exited 0 but {', '.join(unfinished)} has no test results "
                   f"(is config.data.test empty?); log {log_path}")
  print(f"[compare] {index} {model}: done in {seconds / 60:.1f} min", flush=True)


def train_seconds(run_dir: str, batch_size: int) -> float | None:
  """Training time from the run's metrics.jsonl: steps × batch / logged img/s, summed over intervals.

  Evaluations are excluded (the trainer's img/s counts training only); the first interval of each
  launch includes compilation. None when nothing was logged.
  """
  path = os.path.join(run_dir, "metrics.jsonl")
  if not os.path.isfile(path):
    return None
  by_step = {}
  with open(path) as f:
    for line in f:
      entry = json.loads(line) if line.strip() else {}
      if isinstance(entry.get("images_per_sec"), (int, float)) and entry["images_per_sec"] > 0:
        by_step[entry["step"]] = entry["images_per_sec"]  # a resumed run relogs: keep the last
  total, previous = 0.0, 0
  for step in sorted(by_step):
    total += (step - previous) * batch_size / by_step[step]
    previous = step
  return total if by_step else None


def read_run(run_dir: str) -> dict:
  """A finished run's test results, provenance, parameter count, train time and budget."""
  saved = _read_json(os.path.join(run_dir, "results", "test_metrics.json"))
  summary = _read_json(os.path.join(run_dir, "summary.json"), {})
  config = _read_json(os.path.join(run_dir, "config.json"), {})
  train, data = config.get("train", {}), config.get("data", {})
  return {
      "run_dir": run_dir,
      "results": saved["results"],
      "provenance": saved["provenance"],
      "num_params": summary.get("num_params"),
      "steps": summary.get("step"),
      "train_seconds": train_seconds(run_dir, int(train.get("batch_size", 0))),
      "budget": {"image_size": data.get("image_size"), "num_epochs": train.get("num_epochs"),
                 "num_steps": train.get("num_steps"), "batch_size": train.get("batch_size"),
                 "model_init": config.get("model_init", ""), "resume": config.get("resume", ""),
                 "variant": config.get("model", {}).get("variant")},
  }


def _mean_std(values: Sequence[float | None]) -> dict | None:
  """{'mean', 'std', 'n'} like the seed summary (sample std, 0 for one value); None if no values."""
  values = [v for v in values if v is not None]
  if not values:
    return None
  return seeds_lib.aggregate([{"_": {"v": v}} for v in values])["_"]["v"]


def model_row(model: str, model_dir: str, request: dict, error: str | None) -> dict:
  """The table row of one model: seed statistics and every seed's run, or its error."""
  row = {"model": model, "label": MODEL_LABELS[model], "workdir": model_dir,
         "log": os.path.join(model_dir, LOG), "request": request, "status": "failed",
         "error": error, "runs": [], "stats": {}}
  record = _read_json(os.path.join(model_dir, RECORD), {})
  row["launch_seconds"] = round(sum(l["seconds"] for l in record.get("launches", [])), 1)
  if error is None:
    try:
      runs = [read_run(d) for d in run_dirs(model_dir, request["seeds"])]
    except (OSError, KeyError, TypeError, ValueError) as e:  # a result file that cannot be read
      row["error"] = f"{model}: cannot read the results in {model_dir}: {e!r}"
      return row
    row.update(status="ok", runs=runs, stats=seeds_lib.aggregate([r["results"] for r in runs]))
    row["num_params"] = runs[0]["num_params"]
    row["num_images"] = {name: r.get("num_images") for name, r in runs[0]["results"].items()}
    row["train_seconds"] = _mean_std([r["train_seconds"] for r in runs])
    row["steps"] = runs[0]["steps"]
  calibration = _read_json(os.path.join(model_dir, CALIBRATION))
  if request.get("train_minutes") and calibration:
    row["calibration"] = {k: calibration[k] for k in ("seconds_per_step", "steps", "measured")}
  return row


# ---------------------------------------------------------------- wall-clock budget

def calibration_overrides() -> list[str]:
  """A calibration run: a few logged steps, no validation, no test, no checkpoint before the end."""
  return [f"--config.train.num_steps={CALIBRATION_STEPS}",
          f"--config.train.log_every_steps={CALIBRATION_LOG_EVERY}",
          "--config.train.checkpoint_every_steps=1000000", "--config.train.keep_checkpoints=1",
          "--config.data.val=()", "--config.data.test=()", "--config.eval.num_overlays=0"]


def seconds_per_step(metrics_path: str, batch_size: int) -> tuple[float, list[float]]:
  """Median seconds per step over the logged intervals after the first (which holds compilation),
  and every interval's figure. Raises RunError when fewer than two intervals were logged."""
  rates = []
  with open(metrics_path) as f:
    for line in f:
      entry = json.loads(line) if line.strip() else {}
      if isinstance(entry.get("images_per_sec"), (int, float)) and entry["images_per_sec"] > 0:
        rates.append(batch_size / entry["images_per_sec"])
  if len(rates) < 2:
    raise RunError(f"calibration logged {len(rates)} interval(s) in {metrics_path}; need 2 or more")
  return statistics.median(rates[1:]), [round(r, 4) for r in rates]


def budget_steps(minutes: float, step_seconds: float) -> int:
  """Training steps that fill `minutes` at `step_seconds` per step (at least one)."""
  return max(1, int(minutes * 60 / step_seconds))


def calibrate(model: str, model_dir: str, request: dict, minutes: float, index: str) -> dict:
  """Times the model's train step with its real `launch.py` run and fixes its steps for `minutes`.

  The calibration run's folder is scratch (deleted once its figures are in `calibration.json`).
  Raises RunError when the run fails.
  """
  cal_dir = os.path.join(model_dir, "calibration")
  if os.path.isdir(cal_dir):  # an interrupted calibration: ours, and its figures are not kept
    shutil.rmtree(cal_dir)
  os.makedirs(model_dir, exist_ok=True)
  print(f"[compare] {index} {model}: calibrating the step time ({CALIBRATION_STEPS} steps, "
        f"log: {os.path.join(model_dir, LOG)})", flush=True)
  cal_request = dict(request, seeds=request["seeds"][:1],
                     overrides=[*request["overrides"], *calibration_overrides()])
  code = launch(model, launch_argv(cal_request, cal_dir), os.path.join(model_dir, LOG))
  if code != 0:
    raise RunError(f"{model}: the calibration run failed (launch.py exited with code {code}); "
                   f"log {os.path.join(model_dir, LOG)}")
  with open(os.path.join(cal_dir, "config.json")) as f:
    batch_size = int(json.load(f)["train"]["batch_size"])
  step_seconds, intervals = seconds_per_step(os.path.join(cal_dir, "metrics.jsonl"), batch_size)
  shutil.rmtree(cal_dir)
  calibration = {"request": request, "minutes": minutes, "seconds_per_step": round(step_seconds, 4),
                 "interval_seconds_per_step": intervals, "batch_size": batch_size,
                 "steps": budget_steps(minutes, step_seconds),
                 "measured": datetime.datetime.now().isoformat(timespec="seconds")}
  _write_json(os.path.join(model_dir, CALIBRATION), calibration)
  print(f"[compare] {index} {model}: {step_seconds:.3f} s/step -> {calibration['steps']} steps "
        f"for {minutes:g} min", flush=True)
  return calibration


def stored_calibration(model_dir: str, request: dict, minutes: float) -> dict | None:
  """The model's calibration for this request and budget, if one was made."""
  calibration = _read_json(os.path.join(model_dir, CALIBRATION))
  if calibration and calibration["request"] == request and calibration["minutes"] == minutes:
    return calibration
  return None


def with_budget_steps(request: dict, calibration: dict) -> dict:
  """The request with the calibrated `train.num_steps` as its last override."""
  return dict(request, overrides=[*request["overrides"],
                                  f"--config.train.num_steps={calibration['steps']}"])


# ---------------------------------------------------------------- table

def budget_title(budget: str, rows: Sequence[dict], minutes: float | None = None) -> str:
  """E.g. 'CPU budget: 112 px (PraNet, SANet: 128 px), 3 epochs, batch 16, from scratch', or with a
  wall-clock budget '..., 20 min of training per model (steps: calibrated), ...'."""
  runs = [(r["label"], r["runs"][0]["budget"]) for r in rows if r["runs"]]
  if not runs:
    return BUDGET_TITLES[budget]
  sizes = [b["image_size"] for _, b in runs]
  common = max(set(sizes), key=sizes.count)
  others: dict[int, list[str]] = {}  # size -> the models trained at it, other than `common`
  for label, b in runs:
    if b["image_size"] != common:
      others.setdefault(b["image_size"], []).append(label)
  size = f"{common} px" + "".join(f" ({', '.join(labels)}: {s} px)" for s, labels in others.items())
  lengths = sorted({f"{b['num_steps']} steps" if (b["num_steps"] or -1) > 0
                    else f"{b['num_epochs']:g} epoch{'' if b['num_epochs'] == 1 else 's'}"
                    for _, b in runs})
  if minutes:
    lengths = [f"{minutes:g} min of training per model (steps fixed by a timed calibration)"]
  batches = sorted({str(b["batch_size"]) for _, b in runs})
  inits = [f"{label} from {b['model_init'] or b['resume']}" for label, b in runs
           if b["model_init"] or b["resume"]]
  init = "from scratch" if not inits else "others from scratch, " + ", ".join(inits)
  if len(inits) == len(runs):
    init = ", ".join(inits)
  return (f"{BUDGET_TITLES[budget]}: {size}, {' / '.join(lengths)}, batch {'/'.join(batches)}, "
          f"{init}")


def test_sets(rows: Sequence[dict]) -> list[str]:
  """Every test set of any row, in the order the runs list them."""
  names = []
  for row in rows:
    names += [n for n in row["stats"] if n not in names]
  return names


def _duration(seconds: float) -> str:
  minutes = seconds / 60
  return f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def _cell(stats: dict | None, fmt=lambda v: f"{v:.3f}") -> str:
  if not stats:
    return ""
  if stats["n"] > 1:
    return f"{fmt(stats['mean'])} ± {fmt(stats['std'])}"
  return fmt(stats["mean"])


def _short_commit(commit: str) -> str:
  return commit[:12] + ("+dirty" if commit.endswith("+dirty") else "")


def _short_checksums(checksums: str) -> str:
  """'kvasir_seg:3f2a9c1b, ...' from 'dataset:sha256;...'."""
  return ", ".join(f"{name}:{digest[:8]}" for name, _, digest in
                   (part.partition(":") for part in checksums.split(";") if part))


def _footnote(number: int, row: dict) -> str:
  """Provenance of a row: what ran, on which code, config and data, and which checkpoint."""
  request = row["request"]
  head = (f"[^{number}]: {row['label']} (`{row['model']}`): `{request['config']}`, overrides "
          f"`{' '.join(request['overrides']) or 'none'}`; workdir `{row['workdir']}`")
  if row["status"] != "ok":
    return f"{head}. **FAILED**: {row['error']}"
  parts = []
  for seed, run in zip(request["seeds"], row["runs"], strict=True):
    p = run["provenance"]
    parts.append(f"seed {seed}: commit `{_short_commit(p['commit'])}`, config hash "
                 f"`{p['config_hash']}`, data `{_short_checksums(p['datasets_sha256'])}`, "
                 f"checkpoint step {p['checkpoint_step']} ({p['selection']})")
  convention = row["runs"][0]["provenance"].get("protocol", "the PraNet toolbox convention (above)")
  return f"{head}; {'; '.join(parts)}; metrics: {convention}."


def _header(sets: Sequence[str]) -> list[str]:
  return ["Model", "Params", "Train time", "Steps"] + [
      f"{SET_LABELS.get(s, s)} {tables.HEADERS[c]}" for s in sets for c in COLUMNS]


def _markdown_row(number: int, row: dict, sets: Sequence[str]) -> list[str]:
  name = f"{row['label']}[^{number}]"
  if row["status"] != "ok":
    return [name, "failed", "", ""] + [""] * len(sets) * len(COLUMNS)
  params = f"{row['num_params'] / 1e6:.2f} M" if row.get("num_params") else ""
  steps = "" if row.get("steps") is None else str(row["steps"])
  if row.get("calibration"):
    steps += f" ({row['calibration']['seconds_per_step']:.2f} s/step)"
  return [name, params, _cell(row.get("train_seconds"), _duration), steps] + [
      _cell(row["stats"].get(s, {}).get(c)) for s in sets for c in COLUMNS]


def _notes(rows: Sequence[dict], seeds: Sequence[int]) -> list[str]:
  """How to read the table: seeds, selection, test sets with their sizes, train time."""
  n_images = {s: int(n) for r in rows for s, n in r.get("num_images", {}).items() if n is not None}
  sets = ", ".join((f"{SET_LABELS[s]} = `{s}`" if s in SET_LABELS else f"`{s}`") +
                   (f" (n={n_images[s]})" if s in n_images else "") for s in test_sets(rows))
  spread = " (mean ± sample std)" if len(seeds) > 1 else ""
  selection = (f"Seeds {', '.join(map(str, seeds))}{spread}; each checkpoint is selected on "
               f"validation only (footnotes); test sets: {sets}.")
  timing = ("Train time: the training steps in each run's metrics.jsonl (compilation included, "
            "evaluation excluded).")
  if any(r.get("calibration") for r in rows):
    timing += (f" Steps: fixed before training by timing {CALIBRATION_STEPS} steps of the model's "
               "own run on this machine (the median after compilation, in brackets), to fill the "
               "budget; a rerun reuses them.")
  return [selection, timing]


def write_markdown(path: str, title: str, rows: Sequence[dict], seeds: Sequence[int]) -> None:
  """The table, its reading notes and one provenance footnote per row."""
  sets = test_sets(rows)
  header = _header(sets)
  lines = [f"# Comparison: {title}", "", *_notes(rows, seeds), "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(_markdown_row(i, r, sets)) + " |" for i, r in enumerate(rows, 1)]
  lines += ["", tables.CONVENTIONS, ""] + [_footnote(i, r) for i, r in enumerate(rows, 1)]
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def _joined(row: dict, key: str) -> str:
  return ";".join(str(r["provenance"].get(key, "")) for r in row["runs"])


def csv_record(row: dict, sets: Sequence[str]) -> dict:
  """One CSV row: statistics per set and metric, and the full provenance (';' between seeds)."""
  out = {"model": row["model"], "label": row["label"], "status": row["status"],
         "error": row["error"] or "", "seeds": ";".join(map(str, row["request"]["seeds"])),
         "num_params": row.get("num_params", ""),
         "train_seconds": (row.get("train_seconds") or {}).get("mean", ""),
         "train_seconds_std": (row.get("train_seconds") or {}).get("std", ""),
         "launch_wall_seconds": row["launch_seconds"], "steps": row.get("steps", ""),
         "calibrated_seconds_per_step": (row.get("calibration") or {}).get("seconds_per_step", "")}
  for s in sets:
    stats = row["stats"].get(s, {})
    out[f"{s}/num_images"] = row.get("num_images", {}).get(s, "")
    for c in COLUMNS:
      out[f"{s}/{c}"] = (stats.get(c) or {}).get("mean", "")
      out[f"{s}/{c}_std"] = (stats.get(c) or {}).get("std", "")
  out.update({"config": row["request"]["config"], "overrides": " ".join(row["request"]["overrides"]),
              "workdir": row["workdir"], "log": row["log"], "metric_convention": tables.CONVENTIONS})
  for key in ("commit", "config_hash", "datasets_sha256", "checkpoint_step", "selection", "model"):
    out[key if key != "model" else "model_name"] = _joined(row, key)
  out["run_dirs"] = ";".join(r["run_dir"] for r in row["runs"])
  return out


def write_table(workdir: str, budget: str, rows: Sequence[dict], seeds: Sequence[int],
                minutes: float | None = None) -> list[str]:
  """Writes `comparison.{md,csv,json}` into `workdir`; returns their paths."""
  title = budget_title(budget, rows, minutes)
  sets = test_sets(rows)
  paths = [os.path.join(workdir, f"comparison.{ext}") for ext in ("md", "csv", "json")]
  write_markdown(paths[0], title, rows, seeds)
  records = [csv_record(r, sets) for r in rows]
  fields = list(dict.fromkeys(k for r in records for k in r))
  with open(paths[1], "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(records)
  _write_json(paths[2], {"title": title, "budget": budget, "train_minutes": minutes,
                         "seeds": list(seeds), "test_sets": sets,
                         "set_labels": {s: SET_LABELS.get(s, s) for s in sets},
                         "columns": list(COLUMNS), "metric_convention": tables.CONVENTIONS,
                         "rows": list(rows)})
  return paths


# ---------------------------------------------------------------- main

def prepare(workdir: str, models: Sequence[str], budget: str, seeds: Sequence[int],
            epochs: float | None, common: Sequence[str], per_model: dict,
            minutes: float | None = None) -> dict[str, dict]:
  """{model: request}; refuses, before any training, an unknown key or a workdir of another request.

  With `minutes`, a model whose calibration is stored gets its calibrated steps; the others get
  theirs from `calibrate` before training.
  """
  if minutes is not None and minutes <= 0:
    raise cli.UserError(f"--minutes={minutes:g}: give a positive number of minutes")
  requests, conflicts = {}, []
  for model in models:
    overrides = run_overrides(budget, epochs, [*common, *per_model[model]], minutes)
    if minutes and any(o.startswith(("--config.train.num_steps=", "--config.train.num_epochs="))
                       for o in overrides):
      raise cli.UserError(f"{model}: --minutes fixes each model's steps; drop --epochs and the "
                          "train.num_steps / train.num_epochs overrides")
    requests[model] = launch_request(model, budget, seeds, overrides, minutes)
    spec = os.path.join(config_lib.REPO_ROOT, requests[model]["config"])
    config_lib.check_overrides([f"--config={spec}", *overrides])  # raises, naming the key
    model_dir = os.path.join(os.path.abspath(workdir), model)
    calibration = minutes and stored_calibration(model_dir, requests[model], minutes)
    try:
      check_record(model_dir, with_budget_steps(requests[model], calibration) if calibration
                   else requests[model])
    except RunError as e:
      conflicts.append(str(e))
  if conflicts:
    raise cli.UserError("\n".join(conflicts))
  return requests


def run(workdir: str, *, models: Sequence[str], budget: str = "paper", seeds: Sequence[int] = (0,),
        epochs: float | None = None, common: Sequence[str] = (),
        per_model: dict[str, list[str]] | None = None, minutes: float | None = None) -> int:
  """Trains (or re-reads) every model, writes the table; 1 if any model failed, else 0.

  Args:
    workdir: gets `<model>/` runs and `comparison.{md,csv,json}`.
    models: rows, from `MODEL_CONFIGS`.
    budget: a key of `BUDGETS`.
    seeds: one run per seed (several: `launch.py --seeds`).
    epochs: `train.num_epochs` of every model (None: `DEFAULT_EPOCHS` of the budget, else the config's).
    common: `--config.k=v` overrides of every model; per_model: {model: its own overrides}.
    minutes: a wall-clock budget of training per model: every model is calibrated first (back to
      back, so run them on a quiet machine), then trains the steps that fill it.
  """
  models = check_models(models)
  per_model = {m: list((per_model or {}).get(m, [])) for m in MODEL_CONFIGS}
  requests = prepare(workdir, models, budget, seeds, epochs, common, per_model, minutes)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  errors = {}
  if minutes:
    for i, model in enumerate(models, 1):
      model_dir = os.path.join(workdir, model)
      calibration = stored_calibration(model_dir, requests[model], minutes)
      try:
        calibration = calibration or calibrate(model, model_dir, requests[model], minutes,
                                               f"{i}/{len(models)}")
        requests[model] = with_budget_steps(requests[model], calibration)
      except RunError as e:
        errors[model] = str(e)
  rows, failures = [], []
  for i, model in enumerate(models, 1):
    model_dir = os.path.join(workdir, model)
    error = errors.get(model)
    if error is None:
      try:
        train_model(model, model_dir, requests[model], f"{i}/{len(models)}")
      except RunError as e:
        error = str(e)
    rows.append(model_row(model, model_dir, requests[model], error))
    if rows[-1]["error"]:
      failures.append(rows[-1]["error"])
      print(f"[compare] ERROR: {rows[-1]['error']}", file=sys.stderr, flush=True)
  paths = write_table(workdir, budget, rows, seeds, minutes)
  with open(paths[0]) as f:
    print(f.read(), flush=True)
  print(f"[compare] Table written: {', '.join(paths)}", flush=True)
  for failure in failures:
    print(f"[compare] FAILED: {failure}", file=sys.stderr, flush=True)
  return 1 if failures else 0
