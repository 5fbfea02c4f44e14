/* Loading resident tensors: worker threads fill them while libllama's loader
 * goes on, from the page cache when the file is cached there, else with direct
 * I/O; and the HYPURA_REPACK buffer type, libllama's CPU_REPACK layout in
 * memory of ours.
 *
 * Why (issue 12; a 2-core VM, 3.7 GiB MoE, Q4_K): with load mode none,
 * libllama staged every repacked tensor in a fresh std::vector that it filled
 * byte by byte before read() copied the file into it, then repacked it into
 * 4 KiB pages, one tensor after the other. Here a tensor's bytes are read once,
 * into a staging buffer that is reused, or copied out of the page cache when
 * they are all there, and repacked by ggml's own function into transparent huge
 * pages, on as many threads as there are cores. What is left is mostly the first
 * touch of new memory, which on this VM (its host takes free memory back) costs
 * more than everything else; so the page cache of a tensor copied out of it is
 * dropped at once, and its memory goes to the next tensors' pages.
 *
 * Invariants:
 *  - A job owns its destination; jobs run in any order. Every job is finished
 *    (or has failed, which fails the load) when hy_load_finish returns, and before
 *    any of our buffers is freed (a failed load frees them with jobs queued).
 *  - Nothing here reads libllama's mapping: a file truncated under us gives a
 *    short read and the "truncated while loading" error, never SIGBUS.
 *  - The page cache is used only where every page of the range is resident
 *    (mincore on a mapping of our own that is never touched); other ranges are
 *    read with direct I/O, so loading pulls nothing into the cache (streamed
 *    neighbours included), except where a direct read failed and is tried again
 *    through it.
 *  - The bytes repacked are the file's bytes and the function is libggml's
 *    (CPU_REPACK's set_tensor), so the result is libllama's own. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ggml-backend-impl.h"
#include "stream/hy_stream_int.h"
#include "util/hy_tensor.h"
#include "util/hy_util.h"

#define MAX_THREADS 8
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels refuse it (EINVAL) and the read faults the pages */
#endif

typedef void (*set_fn)(ggml_backend_buffer_t, struct ggml_tensor *, const void *, size_t, size_t);

struct ljob {
    struct ljob *next;
    struct ggml_tensor *t;
    const hy_tensor_info *ti;
    uint8_t *dst;             /* RAM tier: the tensor's data (≡ file offset mod PAGE) */
    ggml_backend_buffer_t buf; /* HYPURA_REPACK: the buffer, and ggml's repacking set_tensor */
    set_fn repack;
};

struct stage {
    uint8_t *p;
    size_t len;
    bool busy;
};

/* Staging buffers (repacked tensors are read into one, then repacked out of it):
 * at most this many bytes of them at once, and never fewer than two buffers. */
#define STAGE_BYTES ((uint64_t)512 << 20)

struct hy_loader {
    pthread_mutex_t mu;
    pthread_cond_t work, idle, staged;
    struct ljob *head, *tail;
    int pending; /* queued or running */
    bool stop;
    int n_threads;
    pthread_t th[MAX_THREADS];
    struct stage stage[MAX_THREADS];
    int n_stage;              /* staging buffers that may exist */
    uint64_t stage_len;       /* the biggest tensor's page-rounded range: every staging buffer's size */
    int fd;                   /* buffered, no readahead: copies out of the page cache */
    uint8_t *map;             /* the file, for mincore only (never touched) */
    size_t map_len;
    uint64_t bytes_cached, bytes_direct;
};

/* the load fails; the first reason is kept */
__attribute__((format(printf, 2, 3))) static void fail_job(hy_stream *s, const char *fmt, ...) {
    struct hy_loader *L = s->loader;
    pthread_mutex_lock(&L->mu);
    if (!s->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->error, sizeof s->error, fmt, ap);
        va_end(ap);
    }
    s->failed = true;
    pthread_mutex_unlock(&L->mu);
}

