/* Continuous batching over one libllama context (see hy_batch.h). */
#include "engine/hy_batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/hy_util.h"

enum slot_state { SLOT_FREE, SLOT_PROMPT, SLOT_GEN };

typedef struct {
    enum slot_state st;
    int32_t *cached;        /* tokens whose K/V this sequence holds, in order (<= n_ctx_slot) */
    int      n_cached;
    int32_t *prompt;        /* the running request's prompt */
    int      n_prompt;
    int      n_ctx;         /* the running request's context */
    uint64_t order;         /* admission order (prompts are read first come, first served) */
    uint64_t last_used;     /* for least-recently-used reuse of a kept cache */
    hy_sample_params sp;
    struct llama_sampler *smp;
    llama_token cur;        /* generating: the sampled token to decode next */
    int      row;           /* this step's row with logits, or -1 */
    char     pending[512];  /* bytes of an incomplete UTF-8 character */
    size_t   n_pending;
    hy_gen_stats stats;
    double   t_add, t_first;
    hy_batch_cbs cbs;
    char    *text;          /* the prompt as given, for a runner (hy_batcher_set_runner) */
} slot_t;

struct hy_batcher {
    hy_engine *e;
    struct llama_context *ctx;
    const struct llama_vocab *vocab;
    int n_slots, n_ctx_slot, n_ubatch, n_vocab;
    int n_cells;            /* the cache's cells */
    int grave;              /* the holding sequence (see slot_retire), or -1 when the context has none */
    int n_grave;            /* cells it holds */
    int n_gc, n_reset;      /* times the grave was freed for room; times the cache was cleared */
    int pad_rows;           /* steps padded to a multiple of this many rows (hy_batcher_params) */
    bool want_room;         /* a request waits for room that only an idle, cleared cache gives */
    bool prompt_cache;
    bool trace;             /* HYPURA_BATCH_TRACE: the grave's frees on stderr (the server logs each step) */
    slot_t *slots;
    struct llama_batch batch;
    uint64_t clock;
    hy_batch_step_info last; /* the last step (hy_batcher_last_step) */
    hy_batch_runner runner; /* one slot: requests run whole by it (hy_batcher_set_runner) */
    void *runner_ud;
};

int hy_batcher_new(hy_engine *e, const hy_batcher_params *p, hy_batcher **out, char *err, size_t errlen) {
    *out = NULL;
    struct llama_context *ctx = hy_engine_context(e);
    int n_seq = (int)llama_n_seq_max(ctx);
    if (p->n_slots < 1 || p->n_slots > n_seq)
        return hy_fail(err, errlen, "%d sequences asked, the context holds %d", p->n_slots, n_seq);
    hy_batcher *b = calloc(1, sizeof *b);
    if (!b) return hy_fail(err, errlen, "out of memory");
    b->e = e;
    b->ctx = ctx;
    b->vocab = llama_model_get_vocab(hy_engine_model(e));
    b->n_vocab = llama_vocab_n_tokens(b->vocab);
    b->n_slots = p->n_slots;
    b->n_ctx_slot = p->n_ctx_slot > 0 ? p->n_ctx_slot : hy_engine_n_ctx(e) / p->n_slots;
    if ((int64_t)b->n_ctx_slot * b->n_slots > hy_engine_n_ctx(e)) b->n_ctx_slot = hy_engine_n_ctx(e) / p->n_slots;
    b->n_ubatch = (int)llama_n_ubatch(ctx);
    if ((int)llama_n_batch(ctx) < b->n_ubatch) b->n_ubatch = (int)llama_n_batch(ctx);
    b->prompt_cache = p->prompt_cache;
    b->trace = getenv("HYPURA_BATCH_TRACE") != NULL;
    b->n_cells = (int)llama_n_ctx(ctx);
    b->grave = n_seq > p->n_slots ? p->n_slots : -1;
    b->pad_rows = b->grave >= 0 && p->pad_rows > 1 ? p->pad_rows : 0;
    if (b->n_ctx_slot < 2 || b->n_ubatch < b->n_slots) {
        free(b);
        return hy_fail(err, errlen, "%d sequences do not fit a context of %d tokens and a batch of %d", p->n_slots,
                       hy_engine_n_ctx(e), (int)llama_n_ubatch(ctx));
    }
    b->slots = calloc((size_t)b->n_slots, sizeof *b->slots);
    if (!b->slots) {
        free(b);
        return hy_fail(err, errlen, "out of memory");
    }
    for (int i = 0; i < b->n_slots; i++) {
        b->slots[i].cached = malloc((size_t)b->n_ctx_slot * sizeof(int32_t));
        if (!b->slots[i].cached) {
            hy_batcher_free(b);
            return hy_fail(err, errlen, "out of memory");
        }
        b->slots[i].row = -1;
    }
    b->batch = llama_batch_init(b->n_ubatch, 0, 1);
    if (!b->batch.token) {
        hy_batcher_free(b);
        return hy_fail(err, errlen, "out of memory");
    }
    /* whatever `run`-style use left in the cache belongs to no slot */
    llama_memory_clear(llama_get_memory(ctx), true);
    hy_engine_reset(e);
    *out = b;
    return 0;
}

