#include "engine/hy_place.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/hy_util.h"

struct hy_place {
    struct llama_model_tensor_buft_override *ovr;
    int n;
};

static char *escape_regex(const char *in) {
    size_t n = strlen(in);
    char *out = malloc(2 * n + 1), *o = out;
    if (!out) return NULL;
    for (const char *p = in; *p; p++) {
        if (strchr(".^$|()[]{}*+?\\", *p)) *o++ = '\\';
        *o++ = *p;
    }
    *o = 0;
    return out;
}

/* "blk.12.ffn_up.weight" -> ".ffn_up.weight"; NULL for a tensor outside the layers */
static const char *layer_suffix(const char *name) {
    if (strncmp(name, "blk.", 4)) return NULL;
    const char *p = name + 4;
    if (*p < '0' || *p > '9') return NULL;
    while (*p >= '0' && *p <= '9') p++;
    return *p == '.' ? p : NULL;
}

static int add(hy_place *pl, char *pat, ggml_backend_buffer_type_t bt, char *err, size_t errlen) {
    if (!pat) return hy_fail(err, errlen, "out of memory");
    pl->ovr[pl->n].pattern = pat;
    pl->ovr[pl->n].buft = bt;
    pl->n++;
    return 0;
}

/* one pattern per tensor kind of a tier: ^blk\.(3|7|12)\.ffn_up\.weight$, or ^name$ outside the layers */
static int tier_patterns(hy_place *pl, const hy_model_desc *d, const hy_plan *plan, hy_tier tier,
                         ggml_backend_buffer_type_t bt, bool *done, char *err, size_t errlen) {
    for (int64_t i = 0; i < d->n_tensors; i++) {
        if (done[i] || plan->tier[i] != tier) continue;
        const char *ni = d->tensors[i].name;
        const char *suf = layer_suffix(ni);
        char *esc = escape_regex(suf ? suf : ni);
        if (!esc) return hy_fail(err, errlen, "out of memory");
        if (!suf) {
            done[i] = true;
            size_t cap = strlen(esc) + 3;
            char *pat = malloc(cap);
            if (pat) snprintf(pat, cap, "^%s$", esc);
            free(esc);
            if (add(pl, pat, bt, err, errlen)) return -1;
            continue;
        }
        size_t cap = 16 + strlen(esc), len = 0;
        for (int64_t j = i; j < d->n_tensors; j++) cap += 12;
        char *pat = malloc(cap);
        if (!pat) {
            free(esc);
            return hy_fail(err, errlen, "out of memory");
        }
        len += (size_t)snprintf(pat + len, cap - len, "^blk\\.(");
        bool first = true;
        for (int64_t j = i; j < d->n_tensors; j++) {
            const char *sj = layer_suffix(d->tensors[j].name);
            if (done[j] || plan->tier[j] != tier || !sj || strcmp(sj, suf)) continue;
            done[j] = true;
            len += (size_t)snprintf(pat + len, cap - len, "%s%.*s", first ? "" : "|",
                                    (int)(sj - d->tensors[j].name - 4), d->tensors[j].name + 4);
            first = false;
        }
        snprintf(pat + len, cap - len, ")%s$", esc);
        free(esc);
        if (add(pl, pat, bt, err, errlen)) return -1;
    }
    return 0;
}

int hy_place_make(const hy_model_desc *d, const hy_plan *plan, ggml_backend_buffer_type_t buft[HY_TIER_COUNT],
                  hy_place **out, char *err, size_t errlen) {
    *out = NULL;
    if (plan->n_tensors != d->n_tensors) return hy_fail(err, errlen, "plan and model disagree");
    hy_place *pl = calloc(1, sizeof *pl);
    bool *done = calloc((size_t)d->n_tensors + 1, sizeof *done);
    if (pl) pl->ovr = calloc((size_t)d->n_tensors + 2, sizeof *pl->ovr);
    if (!pl || !done || !pl->ovr) {
        free(done);
        hy_place_free(pl);
        return hy_fail(err, errlen, "out of memory");
    }
    static const hy_tier order[] = {HY_TIER_GPU, HY_TIER_NVME};
    for (size_t k = 0; k < sizeof order / sizeof order[0]; k++) {
        hy_tier t = order[k];
        bool used = false;
        for (int64_t i = 0; i < d->n_tensors; i++) used |= plan->tier[i] == t;
        if (!used) continue;
        if (!buft[t]) {
            free(done);
            hy_place_free(pl);
            return hy_fail(err, errlen, "the plan puts tensors on the %s tier, which this build cannot provide",
                           hy_tier_name(t));
        }
        if (tier_patterns(pl, d, plan, t, buft[t], done, err, errlen)) {
            free(done);
            hy_place_free(pl);
            return -1;
        }
    }
    free(done);
    if (pl->n > 0 || buft[HY_TIER_RAM]) {
        if (!buft[HY_TIER_RAM]) {
            hy_place_free(pl);
            return hy_fail(err, errlen, "no buffer type for the RAM tier");
        }
        char *all = malloc(2);
        if (all) memcpy(all, ".", 2);
        if (add(pl, all, buft[HY_TIER_RAM], err, errlen)) {
            hy_place_free(pl);
            return -1;
        }
    }
    *out = pl;
    return 0;
}

const struct llama_model_tensor_buft_override *hy_place_overrides(const hy_place *p) {
    return p && p->n ? p->ovr : NULL;
}

int hy_place_n_patterns(const hy_place *p) { return p ? p->n : 0; }

void hy_place_free(hy_place *p) {
    if (!p) return;
    if (p->ovr)
        for (int i = 0; i < p->n; i++) free((char *)p->ovr[i].pattern);
    free(p->ovr);
    free(p);
}

ggml_backend_dev_t hy_place_gpu_device(void) {
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        if (ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_GPU) return dev;
    }
    return NULL;
}
