// The Engines tab: every engine with its status, formats and capabilities, and the
// ledger of engines that could not be used, with the reason and the fix. An engine whose
// worker process crashed is still usable (the next request starts a new worker): it
// keeps its card, marked unhealthy with the crash.

import {get} from "./api.js";
import {el, fill, table} from "./dom.js";

const $ = (id) => document.getElementById(id);

export async function showEngines() {
  try {
    const list = await get("/v1/engines");
    const usable = (e) => e.status === "ok" || e.status === "unhealthy";
    const ok = list.filter(usable);
    const bad = list.filter((e) => !usable(e));
    fill($("engines"), ok.length ? ok.map((e) => el("div", {class: "card engine", dataset: {engine: e.id}},
      el("h3", {}, el("span", {}, e.name || e.id), e.status === "ok"
        ? el("span", {class: "chip ok"}, "ready")
        : el("span", {class: "chip bad", title: e.reason || ""}, "unhealthy")),
      el("dl", {},
        el("dt", {}, "id"), el("dd", {}, e.id),
        el("dt", {}, "version"), el("dd", {}, e.version || "–"),
        el("dt", {}, "formats"), el("dd", {}, e.formats.map((f) => el("span", {class: "chip"}, f))),
        el("dt", {}, "can"), el("dd", {}, e.capabilities.length ? e.capabilities.map((c) => el("span", {class: "chip"}, c)) : "–"),
        el("dt", {}, "priority"), el("dd", {}, e.priority ?? "–"),
        el("dt", {}, "runs"), el("dd", {}, e.isolation === "process" ? "in a worker process" : "in the server"),
        ...(e.status === "unhealthy" ? [el("dt", {}, "problem"), el("dd", {class: "error-text"}, e.reason || "–")] : []))))
      : el("p", {class: "hint"}, "No engine is available: see below for why."));
    fill($("unavailable"), table(["Engine", "Formats", "Why", "Reason"], bad.map((e) => ({
      attrs: {dataset: {engine: e.id}},
      cells: [e.id, e.formats.join(", "), el("span", {class: "chip bad"}, e.kind || e.status), e.reason || "–"],
    })), "Every engine found loaded."));
  } catch (e) {
    fill($("engines"), el("p", {class: "error-text"}, `Cannot list the engines: ${e.message}`));
  }
}

export function initEngines() {
  $("refresh-engines").addEventListener("click", showEngines);
}
