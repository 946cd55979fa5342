// Live updates by polling: every `every` ms while calls succeed, doubling
// up to 30 s while they fail, and not at all while the tab is hidden (a
// hidden tab catches up at once when shown again).

const live = new Set();

document.addEventListener('visibilitychange', () => {
  if (!document.hidden) for (const p of live) p.wake();
});

/**
 * poll calls fn now and then repeatedly; onError gets a failure (and null
 * on the next success). It returns a handle with stop() and now().
 */
export function poll(fn, every = 2000, onError = () => {}) {
  let timer = 0, stopped = false, running = false, delay = every, due = false;
  const p = {
    async run() {
      if (stopped) return;
      clearTimeout(timer);
      if (document.hidden) { due = true; return; }
      if (running) { due = true; return; }
      running = true; due = false;
      try {
        await fn();
        delay = every;
        onError(null);
      } catch (e) {
        delay = Math.min(Math.max(delay * 2, every), 30000);
        if (e && e.name !== 'AbortError') onError(e);
      } finally {
        running = false;
      }
      if (stopped) return;
      if (due) { p.run(); return; }
      timer = setTimeout(() => p.run(), delay);
    },
    wake() { if (due && !running) p.run(); },
    now() { p.run(); },
    stop() { stopped = true; clearTimeout(timer); live.delete(p); },
  };
  live.add(p);
  p.run();
  return p;
}

/** stopAll ends every poller (a page change, a sign-out). */
export function stopAll() { for (const p of [...live]) p.stop(); }
