#include "cache/hy_policy.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cache/hy_coact.h"
#include "util/hy_util.h"

int hy_policy_path(uint64_t header_hash, char *buf, size_t len) {
    char c[4096]; /* the co-activation statistics' path, ".json" becoming ".policy.json" */
    if (hy_coact_default_path(header_hash, c, sizeof c)) return -1;
    size_t n = strlen(c);
    if (n < 5 || strcmp(c + n - 5, ".json")) return -1;
    int w = snprintf(buf, len, "%.*s.policy.json", (int)(n - 5), c);
    return w < 0 || (size_t)w >= len ? -1 : 0;
}

static int get_u64(json_t *o, const char *key, uint64_t *v) {
    json_t *x = json_object_get(o, key);
    if (!json_is_integer(x) || json_integer_value(x) < 0) return -1;
    *v = (uint64_t)json_integer_value(x);
    return 0;
}

int hy_policy_load(const char *path, uint64_t header_hash, hy_policy_record *r) {
    memset(r, 0, sizeof *r);
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    if (!o) return -1;
    char want[32];
    snprintf(want, sizeof want, "%016" PRIx64, header_hash);
    json_t *h = json_object_get(o, "header_hash");
    hy_policy_record t = {0};
    bool ok = json_is_string(h) && !strcmp(json_string_value(h), want) && !get_u64(o, "accesses", &t.accesses) &&
              !get_u64(o, "lfu_hits", &t.hits[HY_XC_LFU]) && !get_u64(o, "lru_hits", &t.hits[HY_XC_LRU]) &&
              t.hits[HY_XC_LFU] <= t.accesses && t.hits[HY_XC_LRU] <= t.accesses;
    json_decref(o);
    if (!ok) return -1;
    *r = t;
    return 0;
}

int hy_policy_save(const char *path, uint64_t header_hash, const hy_policy_record *r, char *err, size_t errlen) {
    char hash[32], tmp[4200];
    snprintf(hash, sizeof hash, "%016" PRIx64, header_hash);
    int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof tmp) return hy_fail(err, errlen, "%s: path too long", path);
    json_t *o = json_pack("{s:s, s:i, s:s, s:I, s:I, s:I}", "format", "hypura-expert-policy", "version", 1, "header_hash",
                          hash, "accesses", (json_int_t)(r->accesses > INT64_MAX ? INT64_MAX : r->accesses), "lfu_hits",
                          (json_int_t)(r->hits[HY_XC_LFU] > INT64_MAX ? INT64_MAX : r->hits[HY_XC_LFU]), "lru_hits",
                          (json_int_t)(r->hits[HY_XC_LRU] > INT64_MAX ? INT64_MAX : r->hits[HY_XC_LRU]));
    if (!o) return hy_fail(err, errlen, "out of memory");
    unlink(tmp);
    int rc = json_dump_file(o, tmp, JSON_INDENT(1));
    json_decref(o);
    if (rc || rename(tmp, path)) {
        unlink(tmp);
        return hy_fail(err, errlen, "cannot write %s", path);
    }
    return 0;
}

hy_xc_policy hy_policy_choose(const hy_policy_record *r, char *why, size_t len) {
    double a = r->accesses ? 100.0 * (double)r->hits[HY_XC_LFU] / (double)r->accesses : 0;
    double b = r->accesses ? 100.0 * (double)r->hits[HY_XC_LRU] / (double)r->accesses : 0;
    if (r->accesses < HY_POLICY_MIN_ACCESSES) {
        if (r->accesses)
            snprintf(why, len, "default: earlier runs measured %" PRIu64 " accesses, too few to choose (LFU %.1f%%, "
                     "LRU %.1f%% hits)", r->accesses, a, b);
        else snprintf(why, len, "default: no earlier measurement of the two policies on this model");
        return HY_XC_LFU;
    }
    hy_xc_policy p = r->hits[HY_XC_LRU] > r->hits[HY_XC_LFU] ? HY_XC_LRU : HY_XC_LFU;
    snprintf(why, len, "measured in earlier runs: LFU %.1f%%, LRU %.1f%% hits over %" PRIu64 " accesses", a, b,
             r->accesses);
    return p;
}
