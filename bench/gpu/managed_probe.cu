// Issue 15's first measurement: can CUDA managed memory carry an expert cache in
// VRAM over RAM? (ggml-cuda allocates with cudaMallocManaged when
// GGML_CUDA_ENABLE_UNIFIED_MEMORY is set; hypura would prefetch the routed
// experts' ranges to the GPU from the eval callback and push cold ones back.)
// Measures, on one GPU:
//   1. explicit migration host -> device with cudaMemPrefetchAsync, per slice
//      size (the size of one expert's slice: 0.25 MiB .. 64 MiB), GB/s;
//   2. the same ranges pulled by GPU page faults (a kernel reads memory still
//      on the host): what a missed prefetch costs;
//   3. pushing back device -> host (eviction of cold experts);
//   4. the baseline: cudaMemcpyAsync from pinned host memory;
//   5. a kernel reading resident managed memory vs cudaMalloc memory (is the
//      rest of the model slowed by living in managed memory?).
// Build: nvcc -O2 -arch=sm_90 -o managed_probe managed_probe.cu
// Run:   ./managed_probe [GiB per test region, default 1]
#include <cuda_runtime.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CK(x)                                                                                          \
    do {                                                                                               \
        cudaError_t e_ = (x);                                                                          \
        if (e_ != cudaSuccess) {                                                                       \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));      \
            exit(1);                                                                                   \
        }                                                                                              \
    } while (0)

__global__ void read_all(const float4 *p, size_t n, float *out) {
    float s = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float4 v = p[i];
        s += v.x + v.y + v.z + v.w;
    }
    if (s == 1234.5f) *out = s; // keeps the reads
}

static cudaError_t prefetch(const void *p, size_t n, int dev, cudaStream_t st) {
#if CUDART_VERSION >= 13000
    cudaMemLocation loc;
    loc.type = dev == cudaCpuDeviceId ? cudaMemLocationTypeHost : cudaMemLocationTypeDevice;
    loc.id = dev == cudaCpuDeviceId ? 0 : dev;
    return cudaMemPrefetchAsync(p, n, loc, 0, st);
#else
    return cudaMemPrefetchAsync(p, n, dev, st);
#endif
}

static float elapsed(cudaEvent_t a, cudaEvent_t b) {
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    return ms;
}

int main(int argc, char **argv) {
    size_t region = (size_t)((argc > 1 ? atof(argv[1]) : 1.0) * (1 << 30));
    region &= ~(((size_t)64 << 20) - 1);
    const int dev = 0;
    CK(cudaSetDevice(dev));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, dev));
    int pma = 0, cma = 0;
    cudaDeviceGetAttribute(&pma, cudaDevAttrPageableMemoryAccess, dev);
    cudaDeviceGetAttribute(&cma, cudaDevAttrConcurrentManagedAccess, dev);
    printf("device %s, CUDA runtime %d, concurrent managed access %d, pageable memory access %d\n", prop.name,
           CUDART_VERSION, cma, pma);
    cudaStream_t st;
    CK(cudaStreamCreate(&st));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    float *sink;
    CK(cudaMalloc(&sink, sizeof(float)));

    static const size_t sizes[] = {256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20};
    const int n_sizes = sizeof sizes / sizeof sizes[0];
    char *m;
    CK(cudaMallocManaged(&m, region * (n_sizes + 2)));
    memset(m, 1, region * (n_sizes + 2)); // every page first touched on the host

    printf("1. prefetch host->device (cudaMemPrefetchAsync), %zu MiB per size:\n", region >> 20);
    for (int i = 0; i < n_sizes; i++) {
        char *r = m + region * i;
        CK(cudaEventRecord(e0, st));
        for (size_t off = 0; off < region; off += sizes[i]) CK(prefetch(r + off, sizes[i], dev, st));
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        float ms = elapsed(e0, e1);
        printf("   slice %6zu KiB: %7.2f GB/s, %8.1f us per slice\n", sizes[i] >> 10, region / (ms * 1e6),
               ms * 1e3 / (region / sizes[i]));
    }
    // 2. faults: a kernel reads a region still on the host
    {
        char *r = m + region * n_sizes;
        CK(cudaEventRecord(e0, st));
        read_all<<<prop.multiProcessorCount * 4, 256, 0, st>>>((const float4 *)r, region / 16, sink);
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        float ms = elapsed(e0, e1);
        printf("2. GPU page faults pulling %zu MiB (a kernel reads it where it lies, on the host): %.2f GB/s\n",
               region >> 20, region / (ms * 1e6));
        // the same kernel again, now that it is resident: the managed read bandwidth
        CK(cudaEventRecord(e0, st));
        read_all<<<prop.multiProcessorCount * 4, 256, 0, st>>>((const float4 *)r, region / 16, sink);
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        ms = elapsed(e0, e1);
        printf("5a. kernel reading %zu MiB of resident managed memory: %.0f GB/s\n", region >> 20,
               region / (ms * 1e6));
    }
    // 3. evict: device -> host, in 4 MiB slices
    {
        char *r = m + region * 2; // prefetched to the device in test 1 (4 MiB slices)
        CK(cudaEventRecord(e0, st));
        for (size_t off = 0; off < region; off += 4 << 20) CK(prefetch(r + off, 4 << 20, cudaCpuDeviceId, st));
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        printf("3. push back device->host (cudaMemPrefetchAsync to the CPU), 4 MiB slices: %.2f GB/s\n",
               region / (elapsed(e0, e1) * 1e6));
    }
    // 4. pinned memcpy baseline, 5b. cudaMalloc read bandwidth
    {
        void *h, *d;
        CK(cudaMallocHost(&h, region));
        CK(cudaMalloc(&d, region));
        memset(h, 1, region);
        CK(cudaMemcpyAsync(d, h, region, cudaMemcpyHostToDevice, st)); // warm
        CK(cudaEventRecord(e0, st));
        CK(cudaMemcpyAsync(d, h, region, cudaMemcpyHostToDevice, st));
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        printf("4. cudaMemcpyAsync pinned host->device: %.2f GB/s\n", region / (elapsed(e0, e1) * 1e6));
        for (size_t s2 : {(size_t)(1 << 20), (size_t)(4 << 20)}) {
            CK(cudaEventRecord(e0, st));
            for (size_t off = 0; off < region; off += s2)
                CK(cudaMemcpyAsync((char *)d + off, (char *)h + off, s2, cudaMemcpyHostToDevice, st));
            CK(cudaEventRecord(e1, st));
            CK(cudaEventSynchronize(e1));
            printf("   in %zu KiB pieces: %.2f GB/s\n", s2 >> 10, region / (elapsed(e0, e1) * 1e6));
        }
        read_all<<<prop.multiProcessorCount * 4, 256, 0, st>>>((const float4 *)d, region / 16, sink);
        CK(cudaEventRecord(e0, st));
        read_all<<<prop.multiProcessorCount * 4, 256, 0, st>>>((const float4 *)d, region / 16, sink);
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        printf("5b. kernel reading %zu MiB of cudaMalloc memory: %.0f GB/s\n", region >> 20,
               region / (elapsed(e0, e1) * 1e6));
        CK(cudaFreeHost(h));
        CK(cudaFree(d));
    }
    CK(cudaFree(m));
    return 0;
}
