// A RunPod REST API client, written against rest.runpod.io/v1's documented
// shapes (its OpenAPI document: the Template, TemplateCreateInput,
// Endpoint, EndpointCreateInput and EndpointUpdateInput schemas; lists are
// bare JSON arrays; deletes answer 204; errors are {"message"}), pointed at
// Ember's /runpod/v1. It does what a RunPod user does: create a template,
// list templates, create an endpoint from it, read it, raise its
// workersMax, list endpoints, run one job through the serverless API
// (/v2), and delete both. Node 20, built-in fetch, no packages.
//
// Env:
//   BASE      the REST base URL, e.g. http://127.0.0.1:7080/runpod/v1
//             (https://rest.runpod.io/v1 on RunPod)
//   KEY       API key, sent as Authorization: Bearer KEY
//   V2BASE    the serverless base URL, e.g. http://127.0.0.1:7080/v2
//             (https://api.runpod.ai/v2 on RunPod); unset: no job is run
//   IMAGE     the worker image (default ember/example-worker:latest)
//   START_CMD the start command as a JSON array (default: the image's)
//   COMPUTE   GPU (default) or CPU: the endpoint's computeType. With CPU the
//             GPU fields are still sent and, as RunPod documents, ignored
//   NAME      a suffix for the template's and endpoint's names (default: the pid)
//   TIMEOUT_S the whole script's limit in seconds (default 120)
//
// Output: one line per step (`ok - step` or `not ok - step: reason`), then
// `N passed, N failed`. Exit status 1 on any mismatch, 2 on bad usage.

import { isDeepStrictEqual } from "node:util";

const BASE = process.env.BASE;
const KEY = process.env.KEY ?? "";
const V2BASE = process.env.V2BASE ?? "";
const IMAGE = process.env.IMAGE || "ember/example-worker:latest";
const START_CMD = process.env.START_CMD ? JSON.parse(process.env.START_CMD) : [];
const COMPUTE = process.env.COMPUTE || "GPU";
const SUFFIX = process.env.NAME || String(process.pid);
const TIMEOUT_MS = Number(process.env.TIMEOUT_S || 120) * 1000;

if (!BASE) {
  process.stderr.write("usage: BASE=http://HOST:7080/runpod/v1 KEY=... [V2BASE=http://HOST:7080/v2] node client.mjs\n");
  process.exit(2);
}

const deadline = Date.now() + TIMEOUT_MS;
let passed = 0;
let failed = 0;

class Mismatch extends Error {}

function expect(cond, what) {
  if (!cond) throw new Mismatch(what);
}