void hy_batcher_free(hy_batcher *b) {
    if (!b) return;
    for (int i = 0; b->slots && i < b->n_slots; i++) {
        free(b->slots[i].cached);
        free(b->slots[i].prompt);
        free(b->slots[i].text);
        if (b->slots[i].smp) llama_sampler_free(b->slots[i].smp);
    }
    free(b->slots);
    if (b->batch.token) llama_batch_free(b->batch);
    free(b);
}

int hy_batcher_set_runner(hy_batcher *b, hy_batch_runner fn, void *ud, char *err, size_t errlen) {
    if (b->n_slots != 1) return hy_fail(err, errlen, "a request runner needs one sequence slot, not %d", b->n_slots);
    b->runner = fn;
    b->runner_ud = ud;
    return 0;
}

int hy_batcher_n_slots(const hy_batcher *b) { return b->n_slots; }
int hy_batcher_n_ctx_slot(const hy_batcher *b) { return b->n_ctx_slot; }

int hy_batcher_busy(const hy_batcher *b) {
    int n = 0;
    for (int i = 0; i < b->n_slots; i++) n += b->slots[i].st != SLOT_FREE;
    return n;
}

void hy_batcher_slot_info(const hy_batcher *b, int slot, hy_batch_slot_info *out) {
    memset(out, 0, sizeof *out);
    if (slot < 0 || slot >= b->n_slots) return;
    const slot_t *s = &b->slots[slot];
    out->busy = s->st != SLOT_FREE;
    out->prompt = s->st == SLOT_PROMPT;
    out->n_tokens = s->n_cached;
    out->n_ctx = out->busy ? s->n_ctx : b->n_ctx_slot;
    out->n_gen = out->busy ? s->stats.n_gen : 0;
}

/* The cells of slot i's positions [p0, end) leave the slot. In the one cache
 * all sequences share, libllama puts each step's tokens into the first free
 * cells from its search head (restarting from cell 0 when many cells below it
 * are free), and freeing cells moves that head down to them: a sequence's next
 * tokens would then land below its earlier ones, and flash attention, which
 * sums a query's keys in cell order, would round them otherwise than alone. So
 * the cells go to a holding sequence (the grave) that nothing reads: the cache
 * has no holes, new cells are always taken above the used ones, every
 * sequence's cells stay in position order. The grave is emptied when nothing
 * is kept (the whole cache is then cleared) or when room is needed. */
static void slot_retire(hy_batcher *b, int i, int p0) {
    slot_t *s = &b->slots[i];
    if (p0 >= s->n_cached) return;
    struct llama_memory_i *mem = llama_get_memory(b->ctx);
    if (b->grave >= 0) {
        llama_memory_seq_cp(mem, i, b->grave, p0, -1);
        b->n_grave += s->n_cached - p0;
    }
    if (!llama_memory_seq_rm(mem, i, p0, -1)) llama_memory_seq_rm(mem, i, -1, -1);
    s->n_cached = p0;
}

/* the slot's sequence forgets everything */
static void slot_clear(hy_batcher *b, int i) { slot_retire(b, i, 0); }

