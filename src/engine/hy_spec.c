#include "engine/hy_spec.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "hypura.h"
#include "gguf/hy_gguf.h"
#include "plan/hy_plan.h"
#include "util/hy_util.h"

hy_spec_params hy_spec_default_params(void) {
    hy_spec_params p = {.draft_max = 8, .adaptive = true};
    return p;
}

int hy_spec_check_vocab(const struct llama_model *target, const struct llama_model *draft, char *err,
                        size_t errlen) {
    const struct llama_vocab *vt = llama_model_get_vocab(target), *vd = llama_model_get_vocab(draft);
    int nt = llama_vocab_n_tokens(vt), nd = llama_vocab_n_tokens(vd);
    if (nt != nd)
        return hy_fail(err, errlen, "the draft's vocabulary does not match the target's: %d tokens in the target, %d in "
                                    "the draft", nt, nd);
    if (llama_vocab_type(vt) != llama_vocab_type(vd))
        return hy_fail(err, errlen, "the draft's vocabulary does not match the target's: tokenizer type %d in the "
                                    "target, %d in the draft", (int)llama_vocab_type(vt), (int)llama_vocab_type(vd));
    for (int i = 0; i < nt; i++) {
        const char *a = llama_vocab_get_text(vt, i), *b = llama_vocab_get_text(vd, i);
        if (strcmp(a ? a : "", b ? b : ""))
            return hy_fail(err, errlen, "the draft's vocabulary does not match the target's: token %d is '%.40s' in the "
                                        "target, '%.40s' in the draft", i, a ? a : "", b ? b : "");
    }
    if (llama_vocab_bos(vt) != llama_vocab_bos(vd) || llama_vocab_eos(vt) != llama_vocab_eos(vd))
        return hy_fail(err, errlen, "the draft's vocabulary does not match the target's: BOS/EOS %d/%d in the target, "
                                    "%d/%d in the draft", llama_vocab_bos(vt), llama_vocab_eos(vt), llama_vocab_bos(vd),
                       llama_vocab_eos(vd));
    return 0;
}

int hy_spec_check_vocab_file(const struct llama_model *target, const char *draft_path, char *err, size_t errlen) {
    struct llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    struct llama_model *d = llama_model_load_from_file(draft_path, mp);
    if (!d) return hy_fail(err, errlen, "draft model: cannot load the vocabulary of %s", draft_path);
    int rc = hy_spec_check_vocab(target, d, err, errlen);
    llama_model_free(d);
    return rc;
}

int hy_spec_draft_cost(const char *path, int n_ctx, uint64_t *bytes, double *tok_s, char *err, size_t errlen) {
    hy_model_desc *d = NULL;
    char why[HY_ERRLEN];
    if (hy_gguf_read(path, &d, why, sizeof why)) return hy_fail(err, errlen, "draft model: %s", why);
    hy_plan_params q = hy_plan_default_params();
    q.mem_budget = UINT64_MAX / 4;
    q.n_ctx = n_ctx;
    q.n_batch = HY_SPEC_DRAFT_BATCH;
    q.force_mode = HY_MODE_RESIDENT;
    hy_plan pl;
    memset(&pl, 0, sizeof pl);
    int rc = hy_plan_make(d, &q, &pl, why, sizeof why);
    if (rc) hy_fail(err, errlen, "draft model: %s", why);
    else {
        *bytes = pl.budget_used;
        /* a drafted token reads the draft's weights once: its plan's prediction (the
         * profile's memory bandwidth is not known here: the plan's assumed figure) */
        if (tok_s) *tok_s = pl.pred_tok_s > 0 ? 1.0 / pl.pred_tok_s : 0;
    }
    hy_plan_free(&pl);
    hy_model_desc_free(d);
    return rc ? -1 : 0;
}

