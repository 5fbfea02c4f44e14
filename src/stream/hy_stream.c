#include "stream/hy_stream.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ggml-backend-impl.h"
#include "stream/hy_stream_int.h"
#include "util/hy_tensor.h"
#include "util/hy_util.h"

hy_stream_params hy_stream_default_params(void) {
    hy_stream_params p = {0};
    p.lookahead = -1;
    p.adaptive = true;
    p.prefetch_experts = true;
    p.persist_stats = true;
    p.io = hy_io_default_params();
    return p;
}

/* ---------------------------------------------------------------- buffer */

struct sbuf {
    hy_stream *s;
    uint8_t *map;     /* what mmap returned */
    size_t map_len;
    uint8_t *base;    /* 2 MiB aligned */
};

struct entry *hy_stream_find_entry(hy_stream *s, const char *name) {
    for (int i = 0; i < s->n_entries; i++)
        if (!strcmp(s->entries[i].info->name, name)) return &s->entries[i];
    return NULL;
}

static void sbuf_free(ggml_backend_buffer_t b) {
    struct sbuf *sb = b->context;
    munmap(sb->map, sb->map_len);
    free(sb);
}

static void *sbuf_base(ggml_backend_buffer_t b) { return ((struct sbuf *)b->context)->base; }

static enum ggml_status sbuf_init_tensor(ggml_backend_buffer_t b, struct ggml_tensor *t) {
    struct sbuf *sb = b->context;
    hy_stream *s = sb->s;
    if (t->view_src) return GGML_STATUS_SUCCESS;
    struct entry *e = hy_stream_find_entry(s, t->name);
    if (!e || e->t) {
        /* a tensor the plan did not stream, or placed twice: refuse loudly */
        snprintf(s->error, sizeof s->error, "streamed buffer got unexpected tensor '%s'", t->name);
        s->failed = true;
        return GGML_STATUS_FAILED;
    }
    if ((uint64_t)ggml_nbytes(t) != e->info->size) {
        snprintf(s->error, sizeof s->error, "tensor '%s': libllama expects %zu bytes, the file has %llu", t->name,
                 ggml_nbytes(t), (unsigned long long)e->info->size);
        s->failed = true;
        return GGML_STATUS_FAILED;
    }
    /* the allocator gave a page-aligned slot; shift the data so it sits at the
     * same offset within a page as in the file */
    uint64_t d = e->info->offset % PAGE;
    e->dst = (uint8_t *)t->data;
    t->data = e->dst + d;
    e->t = t;
    t->extra = e; /* the eval callback's way back from a node's source (hy_stream_entry_of) */
    e->roff = e->info->offset - d;
    e->rlen = hy_round_up(d + e->info->size, PAGE);
    if (e->roff + e->rlen > s->file_size) e->rlen = s->file_size - e->roff; /* tail at end of file */
    /* Release up to the next 2 MiB boundary: the allocator starts every tensor on
     * one (get_alignment), so that padding is ours alone. Releasing less would
     * split the last transparent huge page and leave its tail committed for good. */
    e->span = hy_plan_slot_bytes(e->info->size);
    /* Expert tensors (expert-streaming) are never filled here: their cached
     * slices live in the expert cache's slot arenas (hy_experts.c), and the
     * nodes that read them are pointed there while they run. This range stays
     * address space only, except under --io pagecache, which maps the file here. */
    if (s->pagecache) {
        /* the page-cache variant: the file itself, mapped at the same addresses */
        void *m = mmap(e->dst, hy_round_up(e->rlen, PAGE), PROT_READ, MAP_SHARED | MAP_FIXED, s->fd_buffered,
                       (off_t)e->roff);
        if (m == MAP_FAILED) {
            snprintf(s->error, sizeof s->error, "cannot map '%s' from the model file", t->name);
            s->failed = true;
            return GGML_STATUS_FAILED;
        }
    }
    return GGML_STATUS_SUCCESS;
}

static void sbuf_set(ggml_backend_buffer_t b, struct ggml_tensor *t, const void *data, size_t off, size_t n) {
    /* The loader offers the bytes from its mapping. Taking them would read the
     * whole tensor now; they are read with direct I/O when needed instead. */
    (void)b, (void)t, (void)data, (void)off, (void)n;
}