/* every page of [off, off+len) in the page cache */
static bool cached(struct hy_loader *L, uint64_t off, uint64_t len) {
    if (!L->map || off + len > L->map_len) return false;
    size_t n = (size_t)hy_round_up(len, PAGE) / PAGE;
    unsigned char small[4096], *v = n <= sizeof small ? small : malloc(n);
    if (!v) return false;
    bool all = mincore(L->map + off, (size_t)len, v) == 0;
    for (size_t i = 0; all && i < n; i++) all = v[i] & 1;
    if (v != small) free(v);
    return all;
}

static int pread_all(int fd, uint8_t *dst, uint64_t n, uint64_t off) {
    uint64_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, dst + got, (size_t)(n - got), (off_t)(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        got += (uint64_t)r;
    }
    return 0;
}

/* a staging buffer of at least len bytes, waiting for one to be free; its p is NULL when out of memory */
static struct stage *stage_get(struct hy_loader *L, size_t len) {
    pthread_mutex_lock(&L->mu);
    struct stage *st = NULL;
    for (;;) {
        for (int i = 0; i < L->n_stage && !st; i++)
            if (!L->stage[i].busy) st = &L->stage[i];
        if (st) break;
        pthread_cond_wait(&L->staged, &L->mu);
    }
    st->busy = true;
    pthread_mutex_unlock(&L->mu);
    if (st->len >= len) return st;
    if (st->p) munmap(st->p, st->len);
    st->p = NULL;
    st->len = 0;
    /* sized once for the biggest tensor: never touched anew for a bigger one */
    size_t l = hy_round_up(len > L->stage_len ? len : L->stage_len, HUGE_ALIGN);
    void *p = mmap(NULL, l, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) {
        madvise(p, l, MADV_HUGEPAGE);
        st->p = p;
        st->len = l;
    }
    return st;
}

static void stage_put(struct hy_loader *L, struct stage *st) {
    pthread_mutex_lock(&L->mu);
    st->busy = false;
    pthread_cond_signal(&L->staged);
    pthread_mutex_unlock(&L->mu);
}

static void run_job(hy_stream *s, struct ljob *j) {
    struct hy_loader *L = s->loader;
    const hy_tensor_info *ti = j->ti;
    uint64_t d = ti->offset % PAGE, r0 = ti->offset - d, r1 = hy_round_up(ti->offset + ti->size, PAGE);
    if (r1 > s->file_size) r1 = s->file_size;
    struct stage *st = j->dst ? NULL : stage_get(L, (size_t)(r1 - r0));
    uint8_t *page = j->dst ? j->dst - d : st->p;
    if (!page) {
        fail_job(s, "loading '%s': out of memory for its staging buffer", ti->name);
        if (st) stage_put(L, st);
        return;
    }
    char err[HY_ERRLEN] = "";
    bool ok;
    if (cached(L, r0, r1 - r0)) {
        ok = pread_all(L->fd, page + d, ti->size, ti->offset) == 0;
        if (ok) {
            __atomic_fetch_add(&L->bytes_cached, ti->size, __ATOMIC_RELAXED);
            /* Copied: its page cache is a second copy of these bytes. Dropped now
             * (the pages wholly inside the tensor: a neighbour may still need the
             * shared ones), the memory goes straight to the next tensors' pages,
             * which on a VM whose host takes back free memory costs several times
             * less to touch than memory the host has to find again (a test
             * program here copied a cached 3.7 GiB file into fresh huge pages in
             * 8.6-9.4 s keeping its cache, 1.0-3.0 s dropping it as it went).
             * Pages someone has mapped are not dropped. */
            uint64_t a = hy_round_up(ti->offset, PAGE), b = (ti->offset + ti->size) / PAGE * PAGE;
            if (b > a) posix_fadvise(L->fd, (off_t)a, (off_t)(b - a), POSIX_FADV_DONTNEED);
        }
    } else {
        /* Fault the tensor's new pages in here, on this worker: a direct read
         * would fault them in the reader's one submitting thread, which would
         * then zero every new page of the load alone while the workers wait
         * (4 cold loads each way on the busy 2-core VM: median 10.8 s against
         * 12.0 s, within its noise). */
        if (j->dst) madvise(page, (size_t)hy_round_up(r1 - r0, PAGE), MADV_POPULATE_WRITE);
        ok = hy_io_read(s->io, page, r0, r1 - r0, err, sizeof err) == 0;
        if (ok) __atomic_fetch_add(&L->bytes_direct, r1 - r0, __ATOMIC_RELAXED);
    }
    /* a failed direct read is tried once more through the page cache: loading
     * must not lose data the file still has */
    if (!ok) ok = pread_all(L->fd, page + d, ti->size, ti->offset) == 0;
    if (!ok) {
        struct stat st;
        if (!fstat(L->fd, &st) && (uint64_t)st.st_size < ti->offset + ti->size) {
            fail_job(s, "%s was truncated while loading (%llu bytes now): tensor '%s' needs bytes up to %llu",
                     s->desc->path, (unsigned long long)st.st_size, ti->name,
                     (unsigned long long)(ti->offset + ti->size));
        } else {
            fail_job(s, "reading tensor '%s': %s", ti->name, err[0] ? err : strerror(errno));
        }
    } else if (j->repack) {
        j->repack(j->buf, j->t, page + d, 0, ti->size);
    }
    if (st) stage_put(L, st);
}

