#include "io/hy_io.h"

#include "util/hy_util.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#ifdef HY_HAVE_URING
#include <liburing.h>
#endif

#define HY_IO_MAX_FAULTS 16
#define HY_IO_MAX_RETRIES 10000
#define HY_IO_EFD_TAG ((uint64_t)1) /* user_data of the eventfd poll; chunks are aligned pointers */

/* One request: a piece of a ticket, at most `chunk` bytes. A chunk is in exactly
 * one place at a time: the shared queue, a backend's hands, or a local list of
 * the uring thread (ready / deferred), linked through `next`. */
typedef struct hy_chunk {
    struct hy_chunk *next;
    hy_io_ticket *t;
    uint8_t *dst;
    uint64_t off;
    uint32_t len;  /* bytes requested (aligned when direct) */
    uint32_t want; /* bytes that must arrive; < len only for the bounced EOF tail */
    uint32_t done; /* bytes arrived */
    uint32_t attempts;
    int res;       /* a result waiting to be handled (uring thread) */
    int err;       /* 0, an errno, or -1 for a short read */
    uint64_t err_off;
    double t_issue;
    bool idle;     /* taken from the idle queue (counted in io->idle_inflight while in flight) */
} hy_chunk;

struct hy_io_ticket {
    int remaining; /* chunks not finished; guarded by io->mtx */
    int status;
    uint64_t err_off;
    char msg[320];
    uint8_t *bounce; /* the last partial block of an O_DIRECT read ending at EOF */
    uint8_t *bounce_dst;
    uint32_t bounce_n;
    size_t nchunks;
    bool idle;       /* chunks may still be in the idle queue; guarded by io->mtx */
    hy_chunk chunks[];
};

enum { F_EIO, F_SHORT, F_EAGAIN };
struct hy_fault {
    int kind;
    uint64_t off, len;  /* the faulty byte range [off, off+len); len 1 unless given */
    uint64_t limit;     /* trigger at most this many times; 0 = always */
    uint64_t hits;      /* times triggered (atomic) */
};

struct hy_io {
    int fd;
    char path[1024];
    uint64_t size;
    size_t align;
    bool direct;
    int backend; /* HY_IO_URING or HY_IO_PREAD */
    char name[32];
    hy_io_params p;

    pthread_mutex_t mtx;
    pthread_cond_t done_cv; /* a ticket finished */
    pthread_cond_t work_cv; /* pool: queue not empty, or stopping */
    hy_chunk *qhead, *qtail;
    hy_chunk *lhead, *ltail;        /* the idle queue (hy_io_read_async_idle) */
    int idle_inflight;              /* its chunks in flight, at most idle_cap */
    int idle_cap;
    bool stopping;

    uint64_t st_bytes, st_requests; /* atomics */
    int inflight;                   /* under mtx, for busy time */
    double busy_start, busy_acc;

    struct hy_fault faults[HY_IO_MAX_FAULTS];
    int nfaults;
    int delay_ms;
    bool fault_nodirect;

    pthread_t *threads;
    int nthreads;
#ifdef HY_HAVE_URING
    struct io_uring ring;
    bool ring_ok;
    int efd;
#endif
};

hy_io_params hy_io_default_params(void) {
    hy_io_params p = {.queue_depth = 16, .chunk = 1u << 20, .backend = HY_IO_AUTO, .allow_buffered = true};
    return p;
}

size_t hy_io_alignment(const hy_io *io) { return io->align; }
bool hy_io_is_direct(const hy_io *io) { return io->direct; }
bool hy_io_faults_active(const hy_io *io) { return io->nfaults > 0 || io->delay_ms > 0 || io->fault_nodirect; }
const char *hy_io_backend_name(const hy_io *io) { return io->name; }
uint64_t hy_io_file_size(const hy_io *io) { return io->size; }

static const char *err_name(int e) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
    const char *n = strerrorname_np(e);
    if (n) return n;
#endif
    return e == EIO ? "EIO" : e == EINVAL ? "EINVAL" : "error";
}

/* ---- fault injection ------------------------------------------------------ */

static bool parse_off(const char *s, uint64_t *out) {
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (!errno && end != s && *end == 0) {
        *out = v;
        return true;
    }
    return hy_parse_bytes(s, out);
}