/* free the grave's cells: room is needed (the holes may put later cells of
 * the sequences alive now below their earlier ones) */
static void grave_free(hy_batcher *b) {
    if (b->grave < 0 || b->n_grave == 0) return;
    llama_memory_seq_rm(llama_get_memory(b->ctx), b->grave, -1, -1);
    b->n_grave = 0;
    b->n_gc++;
    if (b->trace) fprintf(stderr, "[batch] grave freed for room (%d times)\n", b->n_gc);
}

/* Nothing runs: when no slot keeps tokens, or the grave holds a quarter of
 * the cache (it would soon be freed for room while requests run, and its holes
 * would scatter their cells), start again from an empty cache, cells from 0
 * (the kept prompts are dropped then). */
static void cache_tidy(hy_batcher *b, int keep_slot) {
    bool kept = false;
    for (int i = 0; i < b->n_slots; i++) {
        if (b->slots[i].st != SLOT_FREE && i != keep_slot) return;
        kept |= b->slots[i].n_cached > 0;
    }
    if (kept && b->n_grave * 4 <= b->n_cells && !b->want_room) return;
    b->want_room = false;
    llama_memory_clear(llama_get_memory(b->ctx), true);
    for (int i = 0; i < b->n_slots; i++) b->slots[i].n_cached = 0;
    b->n_grave = 0;
    b->n_reset++;
}

/* cells a busy slot may still take: up to its prompt and token limit, within its context */
static int slot_need(const slot_t *s) {
    int cap = s->sp.n_predict >= 0 ? s->n_prompt + s->sp.n_predict : s->n_ctx;
    if (cap > s->n_ctx) cap = s->n_ctx;
    return cap > s->n_cached ? cap - s->n_cached : 0;
}

static int cells_used(const hy_batcher *b) {
    int n = b->n_grave;
    for (int i = 0; i < b->n_slots; i++) n += b->slots[i].n_cached;
    return n;
}

/* An ended request's slot is free again: its sampler and prompt go, its KV is the caller's */
static void slot_release(hy_batcher *b, slot_t *s) {
    if (s->smp) llama_sampler_free(s->smp);
    s->smp = NULL;
    free(s->prompt);
    s->prompt = NULL;
    s->st = SLOT_FREE;
    s->row = -1;
    s->last_used = ++b->clock;
}

/* The request in slot i has ended. Its KV stays for reuse only after a normal
 * end (drop false: its length, its end of generation, its owner's stop) with the
 * prompt cache on. */
static void slot_finish(hy_batcher *b, int i, const char *reason, int rc, const char *err, bool drop) {
    slot_t *s = &b->slots[i];
    if (rc == 0 && s->n_pending && strcmp(reason, "cancelled") != 0 && s->cbs.on_piece)
        s->cbs.on_piece(s->pending, s->n_pending, s->cbs.ud);
    s->n_pending = 0;
    s->stats.stop_reason = reason;
    double now = hy_now();
    if (s->t_first > 0) s->stats.t_gen_s = now - s->t_first;
    else s->stats.t_prompt_s = now - s->t_add;
    slot_release(b, s);
    if (rc != 0 || !b->prompt_cache || drop) slot_clear(b, i);
    hy_batch_cbs cbs = s->cbs;
    hy_gen_stats st = s->stats;
    memset(&s->cbs, 0, sizeof s->cbs);
    if (cbs.on_done) cbs.on_done(cbs.ud, rc, &st, err);
}

