/* Internal to src/stream: the state shared by the layer-group streamer
 * (hy_stream.c) and the expert-slice streamer (hy_experts.c). */
#ifndef HY_STREAM_INT_H
#define HY_STREAM_INT_H

#include "stream/hy_stream.h"
#include "util/hy_util.h"

struct hy_xcache;
struct hy_coact;

#define PAGE 4096u
#define HUGE_ALIGN ((size_t)2 << 20)

enum { G_IDLE, G_LOADING, G_READY };

struct entry {
    const hy_tensor_info *info;
    struct ggml_tensor *t;     /* set by init_tensor */
    uint8_t *dst;              /* page-aligned start of the read */
    uint64_t roff, rlen;       /* file range read (page-aligned start) */
    uint64_t span;             /* bytes of our allocation owned by this tensor, from dst */
    int group;
    int xkind;                 /* expert-streaming: its arena (kind of expert tensor), or -1 */
    hy_io_ticket *ticket;
    bool used;                 /* used in the current pass */
};

struct group {
    int layer;
    int n_entries, *entries;
    int state;
    int n_used;
    uint64_t bytes;            /* committed while loading or ready */
};

struct xkey;

/* expert-streaming: one arena per kind of expert tensor (hy_plan_xkinds) */
struct xarena {
    uint64_t pitch;            /* bytes per slot */
    uint8_t *map, *base;       /* base: 2 MiB aligned within map */
    size_t map_len;
};

struct hy_stream {
    hy_io *io;
    bool trace;                /* HYPURA_STREAM_TRACE: a stderr line per group load, release, pass */
    const hy_model_desc *desc;
    int fd_buffered;           /* for the rare get_tensor */
    uint64_t file_size;
    int n_entries;
    struct entry *entries;
    int n_groups;
    struct group *groups;      /* in layer order */
    int max_lookahead, lookahead;
    bool adaptive;
    uint64_t pool_bytes, committed;
    int cur;                   /* group in use, -1 before the first */
    bool split_early;          /* split the graph at matmuls while the next group loads (eval_cb) */
    double pass_stall;         /* stall in the current pass */
    /* recycled pages (hy_stream.c, "recycled pages"): released tensors' pages parked for the next read */
    bool recycle;
    uint8_t *park_map, *park_base; /* the parking range (address space), 2 MiB aligned base */
    size_t park_len, park_used;
    struct park { uint8_t *addr; uint64_t span; bool full; } *parks;
    int n_parks, cap_parks;
    uint64_t parked;           /* bytes parked (committed memory, within pool_bytes with `committed`) */
    /* buffer types: the NVMe tier (streamed) and the RAM tier (resident, huge pages) */
    struct ggml_backend_buffer_type buft;
    struct ggml_backend_buffer_type ram_buft;
    /* state */
    bool failed;
    char error[HY_ERRLEN];
    hy_stream_stats st;
    /* expert-streaming (hy_experts.c) */
    bool expert_mode;
    int  cache_policy;
    bool prefetch_experts, persist_stats, pagecache;
    uint64_t read_bytes0;      /* /proc/self/io read_bytes after load (page-cache variant's I/O) */
    uint64_t io_bytes0;        /* this reader's bytes and busy time after load: the RAM tier's */
    double   io_busy0;         /* load reads are not streaming */
    int n_layer, n_expert;
    struct xkey *xkeys;        /* n_layer * n_expert */
    int n_kinds, n_slots;
    struct xarena arenas[HY_PLAN_MAX_XKINDS];
    uint64_t slot_bytes;       /* what the plan charges per slot */
    int *slot_key;             /* per slot: the cached key, or -1 */
    int *free_slots, n_free;   /* a stack; popped lowest first at the start */
    int *pinned, n_pinned;     /* keys the current layer needs */
    int *xpf, n_xpf;           /* keys prefetched for the next layer in a batch, held until its router */
    int *xpf2, n_xpf2;         /* keys prefetched two layers ahead (idle queue), held the same way */
    /* nodes whose expert tensor and ids are swapped to the arena until they have computed: one
     * layer's (hy_experts.c: swap_in) */
    struct xswap {
        struct ggml_tensor *node, *w, *ids;
        void *data;
        int64_t ne[GGML_MAX_DIMS];
        size_t nb[GGML_MAX_DIMS];
        struct ggml_tensor xids; /* the remapped (slot) ids */
        int32_t *xids_buf;
        size_t xids_cap;
    } sw[HY_PLAN_MAX_XKINDS];
    int n_sw;
    int last_xlayer;           /* the last layer whose experts stream (-1: none) */
    bool prefetch_off;         /* turned off at run time: it lost (see hy_experts.c) */
    struct ggml_tensor **routers; /* per layer: its router weight (ffn_gate_inp) if in our RAM tier */
    bool pregate;              /* predict the next layer's experts with its router on this layer's input */
    bool batch_prefetch;       /* a batch's guesses evict whatever they score, pinned until used */
    bool batch_prefetch2;      /* and guesses two layers ahead go to the I/O's idle queue (on_router) */
    /* both eviction policies replayed on the routed accesses without I/O (hy_policy.h) */
    struct hy_xcache *shadow[2];
    uint64_t shadow_accesses, shadow_hits[2];
    char policy_path[4096];
    int **layer_xentries;      /* per layer: entries of expert tensors, -1 terminated */
    struct hy_xcache *xc;
    struct hy_coact *coact;
    char coact_path[4096];
    uint64_t tick;             /* tokens seen (cache clock) */
    int last_topk_layer;
    uint64_t pass_id, *topk_pass; /* per layer: pass in which its router ran */
    uint64_t whole_layer_bytes_read_equiv; /* what reading whole expert tensors would have cost */
    uint64_t routed_bytes;     /* slices the routers chose (what an uncached reader would read) */
    bool warned_fallback;
    /* loading (hy_load.c): resident tensors filled by worker threads */
    struct hy_loader *loader;
    uint64_t load_bytes_cached, load_bytes_direct;
    /* HYPURA_REPACK: CPU_REPACK's layout in our memory (hy_load.c) */
    struct ggml_backend_buffer_type repack_buft;
    ggml_backend_buffer_type_t repack_real; /* ggml's CPU_REPACK, NULL when not used */
    enum ggml_status (*repack_init)(ggml_backend_buffer_t, struct ggml_tensor *);
    void (*repack_set)(ggml_backend_buffer_t, struct ggml_tensor *, const void *, size_t, size_t);
};

/* entry of a tensor name, or NULL */
struct entry *hy_stream_find_entry(hy_stream *s, const char *name);
/* the streamed entry a graph node's source (or the tensor it views) is, or NULL: no name search */
struct entry *hy_stream_entry_of(hy_stream *s, struct ggml_tensor *t);
/* hy_experts.c */
int  hy_experts_init(hy_stream *s, const hy_model_desc *d, const hy_plan *plan, char *err, size_t errlen);
void hy_experts_free(hy_stream *s);
bool hy_experts_eval(hy_stream *s, struct ggml_tensor *t, bool ask, bool *handled);
void hy_experts_stats(const hy_stream *s, hy_stream_stats *st);
void hy_experts_settle(hy_stream *s);
/* hy_load.c */
bool hy_load_fill(hy_stream *s, struct ggml_tensor *t, const hy_tensor_info *ti); /* RAM tier: queue its bytes */
void hy_load_drain(hy_stream *s);  /* wait for every queued fill */
void hy_load_finish(hy_stream *s); /* drain, stop the workers, free their buffers */
int  hy_load_repack_init(hy_stream *s, ggml_backend_buffer_type_t real, char *err, size_t errlen);


#endif
