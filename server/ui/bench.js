// The Benchmark tab: runs `POST /v1/bench` (the runtime's cross-engine benchmark) for
// one model on the engines picked, shows progress as each engine finishes, a bar chart
// (SVG) of decode and prefill speed per engine, the table, and CSV/JSON export.

import {get, ndjson} from "./api.js";
import {download, el, fill, num, svg, table} from "./dom.js";

const $ = (id) => document.getElementById(id);
let results = [];
let controller = null;

/** A horizontal bar chart: one bar per result, labelled with its engine and value. */
function chart(metric, key) {
  const max = Math.max(...results.map((r) => r[key]), 1);
  const row = 30, label = 110, width = 520, barMax = width - label - 80;
  const node = svg("svg", {class: "chart", "data-metric": metric, viewBox: `0 0 ${width} ${row * results.length + 8}`,
    role: "img", "aria-label": `${metric} tokens per second by engine`});
  results.forEach((r, i) => {
    const y = 4 + i * row;
    const w = Math.max(2, (r[key] / max) * barMax);
    node.append(
      svg("text", {x: label - 8, y: y + 18, "text-anchor": "end"}, r.engine),
      svg("rect", {class: `bar ${metric}`, "data-engine": r.engine, x: label, y: y + 4, width: w.toFixed(1), height: row - 10, rx: 4},
        svg("title", {}, `${r.engine}: ${num(r[key])} tok/s`)),
      svg("text", {x: label + w + 6, y: y + 18}, num(r[key])));
  });
  return node;
}

function show() {
  $("bench-results").hidden = results.length === 0;
  fill($("chart-decode"), chart("decode", "decode_tok_s"));
  fill($("chart-prefill"), chart("prefill", "prefill_tok_s"));
  fill($("bench-table"), table(["Engine", {num: "Load ms"}, {num: "Prompt"}, {num: "Generated"},
    {num: "Prefill tok/s"}, {num: "Decode tok/s"}, {num: "TTFT ms"}, {num: "Runs"}],
  results.map((r) => ({attrs: {dataset: {engine: r.engine}}, cells: [r.engine, {num: num(r.load_ms)}, {num: r.prompt_tokens},
    {num: r.generated_tokens}, {num: num(r.prefill_tok_s)}, {num: num(r.decode_tok_s)}, {num: num(r.ttft_ms, 2)}, {num: r.runs}]}))));
}

const COLUMNS = ["engine", "isolation", "runs", "load_ms", "prompt_tokens", "generated_tokens", "prefill_tok_s", "decode_tok_s", "ttft_ms", "sink_tok_s"];

async function run() {
  const engines = [...document.querySelectorAll("#bench-engines input:checked")].map((i) => i.value);
  const log = $("bench-progress");
  if (!$("bench-model").value) { fill(log, el("li", {}, "Pick a model.")); return; }
  if (engines.length === 0) { fill(log, el("li", {}, "Pick at least one engine.")); return; }
  results = [];
  show();
  fill(log);
  controller = new AbortController();
  $("bench-run").disabled = true;
  $("bench-stop").hidden = false;
  const body = {
    model: $("bench-model").value, engines, prompt: $("bench-prompt").value,
    max_tokens: Number($("bench-max-tokens").value) || 64, runs: Number($("bench-runs").value) || 3,
  };
  try {
    for await (const e of ndjson("POST", "/v1/bench", body, {signal: controller.signal})) {
      if (e.status === "loading") log.append(el("li", {dataset: {engine: e.engine}}, `${e.engine}: loading and running…`));
      if (e.status === "result") {
        results.push(e.result);
        log.append(el("li", {class: "ok"}, `${e.result.engine}: decode ${num(e.result.decode_tok_s)} tok/s, prefill ${num(e.result.prefill_tok_s)} tok/s`));
        show();
      }
      if (e.status === "error") log.append(el("li", {class: "error-text"}, `${e.engine}: ${e.error}`));
      if (e.status === "done") log.append(el("li", {class: "done"}, `Done: ${results.length} of ${engines.length} engine(s).`));
    }
  } catch (e) {
    log.append(el("li", {class: "error-text"}, e.name === "AbortError" ? "Stopped." : e.message));
  }
  controller = null;
  $("bench-run").disabled = false;
  $("bench-stop").hidden = true;
}

export async function showBench() {
  const keep = $("bench-model").value;
  try {
    const [models, engines] = await Promise.all([get("/v1/models"), get("/v1/engines")]);
    fill($("bench-model"), models.data.map((m) => el("option", {value: m.id}, m.id)));
    if (keep) $("bench-model").value = keep;
    const checked = new Set([...document.querySelectorAll("#bench-engines input:checked")].map((i) => i.value));
    fill($("bench-engines"), el("legend", {}, "Engines"), engines.filter((e) => e.status === "ok").map((e) =>
      el("label", {}, el("input", {type: "checkbox", value: e.id, checked: checked.has(e.id)}), ` ${e.id}`)));
  } catch (e) {
    fill($("bench-progress"), el("li", {class: "error-text"}, e.message));
  }
}

export function initBench() {
  $("bench-form").addEventListener("submit", (e) => { e.preventDefault(); run(); });
  $("bench-stop").addEventListener("click", () => controller?.abort());
  $("bench-csv").addEventListener("click", () => {
    const rows = [COLUMNS.join(","), ...results.map((r) => COLUMNS.map((c) => JSON.stringify(r[c] ?? "")).join(","))];
    download("runanywhere-bench.csv", "text/csv", rows.join("\n") + "\n");
  });
  $("bench-json").addEventListener("click", () =>
    download("runanywhere-bench.json", "application/json", JSON.stringify({model: $("bench-model").value, results}, null, 2)));
}