json_t *hy_spec_stats_json(const hy_spec_stats *sx, const hy_session *ss) {
    json_t *d = json_object();
    json_object_set_new(d, "drafted", json_integer((json_int_t)sx->drafted));
    json_object_set_new(d, "accepted", json_integer((json_int_t)sx->accepted));
    json_object_set_new(d, "acceptance", json_real(sx->drafted ? (double)sx->accepted / sx->drafted : 0));
    json_object_set_new(d, "target_passes", json_integer((json_int_t)sx->passes));
    json_object_set_new(d, "plain_passes", json_integer((json_int_t)sx->plain_passes));
    json_object_set_new(d, "tokens_per_pass", json_real(sx->passes ? (double)sx->pass_tokens / sx->passes : 0));
    json_object_set_new(d, "draft_s", json_real(sx->t_draft_s));
    json_object_set_new(d, "verify_s", json_real(sx->t_verify_s));
    json_object_set_new(d, "k_last", json_integer(sx->k_last));
    json_object_set_new(d, "verify_tokens", json_integer((json_int_t)sx->verify_tokens));
    json_object_set_new(d, "times_off", json_integer(sx->n_off));
    if (sx->decision[0]) json_object_set_new(d, "last_off", json_string(sx->decision));
    if (ss && ss->draft_why[0]) json_object_set_new(d, "plan", json_string(ss->draft_why));
    if (ss) json_object_set_new(d, "draft_bytes", json_integer((json_int_t)ss->draft_bytes));
    if (sx->x_layers) { /* unique routed experts per layer and pass, and bytes read per pass */
        uint64_t nv = sx->passes - sx->plain_passes, np = sx->plain_passes;
        json_t *x = json_object();
        json_object_set_new(x, "layers", json_integer(sx->x_layers));
        json_object_set_new(x, "plain_passes", json_integer((json_int_t)np));
        json_object_set_new(x, "verify_passes", json_integer((json_int_t)nv));
        json_object_set_new(x, "union_plain", json_real(np ? (double)sx->x_union_plain / np / sx->x_layers : 0));
        json_object_set_new(x, "union_verify", json_real(nv ? (double)sx->x_union_verify / nv / sx->x_layers : 0));
        json_object_set_new(x, "union_plain_predicted", json_real(sx->x_union_pred_plain));
        json_object_set_new(x, "union_verify_predicted", json_real(sx->x_union_pred_verify));
        json_object_set_new(x, "read_per_plain_pass", json_real(np ? (double)sx->x_read_plain / np : 0));
        json_object_set_new(x, "read_per_verify_pass", json_real(nv ? (double)sx->x_read_verify / nv : 0));
        json_object_set_new(d, "experts", x);
    }
    return d;
}

/* ---- the cost model (hy_spec.h) ---- */

static int experts_used(const hy_model_desc *d) {
    int k = d->n_expert_used > 0 ? d->n_expert_used : 1;
    return k > d->n_expert ? d->n_expert : k;
}

static int by_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* One layer's routing shares, hottest first: as the plan reads them (hy_plan_layer_shares) */
static void layer_shares(const hy_model_desc *d, const hy_plan_params *q, int l, double keep, double *sh) {
    hy_plan_layer_shares(d, q, l, keep, sh);
    qsort(sh, (size_t)d->n_expert, sizeof *sh, by_desc);
}

/* A pass of n = 1..nmax tokens under plan pl: cost[n] (s), and per layer
 * (averaged over the layers with experts) the expected union and misses. */
static int pass_costs(const hy_model_desc *d, const hy_plan_params *q, const hy_plan *pl, int nmax, double *cost,
                      double *uni, double *miss) {
    const bool moe = d->n_expert > 1;
    const int L = d->n_layer, E = moe ? d->n_expert : 1, k = moe ? experts_used(d) : 1;
    double read_bw = pl->pred_read_gbps > 0 ? pl->pred_read_gbps * 1e9 : HY_PLAN_ASSUMED_READ_GBPS * 1e9;
    double mem_bw = pl->pred_mem_gbps > 0 ? pl->pred_mem_gbps * 1e9 : HY_PLAN_ASSUMED_MEM_GBPS * 1e9;
    /* expert bytes the CPU reads per token (top-k of E), and per layer the slices that stream */
    double x_touched = 0;
    double *slice = moe ? calloc((size_t)L, sizeof *slice) : NULL, *sh = moe ? malloc((size_t)E * sizeof *sh) : NULL;
    bool *has = moe ? calloc((size_t)L, sizeof *has) : NULL;
    if (moe && (!slice || !sh || !has)) {
        free(slice);
        free(sh);
        free(has);
        return -1;
    }
    for (int64_t i = 0; moe && i < d->n_tensors; i++) {
        const hy_tensor_info *t = &d->tensors[i];
        if (t->role != HY_ROLE_EXPERT || t->layer < 0 || t->layer >= L || pl->tier[i] == HY_TIER_GPU) continue;
        x_touched += (double)t->size * k / E;
        has[t->layer] = true;
        if (pl->tier[i] == HY_TIER_NVME) slice[t->layer] += (double)t->size / E;
    }
    double fixed_mem = (double)pl->pred_compute_bytes - x_touched;
    if (fixed_mem < 0) fixed_mem = 0;
    int n_lay = 0;
    for (int l = 0; moe && l < L; l++) n_lay += has[l];
    double slots = pl->mode == HY_MODE_EXPERT ? pl->cache_slots_per_layer : 0;
    double keep = moe ? hy_plan_routing_keep(d, q) : 1;
    for (int n = 1; n <= nmax; n++) {
        double io_bytes = 0, usum = 0, msum = 0, xmem = 0;
        for (int l = 0; moe && l < L; l++) {
            if (!has[l]) continue;
            layer_shares(d, q, l, keep, sh);
            double u = 0, m = 0;
            for (int e = 0; e < E; e++) {
                double qe = k * sh[e] > 1 ? 1 : k * sh[e];
                double pe = 1 - pow(1 - qe, n); /* expert e is in the union of n tokens */
                u += pe;
                double cached = e + 1 <= slots ? 1 : e < slots ? slots - e : 0;
                m += pe * (1 - cached);
            }
            usum += u;
            msum += m;
            io_bytes += m * slice[l];
            xmem += x_touched / n_lay * u / k;
        }
        if (pl->mode != HY_MODE_EXPERT) io_bytes = (double)pl->pred_io_bytes; /* streamed groups: once per pass */
        double mem = moe ? fixed_mem + xmem : (double)pl->pred_compute_bytes;
        double io_s = io_bytes / read_bw, mem_s = mem / mem_bw;
        cost[n] = io_s > mem_s ? io_s : mem_s;
        if (uni) uni[n] = n_lay ? usum / n_lay : 0;
        if (miss) miss[n] = n_lay ? msum / n_lay : 0;
    }
    free(slice);
    free(sh);
    free(has);
    return 0;
}

