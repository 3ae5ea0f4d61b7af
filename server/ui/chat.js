// The Chat tab: conversations kept in this browser, replies streamed from
// `/v1/chat/completions` (SSE), Stop (the request is aborted, so the server cancels the
// generation), regenerate, edit-and-resend, a system prompt, the model and engine
// pickers (`MODEL@ENGINE`), and each reply's figures.

import {get, sse} from "./api.js";
import {el, fill, num, toast} from "./dom.js";
import {render} from "./markdown.js";
import {requestOptions} from "./settings.js";

const STORE = "runanywhere.conversations";
const CURRENT = "runanywhere.currentConversation";
const LAST_MODEL = "runanywhere.lastModel";

let conversations = [];
let currentId = null;
let streaming = null; // {controller, reply}
let editing = null; // index of the user message being edited
const $ = (id) => document.getElementById(id);

function loadConversations() {
  try {
    const v = JSON.parse(localStorage.getItem(STORE) || "[]");
    if (!Array.isArray(v)) return [];
    const valid = v.filter((c) => c && typeof c.id === "string" && Array.isArray(c.messages));
    // A reply still streaming when the page was closed never finished.
    for (const c of valid) {
      for (const m of c.messages) {
        if (m.pending) { delete m.pending; m.error = "interrupted: the page was closed while it streamed"; }
      }
    }
    return valid;
  } catch { return []; }
}
function save() {
  try {
    localStorage.setItem(STORE, JSON.stringify(conversations));
    localStorage.setItem(CURRENT, currentId || "");
  } catch (e) {
    toast(`Cannot save the conversations in this browser: ${e.message}`);
  }
}
function current() { return conversations.find((c) => c.id === currentId) || null; }

function newConversation() {
  const c = {
    id: `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`,
    title: "New chat", system: "", messages: [], updated: Date.now(),
    model: $("model-select").value || localStorage.getItem(LAST_MODEL) || "",
    engine: $("engine-select").value || "",
  };
  conversations.unshift(c);
  currentId = c.id;
  save();
  return c;
}

function select(id) {
  if (id === currentId) { $("conversations").classList.remove("open"); return; }
  if (streaming) stop();
  currentId = id;
  cancelEdit();
  save();
  showConversation();
  $("conversations").classList.remove("open");
}

/** The sidebar. */
function renderList() {
  const list = $("conversation-list");
  fill(list, conversations.map((c) => {
    const li = el("li", {class: c.id === currentId ? "current" : "", dataset: {id: c.id}});
    const title = el("button", {class: "title", title: c.title, onclick: () => select(c.id)}, c.title);
    const rename = el("button", {class: "icon rename", title: "Rename", "aria-label": "Rename",
      onclick: () => startRename(li, c)}, "✎");
    const remove = el("button", {class: "icon delete", title: "Delete", "aria-label": "Delete",
      onclick: () => {
        if (!confirm(`Delete “${c.title}”?`)) return;
        if (c.id === currentId) { if (streaming) stop(); cancelEdit(); }
        conversations = conversations.filter((x) => x.id !== c.id);
        if (currentId === c.id) currentId = conversations[0]?.id || null;
        save();
        showConversation();
      }}, "×");
    li.append(title, rename, remove);
    return li;
  }));
}

function startRename(li, c) {
  const input = el("input", {type: "text", value: c.title, "aria-label": "Conversation name"});
  let done = false;
  const finish = (keep) => {
    if (done) return;
    done = true;
    if (keep && input.value.trim()) { c.title = input.value.trim(); save(); }
    renderList();
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); finish(true); }
    if (e.key === "Escape") { e.stopPropagation(); finish(false); }
  });
  input.addEventListener("blur", () => finish(true));
  fill(li, input);
  input.focus();
  input.select();
}

/** One message's node. */
function messageNode(m, index, conv) {
  const node = el("div", {class: `msg ${m.role}${m.pending ? " pending" : ""}${m.error ? " error" : ""}`,
    dataset: {index}});
  const bubble = el("div", {class: "bubble"});
  if (m.role === "assistant") bubble.append(render(m.content)); else bubble.textContent = m.content;
  node.append(bubble);
  if (m.error) node.append(el("div", {class: "error-text"}, m.error));
  if (m.figures) node.append(figuresNode(m.figures));
  if (!m.pending) {
    const actions = el("div", {class: "actions"});
    if (m.role === "user") {
      actions.append(el("button", {class: "edit", onclick: () => startEdit(index)}, "Edit"));
    } else {
      if (index === conv.messages.length - 1) {
        actions.append(el("button", {class: "regenerate", onclick: regenerate}, "Regenerate"));
      }
      actions.append(el("button", {class: "copy", onclick: () => copy(m.content)}, "Copy"));
    }
    node.append(actions);
  }
  return node;
}

