/* A fake libcuda for tests without a GPU: the driver calls the checkpoint
 * code makes, over a state machine kept in files, so that a helper process
 * and the test see the same processes.
 *
 * $FAKECUDA_DIR holds:
 *   version              cuDriverGetVersion's answer (default 12080)
 *   init                 cuInit's result (default 0)
 *   state.<pid>          the pid's CUprocessState; absent: no CUDA context
 *   fail.<op>.<pid>      a result to return instead of doing op; -1 aborts
 *                        the calling process, -2 hangs it
 *   delay.<op>.<pid>     milliseconds to sleep before doing op
 *   calls                appended: "<op> <pid> <arg>" for each call
 * with op one of state, lock, checkpoint, restore, unlock.
 *
 * Built with -DFAKECUDA_OLD it has no checkpoint functions (a driver
 * before 570).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

enum { OK = 0, INVALID_VALUE = 1, NOT_INITIALIZED = 3, ILLEGAL_STATE = 401 };
enum { RUNNING = 0, LOCKED = 1, CHECKPOINTED = 2 };

static const char *dir(void) {
	const char *d = getenv("FAKECUDA_DIR");
	return d ? d : "/nonexistent";
}

static int read_int(const char *name, int def) {
	char p[4096];
	snprintf(p, sizeof p, "%s/%s", dir(), name);
	FILE *f = fopen(p, "r");
	if (!f) return def;
	int v = def;
	if (fscanf(f, "%d", &v) != 1) v = def;
	fclose(f);
	return v;
}

__attribute__((unused)) static void write_int(const char *name, int v) {
	char p[4096], tmp[4200];
	snprintf(p, sizeof p, "%s/%s", dir(), name);
	snprintf(tmp, sizeof tmp, "%s.%d.tmp", p, (int)getpid());
	FILE *f = fopen(tmp, "w");
	if (!f) return;
	fprintf(f, "%d\n", v);
	fclose(f);
	rename(tmp, p);
}

__attribute__((unused)) static void log_call(const char *op, int pid, long arg) {
	char p[4096];
	snprintf(p, sizeof p, "%s/calls", dir());
	FILE *f = fopen(p, "a");
	if (!f) return;
	fprintf(f, "%s %d %ld\n", op, pid, arg);
	fclose(f);
}

/* scripted returns the injected result for op on pid, or -100 for none. */
__attribute__((unused)) static int scripted(const char *op, int pid) {
	char name[256];
	snprintf(name, sizeof name, "delay.%s.%d", op, pid);
	int ms = read_int(name, 0);
	if (ms > 0) {
		struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
		nanosleep(&ts, NULL);
	}
	snprintf(name, sizeof name, "fail.%s.%d", op, pid);
	int r = read_int(name, -100);
	if (r == -1) abort();
	if (r == -2) for (;;) pause();
	return r;
}

int cuDriverGetVersion(int *v) {
	if (!v) return INVALID_VALUE;
	*v = read_int("version", 12080);
	return OK;
}

int cuInit(unsigned int flags) {
	if (flags != 0) return INVALID_VALUE;
	return read_int("init", OK);
}

int cuGetErrorName(int r, const char **s) {
	if (r == 12345) { *s = "CUDA_ERROR_FAKE"; return OK; }
	return INVALID_VALUE;
}

#ifndef FAKECUDA_OLD

typedef struct {
	unsigned int timeoutMs;
	unsigned int reserved0;
	unsigned long long reserved1[7];
} lock_args;

static char state_name[64];
static const char *state_file(int pid) {
	snprintf(state_name, sizeof state_name, "state.%d", pid);
	return state_name;
}

/* step moves pid from state from to state to, as the driver does. */
static int step(const char *op, int pid, long arg, int from, int to) {
	log_call(op, pid, arg);
	int r = scripted(op, pid);
	if (r != -100) return r;
	int s = read_int(state_file(pid), -1);
	if (s < 0) return NOT_INITIALIZED;
	if (s != from) return ILLEGAL_STATE;
	write_int(state_file(pid), to);
	return OK;
}

int cuCheckpointProcessGetState(int pid, int *state) {
	log_call("state", pid, 0);
	if (!state) return INVALID_VALUE;
	int r = scripted("state", pid);
	if (r != -100) return r;
	int s = read_int(state_file(pid), -1);
	if (s < 0) return NOT_INITIALIZED;
	*state = s;
	return OK;
}

int cuCheckpointProcessLock(int pid, lock_args *a) {
	long ms = a ? (long)a->timeoutMs : -1;
	if (a) {
		if (a->reserved0) return INVALID_VALUE;
		for (int i = 0; i < 7; i++) if (a->reserved1[i]) return INVALID_VALUE;
	}
	return step("lock", pid, ms, RUNNING, LOCKED);
}

int cuCheckpointProcessCheckpoint(int pid, void *a) {
	return step("checkpoint", pid, a != NULL, LOCKED, CHECKPOINTED);
}

int cuCheckpointProcessRestore(int pid, void *a) {
	return step("restore", pid, a != NULL, CHECKPOINTED, LOCKED);
}

int cuCheckpointProcessUnlock(int pid, void *a) {
	return step("unlock", pid, a != NULL, LOCKED, RUNNING);
}

#endif
