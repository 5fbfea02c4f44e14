#include "profile/hy_profile.h"

#include "io/hy_io.h"
#include "profile/hy_matvec.h"
#include "util/hy_util.h"

#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define MiB (1024ull * 1024)
#define GiB (1024ull * MiB)
#define PROFILE_VERSION 3 /* 2: piece_s; 3: matvec_gbps */
#define PROFILE_MAX_AGE_S (7 * 86400.0)

hy_profile_params hy_profile_default_params(void) {
    hy_profile_params p = {.storage_path = NULL, .refresh = false, .storage = true, .quick = false};
    return p;
}

static double unix_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* truncating copy (no snprintf: its truncation warnings are noise here) */
static void copy_str(char *dst, size_t n, const char *src) {
    if (!n) return;
    size_t l = src ? strlen(src) : 0;
    if (l >= n) l = n - 1;
    if (l) memcpy(dst, src, l);
    dst[l] = 0;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    return s;
}

/* first line of a small file, trimmed; false when unreadable */
static bool read_line(const char *path, char *buf, size_t len) {
    FILE *f = fopen(path, "r");
    if (!f) return false;
    bool ok = fgets(buf, (int)len, f) != NULL;
    fclose(f);
    if (ok) memmove(buf, trim(buf), strlen(trim(buf)) + 1);
    return ok;
}

/* ---- CPU ------------------------------------------------------------------- */

static bool has_word(const char *list, const char *w) {
    size_t n = strlen(w);
    for (const char *p = list; (p = strstr(p, w)); p += n)
        if ((p == list || isspace((unsigned char)p[-1])) && (p[n] == 0 || isspace((unsigned char)p[n]))) return true;
    return false;
}

static void read_cpu(hy_profile *p) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    p->cores_logical = n > 0 ? (int)n : 1;
    p->cpu_model[0] = p->simd[0] = 0;

    char flags[4096] = "", line[4096];
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (!colon) continue;
        *colon = 0;
        char *key = trim(line), *val = trim(colon + 1);
        if (!p->cpu_model[0] && (!strcmp(key, "model name") || !strcmp(key, "Hardware") || !strcmp(key, "cpu model")))
            copy_str(p->cpu_model, sizeof p->cpu_model, val);
        if (!flags[0] && (!strcmp(key, "flags") || !strcmp(key, "Features"))) copy_str(flags, sizeof flags, val);
    }
    if (f) fclose(f);
    if (!p->cpu_model[0]) {
        struct utsname u;
        copy_str(p->cpu_model, sizeof p->cpu_model, uname(&u) ? "unknown" : u.machine);
    }

    /* the SIMD features that matter to ggml's kernels, in the kernel's spelling
     * (ARM names mapped to the common ones); older SSE levels go without saying
     * on x86-64 and would crowd out AMX in 128 characters */
    static const struct { const char *flag, *name; } simd[] = {
        {"sse4_2", "sse4_2"}, {"avx", "avx"},
        {"avx2", "avx2"}, {"fma", "fma"}, {"f16c", "f16c"}, {"avx_vnni", "avx_vnni"}, {"avx512f", "avx512f"},
        {"avx512bw", "avx512bw"}, {"avx512vl", "avx512vl"}, {"avx512_vnni", "avx512_vnni"},
        {"avx512_bf16", "avx512_bf16"}, {"amx_tile", "amx_tile"}, {"amx_int8", "amx_int8"},
        {"amx_bf16", "amx_bf16"}, {"asimd", "neon"}, {"asimdhp", "fp16"}, {"asimddp", "dotprod"},
        {"i8mm", "i8mm"}, {"bf16", "bf16"}, {"sve", "sve"}, {"sve2", "sve2"}};
    for (size_t i = 0; i < sizeof simd / sizeof simd[0]; i++) {
        if (!has_word(flags, simd[i].flag)) continue;
        size_t used = strlen(p->simd), n = strlen(simd[i].name);
        if (used + 1 + n >= sizeof p->simd) break; /* whole words only */
        if (used) p->simd[used++] = ' ';
        memcpy(p->simd + used, simd[i].name, n + 1);
    }

    /* physical cores: distinct (package, core) pairs */
    int pairs[1024][2], npairs = 0;
    DIR *d = opendir("/sys/devices/system/cpu");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (strncmp(e->d_name, "cpu", 3) || !isdigit((unsigned char)e->d_name[3])) continue;
        char path[512], v[64];
        int pkg = 0, core = -1;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/%s/topology/core_id", e->d_name);
        if (!read_line(path, v, sizeof v)) continue;
        core = atoi(v);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/%s/topology/physical_package_id", e->d_name);
        if (read_line(path, v, sizeof v)) pkg = atoi(v);
        bool seen = false;
        for (int i = 0; i < npairs && !seen; i++) seen = pairs[i][0] == pkg && pairs[i][1] == core;
        if (!seen && npairs < 1024) {
            pairs[npairs][0] = pkg;
            pairs[npairs][1] = core;
            npairs++;
        }
    }
    if (d) closedir(d);
    p->cores_physical = npairs > 0 && npairs <= p->cores_logical ? npairs : p->cores_logical;
}

/* ---- RAM and cgroups ----------------------------------------------------------- */

static void read_meminfo(hy_profile *p) {
    p->ram_total = p->ram_available = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        unsigned long long kb;
        if (sscanf(line, "MemTotal: %llu kB", &kb) == 1) p->ram_total = kb * 1024;
        else if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) p->ram_available = kb * 1024;
    }
    if (f) fclose(f);
    if (!p->ram_total) {
        long pages = sysconf(_SC_PHYS_PAGES), ps = sysconf(_SC_PAGESIZE);
        if (pages > 0 && ps > 0) p->ram_total = (uint64_t)pages * (uint64_t)ps;
    }
    if (!p->ram_available) {
        long pages = sysconf(_SC_AVPHYS_PAGES), ps = sysconf(_SC_PAGESIZE);
        if (pages > 0 && ps > 0) p->ram_available = (uint64_t)pages * (uint64_t)ps;
    }
}

