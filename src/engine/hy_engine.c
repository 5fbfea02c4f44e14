#include "engine/hy_engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/hy_loadguard.h"
#include "util/hy_util.h"

struct hy_engine {
    struct llama_model   *model;
    struct llama_context *ctx;
    const struct llama_vocab *vocab;
    int32_t *cached;      /* tokens whose K/V are in the cache, in order */
    int      n_cached;
    int      n_ctx;
    double   load_s;
};

/* ---- libllama's log: keep the last error line, print only when verbose ---- */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char last_error[HY_ERRLEN];
static bool log_verbose;

static void log_cb(enum ggml_log_level level, const char *text, void *ud) {
    (void)ud;
    if (log_verbose) fputs(text, stderr);
    if (level == GGML_LOG_LEVEL_ERROR) {
        pthread_mutex_lock(&log_mu);
        /* keep the first line of the message, trimmed */
        size_t n = strcspn(text, "\n");
        if (n > 0) {
            if (n >= sizeof last_error) n = sizeof last_error - 1;
            memcpy(last_error, text, n);
            last_error[n] = 0;
        }
        pthread_mutex_unlock(&log_mu);
    }
}

static void take_last_error(char *buf, size_t len) {
    pthread_mutex_lock(&log_mu);
    snprintf(buf, len, "%s", last_error[0] ? last_error : "no reason given by libllama");
    last_error[0] = 0;
    pthread_mutex_unlock(&log_mu);
}

void hy_engine_last_error(char *buf, size_t len) { take_last_error(buf, len); }

static void engine_global_init(bool verbose) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    log_verbose = verbose || getenv("HYPURA_LLAMA_LOG") != NULL;
    llama_log_set(log_cb, NULL);
    pthread_once(&once, llama_backend_init);
}

hy_engine_params hy_engine_default_params(void) {
    hy_engine_params p = {0};
    p.n_batch = 512;
    p.use_mmap = true;
    p.repack = false; /* the session decides; see hy_session_params.repack */
    return p;
}

hy_sample_params hy_sample_default_params(void) {
    hy_sample_params s = {0};
    s.temp = 0.8f;
    s.top_k = 40;
    s.top_p = 0.95f;
    s.seed = 0xC0FFEE;
    s.n_predict = 128;
    return s;
}

struct progress_state {
    bool tty;
    int last;
};

static bool progress_cb(float progress, void *ud) {
    struct progress_state *ps = ud;
    int pct = (int)(progress * 100.0f + 0.5f);
    if (ps->tty && pct != ps->last) {
        int w = 30, fill = pct * w / 100;
        fprintf(stderr, "\rloading [%.*s%*s] %3d%%", fill, "##############################", w - fill, "", pct);
        if (pct >= 100) fputc('\n', stderr);
        fflush(stderr);
        ps->last = pct;
    }
    return true;
}

