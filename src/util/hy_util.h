/* hy_util: small shared helpers used by every module.
 *
 * Errors: functions return 0 on success or a negative code and fill a
 * caller-provided `char *err, size_t errlen` message (one line, no newline).
 * Sizes for humans are printed in GiB/MiB with one decimal. Paths follow the
 * XDG base-directory spec. Nothing here exits or aborts. */
#ifndef HY_UTIL_H
#define HY_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define HY_ERRLEN 512

/* printf into err (if non-NULL) and return -1 */
int hy_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* "1.5 GiB", "12.0 MiB", "512 B" into buf; returns buf */
const char *hy_fmt_bytes(uint64_t n, char *buf, size_t len);

/* parse "1.5G", "800M", "4096", "2GiB" into bytes; false on junk or overflow */
bool hy_parse_bytes(const char *s, uint64_t *out);

/* monotonic seconds */
double hy_now(void);

/* $XDG_CACHE_HOME/hypura or ~/.cache/hypura (created); same for data */
int hy_cache_dir(char *buf, size_t len);
int hy_data_dir(char *buf, size_t len);

/* This process's figures from /proc/self, 0 where unknown: its peak resident
 * memory (VmHWM), and the bytes it has made the kernel fetch from storage
 * (read_bytes of /proc/self/io: direct I/O and page-cache misses alike). */
uint64_t hy_peak_rss(void);
uint64_t hy_io_read_bytes(void);

/* mkdir -p */
int hy_mkdirs(const char *path);

/* checked arithmetic: false on overflow */
static inline bool hy_add_u64(uint64_t a, uint64_t b, uint64_t *r) { return !__builtin_add_overflow(a, b, r); }
static inline bool hy_mul_u64(uint64_t a, uint64_t b, uint64_t *r) { return !__builtin_mul_overflow(a, b, r); }

static inline uint64_t hy_round_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

#endif
