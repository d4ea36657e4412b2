// The status view: the models served (kind, context length, dimensions) and a summary of
// the server's Prometheus /metrics.

import { getJSON, call, listModels, SERVER, apiKey } from "./api.js";
import { $, el, formatNumber } from "./dom.js";

let timer = 0;

export function initStatus() {
  $("#status-refresh").addEventListener("click", refresh);
}

/** Refresh now and every 5 s while the view is shown; ``false`` stops the timer. */
export function watchStatus(on) {
  clearInterval(timer);
  if (on) {
    refresh();
    timer = setInterval(refresh, 5000);
  }
}

/** Prometheus text -> [{name, labels, value}]. */
export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    const match = line.match(/^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/);
    if (!match) continue;
    const labels = {};
    for (const [, key, value] of (match[3] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[key] = value;
    samples.push({ name: match[1], labels, value: Number(match[4]) });
  }
  return samples;
}

function total(samples, name, filter = () => true) {
  return samples.filter((s) => s.name === name && filter(s.labels)).reduce((sum, s) => sum + s.value, 0);
}

async function refresh() {
  const when = $("#status-when");
  try {
    const [models, health] = await Promise.all([listModels(), getJSON("/health")]);
    const metricsText = await (await call("/metrics")).text(); // alone in flight: counted below
    $("#status-models").replaceChildren(...models.map((m) => el("tr", {},
      el("td", {}, m.id), el("td", {}, m.kind), el("td", {}, m.context_length ? formatNumber(m.context_length) : "–"),
      el("td", {}, m.dimensions ? String(m.dimensions) : "–"))));
    const samples = parseMetrics(metricsText);
    const latency = (route) => {
      const count = total(samples, "onnxg_request_duration_seconds_count", (l) => l.route === route);
      const sum = total(samples, "onnxg_request_duration_seconds_sum", (l) => l.route === route);
      return count ? `${formatNumber((sum / count) * 1000)} ms mean over ${count}` : "–";
    };
    const facts = [
      ["Server", `${SERVER} (${health.status})`],
      ["API key", apiKey() ? "entered in this tab" : "none entered"],
      ["Requests answered", formatNumber(total(samples, "onnxg_requests_total"))],
      ["Errors sent", formatNumber(total(samples, "onnxg_errors_total"))],
      ["Other requests in flight", formatNumber(Math.max(0, total(samples, "onnxg_requests_in_flight") - 1))],
      ["Chat requests", latency("/v1/chat/completions")],
      ["Embedding requests", latency("/v1/embeddings")],
    ];
    $("#status-metrics").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    const names = [...new Set(samples.filter((s) => s.labels.model).map((s) => s.labels.model))].sort();
    $("#status-per-model").replaceChildren(...names.map((name) => {
      const of = (l) => l.model === name;
      const count = total(samples, "onnxg_time_to_first_token_seconds_count", of);
      const sum = total(samples, "onnxg_time_to_first_token_seconds_sum", of);
      return el("tr", {}, el("td", {}, name),
        el("td", {}, formatNumber(total(samples, "onnxg_prompt_tokens_total", of))),
        el("td", {}, formatNumber(total(samples, "onnxg_completion_tokens_total", of))),
        el("td", {}, count ? `${formatNumber((sum / count) * 1000)} ms (${count})` : "–"));
    }));
    when.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    when.classList.remove("error");
  } catch (error) {
    when.textContent = error.message;
    when.classList.add("error");
  }
}