int hy_spec_model_make(const hy_model_desc *d, const hy_plan_params *q, const hy_plan *with_draft,
                       const hy_plan *plain, double draft_tok_s, int kmax, hy_spec_model *m) {
    memset(m, 0, sizeof *m);
    m->kmax = kmax < 1 ? 1 : kmax > HY_SPEC_KMAX ? HY_SPEC_KMAX : kmax;
    m->moe = d->n_expert > 1;
    m->top_k = m->moe ? experts_used(d) : 1;
    m->draft_tok_s = draft_tok_s > 0 ? draft_tok_s : 0;
    m->accept = HY_SPEC_ACCEPT_PRIOR;
    double c[HY_SPEC_KMAX + 2];
    if (pass_costs(d, q, with_draft, m->kmax + 1, c, m->union_x, m->miss_x)) return -1;
    for (int k = 0; k <= m->kmax; k++) m->pass_s[k] = c[k + 1];
    if (plain && plain != with_draft) {
        double c1[2];
        if (pass_costs(d, q, plain, 1, c1, NULL, NULL)) return -1;
        m->plain_s = c1[1];
    } else {
        m->plain_s = c[1];
    }
    for (int l = 0; m->moe && l < d->n_layer; l++) {
        bool has = false;
        for (int64_t i = 0; i < d->n_tensors && !has; i++)
            has = d->tensors[i].role == HY_ROLE_EXPERT && d->tensors[i].layer == l;
        m->n_layers += has;
    }
    return 0;
}

double hy_spec_tokens_per_round(double a, int k) {
    if (a <= 0) return 1;
    if (a >= 1) return k + 1;
    return (1 - pow(a, k + 1)) / (1 - a);
}

double hy_spec_model_gain(const hy_spec_model *m, double a, int k, bool vs_whole) {
    if (k < 0) k = 0;
    if (k > m->kmax) k = m->kmax;
    double base = vs_whole ? m->plain_s : m->pass_s[0];
    double t = k * m->draft_tok_s + m->pass_s[k];
    return t > 0 && base > 0 ? hy_spec_tokens_per_round(a, k) * base / t : 1;
}

int hy_spec_model_best_k(const hy_spec_model *m, double a, bool vs_whole, double *gain) {
    int best = 1;
    double g = hy_spec_model_gain(m, a, 1, vs_whole);
    for (int k = 2; k <= m->kmax; k++) {
        double x = hy_spec_model_gain(m, a, k, vs_whole);
        if (x > g) g = x, best = k;
    }
    if (gain) *gain = g;
    return best;
}

double hy_spec_model_breakeven(const hy_spec_model *m, int k, bool vs_whole) {
    if (hy_spec_model_gain(m, 1.0, k, vs_whole) < 1) return 2; /* not even at full acceptance */
    double lo = 0, hi = 1;
    for (int i = 0; i < 40; i++) {
        double mid = (lo + hi) / 2;
        if (hy_spec_model_gain(m, mid, k, vs_whole) >= 1) hi = mid;
        else lo = mid;
    }
    return hi;
}