/* a limit file: a number, or "max"/huge for none (returns 0) */
static uint64_t read_limit(const char *path) {
    char v[64];
    if (!read_line(path, v, sizeof v) || !isdigit((unsigned char)v[0])) return 0;
    unsigned long long x = strtoull(v, NULL, 10);
    return x >= (1ull << 60) ? 0 : x; /* v1 writes "no limit" as ~2^63 rounded to pages */
}

static uint64_t stat_key(const char *dir, const char *key) {
    char path[PATH_MAX + 32], line[256];
    snprintf(path, sizeof path, "%s/memory.stat", dir);
    FILE *f = fopen(path, "r");
    uint64_t r = 0;
    size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, n) && line[n] == ' ') {
            r = strtoull(line + n + 1, NULL, 10);
            break;
        }
    if (f) fclose(f);
    return r;
}

static void min_limit(uint64_t *lim, uint64_t v) {
    if (v && (*lim == 0 || v < *lim)) *lim = v;
}

/* Where a hierarchy of the given kind is mounted, and the cgroup root it shows. */
static bool find_mount(bool v2, char *mnt, size_t mlen, char *root, size_t rlen) {
    FILE *f = fopen("/proc/self/mountinfo", "r");
    char line[4096];
    bool found = false;
    while (!found && f && fgets(line, sizeof line, f)) {
        char r[PATH_MAX], m[PATH_MAX];
        if (sscanf(line, "%*s %*s %*s %4095s %4095s", r, m) != 2) continue;
        char *sep = strstr(line, " - ");
        if (!sep) continue;
        char fstype[64], src[256], opts[1024] = "";
        if (sscanf(sep + 3, "%63s %255s %1023s", fstype, src, opts) < 2) continue;
        if (v2 ? strcmp(fstype, "cgroup2") != 0 : (strcmp(fstype, "cgroup") != 0 || !strstr(opts, "memory"))) continue;
        if (!v2) { /* "memory" must be a whole option */
            bool whole = false;
            char *save = NULL;
            for (char *t = strtok_r(opts, ",", &save); t && !whole; t = strtok_r(NULL, ",", &save))
                whole = !strcmp(t, "memory");
            if (!whole) continue;
        }
        copy_str(mnt, mlen, m);
        copy_str(root, rlen, r);
        found = true;
    }
    if (f) fclose(f);
    return found;
}

/* the directory of our cgroup under that mount */
static bool cgroup_dir(bool v2, char *dir, size_t len, char *mnt, size_t mlen) {
    char root[PATH_MAX], path[PATH_MAX] = "", line[4096];
    if (!find_mount(v2, mnt, mlen, root, sizeof root)) return false;
    FILE *f = fopen("/proc/self/cgroup", "r");
    bool found = false;
    while (!found && f && fgets(line, sizeof line, f)) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c2 = 0;
        char *ctrls = c1 + 1, *cg = trim(c2 + 1);
        if (v2) found = !strncmp(line, "0", 1) && c1 == line + 1 && !*ctrls;
        else {
            char *save = NULL;
            for (char *t = strtok_r(ctrls, ",", &save); t && !found; t = strtok_r(NULL, ",", &save))
                found = !strcmp(t, "memory");
        }
        if (found) copy_str(path, sizeof path, cg);
    }
    if (f) fclose(f);
    if (!found) return false;
    const char *rel = path;
    size_t rl = strlen(root);
    if (strcmp(root, "/") && !strncmp(path, root, rl) && (path[rl] == '/' || !path[rl])) rel = path + rl;
    snprintf(dir, len, "%s%s", mnt, rel);
    struct stat st;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode)) copy_str(dir, len, mnt); /* namespaced view: the mount is ours */
    return true;
}

static void read_cgroup(hy_profile *p) {
    uint64_t lim = 0, usage = 0;
    char dir[PATH_MAX + 64], mnt[PATH_MAX];
    for (int v2 = 1; v2 >= 0; v2--) {
        if (!cgroup_dir(v2, dir, sizeof dir, mnt, sizeof mnt)) continue;
        char leaf[sizeof dir];
        copy_str(leaf, sizeof leaf, dir);
        /* walk up to the mount: the tightest limit anywhere above us applies */
        for (;;) {
            char f[sizeof dir + 32];
            if (v2) {
                snprintf(f, sizeof f, "%s/memory.max", dir);
                min_limit(&lim, read_limit(f));
                snprintf(f, sizeof f, "%s/memory.high", dir);
                min_limit(&lim, read_limit(f));
            } else {
                snprintf(f, sizeof f, "%s/memory.limit_in_bytes", dir);
                min_limit(&lim, read_limit(f));
            }
            if (strlen(dir) <= strlen(mnt)) break;
            char *slash = strrchr(dir, '/');
            if (!slash || slash == dir) break;
            *slash = 0;
        }
        char f[sizeof leaf + 32];
        uint64_t u = 0;
        if (v2) {
            snprintf(f, sizeof f, "%s/memory.current", leaf);
            u = read_limit(f);
            uint64_t inactive = stat_key(leaf, "inactive_file");
            u = u > inactive ? u - inactive : 0;
        } else {
            uint64_t h = stat_key(leaf, "hierarchical_memory_limit"); /* ancestors hidden from our view */
            min_limit(&lim, h >= (1ull << 60) ? 0 : h);
            snprintf(f, sizeof f, "%s/memory.usage_in_bytes", leaf);
            u = read_limit(f);
            uint64_t inactive = stat_key(leaf, "total_inactive_file");
            u = u > inactive ? u - inactive : 0;
        }
        if (u > usage) usage = u;
    }
    /* a limit above physical RAM constrains nothing */
    if (lim && p->ram_total && lim >= p->ram_total) lim = 0;
    p->cgroup_limit = lim;
    p->cgroup_usage = usage;
}

