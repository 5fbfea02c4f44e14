#include "plan/hy_plan.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/hy_util.h"

#define MIB ((uint64_t)1 << 20)
/* process, libraries, ggml contexts, thread stacks, I/O bookkeeping, the
 * logits of one output (measured: a tiny model's whole process peaks near 30 MiB) */
#define HY_PLAN_OVERHEAD (48 * MIB)

hy_plan_params hy_plan_default_params(void) {
    hy_plan_params p = {0};
    p.n_ctx = 2048;
    p.n_batch = 512;
    p.lookahead = -1;
    p.force_mode = -1;
    return p;
}

const char *hy_mode_name(hy_mode m) {
    switch (m) {
    case HY_MODE_RESIDENT: return "full-resident";
    case HY_MODE_DENSE_FFN: return "dense-FFN-streaming";
    case HY_MODE_EXPERT: return "expert-streaming";
    default: return "?";
    }
}

const char *hy_tier_name(hy_tier t) {
    switch (t) {
    case HY_TIER_GPU: return "GPU";
    case HY_TIER_RAM: return "RAM";
    case HY_TIER_NVME: return "NVMe";
    default: return "?";
    }
}

uint64_t hy_plan_kv_bytes(const hy_model_desc *d, int n_ctx) {
    if (d->n_head <= 0 || d->n_embd <= 0 || n_ctx <= 0) return 0;
    uint64_t head_dim = (uint64_t)d->n_embd / (uint64_t)d->n_head;
    uint64_t kv_heads = d->n_head_kv > 0 ? (uint64_t)d->n_head_kv : (uint64_t)d->n_head;
    /* K and V, f16, per layer. A hostile header's product (up to ~2^92) saturates
     * instead of wrapping to a small figure that would pass the budget check; the
     * bound leaves room to add the other costs without wrapping either. */
    const uint64_t cap = UINT64_MAX >> 2;
    if (head_dim == 0 || d->n_layer <= 0) return 0;
    uint64_t v = 4;
    if (__builtin_mul_overflow(v, (uint64_t)n_ctx, &v) || __builtin_mul_overflow(v, (uint64_t)d->n_layer, &v) ||
        __builtin_mul_overflow(v, kv_heads, &v) || __builtin_mul_overflow(v, head_dim, &v) || v > cap)
        return cap;
    return v;
}

uint64_t hy_plan_compute_bytes(const hy_model_desc *d, int n_ctx, int n_batch) {
    /* libllama's CPU compute buffer holds one ubatch's live activations: the
     * larger of the logits-side and FFN-side working sets per token, plus the
     * attention's per-position share. Fitted to the pinned version's reported
     * sizes (sched_reserve) on dense llama models from 256 to 2048 wide, ctx 256
     * to 2048, batch 64 to 512; it errs 5-15 % high. */
    uint64_t b = (uint64_t)(n_batch > 0 ? n_batch : 512);
    uint64_t vocab_side = (uint64_t)d->n_vocab * 7 / 4;
    uint64_t ffn_side = 20 * (uint64_t)d->n_ff + 4 * (uint64_t)d->n_embd;
    uint64_t per_tok = (vocab_side > ffn_side ? vocab_side : ffn_side) + 40 * (uint64_t)(n_ctx > 0 ? n_ctx : 0);
    return b * per_tok + 4 * MIB;
}

/* Layer order in which groups start streaming: spread evenly (a bit-reversal
 * permutation), so that any prefix is spread and prefixes are nested. */
static void spread_order(int n, int *order) {
    int bits = 0;
    while ((1 << bits) < n) bits++;
    int k = 0;
    for (int i = 0; i < (1 << bits) && k < n; i++) {
        int r = 0;
        for (int b = 0; b < bits; b++)
            if (i & (1 << b)) r |= 1 << (bits - 1 - b);
        if (r < n) order[k++] = r;
    }
}

static bool is_ffn(hy_role r) { return r == HY_ROLE_FFN || r == HY_ROLE_EXPERT; }

static bool streams_in_stage(hy_role r, int stage) { return is_ffn(r) || (stage == 2 && r == HY_ROLE_ATTN); }

/* A layer's group: the bytes read per pass, and what it commits while resident. */
struct lb {
    uint64_t raw, slot;
};

/* Bytes that stream per layer at a stage (1: FFN/experts, 2: + attention). */
static void layer_bytes(const hy_model_desc *d, const bool *gpu, int stage, struct lb *out) {
    memset(out, 0, sizeof *out * (size_t)d->n_layer);
    for (int64_t i = 0; i < d->n_tensors; i++) {
        const hy_tensor_info *t = &d->tensors[i];
        if (!gpu[i] && t->layer >= 0 && t->layer < d->n_layer && streams_in_stage(t->role, stage)) {
            out[t->layer].raw += t->size;
            out[t->layer].slot += hy_plan_slot_bytes(t->size);
        }
    }
}

struct choice {
    int stage, k; /* stage 1: first k layers' FFN stream; stage 2: all FFN + first k layers' attention */
    uint64_t streamed, max_group; /* bytes read per pass; largest group's committed bytes */
};

/* Every choice's streamed bytes and largest group, in O(layers): prefix sums and
 * maxima over the spread order. c1[k] (stage 1) streams the FFN of the first k
 * layers of the order; c2[k] (stage 2) streams every FFN and the attention of the
 * first k. Both arrays hold n_layer + 1 choices. */
static void eval_choices(int n, const int *order, const struct lb *ffn, const struct lb *both, struct choice *c1,
                         struct choice *c2) {
    uint64_t sum_ffn = 0, suf_max = 0;
    for (int j = 0; j < n; j++) sum_ffn += ffn[order[j]].raw;
    /* suffix maxima of the FFN groups, stored in c2[k].max_group for now */
    c2[n].max_group = 0;
    for (int j = n - 1; j >= 0; j--) {
        if (ffn[order[j]].slot > suf_max) suf_max = ffn[order[j]].slot;
        c2[j].max_group = suf_max;
    }
    uint64_t s1 = 0, m1 = 0, sb = 0, mb = 0, sf = 0;
    for (int k = 0; k <= n; k++) {
        c1[k] = (struct choice){.stage = 1, .k = k, .streamed = s1, .max_group = m1};
        uint64_t suffix_ffn_max = c2[k].max_group;
        c2[k] = (struct choice){.stage = 2, .k = k, .streamed = sb + (sum_ffn - sf),
                                .max_group = mb > suffix_ffn_max ? mb : suffix_ffn_max};
        if (k == n) break;
        const struct lb *f = &ffn[order[k]], *bo = &both[order[k]];
        s1 += f->raw;
        if (f->slot > m1) m1 = f->slot;
        sf += f->raw;
        sb += bo->raw;
        if (bo->slot > mb) mb = bo->slot;
    }
}

