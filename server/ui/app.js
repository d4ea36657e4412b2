// The page's start: tabs, theme, the API-key dialog, and the model list every view shares.

import { BASE, SERVER, apiKey, listModels, onKeyNeeded, setApiKey } from "./api.js";
import { initChat, setChatModels } from "./chat.js";
import { $, clearBanner, showBanner } from "./dom.js";
import { initEmbed, setEmbeddingModels } from "./embed.js";
import { initStatus, watchStatus } from "./status.js";
import { theme } from "./store.js";

const TABS = ["chat", "embed", "status"];
const WIDE = window.matchMedia("(min-width: 800px)");

function showTab(name, focus = false) {
  for (const tab of TABS) {
    const button = $(`#tab-${tab}`);
    const on = tab === name;
    button.setAttribute("aria-selected", String(on));
    button.tabIndex = on ? 0 : -1;
    $(`#view-${tab}`).hidden = !on;
    if (on && focus) button.focus();
  }
  watchStatus(name === "status");
  if (location.hash !== `#${name}`) history.replaceState(null, "", `${location.search}#${name}`);
}

function initTabs() {
  for (const tab of TABS) $(`#tab-${tab}`).addEventListener("click", () => showTab(tab));
  $(".tabs").addEventListener("keydown", (event) => {
    const at = TABS.findIndex((t) => $(`#tab-${t}`) === document.activeElement);
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (at < 0 || !step) return;
    event.preventDefault();
    showTab(TABS[(at + step + TABS.length) % TABS.length], true);
  });
  const wanted = location.hash.slice(1);
  showTab(TABS.includes(wanted) ? wanted : "chat");
}

function initTheme() {
  const apply = (value) => {
    if (value) document.documentElement.dataset.theme = value;
    else delete document.documentElement.dataset.theme;
  };
  apply(theme.load());
  $("#theme-button").addEventListener("click", () => {
    const dark = document.documentElement.dataset.theme
      ? document.documentElement.dataset.theme === "dark"
      : window.matchMedia("(prefers-color-scheme: dark)").matches;
    const next = dark ? "light" : "dark";
    apply(next);
    theme.save(next);
  });
}

/** The API-key dialog; resolves with the key typed, or null when cancelled. */
function askForKey(reason) {
  const dialog = $("#key-dialog");
  $("#key-reason").textContent = reason;
  const input = $("#key-input");
  input.value = "";
  $("#key-button").hidden = false;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "save" ? input.value.trim() : null); // "" forgets the key
    }, { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    input.focus();
  });
}

let served = null; // how many models, once /v1/models answered

function showConnection(ok) {
  const conn = $("#conn");
  conn.className = `conn ${ok ? "ok" : "bad"}`;
  conn.textContent = !ok ? "offline" : served === null ? "connected" : `${served} model${served === 1 ? "" : "s"}`;
  conn.title = `${ok ? "Connected to" : "Cannot reach"} ${SERVER}`;
}

async function loadModels() {
  try {
    const models = await listModels();
    served = models.length;
    setChatModels(models);
    setEmbeddingModels(models);
    clearBanner();
    showConnection(true);
  } catch (error) {
    showConnection(error.status !== 0);
    if (error.status === 401) $("#conn").textContent = "key needed";
    showBanner(error.message, loadModels);
  }
}

function start() {
  initTheme();
  initTabs();
  onKeyNeeded(askForKey);
  window.addEventListener("onnxg-connection", (event) => showConnection(event.detail));
  $("#key-button").hidden = !apiKey();
  $("#key-button").addEventListener("click", async () => {
    const key = await askForKey("Enter the server's API key (leave it empty to forget it).");
    if (key === null) return;
    setApiKey(key);
    loadModels();
  });
  const unfold = () => { for (const panel of ["#conv-panel", "#settings-panel"]) $(panel).open = WIDE.matches; };
  unfold();
  WIDE.addEventListener("change", unfold);
  initChat();
  initEmbed();
  initStatus();
  if (BASE) document.title = `onnxg · ${BASE}`;
  loadModels();
}

start();