static void compute_budget(hy_profile *p) {
    uint64_t base = p->ram_available;
    if (p->cgroup_limit) {
        uint64_t room = p->cgroup_limit > p->cgroup_usage ? p->cgroup_limit - p->cgroup_usage : 0;
        if (room < base) base = room;
    }
    /* headroom for the allocator, the KV cache's growth, the OS: 10 %, 128 MiB..2 GiB,
     * but never more than a quarter of what there is (small cgroups) */
    uint64_t head = base / 10;
    if (head < 128 * MiB) head = 128 * MiB;
    if (head > 2 * GiB) head = 2 * GiB;
    if (head > base / 4) head = base / 4;
    p->mem_budget_default = base > head ? base - head : 0;
}

/* ---- GPUs ------------------------------------------------------------------ */

static double measure_h2d(ggml_backend_dev_t dev, uint64_t free_mem, bool quick) {
    size_t sz = quick ? 64 * MiB : 256 * MiB;
    if (free_mem < 2 * sz) return 0;
    ggml_backend_buffer_t dbuf = ggml_backend_buft_alloc_buffer(ggml_backend_dev_buffer_type(dev), sz);
    if (!dbuf) return 0;
    ggml_backend_buffer_type_t hbt = ggml_backend_dev_host_buffer_type(dev);
    ggml_backend_buffer_t hbuf = hbt ? ggml_backend_buft_alloc_buffer(hbt, sz) : NULL;
    void *host = hbuf ? ggml_backend_buffer_get_base(hbuf) : malloc(sz);
    double best = 0;
    struct ggml_init_params ip = {.mem_size = 4 * ggml_tensor_overhead(), .mem_buffer = NULL, .no_alloc = true};
    struct ggml_context *ctx = host ? ggml_init(ip) : NULL;
    if (ctx) {
        memset(host, 0x5a, sz);
        struct ggml_tensor *t = ggml_new_tensor_1d(ctx, GGML_TYPE_I8, (int64_t)sz);
        if (ggml_backend_tensor_alloc(dbuf, t, ggml_backend_buffer_get_base(dbuf)) == GGML_STATUS_SUCCESS) {
            for (int i = 0; i < 4; i++) {
                double t0 = hy_now();
                ggml_backend_tensor_set(t, host, 0, sz); /* synchronous */
                double dt = hy_now() - t0;
                if (i > 0 && dt > 0 && sz / dt / 1e9 > best) best = sz / dt / 1e9;
            }
        }
        ggml_free(ctx);
    }
    if (hbuf) ggml_backend_buffer_free(hbuf);
    else free(host);
    ggml_backend_buffer_free(dbuf);
    return best;
}

static void read_gpus(hy_profile *p, bool measure, bool quick) {
    /* dynamic-backend builds register nothing until loaded; static ones already did */
    if (ggml_backend_reg_count() == 0) ggml_backend_load_all();
    p->n_gpu = 0;
    size_t n = ggml_backend_dev_count();
    for (size_t i = 0; i < n && p->n_gpu < 8; i++) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        enum ggml_backend_dev_type type = ggml_backend_dev_type(dev);
        if (type != GGML_BACKEND_DEVICE_TYPE_GPU && type != GGML_BACKEND_DEVICE_TYPE_IGPU) continue;
        hy_gpu_info *g = &p->gpu[p->n_gpu++];
        memset(g, 0, sizeof *g);
        const char *desc = ggml_backend_dev_description(dev);
        copy_str(g->name, sizeof g->name, desc && *desc ? desc : ggml_backend_dev_name(dev));
        copy_str(g->kind, sizeof g->kind, type == GGML_BACKEND_DEVICE_TYPE_GPU ? "gpu" : "igpu");
        size_t fr = 0, tot = 0;
        ggml_backend_dev_memory(dev, &fr, &tot);
        g->mem_free = fr;
        g->mem_total = tot;
        if (measure) g->h2d_gbps = measure_h2d(dev, fr, quick);
    }
}

/* ---- a piece of a graph -------------------------------------------------------- */

/* A streamed pass reaches hypura's eval callback at some nodes; libllama computes the
 * graph in pieces that end there, each started on all threads after the main thread
 * has worked alone for a while (the callback: a few hundred microseconds). What one
 * piece costs beyond its arithmetic: a tiny graph (a 64 x 64 product) computed 200
 * times with a 300 us pause between, median. */
static double measure_piece(int threads) {
    struct ggml_init_params ip = {.mem_size = (size_t)4 << 20, .mem_buffer = NULL, .no_alloc = false};
    ggml_cpu_init();
    struct ggml_context *ctx = ggml_init(ip);
    if (!ctx) return 0;
    struct ggml_tensor *a = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, 64, 64);
    struct ggml_tensor *b = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, 64, 1);
    memset(a->data, 0, ggml_nbytes(a));
    memset(b->data, 0, ggml_nbytes(b));
    struct ggml_cgraph *gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, ggml_mul_mat(ctx, a, b));
    enum { N = 200 };
    double t[N];
    int n = 0;
    for (int i = 0; i < N; i++) {
        double g = hy_now() + 300e-6;
        while (hy_now() < g) {
        }
        double t0 = hy_now();
        if (ggml_graph_compute_with_ctx(ctx, gf, threads) != GGML_STATUS_SUCCESS) break;
        t[n++] = hy_now() - t0;
    }
    ggml_free(ctx);
    if (n < N / 2) return 0;
    for (int i = 1; i < n; i++) /* insertion sort: 200 values */
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            double x = t[j];
            t[j] = t[j - 1];
            t[j - 1] = x;
        }
    return t[n / 2];
}

/* ---- memory bandwidth ---------------------------------------------------------- */

