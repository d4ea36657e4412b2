// The chat view: conversations (kept in localStorage), settings, streaming replies with Stop,
// copy / regenerate / edit-and-resend. Every request is built by requestBody().

import { call, events } from "./api.js";
import { $, copyText, el, formatNumber } from "./dom.js";
import { render } from "./markdown.js";
import { conversations, settings as stored } from "./store.js";

const NUMERIC = ["temperature", "top_p", "top_k", "max_tokens", "seed"];

let list = []; // conversations, most recent first
let current = null;
let models = [];
let running = null; // { controller, conv } while a reply streams
let painting = 0;

export function initChat() {
  list = conversations.all().sort((a, b) => b.updated - a.updated);
  current = list[0] || conversations.create();
  const form = $("#settings");
  const saved = stored.load();
  for (const [name, value] of Object.entries(saved)) if (form.elements[name] && name !== "model") form.elements[name].value = value;
  form.addEventListener("input", saveSettings);
  form.addEventListener("reset", () => setTimeout(saveSettings));
  $("#composer").addEventListener("submit", (event) => { event.preventDefault(); send(); });
  $("#prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); send(); }
  });
  $("#stop").addEventListener("click", stop);
  document.addEventListener("keydown", (event) => { if (event.key === "Escape" && running) stop(); });
  $("#new-chat").addEventListener("click", newChat);
  $("#messages").addEventListener("click", (event) => {
    const button = event.target.closest(".copy-code");
    if (!button) return;
    copyText(button.closest(".code").querySelector("code").textContent);
    flash(button, "Copied");
  });
  renderList();
  renderMessages();
}

/** The chat models served (from /v1/models); keeps the chosen one when it is still served. */
export function setChatModels(served) {
  models = served.filter((m) => m.kind === "chat");
  const select = $("#chat-model");
  const wanted = select.value || stored.load().model;
  select.replaceChildren(...models.map((m) => el("option", { value: m.id }, `${m.id} (${formatNumber(m.context_length)} tokens)`)));
  if (!models.length) select.append(el("option", { value: "", disabled: true }, "(no chat model served)"));
  if (models.some((m) => m.id === wanted)) select.value = wanted;
  if (!current.messages.length) renderMessages();
}

function saveSettings() {
  const form = $("#settings");
  const value = {};
  for (const field of form.elements) if (field.name) value[field.name] = field.value;
  stored.save(value);
}

function chatSettings() {
  const form = $("#settings");
  return Object.fromEntries([...form.elements].filter((f) => f.name).map((f) => [f.name, f.value.trim()]));
}

/** The /v1/chat/completions body for this history: the settings, the output format (JSON
 * object or schema, enforced by the server's grammar) and the tools the model may call. */
function requestBody(history) {
  const s = chatSettings();
  const messages = s.system ? [{ role: "system", content: s.system }] : [];
  messages.push(...history.filter((m) => !m.error || m.content).map((m) => ({ role: m.role, content: m.content })));
  const body = { model: s.model, messages, stream: true, stream_options: { include_usage: true } };
  for (const name of NUMERIC) if (s[name] !== "") body[name] = Number(s[name]);
  if (s.stop) body.stop = s.stop.split(",").map((x) => x.replace(/\\n/g, "\n")).filter((x) => x);
  if (s.format === "json_object") body.response_format = { type: "json_object" };
  if (s.format === "json_schema") {
    body.response_format = { type: "json_schema", json_schema: { name: "page_schema", strict: true,
      schema: parseSetting(s.schema, "JSON schema", "an object") } };
  }
  if (s.tools) {
    body.tools = parseSetting(s.tools, "Tools", "a list");
    body.tool_choice = s.tool_choice || "auto";
  }
  return body;
}

function parseSetting(text, label, shape) {
  if (!text) throw new Error(`${label}: the setting is empty`);
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`${label} is not JSON (${shape} is expected): ${error.message}`);
  }
}

function persist(conv = current) {
  conv.updated = Date.now();
  conversations.save(list.filter((c) => c.messages.length));
}

// ---------------------------------------------------------------- sending and streaming

function send() {
  const prompt = $("#prompt");
  const text = prompt.value.trim();
  if (!text || running) return;
  prompt.value = "";
  if (!list.includes(current)) list.unshift(current);
  if (!current.titled) current.title = text.length > 48 ? `${text.slice(0, 47)}…` : text;
  current.titled = true;
  current.messages.push({ role: "user", content: text });
  reply(current.messages.length);
}

