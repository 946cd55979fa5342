// cudaprobe is the CUDA half of the GPU test worker (tests/gpu): a
// long-lived process that keeps one CUDA context, a counter in GPU memory
// and optional ballast allocations, and answers one JSON line per command
// read from stdin:
//
//	info      {"devices":N,"uuid":"GPU-...","name":"...","total":B,"free":B}
//	inc       {"counter":N}   a kernel adds 1 to the counter on the GPU
//	alloc MB  {"held":B}      allocate and fill MB MiB more, kept until free
//	free      {"held":0}
//
// Because the context lives as long as the process, freezing, parking and
// reviving the worker must leave the counter and the ballast intact.
#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>
#include <vector>

__global__ void bump(unsigned long long *c) { *c += 1; }
__global__ void fill(unsigned char *p, size_t n, unsigned char v) {
	for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) p[i] = v;
}

static void fail(const char *what, cudaError_t e) {
	printf("{\"error\":\"%s: %s\"}\n", what, cudaGetErrorString(e));
	fflush(stdout);
}

int main() {
	int n = 0;
	cudaError_t e = cudaGetDeviceCount(&n);
	if (e != cudaSuccess) { fail("cudaGetDeviceCount", e); return 1; }
	unsigned long long *counter = nullptr;
	if ((e = cudaMalloc(&counter, sizeof *counter)) != cudaSuccess) { fail("cudaMalloc counter", e); return 1; }
	cudaMemset(counter, 0, sizeof *counter);
	std::vector<void *> held;
	size_t heldBytes = 0;
	char line[256];
	while (fgets(line, sizeof line, stdin)) {
		if (!strncmp(line, "info", 4)) {
			cudaDeviceProp p;
			cudaGetDeviceProperties(&p, 0);
			size_t fr = 0, tot = 0;
			cudaMemGetInfo(&fr, &tot);
			const unsigned char *u = (const unsigned char *)p.uuid.bytes;
			printf("{\"devices\":%d,\"name\":\"%s\",\"uuid\":\"GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x\",\"total\":%zu,\"free\":%zu}\n",
			       n, p.name, u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15], tot, fr);
		} else if (!strncmp(line, "inc", 3)) {
			bump<<<1, 1>>>(counter);
			unsigned long long v = 0;
			if ((e = cudaMemcpy(&v, counter, sizeof v, cudaMemcpyDeviceToHost)) != cudaSuccess) { fail("inc", e); continue; }
			printf("{\"counter\":%llu}\n", v);
		} else if (!strncmp(line, "alloc", 5)) {
			size_t mb = 0;
			sscanf(line + 5, "%zu", &mb);
			void *p = nullptr;
			if ((e = cudaMalloc(&p, mb << 20)) != cudaSuccess) { fail("alloc", e); continue; }
			fill<<<1024, 256>>>((unsigned char *)p, mb << 20, 0x5a);
			cudaDeviceSynchronize();
			held.push_back(p);
			heldBytes += mb << 20;
			printf("{\"held\":%zu}\n", heldBytes);
		} else if (!strncmp(line, "free", 4)) {
			for (void *p : held) cudaFree(p);
			held.clear();
			heldBytes = 0;
			printf("{\"held\":0}\n");
		} else {
			printf("{\"error\":\"unknown command\"}\n");
		}
		fflush(stdout);
	}
	return 0;
}
