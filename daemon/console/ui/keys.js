// API keys (admin only): create (the secret is shown once), list, revoke.

import { api, get, canChange, whyNot } from './api.js';
import { h, fill, msg, when, readonlyNote } from './dom.js';

export function render(root, ctx) {
  root.append(h('div', { class: 'pagehead' }, h('h1', null, 'API keys'), h('span', { class: 'sub' }, 'admin: everything · invoke: send jobs to its endpoints · read: see everything, change nothing')));
  if (!canChange()) {
    root.append(readonlyNote(whyNot('managing keys')));
    return;
  }
  const nameIn = h('input', { type: 'text', id: 'key-name', placeholder: 'e.g. grafana, ci-client', spellcheck: 'false' });
  const scopeIn = h('select', { id: 'key-scope' }, ['read', 'invoke', 'admin'].map((s) => h('option', { value: s }, s)));
  const epsIn = h('input', { type: 'text', id: 'key-endpoints', placeholder: 'ids or names, comma-separated (invoke only)', spellcheck: 'false' });
  const expIn = h('input', { type: 'text', id: 'key-expires', placeholder: 'e.g. 30d, 12h (empty: never)', spellcheck: 'false' });
  const out = h('div', { id: 'key-created' });
  const form = h('form', { class: 'panel' }, h('h2', null, 'Create a key'),
    h('div', { class: 'form-grid' },
      h('div', null, h('label', { for: 'key-name' }, 'Name'), nameIn),
      h('div', null, h('label', { for: 'key-scope' }, 'Scope'), scopeIn),
      h('div', null, h('label', { for: 'key-endpoints' }, 'Endpoints'), epsIn),
      h('div', null, h('label', { for: 'key-expires' }, 'Expires in'), expIn)),
    h('div', { class: 'formrow' }, h('button', { class: 'primary', type: 'submit', id: 'key-create' }, 'Create key')), out);
  const list = h('div', { class: 'panel', id: 'keys' }, h('p', { class: 'empty' }, 'Loading keys…'));
  root.append(form, list);

  const p = ctx.poll(async () => draw(list, (await get('/v1/keys', { signal: ctx.signal })).keys || [], () => p.now()), 10000,
    (e) => { if (e) fill(list, msg('error', e.message)); });

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { name: nameIn.value.trim(), scope: scopeIn.value };
    const eps = epsIn.value.split(',').map((s) => s.trim()).filter(Boolean);
    if (eps.length) body.endpoints = eps;
    if (expIn.value.trim()) body.expiresIn = expIn.value.trim();
    try {
      const k = await api('POST', '/v1/keys', body);
      const secret = h('div', { class: 'secret', id: 'key-secret' }, k.key);
      const copy = h('button', { type: 'button', class: 'small' }, 'Copy');
      copy.addEventListener('click', async () => { try { await navigator.clipboard.writeText(k.key); copy.textContent = 'Copied'; } catch { copy.textContent = 'Select and copy by hand'; } });
      fill(out, h('div', { class: 'msg ok' }, h('b', null, `Key ${k.name} (${k.id}, scope ${k.scope}) created. `),
        'This is the only time its secret is shown: copy it now.', secret, h('div', { class: 'formrow' }, copy)));
      nameIn.value = ''; epsIn.value = ''; expIn.value = '';
      p.now();
    } catch (e) {
      fill(out, msg('error', e.message));
    }
  });
}

function draw(el, keys, refresh) {
  if (!keys.length) { fill(el, h('p', { class: 'empty' }, 'No keys besides the bootstrap admin key (DATA-DIR/api.key, not listed; rotate it with ember key rotate-admin).')); return; }
  fill(el, h('table', { id: 'keys-table' },
    h('thead', null, h('tr', null, h('th', null, 'Name'), h('th', null, 'ID'), h('th', null, 'Scope'), h('th', null, 'Endpoints'), h('th', null, 'Created'), h('th', null, 'Expires'), h('th', null, 'Last used'), h('th', null, ''))),
    h('tbody', null, keys.map((k) => {
      const err = h('div', { class: 'reason' });
      const rv = h('button', { class: 'small danger', type: 'button' }, 'Revoke');
      rv.addEventListener('click', async () => {
        if (!confirm(`Revoke key ${k.name} (${k.id})? Clients using it are refused from now on.`)) return;
        try { await api('DELETE', `/v1/keys/${encodeURIComponent(k.id)}`); refresh(); } catch (e) { err.textContent = e.message; }
      });
      return h('tr', { dataset: { key: k.id } },
        h('td', null, h('b', null, k.name)), h('td', { class: 'idcell' }, k.id),
        h('td', null, h('span', { class: `badge ${k.scope === 'admin' ? 'bad' : k.scope === 'invoke' ? 'info' : ''}` }, k.scope)),
        h('td', { class: 'small' }, (k.endpoints || []).join(', ') || h('span', { class: 'muted' }, 'all')),
        h('td', { class: 'small' }, when(k.createdAt)), h('td', { class: 'small' }, k.expiresAt ? when(k.expiresAt) : 'never'),
        h('td', { class: 'small' }, k.lastUsedAt ? when(k.lastUsedAt) : 'never'),
        h('td', { class: 'num' }, rv, err));
    }))),
  h('p', { class: 'muted small', style: 'margin:6px 0 0' }, 'The bootstrap admin key (DATA-DIR/api.key) is not listed; rotate it with ember key rotate-admin.'));
}