static uint64_t need_of(uint64_t total, uint64_t fixed, const struct choice *c, int lookahead) {
    return total - c->streamed + fixed + (uint64_t)(lookahead + 1) * c->max_group;
}

static bool fits(uint64_t total, uint64_t fixed, const struct choice *c, int lookahead, uint64_t budget) {
    return need_of(total, fixed, c, lookahead) <= budget;
}

/* the choices in order of streamed bytes: stage 1 by k, then stage 2 by k; a
 * choice that streams nothing is stage 1, k = 0 (skipped when forced to stream) */
static const struct choice *choice_at(int n, const struct choice *c1, const struct choice *c2, int i) {
    return i <= n ? &c1[i] : &c2[i - n];
}

/* smallest choice (fewest streamed bytes) that fits with this lookahead; false if none */
static bool find_choice(int n, const struct choice *c1, const struct choice *c2, uint64_t total, uint64_t fixed,
                        int lookahead, uint64_t budget, bool at_least_one, struct choice *out) {
    for (int i = 0; i <= 2 * n; i++) {
        const struct choice *c = choice_at(n, c1, c2, i);
        if (i > 0 && c->streamed == 0) continue;
        if (i == 0 && at_least_one) continue;
        if (fits(total, fixed, c, lookahead, budget)) {
            *out = *c;
            return true;
        }
    }
    return false;
}

/* the smallest budget any streaming choice needs with this lookahead (UINT64_MAX: none streams) */
static uint64_t min_stream_need(int n, const struct choice *c1, const struct choice *c2, uint64_t total,
                                uint64_t fixed, int lookahead) {
    uint64_t best = UINT64_MAX;
    for (int i = 1; i <= 2 * n; i++) {
        const struct choice *c = choice_at(n, c1, c2, i);
        if (c->streamed == 0) continue;
        uint64_t need = need_of(total, fixed, c, lookahead);
        if (need < best) best = need;
    }
    return best;
}

/* the kind part of "blk.<layer>.<kind>", or NULL */
static const char *xkind_suffix(const char *name) {
    if (strncmp(name, "blk.", 4)) return NULL;
    const char *q = name + 4;
    while (*q >= '0' && *q <= '9') q++;
    return q > name + 4 && *q == '.' ? q + 1 : NULL;
}

int hy_plan_xkind_of(const hy_xkind *kinds, int n_kinds, const char *name) {
    const char *suf = xkind_suffix(name);
    for (int k = 0; suf && k < n_kinds; k++)
        if (!strcmp(kinds[k].suffix, suf)) return k;
    return -1;
}

int hy_plan_xkinds(const hy_model_desc *d, const hy_tier *tier, hy_xkind *kinds, int max) {
    int n = 0;
    for (int64_t i = 0; i < d->n_tensors; i++) {
        const hy_tensor_info *t = &d->tensors[i];
        if (t->role != HY_ROLE_EXPERT || t->layer < 0 || t->layer >= d->n_layer) continue;
        if (tier && tier[i] != HY_TIER_NVME) continue;
        const char *suf = xkind_suffix(t->name);
        if (!suf || strlen(suf) >= sizeof kinds[0].suffix) return -1;
        int k = hy_plan_xkind_of(kinds, n, t->name);
        if (k < 0) {
            if (n == max) return -1;
            k = n++;
            memset(&kinds[k], 0, sizeof kinds[k]);
            strcpy(kinds[k].suffix, suf);
        }
        uint64_t stride = t->expert_stride ? t->expert_stride
                                           : t->size / (uint64_t)(d->n_expert > 0 ? d->n_expert : 1);
        uint64_t pitch = hy_plan_xslot_pitch(stride);
        if (pitch > kinds[k].pitch) kinds[k].pitch = pitch;
        kinds[k].n_tensors++;
    }
    return n;
}

uint64_t hy_plan_xslot_cost(const hy_xkind *kinds, int n_kinds, int n_expert_used, int n_batch) {
    uint64_t c = 72 + 8 * (uint64_t)(n_expert_used > 0 ? n_expert_used : 1) * (uint64_t)(n_batch > 0 ? n_batch : 512);
    for (int k = 0; k < n_kinds; k++)
        if (__builtin_add_overflow(c, kinds[k].pitch, &c) || c > (UINT64_MAX >> 2)) return UINT64_MAX >> 2;
    return c;
}

/* Expert-streaming: every expert tensor on NVMe, everything else resident;
 * what the budget leaves is the expert cache, in slots of one expert each
 * (hy_plan_xslot_cost). Only the routed experts' slices are read, so I/O per
 * token before caching is top-k of E of the expert bytes. The cache must hold
 * one whole layer of experts: a prompt batch can route to all of them, and the
 * layer's matmuls need them at once. Returns 0, -1 on an error, 1 when the
 * budget is below out->min_budget (the caller may stream dense-style instead). */
