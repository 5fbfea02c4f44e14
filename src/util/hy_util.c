#include "util/hy_util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

int hy_fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

const char *hy_fmt_bytes(uint64_t n, char *buf, size_t len) {
    const double k = 1024.0;
    if (n >= (uint64_t)(k * k * k)) snprintf(buf, len, "%.1f GiB", n / (k * k * k));
    else if (n >= (uint64_t)(k * k)) snprintf(buf, len, "%.1f MiB", n / (k * k));
    else if (n >= (uint64_t)k) snprintf(buf, len, "%.1f KiB", n / k);
    else snprintf(buf, len, "%llu B", (unsigned long long)n);
    return buf;
}

bool hy_parse_bytes(const char *s, uint64_t *out) {
    if (!s || !*s) return false;
    errno = 0;
    char *end = NULL;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0) return false;
    while (*end == ' ') end++;
    double mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = 1024.0; end++; break;
    case 'm': case 'M': mul = 1024.0 * 1024; end++; break;
    case 'g': case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
    case 't': case 'T': mul = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (mul > 1 && (*end == 'i' || *end == 'I')) end++;
    if (*end == 'b' || *end == 'B') end++;
    if (*end) return false;
    double r = v * mul;
    if (r >= 1.8e19) return false;
    *out = (uint64_t)r;
    return true;
}

double hy_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int hy_mkdirs(const char *path) {
    char tmp[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof tmp) return -1;
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
            *p = '/';
        }
    }
    if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
    return 0;
}

static int xdg_dir(const char *env, const char *fallback, char *buf, size_t len) {
    const char *base = getenv(env);
    int n;
    if (base && base[0] == '/') n = snprintf(buf, len, "%s/hypura", base);
    else {
        const char *home = getenv("HOME");
        if (!home || !*home) home = "/tmp";
        n = snprintf(buf, len, "%s/%s/hypura", home, fallback);
    }
    if (n < 0 || (size_t)n >= len) return -1;
    return hy_mkdirs(buf);
}

int hy_cache_dir(char *buf, size_t len) { return xdg_dir("XDG_CACHE_HOME", ".cache", buf, len); }
int hy_data_dir(char *buf, size_t len) { return xdg_dir("XDG_DATA_HOME", ".local/share", buf, len); }

/* the number after `key` on its line of a /proc file */
static uint64_t proc_field(const char *path, const char *key) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[256];
    size_t n = strlen(key);
    unsigned long long v = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, n) && sscanf(line + n, "%llu", &v) == 1) break;
    fclose(f);
    return (uint64_t)v;
}

uint64_t hy_peak_rss(void) { return proc_field("/proc/self/status", "VmHWM:") * 1024; }
uint64_t hy_io_read_bytes(void) { return proc_field("/proc/self/io", "read_bytes:"); }