static int parse_faults(hy_io *io, char *err, size_t errlen) {
    const char *env = getenv("HYPURA_IO_FAULT");
    if (!env || !*env) return 0;
    char buf[512];
    if (strlen(env) >= sizeof buf) return hy_fail(err, errlen, "HYPURA_IO_FAULT is too long");
    strcpy(buf, env);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        static const struct { const char *pfx; int kind; } kinds[] = {
            {"eio@", F_EIO}, {"short@", F_SHORT}, {"eagain@", F_EAGAIN}};
        bool ok = false;
        if (!strcmp(tok, "nodirect")) {
            io->fault_nodirect = true;
            ok = true;
        } else if (!strncmp(tok, "delay_ms=", 9)) {
            char *end = NULL;
            long v = strtol(tok + 9, &end, 10);
            if (end != tok + 9 && !*end && v >= 0 && v <= 600000) {
                io->delay_ms = (int)v;
                ok = true;
            }
        }
        for (size_t k = 0; !ok && k < sizeof kinds / sizeof kinds[0]; k++) {
            size_t n = strlen(kinds[k].pfx);
            if (strncmp(tok, kinds[k].pfx, n)) continue;
            if (io->nfaults >= HY_IO_MAX_FAULTS) return hy_fail(err, errlen, "HYPURA_IO_FAULT: too many faults");
            struct hy_fault *f = &io->faults[io->nfaults];
            memset(f, 0, sizeof *f);
            f->len = 1;
            char spec[128];
            if (strlen(tok + n) >= sizeof spec) break;
            strcpy(spec, tok + n);
            char *cnt = strchr(spec, '#'), *ln = strchr(spec, '+');
            if (cnt) *cnt++ = 0;
            if (ln && (!cnt || ln < cnt)) *ln++ = 0;
            else ln = NULL;
            if (!parse_off(spec, &f->off)) break;
            if (ln && (!parse_off(ln, &f->len) || f->len == 0 || f->off + f->len < f->off)) break;
            if (!ln && kinds[k].kind == F_SHORT) f->len = UINT64_MAX - f->off; /* the file "ends" at OFFSET */
            if (cnt && (!parse_off(cnt, &f->limit) || f->limit == 0)) break;
            f->kind = kinds[k].kind;
            io->nfaults++;
            ok = true;
        }
        if (!ok)
            return hy_fail(err, errlen,
                           "HYPURA_IO_FAULT: cannot parse '%s' (want eio@OFF, short@OFF, eagain@OFF, each optionally "
                           "+LEN and #COUNT; delay_ms=N; nodirect)", tok);
    }
    fprintf(stderr, "hypura: io fault injection active for %s: %s\n", io->path, env);
    return 0;
}

static bool fault_take(struct hy_fault *f) { /* one more trigger allowed? */
    if (!f->limit) return true;
    return __atomic_fetch_add(&f->hits, 1, __ATOMIC_RELAXED) < f->limit;
}

/* True when the request [off, off+*len) must not reach the kernel; *res is then
 * its simulated result. May shorten *len (short@). */
static bool fault_apply(hy_io *io, const hy_chunk *c, uint64_t off, uint32_t *len, int *res) {
    for (int i = 0; i < io->nfaults; i++) {
        struct hy_fault *f = &io->faults[i];
        if (f->limit && __atomic_load_n(&f->hits, __ATOMIC_RELAXED) >= f->limit) continue; /* spent */
        bool covers = f->off < off + *len && off < f->off + f->len;
        switch (f->kind) {
        case F_EIO:
            if (covers && fault_take(f)) {
                *res = -EIO;
                return true;
            }
            break;
        case F_EAGAIN:
            if (covers && c->attempts == 0 && fault_take(f)) {
                *res = -EAGAIN;
                return true;
            }
            break;
        case F_SHORT: {
            /* the file seems to end at `end`: a request across it transfers up to
             * it (a partial read, resubmitted for the rest), one from it gets EOF,
             * which is what #COUNT counts */
            uint64_t end = f->off / io->align * io->align;
            if (off + *len <= end || off >= f->off + f->len) break;
            if (off < end) {
                *len = (uint32_t)(end - off);
                break;
            }
            if (fault_take(f)) {
                *res = 0;
                return true;
            }
            break;
        }
        }
    }
    return false;
}

/* ---- completion, shared by both backends ---------------------------------- */

/* Accounts one result of a chunk's request. True when the rest must be requested. */
static bool chunk_progress(hy_chunk *c, int res) {
    if (res == -EAGAIN || res == -EINTR) {
        if (++c->attempts < HY_IO_MAX_RETRIES) return true;
        res = -EAGAIN;
    }
    if (res < 0) {
        c->err = -res;
        c->err_off = c->off + c->done;
        return false;
    }
    if (res == 0) {
        if (c->done < c->want) {
            c->err = -1;
            c->err_off = c->off + c->done;
        }
        return false;
    }
    c->done += (uint32_t)res;
    return c->done < c->want;
}

static void wake_backend(hy_io *io, bool all) { /* mtx held for the pool's cv */
    if (io->backend == HY_IO_PREAD) {
        if (all) pthread_cond_broadcast(&io->work_cv);
        else pthread_cond_signal(&io->work_cv);
    }
}