int hy_spec_open_draft(const char *path, int n_ctx, int n_threads, bool verbose, hy_session **out,
                       char *err, size_t errlen) {
    /* a session of its own, forced full-resident: hypura's resident load (huge
     * pages, llama.cpp's repacked kernels), ~5x faster drafting here than
     * libllama's plain CPU buffers */
    hy_session_params p = hy_session_default_params();
    p.model_path = path;
    p.mem_budget = UINT64_MAX / 4; /* charged to the target's budget instead (hy_session_params.draft_path) */
    p.gpu_budget = HY_GPU_NONE;
    p.mode = HY_MODE_RESIDENT;
    p.no_profile_storage = true;
    p.no_persist_stats = true;
    p.engine.n_ctx = n_ctx;
    p.engine.n_batch = HY_SPEC_DRAFT_BATCH;
    p.engine.n_threads = n_threads;
    p.engine.verbose = verbose;
    p.engine.progress = false;
    char why[HY_ERRLEN];
    if (hy_session_open(&p, out, why, sizeof why)) return hy_fail(err, errlen, "draft model: %s", why);
    return 0;
}

/* ---- sampling helpers ---- */

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1p-53; }

/* the first maximum, as libllama's greedy sampler picks it */
static llama_token argmax(const float *l, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[best]) best = i;
    return best;
}

/* The distribution the sampler chain (top-k, top-p, temperature) leaves over
 * the vocabulary, as dense probabilities in out[n]. */
static void filtered_probs(struct llama_sampler *filter, const float *logits, int n, llama_token_data *cand,
                           float *out) {
    for (int i = 0; i < n; i++) cand[i] = (llama_token_data){.id = i, .logit = logits[i], .p = 0};
    llama_token_data_array cur = {.data = cand, .size = (size_t)n, .selected = -1, .sorted = false};
    llama_sampler_apply(filter, &cur);
    memset(out, 0, (size_t)n * sizeof *out);
    float mx = -INFINITY;
    for (size_t i = 0; i < cur.size; i++)
        if (cur.data[i].logit > mx) mx = cur.data[i].logit;
    double sum = 0;
    for (size_t i = 0; i < cur.size; i++) {
        if (!isfinite(cur.data[i].logit)) continue;
        double e = exp((double)cur.data[i].logit - mx);
        out[cur.data[i].id] = (float)e;
        sum += e;
    }
    if (sum > 0)
        for (size_t i = 0; i < cur.size; i++) out[cur.data[i].id] = (float)(out[cur.data[i].id] / sum);
}

static llama_token sample_dense(const float *p, int n, uint64_t *rng) {
    double u = rng_unit(rng), c = 0;
    int last = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] <= 0) continue;
        c += p[i];
        last = i;
        if (u < c) return i;
    }
    return last; /* rounding: the last token with mass */
}

/* ---- batches ---- */

static int decode_at(struct llama_context *ctx, struct llama_batch *b, const llama_token *toks, int n, int pos0,
                     bool all_logits, char *err, size_t errlen) {
    b->n_tokens = n;
    for (int i = 0; i < n; i++) {
        b->token[i] = toks[i];
        b->pos[i] = pos0 + i;
        b->n_seq_id[i] = 1;
        b->seq_id[i][0] = 0;
        b->logits[i] = all_logits || i == n - 1;
    }
    int r = llama_decode(ctx, *b);
    if (r != 0) {
        char why[HY_ERRLEN];
        hy_engine_last_error(why, sizeof why);
        return hy_fail(err, errlen, "decode failed (code %d): %s", r, why);
    }
    return 0;
}

/* decode toks[0..n) at pos0.. in chunks of at most n_batch, logits of the last */
static int decode_chunks(struct llama_context *ctx, struct llama_batch *b, int n_batch, const llama_token *toks, int n,
                         int pos0, char *err, size_t errlen) {
    for (int i = 0; i < n; i += n_batch) {
        int m = n - i < n_batch ? n - i : n_batch;
        if (decode_at(ctx, b, toks + i, m, pos0 + i, false, err, errlen)) return -1;
    }
    return 0;
}

struct emitter {
    const struct llama_vocab *vocab;
    const hy_sample_params *sp;
    hy_piece_cb on_piece;
    void *piece_ud;
    hy_logits_cb on_logits;
    void *logits_ud;
    hy_gen_stats *st;
    int n_vocab, n_ctx;
    char pending[512];
    size_t n_pending;
};

/* hand out one token as plain generation does; false when generation ends
 * here (st->stop_reason set). pos: the token's position. */
