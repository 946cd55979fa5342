// One endpoint: figures, charts of the last hour, a send-request form,
// workers with live logs, recent jobs, and its settings.

import { api, get, canChange, canInvoke, whyNot, ApiError, lost } from './api.js';
import { h, fill, num, secs, ms, badge, msg, ago, when, pretty, oneLine, bytes, readonlyNote, liveError } from './dom.js';
import { endpointState, workerStates, stateHelp, terminal } from './model.js';
import { lineChart } from './chart.js';

export function render(root, ctx, id) {
  const enc = encodeURIComponent(id);
  const head = h('div', { class: 'pagehead' }, h('h1', null, 'Endpoint ', h('span', { class: 'mono' }, id)));
  const status = h('div');
  const cards = h('div', { class: 'cards' });
  const charts = h('div', { class: 'charts', id: 'charts' }, h('p', { class: 'empty' }, 'Loading history…'));
  const workersBox = h('div', { id: 'workers' }, h('p', { class: 'empty' }, 'Loading workers…'));
  const gone = h('div', { id: 'workers-gone', class: 'small muted' });
  const logBox = h('div', { id: 'logbox', hidden: true });
  const jobsBox = h('div', { id: 'jobs' }, h('p', { class: 'empty' }, 'Loading recent jobs…'));
  const settingsBox = h('div', { id: 'settings' });
  const sendBox = h('div', { id: 'send' });
  // Every worker's log, merged: what a worker that already left wrote too.
  const allLogs = h('button', { class: 'small', type: 'button', id: 'all-logs', title: 'GET /v1/endpoints/' + id + '/logs?follow=1' }, 'All workers\' logs');

  root.append(head, status, cards,
    h('section', { class: 'panel' }, h('h2', null, 'Last hour', h('span', { class: 'muted' }, '10 s buckets, live; a younger endpoint\'s charts start when it was first seen')), charts),
    h('div', { class: 'grid2' },
      h('section', { class: 'panel' }, h('h2', null, 'Send a request', h('span', { class: 'muted' }, 'POST /v2/' + id + '/run or /runsync')), sendBox),
      h('section', { class: 'panel' }, h('h2', null, 'Workers', h('span', { class: 'muted' }, 'live; click Logs to follow one'),
        h('span', { style: 'margin-left:auto' }, allLogs)), workersBox, gone, logBox)),
    h('div', { style: 'height:12px' }),
    h('section', { class: 'panel' }, h('h2', null, 'Recent jobs', h('span', { class: 'muted' }, 'newest first; click a row for its input and output')), jobsBox),
    h('section', { class: 'panel' }, h('h2', null, 'Settings', h('span', { class: 'muted' }, 'PATCH /v1/endpoints/' + id + '; emberd checks every value')), settingsBox));

  let ep = null;
  const seen = new Map(); // worker id -> last info, to say which left
  const left = [];
  const open = new Set(); // expanded job rows
  const logs = { id: '', abort: null };
  ctx.signal.addEventListener('abort', () => logs.abort && logs.abort.abort());

  drawSend(sendBox, id, ctx);
  allLogs.addEventListener('click', () => followLog('*', `/v1/endpoints/${enc}/logs?follow=1&since=1h`, 'all workers (last hour)', logs, logBox, ctx));

  ctx.poll(async () => {
    const [e, st, { workers = [] }] = await Promise.all([
      get(`/v1/endpoints/${enc}`, { signal: ctx.signal }),
      get(`/v1/endpoints/${enc}/stats`, { signal: ctx.signal }),
      get(`/v1/workers?endpoint=${enc}`, { signal: ctx.signal })]);
    const first = !ep;
    ep = e;
    drawHead(head, e, st, ctx);
    drawCards(cards, st);
    const now = new Set(workers.map((w) => w.id));
    for (const [wid, w] of seen) if (!now.has(wid)) { left.unshift({ ...w, leftAt: Date.now() }); seen.delete(wid); }
    for (const w of workers) seen.set(w.id, w);
    left.splice(10);
    drawWorkers(workersBox, workers, e, logs, logBox, ctx);
    fill(gone, left.length ? ['Left: ', left.map((w, i) => [i ? ', ' : '', h('span', { class: 'mono', dataset: { goneWorker: w.id } }, w.id),
      ` (was ${w.state}, ${ago(w.leftAt)})`])] : null);
    if (first) drawSettings(settingsBox, e); // drawn once: a poll must not wipe edits
  }, 2000, (err) => {
    if (err && err.status === 404) { fill(status, msg('error', err.message)); return; }
    fill(status, liveError(err));
  });

  ctx.poll(async () => {
    const hist = await get(`/v1/endpoints/${enc}/history`, { signal: ctx.signal });
    drawCharts(charts, hist);
  }, 10000, (err) => {
    if (err) fill(charts, h('p', { class: 'empty' }, /^no such route|not allowed/.test(err.message) ? 'This emberd keeps no history (GET /v1/endpoints/{id}/history is not served).' : `History: ${err.message}`));
  });

  ctx.poll(async () => {
    const r = await get(`/v1/endpoints/${enc}/jobs?limit=50`, { signal: ctx.signal });
    drawJobs(jobsBox, r, open);
  }, 3000, (err) => { if (err) fill(jobsBox, h('p', { class: 'empty' }, /^no such route|not allowed/.test(err.message) ? 'This emberd keeps no recent jobs (GET /v1/endpoints/{id}/jobs is not served).' : `Recent jobs: ${err.message}`)); });
}