static void stats_issue(hy_io *io) { /* mtx held */
    if (io->inflight++ == 0) io->busy_start = hy_now();
}

static void chunk_finish(hy_io *io, hy_chunk *c) {
    hy_io_ticket *t = c->t;
    if (!c->err && t->bounce && c->dst == t->bounce) memcpy(t->bounce_dst, t->bounce, t->bounce_n);
    pthread_mutex_lock(&io->mtx);
    if (c->err && (!t->status || c->err_off < t->err_off)) { /* report the error nearest the start */
        t->status = -1;
        t->err_off = c->err_off;
        if (c->err > 0) {
            char eb[128];
            const char *es = strerror_r(c->err, eb, sizeof eb);
            hy_fail(t->msg, sizeof t->msg, "%s reading %s at offset %llu (%s)", err_name(c->err), io->path,
                    (unsigned long long)c->err_off, es);
        } else {
            /* EOF where the file had bytes at open: it was truncated under us */
            struct stat st;
            uint64_t was = __atomic_load_n(&io->size, __ATOMIC_RELAXED);
            if (!fstat(io->fd, &st) && S_ISREG(st.st_mode) && (uint64_t)st.st_size < was)
                hy_fail(t->msg, sizeof t->msg,
                        "%s was truncated while in use (%llu bytes now, %llu when opened): short read at offset %llu",
                        io->path, (unsigned long long)st.st_size, (unsigned long long)was,
                        (unsigned long long)c->err_off);
            else
                hy_fail(t->msg, sizeof t->msg, "short read at offset %llu of %s: end of file %u bytes early",
                        (unsigned long long)c->err_off, io->path, c->want - c->done);
        }
    }
    if (!c->err) __atomic_fetch_add(&io->st_bytes, c->want, __ATOMIC_RELAXED);
    if (--io->inflight == 0) io->busy_acc += hy_now() - io->busy_start;
    if (c->idle && --io->idle_inflight < io->idle_cap && io->lhead) wake_backend(io, false);
    if (--t->remaining == 0) pthread_cond_broadcast(&io->done_cv);
    pthread_mutex_unlock(&io->mtx);
}

static void sleep_until(double t) {
    double d = t - hy_now();
    if (d <= 0) return;
    struct timespec ts = {.tv_sec = (time_t)d, .tv_nsec = (long)((d - (double)(time_t)d) * 1e9)};
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

/* ---- dispatch -------------------------------------------------------------- */

/* The next chunk to issue (mtx held): the queue first; the idle queue's only
 * when the queue is empty, with at most idle_cap of them in flight, so that a
 * read queued later waits behind no more than idle_cap idle chunks. */
static hy_chunk *take_chunk(hy_io *io) {
    hy_chunk *c = io->qhead;
    if (c) {
        io->qhead = c->next;
        if (!io->qhead) io->qtail = NULL;
        c->idle = false;
        return c;
    }
    c = io->lhead;
    if (!c || (io->idle_inflight >= io->idle_cap && !io->stopping)) return NULL;
    io->lhead = c->next;
    if (!io->lhead) io->ltail = NULL;
    c->idle = true;
    io->idle_inflight++;
    return c;
}

static bool has_work(const hy_io *io) {
    return io->qhead || (io->lhead && (io->idle_inflight < io->idle_cap || io->stopping));
}

static void wake_uring(hy_io *io) { /* mtx not held */
#ifdef HY_HAVE_URING
    if (io->backend == HY_IO_URING) {
        uint64_t one = 1;
        ssize_t r = write(io->efd, &one, sizeof one);
        (void)r;
    }
#else
    (void)io;
#endif
}

/* ---- pread pool ------------------------------------------------------------ */

static void *pool_worker(void *arg) {
    hy_io *io = arg;
    pthread_mutex_lock(&io->mtx);
    for (;;) {
        while (!has_work(io) && !io->stopping) pthread_cond_wait(&io->work_cv, &io->mtx);
        hy_chunk *c = take_chunk(io);
        if (!c) break;
        stats_issue(io);
        pthread_mutex_unlock(&io->mtx);

        c->t_issue = hy_now();
        for (;;) {
            uint64_t off = c->off + c->done;
            uint32_t len = c->len - c->done;
            int res;
            __atomic_fetch_add(&io->st_requests, 1, __ATOMIC_RELAXED);
            if (!fault_apply(io, c, off, &len, &res)) {
                ssize_t r = pread(io->fd, c->dst + c->done, len, (off_t)off);
                res = r < 0 ? -errno : (int)r;
            }
            if (!chunk_progress(c, res)) break;
        }
        if (io->delay_ms) sleep_until(c->t_issue + io->delay_ms * 1e-3);
        chunk_finish(io, c);
        pthread_mutex_lock(&io->mtx);
    }
    pthread_mutex_unlock(&io->mtx);
    return NULL;
}

/* ---- io_uring -------------------------------------------------------------- */

#ifdef HY_HAVE_URING
typedef struct {
    hy_io *io;
    hy_chunk *ready;    /* results made up by fault injection, not yet handled */
    hy_chunk *deferred; /* finished, held back by delay_ms */
    int inflight;       /* chunks taken from the queue and not finished */
} uring_state;

static struct io_uring_sqe *get_sqe(struct io_uring *ring) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    while (!sqe) {
        io_uring_submit(ring);
        sqe = io_uring_get_sqe(ring);
    }
    return sqe;
}

