/* Expert-streaming: after a layer's router has chosen, read exactly the chosen
 * experts' slices of that layer's expert tensors (never whole tensors), keep
 * hot slices in a bounded cache between tokens, and prefetch the experts the
 * co-activation statistics predict for the next layer while this one computes.
 *
 * Hook: the graph node "ffn_moe_topk-<layer>" holds the selected expert ids
 * (I32, [k, n_tokens]). We ask libllama to stop after it, read the ids, and
 * make every selected slice resident before the expert matmuls (mul_mat_id)
 * that follow it run. A batch of tokens reads each selected expert once: the
 * union of the batch's choices. mul_mat_id reads only the selected experts'
 * rows, so slices never read are never touched and the math is unchanged.
 * Safety net: a matmul over an expert tensor whose router we did not see in
 * this pass loads every expert of that layer first (correct, slower, warned).
 *
 * Slice e of a tensor is [offset + e*stride, offset + (e+1)*stride) in the
 * file, at the same offset within a page in memory (see hy_stream.c): it is
 * read page-aligned outward (a neighbour's edge page gets the same bytes it
 * already has) and released up to the nearest resident neighbour (a live
 * neighbour's bytes are never dropped). The memory is on transparent huge
 * pages, so a read commits up to one huge page past each end of the slice: the
 * cache charges every slice that much on top of its bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cache/hy_coact.h"
#include "cache/hy_xcache.h"
#include "ggml-backend-impl.h"
#include "plan/hy_plan.h"
#include "stream/hy_stream_int.h"
#include "util/hy_tensor.h"

#define MAX_XT 8 /* expert tensors per layer (gate, up, down, fused, biases) */

struct xkey {
    int state; /* G_IDLE, G_LOADING, G_READY */
    int n_tix;
    hy_io_ticket *tix[MAX_XT];
};

static int key_of(const hy_stream *s, int layer, int expert) { return layer * s->n_expert + expert; }

int hy_experts_init(hy_stream *s, const hy_model_desc *d, char *err, size_t errlen) {
    s->expert_mode = true;
    s->n_layer = d->n_layer;
    s->n_expert = d->n_expert;
    s->last_topk_layer = -1;
    int nk = d->n_layer * d->n_expert;
    s->xkeys = calloc((size_t)nk, sizeof *s->xkeys);
    s->layer_xentries = calloc((size_t)d->n_layer, sizeof *s->layer_xentries);
    s->topk_pass = calloc((size_t)d->n_layer, sizeof *s->topk_pass);
    uint64_t *sizes = calloc((size_t)nk, sizeof *sizes);
    if (!s->xkeys || !s->layer_xentries || !s->topk_pass || !sizes) {
        free(sizes);
        return hy_fail(err, errlen, "out of memory");
    }
    for (int l = 0; l < d->n_layer; l++) {
        s->layer_xentries[l] = malloc(sizeof(int) * (MAX_XT + 1));
        if (!s->layer_xentries[l]) {
            free(sizes);
            return hy_fail(err, errlen, "out of memory");
        }
        s->layer_xentries[l][0] = -1;
    }
    for (int i = 0; i < s->n_entries; i++) {
        const hy_tensor_info *ti = s->entries[i].info;
        int l = ti->layer;
        if (ti->role != HY_ROLE_EXPERT || l < 0 || l >= d->n_layer) continue;
        if (ti->n_experts != d->n_expert || ti->expert_stride == 0) {
            free(sizes);
            return hy_fail(err, errlen, "expert tensor '%s' has %d experts of %llu bytes; the model says %d",
                           ti->name, ti->n_experts, (unsigned long long)ti->expert_stride, d->n_expert);
        }
        int n = 0;
        while (s->layer_xentries[l][n] >= 0) n++;
        if (n >= MAX_XT) {
            free(sizes);
            return hy_fail(err, errlen, "layer %d has more than %d expert tensors", l, MAX_XT);
        }
        s->layer_xentries[l][n] = i;
        s->layer_xentries[l][n + 1] = -1;
        /* reading a slice into huge pages commits up to a huge page past each of
         * its ends (shared with neighbours, but count it: the budget is hard) */
        uint64_t extra = HY_PLAN_SLICE_OVERHEAD;
        for (int e = 0; e < d->n_expert; e++) sizes[key_of(s, l, e)] += ti->expert_stride + extra;
    }
    s->xc = hy_xcache_new(nk, sizes, s->pool_bytes, (hy_xc_policy)s->cache_policy, 64);
    free(sizes);
    if (!s->xc) return hy_fail(err, errlen, "out of memory");

    s->coact = hy_coact_new(d->n_layer, d->n_expert, d->n_expert_used, d->header_hash);
    if (!s->coact) return hy_fail(err, errlen, "out of memory");
    if (s->persist_stats && hy_coact_default_path(d->header_hash, s->coact_path, sizeof s->coact_path) == 0) {
        hy_coact *old = NULL;
        char why[HY_ERRLEN];
        FILE *f = fopen(s->coact_path, "r");
        if (f) {
            fclose(f);
            if (hy_coact_load(s->coact_path, d->header_hash, d->n_layer, d->n_expert, &old, why, sizeof why) == 0) {
                hy_coact_merge(s->coact, old);
                hy_coact_free(old);
                /* warm start: the cache's scores begin at the persisted frequencies */
                double toks = (double)hy_coact_tokens(s->coact);
                double w = toks > 64 ? 64 : toks; /* at most a half-life's worth of weight */
                for (int l = 0; l < d->n_layer; l++)
                    for (int e = 0; e < d->n_expert; e++)
                        hy_xcache_seed(s->xc, key_of(s, l, e), w * hy_coact_freq(s->coact, l, e), 0);
            } else {
                fprintf(stderr, "hypura: warning: ignoring co-activation statistics %s: %s\n", s->coact_path, why);
            }
        }
    }
    return 0;
}