function drawHead(head, e, st, ctx) {
  const s = endpointState(st);
  const del = h('button', { class: 'danger', type: 'button', disabled: !canChange(), title: canChange() ? 'Delete this endpoint' : whyNot('deleting an endpoint') }, 'Delete endpoint');
  del.addEventListener('click', async () => {
    if (!confirm(`Delete endpoint ${e.name} (${e.id})? Its queued jobs fail and its workers stop.`)) return;
    try { await api('DELETE', `/v1/endpoints/${encodeURIComponent(e.id)}`); ctx.go('#/endpoints'); } catch (err) { alert(err.message); }
  });
  fill(head,
    h('a', { href: '#/endpoints', class: 'muted' }, '← Endpoints'),
    h('h1', null, e.name), h('span', { class: 'idcell' }, e.id),
    h('span', { class: `badge ${s.cls || s.state}`, title: s.why, id: 'ep-state' }, s.state),
    h('span', { class: 'sub' }, e.image || (e.command || []).join(' '), e.template ? ` · template ${e.template} v${e.templateVersion}` : '', ` · generation ${e.generation}`),
    h('div', { class: 'actions' }, del));
}

function drawCards(el, st) {
  const card = (k, v, sub, title) => h('div', { class: 'card', title }, h('div', { class: 'k' }, k), h('div', { class: 'v' }, v, sub ? h('small', null, ` ${sub}`) : null));
  const f = st.finished || {};
  fill(el,
    card('Queue', num(st.inQueue), `${num(st.inProgress)} in progress`),
    card('Completed', num(f.COMPLETED), `${num(f.FAILED)} failed · ${num(f.TIMED_OUT)} timed out · ${num(f.CANCELLED)} cancelled`),
    card('Delay p50', secs(st.delay.p50Seconds, st.delay.count), `p90 ${secs(st.delay.p90Seconds, st.delay.count)}`, 'time in queue before a worker took the job'),
    card('Execution p50', secs(st.execution.p50Seconds, st.execution.count), `p90 ${secs(st.execution.p90Seconds, st.execution.count)}`),
    card('Cold start p50', secs(st.coldStart.p50Seconds, st.coldStart.count), `${num(st.coldStart.count)} starts`, 'container start to the handler\'s first job-take'),
    card('Workers started', num(st.workersStarted), `${num(st.workersRevived)} revived · ${num(st.retried)} jobs retried`));
}