static bool emit(struct emitter *em, llama_token tok, const float *logits, int pos) {
    hy_gen_stats *st = em->st;
    if (em->on_logits) em->on_logits(logits, em->n_vocab, em->logits_ud);
    if (llama_vocab_is_eog(em->vocab, tok)) {
        st->stop_reason = "stop";
        return false;
    }
    char piece[256];
    int len = llama_token_to_piece(em->vocab, tok, piece, sizeof piece, 0, false);
    if (len < 0) len = 0;
    if (em->n_pending + (size_t)len > sizeof em->pending) em->n_pending = 0;
    memcpy(em->pending + em->n_pending, piece, (size_t)len);
    em->n_pending += (size_t)len;
    size_t ready = hy_utf8_complete_prefix(em->pending, em->n_pending);
    bool go_on = true;
    if (ready > 0 && em->on_piece) go_on = em->on_piece(em->pending, ready, em->piece_ud);
    memmove(em->pending, em->pending + ready, em->n_pending - ready);
    em->n_pending -= ready;
    st->n_gen++;
    if (!go_on) {
        st->stop_reason = "cancelled";
        return false;
    }
    if (em->sp->n_predict >= 0 && st->n_gen >= em->sp->n_predict) {
        st->stop_reason = "length";
        return false;
    }
    if (pos + 1 >= em->n_ctx) {
        st->stop_reason = "context";
        return false;
    }
    return true;
}

static double ema(double old, double x, bool first) { return first ? x : 0.7 * old + 0.3 * x; }

