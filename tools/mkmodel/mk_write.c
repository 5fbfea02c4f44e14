/* mk_write: generate tensor data chunk by chunk on worker threads and pwrite
 * each chunk at its final offset; no ordering between threads is needed. */
#include "mkmodel.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/hy_util.h"

/* blocks per pool: enough variety that rows do not visibly repeat, few
 * enough that building a K-quant pool costs a fraction of a second */
#define MK_POOL_BLOCKS 8192
#define MK_POOL_ROW 256 /* a multiple of every supported block size */

typedef struct {
    mk_model *m;
    int fd;
    const char *path;
    int64_t n_jobs;
    int64_t *job_start;      /* per tensor: index of its first chunk job */
    _Atomic int64_t next;
    _Atomic uint64_t done_bytes;
    _Atomic int failed;
    _Atomic int running;
    pthread_mutex_t err_mu;
    char err[HY_ERRLEN];
    size_t max_floats, max_out;
} writer;

static void set_err(writer *w, const char *what, int errnum) {
    pthread_mutex_lock(&w->err_mu);
    if (!atomic_load(&w->failed)) {
        if (what) snprintf(w->err, sizeof w->err, "%s", what);
        else snprintf(w->err, sizeof w->err, "write %s: %s", w->path, strerror(errnum));
        atomic_store(&w->failed, 1);
    }
    pthread_mutex_unlock(&w->err_mu);
}

static int pwrite_all(int fd, const void *buf, size_t n, uint64_t off) {
    const char *p = buf;
    while (n > 0) {
        ssize_t r = pwrite(fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) { errno = ENOSPC; return -1; }
        p += r; n -= (size_t)r; off += (uint64_t)r;
    }
    return 0;
}

/* uniform values in [-amp, amp), two per draw */
static void fill_uniform(float *x, int64_t n, float amp, uint64_t *s) {
    const float k = amp * 0x1p-31f;
    int64_t i = 0;
    for (; i + 1 < n; i += 2) {
        uint64_t r = mk_rand(s);
        x[i] = (float)(int32_t)(uint32_t)r * k;
        x[i + 1] = (float)(int32_t)(uint32_t)(r >> 32) * k;
    }
    if (i < n) x[i] = (float)(int32_t)(uint32_t)mk_rand(s) * k;
}

/* zipf routing: a router row gets, along each direction, the expert's logit
 * offset divided by the embedding's amplitude there (the rms-normalised hidden
 * state's projection), after its random part's projection is removed */
static void zipf_router_rows(const mk_model *m, const mk_tensor *t, int64_t r0, int64_t nr, float *buf,
                             float *offs, int *perm) {
    const int64_t n0 = t->ne[0], E = m->o.experts;
    for (int j = 0; j < MK_ZIPF_DIRS; j++) mk_zipf_offsets(m, t->layer, j, offs + j * E, perm);
    for (int64_t r = 0; r < nr; r++) {
        float *row = buf + r * n0;
        const int64_t e = r0 + r;
        for (int j = 0; j < MK_ZIPF_DIRS; j++) {
            const float *d = m->dirs + (size_t)j * (size_t)n0;
            double p = 0;
            for (int64_t i = 0; i < n0; i++) p += (double)row[i] * d[i];
            float add = offs[j * E + e] / m->dir_amp[j] - (float)p;
            for (int64_t i = 0; i < n0; i++) row[i] += add * d[i];
        }
    }
}

/* zipf routing: every token carries the global direction, its class's and its hash's */
static void zipf_embd_rows(const mk_model *m, int64_t r0, int64_t nr, int64_t n0, float *buf) {
    for (int64_t r = 0; r < nr; r++) {
        float *row = buf + r * n0;
        const int64_t tok = r0 + r;
        const int js[3] = { 0, 1 + m->tok_class[tok], 1 + MK_ZIPF_CLASSES + mk_tok_hashed(m, tok) };
        for (int k = 0; k < 3; k++) {
            const float *d = m->dirs + (size_t)js[k] * (size_t)n0;
            const float a = m->dir_amp[js[k]];
            for (int64_t i = 0; i < n0; i++) row[i] += a * d[i];
        }
    }
}