function drawCharts(el, hist) {
  const pts = (hist && hist.points) || [];
  // The last hour, or less for an endpoint seen for less than that (the
  // history starts when it was first seen): its data would be a sliver.
  const to = Math.floor(Date.now() / 1000);
  const first = pts.length ? num(pts[0].t) : to;
  const from = Math.max(to - num(hist && hist.windowSeconds || 3600), Math.min(first, to - 300));
  const s = (name, color, key) => ({ name, color, points: pts.map((p) => [num(p.t), p[key] == null ? undefined : num(p[key])]) });
  const msf = (v) => ms(v);
  const cnt = (v) => (v >= 10 ? String(Math.round(v)) : String(Math.round(v * 10) / 10));
  const sum = (key) => pts.filter((p) => num(p.t) >= from).reduce((a, p) => a + num(p[key]), 0);
  const colds = sum('coldStarts');
  fill(el,
    lineChart({ title: 'Requests per 10 s', from, to, fmt: cnt, summary: `${sum('submitted')} in · ${sum('completed')} done · ${sum('failed')} failed`, series: [s('submitted', '#1c7ed6', 'submitted'), s('completed', '#2f9e44', 'completed'), s('failed', '#e03131', 'failed')] }),
    lineChart({ title: 'Delay (queue wait)', from, to, fmt: msf, series: [s('p50', '#f08c00', 'delayP50Ms'), s('p90', '#c2255c', 'delayP90Ms')] }),
    lineChart({ title: 'Execution', from, to, fmt: msf, series: [s('p50', '#1c7ed6', 'executionP50Ms'), s('p90', '#5f3dc4', 'executionP90Ms')] }),
    lineChart({ title: 'Cold start', from, to, fmt: msf, series: [s('p50', '#0c8599', 'coldStartP50Ms')], note: `${colds} cold starts this hour` }),
    lineChart({ title: 'Queue depth and workers', from, to, fmt: cnt, series: [s('queued', '#f08c00', 'queueDepth'), s('workers', '#2f9e44', 'workers')] }));
}

function drawWorkers(el, workers, e, logs, logBox, ctx) {
  if (!workers.length) {
    fill(el, h('p', { class: 'empty', id: 'no-workers' }, `No workers. The next job starts one (cold start); ${num(e.workersMin)} kept warm (workersMin), an idle worker leaves after ${num(e.idleTimeout)} s (idleTimeout).`));
    return;
  }
  const order = (w) => workerStates.indexOf(w.state);
  workers.sort((a, b) => order(a) - order(b) || String(a.id).localeCompare(b.id));
  fill(el, h('table', null,
    h('thead', null, h('tr', null, h('th', null, 'Worker'), h('th', null, 'State'), h('th', null, 'Started'), h('th', null, 'Jobs'), h('th', null, 'GPUs'), h('th', null, ''))),
    h('tbody', null, workers.map((w) => {
      const stop = h('button', { class: 'small', type: 'button', disabled: !canChange(), title: canChange() ? 'Drain and stop this worker' : whyNot('stopping a worker') }, 'Stop');
      stop.addEventListener('click', async () => {
        try { await api('POST', `/v1/workers/${encodeURIComponent(w.id)}:stop`); } catch (err) { alert(err.message); }
      });
      const logBtn = h('button', { class: 'small', type: 'button' }, logs.id === w.id ? 'Logs ●' : 'Logs');
      logBtn.addEventListener('click', () => followLog(w.id, `/v1/workers/${encodeURIComponent(w.id)}/logs?follow=1&tail=300`, w.id, logs, logBox, ctx));
      return h('tr', { dataset: { worker: w.id, state: w.state }, class: logs.id === w.id ? 'sel' : '' },
        h('td', null, h('span', { class: 'mono nowrap' }, w.id), w.outdated ? h('div', { class: 'reason info' }, 'outdated generation: finishes its jobs, then stops') : null),
        h('td', null, h('span', { class: `badge ${w.state}`, title: stateHelp[w.state] || '' }, w.state),
          w.reason ? h('div', { class: `reason ${w.state === 'unhealthy' ? '' : 'info'}` }, w.reason) : null),
        h('td', { class: 'small' }, ago(w.startedAt)),
        h('td', { class: 'small mono' }, (w.jobs || []).length ? w.jobs.join(', ') : h('span', { class: 'muted' }, '—')),
        h('td', { class: 'small' }, (w.gpus || []).length ? w.gpus.map((g) => g.slice(0, 12)).join(', ') : h('span', { class: 'muted' }, w.parkedBytes ? `parked ${bytes(w.parkedBytes)}` : '—')),
        h('td', { class: 'num' }, logBtn, ' ', ['unhealthy', 'draining', 'stopped'].includes(w.state) ? null : stop));
    }))));
}