typedef struct {
    pthread_barrier_t *bar;
    uint8_t *src, *dst;
    size_t n;
    int reps;
} bw_job;

static void *bw_worker(void *arg) {
    bw_job *j = arg;
    memset(j->src, 0x3c, j->n); /* fault the pages in from the thread that uses them */
    memset(j->dst, 0, j->n);
    for (int r = 0; r < j->reps; r++) {
        pthread_barrier_wait(j->bar);
        memcpy(j->dst, j->src, j->n);
        pthread_barrier_wait(j->bar);
    }
    return NULL;
}

static double measure_mem_bw(int threads, bool quick, uint64_t room) {
    size_t total = quick ? 64 * MiB : 256 * MiB;
    /* two buffers: stay well inside a small memory limit rather than be killed by it
     * (below 32 MiB the buffers would sit in the last-level cache) */
    while (total > 32 * MiB && 2 * (uint64_t)total > room / 2) total /= 2;
    if (threads < 1) threads = 1;
    if (threads > 256) threads = 256;
    uint8_t *src = malloc(total), *dst = malloc(total);
    if (!src || !dst) {
        free(src);
        free(dst);
        return 0;
    }
    const int reps = quick ? 4 : 8;
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)threads);
    bw_job jobs[256];
    pthread_t tid[256];
    size_t slice = total / (size_t)threads / 4096 * 4096;
    int started = 1;
    for (int i = 0; i < threads; i++) {
        jobs[i] = (bw_job){&bar, src + (size_t)i * slice, dst + (size_t)i * slice,
                           i == threads - 1 ? total - (size_t)i * slice : slice, reps};
    }
    for (int i = 1; i < threads; i++) {
        if (pthread_create(&tid[i], NULL, bw_worker, &jobs[i])) break;
        started++;
    }
    double best = 0;
    if (started == threads) {
        memset(jobs[0].src, 0x3c, jobs[0].n);
        memset(jobs[0].dst, 0, jobs[0].n);
        for (int r = 0; r < reps; r++) {
            pthread_barrier_wait(&bar);
            double t0 = hy_now();
            memcpy(jobs[0].dst, jobs[0].src, jobs[0].n);
            pthread_barrier_wait(&bar);
            double dt = hy_now() - t0;
            if (dt > 0 && total / dt / 1e9 > best) best = total / dt / 1e9;
        }
    } else {
        /* a thread could not start: the barrier would never open; this cannot be
         * unwound portably, so fall back to what the started threads can do alone */
        fprintf(stderr, "hypura: warning: memory bandwidth: could only start %d of %d threads\n", started, threads);
    }
    for (int i = 1; i < started; i++) pthread_join(tid[i], NULL);
    pthread_barrier_destroy(&bar);
    free(src);
    free(dst);
    return best;
}

/* ---- storage ------------------------------------------------------------------ */

static void fs_name(const char *path, char *out, size_t len) {
    char real[PATH_MAX], best_m[PATH_MAX] = "", best_t[64] = "";
    if (!realpath(path, real)) copy_str(real, sizeof real, path);
    FILE *f = fopen("/proc/self/mountinfo", "r");
    char line[4096];
    while (f && fgets(line, sizeof line, f)) {
        char m[PATH_MAX], t[64];
        char *sep = strstr(line, " - ");
        if (!sep || sscanf(line, "%*s %*s %*s %*s %4095s", m) != 1 || sscanf(sep + 3, "%63s", t) != 1) continue;
        size_t n = strlen(m);
        bool under = !strcmp(m, "/") || (!strncmp(real, m, n) && (real[n] == '/' || real[n] == 0));
        if (under && n >= strlen(best_m)) {
            copy_str(best_m, sizeof best_m, m);
            copy_str(best_t, sizeof best_t, t);
        }
    }
    if (f) fclose(f);
    copy_str(out, len, best_t[0] ? best_t : "unknown");
}

/* O_TMPFILE where the filesystem has it, else mkstemp + unlink: the file has no
 * name from the start, so it vanishes on any exit */
static int make_anon_file(const char *dir, char *err, size_t errlen) {
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) return fd;
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL && errno != ENOENT)
        return hy_fail(err, errlen, "cannot create a test file in %s: %s", dir, strerror(errno));
    char tmpl[PATH_MAX];
    if (snprintf(tmpl, sizeof tmpl, "%s/.hypura-iobench-XXXXXX", dir) >= (int)sizeof tmpl)
        return hy_fail(err, errlen, "path too long: %s", dir);
    fd = mkostemp(tmpl, O_CLOEXEC);
    if (fd < 0) return hy_fail(err, errlen, "cannot create a test file in %s: %s", dir, strerror(errno));
    unlink(tmpl);
    return fd;
}

static uint64_t xorshift(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static int fill_file(int fd, const char *procpath, uint64_t size, bool *direct, char *err, size_t errlen,
                     const char *dir) {
    const size_t blk = 8 * MiB;
    int wfd = open(procpath, O_WRONLY | O_CLOEXEC | O_DIRECT);
    *direct = wfd >= 0;
    if (wfd < 0) wfd = fd;
    uint8_t *buf = NULL;
    if (posix_memalign((void **)&buf, 4096, blk)) {
        if (wfd != fd) close(wfd);
        return hy_fail(err, errlen, "out of memory");
    }
    uint64_t s = 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
    for (size_t i = 0; i < blk / 8; i++) ((uint64_t *)buf)[i] = xorshift(&s);
    int rc = 0;
    for (uint64_t off = 0; off < size && !rc; off += blk) {
        ((uint64_t *)buf)[0] = off; /* every block differs */
        size_t n = size - off < blk ? (size_t)(size - off) : blk;
        size_t done = 0;
        while (done < n) {
            ssize_t w = pwrite(wfd, buf + done, n - done, (off_t)(off + done));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0 && errno == EINVAL && *direct && off == 0 && done == 0) { /* O_DIRECT refused on write */
                close(wfd);
                wfd = fd;
                *direct = false;
                continue;
            }
            if (w <= 0) {
                int e = w < 0 ? errno : ENOSPC;
                char fb[32];
                rc = hy_fail(err, errlen, "writing the %s storage test file in %s failed at %s: %s%s",
                             hy_fmt_bytes(size, (char[32]){0}, 32), dir, hy_fmt_bytes(off + done, fb, sizeof fb),
                             strerror(e), e == ENOSPC ? " (disk full; the test file was removed)" : "");
                break;
            }
            done += (size_t)w;
        }
    }
    free(buf);
    if (!rc && fdatasync(wfd)) rc = hy_fail(err, errlen, "fdatasync of the test file in %s: %s", dir, strerror(errno));
    if (wfd != fd) close(wfd);
    return rc;
}

