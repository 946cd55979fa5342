"""A RunPod-style serverless worker in Python, for Ember's tests.

It speaks Ember's worker protocol the way runpod-python 1.12 does
(/work/shared/spec/runpod-compat.md, section 3), with asyncio and aiohttp
only (Debian's python3-aiohttp; the image has no PyPI):

- job-take and job-stop are concurrent long-polls, each bounded at 90 s
  and never cancelled by SIGTERM;
- SIGTERM or SIGINT only clears "alive": a loop ends once its request in
  flight has returned, and the process exits once both loops have, after
  the job in hand has finished;
- pings run on their own every RUNPOD_PING_INTERVAL ms, naming the job
  held, and do not hold up the exit;
- a plain handler posts one job-done; a generator handler posts each
  yielded value to job-stream, in order, then job-done with isStream=true;
- a result with "refresh_worker": true is posted with "stopPod": true
  (the platform replaces the worker; the process keeps serving until told
  to stop, as the SDK's does);
- a job named in a job-stop answer is cancelled and gets no job-done.

Concurrency is 1, as the SDK's default: a job runs in the take loop, as an
asyncio task the stop loop can cancel. Deviations from the SDK, for tests:
the ping interval is used in ms (the SDK integer-divides it into seconds),
and a transport error on take pauses 50 ms rather than re-polling at once.

At exit it writes /runpod-volume/exits/WORKER.json (when it got SIGTERM,
when it exited, when its last job-stop poll started, jobs run), which the
test reads.
"""

import asyncio
import inspect
import json
import os
import signal
import sys
import time
import traceback
import urllib.parse

import aiohttp

SDK_VERSION = "1.12.0"  # the runpod-python whose protocol this follows
VOLUME = "/runpod-volume"


def now_ms():
    return int(time.time() * 1000)


def log(msg):
    print(time.strftime("%H:%M:%S ") + msg, file=sys.stderr, flush=True)


# Handlers. The job's input picks one; each is detected as the SDK detects
# handlers: an async generator function streams, a coroutine function
# returns one result.


async def echo(job):
    """Echoes the input, with what the worker sees of its container."""
    inp = job["input"]
    await asyncio.sleep(inp.get("sleep_ms", 0) / 1000)
    out = {"echo": inp, "worker": os.environ.get("RUNPOD_POD_ID"), "python": sys.version.split()[0],
           "aiohttp": aiohttp.__version__, "pid": os.getpid()}
    if "echo_env" in inp:
        out["env"] = os.environ.get(inp["echo_env"])
    if inp.get("interfaces"):
        # The network interfaces of the worker's namespace.
        with open("/proc/net/dev") as f:
            out["interfaces"] = sorted(line.split(":")[0].strip() for line in f.readlines()[2:])
    if "read" in inp:
        with open(os.path.join(VOLUME, inp["read"])) as f:
            out["read"] = f.read()
    if "write" in inp:
        path = os.path.join(VOLUME, inp["write"]["path"])
        with open(path + ".tmp", "w") as f:
            f.write(inp["write"]["text"])
        os.replace(path + ".tmp", path)
    if inp.get("raise"):
        raise RuntimeError(inp["raise"])
    if inp.get("refresh_worker"):
        out["refresh_worker"] = True
    return out


async def count(job):
    """Yields {"i": 0..n-1}, pausing between chunks."""
    inp = job["input"]
    for i in range(inp.get("n", 3)):
        await asyncio.sleep(inp.get("every_ms", 10) / 1000)
        yield {"i": i, "worker": os.environ.get("RUNPOD_POD_ID")}


HANDLERS = {"echo": echo, "count": count}