static void gen_rows(const mk_model *m, const mk_tensor *t, int64_t r0, int64_t nr, uint64_t *s, float *buf,
                     float *offs, int *perm) {
    const int64_t n0 = t->ne[0];
    switch (t->init) {
        case MK_INIT_ONES:
            for (int64_t i = 0; i < nr * n0; i++) buf[i] = 1.0f;
            break;
        case MK_INIT_UNIFORM:
            fill_uniform(buf, nr * n0, t->amp, s);
            break;
        case MK_INIT_EMBD:
            fill_uniform(buf, nr * n0, t->amp, s);
            if (m->dirs) zipf_embd_rows(m, r0, nr, n0, buf);
            if (m->mdir)
                for (int64_t r = 0; r < nr; r++)
                    for (int64_t j = 0; j < n0; j++) buf[r * n0 + j] += m->embd_alpha * m->mdir[j];
            break;
        case MK_INIT_ROUTER:
            fill_uniform(buf, nr * n0, t->amp, s);
            if (m->dirs) zipf_router_rows(m, t, r0, nr, buf, offs, perm);
            if (m->mdir) {
                for (int64_t r = 0; r < nr; r++) {
                    float *row = buf + r * n0;
                    /* only the hot experts see the shared direction, so that
                     * without them routing stays near uniform */
                    double d = 0;
                    for (int64_t j = 0; j < n0; j++) d += (double)row[j] * m->mdir[j];
                    float add = -(float)d;
                    int e = (int)(r0 + r);
                    if (e == m->hot[t->layer][0]) add += m->boost;
                    else if (e == m->hot[t->layer][1]) add += 0.75f * m->boost;
                    for (int64_t j = 0; j < n0; j++) row[j] += add * m->mdir[j];
                }
            }
            break;
    }
}

static void pool_rows(const mk_pool *p, const mk_tensor *t, int64_t nr, uint64_t *s, uint8_t *out) {
    const int64_t nb = nr * (t->ne[0] / ggml_blck_size(t->type));
    const size_t bs = p->block_bytes;
    const uint64_t n = (uint64_t)p->n_blocks;
    int64_t i = 0;
    for (; i + 1 < nb; i += 2) {
        uint64_t r = mk_rand(s);
        memcpy(out + (size_t)i * bs, p->data + (((r & 0xffffffffu) * n) >> 32) * bs, bs);
        memcpy(out + (size_t)(i + 1) * bs, p->data + (((r >> 32) * n) >> 32) * bs, bs);
    }
    if (i < nb) {
        uint64_t r = mk_rand(s);
        memcpy(out + (size_t)i * bs, p->data + (((r & 0xffffffffu) * n) >> 32) * bs, bs);
    }
}