// call sends one request and returns {status, body}: the parsed JSON, or
// the raw text when the answer is not JSON (a 204 has none).
async function call(method, url, body) {
  const left = deadline - Date.now();
  expect(left > 0, `out of time before ${method} ${url}`);
  const res = await fetch(url, {
    method,
    headers: { Authorization: `Bearer ${KEY}`, ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(left),
  });
  const text = await res.text();
  let parsed = text;
  try {
    parsed = text === "" ? "" : JSON.parse(text);
  } catch {
    // not JSON: kept as text for the message
  }
  return { status: res.status, body: parsed, text };
}

async function step(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok - ${name}`);
  } catch (err) {
    failed++;
    console.log(`not ok - ${name}: ${err instanceof Mismatch ? err.message : err.stack}`);
  }
}

const isStrArray = (v) => Array.isArray(v) && v.every((s) => typeof s === "string");
const isStrMap = (v) => v !== null && typeof v === "object" && !Array.isArray(v) && Object.values(v).every((s) => typeof s === "string");

// checkTemplate asserts RunPod's Template schema's types.
function checkTemplate(t) {
  for (const f of ["id", "name", "imageName", "category", "readme"]) expect(typeof t[f] === "string", `template.${f} is ${JSON.stringify(t[f])}, want a string`);
  for (const f of ["dockerStartCmd", "dockerEntrypoint", "ports"]) expect(isStrArray(t[f]), `template.${f} is ${JSON.stringify(t[f])}, want an array of strings`);
  for (const f of ["containerDiskInGb", "volumeInGb"]) expect(Number.isInteger(t[f]), `template.${f} is ${JSON.stringify(t[f])}, want an integer`);
  for (const f of ["isPublic", "isRunpod", "isServerless"]) expect(typeof t[f] === "boolean", `template.${f} is ${JSON.stringify(t[f])}, want a boolean`);
  expect(isStrMap(t.env), `template.env is ${JSON.stringify(t.env)}, want an object of strings`);
  expect(["NVIDIA", "AMD", "CPU"].includes(t.category), `template.category ${t.category}`);
}

// checkEndpoint asserts RunPod's Endpoint schema's types.
function checkEndpoint(e) {
  for (const f of ["id", "name", "templateId", "computeType", "scalerType", "createdAt"]) expect(typeof e[f] === "string", `endpoint.${f} is ${JSON.stringify(e[f])}, want a string`);
  for (const f of ["gpuCount", "workersMin", "workersMax", "idleTimeout", "scalerValue", "executionTimeoutMs", "version"])
    expect(Number.isInteger(e[f]), `endpoint.${f} is ${JSON.stringify(e[f])}, want an integer`);
  for (const f of ["gpuTypeIds", "dataCenterIds"]) expect(isStrArray(e[f]), `endpoint.${f} is ${JSON.stringify(e[f])}, want an array of strings`);
  expect(isStrMap(e.env), `endpoint.env is ${JSON.stringify(e.env)}, want an object of strings`);
  expect(["GPU", "CPU"].includes(e.computeType), `endpoint.computeType ${e.computeType}`);
  expect(["QUEUE_DELAY", "REQUEST_COUNT"].includes(e.scalerType), `endpoint.scalerType ${e.scalerType}`);
  expect(!Number.isNaN(Date.parse(e.createdAt)), `endpoint.createdAt ${e.createdAt} is not a timestamp`);
}

const templateName = `rest-client-${SUFFIX}`;
const endpointName = `rest-client-ep-${SUFFIX}`;
let templateId = "";
let endpointId = "";

await step("POST /templates creates a serverless template", async () => {
  const r = await call("POST", `${BASE}/templates`, {
    name: templateName,
    imageName: IMAGE,
    dockerStartCmd: START_CMD,
    env: { GREETING: "hello" },
    isServerless: true,
    containerDiskInGb: 5,
    volumeInGb: 0,
    readme: "## A worker",
  });
  expect(r.status === 200, `status ${r.status}: ${r.text}`);
  checkTemplate(r.body);
  expect(r.body.name === templateName && r.body.imageName === IMAGE, `name/imageName ${r.body.name}/${r.body.imageName}`);
  expect(JSON.stringify(r.body.dockerStartCmd) === JSON.stringify(START_CMD), `dockerStartCmd ${JSON.stringify(r.body.dockerStartCmd)}`);
  expect(r.body.env.GREETING === "hello" && r.body.isServerless === true && r.body.readme === "## A worker", `env/isServerless/readme ${r.text}`);
  templateId = r.body.id;
  expect(templateId !== "", "no template id");
});

await step("GET /templates is a bare array holding it", async () => {
  const r = await call("GET", `${BASE}/templates`);
  expect(r.status === 200, `status ${r.status}: ${r.text}`);
  expect(Array.isArray(r.body), `body is not an array: ${r.text.slice(0, 200)}`);
  r.body.forEach(checkTemplate);
  expect(r.body.some((t) => t.id === templateId), `template ${templateId} not listed`);
});

await step("GET /templates/{templateId}", async () => {
  const r = await call("GET", `${BASE}/templates/${templateId}`);
  expect(r.status === 200, `status ${r.status}: ${r.text}`);
  checkTemplate(r.body);
  expect(r.body.id === templateId && r.body.imageName === IMAGE, r.text);
});

await step("POST /endpoints creates an endpoint from the template", async () => {
  const r = await call("POST", `${BASE}/endpoints`, {
    templateId,
    name: endpointName,
    computeType: COMPUTE,
    gpuTypeIds: ["NVIDIA H100 80GB HBM3", "NVIDIA A100 80GB PCIe"],
    gpuCount: 1,
    workersMin: 0,
    workersMax: 2,
    idleTimeout: 5,
    scalerType: "QUEUE_DELAY",
    scalerValue: 4,
    flashboot: true,
    executionTimeoutMs: 60000,
    dataCenterIds: ["EU-RO-1", "US-TX-3"],
  });
  expect(r.status === 200, `status ${r.status}: ${r.text}`);
  checkEndpoint(r.body);
  const e = r.body;
  expect(e.templateId === templateId && e.name === endpointName, `templateId/name ${e.templateId}/${e.name}`);
  if (COMPUTE === "GPU") {
    expect(e.computeType === "GPU" && e.gpuCount === 1, `computeType/gpuCount ${e.computeType}/${e.gpuCount}`);
    expect(JSON.stringify(e.gpuTypeIds) === JSON.stringify(["NVIDIA H100 80GB HBM3", "NVIDIA A100 80GB PCIe"]), `gpuTypeIds ${JSON.stringify(e.gpuTypeIds)}`);
  } else {
    expect(e.computeType === "CPU" && e.gpuCount === 0 && e.gpuTypeIds.length === 0, `CPU endpoint: ${e.computeType}/${e.gpuCount}/${JSON.stringify(e.gpuTypeIds)}`);
  }
  expect(e.workersMin === 0 && e.workersMax === 2 && e.idleTimeout === 5, `workers/idle ${e.workersMin}/${e.workersMax}/${e.idleTimeout}`);
  expect(e.scalerType === "QUEUE_DELAY" && e.scalerValue === 4 && e.executionTimeoutMs === 60000, `scaler/timeout ${r.text}`);
  expect(e.env.GREETING === "hello", `env from the template: ${JSON.stringify(e.env)}`);
  endpointId = e.id;
});

await step("GET /endpoints/{endpointId}?includeTemplate=true", async () => {
  const r = await call("GET", `${BASE}/endpoints/${endpointId}?includeTemplate=true`);
  expect(r.status === 200, `status ${r.status}: ${r.text}`);
  checkEndpoint(r.body);
  expect(r.body.id === endpointId && r.body.workersMax === 2, r.text);
  checkTemplate(r.body.template);
  expect(r.body.template.id === templateId, `template ${JSON.stringify(r.body.template)}`);
});

await step("PATCH /endpoints/{endpointId} raises workersMax", async () => {
  const r = await call("PATCH", `${BASE}/endpoints/${endpointId}`, { workersMax: 3 });
  expect(r.status === 200, `status ${r.status}: ${r.text}`);
  checkEndpoint(r.body);
  expect(r.body.workersMax === 3 && r.body.idleTimeout === 5 && r.body.templateId === templateId, r.text);
  const g = await call("GET", `${BASE}/endpoints/${endpointId}`);
  expect(g.status === 200 && g.body.workersMax === 3, `GET after PATCH: ${g.text}`);
});

await step("GET /endpoints is a bare array holding it", async () => {
  const r = await call("GET", `${BASE}/endpoints?includeWorkers=true`);
  expect(r.status === 200, `status ${r.status}: ${r.text}`);
  expect(Array.isArray(r.body), `body is not an array: ${r.text.slice(0, 200)}`);
  r.body.forEach(checkEndpoint);
  const e = r.body.find((x) => x.id === endpointId);
  expect(e && e.workersMax === 3, `endpoint ${endpointId} not listed as patched`);
  expect(Array.isArray(e.workers), `includeWorkers: workers ${JSON.stringify(e.workers)}`);
});

await step("a bad value is a 400 with a message", async () => {
  const r = await call("PATCH", `${BASE}/endpoints/${endpointId}`, { idleTimeout: 0 });
  expect(r.status === 400, `status ${r.status}: ${r.text}`);
  expect(typeof r.body.message === "string" && r.body.message.includes("idleTimeout"), `body ${r.text}`);
});

if (V2BASE) {
  await step("the endpoint serves a job (POST /v2/{endpointId}/runsync)", async () => {
    const input = { prompt: "hi", n: 2 };
    let r = await call("POST", `${V2BASE}/${endpointId}/runsync`, { input });
    expect(r.status === 200, `runsync status ${r.status}: ${r.text}`);
    while (["IN_QUEUE", "IN_PROGRESS"].includes(r.body.status)) {
      r = await call("GET", `${V2BASE}/${endpointId}/status/${r.body.id}`);
      expect(r.status === 200, `status ${r.status}: ${r.text}`);
      await new Promise((res) => setTimeout(res, 200));
    }
    expect(r.body.status === "COMPLETED", `job ended ${r.text}`);
    expect(isDeepStrictEqual(r.body.output, { echo: input }), `output ${JSON.stringify(r.body.output)}`);
  });
}

await step("DELETE /endpoints/{endpointId} answers 204", async () => {
  const r = await call("DELETE", `${BASE}/endpoints/${endpointId}`);
  expect(r.status === 204 && r.text === "", `status ${r.status}: ${r.text}`);
  const g = await call("GET", `${BASE}/endpoints/${endpointId}`);
  expect(g.status === 404 && typeof g.body.message === "string", `GET after DELETE: ${g.status} ${g.text}`);
});

await step("DELETE /templates/{templateId} answers 204", async () => {
  const r = await call("DELETE", `${BASE}/templates/${templateId}`);
  expect(r.status === 204 && r.text === "", `status ${r.status}: ${r.text}`);
  const l = await call("GET", `${BASE}/templates`);
  expect(l.status === 200 && Array.isArray(l.body) && !l.body.some((t) => t.id === templateId), `still listed: ${l.text}`);
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
