// The server's public API, as any client sees it: JSON requests, OpenAI's SSE streams
// and Ollama-style NDJSON streams. Errors come back as `ApiError` with the server's own
// message (OpenAI's `{"error": {"message"}}` or Ollama's `{"error": "..."}`).

const KEY = "runanywhere.apiKey";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function apiKey() { return localStorage.getItem(KEY) || ""; }
export function setApiKey(key) {
  if (key) localStorage.setItem(KEY, key); else localStorage.removeItem(KEY);
}

function headers(body) {
  const h = {};
  if (body !== undefined) h["Content-Type"] = "application/json";
  const key = apiKey();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

function messageOf(status, text) {
  try {
    const v = JSON.parse(text);
    const e = v.error;
    if (typeof e === "string") return e;
    if (e && typeof e.message === "string") return e.message;
  } catch { /* not JSON */ }
  return text.trim() || `HTTP ${status}`;
}

async function send(method, path, body, signal) {
  let response;
  try {
    response = await fetch(path, {
      method, signal, headers: headers(body),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, `cannot reach the server (${e.message})`);
  }
  if (!response.ok) {
    const message = messageOf(response.status, await response.text());
    if (response.status === 401) document.dispatchEvent(new CustomEvent("ra:unauthorized"));
    throw new ApiError(response.status, message);
  }
  return response;
}

/** A JSON request; resolves to the parsed answer (or null for an empty body). */
export async function request(method, path, body, {signal} = {}) {
  const response = await send(method, path, body, signal);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}
export const get = (path, opts) => request("GET", path, undefined, opts);
export const post = (path, body, opts) => request("POST", path, body, opts);

/** The lines of a streamed body, as they arrive. */
async function* lines(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let i;
    while ((i = buffer.indexOf("\n")) >= 0) {
      yield buffer.slice(0, i).replace(/\r$/, "");
      buffer = buffer.slice(i + 1);
    }
  }
  buffer += decoder.decode();
  if (buffer) yield buffer;
}

/** An OpenAI-style SSE stream: yields each `data:` object until `[DONE]`. */
export async function* sse(path, body, {signal} = {}) {
  const response = await send("POST", path, body, signal);
  for await (const line of lines(response)) {
    if (!line.startsWith("data:")) continue;
    const data = line.slice(5).trim();
    if (data === "[DONE]") return;
    const v = JSON.parse(data);
    if (v.error) throw new ApiError(500, messageOf(500, data));
    yield v;
  }
}

/** An NDJSON stream: yields each object; an `{"error"}` line throws. */
export async function* ndjson(method, path, body, {signal} = {}) {
  const response = await send(method, path, body, signal);
  for await (const line of lines(response)) {
    if (!line.trim()) continue;
    const v = JSON.parse(line);
    if (v.error && v.status !== "error") throw new ApiError(500, messageOf(500, line));
    yield v;
  }
}
