/* hy_io tests: both backends read a random file (24 MiB + an odd tail) exactly,
 * in aligned pieces, with the unaligned tail at EOF, from two threads with many
 * tickets in flight; fault injection (HYPURA_IO_FAULT) gives clean errors; the
 * buffered fallback works on tmpfs (/dev/shm).
 *
 * usage: test_io read|fault|buffered WORKDIR */
#include "io/hy_io.h"
#include "util/hy_util.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#define MiB (1024ull * 1024)
static const uint64_t FILE_SIZE = 24 * MiB + 12345;

#include "test_check.h"

static uint64_t rng(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static uint8_t *ref; /* the file's content */

static int make_file(const char *path, uint64_t size) {
    free(ref);
    ref = malloc(size);
    if (!ref) return -1;
    uint64_t s = 0x1234567887654321ull ^ size;
    for (uint64_t i = 0; i < size; i++) ref[i] = (uint8_t)(rng(&s) >> 24);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(ref, 1, size, f);
    if (fclose(f) || w != size) return -1;
    return 0;
}

static void *aligned(size_t n, size_t guard) {
    uint8_t *p = NULL;
    if (posix_memalign((void **)&p, 4096, n + guard)) return NULL;
    memset(p, 0xab, n + guard);
    return p;
}

static bool guard_intact(const uint8_t *p, size_t n, size_t guard) {
    for (size_t i = 0; i < guard; i++)
        if (p[n + i] != 0xab) return false;
    return true;
}

/* ---- read -------------------------------------------------------------------- */

typedef struct {
    hy_io *io;
    uint64_t seed;
    int ok, bad;
} thread_job;

/* many tickets, up to 8 in flight per thread, random aligned pieces and the tail */
static void *reader(void *arg) {
    thread_job *j = arg;
    const uint64_t a = hy_io_alignment(j->io), size = hy_io_file_size(j->io);
    enum { INFLIGHT = 8, N = 96 };
    struct { hy_io_ticket *t; uint8_t *buf; uint64_t off, len; } slot[INFLIGHT] = {0};
    char err[HY_ERRLEN];
    for (int i = 0; i < N + INFLIGHT; i++) {
        int k = i % INFLIGHT;
        if (slot[k].t) {
            if (hy_io_wait(j->io, slot[k].t, err, sizeof err) == 0 &&
                !memcmp(slot[k].buf, ref + slot[k].off, slot[k].len))
                j->ok++;
            else {
                fprintf(stderr, "reader: piece [%llu,+%llu): %s\n", (unsigned long long)slot[k].off,
                        (unsigned long long)slot[k].len, err);
                j->bad++;
            }
            free(slot[k].buf);
            slot[k].t = NULL;
        }
        if (i >= N) continue;
        uint64_t off, len;
        if (i % 10 == 9) { /* the tail at EOF: unaligned length */
            off = (size - (rng(&j->seed) % (3 * MiB))) / a * a;
            len = size - off;
        } else {
            off = rng(&j->seed) % (size - 4 * MiB) / a * a;
            len = (1 + rng(&j->seed) % (3 * MiB)) / a * a + a;
        }
        slot[k].buf = aligned(len, 0);
        slot[k].off = off;
        slot[k].len = len;
        slot[k].t = hy_io_read_async(j->io, slot[k].buf, off, len, err, sizeof err);
        if (!slot[k].t) {
            fprintf(stderr, "reader: queue [%llu,+%llu): %s\n", (unsigned long long)off, (unsigned long long)len,
                    err);
            free(slot[k].buf);
            j->bad++;
        }
    }
    return NULL;
}

static void test_backend(const char *path, int backend) {
    hy_io_params p = hy_io_default_params();
    p.backend = backend;
    p.chunk = 1 * MiB;
    char err[HY_ERRLEN];
    hy_io *io = hy_io_open(path, &p, err, sizeof err);
    CHECK(io != NULL, "open %s backend %d: %s", path, backend, err);
    if (!io) return;
    const char *name = hy_io_backend_name(io);
    printf("backend %s, alignment %zu, direct %d\n", name, hy_io_alignment(io), hy_io_is_direct(io));
    CHECK(strstr(name, backend == HY_IO_URING ? "io_uring" : "pread-pool") != NULL, "backend name %s", name);
    CHECK(hy_io_file_size(io) == FILE_SIZE, "size %llu", (unsigned long long)hy_io_file_size(io));
    const size_t a = hy_io_alignment(io);
    if (hy_io_is_direct(io)) CHECK(a >= 4096 && a % 4096 == 0, "alignment %zu", a);

    /* whole file in one ticket: dst holds exactly FILE_SIZE bytes, the guard after it stays */
    uint8_t *buf = aligned(FILE_SIZE, 8192);
    int rc = hy_io_read(io, buf, 0, FILE_SIZE, err, sizeof err);
    CHECK(rc == 0, "whole read: %s", err);
    CHECK(!memcmp(buf, ref, FILE_SIZE), "whole read: content differs");
    CHECK(guard_intact(buf, FILE_SIZE, 8192), "whole read wrote past the end of dst");

    /* the tail alone: a read shorter than one block, ending at EOF */
    uint64_t toff = FILE_SIZE / a * a;
    memset(buf, 0xab, FILE_SIZE + 8192);
    rc = hy_io_read(io, buf, toff, FILE_SIZE - toff, err, sizeof err);
    CHECK(rc == 0 && !memcmp(buf, ref + toff, FILE_SIZE - toff), "tail read: %s", rc ? err : "content differs");
    CHECK(guard_intact(buf, FILE_SIZE - toff, 4096), "tail read wrote past its length");

    /* aligned pieces, sequentially, and a zero-length read */
    uint64_t s = 42;
    for (int i = 0; i < 40; i++) {
        uint64_t off = rng(&s) % (FILE_SIZE - 2 * MiB) / a * a, len = (rng(&s) % (2 * MiB)) / a * a;
        rc = hy_io_read(io, buf, off, len, err, sizeof err);
        CHECK(rc == 0 && !memcmp(buf, ref + off, len), "piece [%llu,+%llu): %s", (unsigned long long)off,
              (unsigned long long)len, rc ? err : "content differs");
    }

    /* the idle queue: a read on it goes out by itself while nothing else is queued */
    {
        hy_io_ticket *ti = hy_io_read_async_idle(io, buf, 0, 8 * MiB, err, sizeof err);
        CHECK(ti != NULL, "idle read: %s", err);
        if (ti) {
            double t0 = hy_now();
            while (!hy_io_done(io, ti) && hy_now() - t0 < 10) usleep(100);
            CHECK(hy_io_done(io, ti), "idle ticket not done after 10 s with nothing else queued");
            CHECK(hy_io_wait(io, ti, err, sizeof err) == 0 && !memcmp(buf, ref, 8 * MiB), "idle read: %s", err);
        }
        /* idle reads behind and between ordinary ones, one promoted, all waited for in any order */
        uint8_t *b2 = aligned(16 * MiB, 8192);
        memset(buf, 0, 8 * MiB);
        hy_io_ticket *i1 = hy_io_read_async_idle(io, buf, 0, 4 * MiB, err, sizeof err);
        hy_io_ticket *o1 = hy_io_read_async(io, b2, 4 * MiB, 4 * MiB, err, sizeof err);
        hy_io_ticket *i2 = hy_io_read_async_idle(io, buf + 4 * MiB, 4 * MiB, 4 * MiB, err, sizeof err);
        hy_io_ticket *o2 = hy_io_read_async(io, b2 + 4 * MiB, 12 * MiB, 4 * MiB, err, sizeof err);
        CHECK(i1 && o1 && i2 && o2, "mixed queues: %s", err);
        hy_io_promote(io, i2);
        CHECK(hy_io_wait(io, o2, err, sizeof err) == 0 && !memcmp(b2 + 4 * MiB, ref + 12 * MiB, 4 * MiB), "mixed o2: %s", err);
        CHECK(hy_io_wait(io, i2, err, sizeof err) == 0 && !memcmp(buf + 4 * MiB, ref + 4 * MiB, 4 * MiB), "mixed i2: %s", err);
        CHECK(hy_io_wait(io, i1, err, sizeof err) == 0 && !memcmp(buf, ref, 4 * MiB), "mixed i1: %s", err);
        CHECK(hy_io_wait(io, o1, err, sizeof err) == 0 && !memcmp(b2, ref + 4 * MiB, 4 * MiB), "mixed o1: %s", err);
        free(b2);
    }

    /* polling */
    hy_io_ticket *t = hy_io_read_async(io, buf, 0, 8 * MiB, err, sizeof err);
    CHECK(t != NULL, "async: %s", err);
    if (t) {
        double t0 = hy_now();
        while (!hy_io_done(io, t) && hy_now() - t0 < 10) usleep(100);
        CHECK(hy_io_done(io, t), "ticket not done after 10 s");
        CHECK(hy_io_wait(io, t, err, sizeof err) == 0 && !memcmp(buf, ref, 8 * MiB), "polled read: %s", err);
    }

    /* refused requests */
    if (a > 1) {
        CHECK(hy_io_read_async(io, buf, 100, a, err, sizeof err) == NULL, "misaligned offset accepted");
        CHECK(strstr(err, "misaligned") != NULL, "message: %s", err);
        CHECK(hy_io_read_async(io, buf + 1, 0, a, err, sizeof err) == NULL, "misaligned buffer accepted");
        CHECK(hy_io_read_async(io, buf, 0, a + 3, err, sizeof err) == NULL, "unaligned length mid-file accepted");
    }
    CHECK(hy_io_read_async(io, buf, FILE_SIZE / a * a, 2 * a, err, sizeof err) == NULL, "read past EOF accepted");
    CHECK(strstr(err, "past the end") != NULL, "message: %s", err);

    /* two threads, many tickets in flight */
    thread_job jobs[2] = {{io, 7, 0, 0}, {io, 99, 0, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, reader, &jobs[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    CHECK(jobs[0].bad == 0 && jobs[1].bad == 0, "threads: %d + %d bad pieces", jobs[0].bad, jobs[1].bad);
    CHECK(jobs[0].ok == 96 && jobs[1].ok == 96, "threads: %d + %d good pieces", jobs[0].ok, jobs[1].ok);

    hy_io_stats st;
    hy_io_get_stats(io, &st);
    printf("stats: %llu bytes, %llu requests, busy %.3f s\n", (unsigned long long)st.bytes,
           (unsigned long long)st.requests, st.busy_s);
    CHECK(st.bytes > 2 * FILE_SIZE && st.requests > 100 && st.busy_s > 0, "stats");
    free(buf);
    hy_io_close(io);
}

static int backends(int *out) {
    int n = 0;
#ifdef HY_HAVE_URING
    out[n++] = HY_IO_URING;
#endif
    out[n++] = HY_IO_PREAD;
    return n;
}

static int cmd_read(const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/test_io_read.bin", dir);
    if (make_file(path, FILE_SIZE)) {
        fprintf(stderr, "cannot write %s\n", path);
        return 1;
    }
    int b[2], n = backends(b);
    for (int i = 0; i < n; i++) test_backend(path, b[i]);
    unlink(path);
    return failures ? 1 : 0;
}

/* ---- faults ------------------------------------------------------------------ */

static hy_io *open_with_fault(const char *path, int backend, const char *fault, char *err, size_t errlen) {
    setenv("HYPURA_IO_FAULT", fault, 1);
    hy_io_params p = hy_io_default_params();
    p.backend = backend;
    hy_io *io = hy_io_open(path, &p, err, errlen);
    unsetenv("HYPURA_IO_FAULT");
    return io;
}

static void test_faults(const char *path, int backend) {
    char err[HY_ERRLEN];
    const uint64_t n = 8 * MiB;
    uint8_t *buf = aligned(FILE_SIZE, 0);

    hy_io *io = open_with_fault(path, backend, "eio@5M", err, sizeof err);
    CHECK(io, "open: %s", err);
    if (io) {
        err[0] = 0;
        int rc = hy_io_read(io, buf, 0, n, err, sizeof err);
        printf("eio: rc %d: %s\n", rc, err);
        CHECK(rc < 0 && strstr(err, "EIO") && strstr(err, "at offset 5242880"), "eio: rc %d, '%s'", rc, err);
        rc = hy_io_read(io, buf, 6 * MiB, 2 * MiB, err, sizeof err);
        CHECK(rc == 0 && !memcmp(buf, ref + 6 * MiB, 2 * MiB), "eio: a range without the fault: %s", err);
        hy_io_close(io);
    }

    io = open_with_fault(path, backend, "short@0x300064", err, sizeof err); /* 3 MiB + 100 */
    CHECK(io, "open: %s", err);
    if (io) {
        int rc = hy_io_read(io, buf, 0, n, err, sizeof err);
        printf("short: rc %d: %s\n", rc, err);
        CHECK(rc < 0 && strstr(err, "short read at offset 3145728"), "short: rc %d, '%s'", rc, err);
        rc = hy_io_read(io, buf, 0, 2 * MiB, err, sizeof err);
        CHECK(rc == 0 && !memcmp(buf, ref, 2 * MiB), "short: before the fault: %s", err);
        hy_io_close(io);
    }

    io = open_with_fault(path, backend, "eagain@1M,eagain@0x500000", err, sizeof err);
    CHECK(io, "open: %s", err);
    if (io) {
        int rc = hy_io_read(io, buf, 0, n, err, sizeof err);
        hy_io_stats st;
        hy_io_get_stats(io, &st);
        printf("eagain: rc %d, %llu requests\n", rc, (unsigned long long)st.requests);
        CHECK(rc == 0 && !memcmp(buf, ref, n), "eagain: %s", rc ? err : "content differs");
        CHECK(st.requests == 10, "eagain: expected 8 requests + 2 retries, got %llu", (unsigned long long)st.requests);
        hy_io_close(io);
    }

    io = open_with_fault(path, backend, "delay_ms=60", err, sizeof err);
    CHECK(io, "open: %s", err);
    if (io) {
        double t0 = hy_now();
        int rc = hy_io_read(io, buf, 0, n, err, sizeof err);
        double dt = hy_now() - t0;
        printf("delay: rc %d, %.3f s for 8 requests in parallel\n", rc, dt);
        CHECK(rc == 0 && !memcmp(buf, ref, n), "delay: %s", err);
        CHECK(dt >= 0.055 && dt < 0.4, "delay: %.3f s (expected ~0.06: requests overlap)", dt);
        hy_io_close(io);
    }

    io = open_with_fault(path, backend, "eio@", err, sizeof err);
    CHECK(!io && strstr(err, "HYPURA_IO_FAULT"), "bad fault spec accepted: %s", err);
    if (io) hy_io_close(io);

    /* fault on the EOF tail */
    io = open_with_fault(path, backend, "eio@25165825", err, sizeof err); /* in the last block */
    if (io) {
        uint64_t off = 24 * MiB;
        int rc = hy_io_read(io, buf, off, FILE_SIZE - off, err, sizeof err);
        CHECK(rc < 0 && strstr(err, "EIO"), "tail eio: rc %d '%s'", rc, err);
        hy_io_close(io);
    }
    free(buf);
}

static int cmd_fault(const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/test_io_fault.bin", dir);
    if (make_file(path, FILE_SIZE)) return 1;
    int b[2], n = backends(b);
    for (int i = 0; i < n; i++) {
        printf("-- backend %d\n", b[i]);
        test_faults(path, b[i]);
    }
    unlink(path);
    return failures ? 1 : 0;
}

/* ---- buffered fallback ------------------------------------------------------ */

/* reads through the page cache: alignment 1, unaligned pieces anywhere */
static void check_buffered(const char *path, uint64_t size, int backend) {
    char err[HY_ERRLEN];
    hy_io_params p = hy_io_default_params();
    p.backend = backend;
    hy_io *io = hy_io_open(path, &p, err, sizeof err);
    CHECK(io, "open %s: %s", path, err);
    if (!io) return;
    printf("%s: backend %s, alignment %zu\n", path, hy_io_backend_name(io), hy_io_alignment(io));
    CHECK(!hy_io_is_direct(io), "reported O_DIRECT");
    CHECK(hy_io_alignment(io) == 1, "alignment %zu", hy_io_alignment(io));
    CHECK(strstr(hy_io_backend_name(io), "+buffered") != NULL, "name %s", hy_io_backend_name(io));
    uint8_t *buf = malloc(size + 1);
    uint64_t s = 5;
    for (int k = 0; k < 50; k++) {
        uint64_t off = rng(&s) % size, len = rng(&s) % (size - off + 1);
        int rc = hy_io_read(io, buf + 1, off, len, err, sizeof err); /* unaligned dst too */
        CHECK(rc == 0 && !memcmp(buf + 1, ref + off, len), "buffered [%llu,+%llu): %s", (unsigned long long)off,
              (unsigned long long)len, rc ? err : "content differs");
    }
    CHECK(hy_io_read(io, buf, 0, size, err, sizeof err) == 0 && !memcmp(buf, ref, size), "whole: %s", err);
    free(buf);
    hy_io_close(io);
}

static int cmd_buffered(const char *dir) {
    char path[1100];
    snprintf(path, sizeof path, "/dev/shm/hypura-test-io-%d.bin", (int)getpid());
    const uint64_t size = 3 * MiB + 777;
    if (make_file(path, size)) {
        fprintf(stderr, "SKIP: cannot write %s\n", path);
        unlink(path);
        return 77;
    }
    int b[2], n = backends(b);
    char err[HY_ERRLEN];
    /* tmpfs: O_DIRECT since Linux 6.6, not before; either way the bytes must come */
    hy_io *io = hy_io_open(path, NULL, err, sizeof err);
    CHECK(io, "open %s: %s", path, err);
    if (io) {
        printf("/dev/shm (tmpfs): O_DIRECT %s, backend %s\n", hy_io_is_direct(io) ? "works" : "refused",
               hy_io_backend_name(io));
        bool direct = hy_io_is_direct(io);
        hy_io_close(io);
        if (!direct)
            for (int i = 0; i < n; i++) check_buffered(path, size, b[i]);
    }
    /* the fallback, forced where the filesystem would allow O_DIRECT */
    setenv("HYPURA_IO_FAULT", "nodirect", 1);
    for (int i = 0; i < n; i++) check_buffered(path, size, b[i]);
    hy_io_params p = hy_io_default_params();
    p.allow_buffered = false;
    io = hy_io_open(path, &p, err, sizeof err);
    CHECK(!io && strstr(err, "O_DIRECT"), "allow_buffered=false still opened: %s", err);
    if (io) hy_io_close(io);
    unsetenv("HYPURA_IO_FAULT");
    unlink(path);

    /* a filesystem that really refuses O_DIRECT: ramfs, in a private mount namespace */
    char mnt[1024];
    snprintf(mnt, sizeof mnt, "%s/ramfs", dir);
    hy_mkdirs(mnt);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
            mount("ramfs", mnt, "ramfs", 0, NULL))
            _exit(77);
        snprintf(path, sizeof path, "%s/file.bin", mnt);
        if (make_file(path, size)) _exit(1);
        for (int i = 0; i < n; i++) check_buffered(path, size, b[i]);
        fflush(stdout);
        _exit(failures ? 1 : 0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77) printf("ramfs: skipped (cannot mount one here)\n");
    else CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "ramfs fallback failed (status %d)", st);
    rmdir(mnt);
    return failures ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_io read|fault|buffered [WORKDIR]\n");
        return 2;
    }
    const char *dir = argc > 2 ? argv[2] : ".";
    hy_mkdirs(dir);
    int rc = !strcmp(argv[1], "read") ? cmd_read(dir)
             : !strcmp(argv[1], "fault") ? cmd_fault(dir)
             : !strcmp(argv[1], "buffered") ? cmd_buffered(dir)
             : 2;
    free(ref);
    if (rc == 0) printf("PASS\n");
    return rc;
}