/** followLog streams a followed log (a worker's, or the endpoint's merged) into the log box. */
async function followLog(id, url, title, logs, box, ctx) {
  if (logs.abort) logs.abort.abort();
  if (logs.id === id) { logs.id = ''; box.hidden = true; return; }
  logs.id = id;
  const abort = new AbortController();
  logs.abort = abort;
  const pre = h('pre', { class: 'log', id: 'log' });
  const state = h('span', { class: 'muted small' }, 'connecting…');
  const close = h('button', { class: 'small', type: 'button' }, 'Close');
  close.addEventListener('click', () => { abort.abort(); logs.id = ''; box.hidden = true; });
  box.hidden = false;
  fill(box, h('div', { class: 'formrow', style: 'margin:10px 0 4px' }, h('b', null, 'Log of ', h('span', { class: 'mono' }, title)), state, h('span', { style: 'margin-left:auto' }, close)), pre);
  const MAX = 256 * 1024;
  try {
    const res = await fetch(url, { signal: abort.signal, credentials: 'same-origin' });
    if (!res.ok) {
      const text = await res.text();
      let body = null; try { body = JSON.parse(text); } catch { /* plain text */ }
      const err = new ApiError(res.status, body, text);
      if (res.status === 401) lost(err);
      throw err;
    }
    state.textContent = 'following (live)';
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
      let t = pre.textContent + dec.decode(value, { stream: true });
      if (t.length > MAX) t = t.slice(t.length - MAX);
      pre.textContent = t;
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    }
    state.textContent = id === '*' ? 'ended' : 'ended: the worker exited';
  } catch (err) {
    if (err.name === 'AbortError' || ctx.signal.aborted) return;
    state.textContent = `log: ${err.message}`;
  }
}

function drawJobs(el, r, open) {
  const jobs = (r && r.jobs) || [];
  const note = r && r.redacted ? h('p', { class: 'readonly-note' }, 'Input, output and errors are hidden: they are clients\' data, shown only to admin keys and invoke keys allowed on this endpoint.') : null;
  if (!jobs.length) { fill(el, note, h('p', { class: 'empty' }, 'No jobs yet. Send one with the form above.')); return; }
  const rows = [];
  for (const j of jobs) {
    const tr = h('tr', { dataset: { job: j.id, status: j.status }, style: 'cursor:pointer', class: open.has(j.id) ? 'sel' : '' },
      h('td', null, badge(j.status)),
      h('td', { class: 'mono small' }, j.id),
      h('td', { class: 'small', title: when(num(j.createdAt)) }, ago(num(j.createdAt))),
      h('td', { class: 'num' }, j.delayTime != null ? ms(j.delayTime) : '–'),
      h('td', { class: 'num' }, j.executionTime != null ? ms(j.executionTime) : '–'),
      h('td', { class: 'mono small nowrap' }, j.workerId || '—'),
      h('td', null, h('div', { class: 'preview' }, r.redacted ? '(hidden)' : oneLine(j.input))),
      h('td', null, h('div', { class: 'preview', style: j.error ? 'color:var(--bad)' : '' }, r.redacted ? '(hidden)' : j.error ? oneLine(j.error) : oneLine(j.output))));
    tr.addEventListener('click', () => { if (open.has(j.id)) open.delete(j.id); else open.add(j.id); drawJobs(el, r, open); });
    rows.push(tr);
    if (open.has(j.id)) {
      rows.push(h('tr', { class: 'sel' }, h('td', { colspan: 8 },
        h('div', { class: 'grid2' },
          h('div', null, h('h3', null, 'Input', j.inputTruncated ? h('span', { class: 'muted' }, ' (truncated)') : ''), h('pre', { class: 'json' }, r.redacted ? '(hidden)' : pretty(j.input))),
          h('div', null, h('h3', null, j.error ? 'Error' : 'Output', j.outputTruncated ? h('span', { class: 'muted' }, ' (truncated)') : ''), h('pre', { class: 'json' }, r.redacted ? '(hidden)' : pretty(j.error || j.output)))),
        h('dl', { class: 'kv', style: 'margin-top:6px' },
          h('dt', null, 'created'), h('dd', null, when(num(j.createdAt))),
          h('dt', null, 'started'), h('dd', null, when(num(j.startedAt))),
          h('dt', null, 'completed'), h('dd', null, when(num(j.completedAt)))))));
    }
  }
  fill(el, note, h('div', { class: 'tablewrap' }, h('table', { id: 'jobs-table' },
    h('thead', null, h('tr', null, h('th', null, 'Status'), h('th', null, 'Job'), h('th', null, 'Created'), h('th', { class: 'num' }, 'Delay'), h('th', { class: 'num' }, 'Execution'), h('th', null, 'Worker'), h('th', null, 'Input'), h('th', null, 'Output / error'))),
    h('tbody', null, rows))));
}

