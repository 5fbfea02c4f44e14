/* hy_batch: continuous batching — several sequences generated together in one
 * libllama context, each decode step one llama_decode (one ubatch: one pass over
 * the weights, so a streamed model reads its streamed bytes once for all of them).
 *
 * The engine must be opened with n_seq_max >= n_slots (one unified KV cache).
 * Slot i is KV sequence i. A request takes a free slot, its prompt is decoded in
 * chunks, then each step decodes the last sampled token of every generating
 * slot (and a chunk of any prompt still being read) and samples each slot's
 * next token with its own sampler (temperature, top-k/p, seed), so a request
 * joins at the next step and leaves the step it ends.
 *
 * Invariants:
 *  - Each slot uses at most n_ctx_slot cells (its request may ask for fewer), so
 *    the slots never run out of room in the n_slots * n_ctx_slot cache.
 *  - A step never holds more than n_ubatch tokens (libllama would split it:
 *    another pass over the weights).
 *  - Kernels: while any sequence generates, a step holds at most
 *    HY_BATCH_MIXED_ROWS tokens, so ggml-cpu's flash attention keeps its
 *    per-row kernel for everyone (it takes a tiled kernel, with other rounding,
 *    for 64 or more query rows: GGML_FA_TILE_Q). A prompt decoded while nothing
 *    generates goes in chunks of n_ubatch, as hy_engine_generate decodes it.
 *  - A cancelled or failed sequence leaves at once and its KV is removed from
 *    it (llama_memory_seq_rm); a finished one leaves at once too, and keeps its
 *    tokens in its slot only when prompt_cache is on (a later prompt sharing a
 *    prefix with them decodes only the rest). While other sequences run, removed
 *    cells pass to a holding sequence (the "grave", sequence n_slots, when the
 *    context has n_seq_max > n_slots) until the batch is idle or room is needed,
 *    so that no running sequence's later tokens are placed below its earlier
 *    ones: a sequence's cells stay in position order, as alone (flash attention
 *    sums keys in cell order). A request that would not find room beside the
 *    running ones without that is refused for now (HY_BATCH_WAIT) until the
 *    batcher is idle and the cache cleared.
 *  - Only the caller's thread touches a batcher (the server's worker). */
#ifndef HY_BATCH_H
#define HY_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/hy_engine.h"

/* A step while anything generates holds fewer tokens than ggml-cpu's flash
 * attention tile (GGML_FA_TILE_Q = 64 query rows in the pinned version), and
 * at most HY_BATCH_PROMPT_ROWS of them are prompt tokens: on a CPU a prompt row
 * costs about what a generated one does (2 cores here: ~0.1 s for a 5.7 B
 * Q4_K model, where a streamed step's I/O is ~1 s), so a long prompt read in
 * one step would hold every running stream for many seconds. 56 (was 32): a
 * burst of 8 short prompts is read in 3 steps instead of 5, fewer passes over
 * the streamed weights (8 clients of a streamed 5.7 B model: 5.8 -> 6.1 tok/s,
 * single noisy runs), for a stream held ~4 s by such a step instead of ~2.5. */
#define HY_BATCH_MIXED_ROWS 63
#define HY_BATCH_PROMPT_ROWS 56
/* libllama's attention spans the used cells rounded up to this many (pinned
 * version); ggml-cpu splits one query row's attention over 512 cells or more. */
#define HY_BATCH_KV_PAD 256

typedef struct hy_batcher hy_batcher;

typedef struct {
    int  n_slots;         /* sequences at once, <= the context's n_seq_max */
    int  n_ctx_slot;      /* cells one sequence may use; 0 = the context's n_ctx / n_slots */
    bool prompt_cache;    /* a finished sequence's tokens stay in its slot for prefix reuse */
    int  pad_rows;        /* > 1: every step is padded with throwaway rows (of the holding
                             sequence, removed after the step) to a multiple of this many.
                             ggml-cpu's repacked kernels compute rows in groups of 4 (a GEMM)
                             and the rest one by one (a GEMV), which round differently: with
                             4, every row of every step, a lone request's too, takes the
                             GEMM, and batched answers equal answers alone. Needs the
                             holding sequence (n_seq_max > n_slots); ignored without it. */
} hy_batcher_params;

/* What a request's owner is told. All are called on the batcher's thread,
 * from hy_batcher_step (or hy_batcher_cancel / hy_batcher_add for on_done). */