typedef struct {
    uint64_t cursor; /* next sequential offset, carried across points so each reads fresh blocks */
    uint64_t rng;
} sweep_state;

/* the next request's offset: random whole blocks, or the next block in order (wrapping) */
static uint64_t next_offset(sweep_state *st, bool random, size_t block, uint64_t fsize) {
    if (random) return (xorshift(&st->rng) % (fsize / block)) * block;
    if (st->cursor + block > fsize) st->cursor = 0;
    uint64_t off = st->cursor;
    st->cursor += block;
    return off;
}

/* One point: `qd` requests of `block` bytes kept in flight through hy_io for
 * about dur seconds. random: 4K-aligned random offsets instead of sequential. */
static int run_point(const char *procpath, uint64_t fsize, size_t block, int qd, double dur, bool random,
                     sweep_state *st, bool *direct, double *gbps, double *iops, char *err, size_t errlen) {
    hy_io_params ip = hy_io_default_params();
    ip.queue_depth = qd;
    ip.chunk = block;
    hy_io *io = hy_io_open(procpath, &ip, err, errlen);
    if (!io) return -1;
    *direct = hy_io_is_direct(io);
    if (!*direct) { /* measure the device, not the page cache, as far as the filesystem allows */
        int fd = open(procpath, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            close(fd);
        }
    }
    uint8_t *buf = NULL;
    if (posix_memalign((void **)&buf, 4096, block * (size_t)qd)) {
        hy_io_close(io);
        return hy_fail(err, errlen, "out of memory");
    }
    hy_io_ticket **tk = calloc((size_t)qd, sizeof *tk);
    if (!tk) {
        free(buf);
        hy_io_close(io);
        return hy_fail(err, errlen, "out of memory");
    }
    uint64_t ops = 0;
    int rc = 0;
    double t0 = hy_now(), t1 = t0;
    for (int i = 0; i < qd && !rc; i++) {
        uint64_t off = next_offset(st, random, block, fsize);
        tk[i] = hy_io_read_async(io, buf + (size_t)i * block, off, block, err, errlen);
        if (!tk[i]) rc = -1;
    }
    for (int slot = 0; !rc; slot = (slot + 1) % qd) {
        if (hy_io_wait(io, tk[slot], err, errlen)) {
            tk[slot] = NULL;
            rc = -1;
            break;
        }
        tk[slot] = NULL;
        ops++;
        t1 = hy_now();
        if (t1 - t0 >= dur) break;
        uint64_t off = next_offset(st, random, block, fsize);
        tk[slot] = hy_io_read_async(io, buf + (size_t)slot * block, off, block, err, errlen);
        if (!tk[slot]) rc = -1;
    }
    /* drain: what was in flight when time ran out counts, and so does its time */
    char e2[HY_ERRLEN];
    for (int i = 0; i < qd; i++)
        if (tk[i]) {
            if (hy_io_wait(io, tk[i], e2, sizeof e2) && !rc) rc = hy_fail(err, errlen, "%s", e2);
            else ops++;
        }
    t1 = hy_now();
    free(tk);
    free(buf);
    hy_io_close(io);
    if (rc) return rc;
    double dt = t1 - t0;
    *gbps = dt > 0 ? (double)ops * block / dt / 1e9 : 0;
    *iops = dt > 0 ? ops / dt : 0;
    return 0;
}