int hy_engine_open(const hy_engine_params *p, hy_engine **out, char *err, size_t errlen) {
    *out = NULL;
    struct stat st;
    if (!p->model_path || stat(p->model_path, &st) != 0)
        return hy_fail(err, errlen, "cannot open model '%s': %s", p->model_path ? p->model_path : "(none)",
                       strerror(errno));
    if (!S_ISREG(st.st_mode)) return hy_fail(err, errlen, "'%s' is not a regular file", p->model_path);

    engine_global_init(p->verbose);

    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = p->n_gpu_layers;
    /* {NULL}: no device at all (libllama's default would take every GPU, for compute
     * buffers and big-batch offload, also with no layer on it) */
    ggml_backend_dev_t devs[2] = {p->gpu, NULL};
    if (p->gpu || !p->all_devices) mp.devices = devs;
    if (p->gpu) {
        mp.split_mode = LLAMA_SPLIT_MODE_NONE;
        mp.main_gpu = 0;
    } else if (p->devices) {
        mp.devices = (ggml_backend_dev_t *)p->devices;
        mp.split_mode = LLAMA_SPLIT_MODE_LAYER;
        mp.tensor_split = p->tensor_split;
    }
    mp.use_extra_bufts = p->repack;
    mp.no_host = p->no_host;
    mp.load_mode = p->use_mmap ? LLAMA_LOAD_MODE_MMAP : LLAMA_LOAD_MODE_NONE;
    mp.tensor_buft_overrides = p->overrides;
    struct progress_state ps = {.tty = p->progress && isatty(2), .last = -1};
    mp.progress_callback = progress_cb;
    mp.progress_callback_user_data = &ps;

    hy_engine *e = calloc(1, sizeof *e);
    if (!e) return hy_fail(err, errlen, "out of memory");
    double t0 = hy_now();
    if (p->lazy_load && p->use_mmap) hy_loadguard_arm(p->model_path);
    e->model = llama_model_load_from_file(p->model_path, mp);
    if (p->lazy_load && p->use_mmap) hy_loadguard_disarm();
    if (!e->model) {
        char why[HY_ERRLEN];
        take_last_error(why, sizeof why);
        free(e);
        return hy_fail(err, errlen, "failed to load '%s': %s", p->model_path, why);
    }
    e->vocab = llama_model_get_vocab(e->model);
    if (p->model_loaded && p->model_loaded(p->model_loaded_ud, err, errlen)) {
        llama_model_free(e->model);
        free(e);
        return -1;
    }

    int n_train = llama_model_n_ctx_train(e->model);
    int n_ctx = p->n_ctx > 0 ? p->n_ctx : (n_train < 4096 ? n_train : 4096);
    if (n_ctx > n_train) {
        hy_fail(err, errlen, "context %d exceeds the model's training context %d (use --ctx %d or less)", n_ctx,
                n_train, n_train);
        llama_model_free(e->model);
        free(e);
        return -1;
    }
    struct llama_context_params cp = llama_context_default_params();
    int threads = p->n_threads > 0 ? p->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1) threads = 1;
    cp.n_ctx = (uint32_t)n_ctx;
    cp.n_batch = cp.n_ubatch = (uint32_t)(p->n_batch > 0 ? p->n_batch : 512);
    cp.n_threads = cp.n_threads_batch = threads;
    if (p->n_seq_max > 1) {
        /* one cache for every sequence: libllama then puts a batch of several
         * sequences into one ubatch (with a cache per sequence it would split
         * the batch into ubatches of equal tokens per sequence: a pass each) */
        cp.n_seq_max = (uint32_t)p->n_seq_max;
        cp.kv_unified = true;
    }
    cp.no_perf = true;
    cp.op_offload = !p->no_op_offload;
    cp.cb_eval = p->cb_eval;
    cp.cb_eval_user_data = p->cb_eval_user_data;
    cp.abort_callback = p->abort_cb;
    cp.abort_callback_data = p->abort_cb_data;
    e->ctx = llama_init_from_model(e->model, cp);
    if (!e->ctx) {
        char why[HY_ERRLEN];
        take_last_error(why, sizeof why);
        llama_model_free(e->model);
        free(e);
        return hy_fail(err, errlen, "failed to create a context of %d tokens: %s", n_ctx, why);
    }
    e->n_ctx = (int)llama_n_ctx(e->ctx);
    e->cached = calloc((size_t)e->n_ctx, sizeof(int32_t));
    if (!e->cached) {
        hy_engine_free(e);
        return hy_fail(err, errlen, "out of memory");
    }
    if (p->loaded && p->loaded(p->loaded_ud, err, errlen)) {
        hy_engine_free(e);
        return -1;
    }
    e->load_s = hy_now() - t0;
    *out = e;
    return 0;
}

void hy_engine_free(hy_engine *e) {
    if (!e) return;
    if (e->ctx) llama_free(e->ctx);
    if (e->model) llama_model_free(e->model);
    free(e->cached);
    free(e);
}

double hy_engine_load_seconds(const hy_engine *e) { return e->load_s; }
int hy_engine_n_ctx(const hy_engine *e) { return e->n_ctx; }
int hy_engine_n_vocab(const hy_engine *e) { return llama_vocab_n_tokens(e->vocab); }
struct llama_model *hy_engine_model(hy_engine *e) { return e->model; }
struct llama_context *hy_engine_context(hy_engine *e) { return e->ctx; }

int hy_engine_warmup(hy_engine *e, char *err, size_t errlen) {
    llama_token t = llama_vocab_bos(e->vocab);
    if (t == LLAMA_TOKEN_NULL) t = 0;
    int r = llama_decode(e->ctx, llama_batch_get_one(&t, 1));
    hy_engine_reset(e);
    if (r != 0) return hy_fail(err, errlen, "warm-up decode failed (code %d)", r);
    return 0;
}

