/* hy_coact: mixture-of-experts co-activation statistics (pure data + persistence).
 *
 * Job: remember which experts a model's routers choose, so that the
 * expert-streaming engine can prefetch the next layer's experts before its
 * router has run (hy_coact_predict_next), warm its expert cache with the
 * experts that fire most (hy_coact_freq), and `hypura optimize` can lay
 * experts that fire together next to each other on disk
 * (hy_coact_permutation). Statistics are kept between runs in a JSON file
 * keyed by the model's id (hy_model_desc.model_id: its GGUF header hash mixed with samples of
 * its weights; the files keep the field name "header_hash" from format version 1).
 *
 * What is counted, per layer l (the "blk.N" index of the ffn_moe_topk-N node):
 *  - tokens[l]: tokens recorded; selections[l]: valid expert selections;
 *  - freq[l][e]: tokens whose selection at l contains e. Ids outside
 *    [0, n_expert) and repeats of an id within one token's selection are
 *    ignored and counted as invalid;
 *  - pairs[l][a][b] (a != b, symmetric): tokens that chose both a and b at l;
 *  - next[l][a][b]: tokens that chose a at l and b at l+1. Recorded only when
 *    the call for l+1 directly follows the call for l with the same number of
 *    tokens (one ubatch flowing through consecutive layers).
 *
 * Invariants (checked again by hy_coact_load):
 *  - every count is a 64-bit counter saturating at INT64_MAX (so it fits a
 *    JSON integer), never negative;
 *  - sum_e freq[l][e] == selections[l] and freq[l][e] <= tokens[l], so the
 *    shares hy_coact_freq(l, .) sum to 1 over a layer with data (0 without);
 *  - exact ("dense") layout: pairs[l][a][b] <= min(freq[l][a], freq[l][b]),
 *    next[l][a][b] <= min(freq[l][a], freq[l+1][b]);
 *  - every layout: sum_b pairs[l][a][b] <= freq[l][a] * (n_expert - 1) and
 *    sum_b next[l][a][b] <= freq[l][a] * n_expert.
 *
 * Memory: O(n_layer * n_expert^2) 64-bit counters. The pair and transition
 * matrices are exact (dense n_expert x n_expert per layer) while they take at
 * most HY_COACT_MATRIX_BUDGET bytes, which covers every current MoE (e.g. 61
 * layers x 256 experts). Beyond that (n_expert in the high hundreds or more)
 * each matrix row keeps only its `row_capacity` heaviest partners with the
 * Space-Saving algorithm: a new partner in a full row replaces the smallest
 * entry and inherits its count. Heavy partners (more than 1/capacity of the
 * row's mass) are never lost, counts may be overestimated by at most the
 * evicted minimum, and the row sums stay exact. Shapes are bounded by
 * HY_COACT_MAX_* so that the matrices never exceed the budget.
 *
 * Not thread-safe: one writer (the eval callback), readers in the same thread
 * or under the caller's lock. Nothing here exits or aborts; functions that can
 * fail return 0 / -1 with a one-line reason in err. */
#ifndef HY_COACT_H
#define HY_COACT_H

#include <stddef.h>
#include <stdint.h>

#define HY_COACT_VERSION 1
#define HY_COACT_MAX_LAYER 4096
#define HY_COACT_MAX_EXPERT 4096
/* n_layer * n_expert: with the smallest row capacity (8) the sparse matrices stay within the budget */
#define HY_COACT_MAX_ROWS (1 << 18)
#define HY_COACT_MATRIX_BUDGET ((uint64_t)64 << 20)
#define HY_COACT_MIN_ROW_CAPACITY 8
/* files larger than this are refused before parsing */
#define HY_COACT_MAX_FILE ((uint64_t)512 << 20)

typedef struct hy_coact hy_coact;

/* NULL when a shape is out of range (n_layer 1..HY_COACT_MAX_LAYER, n_expert
 * 1..HY_COACT_MAX_EXPERT, n_layer*n_expert <= HY_COACT_MAX_ROWS, n_used
 * 1..n_expert) or memory is short. */
hy_coact *hy_coact_new(int n_layer, int n_expert, int n_used, uint64_t header_hash);
void hy_coact_free(hy_coact *c);

/* One ubatch's selection at `layer`: ids laid out [n_tokens][k] (the ffn_moe_topk-N tensor: I32, ne0 = k,
 * ne1 = n_tokens). Counts per-expert frequency, within-layer pairs (experts chosen together for a token) and,
 * when the previous call was layer-1 with the same n_tokens, the transitions layer-1 -> layer for each token
 * (expert a at layer-1 and b at layer). Ids outside [0, n_expert) are ignored (counted as invalid). */
void hy_coact_record(hy_coact *c, int layer, const int32_t *ids, int k, int n_tokens);

/* The m most likely experts at layer+1 given the experts chosen at `layer` (ids[0..k)), by transition counts
 * with frequency at layer+1 as the tie-break / fallback when there is no data (then lower id first). Only
 * experts with some evidence (a transition or a selection at layer+1) are returned, so with no data at all
 * the answer is 0 experts. Returns the number written (<= m); 0 for the last layer. */
int hy_coact_predict_next(const hy_coact *c, int layer, const int32_t *ids, int k, int32_t *out, int m);

double hy_coact_freq(const hy_coact *c, int layer, int expert); /* share of selections in [0,1] */
uint64_t hy_coact_tokens(const hy_coact *c);                    /* tokens recorded at layer 0 */

/* Persistence: a JSON file with a format version, header_hash (hex), n_layer, n_expert, n_used and the counts
 * (the layout is documented in hy_coact.c). Save writes a temporary file next to PATH and renames it
 * (atomic); load validates everything (version, hash == expected, shapes, counts non-negative and consistent,
 * sizes bounded) and rejects a corrupt or foreign file with a one-line reason (the caller prints it as a
 * warning and starts empty). */
int hy_coact_save(const hy_coact *c, const char *path, char *err, size_t errlen);
int hy_coact_load(const char *path, uint64_t header_hash, int n_layer, int n_expert, hy_coact **out, char *err,
                  size_t errlen);
/* $XDG_DATA_HOME/hypura/coact/<model id as 16 hex digits>.json (directories created) */
int hy_coact_default_path(uint64_t header_hash, char *buf, size_t len);
/* Merge b into a (same n_layer and n_expert): counts add. a keeps its header_hash and n_used. */
int hy_coact_merge(hy_coact *a, const hy_coact *b);
/* A disk order for the experts of `layer`: perm[new_position] = old_expert, a permutation of 0..n_expert-1
 * that puts experts often chosen together next to each other: greedy chaining from the most frequent expert,
 * each step appending the unplaced expert chosen most often together with the last one (ties: higher
 * frequency, then lower id); when the last one has no unplaced partner, the most frequent unplaced expert.
 * Deterministic; the identity for a layer without data. 0, or -1 on bad arguments / no memory. */
int hy_coact_permutation(const hy_coact *c, int layer, int32_t *perm);

#endif