int hy_batcher_add(hy_batcher *b, const char *prompt, const hy_sample_params *sp, int n_ctx,
                   const hy_batch_cbs *cbs, char *err, size_t errlen) {
    if (n_ctx <= 0 || n_ctx > b->n_ctx_slot) n_ctx = b->n_ctx_slot;
    int32_t *toks = NULL;
    int n = 0;
    if (hy_engine_tokenize(b->e, prompt, true, &toks, &n, err, errlen)) return -1;
    if (n == 0) {
        free(toks);
        return hy_fail(err, errlen, "empty prompt");
    }
    if (n >= n_ctx) {
        free(toks);
        return hy_fail(err, errlen, "prompt of %d tokens does not fit the context of %d tokens", n, n_ctx);
    }
    /* a request waited for room: nothing runs now, start from an empty cache */
    if (b->want_room && hy_batcher_busy(b) == 0) cache_tidy(b, -1);
    /* the slot: the longest kept prefix when it is at least half the prompt (a
     * conversation's next turn; a short shared start such as BOS and a system line
     * is not worth placing the rest of the prompt after cells laid out by other
     * requests), else an empty slot, else the least recently used */
    int pick = -1, pick_keep = 0;
    for (int i = 0; i < b->n_slots; i++) {
        slot_t *s = &b->slots[i];
        if (s->st != SLOT_FREE || !b->prompt_cache) continue;
        int keep = 0;
        while (keep < s->n_cached && keep < n - 1 && s->cached[keep] == toks[keep]) keep++;
        if (keep > 0 && keep * 2 >= n && keep > pick_keep) pick = i, pick_keep = keep;
    }
    for (int i = 0; pick < 0 && i < b->n_slots; i++)
        if (b->slots[i].st == SLOT_FREE && b->slots[i].n_cached == 0) pick = i;
    for (int i = 0; i < b->n_slots && pick < 0; i++) {
        if (b->slots[i].st != SLOT_FREE) continue;
        int lru = i;
        for (int j = i + 1; j < b->n_slots; j++)
            if (b->slots[j].st == SLOT_FREE && b->slots[j].last_used < b->slots[lru].last_used) lru = j;
        pick = lru;
    }
    if (pick < 0) {
        free(toks);
        return hy_fail(err, errlen, "no free sequence slot");
    }
    slot_t *s = &b->slots[pick];
    /* Room without freeing the grave while requests run (freed cells would put their
     * later tokens below their earlier ones): what the running requests may still take
     * and this one's prompt and tokens. Short of it, the request waits until the batch
     * is idle and the cache is cleared. */
    if (b->grave >= 0 && hy_batcher_busy(b) > 0) {
        /* its cells in all: prompt and tokens, within its context (as slot_need counts them) */
        int cap = sp->n_predict >= 0 && sp->n_predict < n_ctx - n ? n + sp->n_predict : n_ctx;
        int need = cap - pick_keep + (b->n_slots > b->pad_rows ? b->n_slots : b->pad_rows);
        for (int i = 0; i < b->n_slots; i++)
            if (b->slots[i].st != SLOT_FREE) need += slot_need(&b->slots[i]);
        if (cells_used(b) + need > b->n_cells) {
            /* The running requests hold no cells yet (admitted together, as a burst of
             * requests is, none onto a kept prefix): no running sequence has cells that
             * new ones could be placed below, so the kept prompts and the grave go now,
             * as when the batch is idle, rather than the request waiting for that. */
            bool held = false;
            for (int i = 0; i < b->n_slots; i++) held |= b->slots[i].st != SLOT_FREE && b->slots[i].n_cached > 0;
            if (!held && cells_used(b) > 0) {
                llama_memory_clear(llama_get_memory(b->ctx), true);
                for (int i = 0; i < b->n_slots; i++) b->slots[i].n_cached = 0;
                b->n_grave = 0;
                b->n_reset++;
                need += pick_keep;
                pick_keep = 0;
                if (b->trace) fprintf(stderr, "[batch] cache cleared for room: the running requests held no cells yet\n");
            }
        }
        if (cells_used(b) + need > b->n_cells) {
            free(toks);
            b->want_room = true;
            hy_fail(err, errlen, "no room in the KV cache until the running requests end");
            return HY_BATCH_WAIT;
        }
    }
    if (pick_keep < s->n_cached) slot_retire(b, pick, pick_keep);
    if (s->n_cached == 0) cache_tidy(b, pick);
    char *text = b->runner ? strdup(prompt) : NULL;
    struct llama_sampler *smp = b->runner && !text ? NULL : hy_engine_make_sampler(sp);
    if (!smp) {
        free(toks);
        free(text);
        return hy_fail(err, errlen, "out of memory");
    }
    free(s->text);
    s->text = text;
    s->st = SLOT_PROMPT;
    s->prompt = toks;
    s->n_prompt = n;
    s->n_ctx = n_ctx;
    s->order = ++b->clock;
    s->last_used = s->order;
    s->sp = *sp;
    s->smp = smp;
    s->row = -1;
    s->n_pending = 0;
    memset(&s->stats, 0, sizeof s->stats);
    s->stats.n_prompt = n;
    s->stats.n_prompt_eval = n - s->n_cached;
    s->t_add = hy_now();
    s->t_first = 0;
    s->cbs = *cbs;
    return pick;
}