void hy_experts_free(hy_stream *s) {
    if (!s->expert_mode) return;
    if (s->xkeys && s->io)
        for (int k = 0; k < s->n_layer * s->n_expert; k++)
            for (int j = 0; j < s->xkeys[k].n_tix; j++) {
                char err[HY_ERRLEN];
                hy_io_wait(s->io, s->xkeys[k].tix[j], err, sizeof err);
            }
    if (s->coact && s->persist_stats && s->coact_path[0] && hy_coact_tokens(s->coact) > 0) {
        char err[HY_ERRLEN];
        if (hy_coact_save(s->coact, s->coact_path, err, sizeof err))
            fprintf(stderr, "hypura: warning: could not save co-activation statistics: %s\n", err);
    }
    hy_coact_free(s->coact);
    hy_xcache_free(s->xc);
    if (s->layer_xentries)
        for (int l = 0; l < s->n_layer; l++) free(s->layer_xentries[l]);
    free(s->layer_xentries);
    free(s->xkeys);
    free(s->topk_pass);
    s->expert_mode = false;
}

static void fail(hy_stream *s, const char *what, const char *why) {
    if (s->failed) return;
    s->failed = true;
    snprintf(s->error, sizeof s->error, "%s: %s", what, why);
}

static uint64_t addr_off(const struct entry *e, uint64_t file_off) { return file_off - e->roff; }

/* page-cache variant: the slice's byte ranges in the mapping */
static void slice_madvise(hy_stream *s, int layer, int expert, int advice, bool inward) {
    for (const int *pi = s->layer_xentries[layer]; *pi >= 0; pi++) {
        struct entry *e = &s->entries[*pi];
        uint64_t f0 = e->info->offset + (uint64_t)expert * e->info->expert_stride;
        uint64_t f1 = f0 + e->info->expert_stride;
        uint64_t r0 = inward ? hy_round_up(f0, PAGE) : f0 / PAGE * PAGE;
        uint64_t r1 = inward ? f1 / PAGE * PAGE : hy_round_up(f1, PAGE);
        if (r1 > r0) madvise(e->dst + addr_off(e, r0), r1 - r0, advice);
    }
}

static void release_key(hy_stream *s, int key);

/* a slice whose read failed is never kept: out of the cache, pages given back,
 * so a later pass reads it again instead of computing on what landed */
static void drop_failed_key(hy_stream *s, int key) {
    struct xkey *x = &s->xkeys[key];
    for (int j = 0; j < x->n_tix; j++) {
        char err[HY_ERRLEN];
        hy_io_wait(s->io, x->tix[j], err, sizeof err);
    }
    x->n_tix = 0;
    x->state = G_READY; /* release_key's view: nothing in flight */
    hy_xcache_remove(s->xc, key);
    release_key(s, key);
}

