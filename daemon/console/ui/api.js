// The console's one door to emberd: the same /v1 and /v2 API as the CLI,
// authenticated by the session cookie (contract: daemon/httpapi/session.go).
// The CSRF token lives in this module's memory only: never in web storage
// or a URL, so a reload fetches it again from GET /console/session.

export const session = { csrfToken: '', keyId: '', name: '', scope: '', expiresAt: '' };

/** ApiError is a refusal from emberd, with its message as the daemon wrote it. */
export class ApiError extends Error {
  constructor(status, body, text) {
    const msg = (body && (body.error || body.message)) || text || `HTTP ${status}`;
    super(typeof msg === 'string' ? msg : JSON.stringify(msg));
    this.status = status;
    this.body = body || {};
    this.reason = this.body.reason || '';
    this.field = this.body.field || '';
  }
}

let onSessionLost = () => {};
/** setSessionLost sets what a 401 does (app.js: back to the login page). */
export function setSessionLost(fn) { onSessionLost = fn; }

/** csrfHeaders are the headers every change (non-GET) carries. */
export function csrfHeaders() {
  return session.csrfToken ? { 'X-CSRF-Token': session.csrfToken } : {};
}

function parse(text) {
  if (!text) return null;
  try { return JSON.parse(text); } catch { return null; }
}

/**
 * api sends one request and answers its JSON body; a non-2xx answer
 * throws an ApiError. A 401 ends the session in the page (the cookie is
 * unknown, expired, or its key was revoked) unless opts.quiet.
 */
export async function api(method, path, body, opts = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET' && method !== 'HEAD') Object.assign(headers, csrfHeaders());
  let payload;
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = typeof body === 'string' ? body : JSON.stringify(body);
  }
  const res = await fetch(path, { method, headers, body: payload, credentials: 'same-origin', signal: opts.signal, cache: 'no-store' });
  const text = await res.text();
  const data = parse(text);
  if (!res.ok) {
    const err = new ApiError(res.status, data, text);
    if (res.status === 401 && !opts.quiet) onSessionLost(err);
    throw err;
  }
  return data;
}

export const get = (path, opts) => api('GET', path, undefined, opts);

/** canChange: the session's key may change things (scope admin). */
export function canChange() { return session.scope === 'admin'; }
/** canInvoke: the session's key may send jobs (admin or invoke). */
export function canInvoke() { return session.scope === 'admin' || session.scope === 'invoke'; }

/** whyNot says, for a disabled control, why this key cannot do it. */
export function whyNot(what, needed = 'admin') {
  return `Your key "${session.name || session.keyId}" has scope ${session.scope}: ${what} needs scope ${needed}.`;
}

/** lost reports a 401 met outside api() (a streamed log). */
export function lost(err) { onSessionLost(err); }