static int plan_experts(const hy_model_desc *d, const hy_plan_params *p, const bool *gpu, uint64_t total, uint64_t fixed,
                        hy_plan *out, char *err, size_t errlen) {
    uint64_t experts = 0;
    int n_layers_x = 0;
    bool *has = calloc((size_t)d->n_layer, sizeof *has);
    if (!has) return hy_fail(err, errlen, "out of memory");
    for (int64_t i = 0; i < d->n_tensors; i++) {
        const hy_tensor_info *t = &d->tensors[i];
        if (gpu[i]) continue;
        bool x = t->role == HY_ROLE_EXPERT && t->layer >= 0 && t->layer < d->n_layer;
        out->tier[i] = x ? HY_TIER_NVME : HY_TIER_RAM;
        out->group[i] = x ? t->layer : -1;
        out->bytes_tier[out->tier[i]] += t->size;
        if (x) {
            experts += t->size;
            n_layers_x += !has[t->layer];
            has[t->layer] = true;
        }
    }
    free(has);
    if (experts == 0)
        return hy_fail(err, errlen, "the model has no expert tensors to stream%s",
                       out->gpu_layers ? " (all of them are on the GPU)" : "");
    hy_xkind kinds[HY_PLAN_MAX_XKINDS];
    int nk = hy_plan_xkinds(d, out->tier, kinds, HY_PLAN_MAX_XKINDS);
    if (nk <= 0) return hy_fail(err, errlen, "the expert tensors' names do not follow blk.N.<kind> (or more than %d kinds)",
                                HY_PLAN_MAX_XKINDS);
    int e = d->n_expert, k = d->n_expert_used > 0 ? d->n_expert_used : 1;
    if (k > e) k = e;
    uint64_t slot = hy_plan_xslot_cost(kinds, nk, k, p->n_batch);
    uint64_t arena_fixed = (uint64_t)nk * HY_PLAN_XARENA_TAIL;
    /* slots beyond every expert of every streamed layer would stay empty */
    uint64_t max_slots = (uint64_t)n_layers_x * (uint64_t)e;
    uint64_t resident = total - experts;
    /* a hostile header's expert count or sizes saturate instead of wrapping to a small figure */
    const uint64_t cap = UINT64_MAX >> 2;
    uint64_t layer_need;
    if (__builtin_mul_overflow((uint64_t)e, slot, &layer_need) || layer_need > cap || slot > cap) layer_need = cap;
    unsigned __int128 need = (unsigned __int128)resident + fixed + arena_fixed + layer_need;
    out->min_budget = need > cap ? cap : (uint64_t)need;
    out->x_kinds = nk;
    out->x_slot_bytes = slot;
    if ((unsigned __int128)p->mem_budget < need) return 1;
    uint64_t slots = (p->mem_budget - resident - fixed - arena_fixed) / slot;
    if (slots > max_slots) slots = max_slots;
    if (slots > (uint64_t)INT32_MAX / 2) slots = (uint64_t)INT32_MAX / 2; /* ids are int32 */
    if (slots < (uint64_t)e) return 1; /* a saturated figure hid that one layer does not fit */
    out->mode = HY_MODE_EXPERT;
    out->n_groups = n_layers_x;
    out->x_slots = (int)slots;
    out->pool_bytes = arena_fixed + slots * slot;
    out->max_group_bytes = layer_need;
    out->lookahead = 1; /* next layer's predicted experts */
    out->io_bytes_per_token = experts / (uint64_t)e * (uint64_t)k;
    out->budget_used = resident + out->pool_bytes + fixed;
    return 0;
}

/* The GPU tier (see hy_plan.h): a function of the model, the GPU budget and the
 * context alone, so a streamed and a resident run with the same GPU budget put
 * the same tensors on the GPU. Marks gpu[i]; fills the plan's gpu_* figures.
 * Per-layer sums first, then one pass to mark: linear in tensors and layers.
 * -1 when out of memory. */
static int plan_gpu(const hy_model_desc *d, const hy_plan_params *p, bool *gpu, hy_plan *out) {
    if (p->gpu_budget == 0) return 0;
    const uint64_t budget = p->gpu_budget;
    const int L = d->n_layer;
    uint64_t kv_layer = hy_plan_kv_bytes(d, p->n_ctx) / (uint64_t)L;
    uint64_t used = hy_plan_compute_bytes(d, p->n_ctx, p->n_batch);
    /* VRAM per layer of its attention, norms and router (everything but the FFN), and of its FFN */
    uint64_t *rest = calloc((size_t)L, sizeof *rest), *ffnb = calloc((size_t)L, sizeof *ffnb);
    bool *experts = calloc((size_t)L, sizeof *experts);
    if (!rest || !ffnb || !experts) {
        free(rest);
        free(ffnb);
        free(experts);
        return -1;
    }
    uint64_t head = 0; /* the output head and its norm */
    for (int64_t i = 0; i < d->n_tensors; i++) {
        const hy_tensor_info *t = &d->tensors[i];
        if (t->layer < 0 && (t->role == HY_ROLE_OUTPUT || t->role == HY_ROLE_NORM)) head += hy_plan_gpu_bytes(t->size);
        if (t->layer < 0 || t->layer >= L) continue;
        if (is_ffn(t->role)) {
            ffnb[t->layer] += hy_plan_gpu_bytes(t->size);
            experts[t->layer] |= t->role == HY_ROLE_EXPERT;
        } else {
            rest[t->layer] += hy_plan_gpu_bytes(t->size);
        }
    }
    int ffn_from = L, part = -1; /* layers >= ffn_from: whole FFN on the GPU; part: single tensors */
    if (used + head <= budget) { /* else too small to be worth a GPU */
        used += head;
        out->gpu_compute_bytes = used - head;
        out->gpu_output = true;
        /* attention, norms, router and K/V, from the last layer down */
        for (int l = L - 1; l >= 0 && used + kv_layer + rest[l] <= budget; l--) {
            used += kv_layer + rest[l];
            out->gpu_layers++;
            out->gpu_kv_bytes += kv_layer;
        }
        /* whole FFN groups of the GPU layers, then single dense FFN tensors of one more */
        for (int l = L - 1; l >= L - out->gpu_layers; l--) {
            if (used + ffnb[l] > budget) {
                if (!experts[l]) part = l;
                break;
            }
            used += ffnb[l];
            ffn_from = l;
        }
        for (int64_t i = 0; i < d->n_tensors; i++) {
            const hy_tensor_info *t = &d->tensors[i];
            if (t->layer < 0 || t->layer >= L) {
                gpu[i] = t->layer < 0 && (t->role == HY_ROLE_OUTPUT || t->role == HY_ROLE_NORM);
            } else if (!is_ffn(t->role)) {
                gpu[i] = t->layer >= L - out->gpu_layers;
            } else if (t->layer >= ffn_from) {
                gpu[i] = true;
            } else if (t->layer == part && used + hy_plan_gpu_bytes(t->size) <= budget) {
                used += hy_plan_gpu_bytes(t->size);
                gpu[i] = true;
            }
        }
    }
    free(rest);
    free(ffnb);
    free(experts);
    out->gpu_used = out->gpu_output ? used : 0;
    for (int64_t i = 0; i < d->n_tensors; i++)
        if (gpu[i]) out->bytes_tier[HY_TIER_GPU] += d->tensors[i].size;
    return 0;
}

