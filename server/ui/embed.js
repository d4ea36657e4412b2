// The embeddings view: texts (typed or from a file) -> /v1/embeddings -> a cosine-similarity
// heatmap, each text's nearest neighbours, and downloads as .npy (float32) or JSONL.

import { postJSON } from "./api.js";
import { $, download, el, formatNumber } from "./dom.js";

const BATCH = 64;
const MAX_TEXTS = 2048;
const HEATMAP_MAX = 400;

let result = null; // { model, texts, vectors: Float32Array[] }

export function initEmbed() {
  $("#embed-run").addEventListener("click", run);
  $("#embed-file").addEventListener("change", loadFile);
  $("#embed-npy").addEventListener("click", () => result && download("embeddings.npy", npy(result.vectors)));
  $("#embed-jsonl").addEventListener("click", () => result && download("embeddings.jsonl", jsonl(result)));
  $("#embed-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) run();
  });
  const canvas = $("#heatmap");
  canvas.addEventListener("mousemove", (event) => hover(event));
  canvas.addEventListener("mouseleave", () => { $("#heat-hover").textContent = ""; });
}

export function setEmbeddingModels(served) {
  const select = $("#embed-model");
  const wanted = select.value;
  const models = served.filter((m) => m.kind === "embedding");
  select.replaceChildren(...models.map((m) => el("option", { value: m.id }, `${m.id} (${m.dimensions} dimensions)`)));
  if (!models.length) select.append(el("option", { value: "", disabled: true }, "(no embedding model served)"));
  if (models.some((m) => m.id === wanted)) select.value = wanted;
  $("#embed-run").disabled = !models.length;
}

async function loadFile() {
  const file = $("#embed-file").files[0];
  if (!file) return;
  const lines = (await file.text()).split(/\r?\n/).filter((l) => l.trim());
  const texts = lines.map((line) => {
    if (!/\.jsonl$/i.test(file.name)) return line;
    try {
      const row = JSON.parse(line);
      return typeof row === "string" ? row : row.text ?? row.input ?? line;
    } catch {
      return line;
    }
  });
  $("#embed-input").value = texts.join("\n");
  $("#embed-summary").textContent = `Loaded ${texts.length} lines from ${file.name}.`;
}

async function run() {
  const texts = $("#embed-input").value.split("\n").map((l) => l.trim()).filter((l) => l);
  const summary = $("#embed-summary");
  if (!texts.length) { summary.textContent = "Type or load at least one line of text."; return; }
  if (texts.length > MAX_TEXTS) { summary.textContent = `At most ${MAX_TEXTS} lines at a time.`; return; }
  let model = $("#embed-model").value;
  const button = $("#embed-run");
  button.disabled = true;
  summary.classList.remove("error");
  summary.textContent = `Embedding ${texts.length} texts…`;
  const started = performance.now();
  try {
    const vectors = [];
    let tokens = 0;
    for (let i = 0; i < texts.length; i += BATCH) {
      const answer = await postJSON("/v1/embeddings", { model, input: texts.slice(i, i + BATCH), encoding_format: "float" });
      answer.data.sort((a, b) => a.index - b.index).forEach((d) => vectors.push(Float32Array.from(d.embedding)));
      tokens += answer.usage ? answer.usage.prompt_tokens : 0;
      model ||= answer.model;
    }
    result = { model: model || "", texts, vectors };
    const ms = performance.now() - started;
    summary.textContent = `${texts.length} vectors of ${vectors[0].length} dimensions from ${model}, `
      + `${tokens} tokens in ${formatNumber(ms)} ms.`;
    show(result);
  } catch (error) {
    summary.textContent = error.message;
    summary.classList.add("error");
  } finally {
    button.disabled = false;
  }
}

function unit(v) {
  let norm = 0;
  for (const x of v) norm += x * x;
  norm = Math.sqrt(norm) || 1;
  return v.map((x) => x / norm);
}

