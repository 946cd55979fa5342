// Compatibility test: drives the official RunPod JS client (npm `runpod-sdk`,
// pinned to 1.1.2) against a running Ember daemon.
//
// Env:
//   EMBER_BASE_URL     base URL up to and including /v2, e.g. http://127.0.0.1:7080/v2
//   EMBER_API_KEY      API key sent as `Authorization: Bearer <key>` (may be empty)
//   EMBER_ENDPOINT_ID  endpoint whose worker is Ember's example worker
//   EMBER_COMPAT_TIMEOUT_S  optional overall limit in seconds (default 90)
//
// Output: one line per case (`ok - name` or `not ok - name: reason`), then
// `N passed, N failed`. Exit status 1 if any case failed. Diagnostics start
// with `#`; what the SDK itself prints goes to stderr.
//
// Facts about runpod-sdk 1.1.2 that this file relies on (see README.md):
//   * the request object is sent as the body unchanged, so callers pass {input: ...};
//   * non-200 responses: its HTTP library (xior 0.1.x) throws an XiorError for any
//     non-2xx (err.response.status holds the code); for a 2xx other than 200 the SDK
//     returns {status: <number>, statusText} (status/runSync add started:false)
//     instead of the data. Both are failures here;
//   * runSync, statusSync and stream use no HTTP timeout at all; run, status,
//     cancel, health and purgeQueue use 3 s by default.

import { AsyncLocalStorage } from "node:async_hooks";
import { isDeepStrictEqual } from "node:util";

// ---------------------------------------------------------------- config

const BASE_URL = process.env.EMBER_BASE_URL;
const API_KEY = process.env.EMBER_API_KEY ?? "";
const ENDPOINT_ID = process.env.EMBER_ENDPOINT_ID;
const OVERALL_MS = Number(process.env.EMBER_COMPAT_TIMEOUT_S || 90) * 1000;

if (!BASE_URL || !ENDPOINT_ID) {
  process.stderr.write(
    "usage: EMBER_BASE_URL=http://127.0.0.1:7080/v2 EMBER_ENDPOINT_ID=<id> [EMBER_API_KEY=<key>] node runpod_sdk.mjs\n",
  );
  process.exit(2);
}

const TERMINAL = ["COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"];
const ACTIVE = ["IN_QUEUE", "IN_PROGRESS"];
const KNOWN_STATES = [...ACTIVE, ...TERMINAL];

const t0 = Date.now();
const deadline = t0 + OVERALL_MS;

const out = (line) => process.stdout.write(line + "\n");
const diag = (line) => out("# " + line);

// ---------------------------------------------------------------- SDK loading

// The SDK binds `const print = console.log` when its module is evaluated and
// prints progress from runSync and stream. Route that to stderr so stdout
// carries only the case lines, then put console.log back.
const realConsoleLog = console.log;
console.log = (...args) => process.stderr.write("# runpod-sdk: " + args.join(" ") + "\n");
const { default: runpodSdk } = await import("runpod-sdk");
console.log = realConsoleLog;

// Observe (never alter) the HTTP requests the SDK makes. xior calls the global
// fetch at request time, so wrapping it records each request in the trace
// array of the calling case (AsyncLocalStorage follows the SDK's promise chain).
const traceStore = new AsyncLocalStorage();
const realFetch = globalThis.fetch;
globalThis.fetch = async (input, init = {}) => {
  const rec = {
    method: String(init.method || "GET").toUpperCase(),
    url: String(input instanceof Request ? input.url : input),
    start: Date.now(),
  };
  traceStore.getStore()?.push(rec);
  try {
    const res = await realFetch(input, init);
    rec.status = res.status;
    rec.ms = Date.now() - rec.start;
    try {
      rec.body = await res.clone().json();
    } catch {
      // not JSON; the SDK will see whatever it sees
    }
    return res;
  } catch (err) {
    rec.ms = Date.now() - rec.start;
    rec.error = String(err?.message || err);
    throw err;
  }
};
const traced = async (trace, fn) => traceStore.run(trace, fn);