static void issue_key(hy_stream *s, int layer, int expert) {
    struct xkey *x = &s->xkeys[key_of(s, layer, expert)];
    if (x->state != G_IDLE) return;
    x->n_tix = 0;
    if (s->pagecache) {
        slice_madvise(s, layer, expert, MADV_WILLNEED, false);
        x->state = G_LOADING;
        return;
    }
    for (const int *pi = s->layer_xentries[layer]; *pi >= 0; pi++) {
        struct entry *e = &s->entries[*pi];
        uint64_t f0 = e->info->offset + (uint64_t)expert * e->info->expert_stride;
        uint64_t f1 = f0 + e->info->expert_stride;
        uint64_t r0 = f0 / PAGE * PAGE, r1 = hy_round_up(f1, PAGE);
        if (r1 > s->file_size) r1 = s->file_size;
        char err[HY_ERRLEN];
        hy_io_ticket *t = hy_io_read_async(s->io, e->dst + addr_off(e, r0), r0, r1 - r0, err, sizeof err);
        if (!t) {
            fail(s, e->info->name, err);
            drop_failed_key(s, key_of(s, layer, expert));
            return;
        }
        x->tix[x->n_tix++] = t;
    }
    x->state = G_LOADING;
}

static void wait_key(hy_stream *s, int key) {
    struct xkey *x = &s->xkeys[key];
    if (x->state != G_LOADING) return;
    double t0 = hy_now();
    if (s->pagecache) {
        /* fault the slice in now (reads what the page cache lacks) so that
         * compute never stalls inside a matmul */
        slice_madvise(s, key / s->n_expert, key % s->n_expert, MADV_POPULATE_READ, false);
    }
    bool bad = false;
    for (int j = 0; j < x->n_tix; j++) {
        char err[HY_ERRLEN];
        if (hy_io_wait(s->io, x->tix[j], err, sizeof err)) {
            /* tickets are issued in the order of the layer's expert tensors */
            char what[HY_ERRLEN];
            snprintf(what, sizeof what, "reading expert %d of '%s'", key % s->n_expert,
                     s->entries[s->layer_xentries[key / s->n_expert][j]].info->name);
            fail(s, what, err);
            bad = true;
        }
    }
    x->n_tix = 0;
    x->state = G_READY;
    double dt = hy_now() - t0;
    s->st.stall_s += dt;
    if (bad) drop_failed_key(s, key);
}

/* After a failed pass (hy_stream_clear_error): slices it issued are waited for,
 * and one whose read failed is dropped rather than found by the next request. */
void hy_experts_settle(hy_stream *s) {
    if (s->pagecache) return; /* no reads of ours in flight */
    for (int key = 0; key < s->n_layer * s->n_expert; key++) {
        struct xkey *x = &s->xkeys[key];
        if (x->state != G_LOADING) continue;
        bool bad = false;
        for (int j = 0; j < x->n_tix; j++) {
            char err[HY_ERRLEN];
            if (hy_io_wait(s->io, x->tix[j], err, sizeof err)) bad = true;
        }
        x->n_tix = 0;
        x->state = G_READY;
        if (bad) drop_failed_key(s, key);
    }
}

static void release_key(hy_stream *s, int key) {
    struct xkey *x = &s->xkeys[key];
    wait_key(s, key); /* pages may not go while a read still lands in them */
    int layer = key / s->n_expert, expert = key % s->n_expert;
    if (s->pagecache) { /* drop our mapping of it; the page cache keeps it until the kernel needs the memory */
        slice_madvise(s, layer, expert, MADV_DONTNEED, true);
        x->state = G_IDLE;
        return;
    }
    x->state = G_IDLE;
    /* give back everything between the nearest resident (or loading) neighbours:
     * pages shared with a neighbour that is gone are dropped too, so at most the
     * two pages shared with live neighbours stay committed */
    int lo = expert, hi = expert;
    while (lo > 0 && s->xkeys[key - (expert - lo) - 1].state == G_IDLE && !hy_xcache_resident(s->xc, key - (expert - lo) - 1)) lo--;
    while (hi < s->n_expert - 1 && s->xkeys[key + (hi - expert) + 1].state == G_IDLE && !hy_xcache_resident(s->xc, key + (hi - expert) + 1)) hi++;
    for (const int *pi = s->layer_xentries[layer]; *pi >= 0; pi++) {
        struct entry *e = &s->entries[*pi];
        uint64_t f0 = e->info->offset + (uint64_t)lo * e->info->expert_stride;
        uint64_t f1 = e->info->offset + (uint64_t)(hi + 1) * e->info->expert_stride;
        uint8_t *a0 = lo == 0 ? e->dst : e->dst + addr_off(e, hy_round_up(f0, PAGE));
        uint8_t *a1 = hi == s->n_expert - 1 ? e->dst + e->span : e->dst + addr_off(e, f1 / PAGE * PAGE);
        if (a1 > a0) madvise(a0, (size_t)(a1 - a0), MADV_DONTNEED);
    }
}

