// A small, safe Markdown subset for model output: fenced code blocks, bullet and
// numbered lists, paragraphs, and inline `code`, **bold** and *emphasis*. It builds DOM
// nodes and puts every piece of text in as a text node: there is no HTML path at all,
// so a reply containing <script> or <img onerror=...> shows as those characters.

import {el} from "./dom.js";

/** Renders `text` into a DocumentFragment. */
export function render(text) {
  const out = document.createDocumentFragment();
  const lines = text.split("\n");
  let i = 0;
  let paragraph = [];
  const flush = () => {
    if (paragraph.length) out.append(el("p", {}, inline(paragraph.join("\n"))));
    paragraph = [];
  };
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^\s*(```|~~~)\s*([\w+-]*)\s*$/);
    if (fence) {
      flush();
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i++; // the closing fence (or the end, while a reply is still streaming)
      const code = el("code", {}, body.join("\n"));
      if (fence[2]) code.dataset.lang = fence[2];
      out.append(el("pre", {}, code));
      continue;
    }
    const item = line.match(/^\s*([-*+]|\d{1,9}[.)])\s+(.*)$/);
    if (item) {
      flush();
      const ordered = /\d/.test(item[1]);
      const list = el(ordered ? "ol" : "ul");
      if (ordered && parseInt(item[1], 10) !== 1) list.setAttribute("start", parseInt(item[1], 10));
      while (i < lines.length) {
        const m = lines[i].match(/^\s*([-*+]|\d{1,9}[.)])\s+(.*)$/);
        if (!m || /\d/.test(m[1]) !== ordered) break;
        list.append(el("li", {}, inline(m[2])));
        i++;
      }
      out.append(list);
      continue;
    }
    const heading = line.match(/^\s*#{1,6}\s+(.*)$/);
    if (heading) {
      flush();
      out.append(el("p", {}, el("strong", {}, inline(heading[1]))));
      i++;
      continue;
    }
    if (line.trim() === "") flush(); else paragraph.push(line);
    i++;
  }
  flush();
  return out;
}

/** Inline spans: `code` first (its content is literal), then **bold**, then *em*. */
function inline(text) {
  const nodes = [];
  const code = /`([^`\n]+)`/g;
  let last = 0;
  for (const m of text.matchAll(code)) {
    nodes.push(...emphasis(text.slice(last, m.index)));
    nodes.push(el("code", {}, m[1]));
    last = m.index + m[0].length;
  }
  nodes.push(...emphasis(text.slice(last)));
  return nodes;
}

function emphasis(text) {
  // Very long runs stay plain: the patterns below are not linear in the worst case, and
  // this runs on every redraw of a streaming reply.
  if (text.length > 4000) return [document.createTextNode(text)];
  const nodes = [];
  const re = /\*\*([^*\n]+)\*\*|(?<![\w*])\*([^*\s][^*\n]*?)\*(?![\w*])|(?<![\w_])_([^_\s][^_\n]*?)_(?![\w_])/g;
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > last) nodes.push(document.createTextNode(text.slice(last, m.index)));
    nodes.push(m[1] !== undefined ? el("strong", {}, m[1]) : el("em", {}, m[2] ?? m[3]));
    last = m.index + m[0].length;
  }
  if (last < text.length) nodes.push(document.createTextNode(text.slice(last)));
  return nodes;
}