static void *worker(void *arg) {
    hy_stream *s = arg;
    struct hy_loader *L = s->loader;
    pthread_mutex_lock(&L->mu);
    for (;;) {
        while (!L->head && !L->stop) pthread_cond_wait(&L->work, &L->mu);
        if (!L->head) break;
        struct ljob *j = L->head;
        L->head = j->next;
        if (!L->head) L->tail = NULL;
        bool skip = s->failed; /* the load fails anyway: do not spend the time */
        pthread_mutex_unlock(&L->mu);
        if (!skip) run_job(s, j);
        free(j);
        pthread_mutex_lock(&L->mu);
        if (--L->pending == 0) pthread_cond_broadcast(&L->idle);
    }
    pthread_mutex_unlock(&L->mu);
    return NULL;
}

static int threads_wanted(void) {
    const char *e = getenv("HYPURA_LOAD_THREADS");
    long n = e && *e ? strtol(e, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > MAX_THREADS) n = MAX_THREADS;
    return (int)n;
}

static struct hy_loader *loader_start(hy_stream *s) {
    if (s->loader) return s->loader;
    struct hy_loader *L = calloc(1, sizeof *L);
    if (!L) return NULL;
    pthread_mutex_init(&L->mu, NULL);
    pthread_cond_init(&L->work, NULL);
    pthread_cond_init(&L->idle, NULL);
    pthread_cond_init(&L->staged, NULL);
    /* the file that is loading (renamed over or not), in a description of its own:
     * no readahead there, so a page missed after all reads that page alone */
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", s->fd_buffered);
    L->fd = open(self, O_RDONLY | O_CLOEXEC);
    if (L->fd < 0) L->fd = dup(s->fd_buffered);
    else posix_fadvise(L->fd, 0, 0, POSIX_FADV_RANDOM);
    L->map_len = (size_t)s->file_size;
    /* with I/O faults injected (tests), every byte goes through the reader, where they apply */
    void *m = L->map_len && !hy_io_faults_active(s->io)
                  ? mmap(NULL, L->map_len, PROT_READ, MAP_SHARED, s->fd_buffered, 0)
                  : MAP_FAILED;
    L->map = m == MAP_FAILED ? NULL : m;
    s->loader = L;
    int n = threads_wanted();
    for (int i = 0; i < n && !pthread_create(&L->th[i], NULL, worker, s); i++) L->n_threads++;
    uint64_t biggest = 1;
    for (int64_t i = 0; i < s->desc->n_tensors; i++)
        if (s->desc->tensors[i].size > biggest) biggest = s->desc->tensors[i].size;
    L->stage_len = hy_round_up(biggest, PAGE) + PAGE;
    uint64_t fit = STAGE_BYTES / biggest;
    L->n_stage = fit < 2 ? 2 : fit > (uint64_t)MAX_THREADS ? MAX_THREADS : (int)fit;
    if (L->n_stage > L->n_threads && L->n_threads > 0) L->n_stage = L->n_threads < 2 ? 2 : L->n_threads;
    return L;
}

