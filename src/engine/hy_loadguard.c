/* Keep libllama's loader from reading streamed bytes at load.
 *
 * The pinned loader maps the model with MAP_POPULATE and advises
 * POSIX_MADV_WILLNEED over the whole file (llama-mmap.cpp), which reads every
 * byte of the file into the page cache while loading — for a model streamed
 * because it does not fit, that is the whole model read once for nothing, and a
 * flood of page cache inside a memory cap. hypura does not patch llama.cpp;
 * instead this file interposes mmap() and posix_madvise(): while a guard is
 * armed for a file (during hy_engine_open of a streamed model only), a mapping
 * of that file loses MAP_POPULATE and WILLNEED advice on it is dropped. Every
 * other call, and every call outside the guard, goes straight to the next
 * definition (libc's, or a sanitizer's interceptor). Resident tensors are then
 * faulted in by their own copy (set_tensor), streamed ones never. */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include "engine/hy_loadguard.h"

static _Atomic int armed;
static dev_t guard_dev;
static ino_t guard_ino;
static _Atomic uintptr_t map_lo, map_hi; /* the guarded file's mapping */
static _Atomic unsigned long dropped;

typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);
typedef int (*madvise_fn)(void *, size_t, int);

void hy_loadguard_arm(const char *path) {
    struct stat st;
    if (!path || stat(path, &st) != 0) return;
    guard_dev = st.st_dev;
    guard_ino = st.st_ino;
    map_lo = map_hi = 0;
    dropped = 0;
    atomic_store(&armed, 1);
}

unsigned long hy_loadguard_disarm(void) {
    atomic_store(&armed, 0);
    map_lo = map_hi = 0;
    return dropped;
}

static bool is_guarded_fd(int fd) {
    struct stat st;
    return fd >= 0 && fstat(fd, &st) == 0 && st.st_dev == guard_dev && st.st_ino == guard_ino;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    static mmap_fn next;
    if (!next) next = (mmap_fn)dlsym(RTLD_NEXT, "mmap");
    if (!next) return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off); /* no next definition: the kernel's */
    bool guard = atomic_load(&armed) && (flags & MAP_POPULATE) && is_guarded_fd(fd);
    if (guard) {
        flags &= ~MAP_POPULATE;
        dropped++;
    }
    void *r = next(addr, len, prot, flags, fd, off);
    if (atomic_load(&armed) && r != MAP_FAILED && is_guarded_fd(fd)) {
        map_lo = (uintptr_t)r;
        map_hi = (uintptr_t)r + len;
    }
    return r;
}

int posix_madvise(void *addr, size_t len, int advice) {
    static madvise_fn next;
    if (!next) next = (madvise_fn)dlsym(RTLD_NEXT, "posix_madvise");
    if (!next) return madvise(addr, len, advice) ? errno : 0;
    uintptr_t a = (uintptr_t)addr;
    if (atomic_load(&armed) && advice == POSIX_MADV_WILLNEED && map_hi > map_lo && a >= map_lo && a + len <= map_hi) {
        dropped++;
        return 0;
    }
    return next(addr, len, advice);
}