static int plan_make(const hy_model_desc *d, const hy_plan_params *p, hy_plan *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (d->n_tensors <= 0 || d->n_layer <= 0) return hy_fail(err, errlen, "the model has no layers to place");
    if (p->lookahead > 64) return hy_fail(err, errlen, "lookahead %d is too large (at most 64)", p->lookahead);
    out->n_tensors = (int)d->n_tensors;
    out->tier = calloc((size_t)d->n_tensors, sizeof *out->tier);
    out->group = malloc((size_t)d->n_tensors * sizeof *out->group);
    struct lb *ffn = calloc((size_t)d->n_layer, sizeof *ffn);
    struct lb *both = calloc((size_t)d->n_layer, sizeof *both);
    struct choice *c1 = calloc((size_t)d->n_layer + 1, sizeof *c1);
    struct choice *c2 = calloc((size_t)d->n_layer + 1, sizeof *c2);
    int *order = calloc((size_t)d->n_layer, sizeof *order);
    int *rank = calloc((size_t)d->n_layer, sizeof *rank);
    bool *gpu = calloc((size_t)d->n_tensors, sizeof *gpu);
    int rc = 0;
    if (!out->tier || !out->group || !ffn || !both || !c1 || !c2 || !order || !rank || !gpu) {
        rc = hy_fail(err, errlen, "out of memory");
        goto done;
    }
    for (int64_t i = 0; i < d->n_tensors; i++) out->group[i] = -1;

    if (plan_gpu(d, p, gpu, out)) {
        rc = hy_fail(err, errlen, "out of memory");
        goto done;
    }
    for (int64_t i = 0; i < d->n_tensors; i++) out->tier[i] = gpu[i] ? HY_TIER_GPU : HY_TIER_RAM;
    /* from here on, RAM and NVMe for what is not on the GPU */
    uint64_t total = 0;
    for (int64_t i = 0; i < d->n_tensors; i++)
        if (!gpu[i]) total += d->tensors[i].size;
    out->kv_bytes = hy_plan_kv_bytes(d, p->n_ctx) - out->gpu_kv_bytes;
    out->compute_bytes = hy_plan_compute_bytes(d, p->n_ctx, p->n_batch);
    out->overhead_bytes = HY_PLAN_OVERHEAD + (out->gpu_output ? HY_PLAN_GPU_HOST_OVERHEAD : 0);
    uint64_t fixed = out->kv_bytes + out->compute_bytes + out->overhead_bytes;

    layer_bytes(d, gpu, 1, ffn);
    layer_bytes(d, gpu, 2, both);
    spread_order(d->n_layer, order);
    for (int j = 0; j < d->n_layer; j++) rank[order[j]] = j;

    /* the minimum: the streaming choice that needs the least with two groups in the pool
     * (streaming everything is not always it: a bigger group doubles in the pool) */
    const int n = d->n_layer;
    eval_choices(n, order, ffn, both, c1, c2);
    out->min_budget = min_stream_need(n, c1, c2, total, fixed, 1);
    if (out->min_budget == UINT64_MAX) out->min_budget = total + fixed; /* nothing to stream */

    bool want_stream = p->force_mode == HY_MODE_DENSE_FFN || p->force_mode == HY_MODE_EXPERT;
    if (!want_stream && total + fixed <= p->mem_budget) {
        out->mode = HY_MODE_RESIDENT;
        /* the streamed minimum can exceed what full-resident needs (slots, pool) */
        if (out->min_budget > total + fixed) out->min_budget = total + fixed;
        out->bytes_tier[HY_TIER_RAM] = total;
        for (int64_t i = 0; i < d->n_tensors; i++) out->tier[i] = gpu[i] ? HY_TIER_GPU : HY_TIER_RAM;
        out->budget_used = total + fixed;
    } else {
        if (p->force_mode == HY_MODE_RESIDENT) {
            char b1[32], b2[32];
            rc = hy_fail(err, errlen, "full-resident needs a memory budget of %s; the budget is %s",
                         hy_fmt_bytes(total + fixed, b1, sizeof b1), hy_fmt_bytes(p->mem_budget, b2, sizeof b2));
            goto done;
        }
        uint64_t x_min = UINT64_MAX, dense_min = out->min_budget;
        if (d->n_expert > 1 && p->force_mode != HY_MODE_DENSE_FFN) {
            rc = plan_experts(d, p, gpu, total, fixed, out, err, errlen);
            if (rc < 0) goto done;
            if (rc == 0) {
                if (p->force_mode != HY_MODE_EXPERT && dense_min < out->min_budget) out->min_budget = dense_min;
                goto predict;
            }
            /* below expert-streaming's minimum: stream dense-style if that fits
             * (streaming attention too can need less), else name the smaller minimum */
            rc = 0;
            x_min = out->min_budget;
            if (p->force_mode == HY_MODE_EXPERT) {
                char b1[32], b2[32];
                rc = hy_fail(err, errlen,
                             "memory budget %s is too small for expert-streaming: the minimum is %s (non-expert "
                             "weights, KV cache and compute buffers for a %d-token context, and one layer of experts)",
                             hy_fmt_bytes(p->mem_budget, b1, sizeof b1), hy_fmt_bytes(x_min, b2, sizeof b2), p->n_ctx);
                goto done;
            }
            memset(out->bytes_tier, 0, sizeof out->bytes_tier);
            for (int64_t i = 0; i < d->n_tensors; i++) {
                out->tier[i] = gpu[i] ? HY_TIER_GPU : HY_TIER_RAM;
                out->group[i] = -1;
                if (gpu[i]) out->bytes_tier[HY_TIER_GPU] += d->tensors[i].size;
            }
            out->x_kinds = 0;
            out->x_slot_bytes = 0;
            out->min_budget = dense_min < x_min ? dense_min : x_min;
        }
        struct choice c;
        int la = p->lookahead;
        bool found;
        if (la >= 0) {
            found = find_choice(n, c1, c2, total, fixed, la, p->mem_budget, want_stream, &c);
        } else {
            la = 1;
            found = false;
            if (p->min_lookahead > 1 && p->min_lookahead <= 4) {
                found = find_choice(n, c1, c2, total, fixed, p->min_lookahead, p->mem_budget, want_stream, &c);
                if (found) la = p->min_lookahead;
            }
            if (!found) found = find_choice(n, c1, c2, total, fixed, 1, p->mem_budget, want_stream, &c);
            /* spend leftover budget on deeper prefetch, never on more I/O */
            while (found && la < 4 && fits(total, fixed, &c, la + 1, p->mem_budget)) la++;
        }
        if (!found && want_stream && c2[n].streamed == 0) {
            rc = hy_fail(err, errlen, "the model has no FFN or attention tensors in its layers to stream");
            goto done;
        }
        if (!found) {
            char b1[32], b2[32];
            uint64_t need = min_stream_need(n, c1, c2, total, fixed, la < 0 ? 1 : la);
            if (x_min < need)
                rc = hy_fail(err, errlen,
                             "memory budget %s is too small for this model: the minimum is %s (expert-streaming: "
                             "non-expert weights, KV cache and compute buffers for a %d-token context, and one "
                             "layer of experts)",
                             hy_fmt_bytes(p->mem_budget, b1, sizeof b1), hy_fmt_bytes(x_min, b2, sizeof b2), p->n_ctx);
            else rc = hy_fail(err, errlen,
                         "memory budget %s is too small for this model: the minimum is %s (resident weights, "
                         "KV cache and compute buffers for a %d-token context, and a pool of %d layer groups)",
                         hy_fmt_bytes(p->mem_budget, b1, sizeof b1), hy_fmt_bytes(need, b2, sizeof b2), p->n_ctx,
                         (la < 0 ? 1 : la) + 1);
            goto done;
        }
        /* layer groups stream here: a dense model, a MoE forced dense or below expert-streaming's
         * minimum (streaming attention too can need less), or one "expert" (a dense FFN) */
        out->mode = HY_MODE_DENSE_FFN;
        out->lookahead = la;
        out->max_group_bytes = c.max_group;
        out->pool_bytes = (uint64_t)(la + 1) * c.max_group;
        for (int64_t i = 0; i < d->n_tensors; i++) {
            const hy_tensor_info *t = &d->tensors[i];
            if (gpu[i]) continue;
            bool s = false;
            if (t->layer >= 0 && t->layer < d->n_layer) {
                int r = rank[t->layer];
                if (c.stage == 1) s = r < c.k && streams_in_stage(t->role, 1);
                else s = streams_in_stage(t->role, r < c.k ? 2 : 1);
            }
            out->tier[i] = s ? HY_TIER_NVME : HY_TIER_RAM;
            out->group[i] = s ? t->layer : -1;
            out->bytes_tier[out->tier[i]] += t->size;
        }
        /* groups: layers with a streamed tensor (one pass over the tensors, not one per layer) */
        bool *seen = calloc((size_t)n, sizeof *seen);
        if (!seen) {
            rc = hy_fail(err, errlen, "out of memory");
            goto done;
        }
        for (int64_t i = 0; i < d->n_tensors; i++)
            if (out->group[i] >= 0 && !seen[out->group[i]]) {
                seen[out->group[i]] = true;
                out->n_groups++;
            }
        free(seen);
        out->io_bytes_per_token = out->bytes_tier[HY_TIER_NVME];
        out->budget_used = out->bytes_tier[HY_TIER_RAM] + out->pool_bytes + fixed;
    }
predict:
    if (hy_plan_predict(d, p, out)) rc = hy_fail(err, errlen, "out of memory");
done:
    free(ffn);
    free(both);
    free(c1);
    free(c2);
    free(order);
    free(rank);
    free(gpu);
    if (rc) hy_plan_free(out);
    return rc;
}