/* make key resident (issue its read), evicting by the cache's policy */
static void admit(hy_stream *s, int key, bool prefetched) {
    if (hy_xcache_resident(s->xc, key)) return;
    int victims[256];
    uint64_t need = hy_xcache_size(s->xc, key); /* bytes plus the huge-page allowance */
    int layer = key / s->n_expert;
    bool fits = false;
    int n;
    do {
        n = hy_xcache_make_room(s->xc, need, victims, 256, &fits);
        for (int i = 0; i < n; i++) release_key(s, victims[i]);
    } while (!fits && n == 256);
    /* !fits: everything left is pinned, the layer needs more than the cache (the
     * plan sizes it for a whole layer, so only a hand-set pool gets here): the
     * slice is read anyway, over the cache's capacity, rather than computed wrong */
    hy_xcache_insert(s->xc, key, prefetched, s->tick);
    issue_key(s, layer, key % s->n_expert);
}

static void unpin_all(hy_stream *s) {
    for (int k = 0; k < s->n_layer * s->n_expert; k++) hy_xcache_pin(s->xc, k, false);
}

static int parse_layer(const char *name, const char *prefix) {
    size_t n = strlen(prefix);
    if (strncmp(name, prefix, n)) return -1;
    char *end;
    long l = strtol(name + n, &end, 10);
    return (*end == 0 && l >= 0 && l < 65536) ? (int)l : -1;
}

static void on_router(hy_stream *s, struct ggml_tensor *t, int layer) {
    if (layer >= s->n_layer || t->type != GGML_TYPE_I32 || !t->data || !t->buffer) return;
    int k = (int)t->ne[0], n_tok = (int)t->ne[1];
    /* a router computed on the GPU: its choices are copied to the host first */
    char *host;
    const char *base = hy_tensor_host_data(t, &host);
    if (!base) {
        fail(s, "expert streaming", "out of memory");
        return;
    }
    if (layer <= s->last_topk_layer) s->pass_id++; /* a new forward pass */
    if (layer == 0 || s->last_topk_layer < 0 || layer <= s->last_topk_layer) s->tick += (uint64_t)n_tok;
    s->last_topk_layer = layer;
    s->topk_pass[layer] = s->pass_id + 1;
    unpin_all(s); /* the previous layer's experts have been computed */

    /* the union of the batch's choices, each expert once */
    bool *want = calloc((size_t)s->n_expert, sizeof *want);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)k * (size_t)(n_tok > 0 ? n_tok : 1));
    if (!want || !ids) {
        free(want);
        free(ids);
        free(host);
        fail(s, "expert streaming", "out of memory");
        return;
    }
    for (int j = 0; j < n_tok; j++) {
        const int32_t *row = (const int32_t *)(base + (size_t)j * t->nb[1]);
        for (int i = 0; i < k; i++) {
            ids[j * k + i] = row[i];
            if (row[i] >= 0 && row[i] < s->n_expert) want[row[i]] = true;
        }
    }
    free(host);
    hy_coact_record(s->coact, layer, ids, k, n_tok);
    uint64_t layer_bytes = 0;
    for (const int *pi = s->layer_xentries[layer]; *pi >= 0; pi++) layer_bytes += s->entries[*pi].info->size;
    s->whole_layer_bytes_read_equiv += layer_bytes;
    uint64_t slice = 0;
    for (const int *pi = s->layer_xentries[layer]; *pi >= 0; pi++) slice += s->entries[*pi].info->expert_stride;
    for (int e = 0; e < s->n_expert; e++)
        if (want[e]) {
            int key = key_of(s, layer, e);
            hy_xcache_access(s->xc, key, s->tick);
            hy_xcache_pin(s->xc, key, true);
            s->routed_bytes += slice;
        }
    for (int e = 0; e < s->n_expert; e++)
        if (want[e]) admit(s, key_of(s, layer, e), false);

    /* speculative: the next layer's likely experts, read while this layer computes;
     * only into room held by slices that score below what they replace */
    if (s->prefetch_experts && layer + 1 < s->n_layer && n_tok == 1) {
        int32_t pred[16];
        int m = k + 1 < 16 ? k + 1 : 16;
        int np = hy_coact_predict_next(s->coact, layer, ids, k, pred, m);
        for (int i = 0; i < np; i++) {
            int key = key_of(s, layer + 1, pred[i]);
            if (pred[i] < 0 || pred[i] >= s->n_expert || hy_xcache_resident(s->xc, key)) continue;
            double floor = hy_xcache_score(s->xc, key, s->tick);
            if (!hy_xcache_can_take(s->xc, key, floor + 1e-9, s->tick)) continue;
            admit(s, key, true);
        }
    }
    /* the misses were queued first; the speculative reads queue behind them and
     * keep the device busy while this layer's experts compute */
    for (int e = 0; e < s->n_expert; e++)
        if (want[e]) wait_key(s, key_of(s, layer, e));
    free(want);
    free(ids);
}