static void uring_submit_chunk(uring_state *s, hy_chunk *c) {
    hy_io *io = s->io;
    uint64_t off = c->off + c->done;
    uint32_t len = c->len - c->done;
    int res;
    __atomic_fetch_add(&io->st_requests, 1, __ATOMIC_RELAXED);
    if (fault_apply(io, c, off, &len, &res)) {
        c->res = res;
        c->next = s->ready;
        s->ready = c;
        return;
    }
    struct io_uring_sqe *sqe = get_sqe(&io->ring);
    io_uring_prep_read(sqe, io->fd, c->dst + c->done, len, off);
    io_uring_sqe_set_data(sqe, c);
}

static void uring_handle(uring_state *s, hy_chunk *c, int res) {
    if (chunk_progress(c, res)) {
        uring_submit_chunk(s, c);
        return;
    }
    if (s->io->delay_ms && hy_now() < c->t_issue + s->io->delay_ms * 1e-3) {
        c->next = s->deferred;
        s->deferred = c;
        return;
    }
    chunk_finish(s->io, c);
    s->inflight--;
}

static void arm_poll(hy_io *io) {
    struct io_uring_sqe *sqe = get_sqe(&io->ring);
    io_uring_prep_poll_add(sqe, io->efd, POLLIN);
    io_uring_sqe_set_data64(sqe, HY_IO_EFD_TAG);
}

static void *uring_thread(void *arg) {
    hy_io *io = arg;
    uring_state s = {.io = io};
    bool poll_armed = false;
    const int qd = io->p.queue_depth;
    for (;;) {
        hy_chunk *fresh = NULL;
        pthread_mutex_lock(&io->mtx);
        hy_chunk *c;
        while (s.inflight < qd && (c = take_chunk(io))) {
            stats_issue(io);
            c->next = fresh;
            fresh = c;
            s.inflight++;
        }
        bool stop = io->stopping && !io->qhead && !io->lhead && s.inflight == 0;
        pthread_mutex_unlock(&io->mtx);
        if (stop) break;

        double now = hy_now();
        while (fresh) {
            hy_chunk *c = fresh;
            fresh = c->next;
            c->t_issue = now;
            uring_submit_chunk(&s, c);
        }
        while (s.ready) {
            hy_chunk *c = s.ready;
            s.ready = c->next;
            uring_handle(&s, c, c->res);
        }
        /* Nothing in flight now (every chunk taken above finished at once: an
         * injected fault). The stop seen above was false because they were in
         * flight, and the eventfd write that came with `stopping` may be consumed
         * already: look again instead of waiting for a wake-up that will not come
         * (hy_io_close hung here, now and then, after a failed read). */
        if (s.inflight == 0 && !s.deferred) {
            pthread_mutex_lock(&io->mtx);
            bool again = io->stopping;
            pthread_mutex_unlock(&io->mtx);
            if (again) continue;
        }
        if (!poll_armed) {
            arm_poll(io);
            poll_armed = true;
        }
        io_uring_submit(&io->ring);

        /* wait for a completion, or for the first deferred chunk to come due */
        double due = 0;
        for (hy_chunk *c = s.deferred; c; c = c->next) {
            double d = c->t_issue + io->delay_ms * 1e-3;
            if (due == 0 || d < due) due = d;
        }
        struct io_uring_cqe *cqe = NULL;
        int rc;
        if (due > 0) {
            double w = due - hy_now();
            if (w < 0) w = 0;
            struct __kernel_timespec ts = {.tv_sec = (long long)w, .tv_nsec = (long long)((w - (long long)w) * 1e9)};
            rc = io_uring_wait_cqe_timeout(&io->ring, &cqe, &ts);
        } else {
            rc = io_uring_wait_cqe(&io->ring, &cqe);
        }
        if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN) {
            /* the ring itself failed (should not happen): say so and retry after a pause */
            fprintf(stderr, "hypura: io_uring wait failed: %s\n", strerror(-rc));
            sleep_until(hy_now() + 0.001);
        }
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&io->ring, head, cqe) {
            seen++;
            uint64_t ud = io_uring_cqe_get_data64(cqe);
            if (ud == HY_IO_EFD_TAG) {
                uint64_t v;
                ssize_t r = read(io->efd, &v, sizeof v);
                (void)r;
                poll_armed = false;
                continue;
            }
            uring_handle(&s, (hy_chunk *)(uintptr_t)ud, cqe->res);
        }
        io_uring_cq_advance(&io->ring, seen);

        if (s.deferred) {
            now = hy_now();
            hy_chunk **pp = &s.deferred;
            while (*pp) {
                hy_chunk *c = *pp;
                if (c->t_issue + io->delay_ms * 1e-3 <= now) {
                    *pp = c->next;
                    chunk_finish(io, c);
                    s.inflight--;
                } else {
                    pp = &c->next;
                }
            }
        }
    }
    return NULL;
}