int hy_profile_measure_storage(const char *path, bool quick, hy_profile *out, char *err, size_t errlen) {
    char dir[PATH_MAX];
    if (!path || !*path) {
        if (hy_cache_dir(dir, sizeof dir)) return hy_fail(err, errlen, "no cache directory");
    } else if (!realpath(path, dir)) {
        return hy_fail(err, errlen, "%s: %s", path, strerror(errno));
    }
    struct stat st;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode)) return hy_fail(err, errlen, "%s is not a directory", dir);
    copy_str(out->storage_path, sizeof out->storage_path, dir);
    fs_name(dir, out->storage_fs, sizeof out->storage_fs);

    const uint64_t size = quick ? 64 * MiB : 1 * GiB;
    struct statvfs vfs;
    if (!statvfs(dir, &vfs) && vfs.f_blocks > 0) { /* ramfs reports no blocks at all: no limit known */
        uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
        if (avail < size + 64 * MiB) {
            char a[32], b[32];
            return hy_fail(err, errlen, "not enough free space in %s for the %s storage test file (%s free)", dir,
                           hy_fmt_bytes(size, a, sizeof a), hy_fmt_bytes(avail, b, sizeof b));
        }
    }
    int fd = make_anon_file(dir, err, errlen);
    if (fd < 0) return -1;
    char procpath[64];
    snprintf(procpath, sizeof procpath, "/proc/self/fd/%d", fd);
    int rc = posix_fallocate(fd, 0, (off_t)size);
    if (rc == ENOSPC) {
        close(fd);
        char a[32];
        return hy_fail(err, errlen, "no space in %s for the %s storage test file (disk full; nothing was left behind)",
                       dir, hy_fmt_bytes(size, a, sizeof a));
    }
    bool wdirect = false;
    if (fill_file(fd, procpath, size, &wdirect, err, errlen, dir)) {
        close(fd);
        return -1;
    }

    static const size_t blocks[] = {128 * 1024, 1 * MiB, 4 * MiB};
    static const int qds[] = {1, 4, 16};
    const double dur = quick ? 0.06 : 0.3;
    sweep_state ss = {.cursor = 0, .rng = 0x2545f4914f6cdd1dull};
    out->n_sweep = 0;
    out->seq_read_gbps = out->seq_read_qd1_gbps = out->rand4k_iops = 0;
    bool direct = true;
    rc = 0;
    for (size_t b = 0; b < 3 && !rc; b++)
        for (size_t q = 0; q < 3 && !rc; q++) {
            double g = 0, iops = 0;
            rc = run_point(procpath, size, blocks[b], qds[q], dur, false, &ss, &direct, &g, &iops, err, errlen);
            if (rc) break;
            out->sweep[out->n_sweep].block = blocks[b];
            out->sweep[out->n_sweep].qd = qds[q];
            out->sweep[out->n_sweep].gbps = g;
            out->n_sweep++;
            if (g > out->seq_read_gbps) out->seq_read_gbps = g;
            if (blocks[b] == MiB && qds[q] == 1) out->seq_read_qd1_gbps = g;
        }
    if (!rc) {
        double g = 0, iops = 0;
        rc = run_point(procpath, size, 4096, 32, quick ? 0.1 : 0.5, true, &ss, &direct, &g, &iops, err, errlen);
        out->rand4k_iops = iops;
    }
    close(fd); /* the file had no name: this frees it */
    out->storage_direct = direct;
    return rc;
}

/* ---- JSON ------------------------------------------------------------------- */

int hy_profile_to_json(const hy_profile *p, char **json_out) {
    *json_out = NULL;
    json_t *o = json_object();
    if (!o) return -1;
    json_t *sweep = json_array(), *gpus = json_array();
    for (int i = 0; i < p->n_sweep && i < 32; i++)
        json_array_append_new(sweep, json_pack("{s:I, s:i, s:f}", "block", (json_int_t)p->sweep[i].block, "qd",
                                               p->sweep[i].qd, "gbps", p->sweep[i].gbps));
    for (int i = 0; i < p->n_gpu && i < 8; i++) {
        const hy_gpu_info *g = &p->gpu[i];
        json_array_append_new(gpus, json_pack("{s:s, s:s, s:I, s:I, s:f}", "name", g->name, "kind", g->kind,
                                              "mem_total", (json_int_t)g->mem_total, "mem_free",
                                              (json_int_t)g->mem_free, "h2d_gbps", g->h2d_gbps));
    }
#define SETI(k, v) json_object_set_new(o, k, json_integer((json_int_t)(v)))
#define SETF(k, v) json_object_set_new(o, k, json_real(v))
#define SETS(k, v) json_object_set_new(o, k, json_string(v))
#define SETB(k, v) json_object_set_new(o, k, json_boolean(v))
    SETI("version", PROFILE_VERSION);
    SETS("cpu_model", p->cpu_model);
    SETI("cores_logical", p->cores_logical);
    SETI("cores_physical", p->cores_physical);
    SETS("simd", p->simd);
    SETI("ram_total", p->ram_total);
    SETI("ram_available", p->ram_available);
    SETI("cgroup_limit", p->cgroup_limit);
    SETI("cgroup_usage", p->cgroup_usage);
    SETI("mem_budget_default", p->mem_budget_default);
    SETF("mem_bw_gbps", p->mem_bw_gbps);
    SETF("piece_s", p->piece_s);
    {
        json_t *mv = json_object();
        for (int t = 0; t < HY_MATVEC_NTYPES; t++) {
            const char *name = hy_matvec_type_name(t);
            if (name && p->matvec_gbps[t] > 0) json_object_set_new(mv, name, json_real(p->matvec_gbps[t]));
        }
        json_object_set_new(o, "matvec_gbps", mv);
    }
    SETS("storage_path", p->storage_path);
    SETS("storage_fs", p->storage_fs);
    SETB("storage_direct", p->storage_direct);
    SETF("seq_read_gbps", p->seq_read_gbps);
    SETF("seq_read_qd1_gbps", p->seq_read_qd1_gbps);
    SETF("rand4k_iops", p->rand4k_iops);
    json_object_set_new(o, "sweep", sweep);
    json_object_set_new(o, "gpu", gpus);
    SETF("created", p->created);
    SETF("elapsed_s", p->elapsed_s);
    SETB("quick", p->quick);
    SETB("from_cache", p->from_cache);
#undef SETI
#undef SETF
#undef SETS
#undef SETB
    /* jansson prints reals with 17 significant digits: they read back exactly */
    *json_out = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    return *json_out ? 0 : -1;
}

static int get_u64(json_t *o, const char *k, uint64_t *v, char *err, size_t errlen) {
    json_t *x = json_object_get(o, k);
    if (!json_is_integer(x) || json_integer_value(x) < 0) return hy_fail(err, errlen, "key '%s': not a size", k);
    *v = (uint64_t)json_integer_value(x);
    return 0;
}

static int get_int(json_t *o, const char *k, int lo, int hi, int *v, char *err, size_t errlen) {
    json_t *x = json_object_get(o, k);
    if (!json_is_integer(x) || json_integer_value(x) < lo || json_integer_value(x) > hi)
        return hy_fail(err, errlen, "key '%s': not an integer in %d..%d", k, lo, hi);
    *v = (int)json_integer_value(x);
    return 0;
}

static int get_dbl(json_t *o, const char *k, double *v, char *err, size_t errlen) {
    json_t *x = json_object_get(o, k);
    if (!json_is_number(x)) return hy_fail(err, errlen, "key '%s': not a number", k);
    *v = json_number_value(x);
    return 0;
}

