// Small DOM and formatting helpers (no framework).

/** h builds an element: h('a', {href, class, onclick}, children...). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value' || k === 'checked' || k === 'disabled' || k === 'selected' || k === 'hidden') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  add(el, children);
  return el;
}

function add(el, kids) {
  for (const c of kids) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) add(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** svg builds an SVG element. */
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v != null) el.setAttribute(k, String(v));
  for (const c of children.flat()) if (c != null) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** fill replaces el's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  add(el, children);
  return el;
}

export const num = (v) => (v == null || v === '' ? 0 : Number(v));

/** ms formats a duration in milliseconds for a table cell. */
export function ms(v) {
  if (v == null || Number.isNaN(Number(v))) return '–';
  const n = Number(v);
  if (n < 1) return n === 0 ? '0 ms' : '<1 ms';
  if (n < 1000) return `${Math.round(n)} ms`;
  if (n < 60000) return `${(n / 1000).toFixed(n < 10000 ? 2 : 1)} s`;
  const m = Math.floor(n / 60000), s = Math.round((n % 60000) / 1000);
  return `${m}m ${s}s`;
}

/** secs formats seconds (the stats' p50Seconds...) as ms() does. */
export const secs = (v, count) => (num(count) === 0 ? '–' : ms(num(v) * 1000));

export function bytes(v) {
  const n = num(v);
  if (n < 1024) return `${n} B`;
  const u = ['KiB', 'MiB', 'GiB', 'TiB'];
  let x = n / 1024, i = 0;
  while (x >= 1024 && i < u.length - 1) { x /= 1024; i++; }
  return `${x.toFixed(x < 10 ? 1 : 0)} ${u[i]}`;
}

/** ago formats a time (ISO string, Date or unix ms) relative to now. */
export function ago(t) {
  if (!t) return '–';
  const d = t instanceof Date ? t : new Date(typeof t === 'number' ? t : String(t));
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  if (Number.isNaN(s)) return '–';
  if (s < 0) return 'now';
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export function when(t) {
  if (!t) return '–';
  const d = new Date(typeof t === 'number' ? t : String(t));
  return Number.isNaN(d.getTime()) ? '–' : d.toLocaleString();
}

export function badge(text, cls) { return h('span', { class: `badge ${cls || text}` }, text); }

/** msg is a message box: kind error, ok or info. */
export function msg(kind, text) { return h('p', { class: `msg ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text); }

export function pretty(v) {
  if (v === undefined) return '';
  return typeof v === 'string' ? v : JSON.stringify(v, null, 2);
}

export function oneLine(v) {
  if (v === undefined || v === null) return '';
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/** readonlyNote is the visible reason a control is disabled. */
export function readonlyNote(text) { return h('p', { class: 'readonly-note' }, text); }

/**
 * liveError is a failed live update's message (null once it works again):
 * a refusal (403) as emberd words it, anything else as retried.
 */
export function liveError(e) {
  if (!e) return null;
  return msg('error', e.status === 403 ? e.message : `Live update failed (retrying with backoff): ${e.message}`);
}