/** Generate the assistant message at ``index`` from the messages before it. */
async function reply(index) {
  const conv = current;
  conv.messages.splice(index);
  const msg = { role: "assistant", content: "", reasoning: "", model: $("#chat-model").value };
  conv.messages.push(msg);
  list = [conv, ...list.filter((c) => c !== conv)];
  persist(conv);
  renderList();
  const controller = new AbortController();
  running = { controller, conv };
  setBusy(true);
  renderMessages();
  const started = performance.now();
  let first = null;
  let pieces = 0;
  let usage = null;
  try {
    const response = await call("/v1/chat/completions",
      { method: "POST", body: requestBody(conv.messages.slice(0, index)), signal: controller.signal });
    for await (const event of events(response)) {
      if (event.usage) usage = event.usage;
      if (event.model) msg.model = event.model;
      const choice = event.choices && event.choices[0];
      if (!choice) continue;
      const delta = choice.delta || {};
      if (delta.content || delta.reasoning_content) { first ??= performance.now(); pieces++; }
      if (delta.reasoning_content) msg.reasoning += delta.reasoning_content;
      if (delta.content) msg.content += delta.content;
      for (const call of delta.tool_calls || []) {  // first delta: id and name; then argument pieces
        msg.calls ??= [];
        const slot = (msg.calls[call.index] ??= { name: "", arguments: "" });
        if (call.function && call.function.name) slot.name = call.function.name;
        if (call.function && call.function.arguments) slot.arguments += call.function.arguments;
        first ??= performance.now();
        pieces++;
      }
      if (choice.finish_reason) msg.finish = choice.finish_reason;
      paint(conv, index);
    }
  } catch (error) {
    if (error.name === "AbortError") msg.stopped = true;
    else msg.error = error.message;
  } finally {
    const seconds = first === null ? 0 : (performance.now() - first) / 1000;
    const tokens = usage ? usage.completion_tokens : pieces;
    msg.stats = { tokens, exact: Boolean(usage), ttft: first === null ? null : first - started,
      rate: tokens > 1 && seconds >= 0.01 ? (tokens - 1) / seconds : null }; // no rate from a burst
    running = null;
    setBusy(false);
    persist(conv);
    if (current === conv) renderMessages();
  }
}

function stop() {
  if (running) running.controller.abort();
}

function setBusy(busy) {
  $("#send").hidden = busy;
  $("#stop").hidden = !busy;
  if (!busy && document.activeElement === document.body) $("#prompt").focus();
}

function paint(conv, index) {
  if (painting || conv !== current) return;
  painting = requestAnimationFrame(() => {
    painting = 0;
    const node = $(`#messages article[data-index="${index}"]`);
    if (!node) return;
    const msg = conv.messages[index];
    fill(node, msg);
    const box = $("#messages");
    if (box.scrollHeight - box.scrollTop - box.clientHeight < 160) box.scrollTop = box.scrollHeight;
  });
}

// ---------------------------------------------------------------- rendering

function renderMessages() {
  const box = $("#messages");
  if (!current.messages.length) {
    const model = $("#chat-model").value;
    box.replaceChildren(el("div", { class: "empty" },
      el("h2", {}, model ? `Chat with ${model}` : "Chat"),
      el("p", {}, "Type a message below: the reply streams in as the model writes it. Stop (or Esc) ends a reply early."),
      el("p", {}, "Settings holds the model, a system prompt and the sampling options; conversations stay in this browser.")));
    return;
  }
  box.replaceChildren(...current.messages.map((msg, index) => messageView(msg, index)));
  box.scrollTop = box.scrollHeight;
}

function messageView(msg, index) {
  const last = index === current.messages.length - 1;
  const node = el("article", { class: `msg ${msg.role}`, "data-index": index },
    el("div", { class: "msg-head" }, el("span", { class: "who" }, msg.role === "user" ? "You" : msg.model || "assistant")),
    el("details", { class: "reasoning", hidden: true }, el("summary", {}, "Reasoning"), el("div", { class: "reasoning-body" })),
    el("div", { class: "body" }),
    el("pre", { class: "tool-calls", hidden: true }),
    el("p", { class: "error", role: "alert", hidden: true }),
    el("div", { class: "stats" }));
  fill(node, msg);
  const actions = el("div", { class: "actions" });
  const busy = running && running.conv === current;
  actions.append(el("button", { class: "ghost small", onclick: (e) => { copyText(msg.content); flash(e.target, "Copied"); } }, "Copy"));
  if (msg.role === "user" && !busy) actions.append(el("button", { class: "ghost small", onclick: () => edit(node, index) }, "Edit"));
  if (msg.role === "assistant" && last && !busy) actions.append(el("button", { class: "ghost small", onclick: () => reply(index) }, "Regenerate"));
  if (!(busy && last)) node.querySelector(".msg-head").append(actions);
  return node;
}

