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

/* one pattern per tensor kind of a class: ^blk\.(3|7|12)\.ffn_up\.weight$, or ^name$ outside the layers.
 * cls[i] is the class of tensor i (a tier, or a hy_place_class). */
static int class_patterns(hy_place *pl, const hy_model_desc *d, const int *cls, int want,
                          ggml_backend_buffer_type_t bt, bool *done, char *err, size_t errlen) {
    for (int64_t i = 0; i < d->n_tensors; i++) {
        if (done[i] || cls[i] != want) continue;
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
            if (done[j] || cls[j] != want || !sj || strcmp(sj, suf)) continue;
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

static hy_place *place_new(const hy_model_desc *d, bool **done, int **cls) {
    hy_place *pl = calloc(1, sizeof *pl);
    *done = calloc((size_t)d->n_tensors + 1, sizeof **done);
    *cls = calloc((size_t)d->n_tensors + 1, sizeof **cls);
    if (pl) pl->ovr = calloc((size_t)d->n_tensors + 2, sizeof *pl->ovr);
    if (!pl || !*done || !*cls || !pl->ovr) {
        free(*done);
        free(*cls);
        hy_place_free(pl);
        return NULL;
    }
    return pl;
}

int hy_place_make(const hy_model_desc *d, const hy_plan *plan, ggml_backend_buffer_type_t buft[HY_TIER_COUNT],
                  hy_place **out, char *err, size_t errlen) {
    *out = NULL;
    if (plan->n_tensors != d->n_tensors) return hy_fail(err, errlen, "plan and model disagree");
    bool *done;
    int *cls;
    hy_place *pl = place_new(d, &done, &cls);
    if (!pl) return hy_fail(err, errlen, "out of memory");
    for (int64_t i = 0; i < d->n_tensors; i++) cls[i] = (int)plan->tier[i];
    static const hy_tier order[] = {HY_TIER_GPU, HY_TIER_NVME};
    int rc = 0;
    for (size_t k = 0; k < sizeof order / sizeof order[0] && !rc; k++) {
        hy_tier t = order[k];
        bool used = false;
        for (int64_t i = 0; i < d->n_tensors; i++) used |= plan->tier[i] == t;
        if (!used) continue;
        if (!buft[t])
            rc = hy_fail(err, errlen, "the plan puts tensors on the %s tier, which this build cannot provide",
                         hy_tier_name(t));
        else rc = class_patterns(pl, d, cls, (int)t, buft[t], done, err, errlen);
    }
    free(done);
    free(cls);
    if (!rc && (pl->n > 0 || buft[HY_TIER_RAM])) {
        if (!buft[HY_TIER_RAM]) rc = hy_fail(err, errlen, "no buffer type for the RAM tier");
        else {
            char *all = malloc(2);
            if (all) memcpy(all, ".", 2);
            rc = add(pl, all, buft[HY_TIER_RAM], err, errlen);
        }
    }
    if (rc) {
        hy_place_free(pl);
        return -1;
    }
    *out = pl;
    return 0;
}

int hy_place_make_classes(const hy_model_desc *d, const signed char *cls_in, ggml_backend_buffer_type_t host_buft,
                          ggml_backend_buffer_type_t repack_buft, ggml_backend_buffer_type_t nvme_buft, hy_place **out,
                          char *err, size_t errlen) {
    *out = NULL;
    if (!host_buft || !repack_buft) return hy_fail(err, errlen, "no buffer type for the RAM tier or for repacking");
    bool *done;
    int *cls;
    hy_place *pl = place_new(d, &done, &cls);
    if (!pl) return hy_fail(err, errlen, "out of memory");
    bool any_default = false, any_nvme = false;
    for (int64_t i = 0; i < d->n_tensors; i++) {
        cls[i] = cls_in[i];
        any_default |= cls_in[i] == HY_PLACE_LIBLLAMA;
        any_nvme |= cls_in[i] == HY_TIER_NVME;
    }
    int rc = 0;
    if (any_nvme && !nvme_buft) rc = hy_fail(err, errlen, "tensors are classed for streaming, without its buffer type");
    else if (any_nvme) rc = class_patterns(pl, d, cls, HY_TIER_NVME, nvme_buft, done, err, errlen);
    if (!rc) rc = class_patterns(pl, d, cls, HY_PLACE_REPACK, repack_buft, done, err, errlen);
    /* host tensors: a catch-all, unless some tensors are left to libllama's own choice */
    if (!rc && any_default) rc = class_patterns(pl, d, cls, HY_PLACE_HOST, host_buft, done, err, errlen);
    else if (!rc) {
        char *all = malloc(2);
        if (all) memcpy(all, ".", 2);
        rc = add(pl, all, host_buft, err, errlen);
    }
    free(done);
    free(cls);
    if (rc) {
        hy_place_free(pl);
        return -1;
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

/* ------------------------------------------------- which weights are repacked */

/* The op libllama's loader tests a weight with (llm_tensor_info, llama-arch.cpp),
 * for the weights whose op hypura knows: projections feed GGML_OP_MUL_MAT,
 * expert tensors GGML_OP_MUL_MAT_ID. GGML_OP_NONE: not known here. */
static enum ggml_op known_op(const char *name) {
    if (!strcmp(name, "output.weight")) return GGML_OP_MUL_MAT;
    const char *suf = layer_suffix(name);
    if (!suf) return GGML_OP_NONE;
    static const char *const mm[] = {
        ".attn_q.weight",        ".attn_k.weight",         ".attn_v.weight",         ".attn_qkv.weight",
        ".attn_output.weight",   ".attn_q_a.weight",       ".attn_q_b.weight",       ".attn_kv_a_mqa.weight",
        ".attn_kv_b.weight",     ".attn_k_b.weight",       ".attn_v_b.weight",       ".ffn_gate.weight",
        ".ffn_up.weight",        ".ffn_down.weight",       ".ffn_gate_shexp.weight", ".ffn_up_shexp.weight",
        ".ffn_down_shexp.weight", ".ffn_gate_inp.weight",  ".ffn_gate_inp_shexp.weight"};
    static const char *const mmid[] = {".ffn_gate_exps.weight",   ".ffn_up_exps.weight",     ".ffn_down_exps.weight",
                                       ".ffn_gate_up_exps.weight", ".ffn_gate_chexps.weight", ".ffn_up_chexps.weight",
                                       ".ffn_down_chexps.weight"};
    for (size_t k = 0; k < sizeof mm / sizeof mm[0]; k++)
        if (!strcmp(suf, mm[k])) return GGML_OP_MUL_MAT;
    for (size_t k = 0; k < sizeof mmid / sizeof mmid[0]; k++)
        if (!strcmp(suf, mmid[k])) return GGML_OP_MUL_MAT_ID;
    return GGML_OP_NONE;
}

/* weight_buft_supported() of libllama's loader, for MUL_MAT and MUL_MAT_ID: the
 * same op on the same shapes, asked of the CPU device with the weight in a
 * (dummy) buffer of the buffer type */
static bool op_supported(ggml_backend_dev_t cpu, ggml_backend_buffer_type_t bt, const hy_tensor_info *t, enum ggml_op op,
                         int n_ids) {
    struct ggml_init_params ip = {.mem_size = ggml_tensor_overhead() * 8, .mem_buffer = NULL, .no_alloc = true};
    struct ggml_context *ctx = ggml_init(ip);
    if (!ctx) return false;
    struct ggml_tensor *w = ggml_new_tensor_4d(ctx, (enum ggml_type)t->type, t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
    struct ggml_tensor *o;
    if (op == GGML_OP_MUL_MAT) {
        struct ggml_tensor *b = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, w->ne[0], 512, w->ne[2], w->ne[3]);
        o = ggml_mul_mat(ctx, w, b);
    } else {
        struct ggml_tensor *b = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, w->ne[0], n_ids, 512);
        struct ggml_tensor *ids = ggml_new_tensor_2d(ctx, GGML_TYPE_I32, n_ids, 512);
        o = ggml_mul_mat_id(ctx, w, b, ids);
    }
    w->buffer = ggml_backend_buft_alloc_buffer(bt, 0);
    bool ok = w->buffer && ggml_backend_dev_supports_op(cpu, o);
    if (w->buffer) ggml_backend_buffer_free(w->buffer);
    ggml_free(ctx);
    return ok;
}

/* shapes ggml would assert on (a header libllama has not validated yet): leave those to libllama */
static bool sane_shape(const hy_tensor_info *t) {
    if (t->type < 0 || t->type >= GGML_TYPE_COUNT || ggml_type_size((enum ggml_type)t->type) == 0) return false;
    int64_t bs = ggml_blck_size((enum ggml_type)t->type);
    if (bs <= 0 || t->ne[0] <= 0 || t->ne[0] % bs) return false;
    for (int k = 1; k < 4; k++)
        if (t->ne[k] <= 0) return false;
    return true;
}

int hy_place_repack_classes(const hy_model_desc *d, signed char *cls, ggml_backend_buffer_type_t *repack_buft) {
    *repack_buft = NULL;
    ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!cpu) return 1;
    /* libllama tries accelerator buffer types before the CPU's extra ones: not modelled here */
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        if (ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_ACCEL &&
            ggml_backend_dev_buffer_type(dev) != ggml_backend_cpu_buffer_type())
            return 1;
    }
    ggml_backend_dev_get_extra_bufts_t get_extra = (ggml_backend_dev_get_extra_bufts_t)ggml_backend_reg_get_proc_address(
        ggml_backend_dev_backend_reg(cpu), "ggml_backend_dev_get_extra_bufts");
    ggml_backend_buffer_type_t *extra = get_extra ? get_extra(cpu) : NULL;
    /* exactly one extra buffer type, the repacking one (AMX or KleidiAI would be tried first) */
    if (!extra || !extra[0] || extra[1] || strcmp(ggml_backend_buft_name(extra[0]), "CPU_REPACK")) return 1;
    ggml_backend_buffer_type_t rb = extra[0];
    int n_ids = d->n_expert_used > 0 ? d->n_expert_used : 1;
    for (int64_t i = 0; i < d->n_tensors; i++) {
        const hy_tensor_info *t = &d->tensors[i];
        if (!sane_shape(t)) {
            cls[i] = HY_PLACE_LIBLLAMA;
            continue;
        }
        bool mm = op_supported(cpu, rb, t, GGML_OP_MUL_MAT, n_ids);
        bool mmid = t->ne[2] > 1 && t->ne[3] == 1 && op_supported(cpu, rb, t, GGML_OP_MUL_MAT_ID, n_ids);
        enum ggml_op op = known_op(t->name);
        if (!mm && !mmid) cls[i] = HY_PLACE_HOST; /* no op makes libllama repack it */
        else if ((op == GGML_OP_MUL_MAT && mm) || (op == GGML_OP_MUL_MAT_ID && mmid)) cls[i] = HY_PLACE_REPACK;
        else if (op != GGML_OP_NONE) cls[i] = HY_PLACE_HOST; /* its own op is not repacked */
        else cls[i] = HY_PLACE_LIBLLAMA; /* repackable, used how? libllama decides */
    }
    *repack_buft = rb;
    return 0;
}