static void sbuf_get(ggml_backend_buffer_t b, const struct ggml_tensor *t, void *data, size_t off, size_t n) {
    struct sbuf *sb = b->context;
    hy_stream *s = sb->s;
    struct entry *e = hy_stream_find_entry(s, t->name);
    if (!e) {
        memset(data, 0, n);
        return;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(s->fd_buffered, (uint8_t *)data + got, n - got, (off_t)(e->info->offset + off + got));
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            memset((uint8_t *)data + got, 0, n - got);
            s->failed = true;
            snprintf(s->error, sizeof s->error, "reading tensor '%s' failed", t->name);
            return;
        }
        got += (size_t)r;
    }
}

static bool sbuf_cpy(ggml_backend_buffer_t b, const struct ggml_tensor *src, struct ggml_tensor *dst) {
    (void)b, (void)src, (void)dst;
    return false;
}

static void sbuf_clear(ggml_backend_buffer_t b, uint8_t v) {
    (void)b, (void)v; /* weights are never cleared; the pages are committed only when read */
}

static const char *sbuft_name(ggml_backend_buffer_type_t bt) {
    (void)bt;
    return "HYPURA_NVME";
}

static ggml_backend_buffer_t sbuft_alloc(ggml_backend_buffer_type_t bt, size_t size) {
    hy_stream *s = bt->context;
    struct sbuf *sb = calloc(1, sizeof *sb);
    if (!sb) return NULL;
    sb->s = s;
    sb->map_len = (size ? size : 1) + HUGE_ALIGN;
    /* address space only: nothing is committed until a read fills it */
    sb->map = mmap(NULL, sb->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (sb->map == MAP_FAILED) {
        free(sb);
        return NULL;
    }
    sb->base = (uint8_t *)(((uintptr_t)sb->map + HUGE_ALIGN - 1) & ~(uintptr_t)(HUGE_ALIGN - 1));
    madvise(sb->map, sb->map_len, MADV_HUGEPAGE); /* weights on 4 KiB pages decode several times slower on this VM (README) */
    static const struct ggml_backend_buffer_i iface = {
        .free_buffer = sbuf_free,
        .get_base = sbuf_base,
        .init_tensor = sbuf_init_tensor,
        .memset_tensor = hy_tensor_host_memset,
        .set_tensor = sbuf_set,
        .get_tensor = sbuf_get,
        .cpy_tensor = sbuf_cpy,
        .clear = sbuf_clear,
    };
    return ggml_backend_buffer_init(bt, iface, sb, size);
}

static size_t sbuft_alignment(ggml_backend_buffer_type_t bt) {
    (void)bt;
    return HUGE_ALIGN;
}

static size_t sbuft_alloc_size(ggml_backend_buffer_type_t bt, const struct ggml_tensor *t) {
    (void)bt;
    /* room to shift the data by its in-page file offset and to read whole pages */
    return hy_round_up(ggml_nbytes(t), PAGE) + 2 * PAGE;
}

static bool sbuft_is_host(ggml_backend_buffer_type_t bt) {
    (void)bt;
    return true;
}

/* ------------------------------------------------------------- RAM tier */

/* Resident tensors of a streaming run: anonymous memory (transparent huge
 * pages where the kernel allows), filled from the loader's mapping by
 * set_tensor. Weights then live outside the page cache: faster kernels (fewer
 * TLB misses than 4 KiB file pages; measured here 6.4 vs 3.9 tok/s on a 3 GB
 * Q4_K model) and memory the cgroup counts once, not as reclaimable cache. */
struct rbuf {
    hy_stream *s;
    uint8_t *map;
    size_t len;
};

/* Each resident tensor sits at the same offset within a page as in the file
 * (as streamed ones do), so its bytes can be read with direct I/O in place
 * instead of being copied out of the loader's mapping: loading reads exactly
 * the resident bytes, through no page cache and no readahead that would pull
 * in the streamed neighbours (a tensor already in the page cache is copied from
 * there; hy_load.c). */
static enum ggml_status rbuf_init_tensor(ggml_backend_buffer_t b, struct ggml_tensor *t) {
    struct rbuf *rb = b->context;
    if (t->view_src) return GGML_STATUS_SUCCESS;
    const hy_tensor_info *ti = hy_model_find(rb->s->desc, t->name);
    if (ti && ti->size == (uint64_t)ggml_nbytes(t)) t->data = (uint8_t *)t->data + ti->offset % PAGE;
    /* expert-streaming predicts a layer's experts with its router (hy_experts.c) */
    size_t nl = strlen(t->name), rl = strlen(".ffn_gate_inp.weight");
    if (rb->s->routers && ti && ti->role == HY_ROLE_ROUTER && ti->layer >= 0 && ti->layer < rb->s->desc->n_layer &&
        nl > rl && !strcmp(t->name + nl - rl, ".ffn_gate_inp.weight"))
        rb->s->routers[ti->layer] = t;
    return GGML_STATUS_SUCCESS;
}

static void rbuf_free(ggml_backend_buffer_t b) {
    struct rbuf *rb = b->context;
    hy_load_drain(rb->s); /* a failed load frees buffers with fills queued */
    munmap(rb->map, rb->len);
    free(rb);
}
static void *rbuf_base(ggml_backend_buffer_t b) { return ((struct rbuf *)b->context)->map; }
static void rbuf_set(ggml_backend_buffer_t b, struct ggml_tensor *t, const void *data, size_t off, size_t n) {
    struct rbuf *rb = b->context;
    hy_stream *s = rb->s;
    const hy_tensor_info *ti = hy_model_find(s->desc, t->name);
    uint64_t d = ti ? ti->offset % PAGE : 0;
    /* a whole tensor of the file, placed as init_tensor placed it: filled by the
     * load's workers, from our own reads (hy_load.c) */
    if (ti && off == 0 && n == ti->size && ((uintptr_t)t->data % PAGE) == d && hy_load_fill(s, t, ti)) return;
    /* else the loader's bytes, unless the file lost them (truncated while
     * loading): touching the loader's mapping past the end of the file would
     * kill us with SIGBUS */
    struct stat st;
    if (ti && !fstat(s->fd_buffered, &st) && (uint64_t)st.st_size < ti->offset + off + n) {
        if (!s->failed)
            snprintf(s->error, sizeof s->error,
                     "%s was truncated while loading (%llu bytes now): tensor '%s' needs bytes up to %llu",
                     s->desc->path, (unsigned long long)st.st_size, t->name,
                     (unsigned long long)(ti->offset + off + n));
        s->failed = true;
        return;
    }
    memcpy((uint8_t *)t->data + off, data, n);
}
static void rbuf_clear(ggml_backend_buffer_t b, uint8_t v) {
    struct rbuf *rb = b->context;
    memset(rb->map, v, rb->len);
}
static const char *rbuft_name(ggml_backend_buffer_type_t bt) {
    (void)bt;
    return "HYPURA_RAM";
}
static ggml_backend_buffer_t rbuft_alloc(ggml_backend_buffer_type_t bt, size_t size) {
    struct rbuf *rb = calloc(1, sizeof *rb);
    if (!rb) return NULL;
    rb->s = bt->context;
    rb->len = size ? size : 1;
    rb->map = mmap(NULL, rb->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (rb->map == MAP_FAILED) {
        free(rb);
        return NULL;
    }
    madvise(rb->map, rb->len, MADV_HUGEPAGE);
    static const struct ggml_backend_buffer_i iface = {
        .free_buffer = rbuf_free,
        .get_base = rbuf_base,
        .init_tensor = rbuf_init_tensor,
        .memset_tensor = hy_tensor_host_memset,
        .set_tensor = rbuf_set,
        .get_tensor = hy_tensor_host_get,
        .cpy_tensor = sbuf_cpy,
        .clear = rbuf_clear,
    };
    return ggml_backend_buffer_init(bt, iface, rb, size);
}
static size_t rbuft_alignment(ggml_backend_buffer_type_t bt) {
    (void)bt;
    return PAGE;
}

/* ------------------------------------------------------- recycled pages */

/* A streamed tensor's read lands in fresh anonymous memory, which the kernel
 * zero-fills page by page as the read pins it: on 2 cores that was a quarter of
 * the server's CPU in batched decoding (a 1.8 GiB stream per step; perf:
 * clear_page_erms), time the matmuls then lacked. So a released tensor's pages
 * are not given back but parked: moved (mremap: page tables only; every span is
 * 2 MiB aligned and sized, so huge pages stay huge) into a parking range, and
 * moved back under the next tensor of the same span before its read, which
 * overwrites every byte a kernel reads. The address range left behind stays
 * mapped and empty (MREMAP_DONTUNMAP), exactly as MADV_DONTNEED leaves it. Parked
 * and committed bytes stay within the pool. HYPURA_STREAM_RECYCLE=0 turns it off. */
#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif

static void park_init(hy_stream *s) {
    const char *v = getenv("HYPURA_STREAM_RECYCLE");
    if ((v && !strcmp(v, "0")) || s->pagecache || s->pool_bytes == 0) return;
    s->park_len = hy_round_up(s->pool_bytes, HUGE_ALIGN);
    s->park_map = mmap(NULL, s->park_len + HUGE_ALIGN, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s->park_map == MAP_FAILED) {
        s->park_map = NULL;
        return;
    }
    s->park_base = (uint8_t *)(((uintptr_t)s->park_map + HUGE_ALIGN - 1) & ~(uintptr_t)(HUGE_ALIGN - 1));
    madvise(s->park_base, s->park_len, MADV_HUGEPAGE);
    s->recycle = true;
}

static void park_free(hy_stream *s) {
    if (s->park_map) munmap(s->park_map, s->park_len + HUGE_ALIGN);
    free(s->parks);
}

static bool span_ok(const struct entry *e) {
    return e->span > 0 && e->span % HUGE_ALIGN == 0 && (uintptr_t)e->dst % HUGE_ALIGN == 0;
}

/* before e's read: parked pages of its span, if any, move under it */
static void park_take(hy_stream *s, struct entry *e) {
    if (!s->recycle || !span_ok(e)) return;
    for (int i = 0; i < s->n_parks; i++) {
        struct park *k = &s->parks[i];
        if (!k->full || k->span != e->span) continue;
        if (mremap(k->addr, k->span, k->span, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, e->dst) == MAP_FAILED) {
            madvise(k->addr, k->span, MADV_DONTNEED);
            s->recycle = false; /* the kernel refuses: back to fresh pages for good */
        }
        k->full = false;
        s->parked -= k->span;
        return;
    }
}

/* parked pages beyond what the pool allows once `incoming` more bytes are committed go back */
static void park_trim(hy_stream *s, uint64_t incoming) {
    for (int i = 0; i < s->n_parks && s->parked > 0 && s->parked + s->committed + incoming > s->pool_bytes; i++) {
        struct park *k = &s->parks[i];
        if (!k->full) continue;
        madvise(k->addr, k->span, MADV_DONTNEED);
        k->full = false;
        s->parked -= k->span;
    }
}

/* e is released (its group's `leaving` bytes leave the pool): park its pages, or give them back */
static void park_put(hy_stream *s, struct entry *e, uint64_t leaving) {
    struct park *k = NULL;
    if (s->recycle && span_ok(e) && s->parked + e->span + s->committed - leaving <= s->pool_bytes) {
        for (int i = 0; i < s->n_parks && !k; i++)
            if (!s->parks[i].full && s->parks[i].span == e->span) k = &s->parks[i];
        if (!k && s->park_used + e->span <= s->park_len) {
            if (s->n_parks == s->cap_parks) {
                int cap = s->cap_parks ? 2 * s->cap_parks : 16;
                struct park *np = realloc(s->parks, (size_t)cap * sizeof *np);
                if (np) s->parks = np, s->cap_parks = cap;
            }
            if (s->n_parks < s->cap_parks) {
                k = &s->parks[s->n_parks++];
                *k = (struct park){.addr = s->park_base + s->park_used, .span = e->span};
                s->park_used += e->span;
            }
        }
    }
    if (k && mremap(e->dst, e->span, e->span, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, k->addr) != MAP_FAILED) {
        k->full = true;
        s->parked += e->span;
        return;
    }
    madvise(e->dst, e->span, MADV_DONTNEED);
}

/* --------------------------------------------------------------- groups */

static int issue_group(hy_stream *s, int gi) {
    struct group *g = &s->groups[gi];
    if (g->state != G_IDLE) return 0;
    for (int k = 0; k < g->n_entries; k++) park_take(s, &s->entries[g->entries[k]]);
    park_trim(s, g->bytes);
    for (int k = 0; k < g->n_entries; k++) {
        struct entry *e = &s->entries[g->entries[k]];
        char err[HY_ERRLEN];
        e->ticket = hy_io_read_async(s->io, e->dst, e->roff, e->rlen, err, sizeof err);
        if (!e->ticket) {
            s->failed = true;
            snprintf(s->error, sizeof s->error, "reading '%s': %s", e->info->name, err);
            /* the group stays idle: let the reads already queued land, then drop them */
            for (int j = 0; j < k; j++) {
                struct entry *o = &s->entries[g->entries[j]];
                hy_io_wait(s->io, o->ticket, err, sizeof err);
                o->ticket = NULL;
                madvise(o->dst, o->span, MADV_DONTNEED);
            }
            for (int j = k; j < g->n_entries; j++) /* pages recycled under them (park_take) */
                madvise(s->entries[g->entries[j]].dst, s->entries[g->entries[j]].span, MADV_DONTNEED);
            return -1;
        }
    }
    g->state = G_LOADING;
    g->n_used = 0;
    if (s->trace) fprintf(stderr, "[stream] load group %d (layer %d, %.1f MiB), current %d\n", gi, g->layer, g->bytes / 1048576.0, s->cur);
    s->committed += g->bytes;
    if (s->committed > s->st.committed_peak) s->st.committed_peak = s->committed;
    s->st.group_loads++;
    return 0;
}

static void release_group(hy_stream *s, int gi);

static int wait_group(hy_stream *s, int gi) {
    struct group *g = &s->groups[gi];
    if (g->state == G_READY) return 0;
    if (g->state == G_IDLE && issue_group(s, gi)) return -1;
    double t0 = hy_now();
    int rc = 0;
    for (int k = 0; k < g->n_entries; k++) {
        struct entry *e = &s->entries[g->entries[k]];
        if (!e->ticket) continue;
        char err[HY_ERRLEN];
        if (hy_io_wait(s->io, e->ticket, err, sizeof err) && !s->failed) {
            s->failed = true;
            snprintf(s->error, sizeof s->error, "reading '%s': %s", e->info->name, err);
            rc = -1;
        }
        e->ticket = NULL;
        e->used = false;
    }
    double dt = hy_now() - t0;
    s->st.stall_s += dt;
    s->pass_stall += dt;
    g->state = G_READY;
    if (rc) release_group(s, gi); /* never kept: a later pass reads the whole group again */
    return rc;
}

static void release_group(hy_stream *s, int gi) {
    struct group *g = &s->groups[gi];
    if (g->state == G_IDLE) return;
    for (int k = 0; k < g->n_entries; k++) {
        struct entry *e = &s->entries[g->entries[k]];
        if (e->ticket) { /* still in flight: let it land before the pages go */
            char err[HY_ERRLEN];
            hy_io_wait(s->io, e->ticket, err, sizeof err);
            e->ticket = NULL;
        }
        park_put(s, e, g->bytes);
        e->used = false;
    }
    if (s->trace) fprintf(stderr, "[stream] release group %d (%d of %d tensors used)\n", gi, g->n_used, g->n_entries);
    g->state = G_IDLE;
    g->n_used = 0;
    s->committed -= g->bytes;
}

/* keep the next `lookahead` groups after `from` in flight, within the pool */
static void prefetch(hy_stream *s, int from) {
    for (int k = 1; k <= s->lookahead && k < s->n_groups; k++) {
        int gi = (from + k) % s->n_groups;
        struct group *g = &s->groups[gi];
        if (g->state != G_IDLE) continue;
        if (s->committed + g->bytes > s->pool_bytes) break;
        if (issue_group(s, gi)) return;
    }
}

/* before a group is used: make room if the pool is full of finished groups */
static void make_room(hy_stream *s, int need) {
    struct group *g = &s->groups[need];
    for (int i = 0; i < s->n_groups && s->committed + g->bytes > s->pool_bytes; i++) {
        if (i == need) continue;
        struct group *o = &s->groups[i];
        if (o->state == G_READY) release_group(s, i);
    }
}

static void end_of_pass(hy_stream *s) {
    s->st.passes++;
    if (s->trace) fprintf(stderr, "[stream] end of pass %llu\n", (unsigned long long)s->st.passes);
    /* adapt: deepen prefetch while compute keeps waiting on I/O */
    if (s->adaptive && s->pass_stall > 0.002 && s->lookahead < s->max_lookahead) s->lookahead++;
    s->pass_stall = 0;
}

struct entry *hy_stream_entry_of(hy_stream *s, struct ggml_tensor *t) {
    if (t && t->view_src) t = t->view_src;
    if (!t || !t->buffer || ggml_backend_buffer_get_type(t->buffer) != &s->buft) return NULL;
    return t->extra; /* set by sbuf_init_tensor for every tensor placed in our buffer */
}

/* After a failed read this never returns false: false makes ggml's scheduler
 * skip the rest of the graph and report success, so libllama would hand out the
 * previous (or zero) logits as if computed. Instead the next node is asked for,
 * and the abort callback stops the graph right after it: llama_decode fails. */
static bool eval_cb(struct ggml_tensor *t, bool ask, void *ud);

/* the callback, timed: what it costs a pass besides the graph's compute */
bool hy_stream_eval_cb(struct ggml_tensor *t, bool ask, void *ud) {
    hy_stream *s = ud;
    double t0 = hy_now();
    bool r = eval_cb(t, ask, ud);
    s->st.cb_s += hy_now() - t0;
    if (ask && r) s->st.cb_pieces++;
    return r;
}

static bool eval_cb(struct ggml_tensor *t, bool ask, void *ud) {
    hy_stream *s = ud;
    if (s->failed) return true;
    if (s->expert_mode) {
        bool handled = false;
        bool r = hy_experts_eval(s, t, ask, &handled);
        if (handled) return r;
    }
    bool uses = false;
    for (int i = 0; i < GGML_MAX_SRC; i++) {
        struct entry *e = hy_stream_entry_of(s, t->src[i]);
        if (!e) continue;
        uses = true;
        if (ask) {
            int gi = e->group;
            /* back at an earlier (or the same, released) group: a new forward pass */
            if (s->cur >= 0 && (gi < s->cur || (gi == s->cur && s->groups[gi].state == G_IDLE))) end_of_pass(s);
            if (gi != s->cur) {
                if (s->trace) fprintf(stderr, "[stream] %s needs group %d\n", t->name, gi);
                s->cur = gi;
                if (s->groups[gi].state == G_IDLE) make_room(s, gi);
                prefetch(s, gi);
            }
            if (wait_group(s, gi)) return true; /* the failure aborts in the second call */
        } else if (!e->used) {
            e->used = true;
            struct group *g = &s->groups[e->group];
            if (++g->n_used == g->n_entries) {
                release_group(s, e->group);
                prefetch(s, e->group);
            }
        }
    }
    /* The wait for a group happens when the scheduler asks about its first user,
     * before it computes anything since the last piece: the layer's attention would
     * run only after the wait. While the next group is still loading, end a piece
     * at each resident matmul instead, so that that compute overlaps the read
     * (pieces of the same graph in the same order: the math is unchanged). */
    if (ask && !uses && s->split_early && t->op == GGML_OP_MUL_MAT && s->cur >= 0 && s->n_groups > 0) {
        struct group *g = &s->groups[(s->cur + 1) % s->n_groups];
        if (g->state == G_LOADING)
            for (int k = 0; k < g->n_entries; k++) {
                struct entry *e = &s->entries[g->entries[k]];
                if (e->ticket && !hy_io_done(s->io, e->ticket)) return true;
            }
    }
    if (ask) return uses;
    return true; /* a failure set here aborts at the next node (see above) */
}

bool hy_stream_abort_cb(void *ud) { return ((hy_stream *)ud)->failed; }

void hy_stream_clear_error(hy_stream *s) {
    if (!s || !s->failed) return;
    for (int gi = 0; gi < s->n_groups; gi++) {
        struct group *g = &s->groups[gi];
        if (g->state == G_LOADING) {
            /* prefetched by the failed pass: its reads may have failed too (a file
             * truncated under us fails every read past the new end). Wait for them
             * here; a group with a failed read is dropped, never left for the next
             * request to trip over */
            bool bad = false;
            for (int k = 0; k < g->n_entries; k++) {
                struct entry *e = &s->entries[g->entries[k]];
                char err[HY_ERRLEN];
                if (e->ticket && hy_io_wait(s->io, e->ticket, err, sizeof err)) bad = true;
                e->ticket = NULL;
            }
            g->state = G_READY;
            if (bad) {
                release_group(s, gi);
                continue;
            }
        }
        /* the aborted pass left its use counts half-way: resident groups start over */
        if (g->state != G_READY) continue;
        g->n_used = 0;
        for (int k = 0; k < g->n_entries; k++) s->entries[g->entries[k]].used = false;
    }
    if (s->expert_mode) hy_experts_settle(s);
    s->failed = false;
    s->error[0] = 0;
}

/* ------------------------------------------------------------- lifecycle */

int hy_stream_create(const hy_stream_params *p, hy_stream **out, char *err, size_t errlen) {
    *out = NULL;
    const hy_plan *plan = p->plan;
    const hy_model_desc *d = p->desc;
    if (plan->n_tensors != d->n_tensors) return hy_fail(err, errlen, "plan and model disagree");
    hy_stream *s = calloc(1, sizeof *s);
    if (!s) return hy_fail(err, errlen, "out of memory");
    s->fd_buffered = -1;
    s->cur = -1;
    s->io = hy_io_open(p->model_path, &p->io, err, errlen);
    if (!s->io) goto fail;
    s->file_size = hy_io_file_size(s->io);
    s->desc = p->desc;
    s->fd_buffered = open(p->model_path, O_RDONLY | O_CLOEXEC);
    if (s->fd_buffered < 0) {
        hy_fail(err, errlen, "cannot open %s: %s", p->model_path, strerror(errno));
        goto fail;
    }
    for (int i = 0; i < plan->n_tensors; i++) s->n_entries += plan->tier[i] == HY_TIER_NVME;
    s->entries = calloc((size_t)(s->n_entries ? s->n_entries : 1), sizeof *s->entries);
    s->groups = calloc((size_t)(d->n_layer > 0 ? d->n_layer : 1), sizeof *s->groups);
    int *gmap = malloc(sizeof(int) * (size_t)(d->n_layer > 0 ? d->n_layer : 1));
    if (!s->entries || !s->groups || !gmap) {
        free(gmap);
        hy_fail(err, errlen, "out of memory");
        goto fail;
    }
    for (int l = 0; l < d->n_layer; l++) gmap[l] = -1;
    int k = 0;
    for (int i = 0; i < plan->n_tensors; i++) {
        if (plan->tier[i] != HY_TIER_NVME) continue;
        int l = plan->group[i];
        if (l < 0 || l >= d->n_layer) {
            free(gmap);
            hy_fail(err, errlen, "streamed tensor '%s' has no layer group", d->tensors[i].name);
            goto fail;
        }
        s->entries[k].info = &d->tensors[i];
        s->entries[k].group = l; /* remapped below */
        k++;
    }
    /* groups in layer order */
    for (int l = 0; l < d->n_layer; l++)
        for (int i = 0; i < s->n_entries; i++)
            if (s->entries[i].group == l && gmap[l] < 0) {
                gmap[l] = s->n_groups;
                s->groups[s->n_groups++].layer = l;
            }
    for (int i = 0; i < s->n_entries; i++) {
        struct group *g = &s->groups[gmap[s->entries[i].group]];
        s->entries[i].group = gmap[s->entries[i].group];
        g->n_entries++;
        g->bytes += hy_plan_slot_bytes(s->entries[i].info->size); /* what its slot commits (= span) */
    }
    free(gmap);
    for (int gi = 0; gi < s->n_groups; gi++) {
        struct group *g = &s->groups[gi];
        g->entries = malloc(sizeof(int) * (size_t)g->n_entries);
        if (!g->entries) {
            hy_fail(err, errlen, "out of memory");
            goto fail;
        }
        g->n_entries = 0;
    }
    uint64_t max_group = 0;
    for (int i = 0; i < s->n_entries; i++) {
        struct group *g = &s->groups[s->entries[i].group];
        g->entries[g->n_entries++] = i;
    }
    for (int gi = 0; gi < s->n_groups; gi++)
        if (s->groups[gi].bytes > max_group) max_group = s->groups[gi].bytes;

    const char *tr = getenv("HYPURA_STREAM_TRACE");
    s->trace = tr && *tr && strcmp(tr, "0");
    s->max_lookahead = p->lookahead >= 0 ? p->lookahead : plan->lookahead;
    const char *se = getenv("HYPURA_STREAM_SPLIT_EARLY");
    s->split_early = !(se && !strcmp(se, "0"));
    s->adaptive = p->adaptive && p->lookahead < 0;
    s->cache_policy = p->cache_policy;
    s->prefetch_experts = p->prefetch_experts;
    /* HYPURA_PREFETCH=coact predicts from co-activation statistics alone (for comparison) */
    const char *pf = getenv("HYPURA_PREFETCH");
    s->pregate = !(pf && !strcmp(pf, "coact"));
    const char *bp = getenv("HYPURA_BATCH_PREFETCH"); /* hy_experts.c, on_router */
    s->batch_prefetch = !(bp && !strcmp(bp, "0"));
    const char *bp2 = getenv("HYPURA_BATCH_PREFETCH2"); /* hy_experts.c, prefetch_two_ahead */
    s->batch_prefetch2 = s->batch_prefetch && !(bp2 && !strcmp(bp2, "0"));
    s->persist_stats = p->persist_stats;
    s->pagecache = p->pagecache && plan->mode == HY_MODE_EXPERT;
    s->lookahead = s->adaptive && s->max_lookahead > 1 ? 1 : s->max_lookahead;
    /* the pool: what the plan granted, never less than the groups in flight
     * plus the one in use (page rounding makes groups a little larger) */
    s->pool_bytes = plan->pool_bytes;
    uint64_t min_pool = (uint64_t)(s->max_lookahead + 1) * max_group;
    /* expert-streaming: the pool is the expert cache; the plan sized it (at least a whole layer of experts) */
    if (plan->mode != HY_MODE_EXPERT && s->pool_bytes < min_pool) s->pool_bytes = min_pool;
    if (plan->mode != HY_MODE_EXPERT) park_init(s);

    s->buft.iface = (struct ggml_backend_buffer_type_i){
        .get_name = sbuft_name,
        .alloc_buffer = sbuft_alloc,
        .get_alignment = sbuft_alignment,
        .get_alloc_size = sbuft_alloc_size,
        .is_host = sbuft_is_host,
    };
    s->buft.device = NULL;
    s->buft.context = s;
    s->ram_buft.iface = (struct ggml_backend_buffer_type_i){
        .get_name = rbuft_name,
        .alloc_buffer = rbuft_alloc,
        .get_alignment = rbuft_alignment,
        .get_alloc_size = sbuft_alloc_size,
        .is_host = sbuft_is_host,
    };
    s->ram_buft.context = s;
    if (p->repack && hy_load_repack_init(s, p->repack, err, errlen)) goto fail;
    if (plan->mode == HY_MODE_EXPERT) {
        s->routers = calloc((size_t)(d->n_layer > 0 ? d->n_layer : 1), sizeof *s->routers);
        if (!s->routers) {
            hy_fail(err, errlen, "out of memory");
            goto fail;
        }
        if (hy_experts_init(s, d, plan, err, errlen)) goto fail;
    }
    s->st.n_streamed = s->n_entries;
    s->st.io_backend = hy_io_backend_name(s->io);
    s->st.direct = hy_io_is_direct(s->io);
    *out = s;
    return 0;
fail:
    hy_stream_free(s);
    return -1;
}

int hy_stream_check_loaded(hy_stream *s, char *err, size_t errlen) {
    hy_load_finish(s); /* every resident tensor filled (or the load failed) */
    if (s->failed) return hy_fail(err, errlen, "%s", s->error);
    /* resident weights are in memory of ours now: drop the rest of the file's
     * page cache (the loader's header reads, pages shared by two tensors) so it
     * does not sit on the budget */
    posix_fadvise(s->fd_buffered, 0, 0, POSIX_FADV_DONTNEED);
    s->read_bytes0 = hy_io_read_bytes();
    hy_io_stats ios;
    hy_io_get_stats(s->io, &ios);
    s->io_bytes0 = ios.bytes;
    s->io_busy0 = ios.busy_s;
    for (int i = 0; i < s->n_entries; i++)
        if (!s->entries[i].t)
            return hy_fail(err, errlen, "tensor '%s' was planned for streaming but libllama did not place it there",
                           s->entries[i].info->name);
    return 0;
}

const char *hy_stream_error(const hy_stream *s) { return s && s->failed ? s->error : NULL; }

ggml_backend_buffer_type_t hy_stream_nvme_buft(hy_stream *s) { return &s->buft; }
ggml_backend_buffer_type_t hy_stream_ram_buft(hy_stream *s) { return &s->ram_buft; }
ggml_backend_buffer_type_t hy_stream_repack_buft(hy_stream *s) { return s->repack_real ? &s->repack_buft : NULL; }

void hy_stream_load_bytes(const hy_stream *s, uint64_t *cached, uint64_t *direct) {
    *cached = s->load_bytes_cached;
    *direct = s->load_bytes_direct;
}

void hy_stream_get_stats(const hy_stream *s, hy_stream_stats *st) {
    *st = s->st;
    hy_io_stats ios;
    hy_io_get_stats(s->io, &ios);
    st->bytes_read = ios.bytes - s->io_bytes0;
    st->io_busy_s = ios.busy_s - s->io_busy0;
    st->lookahead = s->lookahead;
    if (s->cur >= 0) st->passes++; /* the pass under way (or the last one) */
    if (s->expert_mode) hy_experts_stats(s, st);
}

void hy_stream_free(hy_stream *s) {
    if (!s) return;
    hy_load_finish(s);
    /* first: it waits for the expert reads still in flight (guesses never needed, on the
     * I/O's idle queue too), which hy_io_close requires and which need the reader open */
    hy_experts_free(s);
    if (s->io) {
        for (int i = 0; i < s->n_entries; i++)
            if (s->entries[i].ticket) {
                char err[HY_ERRLEN];
                hy_io_wait(s->io, s->entries[i].ticket, err, sizeof err);
            }
        hy_io_close(s->io);
    }
    if (s->fd_buffered >= 0) close(s->fd_buffered);
    if (s->groups)
        for (int gi = 0; gi < s->n_groups; gi++) free(s->groups[gi].entries);
    free(s->groups);
    free(s->entries);
    free(s->routers);
    park_free(s);
    free(s);
}