function similarities(vectors) {
  const units = vectors.map(unit);
  return units.map((a) => units.map((b) => { let dot = 0; for (let k = 0; k < a.length; k++) dot += a[k] * b[k]; return dot; }));
}

function show({ texts, vectors }) {
  const sims = similarities(vectors);
  result.sims = sims;
  $("#embed-npy").disabled = false;
  $("#embed-jsonl").disabled = false;
  drawHeatmap(sims);
  const list = $("#neighbours");
  list.replaceChildren(...texts.map((text, i) => {
    const near = sims[i].map((s, j) => [s, j]).filter(([, j]) => j !== i).sort((a, b) => b[0] - a[0]).slice(0, 3);
    return el("li", {}, el("q", {}, text), near.length ? " → " : "",
      ...near.flatMap(([s, j], k) => [k ? ", " : "", el("q", {}, texts[j]), el("span", { class: "score" }, ` ${s.toFixed(3)}`)]));
  }));
  $("#neighbours-box").hidden = false;
}

// A colour scale readable in light and dark: dark blue (low) -> teal -> yellow (high).
const STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

function colour(t) {
  const x = Math.min(1, Math.max(0, t)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(x));
  const f = x - i;
  return `rgb(${STOPS[i].map((c, k) => Math.round(c + (STOPS[i + 1][k] - c) * f)).join(",")})`;
}

function drawHeatmap(sims) {
  const figure = $("#heat");
  const n = Math.min(sims.length, HEATMAP_MAX);
  figure.hidden = false;
  const canvas = $("#heatmap");
  const size = Math.min(480, figure.clientWidth || 480);
  const cell = Math.max(1, Math.floor(size / n));
  canvas.width = canvas.height = cell * n;
  const off = sims.slice(0, n).flatMap((row, i) => row.slice(0, n).filter((_, j) => j !== i));
  const low = off.length ? Math.min(...off) : 0;
  const high = 1;
  const ctx = canvas.getContext("2d");
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      ctx.fillStyle = colour((sims[i][j] - low) / (high - low || 1));
      ctx.fillRect(j * cell, i * cell, cell, cell);
    }
  }
  result.cell = cell;
  const more = sims.length > n ? ` (first ${n} of ${sims.length} texts)` : "";
  $("#heat-legend").textContent = `Cosine similarity, dark ${low.toFixed(2)} → bright ${high.toFixed(2)}${more}.`;
}

function hover(event) {
  if (!result || !result.sims) return;
  const rect = event.target.getBoundingClientRect();
  const scale = event.target.width / rect.width;
  const j = Math.floor(((event.clientX - rect.left) * scale) / result.cell);
  const i = Math.floor(((event.clientY - rect.top) * scale) / result.cell);
  if (!result.sims[i] || result.sims[i][j] === undefined) return;
  $("#heat-hover").textContent = `${i + 1} × ${j + 1}: ${result.sims[i][j].toFixed(3)}`;
}

/** NumPy's .npy format, version 1.0: float32 little-endian, shape (n, d). */
export function npy(vectors) {
  const n = vectors.length;
  const d = n ? vectors[0].length : 0;
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${n}, ${d}), }`;
  const unpadded = 10 + header.length + 1;
  header += " ".repeat((64 - (unpadded % 64)) % 64) + "\n";
  const head = new Uint8Array(10 + header.length);
  head.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
  new DataView(head.buffer).setUint16(8, header.length, true);
  head.set(new TextEncoder().encode(header), 10);
  const data = new Float32Array(n * d);
  vectors.forEach((v, i) => data.set(v, i * d));
  const bytes = new DataView(data.buffer);
  for (let k = 0; k < data.length; k++) bytes.setFloat32(k * 4, data[k], true); // little-endian on any host
  return new Blob([head, data.buffer], { type: "application/octet-stream" });
}

function jsonl({ model, texts, vectors }) {
  const lines = texts.map((text, i) => JSON.stringify({ index: i, text, model, embedding: Array.from(vectors[i]) }));
  return new Blob([`${lines.join("\n")}\n`], { type: "application/x-ndjson" });
}
