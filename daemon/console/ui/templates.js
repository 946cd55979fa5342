// The template catalog and Quick Deploy: a template is a named preset
// (image, command, env with descriptions and defaults, GPUs, scaling);
// deploying asks only for what has no default, and the endpoint's name.

import { api, get, canChange, whyNot } from './api.js';
import { h, fill, num, msg, readonlyNote } from './dom.js';

export function render(root, ctx) {
  const status = h('div');
  const list = h('div', { class: 'tcards', id: 'templates' }, h('p', { class: 'empty' }, 'Loading templates…'));
  root.append(h('div', { class: 'pagehead' }, h('h1', null, 'Templates'),
    h('span', { class: 'sub' }, 'presets to deploy an endpoint from; add your own with ember template create or the preload folder')));
  if (!canChange()) root.append(readonlyNote(whyNot('deploying a template')));
  root.append(status, list);
  (async () => {
    try {
      const [{ templates = [] }, imgs, gpus] = await Promise.all([get('/v1/templates', { signal: ctx.signal }),
        get('/v1/images', { signal: ctx.signal }).catch(() => ({ images: [] })),
        get('/v1/gpus', { signal: ctx.signal }).catch(() => ({ gpus: [] }))]);
      // The GPU models this machine has, for Quick Deploy's GPU choice.
      const models = [...new Set((gpus.gpus || []).filter((g) => !g.unhealthy).map((g) => g.name))];
      ctx.gpuModels = models;
      ctx.gpuTotal = (gpus.gpus || []).filter((g) => !g.unhealthy).length;
      const have = new Set();
      for (const i of imgs.images || []) for (const n of i.names || []) have.add(n);
      fill(list, templates.length ? templates.map((t) => card(t, have, ctx)) : h('p', { class: 'empty' }, 'No templates.'));
    } catch (err) {
      if (err.name !== 'AbortError') fill(status, msg('error', `Templates: ${err.message}`));
    }
  })();
}

function card(t, have, ctx) {
  const present = have.has(t.image) || have.has(`${t.image}:latest`);
  const deployBox = h('div');
  const btn = h('button', { class: 'primary', type: 'button', disabled: !canChange(), title: canChange() ? '' : whyNot('deploying'), dataset: { deploy: t.name } }, 'Quick Deploy');
  btn.addEventListener('click', () => { btn.hidden = true; fill(deployBox, deployForm(t, ctx, () => { btn.hidden = false; deployBox.replaceChildren(); })); });
  const envs = t.env || [];
  return h('section', { class: 'panel tcard', dataset: { template: t.name } },
    h('div', { class: 'top-line' }, h('h2', null, t.name), h('span', { class: 'muted' }, `v${t.version}`),
      t.category ? h('span', { class: 'badge info' }, t.category) : null, t.builtin ? h('span', { class: 'badge' }, 'built-in') : null,
      h('span', { style: 'margin-left:auto' }, btn)),
    h('div', { class: 'desc' }, t.description || ''),
    h('dl', { class: 'kv' },
      h('dt', null, 'image'), h('dd', null, h('span', { class: 'mono' }, t.image), ' ',
        present ? h('span', { class: 'badge ok', title: 'in this machine\'s image store' }, 'present')
          : h('span', { class: 'badge warn', title: 'deploying says how to import it' }, 'not imported')),
      (t.command || []).length ? [h('dt', null, 'command'), h('dd', { class: 'mono' }, t.command.join(' '))] : null,
      h('dt', null, 'GPUs'), h('dd', null, num(t.gpuCount) ? `${num(t.gpuCount)} × ${(t.gpuTypes || []).join(' | ') || 'any'}` : 'none (CPU)'),
      h('dt', null, 'scaling'), h('dd', null, `${num(t.workersMin)}–${num(t.workersMax)} workers, idle ${num(t.idleTimeout)} s${t.flashboot ? ', FlashBoot' : ''}`)),
    envs.length ? h('details', null, h('summary', { class: 'small' }, `${envs.length} environment variables (${envs.filter((e) => e.required).length} required)`),
      h('table', { class: 'envtable' }, h('tbody', null, envs.map((e) => h('tr', null,
        h('td', { class: 'mono' }, e.name, e.required ? h('b', { style: 'color:var(--bad)' }, ' *') : ''),
        h('td', { class: 'small' }, e.description || ''),
        h('td', { class: 'mono small muted' }, e.secret ? '(secret)' : e.default || ''))))))
      : null,
    deployBox);
}