/* safety net: a use of layer's experts without its router seen in this pass */
static void load_whole_layer(hy_stream *s, int layer) {
    if (!s->warned_fallback) {
        fprintf(stderr, "hypura: warning: no router output seen for layer %d; reading all of its experts\n", layer);
        s->warned_fallback = true;
    }
    for (int e = 0; e < s->n_expert; e++) {
        int key = key_of(s, layer, e);
        hy_xcache_access(s->xc, key, s->tick);
        hy_xcache_pin(s->xc, key, true);
    }
    for (int e = 0; e < s->n_expert; e++) admit(s, key_of(s, layer, e), false);
    for (int e = 0; e < s->n_expert; e++) wait_key(s, key_of(s, layer, e));
    s->topk_pass[layer] = s->pass_id + 1;
}

bool hy_experts_eval(hy_stream *s, struct ggml_tensor *t, bool ask, bool *handled) {
    *handled = true;
    int layer = parse_layer(t->name, "ffn_moe_topk-");
    if (layer >= 0) {
        /* a layer whose experts are all on the GPU tier: nothing to read */
        if (layer < s->n_layer && s->layer_xentries[layer][0] < 0) return ask ? false : true;
        if (ask) return true;
        on_router(s, t, layer);
        return true; /* never false: a failure aborts at the next node (hy_stream_eval_cb) */
    }
    for (int i = 0; i < GGML_MAX_SRC; i++) {
        struct entry *e = hy_stream_entry_of(s, t->src[i]);
        if (!e) continue;
        int l = e->info->layer;
        if (ask && l >= 0 && l < s->n_layer && s->topk_pass[l] != s->pass_id + 1) load_whole_layer(s, l);
    }
    return ask ? false : true;
}

void hy_experts_stats(const hy_stream *s, hy_stream_stats *st) {
    hy_xcache_stats cs;
    hy_xcache_get_stats(s->xc, &cs);
    st->experts = true;
    st->x_hits = cs.hits;
    st->x_misses = cs.misses;
    st->x_evictions = cs.evictions;
    st->x_prefetches = cs.prefetches;
    st->x_prefetch_hits = cs.prefetch_hits;
    st->x_cache_bytes = cs.used;
    st->x_cache_capacity = cs.capacity;
    st->x_whole_bytes = s->whole_layer_bytes_read_equiv;
    st->x_routed_bytes = s->routed_bytes;
    st->x_tokens = s->tick;
    st->x_policy = hy_xcache_policy_name((hy_xc_policy)s->cache_policy);
    st->passes = s->pass_id + (s->last_topk_layer >= 0 ? 1 : 0);
    if (s->pagecache) {
        st->bytes_read = hy_io_read_bytes() - s->read_bytes0; /* no tickets to count: what the kernel read */
        st->io_backend = "page cache (mmap + MADV_WILLNEED)";
        st->direct = false;
    }
    st->stall_s = s->st.stall_s;
}