static int uring_start(hy_io *io, char *err, size_t errlen) {
    unsigned entries = (unsigned)io->p.queue_depth * 2 + 4;
    if (entries > 4096) entries = 4096;
    int rc = io_uring_queue_init(entries, &io->ring, 0);
    if (rc < 0) return hy_fail(err, errlen, "io_uring_queue_init: %s", strerror(-rc));
    io->ring_ok = true;
    io->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (io->efd < 0) return hy_fail(err, errlen, "eventfd: %s", strerror(errno));
    io->threads = calloc(1, sizeof(pthread_t));
    if (!io->threads) return hy_fail(err, errlen, "out of memory");
    if ((rc = pthread_create(&io->threads[0], NULL, uring_thread, io)))
        return hy_fail(err, errlen, "cannot start the io_uring thread: %s", strerror(rc));
    io->nthreads = 1;
    return 0;
}
#endif

static int pool_start(hy_io *io, char *err, size_t errlen) {
    io->threads = calloc((size_t)io->p.queue_depth, sizeof(pthread_t));
    if (!io->threads) return hy_fail(err, errlen, "out of memory");
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < io->p.queue_depth; i++) {
        int rc = pthread_create(&io->threads[i], &attr, pool_worker, io);
        if (rc) {
            pthread_attr_destroy(&attr);
            return hy_fail(err, errlen, "cannot start pread worker %d: %s", i, strerror(rc));
        }
        io->nthreads++;
    }
    pthread_attr_destroy(&attr);
    return 0;
}

/* ---- open / close ---------------------------------------------------------- */

static int file_size(int fd, uint64_t *size, char *err, size_t errlen, const char *path) {
    struct stat st;
    if (fstat(fd, &st)) return hy_fail(err, errlen, "cannot stat %s: %s", path, strerror(errno));
    if (S_ISREG(st.st_mode)) {
        *size = (uint64_t)st.st_size;
        return 0;
    }
    if (S_ISBLK(st.st_mode)) {
        uint64_t n = 0;
        if (ioctl(fd, BLKGETSIZE64, &n)) return hy_fail(err, errlen, "cannot size %s: %s", path, strerror(errno));
        *size = n;
        return 0;
    }
    return hy_fail(err, errlen, "%s is not a regular file or block device", path);
}

/* the filesystem's name, for the one warning about buffered reads */
static const char *fs_name(const char *path) {
    struct statfs sf;
    if (statfs(path, &sf)) return "an unknown filesystem";
    static const struct { unsigned long magic; const char *name; } fs[] = {
        {0x01021994, "tmpfs"}, {0x858458f6, "ramfs"}, {0x65735546, "fuse"}, {0x794c7630, "overlayfs"},
        {0x6969, "nfs"}, {0x01021997, "9p (v9fs)"}, {0xff534d42, "cifs"}, {0xfe534d42, "smb2"},
        {0x73717368, "squashfs"}, {0x9123683e, "btrfs"}, {0xef53, "ext2/3/4"}, {0x58465342, "xfs"},
        {0x2fc12fc1, "zfs"}, {0x4d44, "vfat"}, {0x5346544e, "ntfs"}, {0x6a656a63, "virtiofs"}};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        if ((unsigned long)sf.f_type == fs[i].magic) return fs[i].name;
    static __thread char buf[48];
    snprintf(buf, sizeof buf, "filesystem type 0x%lx", (unsigned long)sf.f_type);
    return buf;
}

/* O_DIRECT can be accepted by open() and still refused by read(): probe one block */
static bool direct_read_works(int fd, size_t align, uint64_t size) {
    if (size == 0) return true;
    void *buf = NULL;
    if (posix_memalign(&buf, align, align)) return true;
    ssize_t r = pread(fd, buf, align, 0);
    bool ok = !(r < 0 && errno == EINVAL);
    free(buf);
    return ok;
}