function figuresNode(f) {
  const part = (name, text) => el("span", {class: "fig", dataset: {fig: name}}, text);
  return el("div", {class: "figures"},
    part("ttft", `TTFT ${num(f.ttft_ms, 0)} ms`),
    part("speed", `${f.estimated ? "≈" : ""}${num(f.decode_tok_s, 1)} tok/s`),
    part("tokens", `${f.tokens ?? "–"} tokens`),
    part("engine", f.engine || "–"),
    part("stop", f.finish || "–"));
}

async function copy(text) {
  try { await navigator.clipboard.writeText(text); toast("Copied."); }
  catch { toast("The browser did not allow copying."); }
}

function renderMessages() {
  const conv = current();
  const box = $("messages");
  if (!conv || conv.messages.length === 0) {
    fill(box, el("p", {class: "empty", id: "chat-empty"},
      "Pick a model and send a message. Enter sends, Shift+Enter starts a new line, Esc stops a reply."));
    return;
  }
  fill(box, conv.messages.map((m, i) => messageNode(m, i, conv)));
  box.scrollTop = box.scrollHeight;
}

/** Shows the current conversation (its model, engine, system prompt and messages). */
function showConversation() {
  const conv = current();
  renderList();
  renderMessages();
  $("system-prompt").value = conv?.system || "";
  if (conv?.system) $("system-prompt").hidden = false;
  if (conv?.model) selectOption($("model-select"), conv.model);
  selectOption($("engine-select"), conv?.engine || "");
}

function selectOption(select, value) {
  if (![...select.options].some((o) => o.value === value) && value) {
    select.append(el("option", {value}, `${value} (not listed)`));
  }
  select.value = value;
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
}

function startEdit(index) {
  if (streaming) return;
  const conv = current();
  editing = index;
  $("prompt").value = conv.messages[index].content;
  $("editing-banner").hidden = false;
  $("prompt").focus();
}
function cancelEdit() {
  if (editing === null) return;
  editing = null;
  $("editing-banner").hidden = true;
  $("prompt").value = "";
}

function regenerate() {
  const conv = current();
  if (streaming || !conv) return;
  while (conv.messages.length && conv.messages[conv.messages.length - 1].role === "assistant") conv.messages.pop();
  if (conv.messages.length === 0) return;
  generate(conv);
}

/** Sends the composer's text (replacing the edited message and what follows it). */
function send() {
  const text = $("prompt").value;
  if (streaming || text.trim() === "") return;
  if (!$("model-select").value) { toast("Pick a model first (pull one in the Models tab)."); return; }
  const conv = current() || newConversation();
  if (editing !== null) {
    conv.messages.splice(editing);
    editing = null;
    $("editing-banner").hidden = true;
  }
  conv.messages.push({role: "user", content: text});
  if (conv.title === "New chat") conv.title = text.trim().split("\n")[0].slice(0, 48);
  $("prompt").value = "";
  generate(conv);
}

function target(conv) {
  return conv.engine ? `${conv.model}@${conv.engine}` : conv.model;
}

