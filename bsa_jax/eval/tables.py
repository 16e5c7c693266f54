"""The BSA-Net paper's Tables 1–4 layout (Kvasir, ETIS, CVC-ColonDB, CVC-EndoScene) for our results.

`write_tables(results, out_dir, provenance)` writes `paper_tables.md` and `paper_tables.csv`: per
table, our row(s) first, then the paper's reported rows from `paper_results`, labelled as such. Our
datasets without a paper table (e.g. CVC-ClinicDB alone, which is only part of CVC-EndoScene) get a
table of their own. A test set that was configured but not run (its dataset is not on disk) is a
row of "not run" cells with the reason below its table; a row scored on part of its split says so.
The provenance's `init` (ImageNet or from scratch) heads the file. The command that evaluates a
trained workdir and calls this lives with the trainer.
"""

from __future__ import annotations

import csv
import os
from typing import Mapping, Sequence

from bsa_jax.eval import paper_results

COLUMNS = paper_results.COLUMNS  # mDSC, mIoU, S_alpha, F_beta_w, E_phi_max, MAE
HEADERS = {"mDSC": "mDSC", "mIoU": "mIoU", "S_alpha": "S_α", "F_beta_w": "F^w_β",
           "E_phi_max": "E^max_φ", "MAE": "MAE"}
OURS_SOURCE = "ours (bsa_jax, this run)"
NOT_RUN = "not run"
PAPER_SOURCE = "reported in the paper (different split/protocol)"
CONVENTIONS = ("Metrics follow the PraNet evaluation toolbox (pysodmetrics 1.6.2 numbers): mDSC and "
               "mIoU are means over 256 thresholds, E^max_φ the max of the dataset-mean curve, "
               "F^w_β with β²=1, S_α with α=0.5, predictions min–max normalised at the GT's size.")