/* ---- prediction (see hy_plan.h) ---- */

/* Experts a token routes to at each layer: top-k of E (k at least 1, at most E). */
static int experts_used(const hy_model_desc *d) {
    int k = d->n_expert_used > 0 ? d->n_expert_used : 1;
    return k > d->n_expert ? d->n_expert : k;
}

/* `count` cache slots that each save `gain` bytes of reads per token while they
 * hold their expert */
struct slot_gain {
    double gain;
    uint64_t count;
};

static int by_gain(const void *a, const void *b) {
    const struct slot_gain *x = a, *y = b;
    return x->gain < y->gain ? 1 : x->gain > y->gain ? -1 : 0;
}

/* How much of the spread among the experts seen is the routing's own, from all layers' counts at
 * once. S selections of a layer scatter a share x by x(1-x)/S, so of the spread of the seen
 * experts' shares around their mean, chance alone explains sum x(1-x)/S on average. The fraction
 * left over, summed over the layers (one layer's few dozen selections say little, fifty layers'
 * say much): 1 where the seen experts clearly differ or the sample is large, near 0 where they
 * are alike and the leaders of each layer lead by chance. */
/* a layer's measured shares that count as evidence: in (0, 1] (NaN, negative or above 1: none) */
static bool usable_share(double x) { return x > 0 && x <= 1; }

static double usable_sum(const double *f, int E) {
    double sum = 0;
    for (int e = 0; e < E; e++)
        if (usable_share(f[e])) sum += f[e];
    return sum;
}

double hy_plan_routing_keep(const hy_model_desc *d, const hy_plan_params *p) {
    const int E = d->n_expert, L = d->n_layer;
    double sel = p && p->expert_freq ? (double)p->expert_freq_tokens * experts_used(d) : 0;
    if (!(sel > 0) || p->expert_freq_n != (int64_t)L * E) return 1;
    double spread = 0, chance = 0;
    for (int l = 0; l < L; l++) {
        const double *f = p->expert_freq + (int64_t)l * E;
        double sum = usable_sum(f, E), m = 0;
        int n = 0;
        if (!(sum > 0)) continue;
        for (int e = 0; e < E; e++)
            if (usable_share(f[e]) && f[e] / sum * sel >= 0.5) m += f[e] / sum, n++;
        if (n < 2) continue;
        m /= n;
        for (int e = 0; e < E; e++) {
            double x = usable_share(f[e]) ? f[e] / sum : 0;
            if (x * sel < 0.5) continue;
            spread += (x - m) * (x - m);
            chance += x * (1 - x) / sel;
        }
    }
    if (!(spread > 0)) return spread == 0 && chance > 0 ? 0 : 1;
    double keep = (spread - chance) / spread;
    return keep < 0 ? 0 : keep > 1 ? 1 : keep;
}

