// A small Markdown renderer for model output. Safety by construction: the text is
// HTML-escaped first, and only the tags written here are added afterwards; links keep only
// http(s) URLs. Covers what models write: fenced code, inline code, headings, lists, quotes,
// tables, emphasis, links, rules. An unclosed fence (a reply still streaming) renders as code.

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

function inline(raw) {
  const kept = [];
  const keep = (html) => `\u0000${kept.push(html) - 1}\u0000`;
  let html = escapeHtml(raw)
    .replace(/(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/g, (_, __, code) => keep(`<code>${code.trim() || code}</code>`))
    .replace(/\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)/g,
      (_, text, url) => keep(`<a href="${url}" target="_blank" rel="noopener noreferrer">${text}</a>`))
    .replace(/(^|[\s(])(https?:\/\/[^\s<)]+[^\s<).,;:!?])/g,
      (_, lead, url) => lead + keep(`<a href="${url}" target="_blank" rel="noopener noreferrer">${url}</a>`));
  html = html
    .replace(/\*\*(?=\S)([^*]*?\S)\*\*/g, "<strong>$1</strong>")
    .replace(/__(?=\S)([^_]*?\S)__(?!\w)/g, "<strong>$1</strong>")
    .replace(/(^|[^*\w])\*(?=\S)([^*]*?\S)\*(?![*\w])/g, "$1<em>$2</em>")
    .replace(/(^|[^_\w])_(?=\S)([^_]*?\S)_(?![_\w])/g, "$1<em>$2</em>")
    .replace(/~~(?=\S)([^~]*?\S)~~/g, "<del>$1</del>");
  return html.replace(/\u0000(\d+)\u0000/g, (_, i) => kept[Number(i)]);
}

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const TABLE_RULE = /^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$/;

function cells(line) {
  return line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim());
}

function codeBlock(lang, lines) {
  const label = lang ? `<span>${escapeHtml(lang)}</span>` : "<span>code</span>";
  return `<div class="code"><div class="code-head">${label}<button type="button" class="copy-code ghost">Copy</button></div>`
    + `<pre><code>${escapeHtml(lines.join("\n"))}</code></pre></div>`;
}

function list(lines, start) {
  const ordered = /\d/.test(lines[start].match(ITEM)[2]);
  const items = [];
  let i = start;
  while (i < lines.length) {
    const match = lines[i].match(ITEM);
    const top = match && match[1].length < 2;
    if (top && /\d/.test(match[2]) === ordered) {
      items.push([match[3]]);
    } else if (!top && lines[i].trim() && /^\s{2,}/.test(lines[i]) && items.length) {
      items[items.length - 1].push(lines[i]); // nested item or continuation
    } else break;
    i++;
  }
  const first = ordered ? parseInt(lines[start].match(ITEM)[2], 10) : 1;
  const body = items.map(([head, ...rest]) => {
    const nested = rest.length ? render(rest.map((l) => l.replace(/^\s{2,4}/, "")).join("\n")) : "";
    return `<li>${inline(head)}${nested}</li>`;
  }).join("");
  const tag = ordered ? "ol" : "ul";
  return [`<${tag}${ordered && first !== 1 ? ` start="${first}"` : ""}>${body}</${tag}>`, i];
}

/** Markdown text -> safe HTML. */
export function render(text) {
  const lines = String(text).replace(/\u0000/g, "").replace(/\r\n?/g, "\n").split("\n");
  const out = [];
  let paragraph = [];
  const flush = () => {
    if (paragraph.length) out.push(`<p>${paragraph.map(inline).join("<br>")}</p>`);
    paragraph = [];
  };
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(FENCE);
    if (fence) {
      flush();
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i++;
      out.push(codeBlock(fence[2], body));
      continue;
    }
    if (!line.trim()) { flush(); i++; continue; }
    const heading = line.match(HEADING);
    if (heading) { flush(); out.push(`<h${heading[1].length}>${inline(heading[2])}</h${heading[1].length}>`); i++; continue; }
    if (RULE.test(line)) { flush(); out.push("<hr>"); i++; continue; }
    if (QUOTE.test(line)) {
      flush();
      const quoted = [];
      while (i < lines.length && QUOTE.test(lines[i])) quoted.push(lines[i++].match(QUOTE)[1]);
      out.push(`<blockquote>${render(quoted.join("\n"))}</blockquote>`);
      continue;
    }
    if (ITEM.test(line) && !paragraph.length) {
      const [html, next] = list(lines, i);
      out.push(html);
      i = next;
      continue;
    }
    if (line.includes("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1]) && lines[i + 1].includes("-")) {
      flush();
      const head = cells(line);
      const rows = [];
      i += 2;
      while (i < lines.length && lines[i].includes("|") && lines[i].trim()) rows.push(cells(lines[i++]));
      out.push(`<div class="table"><table><thead><tr>${head.map((c) => `<th>${inline(c)}</th>`).join("")}</tr></thead>`
        + `<tbody>${rows.map((r) => `<tr>${r.map((c) => `<td>${inline(c)}</td>`).join("")}</tr>`).join("")}</tbody></table></div>`);
      continue;
    }
    paragraph.push(line);
    i++;
  }
  flush();
  return out.join("");
}
