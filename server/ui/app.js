// The web app's entry: tabs (kept in the URL's #fragment), the server status, and the
// start of each tab's module. Every tab talks only to the server's public API.

import {get} from "./api.js";
import {toast} from "./dom.js";
import {initChat} from "./chat.js";
import {initModels, showModels} from "./models.js";
import {initEngines, showEngines} from "./engines.js";
import {initBench, showBench} from "./bench.js";
import {initSettings} from "./settings.js";

const TABS = {chat: null, models: showModels, engines: showEngines, bench: showBench, settings: null};
const $ = (id) => document.getElementById(id);

function showTab(name) {
  if (!(name in TABS)) name = "chat";
  for (const tab of Object.keys(TABS)) {
    $(`view-${tab}`).hidden = tab !== name;
    $(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
  }
  if (TABS[name]) TABS[name]();
  if (name === "chat") $("prompt").focus();
}

async function health() {
  const status = $("server-status");
  try {
    const r = await fetch("/health");
    const v = await r.json();
    status.textContent = v.status === "ok" ? "server ready" : "server loading models…";
    status.className = `server-status ${v.status === "ok" ? "ok" : ""}`;
  } catch {
    status.textContent = "server unreachable";
    status.className = "server-status bad";
  }
}

async function start() {
  let config = null;
  try { config = await get("/v1/config"); } catch (e) {
    if (e.status !== 401) toast(`Cannot read the server's settings: ${e.message}`);
  }
  initSettings(config);
  initModels();
  initEngines();
  initBench();
  await initChat();
  for (const button of document.querySelectorAll("#tabs button")) {
    button.addEventListener("click", () => { location.hash = button.dataset.tab; });
  }
  window.addEventListener("hashchange", () => showTab(location.hash.slice(1)));
  document.addEventListener("ra:unauthorized", () =>
    toast("This server needs an API key: set it in Settings."));
  document.addEventListener("ra:key-changed", () => location.reload());
  showTab(location.hash.slice(1));
  health();
  setInterval(health, 10000);
  document.body.dataset.ready = "true";
}

start();