typedef struct {
    /* a piece of text; return false to stop (the request ends "cancelled") */
    bool (*on_piece)(const char *piece, size_t len, void *ud);
    /* false: the request cannot take text now (its client reads slowly): the
     * slot sits out this step, its sampled token waiting. NULL: always ready. */
    bool (*ready)(void *ud);
    /* the request ended: rc 0 (stats->stop_reason says why) or -1 with err */
    void (*on_done)(void *ud, int rc, const hy_gen_stats *stats, const char *err);
    void *ud;
} hy_batch_cbs;

int  hy_batcher_new(hy_engine *e, const hy_batcher_params *p, hy_batcher **out, char *err, size_t errlen);

/* A request runner: runs one request to its end on the batcher's engine (the
 * server's speculative decoding, hy_spec.h: a draft's tokens are verified in
 * one pass of the one sequence), calling cbs->on_piece for its text and
 * filling st; 0, or -1 with err. Only for a batcher of one slot: each request
 * is then run whole in one hy_batcher_step, which clears the slot's KV first
 * (the runner leaves the engine's cache empty: nothing is kept for reuse) and
 * calls on_done with st. Set once, before the first request; -1 with err when
 * the batcher has more than one slot. */
typedef int (*hy_batch_runner)(void *ud, const char *prompt, const hy_sample_params *sp, int n_ctx,
                               const hy_batch_cbs *cbs, hy_gen_stats *st, char *err, size_t errlen);
int  hy_batcher_set_runner(hy_batcher *b, hy_batch_runner fn, void *ud, char *err, size_t errlen);
void hy_batcher_free(hy_batcher *b);

int hy_batcher_n_slots(const hy_batcher *b);
int hy_batcher_n_ctx_slot(const hy_batcher *b);
/* slots with a request (reading its prompt or generating) */
int hy_batcher_busy(const hy_batcher *b);

/* Start a request in a free slot: tokenize the prompt (raw text, template
 * already applied), pick the slot (the free one whose kept tokens share the
 * longest prefix with it, else an empty one, else the least recently used),
 * keep the shared prefix, queue the rest for decoding. n_ctx: the request's
 * context (<= n_ctx_slot; 0 = n_ctx_slot). Returns the slot, or -1 with err
 * (no free slot, or a prompt that does not fit): nothing was started and
 * on_done is not called. HY_BATCH_WAIT: not now — the cache has no room for it
 * beside the running requests without freeing cells under them; try again after
 * the running ones end (an idle batcher always takes a request that fits). */
#define HY_BATCH_WAIT (-2)
int hy_batcher_add(hy_batcher *b, const char *prompt, const hy_sample_params *sp, int n_ctx,
                   const hy_batch_cbs *cbs, char *err, size_t errlen);

/* End a slot's request now ("cancelled"; on_done is called) and remove its KV. */
void hy_batcher_cancel(hy_batcher *b, int slot);
/* Remove the KV a free slot keeps (a request that on_piece stopped because its
 * client left: its tokens are not kept for reuse). */
void hy_batcher_forget(hy_batcher *b, int slot);

/* One decode step over every busy slot that is ready. Returns the tokens it
 * decoded (0: nothing could run), or -1 when the decode failed: every request
 * in the step has ended with on_done(rc -1, err) and lost its KV; the others
 * go on. */
int hy_batcher_step(hy_batcher *b, char *err, size_t errlen);

typedef struct {
    bool busy;
    bool prompt;          /* busy and still reading its prompt */
    int  n_tokens;        /* cells the slot holds (prompt, generated, or kept for reuse) */
    int  n_ctx;           /* the running request's context */
    int  n_gen;           /* tokens the running request generated */
} hy_batch_slot_info;
void hy_batcher_slot_info(const hy_batcher *b, int slot, hy_batch_slot_info *out);

/* What the last hy_batcher_step decoded, for the server's per-step figures
 * (all 0 when it decoded nothing, or ran a runner's request). */
typedef struct {
    int    n_gen;         /* generating sequences' rows */
    int    n_prompt;      /* prompt rows */
    int    n_rows;        /* rows in the decode (with a padding row, see hy_batcher_step) */
    double decode_s;      /* seconds llama_decode took */
} hy_batch_step_info;
void hy_batcher_last_step(const hy_batcher *b, hy_batch_step_info *out);

#endif
