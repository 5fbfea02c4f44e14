/* Expert-streaming: after a layer's router has chosen, read exactly the chosen
 * experts' slices of that layer's expert tensors (never whole tensors), keep
 * hot slices in a bounded cache between tokens, and prefetch the experts the
 * co-activation statistics predict for the next layer while this one computes.
 *
 * Hook: the graph node "ffn_moe_topk-<layer>" holds the selected expert ids
 * (I32, [k, n_tokens]). We ask libllama to stop after it, read the ids, and
 * make every selected slice resident before the expert matmuls (mul_mat_id)
 * that follow it run. A batch of tokens reads each selected expert once: the
 * union of the batch's choices.
 *
 * Where cached slices live (direct I/O, the default): packed slot arenas. Each
 * kind of expert tensor (gate, up, down, their biases: hy_plan_xkinds) has one
 * arena of n_slots slots; a cached expert (layer, e) holds the same slot s in
 * every arena. Right before a node that reads a layer's expert tensor runs
 * (mul_mat_id, or add_id for per-expert biases), that node is pointed at the
 * arena: the tensor's data, its expert dimension (n_slots) and stride (the
 * slot pitch) are swapped, and its ids source is replaced by a copy of the
 * router's choice with each expert id mapped to its slot. After the node, all
 * of it is put back. Every other reader of the router's choice (the routing
 * weights' get_rows, a scale's get_rows) still sees the expert ids. mul_mat_id
 * and add_id compute each output row from the selected expert's rows alone, so
 * the same bytes give the same bits wherever they sit (bit-identity is tested).
 * Slots are reused, never given back: the cache commits what it is charged
 * (slots, plus one partly used huge page per arena), on huge pages, with no
 * page fault or zeroing after the first use of a slot. A slice is read
 * page-aligned into its slot; its bytes begin at its tensor's offset past an
 * aligned file offset (slice_home), where the matmul looks for them: slices of
 * a size that is a multiple of the alignment are never moved.
 *
 * --io pagecache (the peers' variant): the file is mapped over the expert
 * tensors; routed slices are advised WILLNEED and populated, released slices
 * dropped from the mapping; the matmuls read the mapping (no swap). Its cache
 * counts slots the same way.
 *
 * Prefetch (pre-gating, below) never makes the cache read more than no cache
 * would, but for the guesses still in flight: reads = misses + prefetches and
 * an uncached reader reads hits + misses, so a speculative read is issued only
 * while the wrong guesses so far (evicted unused) are no more than the hits the
 * cache made by itself; and it is turned off for the run once wrong guesses
 * outnumber right ones over at least 64 prefetches. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cache/hy_coact.h"
#include "cache/hy_policy.h"
#include "cache/hy_xcache.h"
#include "ggml-backend-impl.h"
#include "plan/hy_plan.h"
#include "stream/hy_stream_int.h"
#include "util/hy_tensor.h"

#define MAX_XT HY_PLAN_MAX_XKINDS /* expert tensors per layer (gate, up, down, fused, biases) */

struct xkey {
    int state; /* G_IDLE, G_LOADING, G_READY */
    int slot;  /* while cached (loading or ready), else -1 */
    int n_tix;
    hy_io_ticket *tix[MAX_XT];
    bool idle; /* its reads went to the I/O's idle queue (a guess two layers ahead) */
};

static int key_of(const hy_stream *s, int layer, int expert) { return layer * s->n_expert + expert; }

static void fail(hy_stream *s, const char *what, const char *why) {
    if (s->failed) return;
    s->failed = true;
    snprintf(s->error, sizeof s->error, "%s: %s", what, why);
}