void hy_batcher_forget(hy_batcher *b, int slot) {
    if (slot < 0 || slot >= b->n_slots || b->slots[slot].st != SLOT_FREE) return;
    slot_clear(b, slot);
}

void hy_batcher_cancel(hy_batcher *b, int slot) {
    if (slot < 0 || slot >= b->n_slots || b->slots[slot].st == SLOT_FREE) return;
    slot_finish(b, slot, "cancelled", 0, NULL, true);
}

static void batch_add(hy_batcher *b, llama_token t, int pos, int seq, bool logits) {
    struct llama_batch *bt = &b->batch;
    int k = bt->n_tokens++;
    bt->token[k] = t;
    bt->pos[k] = pos;
    bt->n_seq_id[k] = 1;
    bt->seq_id[k][0] = seq;
    bt->logits[k] = logits;
}

/* The slot's logits are ready (its prompt ended, or its token was decoded):
 * sample its next token, in the order and with the checks of hy_engine_generate. */
static void slot_sample(hy_batcher *b, int i) {
    slot_t *s = &b->slots[i];
    if (s->t_first == 0) {
        s->t_first = hy_now();
        s->stats.t_prompt_s = s->t_first - s->t_add;
    }
    if (s->sp.n_predict >= 0 && s->stats.n_gen >= s->sp.n_predict) {
        slot_finish(b, i, "length", 0, NULL, false);
        return;
    }
    llama_token tok = llama_sampler_sample(s->smp, b->ctx, s->row);
    if (llama_vocab_is_eog(b->vocab, tok)) {
        slot_finish(b, i, "stop", 0, NULL, false);
        return;
    }
    char piece[256];
    int len = llama_token_to_piece(b->vocab, tok, piece, sizeof piece, 0, false);
    if (len < 0) len = 0;
    if (s->n_pending + (size_t)len > sizeof s->pending) s->n_pending = 0; /* never happens for valid UTF-8 */
    memcpy(s->pending + s->n_pending, piece, (size_t)len);
    s->n_pending += (size_t)len;
    size_t ready = hy_utf8_complete_prefix(s->pending, s->n_pending);
    bool go_on = true;
    if (ready > 0 && s->cbs.on_piece) go_on = s->cbs.on_piece(s->pending, ready, s->cbs.ud);
    memmove(s->pending, s->pending + ready, s->n_pending - ready);
    s->n_pending -= ready;
    s->stats.n_gen++;
    if (!go_on) {
        /* the owner stopped it (a stop string, or its client left): a normal end for the cache */
        s->n_pending = 0;
        slot_finish(b, i, "cancelled", 0, NULL, false);
        return;
    }
    if (s->sp.n_predict >= 0 && s->stats.n_gen >= s->sp.n_predict) {
        slot_finish(b, i, "length", 0, NULL, false); /* the last token is not decoded: nothing would read it */
        return;
    }
    if (s->n_cached + 1 >= s->n_ctx) {
        slot_finish(b, i, "context", 0, NULL, false);
        return;
    }
    s->cur = tok;
    s->st = SLOT_GEN;
}

