"""Several seeds of one config, and their test results as mean ± std (sample std, n-1).

  python launch.py --config=configs/kvasir.py --workdir=workdirs/kvasir --seeds=0,1,2

Each seed trains in `<workdir>/seed_<k>` (resumable like any run; a finished seed is only re-scored)
and the summary goes to `<workdir>/seeds_summary.{md,csv,json}` with every seed's provenance.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Sequence

import numpy as np

from bsa_jax import cli

from bsa_jax import train
from bsa_jax.eval import metrics as metrics_lib


def aggregate(per_seed: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, dict]]:
  """{set: {metric: {'mean', 'std', 'n'}}} over seeds; std is the sample std (0 for one seed)."""
  out: dict[str, dict[str, dict]] = {}
  for set_name in per_seed[0]:
    metrics = [m for m in per_seed[0][set_name] if m != "num_images"]
    out[set_name] = {}
    for metric in metrics:
      values = np.array([r[set_name][metric] for r in per_seed], np.float64)
      std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
      out[set_name][metric] = {"mean": float(values.mean()), "std": std, "n": len(values)}
  return out


def write_summary(workdir: str, seeds: Sequence[int], per_seed: Sequence[dict],
                  provenance: Sequence[dict], columns: Sequence[str]) -> list[str]:
  """Markdown (mean ± std per test set), CSV and JSON of the seeds' test results."""
  stats = aggregate(per_seed)
  md = [f"# {len(seeds)} seeds ({', '.join(map(str, seeds))}): test results, mean ± std", "",
        "| test set | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
  for set_name, metrics in stats.items():
    md.append(f"| {set_name} | " + " | ".join(
        f"{metrics[c]['mean']:.3f} ± {metrics[c]['std']:.3f}" for c in columns) + " |")
  md += ["", "Per seed:"] + [f"- seed {s}: " + ", ".join(f"{k}: {v}" for k, v in p.items())
                             for s, p in zip(seeds, provenance)]
  paths = [os.path.join(workdir, f"seeds_summary.{ext}") for ext in ("md", "csv", "json")]
  with open(paths[0], "w") as f:
    f.write("\n".join(md) + "\n")
  with open(paths[1], "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["test_set", "metric", "mean", "std", "n"])
    for set_name, metrics in stats.items():
      for metric, s in metrics.items():
        writer.writerow([set_name, metric, s["mean"], s["std"], s["n"]])
  with open(paths[2], "w") as f:
    json.dump({"seeds": list(seeds), "stats": stats, "per_seed": list(per_seed),
               "provenance": list(provenance)}, f, indent=2)
  return paths


def _read_json(path: str, what_to_do: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise cli.UserError(f"{path} is not there; {what_to_do}") from None
  except json.JSONDecodeError as e:
    raise cli.UserError(f"{path} is not valid JSON ({e}); {what_to_do}") from None


def summarize(workdir: str, seeds: Sequence[int]) -> list[str]:
  """Writes the summary from finished seeds' `seed_<k>/results/test_metrics.json`, without training.

  For seeds trained at different times or on different machines (each `seed_<k>/` holding at least
  `config.json` and `results/`). Refuses seeds whose configs differ in more than the seed, or that
  were tested on different data, since their mean would not describe one recipe.
  """
  per_seed, provenance, configs = [], [], []
  for seed in seeds:
    seed_dir = os.path.join(workdir, f"seed_{seed}")
    todo = f"train seed {seed} first (--seeds={seed}) or copy its seed_{seed}/ folder in."
    saved = _read_json(os.path.join(seed_dir, "results", "test_metrics.json"), todo)
    config = _read_json(os.path.join(seed_dir, "config.json"), todo)
    if config.get("seed") != int(seed):
      raise cli.UserError(f"{seed_dir}/config.json was trained with seed {config.get('seed')}, not "
                          f"{seed}; the folder is misnamed or holds another run.")
    per_seed.append(saved["results"])
    provenance.append(saved["provenance"])
    configs.append({k: v for k, v in config.items() if k != "seed"})
  for seed, config, prov in zip(seeds[1:], configs[1:], provenance[1:]):
    if config != configs[0]:
      differ = sorted(k for k in set(config) | set(configs[0]) if config.get(k) != configs[0].get(k))
      raise cli.UserError(f"seed {seed}'s config differs from seed {seeds[0]}'s in more than the seed "
                          f"(top-level keys {differ}); summarize seeds of one recipe only.")
    if prov.get("datasets_sha256") != provenance[0].get("datasets_sha256"):
      raise cli.UserError(f"seed {seed} was tested on other data than seed {seeds[0]} (their "
                          "provenance's datasets_sha256 differ); their mean would mix test sets.")
  return write_summary(workdir, seeds, per_seed, provenance, _columns(per_seed))


def _columns(per_seed: Sequence[dict]) -> list[str]:
  first = next(iter(per_seed[0].values()))
  return [c for c in metrics_lib.METRIC_NAMES if c in first] or sorted(
      k for k in first if k != "num_images")


def run(config, workdir: str, seeds: Sequence[int], *, allow_config_change: bool = False) -> list[str]:
  """Trains and tests `config` once per seed, then writes the summary; returns its paths."""
  if not config.data.test:
    raise cli.UserError("--seeds compares test results, but config.data.test is empty; name a test "
                        "set, e.g. --config.data.test=folder:/path/to/test_set.")
  for seed in seeds:
    seed_config = config.copy_and_resolve_references()
    seed_config.seed = int(seed)
    train.main(seed_config, os.path.join(workdir, f"seed_{seed}"),
               allow_config_change=allow_config_change)
  return summarize(workdir, seeds)  # reads back what each seed wrote, with the same checks