static void teardown(hy_io *io) {
    pthread_mutex_lock(&io->mtx);
    io->stopping = true;
    pthread_cond_broadcast(&io->work_cv);
    pthread_mutex_unlock(&io->mtx);
#ifdef HY_HAVE_URING
    if (io->backend == HY_IO_URING && io->efd >= 0) {
        uint64_t one = 1;
        ssize_t r = write(io->efd, &one, sizeof one);
        (void)r;
    }
#endif
    for (int i = 0; i < io->nthreads; i++) pthread_join(io->threads[i], NULL);
    free(io->threads);
#ifdef HY_HAVE_URING
    if (io->ring_ok) io_uring_queue_exit(&io->ring);
    if (io->efd >= 0) close(io->efd);
#endif
    if (io->fd >= 0) close(io->fd);
    pthread_mutex_destroy(&io->mtx);
    pthread_cond_destroy(&io->done_cv);
    pthread_cond_destroy(&io->work_cv);
    free(io);
}

hy_io *hy_io_open(const char *path, const hy_io_params *pp, char *err, size_t errlen) {
    hy_io_params p = pp ? *pp : hy_io_default_params();
    if (!path || !*path) {
        hy_fail(err, errlen, "hy_io_open: no path");
        return NULL;
    }
    if (p.queue_depth < 1 || p.queue_depth > 1024) {
        hy_fail(err, errlen, "hy_io_open: queue_depth %d out of range 1..1024", p.queue_depth);
        return NULL;
    }
    if (p.chunk == 0 || p.chunk > (1u << 30)) {
        hy_fail(err, errlen, "hy_io_open: chunk %zu out of range 1..1 GiB", p.chunk);
        return NULL;
    }
    if (p.backend == HY_IO_AUTO) {
        const char *e = getenv("HYPURA_IO_BACKEND");
        if (e && !strcmp(e, "uring")) p.backend = HY_IO_URING;
        else if (e && !strcmp(e, "pread")) p.backend = HY_IO_PREAD;
    }
    if (p.backend != HY_IO_AUTO && p.backend != HY_IO_URING && p.backend != HY_IO_PREAD) {
        hy_fail(err, errlen, "hy_io_open: unknown backend %d", p.backend);
        return NULL;
    }

    hy_io *io = calloc(1, sizeof *io);
    if (!io) {
        hy_fail(err, errlen, "out of memory");
        return NULL;
    }
    io->fd = -1;
#ifdef HY_HAVE_URING
    io->efd = -1;
#endif
    pthread_mutex_init(&io->mtx, NULL);
    pthread_cond_init(&io->done_cv, NULL);
    pthread_cond_init(&io->work_cv, NULL);
    if (strlen(path) >= sizeof io->path) {
        hy_fail(err, errlen, "path too long: %s", path);
        goto fail;
    }
    strcpy(io->path, path);
    if (parse_faults(io, err, errlen)) goto fail;

    if (io->fault_nodirect) {
        io->fd = -1;
        errno = EINVAL;
    } else {
        io->fd = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
    }
    io->direct = io->fd >= 0;
    if (io->fd < 0 && errno != EINVAL) {
        hy_fail(err, errlen, "cannot open %s: %s", path, strerror(errno));
        goto fail;
    }
    io->align = 1;
    if (io->direct) {
        io->align = 4096;
#ifdef STATX_DIOALIGN
        struct statx sx;
        if (!statx(io->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) && (sx.stx_mask & STATX_DIOALIGN)) {
            if (sx.stx_dio_offset_align == 0) io->direct = false; /* the filesystem says: no direct I/O */
            else {
                if (sx.stx_dio_offset_align > io->align) io->align = sx.stx_dio_offset_align;
                if (sx.stx_dio_mem_align > io->align) io->align = sx.stx_dio_mem_align;
            }
        }
#endif
    }
    if (io->direct && file_size(io->fd, &io->size, err, errlen, path)) goto fail;
    if (io->direct && !direct_read_works(io->fd, io->align, io->size)) io->direct = false;
    if (!io->direct) {
        if (!p.allow_buffered) {
            hy_fail(err, errlen, "%s: O_DIRECT is not supported on this filesystem (buffered fallback disabled)", path);
            goto fail;
        }
        if (io->fd >= 0) close(io->fd);
        io->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (io->fd < 0) {
            hy_fail(err, errlen, "cannot open %s: %s", path, strerror(errno));
            goto fail;
        }
        io->align = 1;
        /* once per path: the profile's sweep reopens the same file for every point */
        static pthread_mutex_t warn_mtx = PTHREAD_MUTEX_INITIALIZER;
        static char warned[sizeof io->path];
        pthread_mutex_lock(&warn_mtx);
        if (strcmp(warned, path)) {
            strcpy(warned, path);
            fprintf(stderr,
                    "hypura: warning: %s is on %s, which refuses O_DIRECT: reading through the page cache "
                    "(buffered)%s\n",
                    path, fs_name(path), io->fault_nodirect ? " [HYPURA_IO_FAULT=nodirect]" : "");
        }
        pthread_mutex_unlock(&warn_mtx);
    }
    if (file_size(io->fd, &io->size, err, errlen, path)) goto fail;
    p.chunk = (size_t)hy_round_up(p.chunk, io->align);
    io->p = p;
    io->idle_cap = p.queue_depth / 4 > 1 ? p.queue_depth / 4 : 1;

    int rc = -1;
    char uerr[256] = "io_uring support not compiled in";
#ifdef HY_HAVE_URING
    if (p.backend != HY_IO_PREAD) {
        rc = uring_start(io, uerr, sizeof uerr);
        if (rc == 0) io->backend = HY_IO_URING;
        else if (io->nthreads == 0) { /* nothing started yet: undo and fall back */
            if (io->ring_ok) io_uring_queue_exit(&io->ring);
            io->ring_ok = false;
            if (io->efd >= 0) close(io->efd);
            io->efd = -1;
            free(io->threads);
            io->threads = NULL;
        }
    }
#endif
    if (rc != 0) {
        if (p.backend == HY_IO_URING) {
            hy_fail(err, errlen, "io_uring backend unavailable: %s", uerr);
            goto fail;
        }
        io->backend = HY_IO_PREAD;
        if (pool_start(io, err, errlen)) goto fail;
    }
    snprintf(io->name, sizeof io->name, "%s%s", io->backend == HY_IO_URING ? "io_uring" : "pread-pool",
             io->direct ? "" : "+buffered");
    return io;
fail:
    teardown(io);
    return NULL;
}

