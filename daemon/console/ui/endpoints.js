// The first screen: every endpoint with its state, workers by state (with
// reasons), queue, and p50/p90 delay and execution; live.

import { get, canChange, whyNot } from './api.js';
import { h, fill, num, secs, badge, msg, ago, liveError } from './dom.js';
import { endpointState, workerStates, stateHelp } from './model.js';
import { sparkline } from './chart.js';

export function render(root, ctx) {
  const status = h('div');
  const body = h('div', { class: 'panel' }, h('p', { class: 'empty' }, 'Loading endpoints…'));
  const cards = h('div', { class: 'cards' });
  root.append(
    h('div', { class: 'pagehead' }, h('h1', null, 'Endpoints'),
      h('span', { class: 'sub' }, 'state, workers, queue and latency of every endpoint; live'),
      h('div', { class: 'actions' },
        canChange() ? h('a', { href: '#/templates' }, h('button', { class: 'primary', type: 'button' }, '+ Deploy from a template'))
          : h('span', { class: 'muted small', title: whyNot('deploying') }, 'Deploying needs an admin key'))),
    cards, status, body);

  // Each endpoint's requests over the last hour, refreshed every 10 s (the
  // history's resolution) and drawn with the 2 s figures.
  const hist = new Map();
  let last = null;
  ctx.poll(async () => {
    const { endpoints = [] } = await get('/v1/endpoints', { signal: ctx.signal });
    await Promise.all(endpoints.map(async (e) => {
      try { hist.set(e.id, (await get(`/v1/endpoints/${encodeURIComponent(e.id)}/history`, { signal: ctx.signal })).points || []); } catch { hist.delete(e.id); }
    }));
    if (last) drawTable(body, ...last, hist);
  }, 10000);

  ctx.poll(async () => {
    const [{ endpoints = [] }, { workers = [] }] = await Promise.all([
      get('/v1/endpoints', { signal: ctx.signal }), get('/v1/workers', { signal: ctx.signal })]);
    const stats = await Promise.all(endpoints.map((e) =>
      get(`/v1/endpoints/${encodeURIComponent(e.id)}/stats`, { signal: ctx.signal }).catch(() => null)));
    drawCards(cards, endpoints, workers, stats);
    last = [endpoints, workers, stats];
    drawTable(body, endpoints, workers, stats, hist);
  }, 2000, (e) => fill(status, liveError(e)));
}

function drawCards(el, endpoints, workers, stats) {
  let queued = 0, inProgress = 0, done = 0, failed = 0;
  for (const st of stats) {
    if (!st) continue;
    queued += num(st.inQueue); inProgress += num(st.inProgress);
    done += num(st.finished && st.finished.COMPLETED);
    failed += num(st.finished && st.finished.FAILED) + num(st.finished && st.finished.TIMED_OUT);
  }
  const by = (s) => workers.filter((w) => w.state === s).length;
  // A figure that needs attention is drawn in red.
  const card = (k, v, sub, bad) => h('div', { class: `card${bad ? ' alert' : ''}` }, h('div', { class: 'k' }, k), h('div', { class: 'v' }, v, sub ? h('small', null, ` ${sub}`) : null));
  fill(el,
    card('Endpoints', endpoints.length),
    card('Workers', workers.length, `${by('running')} running · ${by('idle')} idle`),
    card('Unhealthy workers', by('unhealthy'), by('unhealthy') ? 'see their reasons below' : '', by('unhealthy') > 0),
    card('Jobs queued', queued),
    card('Jobs in progress', inProgress),
    card('Jobs completed', done),
    card('Jobs failed', failed, 'timed out included', failed > 0));
}

function workerCell(ep, st, workers) {
  const counts = (st && st.workers) || {};
  const chips = workerStates.filter((s) => num(counts[s]) > 0)
    .map((s) => h('span', { class: `badge ${s}`, title: stateHelp[s] }, `${num(counts[s])} ${s}`));
  // Workers that fail the same way say so once: "3 workers: exited with code 127 ...".
  const byReason = new Map();
  for (const w of workers) {
    if (w.endpointId !== ep.id || !w.reason) continue;
    const g = byReason.get(w.reason) || { ids: [], bad: false };
    g.ids.push(w.id);
    g.bad = g.bad || w.state === 'unhealthy';
    byReason.set(w.reason, g);
  }
  const reasons = [...byReason].slice(0, 3).map(([reason, g]) => h('div', { class: `reason ${g.bad ? '' : 'info'}`, title: g.ids.join(', ') },
    g.ids.length > 1 ? `${g.ids.length} workers: ${reason}` : `${g.ids[0]}: ${reason}`));
  return [chips.length ? h('div', { class: 'chips' }, chips) : h('span', { class: 'muted' }, 'none'), reasons];
}