static int make_arenas(hy_stream *s, const hy_xkind *kinds, char *err, size_t errlen) {
    for (int k = 0; k < s->n_kinds; k++) {
        struct xarena *a = &s->arenas[k];
        a->pitch = kinds[k].pitch;
        a->map_len = (size_t)a->pitch * (size_t)s->n_slots + HUGE_ALIGN;
        /* address space; slots commit as they are first filled, and stay */
        a->map = mmap(NULL, a->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (a->map == MAP_FAILED) {
            a->map = NULL;
            return hy_fail(err, errlen, "cannot reserve %zu bytes for the expert cache", a->map_len);
        }
        a->base = (uint8_t *)(((uintptr_t)a->map + HUGE_ALIGN - 1) & ~(uintptr_t)(HUGE_ALIGN - 1));
        madvise(a->map, a->map_len, MADV_HUGEPAGE);
    }
    return 0;
}

int hy_experts_init(hy_stream *s, const hy_model_desc *d, const hy_plan *plan, char *err, size_t errlen) {
    s->expert_mode = true;
    s->n_layer = d->n_layer;
    s->n_expert = d->n_expert;
    s->last_topk_layer = -1;
    int nk = d->n_layer * d->n_expert;
    s->xkeys = calloc((size_t)nk, sizeof *s->xkeys);
    s->layer_xentries = calloc((size_t)d->n_layer, sizeof *s->layer_xentries);
    s->last_xlayer = -1;
    s->topk_pass = calloc((size_t)d->n_layer, sizeof *s->topk_pass);
    s->pinned = calloc((size_t)d->n_expert, sizeof *s->pinned);
    s->xpf = calloc((size_t)d->n_expert, sizeof *s->xpf);
    s->xpf2 = calloc((size_t)d->n_expert, sizeof *s->xpf2);
    if (!s->xkeys || !s->layer_xentries || !s->topk_pass || !s->pinned || !s->xpf || !s->xpf2)
        return hy_fail(err, errlen, "out of memory");
    for (int i = 0; i < nk; i++) s->xkeys[i].slot = -1;
    for (int l = 0; l < d->n_layer; l++) {
        s->layer_xentries[l] = malloc(sizeof(int) * (MAX_XT + 1));
        if (!s->layer_xentries[l]) return hy_fail(err, errlen, "out of memory");
        s->layer_xentries[l][0] = -1;
    }
    hy_xkind kinds[HY_PLAN_MAX_XKINDS];
    s->n_kinds = hy_plan_xkinds(d, plan->tier, kinds, HY_PLAN_MAX_XKINDS);
    if (s->n_kinds <= 0 || s->n_kinds != plan->x_kinds)
        return hy_fail(err, errlen, "the plan's expert tensors do not match the model's");
    for (int i = 0; i < s->n_entries; i++) {
        struct entry *en = &s->entries[i];
        const hy_tensor_info *ti = en->info;
        int l = ti->layer;
        en->xkind = -1;
        if (ti->role != HY_ROLE_EXPERT || l < 0 || l >= d->n_layer) continue;
        if (ti->n_experts != d->n_expert || ti->expert_stride == 0)
            return hy_fail(err, errlen, "expert tensor '%s' has %d experts of %llu bytes; the model says %d", ti->name,
                           ti->n_experts, (unsigned long long)ti->expert_stride, d->n_expert);
        en->xkind = hy_plan_xkind_of(kinds, s->n_kinds, ti->name);
        if (en->xkind < 0) return hy_fail(err, errlen, "expert tensor '%s' has no arena", ti->name);
        int n = 0;
        while (s->layer_xentries[l][n] >= 0) n++;
        if (n >= MAX_XT) return hy_fail(err, errlen, "layer %d has more than %d expert tensors", l, MAX_XT);
        s->layer_xentries[l][n] = i;
        s->layer_xentries[l][n + 1] = -1;
        if (l > s->last_xlayer) s->last_xlayer = l;
    }
    /* the slots: the plan's, or what a hand-set pool holds; never fewer than one layer */
    s->slot_bytes = plan->x_slot_bytes;
    s->n_slots = plan->x_slots;
    if (s->pool_bytes != plan->pool_bytes && s->slot_bytes > 0) {
        uint64_t fixed = (uint64_t)s->n_kinds * HY_PLAN_XARENA_TAIL;
        s->n_slots = s->pool_bytes > fixed ? (int)((s->pool_bytes - fixed) / s->slot_bytes) : 0;
    }
    if (s->n_slots < d->n_expert)
        return hy_fail(err, errlen, "the expert cache holds %d experts; one layer has %d", s->n_slots, d->n_expert);
    s->slot_key = malloc(sizeof(int) * (size_t)s->n_slots);
    s->free_slots = malloc(sizeof(int) * (size_t)s->n_slots);
    if (!s->slot_key || !s->free_slots) return hy_fail(err, errlen, "out of memory");
    for (int i = 0; i < s->n_slots; i++) {
        s->slot_key[i] = -1;
        s->free_slots[i] = s->n_slots - 1 - i; /* pop lowest first: the arenas commit from their start */
    }
    s->n_free = s->n_slots;
    /* a slot's pitch leaves one page for the read's page-aligned start */
    if (!s->pagecache && hy_io_alignment(s->io) > PAGE)
        return hy_fail(err, errlen, "direct I/O here needs %zu-byte alignment; the expert cache's slots allow %u",
                       hy_io_alignment(s->io), PAGE);
    if (!s->pagecache && make_arenas(s, kinds, err, errlen)) return -1;

    /* the cache's unit is a slot */
    uint64_t *sizes = malloc(sizeof *sizes * (size_t)nk);
    if (!sizes) return hy_fail(err, errlen, "out of memory");
    for (int i = 0; i < nk; i++) sizes[i] = 1;
    s->xc = hy_xcache_new(nk, sizes, (uint64_t)s->n_slots, (hy_xc_policy)s->cache_policy, 64);
    for (int p = 0; p < 2 && s->persist_stats; p++)
        s->shadow[p] = hy_xcache_new(nk, sizes, (uint64_t)s->n_slots, (hy_xc_policy)p, 64);
    free(sizes);
    if (!s->xc || (s->persist_stats && (!s->shadow[0] || !s->shadow[1]))) return hy_fail(err, errlen, "out of memory");
    if (s->persist_stats && hy_policy_path(d->model_id, s->policy_path, sizeof s->policy_path)) s->policy_path[0] = 0;

    s->coact = hy_coact_new(d->n_layer, d->n_expert, d->n_expert_used, d->model_id);
    if (!s->coact) return hy_fail(err, errlen, "out of memory");
    if (s->persist_stats && hy_coact_default_path(d->model_id, s->coact_path, sizeof s->coact_path) == 0) {
        hy_coact *old = NULL;
        char why[HY_ERRLEN];
        FILE *f = fopen(s->coact_path, "r");
        if (f) {
            fclose(f);
            if (hy_coact_load(s->coact_path, d->model_id, d->n_layer, d->n_expert, &old, why, sizeof why) == 0) {
                hy_coact_merge(s->coact, old);
                hy_coact_free(old);
                /* warm start: the cache's scores begin at the persisted frequencies */
                double toks = (double)hy_coact_tokens(s->coact);
                double w = toks > 64 ? 64 : toks; /* at most a half-life's worth of weight */
                for (int l = 0; l < d->n_layer; l++)
                    for (int e = 0; e < d->n_expert; e++) {
                        double c = w * hy_coact_freq(s->coact, l, e);
                        hy_xcache_seed(s->xc, key_of(s, l, e), c, 0);
                        for (int p = 0; p < 2; p++) hy_xcache_seed(s->shadow[p], key_of(s, l, e), c, 0);
                    }
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
    if (s->policy_path[0] && s->shadow_accesses > 0) {
        hy_policy_record r;
        hy_policy_load(s->policy_path, s->desc->model_id, &r); /* a missing or bad one starts from zero */
        r.accesses += s->shadow_accesses;
        for (int p = 0; p < 2; p++) r.hits[p] += s->shadow_hits[p];
        char err[HY_ERRLEN];
        if (hy_policy_save(s->policy_path, s->desc->model_id, &r, err, sizeof err))
            fprintf(stderr, "hypura: warning: could not save the cache policies' measurement: %s\n", err);
    }
    for (int p = 0; p < 2; p++) hy_xcache_free(s->shadow[p]);
    for (int k = 0; k < s->n_kinds; k++)
        if (s->arenas[k].map) munmap(s->arenas[k].map, s->arenas[k].map_len);
    hy_coact_free(s->coact);
    hy_xcache_free(s->xc);
    if (s->layer_xentries)
        for (int l = 0; l < s->n_layer; l++) free(s->layer_xentries[l]);
    free(s->layer_xentries);
    free(s->xkeys);
    free(s->topk_pass);
    free(s->pinned);
    free(s->xpf);
    free(s->xpf2);
    free(s->slot_key);
    free(s->free_slots);
    for (int i = 0; i < HY_PLAN_MAX_XKINDS; i++) free(s->sw[i].xids_buf);
    s->expert_mode = false;
}

/* slice e of entry en in the file */
static uint64_t slice_off(const struct entry *en, int expert) {
    return en->info->offset + (uint64_t)expert * en->info->expert_stride;
}

/* page-cache variant: the slice's byte ranges in the mapping */
static void slice_madvise(hy_stream *s, int layer, int expert, int advice, bool inward) {
    for (const int *pi = s->layer_xentries[layer]; *pi >= 0; pi++) {
        struct entry *e = &s->entries[*pi];
        uint64_t f0 = slice_off(e, expert);
        uint64_t f1 = f0 + e->info->expert_stride;
        uint64_t r0 = inward ? hy_round_up(f0, PAGE) : f0 / PAGE * PAGE;
        uint64_t r1 = inward ? f1 / PAGE * PAGE : hy_round_up(f1, PAGE);
        if (r1 > r0) madvise(e->dst + (r0 - e->roff), r1 - r0, advice);
    }
}

/* where slice `expert` of entry en lands in its slot: the aligned start of the read */
static uint8_t *slot_addr(hy_stream *s, const struct entry *en, int slot) {
    const struct xarena *a = &s->arenas[en->xkind];
    return a->base + (size_t)slot * a->pitch;
}

/* Where a slice of entry en sits in its slot once read: as far past the slot's
 * start as the tensor's first byte is past an aligned offset in the file. A
 * slice's own offset is that of the tensor plus whole slices, so when the slice
 * size is a multiple of the alignment (Q4_K and most quantized expert shapes)
 * every slice of the tensor lands there already and nothing is moved (moving
 * each read slice down to the slot's start cost the compute thread ~7 % of an
 * 8-sequence step: ~1 GB memmove'd per step). The matmul sees the arena from
 * this offset (swap_in); a slot's pitch leaves a page for it. */
static uint64_t slice_home(const hy_stream *s, const struct entry *en) {
    uint64_t al = hy_io_alignment(s->io);
    return al > 1 ? en->info->offset % al : 0;
}

static void release_key(hy_stream *s, int key);

/* a slice whose read failed is never kept: out of the cache, its slot freed,
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

static void issue_key(hy_stream *s, int key, bool idle) {
    struct xkey *x = &s->xkeys[key];
    int layer = key / s->n_expert, expert = key % s->n_expert;
    if (x->state != G_IDLE) return;
    x->n_tix = 0;
    x->state = G_LOADING;
    x->idle = idle && !s->pagecache;
    if (s->pagecache) {
        slice_madvise(s, layer, expert, MADV_WILLNEED, false);
        return;
    }
    uint64_t al = hy_io_alignment(s->io);
    for (const int *pi = s->layer_xentries[layer]; *pi >= 0; pi++) {
        struct entry *e = &s->entries[*pi];
        uint64_t f0 = slice_off(e, expert), f1 = f0 + e->info->expert_stride;
        uint64_t r0 = f0 / al * al, r1 = hy_round_up(f1, al);
        if (r1 > s->file_size) r1 = s->file_size; /* a read may end at EOF unaligned */
        char err[HY_ERRLEN];
        hy_io_ticket *t = x->idle ? hy_io_read_async_idle(s->io, slot_addr(s, e, x->slot), r0, r1 - r0, err, sizeof err)
                                  : hy_io_read_async(s->io, slot_addr(s, e, x->slot), r0, r1 - r0, err, sizeof err);
        if (!t) {
            fail(s, e->info->name, err);
            drop_failed_key(s, key);
            return;
        }
        x->tix[x->n_tix++] = t;
    }
}

static void wait_key(hy_stream *s, int key) {
    struct xkey *x = &s->xkeys[key];
    if (x->state != G_LOADING) return;
    double t0 = hy_now();
    int layer = key / s->n_expert, expert = key % s->n_expert;
    if (s->pagecache) {
        /* fault the slice in now (reads what the page cache lacks) so that
         * compute never stalls inside a matmul */
        slice_madvise(s, layer, expert, MADV_POPULATE_READ, false);
    }
    bool bad = false;
    for (int j = 0; j < x->n_tix; j++) {
        char err[HY_ERRLEN];
        if (hy_io_wait(s->io, x->tix[j], err, sizeof err)) {
            /* tickets are issued in the order of the layer's expert tensors */
            char what[HY_ERRLEN];
            snprintf(what, sizeof what, "reading expert %d of '%s'", expert,
                     s->entries[s->layer_xentries[layer][j]].info->name);
            fail(s, what, err);
            bad = true;
        }
    }
    int n_tix = x->n_tix;
    x->n_tix = 0;
    x->state = G_READY;
    if (bad) {
        drop_failed_key(s, key);
    } else if (!s->pagecache && n_tix > 0) {
        /* the read started at the aligned offset below the slice: a slice whose
         * offset past it differs from its tensor's moves to where the tensor's sit */
        uint64_t al = hy_io_alignment(s->io);
        for (const int *pi = s->layer_xentries[layer]; *pi >= 0; pi++) {
            struct entry *e = &s->entries[*pi];
            uint64_t f0 = slice_off(e, expert), lead = f0 - f0 / al * al, home = slice_home(s, e);
            uint8_t *dst = slot_addr(s, e, x->slot);
            if (lead != home) memmove(dst + home, dst + lead, e->info->expert_stride);
        }
    }
    s->st.stall_s += hy_now() - t0;
}

static void release_key(hy_stream *s, int key) {
    struct xkey *x = &s->xkeys[key];
    if (x->state == G_IDLE) return;
    wait_key(s, key); /* a slot may not be reused while a read still lands in it */
    if (s->pagecache) /* drop our mapping of it; the page cache keeps it until the kernel needs the memory */
        slice_madvise(s, key / s->n_expert, key % s->n_expert, MADV_DONTNEED, true);
    x->state = G_IDLE;
    if (x->slot >= 0) {
        s->slot_key[x->slot] = -1;
        s->free_slots[s->n_free++] = x->slot;
        x->slot = -1;
    }
}

/* make key resident (issue its read), evicting by the cache's policy */
/* a slice whose reads wait in the idle queue is needed sooner now: to the ordinary queue */
static void promote_key(hy_stream *s, int key) {
    struct xkey *x = &s->xkeys[key];
    if (x->state != G_LOADING || !x->idle) return;
    for (int j = 0; j < x->n_tix; j++) hy_io_promote(s->io, x->tix[j]);
    x->idle = false;
}

static void admit(hy_stream *s, int key, bool prefetched, bool idle) {
    if (hy_xcache_resident(s->xc, key)) return;
    int victims[64];
    bool fits = false;
    int n;
    do {
        n = hy_xcache_make_room(s->xc, 1, victims, 64, &fits);
        for (int i = 0; i < n; i++) release_key(s, victims[i]);
    } while (!fits && n == 64);
    if (!fits || s->n_free == 0) {
        /* every slot is pinned by the layer being computed: the plan gives at
         * least one layer's experts, so only a broken invariant gets here */
        fail(s, "expert cache", "no free slot for a routed expert");
        return;
    }
    struct xkey *x = &s->xkeys[key];
    x->slot = s->free_slots[--s->n_free];
    s->slot_key[x->slot] = key;
    hy_xcache_insert(s->xc, key, prefetched, s->tick);
    issue_key(s, key, idle);
}

static void unpin_all(hy_stream *s) {
    for (int i = 0; i < s->n_pinned; i++) {
        hy_xcache_pin(s->xc, s->pinned[i], false);
        for (int p = 0; p < 2; p++) hy_xcache_pin(s->shadow[p], s->pinned[i], false);
    }
    s->n_pinned = 0;
    for (int i = 0; i < s->n_xpf; i++) hy_xcache_pin(s->xc, s->xpf[i], false);
    s->n_xpf = 0;
    for (int i = 0; i < s->n_xpf2; i++) hy_xcache_pin(s->xc, s->xpf2[i], false);
    s->n_xpf2 = 0;
}

/* A router ran: the guesses held for its layer are free to go; those made two
 * layers ahead for the next layer stay held, now as the next layer's. */
static void unpin_routed(hy_stream *s, int layer) {
    int n_keep = 0;
    for (int i = 0; i < s->n_xpf2; i++) {
        if (s->xpf2[i] / s->n_expert == layer + 1) s->xpf2[n_keep++] = s->xpf2[i];
        else hy_xcache_pin(s->xc, s->xpf2[i], false);
    }
    s->n_xpf2 = 0;
    unpin_all(s);
    for (int i = 0; i < n_keep; i++) s->xpf[s->n_xpf++] = s->xpf2[i]; /* still pinned */
}

/* the shadow caches: the same demand accesses under each policy, no prefetch, no I/O */
static void shadow_access(hy_stream *s, const int *keys, int n) {
    if (!s->shadow[0]) return;
    for (int p = 0; p < 2; p++) {
        hy_xcache *c = s->shadow[p];
        for (int i = 0; i < n; i++) {
            if (hy_xcache_access(c, keys[i], s->tick)) s->shadow_hits[p]++;
            hy_xcache_pin(c, keys[i], true);
        }
        for (int i = 0; i < n; i++) {
            if (hy_xcache_resident(c, keys[i])) continue;
            int victims[64];
            bool fits = false;
            int nv;
            do nv = hy_xcache_make_room(c, 1, victims, 64, &fits);
            while (!fits && nv == 64);
            if (fits) hy_xcache_insert(c, keys[i], false, s->tick);
        }
    }
    s->shadow_accesses += (uint64_t)n;
}

static int parse_layer(const char *name, const char *prefix) {
    size_t n = strlen(prefix);
    if (strncmp(name, prefix, n)) return -1;
    char *end;
    long l = strtol(name + n, &end, 10);
    return (*end == 0 && l >= 0 && l < 65536) ? (int)l : -1;
}

/* may a speculative read go out now? (see the header comment) */
static bool prefetch_allowed(hy_stream *s) {
    if (!s->prefetch_experts || s->prefetch_off) return false;
    hy_xcache_stats cs;
    hy_xcache_get_stats(s->xc, &cs);
    if (cs.prefetches >= 64 && cs.prefetch_wasted > cs.prefetch_hits) {
        s->prefetch_off = true;
        return false;
    }
    /* reads = misses + prefetches; no cache reads hits + misses: a prefetch may go out
     * while the wrong guesses so far are no more than the hits the cache made itself */
    return cs.prefetch_wasted <= cs.hits - cs.prefetch_hits;
}

/* Pre-gating: the next layer's router applied to this layer's router input.
 * The residual stream changes little from one layer to the next, so layer+1's
 * router scores on layer's (normalized) FFN input rank the experts it is about
 * to choose well; co-activation statistics need history this does not. Finds
 * the input by walking from the top-k node to the router's matmul. For a batch
 * (a prompt), each of up to 32 tokens spread over it votes for its top k, and
 * the union goes out most-voted first. Writes up to m experts; 0 when the
 * router or its input is not on the host in a form read here (f32/f16). */
static int pregate_predict(hy_stream *s, const struct ggml_tensor *topk, int target, int k, int32_t *out, int m) {
    if (!s->pregate || !s->routers || target >= s->n_layer || s->n_expert > 1024) return 0;
    const struct ggml_tensor *w = s->routers[target];
    const struct ggml_tensor *n = topk, *x = NULL;
    for (int depth = 0; n && depth < 8 && !x; depth++) {
        if (n->op == GGML_OP_MUL_MAT && n->src[0] && strstr(n->src[0]->name, "ffn_gate_inp")) x = n->src[1];
        n = n->src[0]; /* views, argsort, softmax/sigmoid, a bias add: the first source leads back */
    }
    if (!w || !w->data || !x || !x->data || x->type != GGML_TYPE_F32 || x->ne[1] < 1 || w->ne[0] != x->ne[0] ||
        w->ne[1] != s->n_expert || (w->type != GGML_TYPE_F32 && w->type != GGML_TYPE_F16))
        return 0;
    if (!x->buffer || !ggml_backend_buffer_is_host(x->buffer)) return 0;
    const int E = s->n_expert;
    const int64_t ne0 = w->ne[0], n_tok = x->ne[1];
    int n_vote = n_tok < 32 ? (int)n_tok : 32;
    float score[1024];
    int votes[1024] = {0};
    for (int v = 0; v < n_vote; v++) {
        const float *xv = (const float *)((const char *)x->data + (size_t)(v * n_tok / n_vote) * x->nb[1]);
        for (int e = 0; e < E; e++) {
            const char *row = (const char *)w->data + (size_t)e * w->nb[1];
            float acc = 0;
            if (w->type == GGML_TYPE_F32)
                for (int64_t i = 0; i < ne0; i++) acc += ((const float *)row)[i] * xv[i];
            else
                for (int64_t i = 0; i < ne0; i++) acc += ggml_fp16_to_fp32(((const ggml_fp16_t *)row)[i]) * xv[i];
            score[e] = acc;
        }
        for (int j = 0; j < k && j < E; j++) {
            int best = -1;
            for (int e = 0; e < E; e++)
                if (score[e] > -INFINITY && (best < 0 || score[e] > score[best])) best = e;
            if (best < 0) break;
            votes[best]++;
            score[best] = -INFINITY;
        }
    }
    int got = 0;
    while (got < m) {
        int best = -1;
        for (int e = 0; e < E; e++)
            if (votes[e] > 0 && (best < 0 || votes[e] > votes[best])) best = e;
        if (best < 0) break;
        out[got++] = best;
        votes[best] = 0;
    }
    return got;
}

/* Guesses two layers ahead per router: the most voted one the cache lacks. The idle
 * time between two routers fits ~0.4 slice there (1.7 ms at ~2 GB/s), and a slice on
 * the idle queue that is still read when the next layer's own reads come costs them
 * time when it is wrong: with every voted guess, steps of 8 read ~1060 MiB and 8
 * clients made 11.3-12.0 tok/s (7 runs, mean 11.6); with the first only, ~1000 MiB and
 * 11.6-12.4 tok/s (5 runs, mean 12.0); two, 11.7 and 12.0. */
#define TWO_AHEAD_MAX 1

/* Two layers ahead, for a batch. Storage idles whenever the next layer's reads
 * end before its router runs: a step of 8 sequences on the Mixtral-shaped bench
 * model kept it busy 0.45 s of 0.5 s, though compute waited on it 0.16 s. Guesses
 * for the layer after the next (pre-gating with that layer's router on this
 * layer's input: less sure than the next layer's) go to the I/O's idle queue,
 * which issues them only while nothing else is queued, so they use only time
 * the device would idle; a guess the next router confirms, or a slice its own
 * router needs, moves to the ordinary queue. Pinned until their router, like
 * the next layer's, and never so many that a router could not admit its whole
 * union beside them. */
static void prefetch_two_ahead(hy_stream *s, const struct ggml_tensor *t, int layer, int k) {
    if (s->n_slots < 3 * s->n_expert) return;
    int32_t pred[1024];
    int np = pregate_predict(s, t, layer + 2, k, pred, s->n_expert < 1024 ? s->n_expert : 1024);
    for (int i = 0, got = 0; i < np && got < TWO_AHEAD_MAX && prefetch_allowed(s); i++) {
        if (s->n_pinned + s->n_xpf + s->n_xpf2 + s->n_expert >= s->n_slots || s->n_xpf2 >= s->n_expert) break;
        int key = key_of(s, layer + 2, pred[i]);
        if (pred[i] < 0 || pred[i] >= s->n_expert || hy_xcache_resident(s->xc, key)) continue;
        if (!hy_xcache_can_take(s->xc, key, INFINITY, s->tick)) continue;
        admit(s, key, true, true);
        if (!hy_xcache_resident(s->xc, key)) continue;
        hy_xcache_pin(s->xc, key, true);
        s->xpf2[s->n_xpf2++] = key;
        got++;
    }
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
    unpin_routed(s, layer); /* the previous layer's experts have been computed */

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
    uint64_t layer_bytes = 0, slice = 0;
    for (const int *pi = s->layer_xentries[layer]; *pi >= 0; pi++) {
        layer_bytes += s->entries[*pi].info->size;
        slice += s->entries[*pi].info->expert_stride;
    }
    s->whole_layer_bytes_read_equiv += layer_bytes;
    for (int e = 0; e < s->n_expert; e++)
        if (want[e]) {
            int key = key_of(s, layer, e);
            hy_xcache_access(s->xc, key, s->tick);
            hy_xcache_pin(s->xc, key, true);
            s->pinned[s->n_pinned++] = key;
            s->routed_bytes += slice;
        }
    shadow_access(s, s->pinned, s->n_pinned);
    for (int e = 0; e < s->n_expert && !s->failed; e++)
        if (want[e]) {
            promote_key(s, key_of(s, layer, e));
            admit(s, key_of(s, layer, e), false, false);
        }

    /* speculative: the next layer's likely experts, read while this layer computes.
     * One sequence: only into room held by slices that score below what they replace.
     * A batch (decode steps of several sequences, prompts): its union holds experts that
     * are cold for the cache (one row chose them) but that a demand miss would read at the
     * next router anyway, evicting the coldest slice just the same; pre-gating names them
     * right ~9 times in 10 there (Mixtral-shaped bench model, steps of 8). So a batch's
     * guesses go in whatever they score, and stay pinned until the next router ran: as
     * cold slices they would otherwise be the next guess's victims (which made half of
     * them wasted). HYPURA_BATCH_PREFETCH=0: the one-sequence rule for batches too. */
    if (layer + 1 < s->n_layer && !s->failed) {
        int32_t pred[1024];
        int np = pregate_predict(s, t, layer + 1, k, pred, s->n_expert < 1024 ? s->n_expert : 1024);
        if (np == 0 && n_tok == 1) np = hy_coact_predict_next(s->coact, layer, ids, k, pred, k + 1 < 16 ? k + 1 : 16);
        bool batch = n_tok > 1 && s->batch_prefetch;
        for (int i = 0; i < np && prefetch_allowed(s); i++) {
            int key = key_of(s, layer + 1, pred[i]);
            if (pred[i] < 0 || pred[i] >= s->n_expert) continue;
            if (hy_xcache_resident(s->xc, key)) {
                promote_key(s, key); /* guessed two layers ahead, and again now */
                continue;
            }
            double floor = batch ? INFINITY : hy_xcache_score(s->xc, key, s->tick) + 1e-9;
            if (!hy_xcache_can_take(s->xc, key, floor, s->tick)) continue;
            admit(s, key, true, false);
            /* held until the next layer's router has run: a colder guess for the same
             * layer (or a demand miss) would otherwise evict it before its use */
            if (batch && hy_xcache_resident(s->xc, key) && s->n_xpf < s->n_expert) {
                hy_xcache_pin(s->xc, key, true);
                s->xpf[s->n_xpf++] = key;
            }
        }
    }
    if (layer + 2 < s->n_layer && !s->failed && n_tok > 1 && s->batch_prefetch2 && !s->pagecache)
        prefetch_two_ahead(s, t, layer, k);
    /* the misses were queued first; the speculative reads queue behind them and
     * keep the device busy while this layer's experts compute */
    for (int e = 0; e < s->n_expert; e++)
        if (want[e]) wait_key(s, key_of(s, layer, e));
    free(want);
    free(ids);
}

/* page-cache variant's safety net: a use of layer's experts without its router
 * seen in this pass maps in every expert of the layer (correct, slower) */
static void load_whole_layer(hy_stream *s, int layer) {
    if (!s->warned_fallback) {
        fprintf(stderr, "hypura: warning: no router output seen for layer %d; reading all of its experts\n", layer);
        s->warned_fallback = true;
    }
    unpin_all(s);
    for (int e = 0; e < s->n_expert; e++) {
        int key = key_of(s, layer, e);
        hy_xcache_access(s->xc, key, s->tick);
        hy_xcache_pin(s->xc, key, true);
        s->pinned[s->n_pinned++] = key;
    }
    for (int e = 0; e < s->n_expert; e++) admit(s, key_of(s, layer, e), false, false);
    for (int e = 0; e < s->n_expert; e++) wait_key(s, key_of(s, layer, e));
    s->topk_pass[layer] = s->pass_id + 1;
}

/* Points node t (mul_mat_id, or add_id of a per-expert bias) at the arena until swap_out_all:
 * its expert tensor w (source wi) becomes n_slots slots of the arena's pitch, and its ids
 * (source 2) the router's choice in slots. A layer's expert ops are swapped as libllama
 * reaches them and put back together at the next layer's router (whose callback comes once
 * the piece of the graph holding them has computed), so a layer costs one piece of the graph,
 * not one per op (qwen3moe: 14 pieces per token instead of 44; 35.4 -> 39.5 tok/s on the H200
 * machine's 16 threads). The last streamed layer stops after each op, as nothing later would
 * put them back. Swaps are undone in reverse order, so a tensor swapped twice comes back. */
static void swap_in(hy_stream *s, struct ggml_tensor *t, int wi, struct entry *en) {
    struct ggml_tensor *w = t->src[wi], *ids = t->src[2];
    int layer = en->info->layer;
    if (!ids || ids->type != GGML_TYPE_I32 || !ids->data) {
        fail(s, t->name, "expert ids missing");
        return;
    }
    if (s->n_sw >= HY_PLAN_MAX_XKINDS) {
        fail(s, t->name, "more expert ops in one layer than expert tensor kinds");
        return;
    }
    struct xswap *sw = &s->sw[s->n_sw];
    int k = (int)ids->ne[0], n_tok = (int)ids->ne[1];
    size_t need = (size_t)k * (size_t)n_tok;
    if (need > sw->xids_cap) {
        int32_t *nb = realloc(sw->xids_buf, need * sizeof *nb);
        if (!nb) {
            fail(s, "expert streaming", "out of memory");
            return;
        }
        sw->xids_buf = nb;
        sw->xids_cap = need;
    }
    for (int j = 0; j < n_tok; j++)
        for (int i = 0; i < k; i++) {
            int32_t e = *(const int32_t *)((const char *)ids->data + (size_t)j * ids->nb[1] + (size_t)i * ids->nb[0]);
            int key = e >= 0 && e < s->n_expert ? key_of(s, layer, e) : -1;
            if (key < 0 || s->xkeys[key].state != G_READY || s->xkeys[key].slot < 0) {
                char why[128];
                snprintf(why, sizeof why, "expert %d of layer %d is not in the cache", (int)e, layer);
                fail(s, t->name, why);
                return;
            }
            sw->xids_buf[(size_t)j * k + i] = s->xkeys[key].slot;
        }
    struct ggml_tensor *x = &sw->xids;
    memset(x, 0, sizeof *x);
    x->type = GGML_TYPE_I32;
    x->buffer = ids->buffer;
    x->ne[0] = k, x->ne[1] = n_tok, x->ne[2] = 1, x->ne[3] = 1;
    x->nb[0] = sizeof(int32_t);
    for (int d = 1; d < GGML_MAX_DIMS; d++) x->nb[d] = x->nb[d - 1] * (size_t)x->ne[d - 1];
    x->data = sw->xids_buf;
    snprintf(x->name, sizeof x->name, "hypura-slots-%d", layer);

    sw->node = t;
    sw->w = w;
    sw->ids = ids;
    sw->data = w->data;
    memcpy(sw->ne, w->ne, sizeof sw->ne);
    memcpy(sw->nb, w->nb, sizeof sw->nb);
    s->n_sw++;
    const struct xarena *a = &s->arenas[en->xkind];
    int xd = ggml_n_dims(w) - 1; /* the expert dimension: ne[2] of weights, ne[1] of biases */
    w->data = a->base + slice_home(s, en);
    w->ne[xd] = s->n_slots;
    w->nb[xd] = a->pitch;
    for (int d = xd + 1; d < GGML_MAX_DIMS; d++) w->nb[d] = w->nb[d - 1] * (size_t)w->ne[d - 1];
    t->src[2] = x;
}

static void swap_out_all(hy_stream *s) {
    for (int i = s->n_sw - 1; i >= 0; i--) {
        struct xswap *sw = &s->sw[i];
        struct ggml_tensor *w = sw->w;
        w->data = sw->data;
        memcpy(w->ne, sw->ne, sizeof sw->ne);
        memcpy(w->nb, sw->nb, sizeof sw->nb);
        sw->node->src[2] = sw->ids;
        sw->node = NULL;
    }
    s->n_sw = 0;
}

/* After a failed pass (hy_stream_clear_error): a node the aborted graph never
 * came back for is put back; slices the pass issued are waited for, and one
 * whose read failed is dropped rather than found by the next request. */
void hy_experts_settle(hy_stream *s) {
    swap_out_all(s);
    for (int key = 0; key < s->n_layer * s->n_expert; key++)
        if (s->xkeys[key].state == G_LOADING) wait_key(s, key);
}

bool hy_experts_eval(hy_stream *s, struct ggml_tensor *t, bool ask, bool *handled) {
    *handled = true;
    int layer = parse_layer(t->name, "ffn_moe_topk-");
    if (layer >= 0) {
        /* a layer whose experts are all on the GPU tier: nothing to read */
        if (layer < s->n_layer && s->layer_xentries[layer][0] < 0) return ask ? false : true;
        if (ask) return true;
        swap_out_all(s); /* the previous layer's expert ops have computed */
        on_router(s, t, layer);
        return true; /* never false: a failure aborts at the next node (hy_stream_eval_cb) */
    }
    if (!ask) {
        if (s->n_sw && t == s->sw[s->n_sw - 1].node) swap_out_all(s);
        return true;
    }
    for (int i = 0; i < GGML_MAX_SRC; i++) {
        struct entry *e = hy_stream_entry_of(s, t->src[i]);
        if (!e) continue;
        int l = e->info->layer;
        bool seen = l >= 0 && l < s->n_layer && s->topk_pass[l] == s->pass_id + 1;
        if (s->pagecache) {
            if (!seen) load_whole_layer(s, l);
            continue;
        }
        /* the arena serves the two ops that index experts by the router's ids */
        bool direct = !t->src[i]->view_src;
        if (direct && seen && ((t->op == GGML_OP_MUL_MAT_ID && i == 0) || (t->op == GGML_OP_ADD_ID && i == 1))) {
            swap_in(s, t, i, e);
            /* a later layer's router puts it back (swap_in); after the last layer, stop here */
            return l >= s->last_xlayer;
        }
        char why[256];
        snprintf(why, sizeof why,
                 seen ? "read by a %s node, which expert-streaming does not serve; run with --mode dense"
                      : "read (by %s) before the layer's router (ffn_moe_topk) ran; run with --mode dense",
                 ggml_op_name(t->op));
        fail(s, e->info->name, why);
        return true;
    }
    return false;
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
    st->x_prefetch_wasted = cs.prefetch_wasted;
    st->x_prefetch_off = s->prefetch_off;
    st->x_cache_bytes = cs.used * s->slot_bytes;
    st->x_cache_capacity = cs.capacity * s->slot_bytes;
    st->x_slots = s->n_slots;
    st->x_shadow_accesses = s->shadow_accesses;
    st->x_shadow_hits[0] = s->shadow_hits[0];
    st->x_shadow_hits[1] = s->shadow_hits[1];
    st->x_slots_used = (int)cs.used;
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

uint64_t hy_stream_routing(const hy_stream *s, double *freq, size_t n) {
    if (!s || !s->coact || !freq || n != (size_t)s->n_layer * (size_t)s->n_expert) return 0;
    for (int l = 0; l < s->n_layer; l++)
        for (int e = 0; e < s->n_expert; e++) freq[(size_t)l * s->n_expert + e] = hy_coact_freq(s->coact, l, e);
    return hy_coact_tokens(s->coact);
}
