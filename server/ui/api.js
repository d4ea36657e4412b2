// The page's only way to the server: onnxg's own OpenAI endpoints, as any client uses them.
// ?api=http://host:port points the page at another onnxg server (which must allow this
// page's origin with --cors-origin). The API key, asked for when /v1 answers 401, is kept
// in sessionStorage (this tab only).

export const BASE = (new URLSearchParams(location.search).get("api") || "").replace(/\/+$/, "");
export const SERVER = BASE || location.origin;
// One key per server: a key entered for this server is never sent to another one (?api=).
const KEY_ITEM = `onnxg.apiKey ${SERVER}`;

export class ApiError extends Error {
  constructor(message, { status = 0, param = null, code = null } = {}) {
    super(message);
    this.status = status;
    this.param = param;
    this.code = code;
  }
}

let askForKey = null; // set by app.js: async (reason) => key or null

export function onKeyNeeded(ask) {
  askForKey = ask;
}

export function apiKey() {
  return sessionStorage.getItem(KEY_ITEM) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  else sessionStorage.removeItem(KEY_ITEM);
}

/** Tells the page whether the server answered ("onnxg-connection" event, detail: boolean). */
function connection(ok) {
  window.dispatchEvent(new CustomEvent("onnxg-connection", { detail: ok }));
}

/** fetch(path) with the key; a clear ApiError for every failure (AbortError passes through). */
export async function call(path, { method = "GET", body, signal } = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const key = apiKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    let response;
    try {
      response = await fetch(BASE + path, {
        method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      connection(false);
      throw new ApiError(`Cannot reach the onnxg server at ${SERVER}. Is \`onnxg serve\` running?`,
        { code: "unreachable" });
    }
    connection(true);
    if (response.status === 401 && askForKey && attempt < 3) {
      const reason = key ? `The server at ${SERVER} refused this API key. Enter the right one.`
        : `The server at ${SERVER} needs an API key.`;
      const given = await askForKey(reason);
      if (given) {
        setApiKey(given);
        continue;
      }
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }
}

async function errorOf(response) {
  let message = `The server answered ${response.status} ${response.statusText}`.trim();
  let param = null;
  let code = null;
  try {
    const error = (await response.json()).error;
    if (error && error.message) ({ message, param, code } = error);
  } catch {
    // not OpenAI's error JSON: keep the status line
  }
  if (response.status === 401) message = `${message} Use the Key button to enter the server's API key.`;
  if (param) message = `${message} (${param})`;
  return new ApiError(message, { status: response.status, param, code });
}

export async function getJSON(path) {
  return (await call(path)).json();
}

export async function postJSON(path, body, signal) {
  return (await call(path, { method: "POST", body, signal })).json();
}

/** The JSON events of a server-sent-event response, until [DONE]; an error event throws. */
export async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block.split("\n").filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      const event = JSON.parse(data);
      if (event.error) throw new ApiError(event.error.message || "The server reported an error.", event.error);
      yield event;
    }
  }
  throw new ApiError("The connection closed before the reply ended: the server may have stopped.", { code: "cut" });
}

/** The served models, each with onnxg's kind, context_length and dimensions. */
export async function listModels() {
  const body = await getJSON("/v1/models");
  return body.data.map((m) => ({ ...m, kind: m.kind || (m.dimensions ? "embedding" : "chat") }));
}