class Worker:
    def __init__(self):
        env = os.environ
        self.id = env["RUNPOD_POD_ID"]
        self.key = env.get("RUNPOD_AI_API_KEY", "")
        self.take_url = env["RUNPOD_WEBHOOK_GET_JOB"].replace("$ID", self.id)
        if "/job-take/" not in self.take_url:
            raise SystemExit("RUNPOD_WEBHOOK_GET_JOB has no /job-take/")
        self.stop_url = self.take_url.replace("/job-take/", "/job-stop/", 1)
        self.done_url = env["RUNPOD_WEBHOOK_POST_OUTPUT"].replace("$RUNPOD_POD_ID", self.id)
        self.stream_url = env["RUNPOD_WEBHOOK_POST_STREAM"].replace("$RUNPOD_POD_ID", self.id)
        self.ping_url = env["RUNPOD_WEBHOOK_PING"].replace("$RUNPOD_POD_ID", self.id)
        self.ping_every = max(int(env.get("RUNPOD_PING_INTERVAL", "10000")), 100) / 1000
        self.alive = True
        self.current = None  # (job id, task) of the job in hand
        self.report = {"worker": self.id, "termAt": 0, "exitAt": 0, "lastStopPollAt": 0,
                       "stopPolls": 0, "jobs": 0, "cancelled": []}

    def on_signal(self, sig):
        if self.alive:
            self.report["termAt"] = now_ms()
            log(f"received {signal.Signals(sig).name}: finishing, then exiting")
        self.alive = False

    async def main(self):
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.on_signal, sig)
        headers = {"Authorization": self.key, "Content-Type": "application/json",
                   "User-Agent": f"RunPod-Python-SDK/{SDK_VERSION} (ember test worker; aiohttp {aiohttp.__version__})"}
        async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=600)) as s:
            self.session = s
            log(f"worker {self.id}: Python {sys.version.split()[0]}, aiohttp {aiohttp.__version__}")
            pinger = asyncio.create_task(self.ping_loop())
            await asyncio.gather(self.take_loop(), self.stop_loop())
            pinger.cancel()
            await asyncio.wait([pinger])
        self.report["exitAt"] = now_ms()
        os.makedirs(os.path.join(VOLUME, "exits"), exist_ok=True)
        path = os.path.join(VOLUME, "exits", self.id + ".json")
        with open(path + ".tmp", "w") as f:
            json.dump(self.report, f)
        os.replace(path + ".tmp", path)
        log("exited: " + json.dumps(self.report))

    async def get(self, url, timeout=90):
        """One GET, bounded at timeout s (the SDK's wait_for on a take)."""
        async with asyncio.timeout(timeout):
            async with self.session.get(url) as r:
                body = await r.read()
                return r.status, r.headers.get("Content-Type", ""), body

    async def take_loop(self):
        while self.alive:
            try:
                status, ctype, body = await self.get(self.take_url + "&job_in_progress=0")
            except (aiohttp.ClientError, TimeoutError) as e:
                log(f"job-take: {e!r}")
                await asyncio.sleep(0.05)
                continue
            if status == 429:
                await asyncio.sleep(5)
                continue
            if status != 200 or not ctype.startswith("application/json") or not body:
                continue  # 204 (no job), 400, errors: re-poll at once
            try:
                job = json.loads(body)
                job["id"], job["input"]
            except (ValueError, KeyError, TypeError) as e:
                log(f"job-take: not a job: {e!r}")
                continue
            await self.run(job)

    async def run(self, job):
        """Runs one job to its end (or its cancellation by job-stop)."""
        self.report["jobs"] += 1
        task = asyncio.create_task(self.handle(job))
        self.current = (job["id"], task)
        await asyncio.wait([task])
        self.current = None
        if task.cancelled():
            log(f"job {job['id']}: stopped by job-stop")
            self.report["cancelled"].append(job["id"])

    async def handle(self, job):
        name = job["input"].get("handler", "echo") if isinstance(job["input"], dict) else "echo"
        handler = HANDLERS.get(name)
        log(f"job {job['id']}: handler {name}")
        if inspect.isasyncgenfunction(handler):
            try:
                async for chunk in handler(job):
                    await self.post(self.stream_url, job["id"], "false", {"output": chunk})
                body = {"output": []}  # no return_aggregate_stream
            except asyncio.CancelledError:
                raise
            except Exception as e:
                body = {"error": f"handler: {e} \ntraceback: {traceback.format_exc()}"}
            await self.post(self.done_url, job["id"], "true", body)
            return
        try:
            if handler is None:
                raise ValueError(f"no handler {name!r}")
            out = await handler(job)
            body = {"output": out}
            if isinstance(out, dict) and out.pop("refresh_worker", False):
                body["stopPod"] = True
        except asyncio.CancelledError:
            raise
        except Exception as e:
            body = {"error": json.dumps({"error_type": str(type(e)), "error_message": str(e),
                                         "error_traceback": traceback.format_exc(),
                                         "worker_id": self.id, "runpod_version": SDK_VERSION})}
        await self.post(self.done_url, job["id"], "false", body)

    async def post(self, template, job_id, is_stream, body):
        """A result or chunk post: 3 attempts, retrying 5xx only."""
        url = template.replace("$ID", job_id) + "&isStream=" + is_stream
        data = json.dumps(body, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", "charset": "utf-8", "X-Request-ID": job_id}
        for attempt, wait in enumerate((2, 3, 0)):
            try:
                async with self.session.post(url, data=data, headers=headers) as r:
                    await r.read()
                    if r.status < 500:
                        if r.status >= 400:
                            log(f"job {job_id}: post answered {r.status}")
                        return
            except aiohttp.ClientError as e:
                log(f"job {job_id}: post failed: {e!r}")
                return
            if wait:
                await asyncio.sleep(wait)
        log(f"job {job_id}: result dropped after 3 attempts")

    async def stop_loop(self):
        while self.alive:
            self.report["lastStopPollAt"] = now_ms()
            self.report["stopPolls"] += 1
            try:
                status, _, body = await self.get(self.stop_url)
            except (aiohttp.ClientError, TimeoutError) as e:
                log(f"job-stop: {e!r}")
                await asyncio.sleep(1)
                continue
            if status == 429:
                await asyncio.sleep(5)
                continue
            ids = []
            if status == 200:
                try:
                    ids = [i for i in json.loads(body).get("jobsToStop", []) if isinstance(i, str)]
                except (ValueError, AttributeError):
                    pass
            for i in ids:
                if self.current and self.current[0] == i:
                    self.current[1].cancel()
            if not ids:
                await asyncio.sleep(1)

    async def ping_loop(self):
        while True:
            q = {"runpod_version": SDK_VERSION}
            if self.current:
                q["job_id"] = self.current[0]
            try:
                status, _, _ = await self.get(self.ping_url + "&" + urllib.parse.urlencode(q), timeout=2 * self.ping_every)
                if status != 200:
                    log(f"ping answered {status}")
            except (aiohttp.ClientError, TimeoutError) as e:
                log(f"ping: {e!r}")
            await asyncio.sleep(self.ping_every)


if __name__ == "__main__":
    asyncio.run(Worker().main())