static int find_tensor(const writer *w, int64_t job) {
    int lo = 0, hi = w->m->n_t - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (w->job_start[mid] <= job) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

static void *worker(void *arg) {
    writer *w = arg;
    mk_model *m = w->m;
    float *fbuf = malloc(w->max_floats * sizeof(float));
    uint8_t *obuf = malloc(w->max_out);
    const size_t ne = m->dirs ? (size_t)m->o.experts : 0;
    float *offs = ne ? malloc(ne * MK_ZIPF_DIRS * sizeof *offs) : NULL;
    int *perm = ne ? malloc(ne * sizeof *perm) : NULL;
    static const uint8_t zeros[4096];
    if (!fbuf || !obuf || (ne && (!offs || !perm))) {
        set_err(w, "out of memory", 0);
        goto done;
    }
    for (;;) {
        if (atomic_load(&w->failed)) break;
        int64_t job = atomic_fetch_add(&w->next, 1);
        if (job >= w->n_jobs) break;
        int ti = find_tensor(w, job);
        const mk_tensor *t = &m->t[ti];
        int64_t c = job - w->job_start[ti];
        int64_t r0 = c * t->rows_per_chunk;
        int64_t nr = t->nrows - r0 < t->rows_per_chunk ? t->nrows - r0 : t->rows_per_chunk;
        uint64_t s = mk_splitmix(t->seed ^ mk_splitmix((uint64_t)c));
        size_t nbytes = (size_t)nr * t->row_size;
        const void *src;
        if (t->pool >= 0) {
            pool_rows(&m->pools[t->pool], t, nr, &s, obuf);
            src = obuf;
        } else {
            gen_rows(m, t, r0, nr, &s, fbuf, offs, perm);
            if (t->type == GGML_TYPE_F32) {
                src = fbuf;
            } else {
                ggml_quantize_chunk(t->type, fbuf, obuf, 0, nr, t->ne[0], NULL);
                src = obuf;
            }
        }
        uint64_t off = t->off + (uint64_t)r0 * t->row_size;
        if (pwrite_all(w->fd, src, nbytes, off)) {
            set_err(w, NULL, errno);
            break;
        }
        if (c == t->n_chunks - 1 && t->padded > t->nbytes) {
            size_t pad = (size_t)(t->padded - t->nbytes);
            int bad = 0;
            for (size_t done = 0; done < pad && !bad; done += sizeof zeros) {
                size_t k = pad - done < sizeof zeros ? pad - done : sizeof zeros;
                bad = pwrite_all(w->fd, zeros, k, t->off + t->nbytes + done);
            }
            if (bad) {
                set_err(w, NULL, errno);
                break;
            }
        }
        atomic_fetch_add(&w->done_bytes, (uint64_t)nbytes);
    }
done:
    free(fbuf);
    free(obuf);
    free(offs);
    free(perm);
    atomic_fetch_sub(&w->running, 1);
    return NULL;
}

/* --- block pools ------------------------------------------------------------ */

typedef struct {
    mk_model *m;
    _Atomic int64_t next;
    int64_t n_jobs;
    int64_t *job_start;  /* per pool: first slice job */
    _Atomic int failed;
} pool_builder;

#define MK_POOL_SLICE 256 /* rows of MK_POOL_ROW per job */

static void *pool_worker(void *arg) {
    pool_builder *pb = arg;
    mk_model *m = pb->m;
    float *buf = malloc((size_t)MK_POOL_SLICE * MK_POOL_ROW * sizeof(float));
    if (!buf) { atomic_store(&pb->failed, 1); return NULL; }
    for (;;) {
        int64_t job = atomic_fetch_add(&pb->next, 1);
        if (job >= pb->n_jobs) break;
        int p = 0;
        while (p + 1 < m->n_pools && pb->job_start[p + 1] <= job) p++;
        mk_pool *pl = &m->pools[p];
        int64_t slice = job - pb->job_start[p];
        int64_t rows = pl->n_blocks * ggml_blck_size(pl->type) / MK_POOL_ROW;
        int64_t r0 = slice * MK_POOL_SLICE;
        int64_t nr = rows - r0 < MK_POOL_SLICE ? rows - r0 : MK_POOL_SLICE;
        uint32_t abits;
        memcpy(&abits, &pl->amp, sizeof abits);
        char key[64];
        snprintf(key, sizeof key, "#pool-%s-%08x-%lld", ggml_type_name(pl->type), abits, (long long)slice);
        uint64_t s = mk_hash_str(m->o.seed, key);
        fill_uniform(buf, nr * MK_POOL_ROW, pl->amp, &s);
        ggml_quantize_chunk(pl->type, buf, pl->data + (size_t)r0 * ggml_row_size(pl->type, MK_POOL_ROW),
                            0, nr, MK_POOL_ROW, NULL);
    }
    free(buf);
    return NULL;
}

static int run_threads(int n, void *(*fn)(void *), void *arg, char *err, size_t errlen) {
    pthread_t th[256];
    int started = 0;
    for (; started < n; started++)
        if (pthread_create(&th[started], NULL, fn, arg)) break;
    if (started == 0) return hy_fail(err, errlen, "cannot start threads");
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    return 0;
}

static int build_pools(mk_model *m, int threads, char *err, size_t errlen) {
    if (m->n_pools == 0) return 0;
    pool_builder pb = { .m = m };
    pb.job_start = calloc((size_t)m->n_pools, sizeof *pb.job_start);
    if (!pb.job_start) return hy_fail(err, errlen, "out of memory");
    for (int p = 0; p < m->n_pools; p++) {
        mk_pool *pl = &m->pools[p];
        ggml_quantize_init(pl->type);
        pl->n_blocks = MK_POOL_BLOCKS;
        pl->data = malloc((size_t)pl->n_blocks * pl->block_bytes);
        if (!pl->data) { free(pb.job_start); return hy_fail(err, errlen, "out of memory"); }
        int64_t rows = pl->n_blocks * ggml_blck_size(pl->type) / MK_POOL_ROW;
        pb.job_start[p] = pb.n_jobs;
        pb.n_jobs += (rows + MK_POOL_SLICE - 1) / MK_POOL_SLICE;
    }
    int rc = run_threads(threads, pool_worker, &pb, err, errlen);
    free(pb.job_start);
    if (rc) return rc;
    if (atomic_load(&pb.failed)) return hy_fail(err, errlen, "out of memory building block pools");
    return 0;
}

int mk_write(mk_model *m, int fd, const char *path, char *err, size_t errlen) {
    const int threads = m->o.threads < 1 ? 1 : m->o.threads > 256 ? 256 : m->o.threads;
    const double t0 = hy_now();

    for (int i = 0; i < m->n_t; i++)
        if (m->t[i].pool < 0 && m->t[i].type != GGML_TYPE_F32) ggml_quantize_init(m->t[i].type);
    if (build_pools(m, threads, err, errlen)) return -1;

    /* reserve the whole file first: a full disk fails now, not after minutes */
    if (fallocate(fd, 0, 0, (off_t)m->total) != 0 && errno == ENOSPC)
        return hy_fail(err, errlen, "write %s: %s (needs %llu bytes)", path, strerror(ENOSPC),
                       (unsigned long long)m->total);
    if (pwrite_all(fd, m->meta, m->meta_size, 0))
        return hy_fail(err, errlen, "write %s: %s", path, strerror(errno));

    writer w = { .m = m, .fd = fd, .path = path };
    pthread_mutex_init(&w.err_mu, NULL);
    w.job_start = calloc((size_t)m->n_t, sizeof *w.job_start);
    if (!w.job_start) return hy_fail(err, errlen, "out of memory");
    for (int i = 0; i < m->n_t; i++) {
        const mk_tensor *t = &m->t[i];
        w.job_start[i] = w.n_jobs;
        w.n_jobs += t->n_chunks;
        size_t fl = (size_t)(t->rows_per_chunk * t->ne[0]);
        size_t ob = (size_t)t->rows_per_chunk * t->row_size;
        if (fl > w.max_floats) w.max_floats = fl;
        if (ob > w.max_out) w.max_out = ob;
    }
    uint64_t data_bytes = 0;
    for (int i = 0; i < m->n_t; i++) data_bytes += m->t[i].nbytes;

    struct { int n; pthread_t th[256]; } c = { 0 };
    atomic_store(&w.running, threads);
    for (; c.n < threads; c.n++) {
        if (pthread_create(&c.th[c.n], NULL, worker, &w)) {
            atomic_fetch_sub(&w.running, threads - c.n);
            break;
        }
    }
    if (c.n == 0) {
        free(w.job_start);
        return hy_fail(err, errlen, "cannot start threads");
    }

    const bool tty = isatty(2);
    int last_decile = 0;
    while (atomic_load(&w.running) > 0) {
        struct timespec ts = { 0, 200 * 1000 * 1000 };
        nanosleep(&ts, NULL);
        if (m->o.quiet) continue;
        uint64_t d = atomic_load(&w.done_bytes);
        double el = hy_now() - t0;
        char a[32], b[32];
        int pct = data_bytes ? (int)(100.0 * (double)d / (double)data_bytes) : 100;
        if (tty) {
            fprintf(stderr, "\rmkmodel: %3d%%  %s / %s  %.0f MiB/s   ", pct, hy_fmt_bytes(d, a, sizeof a),
                    hy_fmt_bytes(data_bytes, b, sizeof b), el > 0 ? (double)d / el / 1048576.0 : 0.0);
        } else if (pct / 10 > last_decile && pct < 100) {
            last_decile = pct / 10;
            fprintf(stderr, "mkmodel: %d%%  %s / %s\n", pct, hy_fmt_bytes(d, a, sizeof a),
                    hy_fmt_bytes(data_bytes, b, sizeof b));
        }
    }
    for (int i = 0; i < c.n; i++) pthread_join(c.th[i], NULL);
    if (!m->o.quiet && tty) fprintf(stderr, "\r%60s\r", "");
    free(w.job_start);
    pthread_mutex_destroy(&w.err_mu);
    if (atomic_load(&w.failed)) return hy_fail(err, errlen, "%s", w.err);
    if (atomic_load(&w.next) < w.n_jobs) return hy_fail(err, errlen, "not every chunk was written");
    return 0;
}
