/* libFuzzer target: the planner (src/plan) on any model description the GGUF
 * reader can produce, with any budgets and modes.
 *
 * Input: byte 0 picks the form, the next bytes the plan parameters (budget —
 * raw or relative to the model's size —, context, batch, lookahead, forced
 * mode, bandwidths), then either
 *  - (byte 0 even) a GGUF file, read with hy_gguf_parse_buffer: the plan of
 *    an arbitrary parsed header; or
 *  - (byte 0 odd) a compact description: hyperparameters, then tensors named
 *    from llama.cpp's patterns (embeddings, norms, attention, FFN, fused and
 *    split experts, routers, output) with layer, size and expert count; the
 *    description keeps every invariant hy_gguf.h promises (roles and layers
 *    from the names, n_layer above every layer, totals), so the planner meets
 *    far more distinct models than through GGUF bytes.
 *
 * Checks, beyond "no crash, no hang, no leak, no UB", the plan's own
 * invariants (hy_plan.h, README): every tensor on a tier; bytes per tier sum
 * to the model's bytes, each tier's bytes are its tensors'; streamed tensors
 * and only those have a group (their layer); full-resident streams nothing;
 * expert-streaming streams only expert tensors; attention streams only when
 * every FFN group does; the budget used is resident + pool + KV + compute +
 * overhead, computed without wrapping, and within the memory budget; a model
 * that fits (nothing forced) is full-resident; a forced mode is obeyed; the
 * budget given is at least the minimum reported (resident and expert plans);
 * a fixed lookahead is kept;
 * and a larger budget gives a plan again, with no more I/O per token in the
 * same mode, and no slower a predicted speed where the automatic choice
 * between expert- and dense-style streaming changes mode (it is made by
 * predicted speed: dense-style may read more and still be faster). A
 * refusal has a one-line message and leaves nothing allocated. */
#include "gguf/hy_gguf.h"
#include "plan/hy_plan.h"

#include <ggml.h>

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_assert.h"

typedef unsigned __int128 u128;

/* ---- input reader: missing bytes read as zero ------------------------------ */

typedef struct {
    const uint8_t *p;
    size_t n, o;
} rd;

static uint64_t rd_bytes(rd *r, int k) {
    uint64_t v = 0;
    for (int i = 0; i < k; i++) v |= (uint64_t)(r->o < r->n ? r->p[r->o++] : 0) << (8 * i);
    return v;
}
static unsigned rd8(rd *r) { return (unsigned)rd_bytes(r, 1); }
static unsigned rd16(rd *r) { return (unsigned)rd_bytes(r, 2); }
static uint32_t rd32(rd *r) { return (uint32_t)rd_bytes(r, 4); }
static uint64_t rd64(rd *r) { return rd_bytes(r, 8); }

/* a hyperparameter as the reader gives it: 0..INT_MAX, mostly small */
static int rd_hparam(rd *r) {
    unsigned sel = rd8(r) & 3;
    if (sel == 0) return 0;
    if (sel == 3) return (int)(rd32(r) & 0x7FFFFFFF);
    return (int)rd16(r);
}

/* ---- the structured description -------------------------------------------- */

static const char *const k_global[] = {"token_embd.weight", "output_norm.weight", "output.weight", "rope_freqs.weight",
                                       "token_types.weight", "output_norm.bias"};
static const char *const k_layer[] = {
    "attn_norm.weight",     "attn_q.weight",       "attn_k.weight",          "attn_v.weight",
    "attn_output.weight",   "attn_qkv.weight",     "ffn_norm.weight",        "ffn_gate.weight",
    "ffn_up.weight",        "ffn_down.weight",     "ffn_gate_inp.weight",    "ffn_gate_exps.weight",
    "ffn_up_exps.weight",   "ffn_down_exps.weight", "ffn_gate_up_exps.weight", "ffn_up_exps.bias",
    "ffn_gate_shexp.weight", "ffn_down_shexp.weight", "attn_q_norm.weight",   "layer_output_norm.weight",
};