const sdk = runpodSdk(API_KEY, { baseUrl: BASE_URL });
const ep = sdk.endpoint(ENDPOINT_ID);

// ---------------------------------------------------------------- helpers

class CaseError extends Error {}
const fail = (msg) => {
  throw new CaseError(msg);
};
const check = (cond, msg) => {
  if (!cond) fail(msg);
};
const j = (v) => {
  try {
    const s = JSON.stringify(v);
    return s && s.length > 300 ? s.slice(0, 300) + "..." : s;
  } catch {
    return String(v);
  }
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const remaining = () => deadline - Date.now();

// Explain an exception thrown by the SDK (xior throws on any non-2xx).
function describeError(err) {
  if (err instanceof CaseError) return err.message;
  const r = err?.response;
  if (r && typeof r.status === "number") {
    return `SDK threw: HTTP ${r.status}${r.statusText ? " " + r.statusText : ""} body=${j(r.data)}`;
  }
  const cause = err?.cause ? ` (${err.cause.code || err.cause.message || err.cause})` : "";
  return `SDK threw: ${err?.name || "Error"}: ${err?.message || err}${cause}`;
}

// HTTP status code carried by an SDK exception, or undefined.
const httpStatusOf = (err) => (typeof err?.response?.status === "number" ? err.response.status : undefined);

// Every SDK result must be the server's data. For a non-200 2xx the SDK hands
// back {status: <number>, statusText[, started: false]} instead.
function expectData(call, r) {
  check(r !== null && typeof r === "object" && !Array.isArray(r), `${call} returned ${j(r)}, not an object`);
  check(
    typeof r.status !== "number",
    `${call} returned the SDK's non-200 shape ${j(r)} (HTTP ${r.status} ${r.statusText ?? ""})`,
  );
  check(r.started !== false, `${call} returned started:false: ${j(r)}`);
  return r;
}

// A job status object: data, with an id and a known state.
function expectJob(call, r, id) {
  expectData(call, r);
  check(typeof r.id === "string" && r.id.length > 0, `${call}: no string id in ${j(r)}`);
  if (id !== undefined) check(r.id === id, `${call}: id ${j(r.id)} != ${j(id)}`);
  check(KNOWN_STATES.includes(r.status), `${call}: unknown status ${j(r.status)} in ${j(r)}`);
  return r;
}

// Jobs submitted by this run; the cleanup step cancels any still active.
const submitted = new Set();

async function submit(input) {
  const r = expectJob("run", await ep.run({ input }));
  check(r.status === "IN_QUEUE", `run: status ${j(r.status)}, want "IN_QUEUE" (${j(r)})`);
  submitted.add(r.id);
  return r.id;
}

// Poll ep.status until the job is in one of `want` (default: any terminal
// state). Bounded by count, by time and by the overall deadline.
// With orNull, running out of time returns null instead of failing.
async function pollStatus(id, { want = TERMINAL, timeoutMs = 20000, intervalMs = 200, maxPolls = 200, orNull = false } = {}) {
  const end = Math.min(Date.now() + timeoutMs, deadline);
  let last;
  for (let i = 0; i < maxPolls; i++) {
    last = expectJob("status", await ep.status(id), id);
    if (want.includes(last.status)) return last;
    if (Date.now() + intervalMs > end) break;
    await sleep(intervalMs);
  }
  if (orNull) return null;
  fail(`job ${id} not in ${want.join("/")} in time; last status ${j(last)}`);
}

const queryOf = (url) => new URL(url).searchParams;
const pathOf = (url) => new URL(url).pathname;

// ---------------------------------------------------------------- cases

const cases = [];
const test = (name, budgetMs, fn) => cases.push({ name, budgetMs, fn });

test("health reports every job and worker counter as an integer", 10000, async () => {
  const h = expectData("health", await ep.health());
  const want = {
    jobs: ["completed", "failed", "inProgress", "inQueue", "retried"],
    workers: ["idle", "initializing", "ready", "running", "throttled", "unhealthy"],
  };
  for (const [group, keys] of Object.entries(want)) {
    check(h[group] && typeof h[group] === "object", `health: no object ${group} in ${j(h)}`);
    for (const k of keys) {
      check(k in h[group], `health: ${group}.${k} missing in ${j(h)}`);
      check(Number.isInteger(h[group][k]), `health: ${group}.${k} = ${j(h[group][k])}, not an integer`);
    }
  }
});

test("run then status until COMPLETED returns {echo: input}", 30000, async () => {
  const input = { msg: "hi" };
  const id = await submit(input);
  const s = await pollStatus(id, { timeoutMs: 25000 });
  check(s.status === "COMPLETED", `status ${s.status}, want COMPLETED (${j(s)})`);
  check(isDeepStrictEqual(s.output, { echo: input }), `output ${j(s.output)}, want ${j({ echo: input })}`);
});

test("runSync of a fast job returns COMPLETED with its output in one call", 30000, async () => {
  const trace = [];
  const r = expectJob("runSync", await traced(trace, () => ep.runSync({ input: { output: 42 } }, 20000)));
  submitted.add(r.id);
  check(r.status === "COMPLETED", `status ${r.status}, want COMPLETED (${j(r)})`);
  check(r.output === 42, `output ${j(r.output)}, want 42`);
  check(r.completed === true && r.succeeded === true, `SDK flags completed/succeeded = ${r.completed}/${r.succeeded}`);
  const first = trace[0];
  check(
    first && first.method === "POST" && pathOf(first.url).endsWith("/runsync") && queryOf(first.url).get("wait") === "20000",
    `first request was ${first ? first.method + " " + first.url : "none"}, want POST .../runsync?wait=20000`,
  );
  check(
    trace.length === 1,
    `runSync needed ${trace.length} HTTP requests, want 1 (then: ${trace
      .slice(1, 3)
      .map((t) => `${t.method} ${pathOf(t.url)} -> ${t.status} ${j(t.body)}`)
      .join("; ")})`,
  );
});

// runpod-sdk 1.1.2 runSync(req, T): POST /runsync?wait=clamp(1000,90000,T); if
// the answer is not terminal it loops GET /status-sync/{id}?wait=clamp(1000,
// 90000, T - elapsed) until terminal, giving up once the loop itself has run
// longer than T (so up to about 2T + 1 s in all). On giving up it returns the
// last status with completed:false. With T = 1500 ms and a 3000 ms job either
// outcome is possible, depending on how fast the worker picks the job up.
test("runSync of a slow job with a 1500 ms timeout holds, loops on status-sync, then completes", 30000, async () => {
  const T = 1500;
  const input = { sleep_ms: 3000 };
  const trace = [];
  const startedAt = Date.now();
  const r = expectJob("runSync", await traced(trace, () => ep.runSync({ input }, T)));
  const took = Date.now() - startedAt;
  submitted.add(r.id);

  const first = trace[0];
  check(
    first && first.method === "POST" && pathOf(first.url).endsWith("/runsync") && queryOf(first.url).get("wait") === String(T),
    `first request was ${first ? first.method + " " + first.url : "none"}, want POST .../runsync?wait=${T}`,
  );
  check(first.status === 200, `runsync answered HTTP ${first.status}`);
  check(
    first.body && ACTIVE.includes(first.body.status),
    `runsync answered ${j(first.body)} before a 3000 ms job could finish; want IN_QUEUE or IN_PROGRESS`,
  );
  check(first.ms >= T - 200, `runsync?wait=${T} answered after ${first.ms} ms; the server must hold it until the wait runs out`);

  const syncs = trace.slice(1);
  check(syncs.length >= 1, `SDK made no status-sync request after a non-terminal runsync`);
  for (const s of syncs) {
    check(
      s.method === "GET" && pathOf(s.url).endsWith(`/status-sync/${r.id}`),
      `unexpected request ${s.method} ${s.url}, want GET .../status-sync/${r.id}?wait=...`,
    );
    const w = Number(queryOf(s.url).get("wait"));
    check(w >= 1000 && w <= T, `status-sync wait=${w}, want 1000..${T}`);
    check(s.status === 200, `status-sync answered HTTP ${s.status}`);
  }
  // A server that ignores ?wait on status-sync makes the SDK spin in a tight loop.
  check(syncs.length <= 6, `SDK made ${syncs.length} status-sync requests; the server is not holding them for ?wait`);
  check(took <= 2 * T + 1000 + 2500, `runSync took ${took} ms, want at most ~${2 * T + 1000} ms`);
  check(r.completed === TERMINAL.includes(r.status), `SDK flag completed=${r.completed} but status ${r.status}`);

  let final = r;
  if (r.completed) {
    diag(`runSync slow: SDK returned ${r.status} itself after ${took} ms (${syncs.length} status-sync)`);
  } else {
    diag(`runSync slow: SDK gave up after ${took} ms with ${r.status} (${syncs.length} status-sync); polling status`);
    final = await pollStatus(r.id, { timeoutMs: 15000 });
  }
  check(final.status === "COMPLETED", `final status ${final.status}, want COMPLETED (${j(final)})`);
  check(isDeepStrictEqual(final.output, { echo: input }), `output ${j(final.output)}, want ${j({ echo: input })}`);
});

test("stream yields chunk 1..chunk 5 once each, in order, and ends", 30000, async () => {
  const id = await submit({ stream: 5, stream_delay_ms: 100 });
  const trace = [];
  const got = [];
  const STREAM_TIMEOUT = 20000; // the SDK's own stream timeout: it stops polling after this
  const startedAt = Date.now();
  const checkTrace = () => {
    for (const t of trace) {
      check(t.method === "GET" && pathOf(t.url).endsWith(`/stream/${id}`), `unexpected request ${t.method} ${t.url}`);
      if (t.error) fail(`GET /stream failed: ${t.error}`);
      check(t.status === 200, `stream answered HTTP ${t.status} ${j(t.body)}`);
      // runpod-sdk iterates resp.stream unguarded: a missing key throws a TypeError.
      check(t.body && Array.isArray(t.body.stream), `stream answer without a "stream" array: ${j(t.body)}`);
    }
  };
  try {
    await traced(trace, async () => {
      for await (const chunk of ep.stream(id, STREAM_TIMEOUT)) {
        check(chunk && typeof chunk === "object" && "output" in chunk, `stream chunk without output: ${j(chunk)}`);
        got.push(chunk.output);
        check(got.length <= 50, `stream yielded more than 50 chunks: ${j(got)}`);
      }
    });
  } catch (err) {
    if (!(err instanceof CaseError)) checkTrace(); // name the server-side cause if there is one
    throw err;
  }
  const took = Date.now() - startedAt;
  checkTrace();
  const last = trace[trace.length - 1];
  check(
    last && TERMINAL.includes(last.body?.status),
    `stream loop ended without a terminal status (SDK timeout after ${took} ms?); last answer ${j(last?.body)}`,
  );
  const want = [1, 2, 3, 4, 5].map((i) => `chunk ${i}`);
  check(isDeepStrictEqual(got, want), `chunks ${j(got)}, want ${j(want)}`);
  check(last.body.status === "COMPLETED", `stream ended with status ${last.body.status}, want COMPLETED`);
  diag(`stream: ${trace.length} /stream requests in ${took} ms`);
});

test("status of a failed job is FAILED with error \"boom\"", 30000, async () => {
  const id = await submit({ fail: "boom" });
  const s = await pollStatus(id, { timeoutMs: 25000 });
  check(s.status === "FAILED", `status ${s.status}, want FAILED (${j(s)})`);
  check(s.error === "boom", `error ${j(s.error)}, want "boom"`);
});

test("cancel of a running 20 s job makes it CANCELLED", 30000, async () => {
  const id = await submit({ sleep_ms: 20000 });
  // Prefer cancelling it while it runs; cancel anyway if no worker took it.
  const seen = await pollStatus(id, { want: ["IN_PROGRESS", ...TERMINAL], timeoutMs: 10000, orNull: true });
  const before = seen ? seen.status : "IN_QUEUE";
  check(!TERMINAL.includes(before), `a 20 s job was already ${before} before cancel`);
  const c = expectJob("cancel", await ep.cancel(id), id);
  check(c.status === "CANCELLED", `cancel answered status ${c.status}, want CANCELLED (${j(c)})`);
  const s = await pollStatus(id, { timeoutMs: 5000 });
  check(s.status === "CANCELLED", `status after cancel ${s.status}, want CANCELLED (${j(s)})`);
  await sleep(500);
  const again = expectJob("status", await ep.status(id), id);
  check(again.status === "CANCELLED", `status changed from CANCELLED to ${again.status} after cancel`);
  diag(`cancel: job was ${before} when cancelled`);
});

test("purgeQueue removes queued jobs and leaves the running one", 30000, async () => {
  // One job to occupy the worker, then more that wait in the queue behind it.
  const blocker = await submit({ sleep_ms: 5000, purge_test: 0 });
  const seen = await pollStatus(blocker, { want: ["IN_PROGRESS", ...TERMINAL], timeoutMs: 10000, orNull: true });
  const blockerRunning = seen?.status === "IN_PROGRESS";
  const queued = [];
  for (let i = 1; i <= 3; i++) queued.push(await submit({ sleep_ms: 5000, purge_test: i }));
  const p = expectData("purgeQueue", await ep.purgeQueue());
  check(Number.isInteger(p.removed) && p.removed >= 0, `purgeQueue: removed ${j(p.removed)}, not an integer >= 0 (${j(p)})`);
  check(typeof p.status === "string", `purgeQueue: status ${j(p.status)}, not a string (${j(p)})`);
  const states = [];
  for (const id of [blocker, ...queued]) {
    try {
      const s = expectJob("status", await ep.status(id), id);
      check(s.status !== "IN_QUEUE", `job ${id} is still IN_QUEUE after purgeQueue (${j(p)})`);
      states.push(s.status);
    } catch (err) {
      if (err instanceof CaseError) throw err;
      const code = httpStatusOf(err);
      check(code === 404, `status of purged job ${id}: ${describeError(err)}`);
      check(!(id === blocker && blockerRunning), `purgeQueue removed the job that was IN_PROGRESS (${j(p)})`);
      states.push("404");
      submitted.delete(id);
    }
  }
  diag(`purgeQueue: ${j(p)}; jobs afterwards: ${states.join(", ")}`);
});

// ---------------------------------------------------------------- runner

let passed = 0;
let failed = 0;
for (const c of cases) {
  const left = remaining();
  if (left <= 0) {
    failed++;
    out(`not ok - ${c.name}: not run, overall timeout of ${OVERALL_MS / 1000} s reached`);
    continue;
  }
  const budget = Math.min(c.budgetMs, left);
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new CaseError(`timed out after ${budget} ms`)), budget);
  });
  try {
    await Promise.race([c.fn(), timeout]);
    passed++;
    out(`ok - ${c.name}`);
  } catch (err) {
    failed++;
    out(`not ok - ${c.name}: ${describeError(err).replace(/\s*\n\s*/g, " ")}`);
  } finally {
    clearTimeout(timer);
  }
}

// Best-effort cleanup, at most ~5 s: cancel whatever this run left active on the daemon.
const cleanupEnd = Date.now() + 5000;
for (const id of submitted) {
  if (Date.now() > cleanupEnd) break;
  try {
    const s = await Promise.race([ep.status(id, 2000), sleep(2500).then(() => null)]);
    if (s && ACTIVE.includes(s.status)) await Promise.race([ep.cancel(id, 2000), sleep(2500)]);
  } catch {
    // gone already, or the daemon is unhappy; the cases have said so
  }
}

out(`${passed} passed, ${failed} failed`);
// Requests from a case that timed out may still be pending; do not wait for them.
process.exit(failed > 0 ? 1 : 0);