/* Queues a job; without a loader (out of memory, no thread) it runs here. */
static void submit(hy_stream *s, struct ljob *j) {
    struct hy_loader *L = loader_start(s);
    if (!L || L->n_threads == 0) {
        if (L) {
            run_job(s, j);
        } else {
            snprintf(s->error, sizeof s->error, "out of memory loading '%s'", j->ti->name);
            s->failed = true;
        }
        free(j);
        return;
    }
    pthread_mutex_lock(&L->mu);
    j->next = NULL;
    if (L->tail) L->tail->next = j;
    else L->head = j;
    L->tail = j;
    L->pending++;
    pthread_cond_signal(&L->work);
    pthread_mutex_unlock(&L->mu);
}

bool hy_load_fill(hy_stream *s, struct ggml_tensor *t, const hy_tensor_info *ti) {
    struct ljob *j = calloc(1, sizeof *j);
    if (!j) return false;
    j->t = t;
    j->ti = ti;
    j->dst = t->data;
    submit(s, j);
    return true;
}

void hy_load_drain(hy_stream *s) {
    struct hy_loader *L = s->loader;
    if (!L) return;
    pthread_mutex_lock(&L->mu);
    while (L->pending > 0) pthread_cond_wait(&L->idle, &L->mu);
    pthread_mutex_unlock(&L->mu);
}

void hy_load_finish(hy_stream *s) {
    struct hy_loader *L = s->loader;
    if (!L) return;
    hy_load_drain(s);
    pthread_mutex_lock(&L->mu);
    L->stop = true;
    pthread_cond_broadcast(&L->work);
    pthread_mutex_unlock(&L->mu);
    for (int i = 0; i < L->n_threads; i++) pthread_join(L->th[i], NULL);
    for (int i = 0; i < MAX_THREADS; i++)
        if (L->stage[i].p) munmap(L->stage[i].p, L->stage[i].len);
    if (L->map) munmap(L->map, L->map_len);
    if (L->fd >= 0) close(L->fd);
    s->load_bytes_cached += L->bytes_cached;
    s->load_bytes_direct += L->bytes_direct;
    pthread_mutex_destroy(&L->mu);
    pthread_cond_destroy(&L->work);
    pthread_cond_destroy(&L->idle);
    pthread_cond_destroy(&L->staged);
    free(L);
    s->loader = NULL;
}

/* ---------------------------------------------------------- HYPURA_REPACK */

/* A buffer of ours whose type, as ggml sees it (buffer->buft), is CPU_REPACK:
 * ggml-cpu recognises its tensors as repacked (extra_buffer_type::supports_op and
 * get_tensor_traits compare buffer->buft), and tensor->extra comes from CPU_REPACK's
 * own init_tensor. Only the memory (transparent huge pages) and the filling
 * (worker threads, from our reads) are ours. */
struct pbuf {
    hy_stream *s;
    uint8_t *map, *base;
    size_t map_len;
};

static void pbuf_free(ggml_backend_buffer_t b) {
    struct pbuf *pb = b->context;
    hy_load_drain(pb->s); /* a failed load frees buffers with jobs queued */
    munmap(pb->map, pb->map_len);
    free(pb);
}

static void *pbuf_base(ggml_backend_buffer_t b) { return ((struct pbuf *)b->context)->base; }

static enum ggml_status pbuf_init_tensor(ggml_backend_buffer_t b, struct ggml_tensor *t) {
    struct pbuf *pb = b->context;
    hy_stream *s = pb->s;
    if (t->view_src) return GGML_STATUS_SUCCESS;
    enum ggml_status st = s->repack_init(b, t);
    if (st == GGML_STATUS_SUCCESS && !t->extra) {
        /* hy_place predicted a repacking that ggml does not do: refuse rather than compute differently */
        snprintf(s->error, sizeof s->error, "tensor '%s' was placed for repacking, which ggml does not support for it",
                 t->name);
        s->failed = true;
        return GGML_STATUS_FAILED;
    }
    return st;
}

