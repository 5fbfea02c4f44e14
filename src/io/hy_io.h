/* hy_io: the direct-I/O reader that feeds streamed weights from storage.
 *
 * One hy_io reads one file, read-only, with O_DIRECT when the filesystem allows
 * it, so streamed bytes bypass the page cache (they would otherwise be counted
 * against the memory budget and evict resident data). Reads are queued as
 * tickets; each ticket is split into `chunk`-sized requests and the backend keeps
 * up to `queue_depth` of them in flight:
 *   - io_uring (liburing): one service thread owns the ring, fed by a locked queue
 *     and woken by an eventfd polled through the ring itself;
 *   - pread pool: `queue_depth` worker threads, for kernels or sandboxes without
 *     io_uring.
 * AUTO picks io_uring when io_uring_queue_init works, else the pool. The
 * environment variable HYPURA_IO_BACKEND=uring|pread overrides AUTO.
 *
 * Invariants:
 *   - dst, off and len of a read are multiples of hy_io_alignment(); the one
 *     exception is a read that ends exactly at EOF, whose len may be anything:
 *     its last partial block goes through an internal bounce buffer, so dst only
 *     needs len bytes.
 *   - A read may not extend past EOF; every requested byte must arrive. A short
 *     read (EOF reached early, file truncated since open) is an error, as is any
 *     errno other than EAGAIN/EINTR (those, and partial transfers, are resubmitted
 *     for the rest).
 *   - hy_io_read_async is thread-safe. A ticket is waited for exactly once
 *     (hy_io_wait frees it); every ticket must be waited for before hy_io_close.
 *   - If O_DIRECT cannot be used (open fails with EINVAL: ramfs, tmpfs before
 *     Linux 6.6, some FUSE filesystems; or the first aligned read fails with
 *     EINVAL) and allow_buffered is set, the file is read through the page cache
 *     instead, with a warning on stderr; alignment is then 1 and the backend name
 *     carries "+buffered".
 *
 *   - A short read where the file is now smaller than when it was opened says
 *     so: "PATH was truncated while in use (N bytes now, M when opened): ...".
 *     A file replaced by rename keeps being read through the open descriptor,
 *     i.e. the file that was loaded (consistent with the resident weights).
 *   - The buffered fallback warns once per path, naming the filesystem
 *     ("PATH is on ramfs, which refuses O_DIRECT: ...").
 *
 * Fault injection (tests only; inert unless set). HYPURA_IO_FAULT is read once
 * in hy_io_open: a comma-separated list of
 *   eio@OFFSET     every read request covering byte OFFSET fails with EIO
 *   short@OFFSET   a read covering OFFSET stops at OFFSET (rounded down to the
 *                  alignment) and the file appears to end there: "short read"
 *   eagain@OFFSET  the first attempt of each request covering OFFSET returns
 *                  EAGAIN (exercises the resubmit path; the data still arrives)
 *   delay_ms=N     each request completes no earlier than N ms after it was issued
 *   nodirect       behave as if the filesystem refused O_DIRECT (tests the buffered
 *                  fallback where tmpfs supports O_DIRECT, as it does since Linux 6.6)
 * The three OFFSET faults take two optional suffixes:
 *   +LEN           the fault covers the range [OFFSET, OFFSET+LEN) instead of one
 *                  byte: eio/eagain hit any request overlapping it; short@ cuts a
 *                  request at OFFSET and gives EOF to one starting inside the range
 *                  (without +LEN, to every request past OFFSET: the file ends there;
 *                  note that loading reads the resident tensors past it too)
 *   #COUNT         trigger only the first COUNT times, then read normally: a
 *                  transient fault (a server's failing request, then a good one).
 *                  short@ counts the requests that found the (simulated) EOF.
 * OFFSET, LEN and COUNT are decimal, 0x-hex, or a size like 4M. Examples:
 *   HYPURA_IO_FAULT="eio@0x100000,delay_ms=5"
 *   HYPURA_IO_FAULT="eio@9649824+2M#1"   (the first read touching those 2 MiB fails) */
#ifndef HY_IO_H
#define HY_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { HY_IO_AUTO = 0, HY_IO_URING = 1, HY_IO_PREAD = 2 };

typedef struct hy_io hy_io;
typedef struct hy_io_ticket hy_io_ticket;

typedef struct {
    int queue_depth;     /* requests in flight; default 16 (1..1024) */
    size_t chunk;        /* bytes per request; default 1 MiB; rounded up to the alignment */
    int backend;         /* HY_IO_AUTO, HY_IO_URING (error if unavailable), HY_IO_PREAD */
    bool allow_buffered; /* fall back to buffered reads when O_DIRECT is refused; default true */
} hy_io_params;

hy_io_params hy_io_default_params(void);

/* Opens path read-only (O_DIRECT when possible) and starts the backend.
 * NULL with err on failure. */
hy_io *hy_io_open(const char *path, const hy_io_params *p, char *err, size_t errlen);

/* required alignment of dst, offset and length: 4096 (or the filesystem's larger
 * direct-I/O alignment) with O_DIRECT, 1 when buffered */
size_t hy_io_alignment(const hy_io *io);
bool hy_io_is_direct(const hy_io *io);
/* HYPURA_IO_FAULT is in effect for this reader: callers that could take bytes
 * from elsewhere (the page cache) read through it instead, where faults apply */
bool hy_io_faults_active(const hy_io *io);
/* "io_uring", "pread-pool", with "+buffered" appended when not direct */
const char *hy_io_backend_name(const hy_io *io);
uint64_t hy_io_file_size(const hy_io *io);

/* Queues a read of [off, off+len) into dst. Returns a ticket, or NULL with err
 * (misaligned, past EOF, closing, out of memory). len == 0 gives a ticket that is
 * already done. */
hy_io_ticket *hy_io_read_async(hy_io *io, void *dst, uint64_t off, uint64_t len, char *err, size_t errlen);

/* The same read on the idle queue: its requests go out only while nothing else
 * is queued, at most a quarter of queue_depth of them at a time (a read queued
 * later waits behind no more than those), for speculative reads that should use
 * only time the device would idle. hy_io_promote(t) moves what is still queued
 * of it to the end of the ordinary queue; hy_io_wait promotes first. */
hy_io_ticket *hy_io_read_async_idle(hy_io *io, void *dst, uint64_t off, uint64_t len, char *err, size_t errlen);
void hy_io_promote(hy_io *io, hy_io_ticket *t);

/* Waits for every request of the ticket and frees it. 0 when every byte arrived;
 * <0 with err ("short read at offset X ...", "EIO reading PATH at offset X ..."):
 * of several failed requests, the one at the lowest offset. */
int hy_io_wait(hy_io *io, hy_io_ticket *t, char *err, size_t errlen);

/* non-blocking: true once every request of the ticket has finished (ok or not) */
bool hy_io_done(hy_io *io, const hy_io_ticket *t);

typedef struct {
    uint64_t bytes;    /* bytes delivered to callers */
    uint64_t requests; /* read requests issued (resubmissions included) */
    double busy_s;     /* wall time with at least one request in flight */
} hy_io_stats;

void hy_io_get_stats(const hy_io *io, hy_io_stats *s);

/* Waits for the reads in flight and queued, stops the backend, closes the file. */
void hy_io_close(hy_io *io);

/* synchronous read: hy_io_read_async + hy_io_wait */
int hy_io_read(hy_io *io, void *dst, uint64_t off, uint64_t len, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