/* A runner's request, whole (hy_batcher_set_runner): one slot, empty cache. */
static int run_whole(hy_batcher *b, char *err, size_t errlen) {
    slot_t *s = &b->slots[0];
    if (s->st != SLOT_PROMPT || (s->cbs.ready && !s->cbs.ready(s->cbs.ud))) return 0;
    slot_clear(b, 0);
    s->st = SLOT_GEN;
    hy_gen_stats st;
    memset(&st, 0, sizeof st);
    char why[HY_ERRLEN] = "";
    int rc = b->runner(b->runner_ud, s->text, &s->sp, s->n_ctx, &s->cbs, &st, why, sizeof why);
    free(s->text);
    s->text = NULL;
    s->n_cached = 0; /* the runner leaves the engine's cache empty */
    slot_release(b, s);
    if (!st.stop_reason) st.stop_reason = rc ? "error" : "length";
    hy_batch_cbs cbs = s->cbs;
    memset(&s->cbs, 0, sizeof s->cbs);
    if (cbs.on_done) cbs.on_done(cbs.ud, rc, &st, rc ? why : NULL);
    if (rc) return hy_fail(err, errlen, "%s", why);
    return st.n_prompt_eval + st.n_gen > 0 ? st.n_prompt_eval + st.n_gen : 1;
}

void hy_batcher_last_step(const hy_batcher *b, hy_batch_step_info *out) { *out = b->last; }

