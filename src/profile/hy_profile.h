/* hy_profile: what this machine offers the planner.
 *
 * CPU (model, cores, SIMD), RAM and the memory limit that really applies (the
 * smallest cgroup v1/v2 limit up the process's hierarchy), memcpy bandwidth, the
 * speed of ggml's matrix-vector product per weight type (hy_matvec.h), the
 * storage read bandwidth of a directory's filesystem (an O_DIRECT sweep over
 * block size x queue depth through hy_io, plus 4K random IOPS) and GPUs as ggml
 * sees them.
 *
 * Measured figures are cached as JSON in hy_cache_dir()/profile.json and reused
 * until --refresh, 7 days of age, or a change of the machine signature (CPU
 * model, logical cores, RAM total, storage path; a quick profile is
 * not reused for a full one). RAM, cgroup and GPU memory figures are always read
 * fresh, so the budget reflects the moment of the call. A cache that cannot be
 * parsed is ignored with a warning and rewritten.
 *
 * The storage sweep writes a temporary file (1 GiB, 64 MiB when quick) that is
 * unlinked before the first byte is written (O_TMPFILE, or mkstemp + unlink), so
 * nothing is left behind on error, signal or crash. On a filesystem without
 * O_DIRECT (tmpfs) storage_direct is false and buffered reads are measured after
 * dropping the file from the page cache (which tmpfs cannot do: RAM speed). */
#ifndef HY_PROFILE_H
#define HY_PROFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "profile/hy_matvec.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char name[128];
    char kind[16]; /* "gpu" or "igpu" */
    uint64_t mem_total, mem_free;
    double h2d_gbps; /* host (pinned when the device offers it) -> device copy; 0 = not measured */
} hy_gpu_info;

typedef struct {
    char cpu_model[128];
    int cores_logical, cores_physical;
    char simd[128]; /* "avx2 avx512f fma f16c ..." */
    uint64_t ram_total, ram_available; /* /proc/meminfo */
    uint64_t cgroup_limit;             /* smallest memory limit up the cgroup hierarchy (v2 memory.max/high,
                                          v1 memory.limit_in_bytes); 0 = none */
    uint64_t cgroup_usage;             /* the cgroup's usage minus its inactive page cache (working set) */
    uint64_t mem_budget_default;       /* min(available, limit - usage) minus headroom (10 %, 128 MiB..2 GiB,
                                          at most a quarter): what a run may use */
    double mem_bw_gbps;                /* memcpy bandwidth (bytes copied per second), all cores */
    double piece_s;                    /* one small piece of a ggml graph computed on all cores after a
                                          pause of the main thread (a streamed pass is cut into pieces
                                          where hypura's eval callback works): seconds, median */
    double matvec_gbps[HY_MATVEC_NTYPES];          /* weight bytes per second of a matrix-vector product on all cores,
                                          by enum ggml_type (hy_matvec.h); 0 = not measured */
    char storage_path[1024];
    char storage_fs[32];
    bool storage_direct; /* O_DIRECT works there */
    double seq_read_gbps;     /* best sequential bandwidth over the sweep */
    double seq_read_qd1_gbps; /* 1 MiB requests, one in flight */
    double rand4k_iops;       /* 4 KiB random reads, 32 in flight */
    int n_sweep;
    struct {
        size_t block;
        int qd;
        double gbps;
    } sweep[32];
    int n_gpu;
    hy_gpu_info gpu[8]; /* ggml devices of type GPU / IGPU */
    double created;     /* unix time of the measurement */
    double elapsed_s;   /* how long the measurement took */
    bool quick;         /* measured in quick mode (smaller, shorter; rougher figures) */
    bool from_cache;    /* hy_profile_get reused the cached measurement */
} hy_profile;

typedef struct {
    const char *storage_path; /* directory whose filesystem to measure; NULL: hy_cache_dir() */
    bool refresh;             /* ignore the cache */
    bool storage;             /* measure storage (default true) */
    bool quick;               /* small test file, short points (for tests), about 1-2 s in all */
} hy_profile_params;

hy_profile_params hy_profile_default_params(void);

/* The profile, from the cache when it is valid (see above), else measured and
 * cached. 0 or <0 with err. */
int hy_profile_get(const hy_profile_params *p, hy_profile *out, char *err, size_t errlen);

/* Fills the storage_* fields, the seq/rand figures and the sweep of out for the
 * filesystem holding directory path. */
int hy_profile_measure_storage(const char *path, bool quick, hy_profile *out, char *err, size_t errlen);

/* *json_out: malloc'd JSON text (free() it). 0 or <0. */
int hy_profile_to_json(const hy_profile *p, char **json_out);
/* Parses what hy_profile_to_json wrote; every key is required. 0 or <0 with err. */
int hy_profile_from_json(const char *json, hy_profile *p, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