int hy_plan_layer_shares(const hy_model_desc *d, const hy_plan_params *p, int l, double keep, double *sh) {
    const int E = d->n_expert, k = experts_used(d);
    bool measured = p && p->expert_freq && p->expert_freq_n == (int64_t)d->n_layer * E && l >= 0 && l < d->n_layer;
    const double *f = measured ? p->expert_freq + (int64_t)l * E : NULL;
    double sum = f ? usable_sum(f, E) : 0;
    double h_all = 0;
    for (int r = 1; r <= E; r++) h_all += pow(r, -HY_PLAN_ROUTING_PRIOR);
    if (!(sum > 0)) { /* no data for this layer: the prior, hottest first */
        for (int r = 1; r <= E; r++) sh[r - 1] = pow(r, -HY_PLAN_ROUTING_PRIOR) / h_all;
        return 0;
    }
    /* counts c(e) = share * S of S = tokens * k selections (S unknown, tokens 0: shares as given) */
    double sel = (double)p->expert_freq_tokens * k;
#define VALID(e) usable_share(f[e])
#define SEEN(e) (sel > 0 ? VALID(e) && f[e] / sum * sel >= 0.5 : VALID(e))
    int seen = 0, once = 0;
    double seen_mass = 0;
    for (int e = 0; e < E; e++)
        if (SEEN(e)) {
            seen++;
            seen_mass += f[e] / sum;
            once += f[e] / sum * sel < 1.5;
        }
    /* the chance that a selection goes to an expert not seen yet: Good-Turing's N1 / S (at most the
     * prior's mass beyond the seen ranks); the unseen share it by the prior's shape */
    double m0 = 0, h_unseen = 0;
    if (sel > 0 && seen < E) {
        for (int r = seen + 1; r <= E; r++) h_unseen += pow(r, -HY_PLAN_ROUTING_PRIOR);
        m0 = once / sel;
        if (m0 > h_unseen / h_all) m0 = h_unseen / h_all;
    }
    int r = seen;
    for (int e = 0; e < E; e++)
        sh[e] = SEEN(e) ? (f[e] / sum) / seen_mass * (1 - m0) : m0 > 0 ? m0 * pow(++r, -HY_PLAN_ROUTING_PRIOR) / h_unseen : 0;
    /* The seen experts' shares spread more than the routing does: the experts that lead a few
     * dozen selections lead partly by chance, and caching the leaders of a small count promises
     * hits it will not make (a winner's curse). Among the seen, the shares keep only the part of
     * their distance from the seen experts' mean that the routing's own spread accounts for
     * (keep: hy_plan_routing_keep, over all layers: a James-Stein estimate); the unseen keep
     * Good-Turing's. */
    if (sel > 0 && seen > 0) {
        double mean = (1 - m0) / seen;
        for (int e = 0; e < E; e++)
            if (SEEN(e)) sh[e] = mean + keep * (sh[e] - mean);
    }
#undef SEEN
#undef VALID
    return 1;
}

/* The expert cache's capacity in slots of one expert (of one layer) each: the
 * plan's own count, else what its bytes buy at the plan's slot cost. */
static uint64_t expert_cache_slots(const hy_plan *out) {
    if (out->x_slots > 0) return (uint64_t)out->x_slots;
    return out->x_slot_bytes ? out->pool_bytes / out->x_slot_bytes : 0;
}

/* Expert-streaming: the expected cache hit rate. The slots hold the experts that
 * save most reads (the hottest; under uniform routing those of the layers with
 * the largest slices, all alike within a layer), as a frequency-ordered cache
 * converges to; the hit rate is the share of routed bytes they cover. */
static int predict_expert_cache(const hy_model_desc *d, const hy_plan_params *p, hy_plan *out) {
    const int L = d->n_layer, E = d->n_expert, k = experts_used(d);
    uint64_t *raw = calloc((size_t)L, sizeof *raw);
    if (!raw) return -1;
    for (int64_t i = 0; i < d->n_tensors; i++) {
        const hy_tensor_info *t = &d->tensors[i];
        if (out->tier[i] == HY_TIER_NVME && t->role == HY_ROLE_EXPERT && t->layer >= 0 && t->layer < L)
            raw[t->layer] += t->size;
    }
    bool measured = p->expert_freq && p->expert_freq_n == (int64_t)L * E;
    int n_layers = 0;
    for (int l = 0; l < L; l++) n_layers += raw[l] > 0;
    /* one item per expert of each layer; a hostile header's millions of experts fall back to
     * one item per layer (uniform within it) rather than to a huge allocation */
    bool per_expert = measured || (size_t)n_layers * (size_t)E <= ((size_t)1 << 20);
    size_t n_items = per_expert ? (size_t)n_layers * (size_t)E : (size_t)n_layers;
    struct slot_gain *it = calloc(n_items ? n_items : 1, sizeof *it);
    double *sh = per_expert ? malloc((size_t)(E > 0 ? E : 1) * sizeof *sh) : NULL;
    if (!it || (per_expert && !sh)) {
        free(it);
        free(sh);
        free(raw);
        return -1;
    }
    /* per token a layer reads k slices of raw/E bytes: expert e's with probability k * share(e) */
    double routed = 0, keep = per_expert ? hy_plan_routing_keep(d, p) : 1;
    size_t n = 0;
    bool any_data = false;
    for (int l = 0; l < L; l++) {
        if (!raw[l]) continue;
        double slice = (double)raw[l] / E;
        routed += k * slice;
        if (!per_expert) {
            it[n++] = (struct slot_gain){.gain = k * slice / E, .count = (uint64_t)E};
            continue;
        }
        any_data |= hy_plan_layer_shares(d, p, l, keep, sh) == 1;
        for (int e = 0; e < E; e++) it[n++] = (struct slot_gain){.gain = k * sh[e] * slice, .count = 1};
    }
    free(sh);
    qsort(it, n, sizeof *it, by_gain);
    uint64_t room = expert_cache_slots(out), slots = 0;
    double saved = 0;
    for (size_t i = 0; i < n && room; i++) {
        uint64_t take = it[i].count < room ? it[i].count : room;
        slots += take;
        room -= take;
        saved += (double)take * it[i].gain;
    }
    free(it);
    free(raw);
    double hit = routed > 0 ? saved / routed : 1.0;
    out->pred_hit_rate = hit < 0 ? 0 : hit > 1 ? 1 : hit;
    out->pred_hit_measured = any_data;
    out->cache_slots = slots;
    out->cache_slots_per_layer = n_layers ? (double)slots / n_layers : 0;
    out->pred_io_bytes = (uint64_t)((double)out->io_bytes_per_token * (1.0 - out->pred_hit_rate) + 0.5);
    if (out->pred_io_bytes > out->io_bytes_per_token) out->pred_io_bytes = out->io_bytes_per_token;
    return 0;
}

