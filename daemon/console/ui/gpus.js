// GPUs: model, memory, utilisation and temperature (live, from NVML), the
// worker and endpoint holding each one, and health.

import { get } from './api.js';
import { h, fill, bytes, num, msg, liveError } from './dom.js';

export function render(root, ctx) {
  const status = h('div');
  const list = h('div', { class: 'panel', id: 'gpus' }, h('p', { class: 'empty' }, 'Loading GPUs…'));
  root.append(h('div', { class: 'pagehead' }, h('h1', null, 'GPUs'), h('span', { class: 'sub' }, 'live every 2 s; a GPU is held by one worker at a time')), status, list);
  ctx.poll(async () => {
    const [{ gpus = [] }, { endpoints = [] }] = await Promise.all([get('/v1/gpus', { signal: ctx.signal }), get('/v1/endpoints', { signal: ctx.signal })]);
    draw(list, gpus, endpoints);
  }, 2000, (e) => fill(status, liveError(e)));
}

function meter(pct, text) {
  const cls = pct >= 90 ? 'hot' : pct >= 70 ? 'mid' : '';
  return h('div', null, h('div', { class: `bar ${cls}` }, h('span', { style: `width:${Math.min(100, Math.max(0, pct)).toFixed(1)}%` })), h('div', { class: 'small' }, text));
}

function draw(el, gpus, endpoints) {
  if (!gpus.length) {
    fill(el, h('p', { class: 'empty' }, 'No GPUs in this machine\'s inventory (none found by NVML, or all left out at start: MIG-enabled or unhealthy). Endpoints with gpuCount 0 run on the CPU.'));
    return;
  }
  const names = new Map(endpoints.map((e) => [e.id, e.name]));
  fill(el, h('table', { id: 'gpus-table' },
    h('thead', null, h('tr', null, h('th', null, '#'), h('th', null, 'Model'), h('th', null, 'Health'), h('th', null, 'Memory used / total'), h('th', null, 'Utilisation'), h('th', { class: 'num' }, 'Temp'), h('th', null, 'Held by'))),
    h('tbody', null, gpus.map((g) => {
      const total = num(g.memoryTotalBytes), used = num(g.memoryUsedBytes);
      const hasStats = g.utilizationPercent != null;
      return h('tr', { dataset: { gpu: g.uuid } },
        h('td', { class: 'num' }, g.index),
        h('td', null, h('b', null, g.name), h('div', { class: 'idcell' }, g.uuid)),
        h('td', null, g.unhealthy ? [h('span', { class: 'badge unhealthy' }, 'unhealthy'), h('div', { class: 'reason' }, g.unhealthy)] : h('span', { class: 'badge healthy' }, 'healthy')),
        h('td', null, hasStats ? meter(total ? (used / total) * 100 : 0, `${bytes(used)} / ${bytes(total)}`) : h('span', { class: 'muted small' }, `${bytes(total)} total`, g.statsError ? h('div', { class: 'reason' }, g.statsError) : ' · no live readings')),
        h('td', null, hasStats ? meter(num(g.utilizationPercent), `${num(g.utilizationPercent)}%`) : '–'),
        h('td', { class: 'num' }, g.temperatureC != null ? `${num(g.temperatureC)} °C` : '–'),
        h('td', null, g.worker ? [h('span', { class: 'mono' }, g.worker), h('div', { class: 'small' }, h('a', { href: `#/endpoints/${encodeURIComponent(g.endpointId)}` }, names.get(g.endpointId) || g.endpointId))] : h('span', { class: 'muted' }, 'free')));
    }))));
}