static void pbuf_set(ggml_backend_buffer_t b, struct ggml_tensor *t, const void *data, size_t off, size_t n) {
    struct pbuf *pb = b->context;
    hy_stream *s = pb->s;
    const hy_tensor_info *ti = hy_model_find(s->desc, t->name);
    if (ti && off == 0 && n == ti->size && n == ggml_nbytes(t)) {
        struct ljob *j = calloc(1, sizeof *j);
        if (j) {
            j->t = t;
            j->ti = ti;
            j->buf = b;
            j->repack = s->repack_set;
            submit(s, j);
            return;
        }
    }
    /* from the loader's bytes, as CPU_REPACK would (never for a tensor of the file, whole) */
    s->repack_set(b, t, data, off, n);
}

static void pbuf_clear(ggml_backend_buffer_t b, uint8_t v) {
    struct pbuf *pb = b->context;
    memset(pb->base, v, b->size);
}

static const char *pbuft_name(ggml_backend_buffer_type_t bt) {
    (void)bt;
    return "HYPURA_REPACK";
}

static ggml_backend_buffer_t pbuft_alloc(ggml_backend_buffer_type_t bt, size_t size) {
    hy_stream *s = bt->context;
    struct pbuf *pb = calloc(1, sizeof *pb);
    if (!pb) return NULL;
    pb->s = s;
    pb->map_len = (size ? size : 1) + HUGE_ALIGN;
    pb->map = mmap(NULL, pb->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pb->map == MAP_FAILED) {
        free(pb);
        return NULL;
    }
    pb->base = (uint8_t *)(((uintptr_t)pb->map + HUGE_ALIGN - 1) & ~(uintptr_t)(HUGE_ALIGN - 1));
    madvise(pb->map, pb->map_len, MADV_HUGEPAGE); /* fewer first-touch faults at load, fewer TLB misses after */
    static const struct ggml_backend_buffer_i iface = {
        .free_buffer = pbuf_free,
        .get_base = pbuf_base,
        .init_tensor = pbuf_init_tensor,
        .memset_tensor = hy_tensor_host_memset,
        .set_tensor = pbuf_set,
        .clear = pbuf_clear,
    };
    return ggml_backend_buffer_init(s->repack_real, iface, pb, size);
}

static size_t pbuft_alignment(ggml_backend_buffer_type_t bt) {
    return ggml_backend_buft_get_alignment(((hy_stream *)bt->context)->repack_real);
}

static size_t pbuft_max_size(ggml_backend_buffer_type_t bt) {
    return ggml_backend_buft_get_max_size(((hy_stream *)bt->context)->repack_real);
}

static size_t pbuft_alloc_size(ggml_backend_buffer_type_t bt, const struct ggml_tensor *t) {
    return ggml_backend_buft_get_alloc_size(((hy_stream *)bt->context)->repack_real, t);
}

int hy_load_repack_init(hy_stream *s, ggml_backend_buffer_type_t real, char *err, size_t errlen) {
    /* CPU_REPACK's own tensor functions, from a buffer of its type */
    ggml_backend_buffer_t probe = ggml_backend_buft_alloc_buffer(real, 64);
    if (!probe) return hy_fail(err, errlen, "cannot allocate a %s buffer", ggml_backend_buft_name(real));
    s->repack_init = probe->iface.init_tensor;
    s->repack_set = probe->iface.set_tensor;
    ggml_backend_buffer_free(probe);
    if (!s->repack_init || !s->repack_set)
        return hy_fail(err, errlen, "ggml's %s buffers do not repack in set_tensor", ggml_backend_buft_name(real));
    s->repack_real = real;
    s->repack_buft.iface = (struct ggml_backend_buffer_type_i){
        .get_name = pbuft_name,
        .alloc_buffer = pbuft_alloc,
        .get_alignment = pbuft_alignment,
        .get_max_size = pbuft_max_size,
        .get_alloc_size = pbuft_alloc_size,
    };
    s->repack_buft.device = real->device;
    s->repack_buft.context = s;
    return 0;
}