static hy_model_desc *desc_from_struct(rd *r) {
    hy_model_desc *d = calloc(1, sizeof *d);
    ASSERT(d);
    snprintf(d->arch, sizeof d->arch, "llama");
    d->version = 3;
    d->alignment = 32;
    d->file_type = -1;
    d->n_layer = (int)(rd16(r) % 257); /* real models have up to a few hundred */
    d->n_embd = rd_hparam(r);
    d->n_ff = rd_hparam(r);
    d->n_head = rd_hparam(r);
    d->n_head_kv = rd_hparam(r);
    d->n_expert = rd_hparam(r);
    d->n_expert_used = rd_hparam(r);
    d->n_vocab = rd_hparam(r);
    d->n_ctx_train = rd_hparam(r);
    int64_t n = rd8(r) + 256 * (rd8(r) & 1); /* up to 511 tensors */
    d->tensors = calloc((size_t)(n ? n : 1), sizeof *d->tensors);
    ASSERT(d->tensors);
    uint64_t off = 64;
    d->data_offset = off;
    int64_t k = 0;
    for (int64_t i = 0; i < n && r->o < r->n; i++) {
        hy_tensor_info *t = &d->tensors[k];
        unsigned what = rd8(r);
        unsigned layer = rd16(r);
        /* size: a mantissa and a shift, so the planner sees bytes from 1 to ~2^46 */
        uint64_t size = (uint64_t)(rd16(r) + 1) << (rd8(r) % 31);
        int ne = 0;
        if (what & 0x80) {
            snprintf(t->name, sizeof t->name, "%s", k_global[what % (sizeof k_global / sizeof *k_global)]);
        } else {
            int l = d->n_layer ? (int)(layer % (unsigned)d->n_layer) : (int)(layer % 4);
            unsigned w = what % (sizeof k_layer / sizeof *k_layer + 1);
            if (w == sizeof k_layer / sizeof *k_layer) /* an old-style split expert: blk.L.ffn_up.E.weight */
                snprintf(t->name, sizeof t->name, "blk.%d.ffn_up.%u.weight", l, (layer >> 10) % 64);
            else snprintf(t->name, sizeof t->name, "blk.%d.%s", l, k_layer[w]);
            ne = (int)(rd8(r) % 65);
        }
        if (hy_model_find(d, t->name)) { /* names are unique */
            memset(t, 0, sizeof *t);
            continue;
        }
        t->type = GGML_TYPE_I8; /* 1-byte elements: any size is a valid shape */
        t->role = hy_role_of(t->name);
        t->layer = hy_layer_of(t->name);
        if (t->role == HY_ROLE_EXPERT && strstr(t->name, "_exps")) {
            if (ne == 0) ne = 1;
            size = (size + (uint64_t)ne - 1) / (uint64_t)ne * (uint64_t)ne;
            t->n_experts = ne;
            t->expert_stride = size / (uint64_t)ne;
            t->n_dims = 2;
            t->ne[0] = (int64_t)t->expert_stride;
            t->ne[1] = ne;
        } else {
            if (t->role == HY_ROLE_EXPERT) {
                t->n_experts = 1;
                t->expert_stride = size;
            }
            t->n_dims = 1;
            t->ne[0] = (int64_t)size;
            t->ne[1] = 1;
        }
        t->ne[2] = t->ne[3] = 1;
        t->size = size;
        t->offset = off;
        off += (size + 31) / 32 * 32;
        if (t->layer >= d->n_layer) d->n_layer = t->layer + 1; /* as the reader does */
        d->n_params += size;
        k++;
    }
    d->n_tensors = k;
    d->file_size = off;
    if (d->n_layer) {
        d->bytes_by_layer = calloc((size_t)d->n_layer, sizeof *d->bytes_by_layer);
        ASSERT(d->bytes_by_layer);
    }
    for (int64_t i = 0; i < d->n_tensors; i++) {
        const hy_tensor_info *t = &d->tensors[i];
        d->bytes_by_role[t->role] += t->size;
        if (t->layer >= 0) d->bytes_by_layer[t->layer] += t->size;
    }
    return d;
}

/* ---- checks ------------------------------------------------------------------ */

