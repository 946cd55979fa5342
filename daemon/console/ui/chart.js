// Line charts as hand-written inline SVG: the last hour of an endpoint's
// history (GET /v1/endpoints/{id}/history, 10 s buckets).

import { h, svg } from './dom.js';

const W = 300, H = 110, L = 36, R = 6, T = 8, B = 16;

/** ago labels a point of the time axis, s seconds before now. */
function ago(s) {
  return s >= 120 ? `−${+(s / 60).toFixed(s >= 300 ? 0 : 1)} min` : `−${Math.round(s)} s`;
}

/** niceMax rounds a chart's top up to 1, 2 or 5 times a power of ten. */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

/**
 * lineChart draws series ([{name, color, points: [[unixSeconds, value|undefined]]}])
 * over [from, to] (unix seconds). A missing value breaks the line; a lone
 * point is drawn as a dot. fmt formats the y axis and the latest value;
 * summary, when given, replaces the latest value in the title line.
 */
export function lineChart({ title, series, from, to, fmt = String, note, summary }) {
  let max = 0, count = 0;
  for (const s of series) for (const [, v] of s.points) if (v != null) { max = Math.max(max, v); count++; }
  const top = niceMax(max);
  const x = (t) => L + ((t - from) / (to - from)) * (W - L - R);
  const y = (v) => T + (1 - v / top) * (H - T - B);
  const parts = [
    svg('line', { class: 'grid', x1: L, x2: W - R, y1: y(top / 2), y2: y(top / 2) }),
    svg('line', { class: 'grid', x1: L, x2: W - R, y1: y(top), y2: y(top) }),
    svg('line', { class: 'axis', x1: L, x2: W - R, y1: y(0), y2: y(0) }),
    count ? svg('text', { x: L - 4, y: y(top) + 3, 'text-anchor': 'end' }, fmt(top)) : null,
    count ? svg('text', { x: L - 4, y: y(top / 2) + 3, 'text-anchor': 'end' }, fmt(top / 2)) : null,
    count ? null : svg('text', { x: (L + W - R) / 2, y: y(top / 2) + 3, 'text-anchor': 'middle' }, 'no samples in this window'),
    svg('text', { x: L - 4, y: y(0) + 3, 'text-anchor': 'end' }, '0'),
    svg('text', { x: L, y: H - 3 }, ago(to - from)),
    svg('text', { x: (L + W - R) / 2, y: H - 3, 'text-anchor': 'middle' }, ago((to - from) / 2)),
    svg('text', { x: W - R, y: H - 3, 'text-anchor': 'end' }, 'now'),
  ];
  for (const s of series) {
    let d = '', run = 0;
    const dots = [];
    const pts = s.points.filter(([t]) => t >= from && t <= to);
    pts.forEach(([t, v], i) => {
      if (v == null) { run = 0; return; }
      const px = x(t).toFixed(1), py = y(v).toFixed(1);
      d += `${run === 0 ? 'M' : 'L'}${px} ${py} `;
      run++;
      const next = pts[i + 1];
      if (run === 1 && (!next || next[1] == null)) dots.push(svg('circle', { cx: px, cy: py, r: 2, fill: s.color }));
    });
    if (d) parts.push(svg('path', { class: 'series', d: d.trim(), stroke: s.color, 'data-series': s.name }));
    parts.push(...dots);
  }
  const latest = series.map((s) => {
    const last = [...s.points].reverse().find(([, v]) => v != null);
    return last ? `${s.name} ${fmt(last[1])}` : null;
  }).filter(Boolean)[0];
  return h('div', { class: 'chart', dataset: { points: String(count) } },
    h('h3', null, title, h('span', { class: 'last' }, summary || (latest ? `last: ${latest}` : 'no data yet'))),
    svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title }, parts),
    h('div', { class: 'legend' }, series.map((s) => h('span', null, h('i', { style: `background:${s.color}` }), s.name)), note ? h('span', null, note) : null));
}

/**
 * sparkline is a small line of one history field (an endpoint's requests
 * per 10 s) for the overview's table; missing values count as 0.
 */
export function sparkline(points, key, from, to, title) {
  const w = 120, ht = 22;
  let max = 0;
  for (const p of points) max = Math.max(max, Number(p[key] || 0));
  const top = max || 1;
  let d = '';
  for (const p of points) {
    const t = Number(p.t);
    if (t < from || t > to) continue;
    const x = ((t - from) / (to - from)) * w, y = ht - 2 - (Number(p[key] || 0) / top) * (ht - 4);
    d += `${d ? 'L' : 'M'}${x.toFixed(1)} ${y.toFixed(1)} `;
  }
  return svg('svg', { class: 'spark', viewBox: `0 0 ${w} ${ht}`, width: w, height: ht, role: 'img', 'aria-label': title },
    svg('title', null, title),
    svg('line', { x1: 0, x2: w, y1: ht - 2, y2: ht - 2, stroke: '#dee2e6' }),
    d ? svg('path', { d: d.trim(), fill: 'none', stroke: '#1c7ed6', 'stroke-width': 1.3 }) : null);
}