void hy_io_close(hy_io *io) {
    if (io) teardown(io);
}

/* ---- reads ----------------------------------------------------------------- */

static hy_io_ticket *read_async(hy_io *io, void *dst, uint64_t off, uint64_t len, bool idle, char *err,
                                size_t errlen) {
    uint64_t end;
    if (!io || (!dst && len)) {
        hy_fail(err, errlen, "hy_io_read_async: no io or no destination");
        return NULL;
    }
    if (!hy_add_u64(off, len, &end)) {
        hy_fail(err, errlen, "read at offset %llu of %llu bytes overflows", (unsigned long long)off,
                (unsigned long long)len);
        return NULL;
    }
    if (end > __atomic_load_n(&io->size, __ATOMIC_RELAXED)) {
        uint64_t sz = 0; /* the file may have grown since open */
        if (!file_size(io->fd, &sz, NULL, 0, io->path)) __atomic_store_n(&io->size, sz, __ATOMIC_RELAXED);
        if (end > sz) {
            hy_fail(err, errlen, "read of [%llu, %llu) is past the end of %s (%llu bytes)", (unsigned long long)off,
                    (unsigned long long)end, io->path, (unsigned long long)sz);
            return NULL;
        }
    }
    const uint64_t a = io->align;
    const bool at_eof = end == __atomic_load_n(&io->size, __ATOMIC_RELAXED);
    if (a > 1 && ((uintptr_t)dst % a || off % a || (len % a && !at_eof))) {
        hy_fail(err, errlen,
                "misaligned direct read of %s: buffer %p, offset %llu, length %llu must be multiples of %llu "
                "(length may be unaligned only when the read ends at EOF)",
                io->path, dst, (unsigned long long)off, (unsigned long long)len, (unsigned long long)a);
        return NULL;
    }
    const uint64_t tail = a > 1 ? len % a : 0;
    const uint64_t body = len - tail;
    const uint64_t chunk = io->p.chunk;
    const uint64_t nbody = (body + chunk - 1) / chunk;
    const uint64_t n = nbody + (tail ? 1 : 0);
    if (n > (SIZE_MAX - sizeof(hy_io_ticket)) / sizeof(hy_chunk)) {
        hy_fail(err, errlen, "read of %llu bytes is too large", (unsigned long long)len);
        return NULL;
    }
    hy_io_ticket *t = calloc(1, sizeof *t + (size_t)n * sizeof(hy_chunk));
    if (!t) {
        hy_fail(err, errlen, "out of memory queueing a read of %llu bytes", (unsigned long long)len);
        return NULL;
    }
    t->nchunks = (size_t)n;
    t->remaining = (int)n;
    if (n > INT32_MAX) {
        free(t);
        hy_fail(err, errlen, "read of %llu bytes is too large", (unsigned long long)len);
        return NULL;
    }
    uint8_t *d = dst;
    for (uint64_t i = 0; i < nbody; i++) {
        hy_chunk *c = &t->chunks[i];
        uint64_t o = i * chunk;
        c->t = t;
        c->dst = d + o;
        c->off = off + o;
        c->len = c->want = (uint32_t)(body - o < chunk ? body - o : chunk);
        c->next = &t->chunks[i + 1];
    }
    if (tail) {
        if (posix_memalign((void **)&t->bounce, a, a)) {
            free(t);
            hy_fail(err, errlen, "out of memory");
            return NULL;
        }
        t->bounce_dst = d + body;
        t->bounce_n = (uint32_t)tail;
        hy_chunk *c = &t->chunks[nbody];
        c->t = t;
        c->dst = t->bounce;
        c->off = off + body;
        c->len = (uint32_t)a;
        c->want = (uint32_t)tail;
    }
    if (n == 0) return t;
    t->chunks[n - 1].next = NULL;

    pthread_mutex_lock(&io->mtx);
    if (io->stopping) {
        pthread_mutex_unlock(&io->mtx);
        free(t->bounce);
        free(t);
        hy_fail(err, errlen, "hy_io_read_async: %s is being closed", io->path);
        return NULL;
    }
    hy_chunk **qh = idle ? &io->lhead : &io->qhead, **qt = idle ? &io->ltail : &io->qtail;
    if (*qt) (*qt)->next = &t->chunks[0];
    else *qh = &t->chunks[0];
    *qt = &t->chunks[n - 1];
    t->idle = idle;
    wake_backend(io, n > 1);
    pthread_mutex_unlock(&io->mtx);
    wake_uring(io);
    return t;
}