int hy_plan_predict(const hy_model_desc *d, const hy_plan_params *p, hy_plan *out) {
    out->pred_io_bytes = out->io_bytes_per_token;
    out->pred_hit_rate = 0;
    out->pred_hit_measured = false;
    out->cache_slots = 0;
    out->cache_slots_per_layer = 0;
    /* what a token makes the CPU read: the GPU's share is not counted (HBM reads it an order of
     * magnitude faster); of a MoE's expert tensors only the routed k of E, wherever they live */
    const bool moe = d->n_expert > 1;
    const int k = moe ? experts_used(d) : 1;
    /* an unknown bandwidth is assumed, and flagged, never taken as infinite */
    out->pred_read_assumed = !(p->seq_read_gbps > 0 && p->seq_read_gbps < 1e6);
    out->pred_mem_matvec = false;
    out->pred_mem_assumed = !(p->mem_bw_gbps > 0 && p->mem_bw_gbps < 1e6);
    /* the profile's figure as earlier runs of this mode found it (hy_calib.h) */
    double rs = out->mode >= 0 && out->mode < HY_MODE_COUNT ? p->read_scale[out->mode] : 0;
    out->pred_read_scale = !out->pred_read_assumed && rs > 0.01 && rs < 100 ? rs : 1;
    out->pred_read_gbps = out->pred_read_assumed ? HY_PLAN_ASSUMED_READ_GBPS : p->seq_read_gbps * out->pred_read_scale;
    out->pred_mem_gbps = out->pred_mem_assumed ? HY_PLAN_ASSUMED_MEM_GBPS : p->mem_bw_gbps;
    /* each weight type at the rate the CPU multiplies it by a vector, where the profile measured
     * it (arithmetic, not memory, bounds some types on few cores), else at memory bandwidth */
    uint64_t touched = 0, gpu_bytes = 0;
    double weight_s = 0;
    bool by_type = false;
    for (int64_t i = 0; i < d->n_tensors; i++) {
        const hy_tensor_info *t = &d->tensors[i];
        uint64_t b = moe && t->role == HY_ROLE_EXPERT
                         ? (uint64_t)((unsigned __int128)t->size * (unsigned)k / (unsigned)d->n_expert)
                         : t->size;
        if (out->tier[i] == HY_TIER_GPU) {
            if (t->role != HY_ROLE_EMBED) gpu_bytes += b; /* a token reads one row of the embeddings */
            continue;
        }
        touched += b;
        double r = t->type >= 0 && t->type < HY_PLAN_NTYPES ? p->matvec_gbps[t->type] : 0;
        if (r > 0 && r < 1e6) by_type = true;
        else r = out->pred_mem_gbps;
        weight_s += (double)b / (r * 1e9);
    }
    /* fewer threads than the profile measured with: a smaller share of its rates */
    out->pred_thread_scale = p->threads > 0 && p->profile_threads > 0 && p->threads < p->profile_threads
                                 ? pow((double)p->threads / p->profile_threads, HY_PLAN_THREAD_EXP)
                                 : 1;
    weight_s /= out->pred_thread_scale;
    out->pred_mem_gbps *= out->pred_thread_scale;
    out->pred_compute_bytes = touched;
    if (by_type && weight_s > 0) {
        out->pred_mem_gbps = (double)touched / weight_s / 1e9;
        out->pred_mem_matvec = true;
        out->pred_mem_assumed = false;
    }
    if (out->mode == HY_MODE_EXPERT && moe && predict_expert_cache(d, p, out)) return -1;
    /* Streaming whole groups, decode is bound by the slower of the two: a group's read is issued
     * layers ahead of its use (lookahead) and overlaps compute. Expert-streaming pays both: a miss
     * is known only once the layer's router has chosen, and the layer waits for it (pre-gating
     * prefetches some a layer early; that gain is not counted) */
    out->pred_io_s = (double)out->pred_io_bytes / (out->pred_read_gbps * 1e9);
    /* A streamed pass is computed in pieces that end where the eval callback must act (hy_stream.c):
     * at each node that reads a streamed tensor when whole groups stream, at each streamed MoE
     * layer's router and the last layer's expert ops under expert-streaming (tensors come in
     * layer order). Each piece is a start of all threads after the main thread worked alone: the
     * profile's piece_s (13-15 us on the H200 machine's 16 threads, 3-7 us on 2). */
    uint64_t pieces = 0;
    if (out->mode != HY_MODE_RESIDENT) {
        int last = -1, layers = 0;
        for (int64_t i = 0; i < d->n_tensors; i++) {
            const hy_tensor_info *t = &d->tensors[i];
            if (out->tier[i] != HY_TIER_NVME) continue;
            if (out->mode == HY_MODE_DENSE_FFN) pieces++;
            else if (t->role == HY_ROLE_EXPERT && t->layer != last) layers++, last = t->layer;
        }
        if (out->mode == HY_MODE_EXPERT) pieces = (uint64_t)layers + (uint64_t)(out->x_kinds > 0 ? out->x_kinds : 0);
    }
    out->pred_pieces = pieces;
    double piece_s = p->piece_s > 0 && p->piece_s < 1 ? p->piece_s : 0;
    /* earlier runs' measured over predicted compute time, where kept (hy_calib.h), else the prior */
    double cs = out->mode >= 0 && out->mode < HY_MODE_COUNT ? p->compute_scale[out->mode] : 0;
    out->pred_compute_scale = cs > 0.01 && cs < 100            ? cs
                              : out->mode == HY_MODE_EXPERT ? HY_PLAN_EXPERT_COMPUTE_PRIOR
                                                            : 1;
    out->pred_gpu_bytes = gpu_bytes;
    out->pred_gpu_s = (double)gpu_bytes / (HY_PLAN_ASSUMED_GPU_GBPS * 1e9);
    out->pred_compute_s =
        ((double)touched / (out->pred_mem_gbps * 1e9) + out->pred_gpu_s + (double)pieces * piece_s) * out->pred_compute_scale;
    out->pred_io_bound = out->pred_io_s > out->pred_compute_s;
    double share = p->io_wait_share > 0.01 && p->io_wait_share <= 1 ? p->io_wait_share : 1;
    double waits = out->mode == HY_MODE_EXPERT ? out->pred_io_s * share
                   : out->pred_io_bound         ? out->pred_io_s - out->pred_compute_s
                                                : 0;
    out->pred_io_wait_s = waits;
    out->pred_stall_piece_s = pieces ? waits / (double)pieces : 0;
    double t = out->mode == HY_MODE_EXPERT      ? waits + out->pred_compute_s
               : out->pred_io_bound ? out->pred_io_s
                                    : out->pred_compute_s;
    out->pred_tok_s = t > 0 ? 1.0 / t : 0;
    return 0;
}

