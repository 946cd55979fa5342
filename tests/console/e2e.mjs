// End-to-end test of the web console in Debian's headless Chromium, driven
// by playwright-core (no bundled browser). tests/console_test.go runs it
// against a real emberd (runc runtime) and passes, in the environment:
//   URL            emberd's base URL (http://127.0.0.1:PORT)
//   ADMIN_KEY      an admin key
//   READ_KEY       a key with scope read
//   IMAGE_ARCHIVE  an image archive to upload through the Images page
//   SCREENSHOT_DIR where the screenshots go (default ./artifacts)
//   CHROMIUM       the browser (default /usr/bin/chromium)
// It exits 0 when every step passed, else 1 naming the step.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const need = (k) => {
  const v = process.env[k];
  if (!v) { console.error(`e2e: ${k} is not set`); process.exit(2); }
  return v;
};
const URL = need('URL').replace(/\/$/, '');
const ADMIN_KEY = need('ADMIN_KEY');
const READ_KEY = need('READ_KEY');
const IMAGE_ARCHIVE = need('IMAGE_ARCHIVE');
const SHOTS = path.resolve(process.env.SCREENSHOT_DIR || path.join(path.dirname(new URL(import.meta.url).pathname), 'artifacts'));
fs.mkdirSync(SHOTS, { recursive: true });

const T = 60_000; // the longest any one wait may take
let step = 'start';
const errors = [];