void hy_engine_reset(hy_engine *e) {
    llama_memory_clear(llama_get_memory(e->ctx), true);
    e->n_cached = 0;
}

int hy_engine_tokenize(hy_engine *e, const char *text, bool add_special, int32_t **out, int *n_out, char *err,
                       size_t errlen) {
    size_t len = strlen(text);
    if (len > (size_t)INT32_MAX / 2) return hy_fail(err, errlen, "prompt too long");
    int cap = (int)len + 8;
    int32_t *toks = malloc((size_t)cap * sizeof *toks);
    if (!toks) return hy_fail(err, errlen, "out of memory");
    int n = llama_tokenize(e->vocab, text, (int32_t)len, toks, cap, add_special, true);
    if (n < 0 && n != INT32_MIN) {
        cap = -n;
        int32_t *t2 = realloc(toks, (size_t)cap * sizeof *toks);
        if (!t2) {
            free(toks);
            return hy_fail(err, errlen, "out of memory");
        }
        toks = t2;
        n = llama_tokenize(e->vocab, text, (int32_t)len, toks, cap, add_special, true);
    }
    if (n < 0) {
        free(toks);
        return hy_fail(err, errlen, "tokenization failed");
    }
    *out = toks;
    *n_out = n;
    return 0;
}

int hy_engine_format_chat(hy_engine *e, const char *const *roles, const char *const *contents, int n,
                          bool add_assistant, char **out, char *err, size_t errlen) {
    const char *tmpl = llama_model_chat_template(e->model, NULL);
    if (!tmpl) tmpl = "chatml";
    struct llama_chat_message *msgs = calloc((size_t)(n > 0 ? n : 1), sizeof *msgs);
    if (!msgs) return hy_fail(err, errlen, "out of memory");
    size_t total = 64;
    for (int i = 0; i < n; i++) {
        msgs[i].role = roles[i];
        msgs[i].content = contents[i];
        total += strlen(roles[i]) + strlen(contents[i]) + 64;
    }
    if (total > (size_t)INT32_MAX / 2) {
        free(msgs);
        return hy_fail(err, errlen, "conversation too long");
    }
    char *buf = malloc(total * 2);
    int r = buf ? llama_chat_apply_template(tmpl, msgs, (size_t)n, add_assistant, buf, (int32_t)(total * 2)) : -1;
    if (buf && r > (int)(total * 2)) {
        char *b2 = realloc(buf, (size_t)r + 1);
        if (b2) {
            buf = b2;
            r = llama_chat_apply_template(tmpl, msgs, (size_t)n, add_assistant, buf, r + 1);
        } else r = -1;
    }
    free(msgs);
    if (r < 0) {
        free(buf);
        return hy_fail(err, errlen, "the model's chat template is not supported by libllama");
    }
    buf[r] = 0;
    *out = buf;
    return 0;
}

size_t hy_utf8_complete_prefix(const char *s, size_t n) {
    size_t i = n, back = 0;
    while (i > 0 && back < 4) {
        unsigned char c = (unsigned char)s[i - 1];
        if ((c & 0xC0) != 0x80) {
            size_t need = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
            return (back + 1 >= need) ? n : i - 1;
        }
        i--;
        back++;
    }
    return n;
}

struct llama_sampler *hy_engine_make_sampler(const hy_sample_params *sp) {
    struct llama_sampler *ch = llama_sampler_chain_init(llama_sampler_chain_default_params());
    if (sp->temp <= 0) {
        llama_sampler_chain_add(ch, llama_sampler_init_greedy());
        return ch;
    }
    if (sp->top_k > 0) llama_sampler_chain_add(ch, llama_sampler_init_top_k(sp->top_k));
    if (sp->top_p > 0 && sp->top_p < 1) llama_sampler_chain_add(ch, llama_sampler_init_top_p(sp->top_p, 1));
    llama_sampler_chain_add(ch, llama_sampler_init_temp(sp->temp));
    llama_sampler_chain_add(ch, llama_sampler_init_dist(sp->seed));
    return ch;
}