void hy_plan_free(hy_plan *p) {
    free(p->tier);
    free(p->group);
    p->tier = NULL;
    p->group = NULL;
}

/* The automatic mode for a MoE that does not fit is chosen by predicted speed:
 * expert-streaming and dense-style streaming are both planned where both fit
 * and the faster prediction (with the routing statistics the caller passes, or
 * the prior) wins; mode_why says which and by how much. */
int hy_plan_make(const hy_model_desc *d, const hy_plan_params *p, hy_plan *out, char *err, size_t errlen) {
    int rc = plan_make(d, p, out, err, errlen);
    if (rc) return rc;
    if (out->mode == HY_MODE_RESIDENT) {
        snprintf(out->mode_why, sizeof out->mode_why, "%s", p->force_mode < 0 ? "the model fits the budget" : "forced");
        return 0;
    }
    if (p->force_mode >= 0) {
        snprintf(out->mode_why, sizeof out->mode_why, "forced (--mode)");
        return 0;
    }
    if (out->mode == HY_MODE_DENSE_FFN) {
        snprintf(out->mode_why, sizeof out->mode_why, "%s",
                 d->n_expert > 1 ? "below expert-streaming's minimum" : "a dense model that does not fit");
        return 0;
    }
    /* expert-streaming fits: would dense-style streaming be faster? */
    hy_plan_params q = *p;
    q.force_mode = HY_MODE_DENSE_FFN;
    hy_plan alt;
    char e2[256];
    if (plan_make(d, &q, &alt, e2, sizeof e2)) {
        snprintf(out->mode_why, sizeof out->mode_why, "dense-style streaming does not fit the budget");
        return 0;
    }
    if (alt.pred_tok_s > out->pred_tok_s * 1.1) {
        snprintf(alt.mode_why, sizeof alt.mode_why,
                 "predicted %.2f tok/s against %.2f for expert-streaming (%s routing)", alt.pred_tok_s,
                 out->pred_tok_s, out->pred_hit_measured ? "measured" : "prior");
        hy_plan_free(out);
        *out = alt;
        return 0;
    }
    snprintf(out->mode_why, sizeof out->mode_why, "predicted %.2f tok/s against %.2f for dense-style streaming (%s routing)",
             out->pred_tok_s, alt.pred_tok_s, out->pred_hit_measured ? "measured" : "prior");
    hy_plan_free(&alt);
    return 0;
}

int hy_plan_vxc_predict(const hy_plan *trial, const hy_plan_params *p, uint64_t routed, double hit, int layers, int k,
                        hy_plan_vxc_pred *out) {
    memset(out, 0, sizeof *out);
    if (!trial || trial->pred_tok_s <= 0 || trial->pred_mem_gbps <= 0 || layers <= 0) return -1;
    if (hit < 0) hit = 0;
    if (hit > 1) hit = 1;
    double scale = trial->pred_compute_scale > 0 ? trial->pred_compute_scale : 1;
    double t = 1.0 / trial->pred_tok_s;
    /* what the trial charged the CPU for these bytes, never more than its CPU share of the time */
    double cpu = (double)routed / (trial->pred_mem_gbps * 1e9) * scale;
    double cpu_max = trial->pred_compute_s - trial->pred_gpu_s * scale;
    if (cpu > cpu_max) cpu = cpu_max > 0 ? cpu_max : 0;
    out->cpu_saved_s = cpu;
    out->rest_s = t - cpu > 0 ? t - cpu : 0;
    out->pcie_bytes = (1.0 - hit) * (double)routed;
    out->pcie_s = out->pcie_bytes / (HY_PLAN_ASSUMED_PCIE_GBPS * 1e9);
    out->gpu_s = (double)routed / (HY_PLAN_ASSUMED_GPU_GBPS * 1e9);
    double piece = p && p->piece_s > 0 && p->piece_s < 1 ? p->piece_s : 0;
    out->sync_s = (double)layers * piece;
    out->nvme_bytes = trial->mode == HY_MODE_EXPERT ? (double)trial->pred_io_bytes : 0;
    double tt = out->rest_s + out->pcie_s + out->gpu_s + out->sync_s;
    out->tok_s = tt > 0 ? 1.0 / tt : 0;
    out->cpu_alt_s = (double)routed / (trial->pred_mem_gbps * 1e9) * scale +
                     (double)layers * (double)(k > 0 ? k : 1) * HY_PLAN_CPU_EXPERT_OP_S;
    out->pays = out->pcie_s + out->gpu_s + out->sync_s < out->cpu_alt_s;
    return 0;
}

hy_vxc_verdict hy_plan_vxc_judge(const hy_plan_vxc_pred *xp, const hy_plan *trial, const hy_plan *plan, double *extra_wait_s) {
    double with = trial->mode == HY_MODE_EXPERT ? trial->pred_io_wait_s : 0;
    double without = plan->mode == HY_MODE_EXPERT ? plan->pred_io_wait_s : 0;
    double extra = with > without ? with - without : 0;
    if (extra_wait_s) *extra_wait_s = extra;
    if (!xp->pays) return HY_VXC_NO_PAY;
    if (extra > HY_PLAN_VXC_NVME_DOUBT * (xp->cpu_alt_s - (xp->pcie_s + xp->gpu_s + xp->sync_s))) return HY_VXC_NVME_SLOWER;
    return HY_VXC_USE;
}
