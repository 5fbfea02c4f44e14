/* hy_stream: the NVMe tier. Tensors the plan put on NVMe live in a custom ggml
 * host buffer type whose memory is address space only: reserved at load
 * without committing a page, filled with direct I/O right before the forward
 * pass needs a layer group, and given back (MADV_DONTNEED) right after.
 *
 * How it hooks into libllama (pinned version, load mode mmap):
 *  - llama_model_params.tensor_buft_overrides (built by hy_place from the plan)
 *    sends the streamed tensors to our buffer type. With mmap on, the loader hands our set_tensor a pointer into
 *    its mapping; we ignore it, so loading reads none of the streamed bytes.
 *  - init_tensor places each tensor so that data ≡ file offset (mod 4096):
 *    O_DIRECT reads of the page-aligned file range land in place, no bounce
 *    copy. Every tensor owns its pages (no page is shared between tensors), so
 *    releasing one never touches another.
 *  - llama_context_params.cb_eval: before a graph node that reads a streamed
 *    tensor is computed, its group must be resident (we wait only when the read
 *    is still in flight: that time is a "stall"); after the group's last use in
 *    the pass it is released and the next groups in layer order are prefetched,
 *    `lookahead` groups ahead, within the pool.
 *  - llama_context_params.abort_callback: an I/O error aborts the decode, so
 *    nothing is ever computed on partial data.
 *
 * The math is untouched: the same kernels read the same bytes; only when they
 * arrive changes. Splitting the graph for the callback happens after matmuls or
 * named norm outputs, never inside a fused op. */
#ifndef HY_STREAM_H
#define HY_STREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "ggml-backend.h"
#include "gguf/hy_gguf.h"
#include "io/hy_io.h"
#include "llama.h"
#include "plan/hy_plan.h"

typedef struct hy_stream hy_stream;

typedef struct {
    const char *model_path;
    const hy_model_desc *desc;
    const hy_plan *plan;      /* tiers, groups, pool size and the maximum lookahead */
    int  lookahead;           /* < 0: the plan's; else fixed (0 = read each group on demand) */
    bool adaptive;            /* start at 1 and deepen on stalls up to the plan's lookahead (default true) */
    int  cache_policy;        /* expert cache: HY_XC_LFU (default) or HY_XC_LRU */
    bool prefetch_experts;    /* prefetch the next layer's predicted experts: pre-gating, else co-activation (default true) */
    bool persist_stats;       /* load/save co-activation statistics under the XDG data dir (default true) */
    bool pagecache;           /* experts: map the file over the tensors and let the page cache hold them;
                                 routed slices are advised WILLNEED and populated, released ones dropped from
                                 the mapping (the kernel's LRU decides what stays cached) */
    hy_io_params io;
    ggml_backend_buffer_type_t repack; /* ggml's CPU_REPACK: offer HYPURA_REPACK (hy_stream_repack_buft) */
} hy_stream_params;

hy_stream_params hy_stream_default_params(void);

typedef struct {
    uint64_t bytes_read;
    double   io_busy_s;       /* time with reads in flight */
    double   stall_s;         /* compute waited for I/O */
    double   cb_s;            /* time in the eval callback, stalls included */
    uint64_t cb_pieces;       /* nodes the callback asked to see: libllama computes the graph in pieces ending there */
    uint64_t group_loads;
    uint64_t passes;          /* forward passes (one per decoded batch) */
    uint64_t committed_peak;  /* most streamed bytes committed at once */
    int      lookahead;       /* current */
    int      n_streamed;      /* tensors on the NVMe tier */
    const char *io_backend;
    bool     direct;
    /* expert-streaming */
    bool     experts;
    uint64_t x_hits, x_misses, x_evictions, x_prefetches, x_prefetch_hits;
    uint64_t x_prefetch_wasted; /* prefetched slices evicted unused */
    bool     x_prefetch_off;    /* prefetch turned off at run time: it guessed wrong more often than right */
    int      x_slots, x_slots_used; /* the cache's capacity and use, in experts */
    uint64_t x_shadow_accesses, x_shadow_hits[2]; /* both policies replayed on the demand accesses (LFU, LRU) */
    uint64_t x_cache_bytes, x_cache_capacity;
    uint64_t x_whole_bytes;   /* what streaming whole expert tensors would have read */
    uint64_t x_routed_bytes;  /* the routed slices: what reading them without a cache would read */
    uint64_t x_tokens;
    const char *x_policy;
} hy_stream_stats;

int  hy_stream_create(const hy_stream_params *p, hy_stream **out, char *err, size_t errlen);
void hy_stream_free(hy_stream *s);

/* The tiers' buffer types (the session turns the plan into overrides with
 * them, hy_place.h), and what the engine passes to libllama. */
ggml_backend_buffer_type_t hy_stream_nvme_buft(hy_stream *s);
ggml_backend_buffer_type_t hy_stream_ram_buft(hy_stream *s);
/* Full-resident with repacking: tensors that libllama would repack go here
 * instead (hy_place_repack_classes). Buffers of it are, to ggml, CPU_REPACK
 * buffers (the same layout and kernels, repacked by ggml's own function), in
 * transparent huge pages of ours, filled by the load's worker threads from our
 * own reads of the file. NULL unless hy_stream_params.repack was given. */
ggml_backend_buffer_type_t hy_stream_repack_buft(hy_stream *s);
/* Bytes the load took from the page cache (tensors wholly cached there) and
 * read with direct I/O; complete once hy_stream_check_loaded has returned. */
void hy_stream_load_bytes(const hy_stream *s, uint64_t *cached, uint64_t *direct);
bool hy_stream_eval_cb(struct ggml_tensor *t, bool ask, void *user_data);
bool hy_stream_abort_cb(void *user_data);

/* After the model is loaded: waits for the resident tensors to be filled (the
 * load's worker threads, hy_load.c); every streamed tensor must have been placed. */
int  hy_stream_check_loaded(hy_stream *s, char *err, size_t errlen);
/* The I/O error that aborted a decode, or NULL. */
const char *hy_stream_error(const hy_stream *s);
/* After the failed decode has been reported: forget the error so that the next
 * decode reads again (a server's next request). Failed reads were never kept. */
void hy_stream_clear_error(hy_stream *s);
void hy_stream_get_stats(const hy_stream *s, hy_stream_stats *st);
/* Expert-streaming: the routing seen so far (the kept statistics merged with this
 * run's), as shares freq[l * n_expert + e] (hy_coact_freq); returns the tokens they
 * count, 0 when there are none or n is not n_layer * n_expert. */
uint64_t hy_stream_routing(const hy_stream *s, double *freq, size_t n);

#endif