function deployForm(t, ctx, close) {
  const name = h('input', { type: 'text', value: t.name, id: `deploy-name-${t.name}`, name: 'name', spellcheck: 'false' });
  // Only what has no default is asked for: required variables.
  const asks = (t.env || []).filter((e) => e.required && !e.default);
  const envInputs = asks.map((e) => ({ e, inp: h('input', { type: e.secret ? 'password' : 'text', name: `env.${e.name}`, id: `deploy-env-${t.name}-${e.name}`, autocomplete: 'off', spellcheck: 'false' }) }));
  // A GPU template: which of this machine's GPU models, and how many.
  const gpuCount = h('input', { type: 'number', min: 0, step: 1, value: String(num(t.gpuCount)), name: 'gpuCount', id: `deploy-gpucount-${t.name}` });
  const models = ctx.gpuModels || [];
  const gpuType = h('select', { name: 'gpuTypes', id: `deploy-gputype-${t.name}` },
    h('option', { value: '' }, (t.gpuTypes || []).length ? `as the template says (${t.gpuTypes.join(' | ')})` : 'any model'),
    models.map((m) => h('option', { value: m }, m)));
  const gpuRow = num(t.gpuCount) > 0 ? h('div', { class: 'form-grid' },
    h('div', { dataset: { field: 'gpuTypes' } }, h('label', { for: gpuType.id }, 'GPU model'), gpuType,
      h('div', { class: 'field-help' }, models.length ? `this machine has ${ctx.gpuTotal} healthy GPU(s): ${models.join(', ')}` : 'this machine reports no GPUs: a GPU worker cannot start here')),
    h('div', { dataset: { field: 'gpuCount' } }, h('label', { for: gpuCount.id }, 'GPUs per worker'), gpuCount)) : null;
  const out = h('div', { class: 'deploy-msg' });
  const go = h('button', { class: 'primary', type: 'submit' }, 'Deploy');
  const cancel = h('button', { type: 'button' }, 'Cancel');
  cancel.addEventListener('click', close);
  const form = h('form', { class: 'panel', style: 'background:#fbfbfc;margin:4px 0 0', dataset: { deployForm: t.name } },
    h('h3', null, `Deploy ${t.name}`),
    h('div', { class: 'form-grid' },
      h('div', { class: 'wide', dataset: { field: 'name' } }, h('label', { for: name.id }, 'Endpoint name'), name),
      envInputs.map(({ e, inp }) => h('div', { class: 'wide', dataset: { field: `env.${e.name}` } },
        h('label', { for: inp.id }, e.name, ' (required)'), inp, h('div', { class: 'field-help' }, e.description || '')))),
    gpuRow,
    asks.length ? null : h('p', { class: 'muted small' }, 'Every variable has a default: only a name is needed.'),
    h('div', { class: 'formrow' }, go, cancel), out);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    for (const el of form.querySelectorAll('.invalid')) el.classList.remove('invalid');
    const env = {};
    for (const { e, inp } of envInputs) if (inp.value !== '') env[e.name] = inp.value;
    go.disabled = true;
    fill(out, msg('info', 'Deploying…'));
    try {
      const body = { name: name.value.trim(), env };
      if (gpuRow) {
        if (gpuType.value) body.gpuTypes = [gpuType.value];
        if (gpuCount.value !== String(num(t.gpuCount))) body.gpuCount = Number(gpuCount.value);
      }
      const ep = await api('POST', `/v1/templates/${encodeURIComponent(t.name)}:deploy`, body, { signal: ctx.signal });
      fill(out, msg('ok', `Deployed endpoint ${ep.name} (${ep.id}).`));
      ctx.go(`#/endpoints/${encodeURIComponent(ep.id)}`);
    } catch (err) {
      if (err.name === 'AbortError') return;
      const bad = err.field && form.querySelector(`[data-field="${CSS.escape(err.field)}"] :is(input, select)`);
      if (bad) bad.classList.add('invalid');
      fill(out, msg('error', err.message),
        err.field === 'image' ? h('p', { class: 'small' }, 'Or upload the archive on the ', h('a', { href: '#/images' }, 'Images'), ' page.') : null);
    } finally {
      go.disabled = false;
    }
  });
  return form;
}