static bool streams_role(hy_role r) { return r == HY_ROLE_FFN || r == HY_ROLE_EXPERT || r == HY_ROLE_ATTN; }

static void check_plan(const hy_model_desc *d, const hy_plan_params *p, const hy_plan *pl) {
    ASSERT(pl->n_tensors == d->n_tensors && pl->tier && pl->group);
    ASSERT((unsigned)pl->mode < HY_MODE_COUNT);
    uint64_t total = 0, by_tier[HY_TIER_COUNT] = {0};
    bool any_attn_streams = false, all_ffn_stream = true, *grp = calloc((size_t)d->n_layer, 1);
    ASSERT(grp);
    for (int64_t i = 0; i < d->n_tensors; i++) {
        const hy_tensor_info *t = &d->tensors[i];
        hy_tier tier = pl->tier[i];
        ASSERT((unsigned)tier < HY_TIER_COUNT);
        if (tier == HY_TIER_GPU) ASSERT(p->gpu_budget > 0);
        total += t->size;
        by_tier[tier] += t->size;
        if (tier == HY_TIER_NVME) {
            /* a streamed tensor belongs to its layer's group */
            ASSERT(t->layer >= 0 && pl->group[i] == t->layer && streams_role(t->role));
            grp[t->layer] = true;
            if (t->role == HY_ROLE_ATTN) any_attn_streams = true;
            if (pl->mode == HY_MODE_EXPERT) ASSERT(t->role == HY_ROLE_EXPERT);
        } else {
            ASSERT(pl->group[i] == -1);
            if (tier == HY_TIER_RAM && t->role == HY_ROLE_FFN && t->layer >= 0) all_ffn_stream = false;
        }
    }
    int groups = 0;
    for (int l = 0; l < d->n_layer; l++) groups += grp[l];
    free(grp);
    /* a model with nothing that can stream (no FFN, expert or attention tensor in a layer) */
    bool streamable = false;
    for (int64_t i = 0; i < d->n_tensors; i++)
        streamable |= pl->tier[i] != HY_TIER_GPU && d->tensors[i].layer >= 0 && streams_role(d->tensors[i].role);
    for (int t = 0; t < HY_TIER_COUNT; t++) ASSERT(pl->bytes_tier[t] == by_tier[t]);
    ASSERT(by_tier[HY_TIER_GPU] + by_tier[HY_TIER_RAM] + by_tier[HY_TIER_NVME] == total);
    if (by_tier[HY_TIER_GPU]) ASSERT(by_tier[HY_TIER_GPU] <= p->gpu_budget);

    if (pl->mode == HY_MODE_RESIDENT) {
        ASSERT(by_tier[HY_TIER_NVME] == 0 && pl->pool_bytes == 0 && pl->io_bytes_per_token == 0 && groups == 0);
        ASSERT(p->force_mode != HY_MODE_DENSE_FFN && p->force_mode != HY_MODE_EXPERT);
    } else {
        ASSERT(p->force_mode != HY_MODE_RESIDENT);
        ASSERT(pl->n_groups == groups && pl->io_bytes_per_token <= by_tier[HY_TIER_NVME]);
        ASSERT(streamable && by_tier[HY_TIER_NVME] > 0 && groups > 0 && pl->pool_bytes > 0 && pl->max_group_bytes > 0);
    }
    if (pl->mode == HY_MODE_DENSE_FFN) {
        if (any_attn_streams) ASSERT(all_ffn_stream); /* FFN before attention */
        ASSERT(pl->io_bytes_per_token == by_tier[HY_TIER_NVME]);
        ASSERT(pl->lookahead >= 0 && pl->lookahead <= 64);
        if (p->lookahead >= 0) ASSERT(pl->lookahead == p->lookahead);
        ASSERT((u128)pl->pool_bytes == (u128)(pl->lookahead + 1) * pl->max_group_bytes);
    }
    if (p->force_mode == HY_MODE_DENSE_FFN) ASSERT(pl->mode == HY_MODE_DENSE_FFN);

    /* the budget: every part counted, nothing wrapped (the GPU tier, when used, takes its share of K/V) */
    if (p->gpu_budget == 0) ASSERT(pl->kv_bytes == hy_plan_kv_bytes(d, p->n_ctx));
    ASSERT(pl->compute_bytes == hy_plan_compute_bytes(d, p->n_ctx, p->n_batch));
    u128 used = (u128)by_tier[HY_TIER_RAM] + pl->pool_bytes + pl->kv_bytes + pl->compute_bytes + pl->overhead_bytes;
    ASSERT(used == (u128)pl->budget_used);
    ASSERT(pl->budget_used <= p->mem_budget);
    if (d->n_head > 0 && d->n_embd > 0 && p->n_ctx > 0 && p->gpu_budget == 0) {
        /* the KV estimate itself: n_ctx * layers * (K,V) * kv_heads * head_dim * f16, exact,
         * or saturated high when a hostile header makes it astronomical (never wrapped) */
        u128 kv_heads = (u128)(d->n_head_kv > 0 ? d->n_head_kv : d->n_head);
        u128 kv = (u128)p->n_ctx * (u128)d->n_layer * 2 * kv_heads * (u128)(d->n_embd / d->n_head) * 2;
        if (kv < ((u128)1 << 62)) ASSERT(kv == (u128)pl->kv_bytes);
        else ASSERT(pl->kv_bytes >= ((uint64_t)1 << 61));
    }
    /* the minimum reported is at most the budget of an accepted plan (for layer
     * streaming it is the least any choice needs with two groups in the pool, so a
     * plan forced to lookahead 0 — one group — may use less) */
    if (pl->mode != HY_MODE_DENSE_FFN || p->lookahead != 0) ASSERT(pl->min_budget <= p->mem_budget);
    ASSERT(isfinite(pl->pred_tok_s) && pl->pred_tok_s >= 0);
    /* the prediction: expected reads never above the routed bytes, a rate in [0, 1], times finite,
     * and a speed whenever a token touches anything */
    ASSERT(pl->pred_io_bytes <= pl->io_bytes_per_token);
    ASSERT(pl->pred_hit_rate >= 0 && pl->pred_hit_rate <= 1);
    ASSERT(isfinite(pl->pred_io_s) && isfinite(pl->pred_compute_s) && pl->pred_read_gbps > 0 && pl->pred_mem_gbps > 0);
    if (pl->pred_io_bytes || pl->pred_compute_bytes) ASSERT(pl->pred_tok_s > 0);
    if (pl->mode != HY_MODE_EXPERT) ASSERT(pl->pred_io_bytes == pl->io_bytes_per_token && pl->cache_slots == 0);
}