function fill(node, msg) {
  const body = node.querySelector(".body");
  if (msg.role === "user") body.textContent = msg.content;
  else body.innerHTML = render(msg.content); // safe: render() escapes first
  const calls = node.querySelector(".tool-calls");
  calls.hidden = !(msg.calls && msg.calls.length);
  calls.textContent = (msg.calls || []).map((call) => `→ ${call.name}(${call.arguments})`).join("\n");
  const reasoning = node.querySelector(".reasoning");
  reasoning.hidden = !msg.reasoning;
  node.querySelector(".reasoning-body").textContent = msg.reasoning || "";
  const error = node.querySelector(".error");
  error.hidden = !msg.error;
  error.textContent = msg.error || "";
  node.querySelector(".stats").textContent = statsLine(msg);
  node.classList.toggle("streaming", Boolean(running && running.conv.messages[running.conv.messages.length - 1] === msg));
}

function statsLine(msg) {
  const s = msg.stats;
  if (!s) return "";
  const parts = [];
  if (s.tokens) parts.push(`${s.exact ? "" : "~"}${s.tokens} tokens`);
  if (s.rate) parts.push(`${formatNumber(s.rate, 1)} tok/s`);
  if (s.ttft !== null) parts.push(`first token ${formatNumber(s.ttft)} ms`);
  if (msg.stopped) parts.push("stopped");
  else if (msg.finish === "length") parts.push("cut at the token limit");
  return parts.join(" · ");
}

function edit(node, index) {
  const msg = current.messages[index];
  const area = el("textarea", { class: "edit", rows: 3, "aria-label": "Edit message" });
  area.value = msg.content;
  const done = () => renderMessages();
  const resend = () => {
    const text = area.value.trim();
    if (!text || running) return;
    current.messages.splice(index, current.messages.length, { role: "user", content: text });
    reply(index + 1);
  };
  area.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); resend(); }
    if (event.key === "Escape") { event.stopPropagation(); done(); }
  });
  node.querySelector(".body").replaceChildren(area,
    el("div", { class: "row" }, el("button", { class: "small", onclick: resend }, "Send"),
      el("button", { class: "ghost small", onclick: done }, "Cancel")));
  area.focus();
}

function flash(button, text) {
  const before = button.textContent;
  button.textContent = text;
  setTimeout(() => { button.textContent = before; }, 1200);
}

// ---------------------------------------------------------------- conversations

function newChat() {
  if (current.messages.length) current = conversations.create();
  renderList();
  renderMessages();
  $("#prompt").focus();
}

function open(conv) {
  current = conv;
  renderList();
  renderMessages();
}

function renderList() {
  const items = list.filter((c) => c.messages.length || c === current);
  if (!items.includes(current)) items.unshift(current);
  $("#conv-list").replaceChildren(...items.map((conv) => el("li", { class: conv === current ? "active" : "" },
    el("button", { class: "conv-title", "aria-current": conv === current ? "true" : false, title: conv.title,
      onclick: () => open(conv) }, conv.title),
    el("button", { class: "ghost icon", title: "Rename", "aria-label": `Rename ${conv.title}`,
      onclick: (e) => rename(e.target.closest("li"), conv) }, "✎"),
    el("button", { class: "ghost icon", title: "Delete", "aria-label": `Delete ${conv.title}`,
      onclick: () => remove(conv) }, "✕"))));
}

function rename(item, conv) {
  const input = el("input", { class: "rename", "aria-label": "New name", value: conv.title });
  let finished = false;
  const finish = (keep) => {
    if (finished) return;
    finished = true;
    const title = input.value.trim();
    if (keep && title) Object.assign(conv, { title, titled: true });
    persist();
    renderList();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") finish(true);
    if (event.key === "Escape") { event.stopPropagation(); finish(false); }
  });
  input.addEventListener("blur", () => finish(true));
  item.replaceChildren(input);
  input.select();
}

function remove(conv) {
  if (!confirm(`Delete the conversation "${conv.title}"?`)) return;
  if (running && running.conv === conv) stop();
  list = list.filter((c) => c !== conv);
  if (current === conv) current = list[0] || conversations.create();
  conversations.save(list.filter((c) => c.messages.length));
  renderList();
  renderMessages();
}