async function generate(conv) {
  conv.model = $("model-select").value;
  conv.engine = $("engine-select").value;
  conv.system = $("system-prompt").value;
  conv.updated = Date.now();
  // Failed or interrupted replies with no text are not part of the conversation.
  const history = conv.messages.filter((m) => m.content).map(({role, content}) => ({role, content}));
  if (conv.system.trim()) history.unshift({role: "system", content: conv.system});
  const reply = {role: "assistant", content: "", pending: true};
  conv.messages.push(reply);
  save();
  renderList();
  renderMessages();
  const controller = new AbortController();
  streaming = {controller, reply, conv};
  setBusy(true);
  const body = {
    model: target(conv), messages: history, stream: true,
    stream_options: {include_usage: true}, ...requestOptions(),
  };
  const started = performance.now();
  let first = null, last = null, pieces = 0, finish = null, timings = null, usage = null;
  let engine = conv.engine || null;
  let frame = 0;
  const redraw = () => {
    frame = 0;
    if (current() !== conv) return;
    const node = document.querySelector(`#messages .msg[data-index="${conv.messages.length - 1}"] .bubble`);
    if (node) fill(node, render(reply.content));
    const box = $("messages");
    box.scrollTop = box.scrollHeight;
  };
  try {
    for await (const chunk of sse("/v1/chat/completions", body, {signal: controller.signal})) {
      if (chunk.system_fingerprint) engine = chunk.system_fingerprint.replace(/^runanywhere-/, "");
      const choice = chunk.choices && chunk.choices[0];
      const piece = choice?.delta?.content;
      if (piece) {
        const now = performance.now();
        if (first === null) first = now;
        last = now;
        pieces++;
        reply.content += piece;
        if (!frame) frame = requestAnimationFrame(redraw);
      }
      if (choice?.finish_reason) finish = choice.finish_reason;
      if (chunk.timings) timings = chunk.timings;
      if (chunk.usage) usage = chunk.usage;
    }
  } catch (e) {
    if (e.name === "AbortError") finish = "stopped";
    else reply.error = e.message;
  }
  if (frame) cancelAnimationFrame(frame);
  const estimated = !timings;
  reply.figures = {
    ttft_ms: first === null ? null : first - started,
    decode_tok_s: timings ? timings.predicted_per_second
      : (pieces > 1 ? (pieces - 1) / ((last - first) / 1000) : null),
    tokens: usage ? usage.completion_tokens : pieces,
    engine, finish: finish || (reply.error ? "error" : null), estimated,
  };
  delete reply.pending;
  streaming = null;
  setBusy(false);
  conv.updated = Date.now();
  save();
  if (current() === conv) renderMessages();
  $("prompt").focus();
}

/** Stops the reply being streamed (the server cancels it when the request goes). */
export function stop() {
  if (streaming) streaming.controller.abort();
}

async function loadPickers() {
  const models = $("model-select");
  const engines = $("engine-select");
  const keepModel = current()?.model || models.value || localStorage.getItem(LAST_MODEL) || "";
  const keepEngine = current()?.engine || engines.value || "";
  try {
    const list = await get("/v1/models");
    fill(models, list.data.map((m) => el("option", {value: m.id}, m.id)));
    if (list.data.length === 0) fill(models, el("option", {value: ""}, "no models: pull one"));
  } catch (e) {
    fill(models, el("option", {value: ""}, "models unavailable"));
    toast(`Cannot list the models: ${e.message}`);
  }
  try {
    const list = await get("/v1/engines");
    fill(engines, el("option", {value: ""}, "auto"),
      list.filter((e) => e.status === "ok").map((e) => el("option", {value: e.id}, e.id)));
  } catch { /* the model picker's toast said why */ }
  if (keepModel) selectOption(models, keepModel);
  selectOption(engines, keepEngine);
}

export function initChat() {
  conversations = loadConversations();
  currentId = localStorage.getItem(CURRENT) || conversations[0]?.id || null;
  if (!current()) currentId = conversations[0]?.id || null;
  $("composer").addEventListener("submit", (e) => { e.preventDefault(); send(); });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape") return;
    if (streaming) { e.preventDefault(); stop(); } else cancelEdit();
  });
  $("stop").addEventListener("click", stop);
  $("cancel-edit").addEventListener("click", cancelEdit);
  $("new-chat").addEventListener("click", () => {
    if (streaming) stop();
    cancelEdit();
    newConversation();
    showConversation();
    $("conversations").classList.remove("open");
    $("prompt").focus();
  });
  $("toggle-system").addEventListener("click", () => {
    const box = $("system-prompt");
    box.hidden = !box.hidden;
    if (!box.hidden) box.focus();
  });
  $("toggle-conversations").addEventListener("click", () => $("conversations").classList.toggle("open"));
  $("system-prompt").addEventListener("change", () => {
    const conv = current();
    if (conv) { conv.system = $("system-prompt").value; save(); }
  });
  for (const id of ["model-select", "engine-select"]) {
    $(id).addEventListener("change", () => {
      const conv = current();
      if (id === "model-select") localStorage.setItem(LAST_MODEL, $(id).value);
      if (conv) {
        conv.model = $("model-select").value;
        conv.engine = $("engine-select").value;
        save();
      }
    });
  }
  document.addEventListener("ra:models-changed", loadPickers);
  showConversation();
  return loadPickers();
}