int hy_batcher_step(hy_batcher *b, char *err, size_t errlen) {
    memset(&b->last, 0, sizeof b->last);
    if (b->runner) return run_whole(b, err, errlen);
    b->batch.n_tokens = 0;
    int *prompt_rows = calloc((size_t)b->n_slots, sizeof *prompt_rows);
    if (!prompt_rows) return hy_fail(err, errlen, "out of memory");
    /* every generating slot that can take text: its last token */
    int n_gen = 0;
    for (int i = 0; i < b->n_slots; i++) {
        slot_t *s = &b->slots[i];
        s->row = -1;
        if (s->st != SLOT_GEN || (s->cbs.ready && !s->cbs.ready(s->cbs.ud))) continue;
        s->row = b->batch.n_tokens;
        batch_add(b, s->cur, s->n_cached, i, true);
        n_gen++;
    }
    /* prompts, first come first served. Nothing generating: a prompt longer than a
     * mixed step goes alone, in chunks of n_ubatch (as hy_engine_generate decodes
     * it); shorter ones go together, whole, as many as fit a mixed step (a burst
     * of requests reads its prompts in fewer passes over the weights). Beside
     * generating slots: at most HY_BATCH_PROMPT_ROWS and what keeps the step under
     * the flash-attention tile (at least a few tokens, so prompts move on also
     * with more generating slots than that). With padding (pad_rows) the padded
     * step stays under the tile too. */
    int max_rows = HY_BATCH_MIXED_ROWS;
    if (b->pad_rows > 1) max_rows = HY_BATCH_MIXED_ROWS / b->pad_rows * b->pad_rows;
    bool alone = n_gen == 0;
    int budget = alone ? b->n_ubatch : max_rows - n_gen;
    if (!alone && budget > HY_BATCH_PROMPT_ROWS) budget = HY_BATCH_PROMPT_ROWS;
    if (budget < 8) budget = 8;
    if (budget > b->n_ubatch - n_gen) budget = b->n_ubatch - n_gen;
    for (int n_taken = 0;; n_taken++) {
        int i = -1;
        for (int j = 0; j < b->n_slots; j++)
            if (b->slots[j].st == SLOT_PROMPT && !prompt_rows[j] && (i < 0 || b->slots[j].order < b->slots[i].order))
                i = j;
        if (i < 0 || budget <= 0) break;
        slot_t *s = &b->slots[i];
        int left = s->n_prompt - s->n_cached;
        if (alone && n_taken == 0 && left <= max_rows && budget > max_rows) budget = max_rows;
        if (alone && n_taken > 0 && left > budget) break; /* together only whole */
        int m = left < budget ? left : budget;
        for (int k = 0; k < m; k++)
            batch_add(b, s->prompt[s->n_cached + k], s->n_cached + k, i, k == left - 1);
        if (m == left) s->row = b->batch.n_tokens - 1;
        prompt_rows[i] = m;
        budget -= m;
        if (alone && left > max_rows) break; /* a long prompt, alone */
    }
    int n_tok = b->batch.n_tokens;
    if (n_tok == 0) {
        free(prompt_rows);
        return 0;
    }
    int room = n_tok + 1; /* with the lone step's row below, and the padding to pad_rows */
    if (b->pad_rows > 1) room = (room + b->pad_rows - 1) / b->pad_rows * b->pad_rows;
    if (cells_used(b) + room > b->n_cells) grave_free(b);
    /* One query row over 512 cells or more takes ggml-cpu's split-KV attention
     * (partial sums per thread), which rounds otherwise than the per-row kernel a
     * step of two or more rows uses, and the cells a lone short sequence sees
     * depend on what else is in the cache (libllama pads what attention spans
     * to 256 cells). A sequence of at most 256 cells alone would use the per-row
     * kernel, so give it a second row when the cache holds more than that: a
     * throwaway token of the grave's, whose output nobody reads. */
    if (n_tok == 1 && b->grave >= 0) {
        int seq = b->batch.seq_id[0][0];
        if (b->slots[seq].n_cached + 1 <= HY_BATCH_KV_PAD && cells_used(b) + 1 > HY_BATCH_KV_PAD) {
            llama_pos gp = llama_memory_seq_pos_max(llama_get_memory(b->ctx), b->grave);
            batch_add(b, b->batch.token[0], gp + 1, b->grave, false);
            b->n_grave++;
        }
    }
    /* padding to the repacked kernels' row group (hy_batcher_params.pad_rows): the grave's
     * throwaway tokens after every real row, so they take the step's highest cells and
     * leave no hole when they go right after it */
    int n_pad = 0;
    llama_pos pad_pos = 0;
    if (b->pad_rows > 1 && b->batch.n_tokens % b->pad_rows) {
        pad_pos = llama_memory_seq_pos_max(llama_get_memory(b->ctx), b->grave) + 1;
        /* (the lone step's row, when added, is the grave's last position: seq_pos_max
         * does not know it yet) */
        if (b->batch.n_tokens > 1 && b->batch.seq_id[b->batch.n_tokens - 1][0] == b->grave)
            pad_pos = b->batch.pos[b->batch.n_tokens - 1] + 1;
        while (b->batch.n_tokens % b->pad_rows && b->batch.n_tokens < b->n_ubatch) {
            batch_add(b, b->batch.token[0], pad_pos + n_pad, b->grave, false);
            n_pad++;
        }
    }
    double t_dec = hy_now();
    int r = llama_decode(b->ctx, b->batch);
    b->last.n_gen = n_gen;
    b->last.n_prompt = n_tok - n_gen;
    b->last.n_rows = b->batch.n_tokens;
    if (r == 1 && b->n_grave > 0) {
        /* no run of free cells for the step: give back the grave's and try again */
        grave_free(b);
        r = llama_decode(b->ctx, b->batch);
    }
    b->last.decode_s = hy_now() - t_dec;
    if (n_pad > 0 && r == 0) llama_memory_seq_rm(llama_get_memory(b->ctx), b->grave, pad_pos, -1);
    if (r != 0) {
        char why[HY_ERRLEN];
        hy_engine_last_error(why, sizeof why);
        hy_fail(err, errlen, "decode failed (code %d): %s", r, why);
        for (int i = 0; i < b->n_slots; i++)
            if (b->slots[i].st != SLOT_FREE && (b->slots[i].row >= 0 || prompt_rows[i])) slot_finish(b, i, "error", -1, err, true);
        free(prompt_rows);
        return -1;
    }
    /* the decoded tokens are in the cache now */
    for (int i = 0; i < b->n_slots; i++) {
        slot_t *s = &b->slots[i];
        if (s->st == SLOT_GEN && s->row >= 0) s->cached[s->n_cached++] = s->cur;
        else if (s->st == SLOT_PROMPT && prompt_rows[i]) {
            memcpy(s->cached + s->n_cached, s->prompt + s->n_cached, (size_t)prompt_rows[i] * sizeof(int32_t));
            s->n_cached += prompt_rows[i];
        }
    }
    /* sample every slot whose logits came out (before the next decode overwrites them) */
    for (int i = 0; i < b->n_slots; i++)
        if (b->slots[i].st != SLOT_FREE && b->slots[i].row >= 0) slot_sample(b, i);
    cache_tidy(b, -1);
    free(prompt_rows);
    return n_tok;
}
