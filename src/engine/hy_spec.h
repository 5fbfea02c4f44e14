/* hy_spec: speculative decoding. A small draft model, resident in its own
 * libllama context, proposes up to k tokens; the target (resident or streamed)
 * checks them all in one batch, one pass over its weights, and keeps the
 * longest prefix it agrees with plus one token of its own. A streamed target's
 * pass costs about one read of its streamed bytes whatever the batch, so every
 * accepted token is a pass saved.
 *
 * Invariants:
 *  - Temperature 0: a drafted token is kept only when it is the target's
 *    argmax at that position, so the text equals non-speculative greedy
 *    decoding (the same tokens; logits equal up to the batch's kernels).
 *    Streamed and --no-repack targets verify with the kernels a single token
 *    uses (bit-identical logits, tested); a resident target with llama.cpp's
 *    repacked kernels computes a batch with other kernels (other low bits), so
 *    its greedy text can part from plain decoding's at a near-tie.
 *  - Temperature > 0: standard speculative sampling (accept d with probability
 *    min(1, p(d)/q(d)), else sample from max(0, p - q)), with p and q the
 *    target's and the draft's distributions after the same top-k/top-p/
 *    temperature: the output is distributed as the target's.
 *  - After each round both KV caches hold exactly the kept tokens: the K/V of
 *    rejected tokens are removed (llama_memory_seq_rm) in both contexts.
 *  - k adapts: up after a fully accepted round, down after a rejection, and 0
 *    (plain decoding, re-tried later) while drafting measures slower than plain
 *    passes.
 *  - The draft must have the target's vocabulary, token for token; anything
 *    else is refused with the first difference named. */
#ifndef HY_SPEC_H
#define HY_SPEC_H

#include <stdint.h>

#include "engine/hy_engine.h"
#include "hypura.h"

typedef struct {
    int  draft_max;   /* most tokens drafted per round (default 8) */
    bool adaptive;    /* adapt k and turn drafting off when it does not pay (default on) */
} hy_spec_params;

hy_spec_params hy_spec_default_params(void);

typedef struct {
    uint64_t drafted;        /* tokens the draft proposed */
    uint64_t accepted;       /* of those, kept */
    uint64_t passes;         /* target passes during generation (after the prompt's) */
    uint64_t pass_tokens;    /* tokens those passes produced */
    uint64_t plain_passes;   /* of the passes, ones without a draft (drafting off or no room) */
    int      k_last;         /* k at the end */
    double   t_draft_s;      /* time spent in the draft model */
    double   t_verify_s;     /* time spent in target passes during generation */
} hy_spec_stats;

/* Same tokens, same ids: n_vocab and every token's text. */
int hy_spec_check_vocab(const struct llama_model *target, const struct llama_model *draft, char *err,
                        size_t errlen);

/* The draft's batch: its prompt is decoded in chunks of this many tokens and a
 * round decodes one token at a time, so a small compute buffer (and output
 * buffer: n_batch x n_vocab floats) does; the plan charges this one. */
#define HY_SPEC_DRAFT_BATCH 32

/* Memory a resident draft costs (weights, KV for n_ctx, compute, overhead): what
 * the plan charges against the budget before placing the target. */
int hy_spec_draft_cost(const char *path, int n_ctx, uint64_t *bytes, char *err, size_t errlen);

/* Open the draft model as a session of its own, full-resident (hypura's resident
 * load and kernels), context n_ctx; its engine is (*out)->engine. */
int hy_spec_open_draft(const char *path, int n_ctx, int n_threads, bool verbose, hy_session **out,
                       char *err, size_t errlen);

/* hy_engine_generate with a draft. Both engines' caches are reset first and
 * after (the target's prefix cache is not reused). */
int hy_spec_generate(hy_engine *target, hy_engine *draft, const char *prompt, const hy_sample_params *sp,
                     const hy_spec_params *pp, hy_piece_cb on_piece, void *piece_ud, hy_logits_cb on_logits,
                     void *logits_ud, hy_gen_stats *st, hy_spec_stats *ss, char *err, size_t errlen);

#endif
