// The image store: upload an archive (docker save or OCI, gzip/zstd) with
// a progress bar, sizes, which endpoints use each image, remove.

import { api, get, canChange, whyNot, csrfHeaders, ApiError, lost } from './api.js';
import { h, fill, bytes, msg, when, readonlyNote, liveError } from './dom.js';

export function render(root, ctx) {
  const status = h('div');
  const list = h('div', { class: 'panel', id: 'images' }, h('p', { class: 'empty' }, 'Loading images…'));
  const allowed = canChange();
  const file = h('input', { type: 'file', id: 'upload-file', disabled: !allowed, accept: '.tar,.tar.gz,.tgz,.tar.zst,.oci,application/x-tar,application/gzip,application/zstd' });
  const name = h('input', { type: 'text', id: 'upload-name', placeholder: 'name:tag (optional; the archive\'s own name otherwise)', disabled: !allowed, spellcheck: 'false' });
  const go = h('button', { class: 'primary', type: 'submit', disabled: !allowed, id: 'upload-btn' }, 'Upload');
  const bar = h('progress', { id: 'upload-progress', max: 100, value: 0, hidden: true });
  const barText = h('div', { class: 'small muted', id: 'upload-progress-text' });
  const out = h('div', { id: 'upload-msg' });
  const form = h('form', { class: 'panel' }, h('h2', null, 'Upload an image', h('span', { class: 'muted' }, 'docker save or OCI archive, optionally gzip/zstd; POST /v1/images:upload')),
    allowed ? null : readonlyNote(whyNot('uploading an image')),
    h('div', { class: 'form-grid' }, h('div', null, h('label', { for: 'upload-file' }, 'Archive'), file),
      h('div', null, h('label', { for: 'upload-name' }, 'Name'), name)),
    h('div', { class: 'formrow' }, go, h('div', { style: 'flex:1;min-width:200px' }, bar, barText)), out);
  root.append(h('div', { class: 'pagehead' }, h('h1', null, 'Images'), h('span', { class: 'sub' }, 'the image store on this machine; workers start from these')), form, status, list);

  let refresh = () => {};
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const f = file.files && file.files[0];
    if (!f) { fill(out, msg('error', 'Choose an archive first.')); return; }
    go.disabled = true;
    bar.hidden = false; bar.value = 0; bar.removeAttribute('data-done');
    fill(out);
    const xhr = new XMLHttpRequest();
    const q = name.value.trim() ? `?name=${encodeURIComponent(name.value.trim())}` : '';
    xhr.open('POST', `/v1/images:upload${q}`);
    for (const [k, v] of Object.entries(csrfHeaders())) xhr.setRequestHeader(k, v);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.upload.addEventListener('progress', (e) => {
      if (!e.lengthComputable) { barText.textContent = `${bytes(e.loaded)} sent`; return; }
      const pct = Math.round((e.loaded / e.total) * 100);
      bar.value = pct;
      bar.dataset.max = String(Math.max(Number(bar.dataset.max || 0), pct));
      barText.textContent = `${bytes(e.loaded)} of ${bytes(e.total)} sent (${pct}%)`;
    });
    xhr.upload.addEventListener('load', () => { barText.textContent = `${bytes(f.size)} sent; importing (unpacking layers)…`; });
    xhr.addEventListener('load', () => {
      go.disabled = !allowed;
      let body = null; try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) {
        bar.value = 100; bar.dataset.done = '1';
        barText.textContent = `${bytes(f.size)} uploaded and imported.`;
        fill(out, msg('ok', `Imported ${(body && body.names || []).join(', ') || body && body.id} (${bytes(body && body.size)} unpacked).`));
        file.value = '';
        refresh();
      } else {
        const err = new ApiError(xhr.status, body, xhr.responseText);
        if (xhr.status === 401) lost(err);
        barText.textContent = 'upload refused';
        fill(out, msg('error', `${xhr.status}: ${err.message}`));
      }
    });
    xhr.addEventListener('error', () => { go.disabled = !allowed; fill(out, msg('error', 'The upload failed: connection to emberd lost.')); });
    xhr.send(f);
  });

  const p = ctx.poll(async () => {
    const [{ images = [] }, { endpoints = [] }] = await Promise.all([get('/v1/images', { signal: ctx.signal }), get('/v1/endpoints', { signal: ctx.signal })]);
    draw(list, images, endpoints, ctx, () => p.now());
  }, 5000, (e) => fill(status, liveError(e)));
  refresh = () => p.now();
}

function draw(el, images, endpoints, ctx, refresh) {
  if (!images.length) { fill(el, h('p', { class: 'empty' }, 'No images. Upload an archive above, or: ember image load -i FILE / ember image pull REF.')); return; }
  const users = (img) => endpoints.filter((e) => (img.names || []).some((n) => n === e.image || n === `${e.image}:latest` || img.id === e.image || img.digest === e.image));
  let total = 0;
  for (const i of images) total += Number(i.size || 0);
  fill(el, h('table', { id: 'images-table' },
    h('thead', null, h('tr', null, h('th', null, 'Name'), h('th', null, 'ID'), h('th', { class: 'num' }, 'Size'), h('th', null, 'Layers'), h('th', null, 'Imported'), h('th', null, 'Used by'), h('th', null, ''))),
    h('tbody', null, images.map((img) => {
      const u = users(img);
      const ref = (img.names || [])[0] || img.id;
      const rm = h('button', { class: 'small danger', type: 'button', disabled: !canChange() || u.length > 0,
        title: !canChange() ? whyNot('removing an image') : u.length ? 'in use: delete or change its endpoints first' : 'Remove this image' }, 'Remove');
      const err = h('div', { class: 'reason' });
      rm.addEventListener('click', async () => {
        if (!confirm(`Remove image ${ref}?`)) return;
        try { await api('DELETE', `/v1/images/${ref.split('/').map(encodeURIComponent).join('/')}`); refresh(); } catch (e) { err.textContent = e.message; }
      });
      return h('tr', { dataset: { image: ref } },
        h('td', null, (img.names || []).length ? img.names.map((n) => h('div', { class: 'mono' }, n)) : h('span', { class: 'muted' }, '(unnamed)')),
        h('td', { class: 'idcell', title: img.digest }, String(img.id).replace('sha256:', '').slice(0, 12)),
        h('td', { class: 'num' }, bytes(img.size)),
        h('td', { class: 'num' }, (img.layers || []).length),
        h('td', { class: 'small' }, when(img.imported)),
        h('td', null, u.length ? [h('span', { class: 'badge ok' }, 'in use'), ' ', u.map((e, i) => [i ? ', ' : '', h('a', { href: `#/endpoints/${encodeURIComponent(e.id)}` }, e.name)])] : h('span', { class: 'muted' }, 'unused')),
        h('td', { class: 'num' }, rm, err));
    })),
    h('tfoot', null, h('tr', null, h('td', { colspan: 2, class: 'muted' }, `${images.length} images`), h('td', { class: 'num muted' }, bytes(total)), h('td', { colspan: 4 })))));
}
