// Settings: generation options kept per browser (localStorage), the server's defaults
// as placeholders, and the API key. `requestOptions()` is what the Chat tab sends.

import {apiKey, setApiKey} from "./api.js";
import {fill, el, duration} from "./dom.js";

const KEY = "runanywhere.settings";
const NUMBERS = ["temperature", "top_k", "top_p", "min_p", "repeat_penalty", "max_tokens", "seed", "num_ctx"];
const INTEGERS = new Set(["top_k", "max_tokens", "seed", "num_ctx"]);

function load() {
  try { return JSON.parse(localStorage.getItem(KEY) || "{}") || {}; } catch { return {}; }
}

/** The fields a generation request adds: only those the user set. */
export function requestOptions() {
  const s = load();
  const out = {};
  for (const name of NUMBERS) {
    if (s[name] === undefined || s[name] === "") continue;
    const v = Number(s[name]);
    if (Number.isFinite(v)) out[name] = INTEGERS.has(name) ? Math.trunc(v) : v;
  }
  if (s.keep_alive !== undefined && String(s.keep_alive).trim() !== "") {
    const k = String(s.keep_alive).trim();
    out.keep_alive = /^-?\d+(\.\d+)?$/.test(k) ? Number(k) : k;
  }
  return out;
}

/** Wires the Settings tab; `config` is `GET /v1/config` (or null when unreachable). */
export function initSettings(config) {
  const form = document.getElementById("settings-form");
  const saved = document.getElementById("settings-saved");
  const defaults = config ? {...config.defaults, num_ctx: config.context_length || "",
    keep_alive: keepAliveText(config.keep_alive)} : {};
  const show = () => {
    const s = load();
    for (const input of form.elements) {
      if (!input.name) continue;
      input.value = s[input.name] ?? "";
      const d = defaults[input.name];
      if (d !== undefined && d !== null && d !== "") input.placeholder = String(typeof d === "number" ? +d.toFixed(4) : d);
    }
  };
  form.addEventListener("input", () => {
    const s = {};
    for (const input of form.elements) {
      if (input.name && input.value.trim() !== "") s[input.name] = input.value.trim();
    }
    localStorage.setItem(KEY, JSON.stringify(s));
    saved.textContent = "Saved in this browser.";
  });
  form.addEventListener("submit", (e) => e.preventDefault());
  document.getElementById("settings-reset").addEventListener("click", () => {
    localStorage.removeItem(KEY);
    show();
    saved.textContent = "Reset: the server's defaults apply.";
  });
  show();

  const key = document.getElementById("api-key");
  key.value = apiKey();
  key.addEventListener("change", () => {
    setApiKey(key.value.trim());
    document.dispatchEvent(new CustomEvent("ra:key-changed"));
  });
  document.getElementById("key-form").addEventListener("submit", (e) => e.preventDefault());
  const info = document.getElementById("server-info");
  if (config) {
    fill(info,
      `Server ${config.version}; at most ${config.max_tokens} tokens per reply; `,
      `${config.parallel} parallel generation(s) per model; models kept loaded `,
      config.keep_alive < 0 ? "until unloaded" : config.keep_alive === 0 ? "only while in use" : `for ${duration(config.keep_alive)} after use`,
      config.models.length ? el("span", {}, "; started with ", config.models.join(", ")) : "", ".");
  } else {
    fill(info, "The server's settings are not available (is an API key needed?).");
  }
}

function keepAliveText(seconds) {
  if (seconds === undefined || seconds === null) return "";
  if (seconds < 0) return "-1 (forever)";
  if (seconds % 60 === 0 && seconds > 0) return `${seconds / 60}m`;
  return `${seconds}`;
}