static int get_str(json_t *o, const char *k, char *v, size_t n, char *err, size_t errlen) {
    json_t *x = json_object_get(o, k);
    if (!json_is_string(x)) return hy_fail(err, errlen, "key '%s': not a string", k);
    if (strlen(json_string_value(x)) >= n) return hy_fail(err, errlen, "key '%s': too long", k);
    copy_str(v, n, json_string_value(x));
    return 0;
}

static int get_bool(json_t *o, const char *k, bool *v, char *err, size_t errlen) {
    json_t *x = json_object_get(o, k);
    if (!json_is_boolean(x)) return hy_fail(err, errlen, "key '%s': not a boolean", k);
    *v = json_is_true(x);
    return 0;
}

int hy_profile_from_json(const char *json, hy_profile *p, char *err, size_t errlen) {
    json_error_t je;
    json_t *o = json_loads(json ? json : "", 0, &je);
    if (!o) return hy_fail(err, errlen, "invalid JSON at line %d: %s", je.line, je.text);
    hy_profile q;
    memset(&q, 0, sizeof q);
    int version = 0, rc = -1;
    if (!json_is_object(o)) {
        hy_fail(err, errlen, "not a JSON object");
        goto out;
    }
    if (get_int(o, "version", 0, INT_MAX, &version, err, errlen)) goto out;
    if (version != PROFILE_VERSION) {
        hy_fail(err, errlen, "profile version %d, expected %d", version, PROFILE_VERSION);
        goto out;
    }
    if (get_str(o, "cpu_model", q.cpu_model, sizeof q.cpu_model, err, errlen) ||
        get_int(o, "cores_logical", 1, 1 << 20, &q.cores_logical, err, errlen) ||
        get_int(o, "cores_physical", 1, 1 << 20, &q.cores_physical, err, errlen) ||
        get_str(o, "simd", q.simd, sizeof q.simd, err, errlen) ||
        get_u64(o, "ram_total", &q.ram_total, err, errlen) ||
        get_u64(o, "ram_available", &q.ram_available, err, errlen) ||
        get_u64(o, "cgroup_limit", &q.cgroup_limit, err, errlen) ||
        get_u64(o, "cgroup_usage", &q.cgroup_usage, err, errlen) ||
        get_u64(o, "mem_budget_default", &q.mem_budget_default, err, errlen) ||
        get_dbl(o, "mem_bw_gbps", &q.mem_bw_gbps, err, errlen) || get_dbl(o, "piece_s", &q.piece_s, err, errlen) ||
        get_str(o, "storage_path", q.storage_path, sizeof q.storage_path, err, errlen) ||
        get_str(o, "storage_fs", q.storage_fs, sizeof q.storage_fs, err, errlen) ||
        get_bool(o, "storage_direct", &q.storage_direct, err, errlen) ||
        get_dbl(o, "seq_read_gbps", &q.seq_read_gbps, err, errlen) ||
        get_dbl(o, "seq_read_qd1_gbps", &q.seq_read_qd1_gbps, err, errlen) ||
        get_dbl(o, "rand4k_iops", &q.rand4k_iops, err, errlen) ||
        get_dbl(o, "created", &q.created, err, errlen) || get_dbl(o, "elapsed_s", &q.elapsed_s, err, errlen) ||
        get_bool(o, "quick", &q.quick, err, errlen) || get_bool(o, "from_cache", &q.from_cache, err, errlen))
        goto out;
    json_t *mv = json_object_get(o, "matvec_gbps");
    if (!json_is_object(mv)) {
        hy_fail(err, errlen, "key 'matvec_gbps': not an object");
        goto out;
    }
    {
        const char *name;
        json_t *v;
        json_object_foreach(mv, name, v) {
            int t = hy_matvec_type_of(name);
            double g = json_is_number(v) ? json_number_value(v) : -1;
            if (t < 0 || !(g > 0 && g < 1e6)) {
                hy_fail(err, errlen, "key 'matvec_gbps': '%s' is not a weight type with a positive rate", name);
                goto out;
            }
            q.matvec_gbps[t] = g;
        }
    }
    json_t *sweep = json_object_get(o, "sweep"), *gpus = json_object_get(o, "gpu");
    if (!json_is_array(sweep) || json_array_size(sweep) > 32) {
        hy_fail(err, errlen, "key 'sweep': not an array of at most 32 points");
        goto out;
    }
    for (size_t i = 0; i < json_array_size(sweep); i++) {
        json_t *pt = json_array_get(sweep, i);
        uint64_t block = 0;
        if (!json_is_object(pt) || get_u64(pt, "block", &block, err, errlen) ||
            get_int(pt, "qd", 1, 1 << 16, &q.sweep[i].qd, err, errlen) ||
            get_dbl(pt, "gbps", &q.sweep[i].gbps, err, errlen) || block == 0 || block > (1ull << 32)) {
            if (!err || !*err) hy_fail(err, errlen, "key 'sweep': bad point %zu", i);
            goto out;
        }
        q.sweep[i].block = (size_t)block;
        q.n_sweep++;
    }
    if (!json_is_array(gpus) || json_array_size(gpus) > 8) {
        hy_fail(err, errlen, "key 'gpu': not an array of at most 8 devices");
        goto out;
    }
    for (size_t i = 0; i < json_array_size(gpus); i++) {
        json_t *g = json_array_get(gpus, i);
        hy_gpu_info *gi = &q.gpu[i];
        if (!json_is_object(g) || get_str(g, "name", gi->name, sizeof gi->name, err, errlen) ||
            get_str(g, "kind", gi->kind, sizeof gi->kind, err, errlen) ||
            get_u64(g, "mem_total", &gi->mem_total, err, errlen) ||
            get_u64(g, "mem_free", &gi->mem_free, err, errlen) || get_dbl(g, "h2d_gbps", &gi->h2d_gbps, err, errlen)) {
            goto out;
        }
        q.n_gpu++;
    }
    *p = q;
    rc = 0;
out:
    json_decref(o);
    return rc;
}