/* The send-request form: JSON input, run or runsync, live status and stream. */
function drawSend(el, id, ctx) {
  const enc = encodeURIComponent(id);
  const input = h('textarea', { id: 'send-input', rows: 5, spellcheck: 'false' }, '{"msg": "hello"}');
  const modeRun = h('input', { type: 'radio', name: 'send-mode', value: 'run', id: 'mode-run' });
  const modeSync = h('input', { type: 'radio', name: 'send-mode', value: 'runsync', id: 'mode-runsync', checked: true });
  const btn = h('button', { class: 'primary', type: 'submit', id: 'send-btn' }, 'Send');
  const cancel = h('button', { type: 'button', hidden: true }, 'Cancel job');
  const out = h('div', { id: 'send-result' });
  const allowed = canInvoke();
  for (const c of [input, modeRun, modeSync, btn]) c.disabled = !allowed;
  const form = h('form', null,
    allowed ? null : readonlyNote(whyNot('sending a request', 'invoke or admin')),
    h('label', { for: 'send-input' }, 'Input (JSON: becomes the job\'s "input")'), input,
    h('div', { class: 'formrow' },
      h('label', { class: 'check', title: 'answers at once with a job id; the status and stream are then followed' }, modeRun, 'run (async)'),
      h('label', { class: 'check', title: 'waits for the result' }, modeSync, 'runsync (wait)'),
      btn, cancel),
    out);
  let job = null;
  cancel.addEventListener('click', async () => {
    if (!job) return;
    try { await api('POST', `/v2/${enc}/cancel/${encodeURIComponent(job)}`); } catch (err) { out.append(msg('error', err.message)); }
  });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    let value;
    try { value = JSON.parse(input.value); } catch (err) {
      fill(out, msg('error', `Input is not JSON: ${err.message}`)); input.classList.add('invalid'); return;
    }
    input.classList.remove('invalid');
    const mode = modeRun.checked ? 'run' : 'runsync';
    const statusEl = h('span', { id: 'send-status' });
    const timing = h('span', { class: 'muted small' });
    const chunks = h('pre', { class: 'json', id: 'send-stream', hidden: true });
    const output = h('pre', { class: 'json', id: 'send-output', hidden: true });
    const jobEl = h('span', { class: 'mono small' });
    const err = h('div');
    fill(out, h('div', { class: 'formrow' }, 'Job ', jobEl, statusEl, timing), h('h3', { style: 'margin-top:8px' }, 'Stream'), chunks, h('h3', { style: 'margin-top:8px' }, 'Result'), output, err);
    chunks.previousSibling.hidden = true;
    output.previousSibling.hidden = true;
    btn.disabled = true;
    let done = false;
    const show = (s) => {
      if (!s) return;
      if (s.id) { job = s.id; jobEl.textContent = s.id; }
      fill(statusEl, badge(s.status || '?'));
      statusEl.dataset.status = s.status || '';
      if (s.delayTime != null || s.executionTime != null) timing.textContent = `delay ${ms(s.delayTime)} · execution ${ms(s.executionTime)}${s.workerId ? ` · ${s.workerId}` : ''}`;
      if (terminal.has(s.status)) {
        done = true;
        cancel.hidden = true;
        const v = s.error !== undefined ? s.error : s.output;
        if (v !== undefined) { output.hidden = false; output.previousSibling.hidden = false; output.textContent = pretty(v); output.style.color = s.error ? 'var(--bad)' : ''; }
      } else cancel.hidden = false;
    };
    try {
      fill(statusEl, badge('sending', 'info'));
      const first = await api('POST', `/v2/${enc}/${mode}`, { input: value }, { signal: ctx.signal });
      show(first);
      if (!done && job) {
        const sleep = (t) => new Promise((r) => setTimeout(r, t));
        const statusLoop = (async () => {
          while (!done && !ctx.signal.aborted) {
            await sleep(700);
            show(await get(`/v2/${enc}/status/${encodeURIComponent(job)}`, { signal: ctx.signal }));
          }
        })();
        const streamLoop = (async () => {
          while (!done && !ctx.signal.aborted) {
            const s = await get(`/v2/${enc}/stream/${encodeURIComponent(job)}`, { signal: ctx.signal });
            const got = (s && s.stream) || [];
            // The stream's answer carries the status too: fresher than the last poll.
            if (s && s.status && !terminal.has(s.status) && !done) { fill(statusEl, badge(s.status)); statusEl.dataset.status = s.status; }
            if (got.length) {
              chunks.hidden = false; chunks.previousSibling.hidden = false;
              chunks.textContent += got.map((c) => oneLine(c.output)).join('\n') + '\n';
            }
            if (s && terminal.has(s.status)) break;
            if (!got.length) await sleep(300);
          }
        })();
        await Promise.all([statusLoop, streamLoop]);
      }
    } catch (e) {
      if (e.name !== 'AbortError') fill(err, msg('error', e.message));
    } finally {
      btn.disabled = !allowed;
    }
  });
  fill(el, form);
}