static int plan(const hy_model_desc *d, const hy_plan_params *p, hy_plan *out) {
    char err[512];
    err[0] = 0;
    int rc = hy_plan_make(d, p, out, err, sizeof err);
    if (getenv("FUZZ_PLAN_VERBOSE")) {
        fprintf(stderr, "model: %" PRId64 " tensors, %d layers, n_expert %d/%d, embd %d heads %d/%d\n", d->n_tensors,
                d->n_layer, d->n_expert_used, d->n_expert, d->n_embd, d->n_head, d->n_head_kv);
        fprintf(stderr, "params: budget %" PRIu64 " gpu %" PRIu64 " ctx %d batch %d lookahead %d force %d\n",
                p->mem_budget, p->gpu_budget, p->n_ctx, p->n_batch, p->lookahead, p->force_mode);
        if (rc) fprintf(stderr, "refused: %s\n", err);
        else
            fprintf(stderr,
                    "plan: %s RAM %" PRIu64 " NVMe %" PRIu64 " pool %" PRIu64 " kv %" PRIu64 " compute %" PRIu64
                    " used %" PRIu64 " min %" PRIu64 " lookahead %d groups %d io/token %" PRIu64 "\n",
                    hy_mode_name(out->mode), out->bytes_tier[HY_TIER_RAM], out->bytes_tier[HY_TIER_NVME],
                    out->pool_bytes, out->kv_bytes, out->compute_bytes, out->budget_used, out->min_budget,
                    out->lookahead, out->n_groups, out->io_bytes_per_token);
    }
    if (rc == 0) {
        check_plan(d, p, out);
    } else {
        ASSERT(rc < 0 && err[0] && !strchr(err, '\n'));
        ASSERT(!out->tier && !out->group);
    }
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    rd r = {data, size, 0};
    unsigned form = rd8(&r);
    hy_plan_params p = hy_plan_default_params();
    unsigned budget_sel = rd8(&r);
    uint64_t budget_raw = rd64(&r);
    unsigned ctx_sel = rd8(&r);
    /* the ranges the commands accept (run/serve/estimate: --ctx 0..2^24, --batch 1..2^24) */
    p.n_ctx = ctx_sel & 1 ? (int)(rd32(&r) % ((1u << 24) + 1)) : (int)rd16(&r);
    p.n_batch = ctx_sel & 2 ? (int)(rd32(&r) % ((1u << 24) + 1)) : (int)rd16(&r);
    p.lookahead = (int8_t)rd8(&r);
    if (p.lookahead < -1) p.lookahead = -1;
    p.force_mode = (int)(rd8(&r) % 4) - 1;
    p.seq_read_gbps = rd16(&r) / 100.0;
    p.mem_bw_gbps = rd16(&r) / 100.0;
    p.gpu_budget = (budget_sel & 0xC0) == 0xC0 ? rd64(&r) >> (budget_sel & 0x3F) : 0;
    unsigned grow = rd16(&r);
    /* earlier runs' storage ratios (hy_calib), per mode, from bits already read */
    p.read_scale[HY_MODE_DENSE_FFN] = budget_sel & 0x10 ? 0.5 + (grow % 16) * 0.25 : 0;
    p.read_scale[HY_MODE_EXPERT] = budget_sel & 0x20 ? 0.5 + ((grow >> 4) % 16) * 0.25 : 0;

    hy_model_desc *d = NULL;
    if (form & 1) {
        d = desc_from_struct(&r);
    } else {
        char err[512];
        if (hy_gguf_parse_buffer(data + r.o, size - r.o, size - r.o, &d, err, sizeof err) != 0) return 0;
    }

    uint64_t total = 0;
    for (int64_t i = 0; i < d->n_tensors; i++) total += d->tensors[i].size;
    /* budgets near the model's size are where the choices are made */
    u128 need = (u128)total + hy_plan_kv_bytes(d, p.n_ctx) + hy_plan_compute_bytes(d, p.n_ctx, p.n_batch) +
                ((uint64_t)48 << 20);
    switch (budget_sel & 3) {
    case 0: p.mem_budget = budget_raw; break;
    case 1: p.mem_budget = budget_raw >> (budget_raw & 63); break;
    default: {
        u128 b = need * (budget_raw & 0xFFFF) / 0x8000; /* 0 .. 2x what full-resident needs */
        p.mem_budget = b > UINT64_MAX ? UINT64_MAX : (uint64_t)b;
    }
    }

    hy_plan a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    if (plan(d, &p, &a) == 0) {
        /* full-resident whenever it fits and nothing is forced (a GPU tier, when the
         * budget makes one, also charges the GPU runtime's host memory to RAM) */
        u128 fit = need + (a.gpu_output ? HY_PLAN_GPU_HOST_OVERHEAD : 0);
        if (p.force_mode < 0 && fit <= p.mem_budget) ASSERT(a.mode == HY_MODE_RESIDENT);
        /* more budget: a plan again */
        hy_plan_params q = p;
        q.mem_budget = p.mem_budget + (p.mem_budget >> 4) * grow / 256 + grow;
        if (q.mem_budget < p.mem_budget) q.mem_budget = UINT64_MAX;
        ASSERT(plan(d, &q, &b) == 0);
        /* in one mode no more I/O per token; where the automatic choice between expert- and
         * dense-style streaming (made by predicted speed) changes mode, no slower a prediction */
        if (b.mode == a.mode || p.force_mode >= 0) ASSERT(b.io_bytes_per_token <= a.io_bytes_per_token);
        else ASSERT(b.pred_tok_s >= a.pred_tok_s * (1 - 1e-9));
        hy_plan_free(&b);
    }
    hy_plan_free(&a);
    hy_model_desc_free(d);
    return 0;
}