function requests(points, from, to) {
  const total = points.reduce((a, p) => a + num(p.submitted), 0);
  return h('div', { class: 'sparkcell' }, sparkline(points, 'submitted', from, to, `${total} requests in the last hour`),
    h('span', { class: 'small muted' }, `${total}`));
}

function drawTable(el, endpoints, workers, stats, hist) {
  const to = Math.floor(Date.now() / 1000), from = to - 3600;
  if (!endpoints.length) {
    fill(el, h('p', { class: 'empty' }, 'No endpoints yet. ',
      canChange() ? h('a', { href: '#/templates' }, 'Deploy one from a template') : 'An admin can deploy one from a template',
      ', or create one with ', h('code', null, 'ember endpoint create'), '.'));
    return;
  }
  const rows = endpoints.map((ep, i) => {
    const st = stats[i];
    const s = endpointState(st);
    return h('tr', { dataset: { endpoint: ep.id, name: ep.name } },
      h('td', null, h('a', { href: `#/endpoints/${encodeURIComponent(ep.id)}`, class: 'epname nowrap' }, h('b', null, ep.name)),
        h('div', { class: 'idcell' }, ep.id)),
      h('td', null, h('span', { class: `badge ${s.cls || s.state}`, title: s.why }, s.state)),
      h('td', null, workerCell(ep, st, workers)),
      h('td', null, hist.has(ep.id) ? requests(hist.get(ep.id), from, to) : h('span', { class: 'muted small' }, '–')),
      h('td', { class: 'num' }, st ? num(st.inQueue) : '–', h('div', { class: 'muted small' }, st ? `${num(st.inProgress)} running` : '')),
      h('td', { class: 'num' }, st ? secs(st.delay.p50Seconds, st.delay.count) : '–', h('div', { class: 'muted small' }, st ? `p90 ${secs(st.delay.p90Seconds, st.delay.count)}` : '')),
      h('td', { class: 'num' }, st ? secs(st.execution.p50Seconds, st.execution.count) : '–', h('div', { class: 'muted small' }, st ? `p90 ${secs(st.execution.p90Seconds, st.execution.count)}` : '')),
      h('td', { class: 'num' }, st ? num(st.finished && st.finished.COMPLETED) : '–',
        h('div', { class: 'muted small' }, st ? `${num(st.finished && st.finished.FAILED) + num(st.finished && st.finished.TIMED_OUT)} failed` : '')),
      h('td', null, h('div', { class: 'small' }, ep.template ? `${ep.template} v${ep.templateVersion}` : h('span', { class: 'muted' }, 'no template')),
        h('div', { class: 'idcell clip', title: ep.image || (ep.command || []).join(' ') }, ep.image || (ep.command || []).join(' '))),
      h('td', { class: 'small nowrap', title: `changed ${ago(ep.updatedAt)}` }, `${num(ep.workersMin)}–${num(ep.workersMax)} workers`,
        h('div', { class: 'muted' }, `${num(ep.gpuCount) ? `${num(ep.gpuCount)} GPU` : 'CPU'} · idle ${num(ep.idleTimeout)} s`)));
  });
  fill(el, h('div', { class: 'tablewrap' }, h('table', { id: 'endpoints-table' },
    h('thead', null, h('tr', null, h('th', null, 'Endpoint'), h('th', null, 'State'), h('th', null, 'Workers'),
      h('th', { title: 'jobs submitted per 10 s over the last hour' }, 'Requests, 1 h'),
      h('th', { class: 'num', title: 'jobs waiting in the queue' }, 'Queue'),
      h('th', { class: 'num', title: 'time in queue before a worker took the job (last 1024 jobs)' }, 'Delay p50'),
      h('th', { class: 'num', title: 'time a worker ran the job (last 1024 jobs)' }, 'Exec p50'),
      h('th', { class: 'num' }, 'Completed'), h('th', null, 'Template / image'), h('th', null, 'Scaling'))),
    h('tbody', null, rows))),
  h('p', { class: 'muted small', style: 'margin:6px 0 0' }, 'Delay and execution are p50 (p90 below) over each endpoint\'s last 1024 jobs. Hover a state for what it means.'));
}