int hy_spec_generate(hy_engine *te, hy_engine *de, const char *prompt, const hy_sample_params *sp,
                     const hy_spec_params *pp, hy_piece_cb on_piece, void *piece_ud, hy_logits_cb on_logits,
                     void *logits_ud, hy_gen_stats *st, hy_spec_stats *ss, char *err, size_t errlen) {
    hy_gen_stats lst;
    hy_spec_stats lss;
    if (!st) st = &lst;
    if (!ss) ss = &lss;
    memset(st, 0, sizeof *st);
    memset(ss, 0, sizeof *ss);
    if (hy_spec_check_vocab(hy_engine_model(te), hy_engine_model(de), err, errlen)) return -1;
    struct llama_context *tc = hy_engine_context(te), *dc = hy_engine_context(de);
    const struct llama_vocab *vocab = llama_model_get_vocab(hy_engine_model(te));
    int n_vocab = llama_vocab_n_tokens(vocab);
    int n_ctx = hy_engine_n_ctx(te);
    if (hy_engine_n_ctx(de) < n_ctx) n_ctx = hy_engine_n_ctx(de);
    int kmax = pp->draft_max < 0 ? 0 : pp->draft_max > 64 ? 64 : pp->draft_max;
    const hy_session *ts = pp->session;
    const hy_spec_model *smodel = ts ? ts->spec_model : NULL, *model = pp->adaptive ? smodel : NULL;
    hy_stream *xs = ts && ts->stream && ts->plan.mode == HY_MODE_EXPERT ? ts->stream : NULL;
    const bool trace = getenv("HYPURA_SPEC_TRACE") != NULL; /* a line per drafted round: what the model saw */

    int32_t *ptoks = NULL;
    int n = 0;
    if (hy_engine_tokenize(te, prompt, true, &ptoks, &n, err, errlen)) return -1;
    if (n == 0) {
        free(ptoks);
        return hy_fail(err, errlen, "empty prompt");
    }
    if (n >= n_ctx) {
        free(ptoks);
        return hy_fail(err, errlen, "prompt of %d tokens does not fit the context of %d tokens", n, n_ctx);
    }
    st->n_prompt = st->n_prompt_eval = n;
    hy_engine_reset(te);
    hy_engine_reset(de);

    int rc = -1;
    int k = kmax; /* tokens to draft next round */
    int n_batch_t = (int)llama_n_batch(tc), n_batch_d = (int)llama_n_batch(dc);
    int bcap = n_batch_t > n_batch_d ? n_batch_t : n_batch_d;
    if (bcap < kmax + 1) bcap = kmax + 1;
    struct llama_batch bt = llama_batch_init(bcap, 0, 1), bd = llama_batch_init(bcap, 0, 1);
    llama_token *toks = malloc((size_t)(n_ctx + 1) * sizeof *toks);
    float *q = NULL, *p = NULL;
    llama_token_data *cand = NULL;
    struct llama_sampler *filter = NULL;
    bool greedy = sp->temp <= 0;
    if (!greedy) {
        q = malloc((size_t)(kmax > 0 ? kmax : 1) * (size_t)n_vocab * sizeof *q);
        p = malloc((size_t)n_vocab * sizeof *p);
        cand = malloc((size_t)n_vocab * sizeof *cand);
        filter = llama_sampler_chain_init(llama_sampler_chain_default_params());
        if (sp->top_k > 0) llama_sampler_chain_add(filter, llama_sampler_init_top_k(sp->top_k));
        if (sp->top_p > 0 && sp->top_p < 1) llama_sampler_chain_add(filter, llama_sampler_init_top_p(sp->top_p, 1));
        llama_sampler_chain_add(filter, llama_sampler_init_temp(sp->temp));
    }
    uint64_t rng = (uint64_t)sp->seed * 0x2545F4914F6CDD1Dull + 1;
    if (!toks || !bt.token || !bd.token || (!greedy && (!q || !p || !cand || !filter))) {
        hy_fail(err, errlen, "out of memory");
        goto done;
    }
    memcpy(toks, ptoks, (size_t)n * sizeof *toks);

    struct emitter em = {.vocab = vocab, .sp = sp, .on_piece = on_piece, .piece_ud = piece_ud, .on_logits = on_logits,
                         .logits_ud = logits_ud, .st = st, .n_vocab = n_vocab, .n_ctx = n_ctx};
    st->stop_reason = "length";
    double t0 = hy_now();
    if (decode_chunks(tc, &bt, n_batch_t, toks, n, 0, err, errlen)) goto done;
    st->t_prompt_s = hy_now() - t0;
    double t1 = hy_now();
    if (sp->n_predict == 0) {
        rc = 0;
        goto finish;
    }

    /* the first token: from the prompt's pass */
    const float *lg = llama_get_logits_ith(tc, -1);
    llama_token x;
    if (greedy) x = argmax(lg, n_vocab);
    else {
        filtered_probs(filter, lg, n_vocab, cand, p);
        x = sample_dense(p, n_vocab, &rng);
    }
    int n_past = n; /* target KV holds toks[0..n_past); toks[n_past] is the last token, not yet decoded */
    int n_d = 0;    /* draft KV holds toks[0..n_d) */
    toks[n_past] = x;
    if (!emit(&em, x, lg, n_past)) {
        rc = 0;
        goto finish;
    }

    /* adaptation */
    /* plain passes left while drafting is off; the next cool-off; k after it. The
     * first pass is plain when adapting: the time of a plain pass is what drafting
     * has to beat */
    if (model && k > HY_SPEC_PROBE_K) k = HY_SPEC_PROBE_K; /* a probe: acceptance and costs are not measured yet */
    int off_left = pp->adaptive && kmax > 0 ? 1 : 0, cool = 8, k_after = k;
    /* one expert's slices in one layer, averaged over the layers whose experts stream */
    double x_slice = 0;
    if (xs) {
        double sum = 0;
        bool *has = calloc((size_t)ts->desc->n_layer, sizeof *has);
        for (int64_t i = 0; has && i < ts->desc->n_tensors; i++) {
            const hy_tensor_info *t = &ts->desc->tensors[i];
            if (ts->plan.tier[i] != HY_TIER_NVME || t->role != HY_ROLE_EXPERT || t->layer < 0 ||
                t->layer >= ts->desc->n_layer)
                continue;
            sum += (double)t->expert_stride;
            if (!has[t->layer]) ss->x_layers++;
            has[t->layer] = true;
        }
        free(has);
        x_slice = ss->x_layers ? sum / ss->x_layers : 0;
    }
    int spec_rounds = 0;
    double e_tokens = 0, e_round_s = 0, e_plain_s = 0, e_verify_s = 0, e_row_s = 0;
    bool have_row = false;
    bool have_plain = false;
    llama_token drafted[65];

    for (;;) {
        int kk = off_left > 0 ? 0 : k;
        if (kk > n_ctx - 1 - n_past) kk = n_ctx - 1 - n_past;
        if (kk > n_batch_t - 1) kk = n_batch_t - 1; /* the verify batch is one ubatch */
        if (sp->n_predict >= 0 && kk > sp->n_predict - st->n_gen - 1) kk = sp->n_predict - st->n_gen - 1;
        if (kk < 0) kk = 0;
        double r0 = hy_now();
        /* draft kk tokens after toks[n_past] */
        if (kk > 0) {
            if (decode_chunks(dc, &bd, n_batch_d, toks + n_d, n_past + 1 - n_d, n_d, err, errlen)) goto done;
            n_d = n_past + 1;
            for (int j = 0; j < kk; j++) {
                const float *dl = llama_get_logits_ith(dc, -1);
                llama_token d;
                if (greedy) d = argmax(dl, n_vocab);
                else {
                    float *qj = q + (size_t)j * n_vocab;
                    filtered_probs(filter, dl, n_vocab, cand, qj);
                    d = sample_dense(qj, n_vocab, &rng);
                }
                drafted[j] = d;
                if (j + 1 < kk) {
                    if (decode_at(dc, &bd, &d, 1, n_d, false, err, errlen)) goto done;
                    n_d++;
                }
            }
        }
        double r1 = hy_now();
        ss->t_draft_s += r1 - r0;
        /* verify: the last token and the drafts, one pass, logits for each */
        llama_token vb[65];
        vb[0] = toks[n_past];
        memcpy(vb + 1, drafted, (size_t)kk * sizeof *vb);
        hy_stream_stats x0, x1;
        if (xs) hy_stream_get_stats(xs, &x0);
        if (decode_at(tc, &bt, vb, kk + 1, n_past, true, err, errlen)) goto done;
        double r2 = hy_now();
        if (xs) {
            /* the routed slices of a pass: each (layer, expert) of the batch's union once */
            hy_stream_get_stats(xs, &x1);
            uint64_t u = x_slice > 0 ? (uint64_t)((double)(x1.x_routed_bytes - x0.x_routed_bytes) / x_slice + 0.5) : 0;
            uint64_t rd = x1.bytes_read - x0.bytes_read;
            if (kk == 0) ss->x_union_plain += u, ss->x_read_plain += rd;
            else ss->x_union_verify += u, ss->x_read_verify += rd;
        }
        if (kk > 0) ss->verify_tokens += (uint64_t)kk + 1;
        ss->t_verify_s += r2 - r1;
        ss->passes++;
        if (kk == 0) ss->plain_passes++;
        ss->drafted += (uint64_t)kk;

        /* accept */
        int a = 0;
        bool go = true;
        for (;;) {
            const float *tl = llama_get_logits_ith(tc, a);
            llama_token y;
            bool keep;
            if (greedy) {
                y = argmax(tl, n_vocab);
                keep = a < kk && y == drafted[a];
            } else {
                filtered_probs(filter, tl, n_vocab, cand, p);
                if (a < kk) {
                    const float *qa = q + (size_t)a * n_vocab;
                    llama_token d = drafted[a];
                    keep = qa[d] > 0 && rng_unit(&rng) * qa[d] < p[d];
                    if (keep) y = d;
                    else {
                        /* the residual max(0, p - q), renormalised */
                        double sum = 0;
                        for (int i = 0; i < n_vocab; i++) {
                            float r = p[i] - qa[i];
                            p[i] = r > 0 ? r : 0;
                            sum += p[i];
                        }
                        if (sum > 0) {
                            for (int i = 0; i < n_vocab; i++) p[i] = (float)(p[i] / sum);
                            y = sample_dense(p, n_vocab, &rng);
                        } else {
                            filtered_probs(filter, tl, n_vocab, cand, p);
                            y = sample_dense(p, n_vocab, &rng);
                        }
                    }
                } else {
                    keep = false;
                    y = sample_dense(p, n_vocab, &rng);
                }
            }
            toks[n_past + 1 + a] = y;
            ss->pass_tokens++;
            go = emit(&em, y, tl, n_past + 1 + a);
            if (!keep || !go) break;
            a++;
        }
        ss->accepted += (uint64_t)a;
        n_past += a + 1;
        /* K/V of the rejected drafts out of both caches */
        llama_memory_seq_rm(llama_get_memory(tc), 0, n_past, -1);
        if (n_d > n_past) n_d = n_past;
        llama_memory_seq_rm(llama_get_memory(dc), 0, n_d, -1);
        if (!go) break;

        /* adapt k, and whether drafting pays at all */
        double round_s = hy_now() - r0;
        if (kk == 0) {
            e_plain_s = ema(e_plain_s, round_s, !have_plain);
            have_plain = true;
            if (off_left > 0 && --off_left == 0) k = k_after;
        } else {
            e_tokens = ema(e_tokens, a + 1, spec_rounds == 0);
            e_round_s = ema(e_round_s, round_s, spec_rounds == 0);
            e_verify_s = ema(e_verify_s, r2 - r1, spec_rounds == 0);
            spec_rounds++;
            if (pp->adaptive) {
                if (a == kk) k = k + 2 > kmax ? kmax : k + 2;
                else if (k > 1) k--;
                /* a plain pass costs about a verify pass when none was measured */
                double plain = have_plain ? e_plain_s : e_verify_s;
                /* the model, with the acceptance measured so far (the prior weighs a few
                 * drafted tokens) and the measured times of a plain pass and a drafted
                 * token: the best k, and whether any k pays */
                double mgain = 2, acc = 0;
                int kb = kmax;
                if (model) {
                    acc = ((double)ss->accepted + model->accept * HY_SPEC_ACCEPT_PRIOR_N) /
                          ((double)ss->drafted + HY_SPEC_ACCEPT_PRIOR_N);
                    hy_spec_model mm = *model;
                    double scale = mm.pass_s[0] > 0 ? plain / mm.pass_s[0] : 0; /* measured / predicted */
                    if (scale > 0) {
                        for (int j = 0; j <= mm.kmax; j++) mm.pass_s[j] *= scale;
                        /* what the model leaves out, the CPU time of each extra row of a verify
                         * pass, from the measured ones (only once a plain pass was measured) */
                        int kv = kk <= mm.kmax ? kk : mm.kmax;
                        if (have_plain && kv > 0) {
                            double row = (r2 - r1 - mm.pass_s[kv]) / kv;
                            e_row_s = ema(e_row_s, row > 0 ? row : 0, !have_row);
                            have_row = true;
                        }
                        for (int j = 0; j <= mm.kmax; j++) mm.pass_s[j] += e_row_s * j;
                        mm.draft_tok_s = ss->drafted ? ss->t_draft_s / (double)ss->drafted : mm.draft_tok_s;
                        kb = hy_spec_model_best_k(&mm, acc, false, &mgain);
                        if (trace) {
                            fprintf(stderr, "[spec] round k %d: %d accepted, %.3f s verify; acceptance %.2f, plain %.3f s "
                                            "(x%.2f the model), row %.3f s, draft %.4f s; gain",
                                    kk, a, r2 - r1, acc, plain, scale, e_row_s, mm.draft_tok_s);
                            for (int j = 1; j <= mm.kmax && j <= 16; j++)
                                fprintf(stderr, " %d:%.2f", j, hy_spec_model_gain(&mm, acc, j, false));
                            fputc('\n', stderr);
                        }
                        k = kb < kmax ? kb : kmax; /* the model's k for the acceptance measured so far */
                    }
                }
                bool slow = spec_rounds >= 2 && e_tokens / e_round_s < 0.95 / plain;
                bool nopay = spec_rounds >= 2 && mgain < 1;
                if (slow || nopay) {
                    ss->n_off++;
                    if (slow)
                        snprintf(ss->decision, sizeof ss->decision,
                                 "off for %d passes after %llu tokens: measured %.2f tok/s drafting against %.2f plain",
                                 cool, (unsigned long long)st->n_gen, e_tokens / e_round_s, 1.0 / plain);
                    else
                        snprintf(ss->decision, sizeof ss->decision,
                                 "off for %d passes after %llu tokens: model predicts %.2fx at best (k %d) at %.0f%% "
                                 "acceptance",
                                 cool, (unsigned long long)st->n_gen, mgain, kb, 100 * acc);
                    off_left = cool;
                    k_after = kmax < HY_SPEC_PROBE_K ? kmax : HY_SPEC_PROBE_K; /* try again, small */
                    cool = cool * 2 > 256 ? 256 : cool * 2;
                    spec_rounds = 0;
                } else if (spec_rounds >= 2) {
                    cool = 8;
                }
            }
        }
    }
    rc = 0;
finish:
    if (em.n_pending && on_piece) on_piece(em.pending, em.n_pending, piece_ud);
    st->t_gen_s = hy_now() - t1;
    ss->k_last = k;
    if (smodel && smodel->moe) {
        ss->x_union_pred_plain = smodel->union_x[1];
        uint64_t nv = ss->passes - ss->plain_passes;
        if (nv) { /* at the mean verify batch, between the neighbouring whole sizes */
            double n = (double)ss->verify_tokens / (double)nv;
            int lo = (int)n;
            if (lo > smodel->kmax) lo = smodel->kmax;
            double f = n - lo;
            ss->x_union_pred_verify = smodel->union_x[lo] * (1 - f) + smodel->union_x[lo + 1] * f;
        }
    }
done:
    (void)0;
    free(ptoks);
    free(toks);
    free(q);
    free(p);
    free(cand);
    if (filter) llama_sampler_free(filter);
    llama_batch_free(bt);
    llama_batch_free(bd);
    hy_engine_reset(te);
    hy_engine_reset(de);
    return rc;
}