/* ---- the cached profile -------------------------------------------------------- */

static int read_file(const char *path, char **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t cap = 8192, n = 0;
    char *b = malloc(cap);
    while (b) {
        if (n + 1 >= cap) {
            if (cap > 16 * MiB) break; /* no profile is that large */
            char *nb = realloc(b, cap * 2);
            if (!nb) break;
            b = nb;
            cap *= 2;
        }
        size_t r = fread(b + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) {
            b[n] = 0;
            *out = b;
            b = NULL;
        }
    }
    free(b);
    fclose(f);
    return *out ? 0 : -1;
}

static int write_cache(const char *path, const hy_profile *p, char *err, size_t errlen) {
    char *js = NULL;
    if (hy_profile_to_json(p, &js)) return hy_fail(err, errlen, "cannot serialize the profile");
    char tmp[PATH_MAX + 64];
    hy_fail(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()); /* formats; path is < PATH_MAX + 32 */
    FILE *f = fopen(tmp, "w");
    int rc = 0;
    if (!f || fputs(js, f) < 0 || fputc('\n', f) < 0) rc = -1;
    if (f && fclose(f)) rc = -1;
    if (!rc && rename(tmp, path)) rc = -1;
    if (rc) {
        hy_fail(err, errlen, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
    }
    free(js);
    return rc;
}

int hy_profile_get(const hy_profile_params *pp, hy_profile *out, char *err, size_t errlen) {
    hy_profile_params p = pp ? *pp : hy_profile_default_params();
    double t0 = hy_now();
    hy_profile fresh;
    memset(&fresh, 0, sizeof fresh);
    read_cpu(&fresh);
    read_meminfo(&fresh);
    read_cgroup(&fresh);
    compute_budget(&fresh);

    char cdir[PATH_MAX], cpath[PATH_MAX + 32], spath[PATH_MAX];
    if (hy_cache_dir(cdir, sizeof cdir)) return hy_fail(err, errlen, "cannot create the cache directory");
    snprintf(cpath, sizeof cpath, "%s/profile.json", cdir);
    const char *sp = p.storage_path && *p.storage_path ? p.storage_path : cdir;
    if (!realpath(sp, spath)) return hy_fail(err, errlen, "storage path %s: %s", sp, strerror(errno));

    if (!p.refresh) {
        char *js = NULL;
        if (!read_file(cpath, &js)) {
            hy_profile c;
            char perr[HY_ERRLEN];
            if (hy_profile_from_json(js, &c, perr, sizeof perr)) {
                fprintf(stderr, "hypura: warning: ignoring unreadable profile cache %s (%s); measuring again\n",
                        cpath, perr);
            } else {
                double age = unix_now() - c.created;
                bool ok = age >= 0 && age < PROFILE_MAX_AGE_S && !strcmp(c.cpu_model, fresh.cpu_model) &&
                          c.cores_logical == fresh.cores_logical && c.ram_total == fresh.ram_total &&
                          !strcmp(c.storage_path, spath) &&
                          (!p.storage || c.n_sweep > 0) && (p.quick || !c.quick);
                if (ok) {
                    /* measured figures from the cache, the moment's memory from now */
                    c.ram_available = fresh.ram_available;
                    c.cgroup_limit = fresh.cgroup_limit;
                    c.cgroup_usage = fresh.cgroup_usage;
                    c.mem_budget_default = fresh.mem_budget_default;
                    hy_profile g = fresh;
                    read_gpus(&g, false, false);
                    for (int i = 0; i < g.n_gpu; i++)
                        for (int j = 0; j < c.n_gpu; j++)
                            if (!strcmp(g.gpu[i].name, c.gpu[j].name)) g.gpu[i].h2d_gbps = c.gpu[j].h2d_gbps;
                    c.n_gpu = g.n_gpu;
                    memcpy(c.gpu, g.gpu, sizeof c.gpu);
                    c.from_cache = true;
                    *out = c;
                    free(js);
                    return 0;
                }
            }
            free(js);
        }
    }

    hy_profile m = fresh;
    m.quick = p.quick;
    m.from_cache = false;
    uint64_t room = m.ram_available;
    if (m.cgroup_limit) {
        uint64_t r = m.cgroup_limit > m.cgroup_usage ? m.cgroup_limit - m.cgroup_usage : 0;
        if (r < room) room = r;
    }
    m.mem_bw_gbps = measure_mem_bw(m.cores_logical, p.quick, room);
    m.piece_s = measure_piece(m.cores_logical);
    {
        /* a matrix larger than the caches, inside a small memory limit */
        size_t mv = p.quick ? (size_t)16 << 20 : (size_t)256 << 20;
        while (mv > ((size_t)16 << 20) && (uint64_t)mv > room / 4) mv /= 2;
        hy_matvec_measure(m.cores_logical, mv, p.quick ? 3 : 9, m.matvec_gbps);
    }
    read_gpus(&m, true, p.quick);
    copy_str(m.storage_path, sizeof m.storage_path, spath);
    if (p.storage) {
        if (hy_profile_measure_storage(spath, p.quick, &m, err, errlen)) return -1;
    } else {
        fs_name(spath, m.storage_fs, sizeof m.storage_fs);
    }
    /* the measurement itself used memory and page cache: take the moment's figures again */
    read_meminfo(&m);
    read_cgroup(&m);
    compute_budget(&m);
    m.created = unix_now();
    m.elapsed_s = hy_now() - t0;
    char werr[HY_ERRLEN];
    if (write_cache(cpath, &m, werr, sizeof werr)) fprintf(stderr, "hypura: warning: %s\n", werr);
    *out = m;
    return 0;
}
