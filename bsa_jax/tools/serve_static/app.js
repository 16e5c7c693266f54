// The page's only script: sends the chosen file's bytes to /api/segment and shows the answer.
"use strict";

const $ = (id) => document.getElementById(id);

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function cell(row, text, header) {
  const element = document.createElement(header ? "th" : "td");
  element.textContent = text;
  row.appendChild(element);
}

function table(rows, header) {
  const element = document.createElement("table");
  if (header) {
    const row = element.insertRow();
    header.forEach((text) => cell(row, text, true));
  }
  rows.forEach((values) => {
    const row = element.insertRow();
    values.forEach((text) => cell(row, text, false));
  });
  return element;
}

function showCard(card) {
  const body = $("card-body");
  body.textContent = "";
  const provenance = card.provenance || {};
  body.appendChild(table([
    ["model", `${card.model} (${card.variant}), ${card.parameters.toLocaleString()} parameters`],
    ["input size", `${card.image_size} × ${card.image_size}`],
    ["checkpoint", `step ${card.checkpoint_step}: ${card.selection}`],
    ["threshold", String(card.threshold)],
    ["training commit", provenance.commit || "unknown"],
    ["config hash", provenance.config_hash || "unknown"],
    ["datasets (sha256)", (provenance.datasets_sha256 || "unknown").split(";").join("\n")],
  ]));
  const metrics = card.test_metrics || {};
  const names = ["mDSC", "mIoU", "S_alpha", "F_beta_w", "E_phi_max", "MAE"];
  const rows = Object.entries(metrics).map(([set, values]) =>
    [set, String(values.num_images ?? "")].concat(
      names.map((name) => (values[name] === undefined ? "" : values[name].toFixed(3)))));
  const heading = document.createElement("h3");
  heading.textContent = rows.length ? "Test metrics (checkpoint chosen on validation)" :
    "No test metrics in this run's results/";
  body.appendChild(heading);
  if (rows.length) body.appendChild(table(rows, ["test set", "images"].concat(names)));
}

function showImage(result, name) {
  $("overlay").hidden = false;
  $("overlay-video").hidden = true;
  $("probability-panel").hidden = false;
  $("overlay").src = result.overlay;
  $("probability").src = result.probability;
  $("area").textContent = `Predicted area: ${(100 * result.predicted_area).toFixed(1)}% of the ` +
    `image (${result.width} × ${result.height}), max probability ${result.max_probability.toFixed(3)}`;
  $("download").href = result.mask;
  $("download").download = `${name.replace(/\.[^.]*$/, "") || "upload"}_mask.png`;
  $("download").textContent = "Download mask";
}

function showVideo(result, name) {
  $("overlay").hidden = true;
  $("overlay-video").hidden = false;
  $("probability-panel").hidden = true;
  $("overlay-video").src = result.video;
  $("area").textContent = `${result.frames} frames at ${result.frames_per_second} frames/s; ` +
    `predicted area mean ${(100 * result.mean_predicted_area).toFixed(1)}%, ` +
    `max ${(100 * result.max_predicted_area).toFixed(1)}%`;
  $("download").href = result.csv;
  $("download").download = `${name.replace(/\.[^.]*$/, "") || "upload"}_frames.csv`;
  $("download").textContent = "Download per-frame CSV";
}

async function upload(file) {
  setStatus(`Segmenting ${file.name}…`, false);
  document.body.dataset.state = "busy";
  try {
    const response = await fetch("/api/segment", {
      method: "POST", body: file,
      headers: {"Content-Type": file.type || "application/octet-stream"},
    });
    const result = await response.json();
    if (!response.ok) throw new Error(result.error || `HTTP ${response.status}`);
    $("result").hidden = false;
    if (result.kind === "video") showVideo(result, file.name); else showImage(result, file.name);
    setStatus(`Done: ${file.name}`, false);
    document.body.dataset.state = "done";
  } catch (error) {
    setStatus(`Could not segment ${file.name}: ${error.message}`, true);
    document.body.dataset.state = "error";
  }
}

$("file").addEventListener("change", (event) => {
  if (event.target.files.length) upload(event.target.files[0]);
});
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files.length) upload(event.dataTransfer.files[0]);
});
fetch("/api/model").then((r) => r.json()).then(showCard).catch((error) => {
  $("card-body").textContent = `Model card unavailable: ${error.message}`;
});