static int decode_tokens(hy_engine *e, const int32_t *toks, int n, int n_batch, char *err, size_t errlen) {
    for (int i = 0; i < n; i += n_batch) {
        int m = n - i < n_batch ? n - i : n_batch;
        struct llama_batch b = llama_batch_get_one((llama_token *)toks + i, m);
        int r = llama_decode(e->ctx, b);
        if (r != 0) {
            char why[HY_ERRLEN];
            take_last_error(why, sizeof why);
            /* whatever was decoded is unknown now: forget the cache */
            hy_engine_reset(e);
            return hy_fail(err, errlen, "decode failed (code %d): %s", r, why);
        }
        memcpy(e->cached + e->n_cached, toks + i, (size_t)m * sizeof *toks);
        e->n_cached += m;
    }
    return 0;
}

int hy_engine_generate(hy_engine *e, const char *prompt, const hy_sample_params *sp, hy_piece_cb on_piece,
                       void *piece_ud, hy_logits_cb on_logits, void *logits_ud, hy_gen_stats *st, char *err,
                       size_t errlen) {
    hy_gen_stats local;
    if (!st) st = &local;
    memset(st, 0, sizeof *st);
    int32_t *toks = NULL;
    int n = 0;
    if (hy_engine_tokenize(e, prompt, true, &toks, &n, err, errlen)) return -1;
    if (n == 0) {
        free(toks);
        return hy_fail(err, errlen, "empty prompt");
    }
    if (n >= e->n_ctx) {
        free(toks);
        return hy_fail(err, errlen, "prompt of %d tokens does not fit the context of %d tokens", n, e->n_ctx);
    }
    st->n_prompt = n;

    /* reuse the cached prefix; at least the last prompt token is decoded again
     * so that its logits exist */
    int keep = 0;
    while (keep < e->n_cached && keep < n - 1 && e->cached[keep] == toks[keep]) keep++;
    if (keep < e->n_cached) {
        if (!llama_memory_seq_rm(llama_get_memory(e->ctx), 0, keep, -1)) {
            hy_engine_reset(e);
            keep = 0;
        }
        e->n_cached = keep;
    }

    int n_batch = (int)llama_n_batch(e->ctx);
    double t0 = hy_now();
    if (decode_tokens(e, toks + keep, n - keep, n_batch, err, errlen)) {
        free(toks);
        return -1;
    }
    st->n_prompt_eval = n - keep;
    st->t_prompt_s = hy_now() - t0;
    free(toks);

    struct llama_sampler *smp = hy_engine_make_sampler(sp);
    int n_vocab = llama_vocab_n_tokens(e->vocab);
    char pending[512];
    size_t n_pending = 0;
    st->stop_reason = "length";
    double t1 = hy_now();
    int rc = 0;
    for (int i = 0; sp->n_predict < 0 || i < sp->n_predict; i++) {
        if (on_logits) on_logits(llama_get_logits_ith(e->ctx, -1), n_vocab, logits_ud);
        llama_token tok = llama_sampler_sample(smp, e->ctx, -1);
        if (llama_vocab_is_eog(e->vocab, tok)) {
            st->stop_reason = "stop";
            break;
        }
        char piece[256];
        int len = llama_token_to_piece(e->vocab, tok, piece, sizeof piece, 0, false);
        if (len < 0) len = 0;
        if (n_pending + (size_t)len > sizeof pending) n_pending = 0; /* never happens for valid UTF-8 */
        memcpy(pending + n_pending, piece, (size_t)len);
        n_pending += (size_t)len;
        size_t ready = hy_utf8_complete_prefix(pending, n_pending);
        bool go_on = true;
        if (ready > 0 && on_piece) go_on = on_piece(pending, ready, piece_ud);
        memmove(pending, pending + ready, n_pending - ready);
        n_pending -= ready;
        st->n_gen++;
        if (!go_on) {
            st->stop_reason = "cancelled";
            break;
        }
        if (e->n_cached + 1 >= e->n_ctx) {
            st->stop_reason = "context";
            break;
        }
        if (decode_tokens(e, &tok, 1, 1, err, errlen)) {
            rc = -1;
            break;
        }
    }
    if (n_pending && on_piece && rc == 0) on_piece(pending, n_pending, piece_ud);
    st->t_gen_s = hy_now() - t1;
    llama_sampler_free(smp);
    return rc;
}