/* Settings: every field editable; emberd's own validation message is shown beside the form and the field. */
const fields = [
  ['workersMin', 'Workers min', 'int', 'kept warm even when idle'],
  ['workersMax', 'Workers max', 'int', 'upper bound of the autoscaler'],
  ['idleTimeout', 'Idle timeout (s)', 'int', 'an idle worker leaves after this'],
  ['executionTimeoutMs', 'Execution timeout (ms)', 'int', 'a job running longer fails'],
  ['scalerType', 'Scaler', ['QUEUE_DELAY', 'REQUEST_COUNT'], 'what adds workers'],
  ['scalerValue', 'Scaler value', 'int', 's of delay, or jobs per worker'],
  ['gpuCount', 'GPUs per worker', 'int', '0: CPU only'],
  ['gpuTypes', 'GPU types', 'list', 'comma-separated; empty: any'],
  ['gpuMemoryMb', 'GPU memory (MiB)', 'int', 'minimum per GPU; 0: any'],
  ['memoryMb', 'Memory (MiB)', 'int', 'container limit; 0: none'],
  ['cpus', 'CPUs', 'float', 'container limit; 0: none'],
  ['maxAttempts', 'Max attempts', 'int', '0: the daemon\'s default'],
  ['initTimeout', 'Init timeout (s)', 'int', 'worker start to first job-take'],
  ['flashboot', 'FlashBoot', 'bool', 'freeze idle workers instead of stopping them'],
  ['flashbootWindow', 'FlashBoot window (s)', 'int', 'how long a frozen worker is kept'],
  ['gpuPark', 'GPU park', ['never', 'idle', 'always'], 'move idle GPU state to host memory'],
  ['network', 'Network', ['host', 'none'], 'container network'],
  ['image', 'Image', 'text', 'from the image store', 'wide'],
  ['command', 'Command', 'json', 'JSON array; empty: the image\'s entrypoint', 'wide'],
  ['env', 'Environment', 'env', 'one NAME=value a line', 'wide'],
];

function valueOf(e, key) {
  const v = e[key];
  return v === undefined ? '' : v;
}