// api calls emberd directly (not through the page), with a key or a cookie.
async function api(method, p, { key, cookie, csrf, body } = {}) {
  const headers = {};
  if (key) headers.Authorization = `Bearer ${key}`;
  if (cookie) headers.Cookie = cookie;
  if (csrf) headers['X-CSRF-Token'] = csrf;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(URL + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  return { status: res.status, json, text };
}

function check(cond, what) {
  if (!cond) throw new Error(what);
}

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ember-console-e2e-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 800 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
context.setDefaultTimeout(T);
const page = context.pages()[0] || await context.newPage();
page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
page.on('dialog', (d) => d.accept());
// Nothing may be loaded from outside the appliance.
page.on('request', (r) => { if (!r.url().startsWith(URL) && !r.url().startsWith('data:')) errors.push(`request outside emberd: ${r.url()}`); });

let shotN = 0;
async function shot(name, mask = []) {
  const file = path.join(SHOTS, `${String(++shotN).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true, mask: mask.map((m) => page.locator(m)) });
  console.log(`screenshot ${file}`);
}

async function login(key) {
  await page.waitForSelector('#login:not([hidden])');
  await page.fill('#login-key', key);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#shell:not([hidden])');
}

async function signOut() {
  await page.click('#logout');
  await page.waitForSelector('#login:not([hidden])');
}

const ok = (what) => console.log(`ok: ${what}`);

try {
  step = 'login page';
  await page.goto(URL + '/');
  await page.waitForSelector('#login:not([hidden])');
  await shot('login');
  await page.fill('#login-key', 'not-a-key');
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#login-msg.error');
  check(await page.isVisible('#login:not([hidden])'), 'a wrong key left the login page');
  ok('a wrong key is refused on the login page');

  step = 'login';
  await page.fill('#login-key', '');
  await login(ADMIN_KEY);
  const cookies = await context.cookies(URL);
  const sc = cookies.find((c) => c.name === 'ember_session');
  check(sc && sc.httpOnly && sc.sameSite === 'Strict', `session cookie not HttpOnly+SameSite=Strict: ${JSON.stringify(sc)}`);
  const stored = await page.evaluate(() => localStorage.length + sessionStorage.length);
  check(stored === 0, 'the console wrote to web storage');
  check(!page.url().includes(ADMIN_KEY), 'the key is in the URL');
  check(!(await page.content()).includes(ADMIN_KEY), 'the key is in the page');
  await page.waitForSelector('#health .dot.ok');
  await page.waitForSelector('#main[data-page=endpoints] .panel');
  await shot('endpoints-empty');
  ok('logged in with an admin key (HttpOnly SameSite=Strict cookie, nothing in web storage or the URL)');

  step = 'a reload keeps the session';
  // The CSRF token is in the page's memory only: a reload gets it back
  // from GET /console/session (the settings saved below prove it works).
  await page.reload();
  await page.waitForSelector('#shell:not([hidden])');
  check(await page.isHidden('#login'), 'a reload went back to the login page');
  ok('a reload keeps the session');

  step = 'polling: backoff on errors, paused while the tab is hidden';
  // poll.js run in a page of its own under a recording setTimeout: the
  // delays it asks for are checked, not how long anything took.
  const side = await context.newPage();
  await side.goto(URL + '/console/style.css');
  const polling = await side.evaluate(async () => {
    const timers = [];
    const realSetTimeout = window.setTimeout;
    window.setTimeout = (fn, ms) => { timers.push({ fn, ms }); return timers.length; };
    let hidden = false;
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => hidden });
    const { poll } = await import('/console/poll.js');
    let calls = 0, fail = true;
    const settle = () => new Promise((r) => realSetTimeout(r, 0));
    const p = poll(async () => { calls++; if (fail) throw new Error('down'); }, 2000);
    const delays = [];
    for (let i = 0; i < 5; i++) { await settle(); const t = timers.shift(); delays.push(t.ms); t.fn(); }
    await settle();
    fail = false;
    const last = timers.shift(); delays.push(last.ms); last.fn();
    await settle();
    const t = timers.shift(); delays.push(t.ms);
    hidden = true;
    const before = calls;
    t.fn(); // due while hidden: no call
    await settle();
    const whileHidden = calls - before;
    hidden = false;
    document.dispatchEvent(new Event('visibilitychange'));
    await settle();
    const afterShown = calls - before;
    p.stop();
    window.setTimeout = realSetTimeout;
    delete document.hidden;
    return { delays, whileHidden, afterShown };
  });
  await side.close();
  check(JSON.stringify(polling.delays) === JSON.stringify([4000, 8000, 16000, 30000, 30000, 30000, 2000]),
    `poll delays ${JSON.stringify(polling.delays)}, want 4 s doubling to 30 s while failing, 2 s once it answers`);
  check(polling.whileHidden === 0 && polling.afterShown === 1, `hidden tab: ${JSON.stringify(polling)}`);
  ok('polling backs off 4→8→16→30 s on errors, returns to 2 s, and waits while the tab is hidden');

  step = 'templates: a deploy refused shows the daemon\'s message';
  await page.click('#nav a[data-page=templates]');
  await page.waitForSelector('[data-template=basic]');
  const others = await page.$$eval('[data-template]', (els) => els.map((e) => e.dataset.template).filter((n) => n !== 'basic'));
  if (others.length) {
    const t = others.includes('vllm') ? 'vllm' : others[0];
    await page.click(`[data-deploy="${t}"]`);
    await page.click(`[data-deploy-form="${t}"] button[type=submit]`);
    const m = await page.waitForSelector(`[data-deploy-form="${t}"] .msg.error`);
    const text = (await m.textContent()) || '';
    check(/required|image store/.test(text), `deploying ${t} with nothing filled in showed: ${text}`);
    await shot('templates-deploy-refused');
    ok(`deploying ${t} without its required values shows emberd's error: ${text.slice(0, 100)}`);
  } else {
    await shot('templates');
  }

  step = 'templates: quick deploy of basic';
  await page.click('[data-deploy=basic]');
  const epName = `e2e-basic-${process.pid}`;
  await page.fill('[data-deploy-form=basic] input[name=name]', epName);
  for (const inp of await page.$$('[data-deploy-form=basic] input[name^="env."]')) await inp.fill('e2e');
  await page.click('[data-deploy-form=basic] button[type=submit]');
  await page.waitForFunction(() => /^#\/endpoints\/[^/]+$/.test(location.hash) || document.querySelector('[data-deploy-form=basic] .msg.error'));
  const refusedDeploy = await page.$('[data-deploy-form=basic] .msg.error');
  check(!refusedDeploy, `deploying basic was refused: ${refusedDeploy && await refusedDeploy.textContent()}`);
  const epId = decodeURIComponent((await page.evaluate(() => location.hash)).split('/')[2]);
  await page.waitForSelector('#settings-form');
  ok(`deployed endpoint ${epName} (${epId}) from the basic template`);

  step = 'settings: the daemon\'s validation message beside the form';
  await page.fill('#set-workersMax', '0');
  await page.click('#settings-save');
  const bad = await page.waitForSelector('#settings-msg .msg.error');
  const badText = (await bad.textContent()) || '';
  check(badText.includes('workersMax'), `refused settings showed: ${badText}`);
  check(await page.$eval('#set-workersMax', (e) => e.classList.contains('invalid')), 'the refused field is not marked');
  const beside = await page.textContent('[data-field=workersMax] .field-error');
  check(beside.includes('workersMax'), 'no message beside the refused field');
  await shot('endpoint-settings-refused');
  ok(`settings refused with emberd's message: ${badText}`);

  step = 'settings saved';
  // Idle long enough to be seen idle (the page polls every 2 s); shortened
  // below to see the worker leave.
  await page.fill('#set-workersMax', '1');
  await page.fill('#set-idleTimeout', '30');
  await page.click('#settings-save');
  await page.waitForSelector('#settings-msg .msg.ok');
  const saved = await api('GET', `/v1/endpoints/${epId}`, { key: ADMIN_KEY });
  check(saved.json.idleTimeout === 30 && saved.json.workersMax === 1, `settings not saved: ${saved.text}`);
  ok('settings saved (workersMax 1, idleTimeout 30)');

  step = 'send a request (runsync)';
  await page.waitForSelector('#no-workers');
  await page.fill('#send-input', '{"msg": "from the console"}');
  await page.check('#mode-runsync');
  await page.click('#send-btn');
  await page.waitForSelector('#send-status[data-status=COMPLETED]');
  const out = await page.textContent('#send-output');
  check(out.includes('from the console'), `runsync output: ${out}`);
  ok('runsync from the form: COMPLETED with the echoed input');

  step = 'a worker appears and goes idle';
  const row = await page.waitForSelector('#workers tr[data-worker][data-state=idle]');
  const workerId = await row.getAttribute('data-worker');
  ok(`worker ${workerId} appeared and is idle`);

  step = 'send a streamed request (run)';
  await page.fill('#send-input', '{"stream": 5, "stream_delay_ms": 400}');
  await page.check('#mode-run');
  await page.click('#send-btn');
  await page.waitForSelector('#send-status[data-status=IN_PROGRESS], #send-status[data-status=IN_QUEUE]');
  await page.waitForFunction(() => (document.querySelector('#send-stream')?.textContent || '').includes('chunk 1'));
  await shot('endpoint-streaming');
  await page.waitForSelector('#send-status[data-status=COMPLETED]');
  await page.waitForFunction(() => (document.querySelector('#send-stream')?.textContent || '').includes('chunk 5'));
  const chunks = (await page.textContent('#send-stream')).trim().split('\n');
  check(chunks.length === 5 && chunks[0].includes('chunk 1'), `stream shown: ${chunks.join(' | ')}`);
  ok('run with a stream: the 5 chunks shown as they came, then COMPLETED');

  step = 'worker logs, live';
  await page.click(`#workers tr[data-worker="${workerId}"] button:has-text("Logs")`);
  await page.waitForFunction(() => (document.querySelector('#log')?.textContent || '').length > 0);
  ok('the worker\'s log is followed');

  step = 'recent jobs';
  await page.waitForSelector('#jobs-table tr[data-job][data-status=COMPLETED]');
  const n = await page.$$eval('#jobs-table tr[data-job]', (els) => els.length);
  check(n >= 2, `recent jobs lists ${n} jobs, want the 2 sent`);
  await page.click('#jobs-table tr[data-job]:has-text("from the console")');
  await page.waitForFunction(() => [...document.querySelectorAll('#jobs-table pre.json')].some((p) => p.textContent.includes('from the console')));
  ok('recent jobs show status, timings and (clicked) input and output');

  step = 'a chart with data';
  // The history has 10 s buckets: a line needs two of them.
  await page.waitForFunction(() => [...document.querySelectorAll('#charts .chart path.series')].some((p) => (p.getAttribute('d') || '').includes('L')), null, { timeout: 45_000 });
  const pts = await page.$eval('#charts .chart', (c) => Number(c.dataset.points));
  check(pts > 0, 'the requests chart has no points');
  await shot('endpoint');
  ok(`charts drawn from the history (${pts} points in the requests chart)`);

  step = 'the worker leaves after its idle timeout';
  await page.fill('#set-idleTimeout', '3');
  await page.click('#settings-save');
  await page.waitForFunction(() => /idleTimeout/.test(document.querySelector('#settings-msg .msg.ok')?.textContent || ''));
  await page.waitForSelector(`[data-gone-worker="${workerId}"]`, { timeout: T });
  check(!(await page.$(`#workers tr[data-worker="${workerId}"]`)), 'the worker is still listed');
  await page.waitForSelector('#no-workers');
  // The endpoint's merged log still has what the gone worker wrote.
  await page.click('#all-logs');
  await page.waitForFunction((w) => (document.querySelector('#log')?.textContent || '').includes(w), workerId);
  await shot('endpoint-worker-left');
  ok(`worker ${workerId} left after its idle timeout; the endpoint's merged log still shows it`);

  step = 'overview lists the endpoint';
  await page.click('#nav a[data-page=endpoints]');
  await page.waitForSelector(`#endpoints-table tr[data-endpoint="${epId}"] svg.spark path`);
  await shot('endpoints');
  ok('the overview lists the endpoint with its state');

  step = 'image upload with progress';
  await page.click('#nav a[data-page=images]');
  await page.waitForSelector('#images-table');
  // Loopback is too fast to see a bar move: throttle the upload (Chromium's
  // network emulation) so that progress events come while it is sent.
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  const size = fs.statSync(IMAGE_ARCHIVE).size;
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: Math.max(size / 3, 64 * 1024) });
  await page.evaluate(() => {
    window.__progress = [];
    const bar = document.querySelector('#upload-progress');
    new MutationObserver(() => window.__progress.push(bar.value)).observe(bar, { attributes: true });
    const t = document.querySelector('#upload-progress-text');
    new MutationObserver(() => window.__progress.push(bar.value)).observe(t, { childList: true, characterData: true, subtree: true });
  });
  await page.setInputFiles('#upload-file', IMAGE_ARCHIVE);
  await page.fill('#upload-name', 'e2e/uploaded:1');
  await page.click('#upload-btn');
  await page.waitForFunction(() => { const v = document.querySelector('#upload-progress').value; return v > 0 && v < 100; });
  await shot('images-uploading');
  await page.waitForSelector('#upload-progress[data-done="1"]');
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  const seen = await page.evaluate(() => window.__progress);
  const between = [...new Set(seen)].filter((v) => v > 0 && v < 100);
  check(between.length >= 1, `the progress bar did not move: ${JSON.stringify(seen)}`);
  await page.waitForSelector('#images-table tr[data-image="e2e/uploaded:1"]');
  await page.waitForSelector('#upload-msg .msg.ok');
  await shot('images');
  ok(`uploaded an image: progress ${[...new Set(seen)].join('→')}%, then listed`);

  step = 'images: in use, remove';
  const used = await page.textContent('#images-table tr[data-image="ember/example-worker:latest"]');
  check(used.includes('in use') && used.includes(epName), `the deployed image is not marked in use: ${used}`);
  check(await page.isDisabled('#images-table tr[data-image="ember/example-worker:latest"] button:has-text("Remove")'), 'an image in use can be removed');
  await page.click('#images-table tr[data-image="e2e/uploaded:1"] button:has-text("Remove")');
  await page.waitForSelector('#images-table tr[data-image="e2e/uploaded:1"]', { state: 'detached' });
  check((await api('GET', '/v1/images', { key: ADMIN_KEY })).json.images.every((i) => !(i.names || []).includes('e2e/uploaded:1')), 'the removed image is still in the store');
  ok('the image in use is marked (its remove disabled); the uploaded one removed');

  step = 'GPUs page';
  await page.click('#nav a[data-page=gpus]');
  await page.waitForSelector('#gpus-table, #gpus .empty:not(:has-text("Loading"))');
  await shot('gpus');
  ok('GPU page drawn');

  // This machine has no GPU, so NVML, the hardware boundary, answers
  // nothing. The page's drawing of GPUs is checked with /v1/gpus answered
  // in the browser as emberd answers it with two GPUs (daemon/httpapi/
  // gpus.go's fields): one held by the deployed endpoint's worker with
  // live readings, one left out as unhealthy without them.
  step = 'GPUs page with NVML readings';
  const fakeGPUs = { gpus: [
    { index: 0, uuid: 'GPU-e2e-0', name: 'NVIDIA H200', memoryTotalBytes: 150_754_820_096, worker: 'w-e2efakegpu0', endpointId: epId,
      utilizationPercent: 87, memoryUsedBytes: 75_377_410_048, temperatureC: 64 },
    { index: 1, uuid: 'GPU-e2e-1', name: 'NVIDIA H200', memoryTotalBytes: 150_754_820_096, unhealthy: 'Xid 79: GPU has fallen off the bus',
      statsError: 'NVML: GPU is lost' },
  ] };
  await page.route(`${URL}/v1/gpus`, (route) => route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify(fakeGPUs) }));
  const held = await page.waitForSelector('#gpus-table tr[data-gpu="GPU-e2e-0"]');
  const heldText = await held.textContent();
  check(heldText.includes('NVIDIA H200') && heldText.includes('87%') && heldText.includes('64 °C') && heldText.includes('w-e2efakegpu0') && heldText.includes(epName),
    `the held GPU's row lacks its readings or holder: ${heldText}`);
  const lost = await (await page.waitForSelector('#gpus-table tr[data-gpu="GPU-e2e-1"]')).textContent();
  check(lost.includes('unhealthy') && lost.includes('Xid 79') && lost.includes('NVML: GPU is lost'), `the unhealthy GPU's row: ${lost}`);
  // The header's summary (polled every 5 s) counts them too.
  await page.waitForFunction(() => document.getElementById('gpusum').textContent.includes('GPUs 1/2 in use · 1 unhealthy'));
  await shot('gpus-readings');
  await page.unroute(`${URL}/v1/gpus`);
  ok('GPUs drawn with utilisation, memory, temperature, holder and health, and counted in the header');

  step = 'keys: create (shown once) and revoke';
  await page.click('#nav a[data-page=keys]');
  await page.fill('#key-name', 'e2e-ui-key');
  await page.selectOption('#key-scope', 'read');
  await page.click('#key-create');
  const secret = (await (await page.waitForSelector('#key-secret')).textContent()).trim();
  check(secret.length > 16, 'no secret shown');
  const kid = (await api('GET', '/v1/keys', { key: ADMIN_KEY })).json.keys.find((k) => k.name === 'e2e-ui-key').id;
  await page.waitForSelector(`#keys-table tr[data-key="${kid}"]`);
  await shot('keys', ['#key-secret']); // a secret has no place in an artifact
  check((await api('GET', '/v1/endpoints', { key: secret })).status === 200, 'the created key does not work');
  await page.click(`#keys-table tr[data-key="${kid}"] button:has-text("Revoke")`);
  await page.waitForSelector(`#keys-table tr[data-key="${kid}"]`, { state: 'detached' });
  check((await api('GET', '/v1/endpoints', { key: secret })).status === 401, 'the revoked key still works');
  ok('key created (secret shown once), listed, revoked');

  step = 'read-only key';
  await signOut();
  await login(READ_KEY);
  check((await page.textContent('#scope-badge')).trim() === 'read', 'scope badge');
  const note = await page.textContent('#scope-note');
  check(/scope read/.test(note), `no read-only note: ${note}`);
  check(await page.isHidden('#nav a[data-page=keys]'), 'keys page offered to a read key');
  await page.goto(`${URL}/#/endpoints/${encodeURIComponent(epId)}`);
  await page.waitForSelector('#settings-form');
  for (const sel of ['#send-btn', '#send-input', '#settings-save', '#set-idleTimeout', '#set-image']) {
    check(await page.isDisabled(sel), `${sel} is enabled for a read key`);
  }
  const why = await page.textContent('#settings-form .readonly-note');
  check(/scope read/.test(why) && /scope admin/.test(why), `settings note: ${why}`);
  await page.waitForSelector('#jobs .readonly-note');
  await shot('readonly-endpoint');
  // Forced: the controls enabled by hand, the change sent anyway; emberd
  // answers 403 and the form shows it.
  await page.evaluate(() => { for (const el of document.querySelectorAll('#settings-form [disabled]')) el.disabled = false; });
  await page.fill('#set-idleTimeout', '9');
  await page.click('#settings-save');
  const refused = await page.waitForSelector('#settings-msg .msg.error');
  const rtext = await refused.textContent();
  check(rtext.includes('403') && /scope/.test(rtext), `forced PATCH showed: ${rtext}`);
  check((await api('GET', `/v1/endpoints/${epId}`, { key: ADMIN_KEY })).json.idleTimeout === 3, 'a read key changed the endpoint');
  await shot('readonly-forced-patch');
  ok(`read key: controls disabled with the reason; a forced PATCH shows ${rtext.slice(0, 90)}`);
  await page.click('#nav a[data-page=templates]');
  check(await (await page.waitForSelector('[data-deploy=basic]')).isDisabled(), 'deploy enabled for a read key');
  await page.click('#nav a[data-page=images]');
  check(await (await page.waitForSelector('#upload-btn')).isDisabled(), 'upload enabled for a read key');
  ok('read key: deploy and upload disabled');

  step = 'missing session';
  await context.clearCookies();
  await page.click('#nav a[data-page=endpoints]');
  await page.waitForSelector('#login:not([hidden])');
  check(/session/i.test(await page.textContent('#login-msg')), 'no message on the login page');
  await shot('session-missing');
  await page.reload();
  await page.waitForSelector('#login:not([hidden])');
  ok('cookies cleared: back to the login page with a message (and after a reload)');

  step = 'session ended elsewhere';
  await login(ADMIN_KEY);
  const cookie = (await context.cookies(URL)).map((c) => `${c.name}=${c.value}`).join('; ');
  const s = await api('GET', '/console/session', { cookie });
  check(s.status === 200 && s.json.csrfToken, `GET /console/session: ${s.status}`);
  const del = await api('DELETE', '/console/session', { cookie, csrf: s.json.csrfToken });
  check(del.status === 204, `logout from another client: ${del.status} ${del.text}`);
  await page.waitForSelector('#login:not([hidden])', { timeout: 45_000 });
  check(/session/i.test(await page.textContent('#login-msg')), 'no message after the logout elsewhere');
  ok('session ended by another client: the page goes back to login');

  step = 'key revoked under a session';
  const k = await api('POST', '/v1/keys', { key: ADMIN_KEY, body: { name: 'e2e-revoked', scope: 'admin' } });
  check(k.status === 200, `create key: ${k.text}`);
  await login(k.json.key);
  await page.waitForSelector('#main[data-page=endpoints] .panel');
  const rv = await api('DELETE', `/v1/keys/${k.json.id}`, { key: ADMIN_KEY });
  check(rv.status === 200, `revoke: ${rv.text}`);
  await page.waitForSelector('#login:not([hidden])', { timeout: 45_000 });
  await shot('session-ended');
  ok('the session\'s key revoked: the page goes back to login');

  check(errors.length === 0, errors.join('\n'));
  console.log('e2e: PASS');
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
  process.exit(0);
} catch (e) {
  console.error(`e2e: FAIL at "${step}": ${e.message}`);
  if (errors.length) console.error(errors.join('\n'));
  try { await shot('failure'); } catch { /* the browser may be gone */ }
  await context.close().catch(() => {});
  fs.rmSync(userDataDir, { recursive: true, force: true });
  process.exit(1);
}
