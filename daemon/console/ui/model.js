// What the console derives from the API's answers.

import { num } from './dom.js';

/** Worker states in the order the console lists them (scheduler/workers.go, plus throttled from stats). */
export const workerStates = ['initializing', 'running', 'idle', 'draining', 'frozen', 'parked', 'throttled', 'unhealthy'];

/** stateHelp explains each worker state in a tooltip. */
export const stateHelp = {
  initializing: 'starting: container created, handler not yet polling for jobs',
  running: 'running one or more jobs',
  idle: 'ready, waiting for a job (leaves after the idle timeout)',
  draining: 'finishing its jobs, then stopping',
  frozen: 'FlashBoot: suspended after its idle timeout, memory kept; a job thaws it',
  parked: 'GPU state moved to host memory, GPUs given up; a job revives it',
  throttled: 'wanted but not started: no free GPU (or capacity) for it',
  unhealthy: 'failed to start or stopped answering; see the reason',
};

/**
 * endpointState sums an endpoint up in one word from its stats: what an
 * operator asks first ("is it serving?").
 */
export function endpointState(st) {
  if (!st) return { state: 'unknown', why: 'no stats' };
  const w = st.workers || {};
  const n = (k) => num(w[k]);
  const q = num(st.inQueue);
  if (n('running') || num(st.inProgress)) return { state: 'running', why: 'workers are running jobs' };
  if (n('unhealthy') && !n('idle') && !n('initializing')) return { state: 'unhealthy', why: 'its workers failed; see their reasons' };
  if (n('throttled')) return { state: 'throttled', why: 'jobs wait: no free GPU for another worker' };
  if (n('initializing')) return { state: 'starting', why: 'a worker is starting' };
  if (n('idle')) return { state: 'ready', why: 'idle workers wait for jobs' };
  if (n('frozen') || n('parked')) return { state: 'frozen', why: 'workers are frozen/parked and wake on the next job' };
  if (q) return { state: 'waiting', why: 'jobs are queued and no worker is up yet' };
  return { state: 'scaled to zero', cls: 'zero', why: 'no workers: the next job starts one (cold start)' };
}

/** terminal job statuses (RunPod's). */
export const terminal = new Set(['COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT']);
