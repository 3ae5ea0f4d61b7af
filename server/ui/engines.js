// The Engines tab: every engine with its status, formats and capabilities, and the
// ledger of engines that could not be used, with the reason and the fix.

import {get} from "./api.js";
import {el, fill, table} from "./dom.js";

const $ = (id) => document.getElementById(id);

export async function showEngines() {
  try {
    const list = await get("/v1/engines");
    const ok = list.filter((e) => e.status === "ok");
    const bad = list.filter((e) => e.status !== "ok");
    fill($("engines"), ok.length ? ok.map((e) => el("div", {class: "card engine", dataset: {engine: e.id}},
      el("h3", {}, el("span", {}, e.name || e.id), el("span", {class: "chip ok"}, "ready")),
      el("dl", {},
        el("dt", {}, "id"), el("dd", {}, e.id),
        el("dt", {}, "version"), el("dd", {}, e.version || "–"),
        el("dt", {}, "formats"), el("dd", {}, e.formats.map((f) => el("span", {class: "chip"}, f))),
        el("dt", {}, "can"), el("dd", {}, e.capabilities.length ? e.capabilities.map((c) => el("span", {class: "chip"}, c)) : "–"),
        el("dt", {}, "priority"), el("dd", {}, e.priority ?? "–"))))
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
