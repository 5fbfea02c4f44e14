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
 *  - k adapts. With the session's cost model (hy_spec_model, the usual case):
 *    a probe of HY_SPEC_PROBE_K first, then each round the k the model, fed the
 *    acceptance measured so far and the measured plain pass, drafted token and
 *    verify row, predicts best; 0 (plain decoding, probed again later) while
 *    it predicts no k pays. Without it: up after a fully accepted round, down
 *    after a rejection. Either way 0 while drafting measures slower than plain
 *    passes.
 *  - The draft must have the target's vocabulary, token for token; anything
 *    else is refused with the first difference named. */
#ifndef HY_SPEC_H
#define HY_SPEC_H

#include <stdint.h>

#include "engine/hy_engine.h"
#include "hypura.h"

/* The cost model of drafting (pure, from the plan; hy_spec_model_make). A
 * verify pass of n = k + 1 tokens reads what a plain pass reads, except that a
 * MoE's layers compute (and, expert-streaming, read the uncached slices of)
 * the union of the n tokens' experts: with per-token selection probabilities
 * q_e = min(1, top_k * share_e) (the routing the plan assumes: measured shares,
 * else HY_PLAN_ROUTING_PRIOR), a layer's expected union is
 * sum_e 1 - (1 - q_e)^n, and its expected misses the same sum over the experts
 * the cache does not hold (the plan's slots per layer, the hottest). A pass
 * costs max(I/O, memory time) as in hy_plan_predict; a drafted token costs
 * the draft's resident weights read once. With acceptance a, a round of k
 * drafts yields (1 - a^(k+1)) / (1 - a) tokens. Not modelled: the CPU time of
 * each extra row (on a 2-core machine a dense verify pass of 9 rows was
 * measured ~1.7x a plain one): at run time it is fitted from the measured
 * verify passes, and the measured-speed fallback covers the rest. */
#define HY_SPEC_KMAX 64
/* acceptance expected before any is measured (--draft-accept gives one), and
 * its weight, in drafted tokens, against the measured count at run time: one,
 * so that a probe's measurement outweighs it at once (with 4, an unrelated
 * draft's 0 of 11 still read 13 %, which the model found worth drafting one
 * token for, and rounds went on that measured nothing but loss) */
#define HY_SPEC_ACCEPT_PRIOR 0.5
#define HY_SPEC_ACCEPT_PRIOR_N 1
/* k of a probe: the first drafted round, and the first after drafting was off,
 * when acceptance and the cost of a verify row are not measured (yet): its cost
 * is bounded whatever the draft; with the model the next rounds draft the k it
 * finds best for what was measured */
#define HY_SPEC_PROBE_K 2
typedef struct hy_spec_model {
    int    kmax;
    bool   moe;                          /* the pass cost grows with the batch's expert union */
    int    top_k, n_layers;              /* experts per token; layers with experts */
    double plain_s;                      /* plain pass, the target planned with the whole budget */
    double pass_s[HY_SPEC_KMAX + 1];     /* pass of k+1 tokens, the target planned with the draft charged */
    double draft_tok_s;                  /* one drafted token */
    double accept;                       /* the acceptance expected before one is measured */
    double union_x[HY_SPEC_KMAX + 2];    /* expected unique experts per layer for n tokens, n >= 1 */
    double miss_x[HY_SPEC_KMAX + 2];     /* of those, expected outside the expert cache (expert-streaming) */
} hy_spec_model;

/* with_draft: the target's plan under the budget less the draft's charge; plain:
 * under the whole budget (NULL: the same plan); q: plan params (routing shares);
 * draft_tok_s: a drafted token's time (hy_spec_draft_cost). */
int hy_spec_model_make(const hy_model_desc *d, const hy_plan_params *q, const hy_plan *with_draft,
                       const hy_plan *plain, double draft_tok_s, int kmax, hy_spec_model *m);
/* expected tokens a round of k drafts yields at acceptance a */
double hy_spec_tokens_per_round(double a, int k);
/* predicted tok/s drafting k per round over plain decoding: against the plain
 * plan (the whole budget: whether to load a draft at all) or, vs_whole false,
 * against plain passes with the draft loaded (whether to draft now) */
double hy_spec_model_gain(const hy_spec_model *m, double a, int k, bool vs_whole);
/* the k in 1..kmax with the highest gain (written to *gain) */
int hy_spec_model_best_k(const hy_spec_model *m, double a, bool vs_whole, double *gain);
/* the least acceptance at which drafting k pays (gain >= 1); > 1: never */
double hy_spec_model_breakeven(const hy_spec_model *m, int k, bool vs_whole);

typedef struct {
    int  draft_max;   /* most tokens drafted per round (default 8) */
    bool adaptive;    /* adapt k and turn drafting off when it does not pay (default on) */
    /* optional: the target's session. Its stream gives the expert union and the
     * bytes read per pass (stats), its spec_model caps k at the best the model
     * predicts for the acceptance measured so far, and turns drafting off while
     * none pays (adaptive only) */
    const hy_session *session;
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
    uint64_t verify_tokens;  /* tokens in the passes with a draft (k + 1 each) */
    /* MoE targets streamed by experts (0 otherwise): unique routed experts summed over
     * layers and passes, and bytes read from storage, for plain passes and for passes
     * with a draft; the model's expected union for the mean verify batch */
    uint64_t x_union_plain, x_union_verify;
    uint64_t x_read_plain, x_read_verify;
    int      x_layers;
    double   x_union_pred_plain, x_union_pred_verify;
    int      n_off;          /* times drafting was turned off for a while */
    char     decision[200];  /* the last on/off decision and why ("" none) */
} hy_spec_stats;

/* The figures as a JSON object (run --stats-json, the server's final objects):
 * drafted, accepted, acceptance, target_passes, plain_passes, tokens_per_pass,
 * draft_s, verify_s, k_last, verify_tokens, times_off, last_off; with s, the
 * plan's decision and the draft's charge; for an expert-streamed target,
 * experts (union per layer and pass, measured and predicted, bytes per pass).
 * A new reference. */
struct json_t *hy_spec_stats_json(const hy_spec_stats *x, const hy_session *s);

/* Same tokens, same ids: n_vocab and every token's text. */
int hy_spec_check_vocab(const struct llama_model *target, const struct llama_model *draft, char *err,
                        size_t errlen);
/* The same against a draft file whose vocabulary alone is loaded (a draft the
 * plan turned off is still checked: a wrong draft is an error either way). */
int hy_spec_check_vocab_file(const struct llama_model *target, const char *draft_path, char *err, size_t errlen);

/* The draft's batch: its prompt is decoded in chunks of this many tokens and a
 * round decodes one token at a time, so a small compute buffer (and output
 * buffer: n_batch x n_vocab floats) does; the plan charges this one. */
#define HY_SPEC_DRAFT_BATCH 32

/* Memory a resident draft costs (weights, KV for n_ctx, compute, overhead): what
 * the plan charges against the budget before placing the target; tok_s (may be
 * NULL): the time one drafted token is predicted to take (its plan's). */
int hy_spec_draft_cost(const char *path, int n_ctx, uint64_t *bytes, double *tok_s, char *err, size_t errlen);

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
