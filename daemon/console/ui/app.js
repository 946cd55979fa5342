// The console's entry: the session (login, restore on reload, sign-out),
// the hash router, and the header's live daemon health and GPU summary.

import { api, get, session, setSessionLost, canChange, ApiError } from './api.js';
import { h, fill, bytes, num } from './dom.js';
import { poll, stopAll } from './poll.js';
import * as endpoints from './endpoints.js';
import * as endpoint from './endpoint.js';
import * as templates from './templates.js';
import * as images from './images.js';
import * as gpus from './gpus.js';
import * as keys from './keys.js';

const $ = (id) => document.getElementById(id);

const pages = {
  endpoints: (root, ctx, id) => (id ? endpoint.render(root, ctx, id) : endpoints.render(root, ctx)),
  templates: (root, ctx) => templates.render(root, ctx),
  images: (root, ctx) => images.render(root, ctx),
  gpus: (root, ctx) => gpus.render(root, ctx),
  keys: (root, ctx) => keys.render(root, ctx),
};

// The current page's pollers and requests, ended when it is left.
let page = null;

function leavePage() {
  if (!page) return;
  for (const p of page.polls) p.stop();
  page.abort.abort();
  page = null;
}

function route() {
  if (!session.csrfToken) return;
  leavePage();
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  let name = parts[0] || 'endpoints';
  if (!pages[name]) name = 'endpoints';
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('on', a.dataset.page === name);
  const abort = new AbortController();
  page = { polls: [], abort };
  const ctx = {
    signal: abort.signal,
    poll(fn, every, onError) { const p = poll(fn, every, onError); page.polls.push(p); return p; },
    go(hash) { location.hash = hash; },
  };
  const root = $('main');
  root.replaceChildren();
  root.dataset.page = name;
  document.title = `${name[0].toUpperCase() + name.slice(1)} · Ember`;
  pages[name](root, ctx, parts[1]);
}

// The header: daemon health and GPUs, kept live on every page.
let headerPolls = [];
function startHeader() {
  const health = $('health'), gsum = $('gpusum');
  headerPolls.push(poll(async () => {
    const hz = await get('/healthz');
    const ok = hz && hz.status === 'ok';
    const up = num(hz && hz.uptimeSeconds);
    const upText = up >= 86400 ? `${Math.floor(up / 86400)}d ${Math.floor((up % 86400) / 3600)}h` : up >= 3600 ? `${Math.floor(up / 3600)}h ${Math.floor((up % 3600) / 60)}m` : `${Math.floor(up / 60)}m`;
    const conn = hz && hz.connections;
    fill(health, h('span', { class: `dot ${ok ? 'ok' : 'bad'}` }), `emberd ${ok ? 'healthy' : hz && hz.status || 'unreachable'}`,
      h('span', { class: 'muted' }, `· up ${upText}${hz && hz.tls && hz.tls.enabled ? ' · TLS' : ''}${conn ? ` · ${conn.open} conns` : ''}`));
  }, 5000, (e) => { if (e) fill(health, h('span', { class: 'dot bad' }), 'emberd unreachable', h('span', { class: 'muted' }, ` (${e.message})`)); }));
  headerPolls.push(poll(async () => {
    const { gpus: list = [] } = await get('/v1/gpus');
    if (!list.length) { fill(gsum, h('span', { class: 'dot' }), 'No GPUs (CPU workers only)'); return; }
    const held = list.filter((g) => g.worker).length;
    const bad = list.filter((g) => g.unhealthy).length;
    let used = 0, total = 0;
    for (const g of list) { used += num(g.memoryUsedBytes); total += num(g.memoryTotalBytes); }
    fill(gsum, h('a', { href: '#/gpus', class: 'gpusum' }, h('span', { class: `dot ${bad ? 'bad' : 'ok'}` }),
      `GPUs ${held}/${list.length} in use`, bad ? ` · ${bad} unhealthy` : '', total ? h('span', { class: 'muted' }, ` · mem ${bytes(used)} / ${bytes(total)}`) : ''));
  }, 5000, (e) => { if (e) fill(gsum, h('span', { class: 'dot warn' }), `GPUs: ${e.message}`); }));
}

function stopHeader() { for (const p of headerPolls) p.stop(); headerPolls = []; }

function showApp(s) {
  Object.assign(session, { csrfToken: s.csrfToken, keyId: s.keyId || '', name: s.name || '', scope: s.scope || '', expiresAt: s.expiresAt || '' });
  $('login').hidden = true;
  $('shell').hidden = false;
  const label = session.name || session.keyId || 'admin key';
  fill($('who'), h('span', { class: 'muted' }, 'key '), h('b', null, label), ' ', h('span', { class: `badge ${session.scope === 'admin' ? 'ok' : 'warn'}`, id: 'scope-badge' }, session.scope));
  const note = $('scope-note');
  if (canChange()) { note.hidden = true; } else {
    note.hidden = false;
    note.textContent = session.scope === 'invoke'
      ? `Your key "${label}" has scope invoke: it can send requests to its endpoints, but settings, deploys, images and keys need scope admin.`
      : `Your key "${label}" has scope read: you see everything, but changing anything (settings, deploys, requests, uploads, removals, keys) needs scope admin, and jobs' input and output are hidden.`;
  }
  for (const a of document.querySelectorAll('#nav a[data-page=keys]')) a.hidden = !canChange();
  stopHeader();
  startHeader();
  // replaceState fires no hashchange: the page is drawn once, below.
  if (!location.hash) history.replaceState(null, '', '#/endpoints');
  route();
}

/** showLogin ends everything live and asks for a key, with why. */
function showLogin(message) {
  leavePage();
  stopHeader();
  stopAll();
  session.csrfToken = '';
  $('shell').hidden = true;
  $('main').replaceChildren();
  $('login').hidden = false;
  const m = $('login-msg');
  m.hidden = !message;
  m.className = 'msg info';
  m.textContent = message || '';
  $('login-key').value = '';
  $('login-key').focus();
}

setSessionLost((err) => {
  if ($('login').hidden === false) return;
  // The console never sends a key: any 401 means the session is gone.
  const why = err.reason === 'missing_key'
    ? 'No session: its cookie is gone (cleared, or never set). Sign in again.'
    : `Your session has ended (it expired, was signed out elsewhere, its key was revoked, or emberd restarted). Sign in again.${err.reason && err.reason !== 'session' ? ` (${err.message})` : ''}`;
  showLogin(why);
});

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const key = $('login-key').value.trim();
  const m = $('login-msg');
  const btn = ev.target.querySelector('button');
  btn.disabled = true;
  try {
    const s = await api('POST', '/console/session', { key }, { quiet: true });
    $('login-key').value = '';
    showApp(s);
  } catch (e) {
    m.hidden = false;
    m.className = 'msg error';
    m.textContent = e instanceof ApiError ? e.message : `Cannot reach emberd: ${e.message}`;
  } finally {
    btn.disabled = false;
  }
});

$('logout').addEventListener('click', async () => {
  try { await api('DELETE', '/console/session', undefined, { quiet: true }); } catch { /* signed out either way */ }
  showLogin('Signed out.');
});

window.addEventListener('hashchange', route);

// A reload keeps the cookie but not the CSRF token: ask for it again.
(async () => {
  try {
    showApp(await api('GET', '/console/session', undefined, { quiet: true }));
  } catch (e) {
    showLogin(e instanceof ApiError && e.status === 401 ? '' : `Cannot reach emberd: ${e.message}`);
  }
})();