def format_value(value) -> str:
  """Three decimals like the paper; '' for missing values."""
  if value is None or value == "":
    return ""
  if isinstance(value, float):
    return f"{value:.3f}"
  return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
  """A GitHub-flavoured Markdown table; floats with three decimals."""
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(format_value(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


def _our_rows(results: Mapping[str, Mapping[str, float]], names: Sequence[str],
              notes: Mapping[str, str] | None = None) -> list[dict]:
  rows = []
  for name in names:
    metrics = results[name]
    n = metrics.get("num_images")
    note = (notes or {}).get(name, "")
    label = f"bsa_jax on {name}" + (f" (n={int(n)}{'; ' + note if note else ''})" if n is not None
                                    else f" ({note})" if note else "")
    rows.append({"model": label, "source": OURS_SOURCE, "dataset_key": name, "num_images": n,
                 "note": note, **{c: metrics.get(c) for c in COLUMNS}})
  return rows


def _not_run_rows(not_run: Mapping[str, str], names: Sequence[str]) -> list[dict]:
  return [{"model": f"bsa_jax on {name}", "source": OURS_SOURCE, "dataset_key": name,
           "num_images": None, "note": f"{NOT_RUN}: {not_run[name]}", **{c: NOT_RUN for c in COLUMNS}}
          for name in names]


def _paper_model_label(model: str) -> str:
  """The paper calls its own model 'Ours'; say whose it is next to our rows."""
  return "BSA-Net (the paper's 'Ours')" if model == paper_results.PAPER_MODEL else model


def _sections(results: Mapping[str, Mapping[str, float]], not_run: Mapping[str, str] | None = None,
              notes: Mapping[str, str] | None = None) -> list[tuple[str, list[dict]]]:
  """(title, rows) per paper table, then one for our datasets the paper has no table for."""
  sections, not_run = [], {k: v for k, v in (not_run or {}).items() if k not in results}
  for number, (title, _) in sorted(paper_results.TABLES.items()):
    ours = [k for k in results if paper_results.table_for_dataset(k) == number]
    skipped = [k for k in not_run if paper_results.table_for_dataset(k) == number]
    paper = [{"model": _paper_model_label(r["model"]), "source": PAPER_SOURCE, "dataset_key": "",
              "num_images": None, "note": "", **{c: r[c] for c in COLUMNS}}
             for r in paper_results.paper_rows(number)]
    sections.append((f"Table {number}: {title}",
                     _our_rows(results, ours, notes) + _not_run_rows(not_run, skipped) + paper))
  others = [k for k in results if paper_results.table_for_dataset(k) is None]
  skipped = [k for k in not_run if paper_results.table_for_dataset(k) is None]
  if others or skipped:
    sections.append(("Other evaluated datasets (no table in the paper)",
                     _our_rows(results, others, notes) + _not_run_rows(not_run, skipped)))
  return sections


def _provenance_line(provenance: Mapping) -> str:
  return ", ".join(f"{k}: `{v}`" for k, v in provenance.items()) or "(none given)"


def init_line(provenance: Mapping) -> list[str]:
  """The initialisation, stated before any number: from scratch is not the paper's setting."""
  init = provenance.get("init")
  if not init:
    return []
  line = f"**Initialisation: {init}.**"
  if str(init).startswith("none"):
    line += (" Not comparable with the paper's numbers, which start the Swin blocks (and the "
             "baselines' backbones) from ImageNet.")
  return [line, ""]


def _write_markdown(path: str, sections, provenance: Mapping) -> None:
  parts = ["# BSA-Net polyp segmentation: paper tables with our results", "", *init_line(provenance),
           f"Our run: {_provenance_line(provenance)}", "", CONVENTIONS, "",
           f"Rows marked '{PAPER_SOURCE}' are quoted from {paper_results.SOURCE}; the paper splits "
           "each dataset 7:1:2 at random and tests at 256x256, so they are context, not a "
           "like-for-like comparison.", ""]
  header = ["Model", "Source"] + [HEADERS[c] for c in COLUMNS]
  for title, rows in sections:
    parts += [f"## {title}", ""]
    if not any(r["source"] == OURS_SOURCE for r in rows):
      parts += ["_No result of ours: this dataset was not among the evaluated test sets._", ""]
    parts += [markdown_table(header, [[r["model"], r["source"]] + [r[c] for c in COLUMNS]
                                      for r in rows]), ""]
    for r in rows:
      if r["note"].startswith(NOT_RUN):
        parts += [f"_{r['dataset_key']} {r['note']}_", ""]
  with open(path, "w") as f:
    f.write("\n".join(parts))


def _write_csv(path: str, sections, provenance: Mapping) -> None:
  fields = ["table", "model", "source", "dataset_key", "num_images", *COLUMNS, "note", *provenance]
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    for title, rows in sections:
      for r in rows:
        extra = provenance if r["source"] == OURS_SOURCE else {}
        writer.writerow({"table": title, **{k: r[k] for k in fields[1:5]},
                         **{c: "" if r[c] is None else r[c] for c in COLUMNS}, "note": r["note"],
                         **extra})


def write_tables(results: Mapping[str, Mapping[str, float]], out_dir: str,
                 provenance: Mapping, *, not_run: Mapping[str, str] | None = None,
                 notes: Mapping[str, str] | None = None) -> list[str]:
  """Writes the paper's Tables 1–4 layout with our rows as Markdown and CSV.

  Args:
    results: {dataset key: {metric: value}} with the keys of `metrics.METRIC_NAMES` (extra keys
      ignored, optional 'num_images'). Keys like 'kvasir_seg:pranet_test' are placed by the part
      before ':' (see `paper_results.DATASET_TABLE`).
    out_dir: created if missing.
    provenance: e.g. {'commit': ..., 'config_hash': ..., 'checkpoint_step': ..., 'init': ...}; shown
      in the Markdown header and as CSV columns on our rows; 'init' also as a line of its own.
    not_run: {test set key: why} of configured test sets that were not scored (e.g. the dataset is
      not on disk): a row of "not run" cells in their table, the reason below it.
    notes: {result key: remark} shown with the row's image count, e.g. '60 of the split's 76'.

  Returns:
    [markdown path, csv path].
  """
  os.makedirs(out_dir, exist_ok=True)
  sections = _sections(results, not_run, notes)
  md_path = os.path.join(out_dir, "paper_tables.md")
  csv_path = os.path.join(out_dir, "paper_tables.csv")
  _write_markdown(md_path, sections, provenance)
  _write_csv(csv_path, sections, provenance)
  return [md_path, csv_path]
