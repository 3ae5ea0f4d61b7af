// The Models tab: pull (a live bar with bytes, speed and ETA, cancellable), the loaded
// models with memory and expiry (Unload), the store's models (Verify, Delete), and the
// catalog with the engines here that can run each entry.

import {get, post, request, ndjson} from "./api.js";
import {bytes, duration, el, fill, table, toast} from "./dom.js";

const $ = (id) => document.getElementById(id);
const changed = () => document.dispatchEvent(new CustomEvent("ra:models-changed"));

/** Pulls `reference` with a progress card in #pulls. */
export async function pull(reference) {
  reference = reference.trim();
  if (!reference) return;
  const controller = new AbortController();
  const bar = el("progress", {max: 1, value: 0});
  const status = el("span", {class: "status"}, "starting…");
  const detail = el("div", {class: "detail"}, "");
  const cancel = el("button", {class: "small cancel", onclick: () => controller.abort()}, "Cancel");
  const card = el("div", {class: "pull", dataset: {ref: reference}},
    el("div", {class: "line"}, el("strong", {}, reference), status, cancel), bar, detail);
  $("pulls").prepend(card);
  let samples = [];
  let file = null;
  try {
    for await (const e of ndjson("POST", "/api/pull", {model: reference, stream: true}, {signal: controller.signal})) {
      if (e.status === "success") {
        bar.max = 1; bar.value = 1;
        bar.dataset.percent = "100";
        status.textContent = `done: ${e.model}`;
        detail.textContent = detail.textContent.replace(/ · ETA .*$/, "");
        card.classList.add("done");
        continue;
      }
      status.textContent = e.status;
      if (typeof e.completed === "number") {
        const now = performance.now();
        // A new file, or a download that started over: the speed starts afresh.
        if (e.digest !== file || (samples.length && e.completed < samples[samples.length - 1][1])) samples = [];
        file = e.digest;
        samples.push([now, e.completed]);
        samples = samples.filter(([t]) => now - t < 3000);
        const [t0, b0] = samples[0];
        const speed = now > t0 ? (e.completed - b0) / ((now - t0) / 1000) : 0;
        if (e.total) {
          bar.max = e.total; bar.value = e.completed;
          bar.dataset.percent = String(Math.floor((100 * e.completed) / e.total));
        } else {
          bar.removeAttribute("value");
        }
        const eta = e.total && speed > 0 ? ` · ETA ${duration((e.total - e.completed) / speed)}` : "";
        detail.textContent = `${bytes(e.completed)}${e.total ? ` / ${bytes(e.total)} (${bar.dataset.percent}%)` : ""}`
          + `${speed > 0 ? ` · ${bytes(speed)}/s` : ""}${eta}`;
      }
    }
    if (!card.classList.contains("done")) throw new Error("the pull ended without finishing");
    cancel.remove();
    changed();
    refreshStore();
    refreshCatalog();
  } catch (e) {
    card.classList.add("failed");
    cancel.remove();
    status.textContent = e.name === "AbortError"
      ? "cancelled: pull again to resume (a download the Hub can resume is kept)" : `failed: ${e.message}`;
  }
}

async function refreshLoaded() {
  const box = $("loaded");
  try {
    const {models} = await get("/api/ps");
    const now = Date.now();
    fill(box, table(["Model", "Engine", {num: "Memory"}, "Unloads", ""], models.map((m) => {
      const left = (Date.parse(m.expires_at) - now) / 1000;
      const expiry = left > 50 * 365 * 86400 ? "when unloaded" : `in ${duration(left)}`;
      return {attrs: {dataset: {model: m.name, engine: m.engine}}, cells: [m.name, m.engine, {num: bytes(m.size)}, expiry,
        el("button", {class: "small unload", onclick: async () => {
          try { await post("/v1/unload", {model: m.name, engine: m.engine}); toast(`Unloaded ${m.name}.`); }
          catch (e) { toast(`Cannot unload: ${e.message}`); }
          refreshLoaded();
        }}, "Unload")]};
    }), "No model is loaded."));
  } catch (e) {
    fill(box, el("p", {class: "error-text"}, `Cannot list the loaded models: ${e.message}`));
  }
}

export async function refreshStore() {
  const box = $("store");
  try {
    const {models} = await get("/v1/store");
    fill(box, table(["Id", "Format", {num: "Size"}, "Engines", "Source", "Added", "", ""], models.map((m) => {
      const result = el("span", {class: "verify-result"});
      return {attrs: {dataset: {model: m.id}}, cells: [m.id, m.format, {num: bytes(m.size)},
        m.engines.map((e) => el("span", {class: "chip"}, e)), m.source, (m.added || "").slice(0, 10),
        el("span", {}, el("button", {class: "small verify", onclick: () => verify(m.id, result)}, "Verify"), " ", result),
        el("button", {class: "small delete", onclick: async () => {
          if (!confirm(`Delete ${m.id} from the store? Its files are removed.`)) return;
          try { await request("DELETE", "/api/delete", {model: m.id}); toast(`Deleted ${m.id}.`); }
          catch (e) { toast(`Cannot delete: ${e.message}`); }
          changed();
          refreshStore();
          refreshCatalog();
        }}, "Delete")]};
    }), "The store is empty: pull a model above, or `runanywhere import FILE`."));
  } catch (e) {
    fill(box, el("p", {class: "error-text"}, `Cannot list the store: ${e.message}`));
  }
}

async function verify(id, out) {
  out.textContent = "checking…";
  try {
    const v = await post("/v1/store/verify", {model: id});
    const bad = v.files.filter((f) => !(f.sha256_ok && f.size === f.expected_size && !f.error));
    out.className = `verify-result chip ${v.ok ? "ok" : "bad"}`;
    out.textContent = v.ok ? `✓ ${v.files.length} file(s) match` :
      `✗ ${bad.map((f) => f.error || `${f.name} changed`).join("; ") || "the format check failed"}`;
  } catch (e) {
    out.className = "verify-result chip bad";
    out.textContent = `✗ ${e.message}`;
  }
}

async function refreshCatalog() {
  const box = $("catalog");
  try {
    const {models} = await get("/v1/catalog");
    fill(box, table(["Id", "Name", "Format", "Quant", "Params", {num: "Size"}, "Licence", "Engines", ""], models.map((m) => ({
      attrs: {dataset: {model: m.id}},
      cells: [m.id, m.name, m.format, m.quant, m.parameters, {num: m.size ? bytes(m.size) : "–"}, m.license,
        m.engines.length ? m.engines.map((e) => el("span", {class: "chip"}, e)) : el("span", {class: "hint"}, "no engine here"),
        m.installed ? el("span", {class: "chip ok"}, "installed")
          : el("button", {class: "small pull-entry", onclick: () => pull(m.id)}, "Pull")],
    })), "The catalog is empty."));
  } catch (e) {
    fill(box, el("p", {class: "error-text"}, `Cannot read the catalog: ${e.message}`));
  }
}

let timer = 0;
/** Called when the tab is shown: refreshes everything, then the loaded list every 5 s. */
export function showModels() {
  refreshLoaded();
  refreshStore();
  refreshCatalog();
  clearInterval(timer);
  timer = setInterval(() => { if (!$("view-models").hidden) refreshLoaded(); else clearInterval(timer); }, 5000);
}

export function initModels() {
  $("pull-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const ref = $("pull-ref").value;
    $("pull-ref").value = "";
    pull(ref);
  });
  $("refresh-loaded").addEventListener("click", refreshLoaded);
  $("refresh-store").addEventListener("click", refreshStore);
}