function drawSettings(el, e) {
  const allowed = canChange();
  const inputs = {};
  const grid = h('div', { class: 'form-grid' });
  for (const [key, label, type, help, wide] of fields) {
    let inp;
    const v = valueOf(e, key);
    if (Array.isArray(type)) {
      const opts = type.includes(v) || v === '' ? type : [...type, v];
      inp = h('select', null, opts.map((o) => h('option', { value: o, selected: o === v }, o)));
    } else if (type === 'bool') {
      inp = h('input', { type: 'checkbox', checked: !!v });
    } else if (type === 'env') {
      inp = h('textarea', { rows: 3, spellcheck: 'false' }, Object.entries(v || {}).map(([k, x]) => `${k}=${x}`).join('\n'));
    } else if (type === 'json') {
      inp = h('input', { type: 'text', value: (v || []).length ? JSON.stringify(v) : '', spellcheck: 'false' });
    } else if (type === 'list') {
      inp = h('input', { type: 'text', value: (v || []).join(', ') });
    } else {
      inp = h('input', { type: type === 'text' ? 'text' : 'number', value: String(v), step: type === 'float' ? 'any' : '1' });
    }
    inp.name = key;
    inp.id = `set-${key}`;
    inp.disabled = !allowed;
    inputs[key] = { inp, type, orig: JSON.stringify(read(inp, type)) };
    grid.append(h('div', { class: wide ? 'wide' : '', dataset: { field: key } },
      h('label', { for: inp.id }, label), inp, h('div', { class: 'field-help' }, help), h('div', { class: 'reason field-error' })));
  }
  const save = h('button', { class: 'primary', type: 'submit', disabled: !allowed, id: 'settings-save' }, 'Save changes');
  const out = h('div', { id: 'settings-msg' });
  const form = h('form', { id: 'settings-form' }, allowed ? null : readonlyNote(whyNot('changing settings')), grid,
    h('div', { class: 'formrow' }, save, h('span', { class: 'muted small' }, 'Only changed fields are sent. A change of what workers run (image, command, env, GPUs, limits) starts a new generation: old workers finish their jobs, then stop.')), out);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    fill(out);
    for (const d of grid.querySelectorAll('.field-error')) d.textContent = '';
    for (const { inp } of Object.values(inputs)) inp.classList.remove('invalid');
    const patch = {};
    try {
      for (const [key, f] of Object.entries(inputs)) {
        const v = read(f.inp, f.type, key);
        if (JSON.stringify(v) !== f.orig) patch[key] = v;
      }
    } catch (err) {
      fill(out, msg('error', err.message));
      return;
    }
    if (!Object.keys(patch).length) { fill(out, msg('info', 'Nothing changed.')); return; }
    save.disabled = true;
    try {
      const upd = await api('PATCH', `/v1/endpoints/${encodeURIComponent(e.id)}`, patch);
      for (const [key, f] of Object.entries(inputs)) {
        if (key in patch) f.orig = JSON.stringify(read(f.inp, f.type, key));
      }
      fill(out, msg('ok', `Saved ${Object.keys(patch).join(', ')} (generation ${upd.generation}).`));
    } catch (err) {
      const field = err.field || (err.message.match(/^([A-Za-z.]+):/) || [])[1] || '';
      const key = field.split('.')[0];
      if (inputs[key]) {
        inputs[key].inp.classList.add('invalid');
        grid.querySelector(`[data-field="${key}"] .field-error`).textContent = err.message;
      }
      fill(out, msg('error', `emberd refused the change (${err.status}): ${err.message}`));
    } finally {
      save.disabled = !allowed;
    }
  });
  fill(el, form);
}

function read(inp, type, key) {
  const s = inp.value;
  if (Array.isArray(type) || type === 'text') return s;
  if (type === 'bool') return inp.checked;
  if (type === 'int' || type === 'float') return s.trim() === '' ? 0 : Number(s);
  if (type === 'list') return s.split(',').map((x) => x.trim()).filter(Boolean);
  if (type === 'json') {
    if (!s.trim()) return [];
    let v;
    try { v = JSON.parse(s); } catch { throw new Error(`${key}: want a JSON array of strings, e.g. ["python", "-u", "handler.py"]`); }
    return v;
  }
  if (type === 'env') {
    const env = {};
    for (const line of s.split('\n')) {
      if (!line.trim()) continue;
      const i = line.indexOf('=');
      if (i <= 0) throw new Error(`env: "${line}": want NAME=value`);
      env[line.slice(0, i).trim()] = line.slice(i + 1);
    }
    return env;
  }
  return s;
}
