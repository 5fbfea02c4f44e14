/* hy_calib: measured against predicted compute time per token, kept per model
 * and per machine (hy_calib.h). */
#include "profile/hy_calib.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "util/hy_util.h"

#define CALIB_VERSION 2 /* 2: ratios against per-type matvec rates (1: against memcpy), not comparable */
#define RATIO_MIN (1.0 / 20)
#define RATIO_MAX 20.0

int hy_calib_default_path(char *buf, size_t len) {
    char dir[4096];
    if (hy_cache_dir(dir, sizeof dir)) return -1;
    int n = snprintf(buf, len, "%s/calibration.json", dir);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

static void model_key(char *k, size_t n, uint64_t hash, int threads, uint64_t gpu_budget, const char *mode) {
    snprintf(k, n, "%016llx/t%d/gpu%lluG/%.32s", (unsigned long long)hash, threads,
             (unsigned long long)(gpu_budget >> 30), mode ? mode : "");
}

/* the machine's figure, for models without their own: per thread count and GPU budget as well */
static void machine_key(char *k, size_t n, int threads, uint64_t gpu_budget, const char *mode) {
    snprintf(k, n, "t%d/gpu%lluG/%.32s", threads, (unsigned long long)(gpu_budget >> 30), mode ? mode : "");
}

/* one entry {"scale": s, "runs": n}: false when absent or unusable */
static bool read_entry(json_t *e, hy_calib *c) {
    json_t *s = json_object_get(e, "scale"), *r = json_object_get(e, "runs");
    if (!json_is_number(s) || !json_is_integer(r)) return false;
    double v = json_number_value(s);
    json_int_t n = json_integer_value(r);
    if (!(v >= RATIO_MIN && v <= RATIO_MAX) || n < 1 || n > 1000000000) return false;
    c->scale = v;
    c->runs = (int)n;
    return true;
}

static json_t *load(const char *path) {
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    if (!o) return NULL;
    json_t *v = json_object_get(o, "version");
    if (!json_is_object(o) || !json_is_integer(v) || json_integer_value(v) != CALIB_VERSION) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* path, or the default file's into def; NULL when there is none */
static const char *resolve(const char *path, char *def, size_t n) {
    if (path) return path;
    return hy_calib_default_path(def, n) ? NULL : def;
}

void hy_calib_get_modes(const char *path, uint64_t model_hash, int threads, uint64_t gpu_budget,
                        const char *const modes[], int n, hy_calib out[]) {
    for (int i = 0; i < n; i++) out[i] = (hy_calib){.scale = 1, .runs = 0, .per_model = false};
    char def[4096];
    if (!(path = resolve(path, def, sizeof def))) return;
    json_t *o = load(path); /* once for all the modes */
    if (!o) return;
    for (int i = 0; i < n; i++) {
        char k[64], mk[64];
        model_key(k, sizeof k, model_hash, threads, gpu_budget, modes[i]);
        machine_key(mk, sizeof mk, threads, gpu_budget, modes[i]);
        if (read_entry(json_object_get(json_object_get(o, "models"), k), &out[i])) out[i].per_model = true;
        else if (!read_entry(json_object_get(json_object_get(o, "machine"), mk), &out[i])) out[i] = (hy_calib){.scale = 1};
    }
    json_decref(o);
}

hy_calib hy_calib_get(const char *path, uint64_t model_hash, int threads, uint64_t gpu_budget, const char *mode) {
    hy_calib c;
    hy_calib_get_modes(path, model_hash, threads, gpu_budget, &mode, 1, &c);
    return c;
}

/* the kept entry moved halfway toward ratio, in log space */
static json_t *moved(json_t *old, double ratio) {
    hy_calib c = {0};
    double s = ratio;
    int runs = 1;
    if (old && read_entry(old, &c)) {
        s = exp(0.5 * (log(c.scale) + log(ratio)));
        runs = c.runs < 1000000000 ? c.runs + 1 : c.runs;
    }
    return json_pack("{s:f, s:i}", "scale", s, "runs", runs);
}

/* o's object member `name`, made when absent or not an object */
static json_t *member(json_t *o, const char *name) {
    json_t *m = json_object_get(o, name);
    if (!json_is_object(m)) {
        m = json_object();
        json_object_set_new(o, name, m);
    }
    return m;
}

/* written whole to a temporary name, then renamed over: a reader sees the old or the new file */
static int save(json_t *o, const char *path, char *err, size_t errlen) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    int rc = json_dump_file(o, tmp, JSON_INDENT(1));
    json_decref(o);
    if (rc || rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return hy_fail(err, errlen, "cannot write %s: %s", path, rc ? "write failed" : strerror(e));
    }
    return 0;
}

static json_t *load_or_new(const char *path) {
    json_t *o = load(path);
    return o ? o : json_pack("{s:i}", "version", CALIB_VERSION);
}

int hy_calib_record(const char *path, uint64_t model_hash, int threads, uint64_t gpu_budget, const char *mode,
                    double measured_s, double predicted_s, char *err, size_t errlen) {
    double ratio = predicted_s > 0 ? measured_s / predicted_s : 0;
    if (!(ratio >= RATIO_MIN && ratio <= RATIO_MAX))
        return hy_fail(err, errlen, "a compute ratio of %g is not kept (outside %g..%g)", ratio, RATIO_MIN, RATIO_MAX);
    char def[4096];
    if (!(path = resolve(path, def, sizeof def))) return hy_fail(err, errlen, "no cache directory");
    json_t *o = load_or_new(path);
    json_t *models = member(o, "models");
    char k[64];
    model_key(k, sizeof k, model_hash, threads, gpu_budget, mode);
    json_object_set_new(models, k, moved(json_object_get(models, k), ratio));
    json_t *machine = member(o, "machine");
    char mk[64];
    machine_key(mk, sizeof mk, threads, gpu_budget, mode);
    if (predicted_s >= HY_CALIB_MACHINE_MIN_S) json_object_set_new(machine, mk, moved(json_object_get(machine, mk), ratio));
    return save(o, path, err, errlen);
}

void hy_calib_get_read_modes(const char *path, const char *const modes[], int n, hy_calib out[]) {
    for (int i = 0; i < n; i++) out[i] = (hy_calib){.scale = 1, .runs = 0, .per_model = false};
    char def[4096];
    if (!(path = resolve(path, def, sizeof def))) return;
    json_t *o = load(path);
    if (!o) return;
    json_t *st = json_object_get(o, "storage");
    for (int i = 0; i < n; i++)
        if (!read_entry(json_object_get(st, modes[i] ? modes[i] : ""), &out[i])) out[i] = (hy_calib){.scale = 1};
    json_decref(o);
}

int hy_calib_record_read(const char *path, const char *mode, uint64_t bytes, double busy_s, double profile_gbps,
                         char *err, size_t errlen) {
    if (bytes < HY_CALIB_READ_MIN_BYTES || !(busy_s > 0) || !(profile_gbps > 0 && profile_gbps < 1e6))
        return hy_fail(err, errlen, "too little read to measure storage");
    double ratio = (double)bytes / busy_s / 1e9 / profile_gbps;
    if (!(ratio >= RATIO_MIN && ratio <= RATIO_MAX))
        return hy_fail(err, errlen, "a storage ratio of %g is not kept (outside %g..%g)", ratio, RATIO_MIN, RATIO_MAX);
    char def[4096];
    if (!(path = resolve(path, def, sizeof def))) return hy_fail(err, errlen, "no cache directory");
    json_t *o = load_or_new(path);
    json_t *st = member(o, "storage");
    const char *k = mode ? mode : "";
    json_object_set_new(st, k, moved(json_object_get(st, k), ratio));
    return save(o, path, err, errlen);
}