hy_io_ticket *hy_io_read_async(hy_io *io, void *dst, uint64_t off, uint64_t len, char *err, size_t errlen) {
    return read_async(io, dst, off, len, false, err, errlen);
}

hy_io_ticket *hy_io_read_async_idle(hy_io *io, void *dst, uint64_t off, uint64_t len, char *err, size_t errlen) {
    return read_async(io, dst, off, len, true, err, errlen);
}

void hy_io_promote(hy_io *io, hy_io_ticket *t) {
    if (!t) return;
    pthread_mutex_lock(&io->mtx);
    if (!t->idle) {
        pthread_mutex_unlock(&io->mtx);
        return;
    }
    t->idle = false;
    /* its chunks still in the idle queue move, in order, to the end of the queue */
    hy_chunk *moved = NULL, **mt = &moved, **pp = &io->lhead, *last = NULL;
    while (*pp) {
        hy_chunk *c = *pp;
        if (c->t == t) {
            *pp = c->next;
            c->next = NULL;
            *mt = c;
            mt = &c->next;
        } else {
            last = c;
            pp = &c->next;
        }
    }
    io->ltail = last;
    bool any = moved != NULL;
    if (any) {
        if (io->qtail) io->qtail->next = moved;
        else io->qhead = moved;
        hy_chunk *c = moved;
        while (c->next) c = c->next;
        io->qtail = c;
        wake_backend(io, true);
    }
    pthread_mutex_unlock(&io->mtx);
    if (any) wake_uring(io);
}

int hy_io_wait(hy_io *io, hy_io_ticket *t, char *err, size_t errlen) {
    if (!t) return hy_fail(err, errlen, "hy_io_wait: no ticket");
    hy_io_promote(io, t); /* waited for: needed now */
    pthread_mutex_lock(&io->mtx);
    while (t->remaining > 0) pthread_cond_wait(&io->done_cv, &io->mtx);
    int rc = t->status;
    pthread_mutex_unlock(&io->mtx);
    if (rc) hy_fail(err, errlen, "%s", t->msg);
    free(t->bounce);
    free(t);
    return rc;
}

bool hy_io_done(hy_io *io, const hy_io_ticket *t) {
    pthread_mutex_lock(&io->mtx);
    bool done = t->remaining == 0;
    pthread_mutex_unlock(&io->mtx);
    return done;
}

void hy_io_get_stats(const hy_io *io, hy_io_stats *s) {
    hy_io *m = (hy_io *)io; /* the lock is not part of the observable state */
    pthread_mutex_lock(&m->mtx);
    s->bytes = __atomic_load_n(&m->st_bytes, __ATOMIC_RELAXED);
    s->requests = __atomic_load_n(&m->st_requests, __ATOMIC_RELAXED);
    s->busy_s = m->busy_acc + (m->inflight > 0 ? hy_now() - m->busy_start : 0);
    pthread_mutex_unlock(&m->mtx);
}

int hy_io_read(hy_io *io, void *dst, uint64_t off, uint64_t len, char *err, size_t errlen) {
    hy_io_ticket *t = hy_io_read_async(io, dst, off, len, err, errlen);
    if (!t) return -1;
    return hy_io_wait(io, t, err, errlen);
}
