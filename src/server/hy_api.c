/* The two APIs: Ollama's (/api/...) and OpenAI's (/v1/...). Requests are
 * parsed and checked by hy_api_parse.c (every wrong type or value is a 4xx
 * naming the field), turned here into a job — prompt text after the chat template, sampling
 * parameters, stop strings, a token budget — and the results are shaped the
 * way each API's clients read them. The transport is hy_http.c. */
#include "server/hy_server_int.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#define HY_SERVER_VERSION "0.1.0"

/* ---- small helpers -------------------------------------------------------- */

void hy_rfc3339(long sec, long nsec, char *buf, size_t len) {
    time_t t = (time_t)sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%s.%09ldZ", base, nsec);
}

void hy_rfc3339_now(char *buf, size_t len) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    hy_rfc3339(ts.tv_sec, ts.tv_nsec, buf, len);
}

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t next_random(hy_server *s) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t n = atomic_fetch_add(&s->seq, 1);
    return splitmix64(((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^ (n << 40) ^ n);
}

static json_int_t ns(double seconds) {
    json_int_t v = (json_int_t)(seconds * 1e9);
    return v > 0 ? v : 1; /* a duration that happened is never reported as zero */
}

/* ---- engine-side checks (the body itself is parsed in hy_api_parse.c) ---- */


static int respond_error(hy_http_req *r, hy_perr *e) { return hy_http_error(r, e->status ? e->status : 400, "%s", e->err); }

/* the body of a request, parsed and checked for `route` (hy_api_parse.c) */
static bool parse_req(hy_server *s, hy_http_req *r, enum hy_api_route route, hy_api_req *q, hy_perr *e) {
    unsigned st = hy_api_parse(route, s->canon, (uint32_t)next_random(s), r->body, r->body_len, q, e->err, sizeof e->err);
    e->status = st;
    return st == 0;
}

/* a job with the request's sampling parameters; the stop strings move to it */
static hy_job *job_from(hy_api_req *q, hy_perr *e) {
    hy_job *j = hy_job_new();
    if (!j) {
        hy_perr_fail(e, 500, "out of memory");
        return NULL;
    }
    j->sp = q->sp;
    j->stops = q->stops;
    j->n_stops = q->n_stops;
    q->stops = NULL;
    q->n_stops = 0;
    return j;
}

/* Tokenize to size the request: the prompt must fit the request's context (its
 * num_ctx, at most a sequence slot's share of --ctx), and the budget is capped
 * by --max-tokens and by the room left after the prompt. */
static bool budget(hy_server *s, hy_job *j, long long requested, long long num_ctx, hy_perr *e) {
    int32_t *toks = NULL;
    int n = 0;
    char err[HY_ERRLEN];
    if (hy_engine_tokenize(s->engine, j->prompt, true, &toks, &n, err, sizeof err))
        return hy_perr_fail(e, 400, "cannot tokenize the prompt: %s", err);
    free(toks);
    if (n == 0) return hy_perr_fail(e, 400, "the prompt is empty");
    int n_ctx = s->n_ctx_slot;
    if (num_ctx > 0 && num_ctx < n_ctx) n_ctx = (int)num_ctx;
    if (n >= n_ctx) {
        if (n_ctx < s->n_ctx_slot)
            return hy_perr_fail(e, 400, "the prompt is %d tokens; the context holds %d (the request's num_ctx)", n, n_ctx);
        if (s->n_slots > 1)
            return hy_perr_fail(e, 400,
                                "the prompt is %d tokens; the context holds %d (a request's share of the server's %d "
                                "over %d sequences: start the server with a larger --ctx or a smaller --parallel)",
                                n, n_ctx, s->n_ctx, s->n_slots);
        return hy_perr_fail(e, 400, "the prompt is %d tokens; the context holds %d (start the server with a larger --ctx)",
                            n, n_ctx);
    }
    j->n_ctx = n_ctx;
    long long cap = s->p.max_tokens;
    if (n_ctx - n < cap) cap = n_ctx - n;
    j->sp.n_predict = (int)(requested < 0 || requested > cap ? cap : requested);
    return true;
}

static bool format_chat(hy_server *s, const char *const *roles, const char *const *contents, int n,
                        bool add_assistant, char **out, hy_perr *e) {
    char err[HY_ERRLEN];
    if (hy_engine_format_chat(s->engine, roles, contents, n, add_assistant, out, err, sizeof err))
        return hy_perr_fail(e, 500, "%s", err);
    return true;
}

/* ---- model facts ---------------------------------------------------------- */

static const char *ftype_name(int ft) {
    static const char *names[] = {
        [0] = "F32",      [1] = "F16",       [2] = "Q4_0",     [3] = "Q4_1",     [7] = "Q8_0",    [8] = "Q5_0",
        [9] = "Q5_1",     [10] = "Q2_K",     [11] = "Q3_K_S",  [12] = "Q3_K_M",  [13] = "Q3_K_L", [14] = "Q4_K_S",
        [15] = "Q4_K_M",  [16] = "Q5_K_S",   [17] = "Q5_K_M",  [18] = "Q6_K",    [19] = "IQ2_XXS", [20] = "IQ2_XS",
        [21] = "Q2_K_S",  [22] = "IQ3_XS",   [23] = "IQ3_XXS", [24] = "IQ1_S",   [25] = "IQ4_NL", [26] = "IQ3_S",
        [27] = "IQ3_M",   [28] = "IQ2_S",    [29] = "IQ2_M",   [30] = "IQ4_XS",  [31] = "IQ1_M",  [32] = "BF16",
        [36] = "TQ1_0",   [37] = "TQ2_0",    [38] = "MXFP4",
    };
    if (ft >= 0 && ft < (int)(sizeof names / sizeof names[0]) && names[ft]) return names[ft];
    return "unknown";
}

static void human_params(uint64_t n, char *buf, size_t len) {
    if (n >= 1000000000ull) snprintf(buf, len, "%.1fB", n / 1e9);
    else if (n >= 1000000ull) snprintf(buf, len, "%.1fM", n / 1e6);
    else if (n >= 1000ull) snprintf(buf, len, "%.1fK", n / 1e3);
    else snprintf(buf, len, "%llu", (unsigned long long)n);
}

/* a metadata value as JSON: integers, reals and booleans keep their type */
static json_t *meta_value(const char *v) {
    if (!strcmp(v, "true")) return json_true();
    if (!strcmp(v, "false")) return json_false();
    char *end;
    errno = 0;
    long long i = strtoll(v, &end, 10);
    if (*v && !*end && !errno) return json_integer(i);
    double d = strtod(v, &end);
    if (*v && !*end && isfinite(d) && strchr("0123456789-+.", *v)) return json_real(d);
    return json_string(v);
}

int hy_api_init_model(hy_server *s, char *err, size_t errlen) {
    const hy_model_desc *d = s->session->desc;
    struct llama_model *m = hy_engine_model(s->engine);
    snprintf(s->model_path, sizeof s->model_path, "%s", d->path);
    if (s->p.model_name && *s->p.model_name) {
        snprintf(s->name, sizeof s->name, "%s", s->p.model_name);
    } else {
        const char *base = strrchr(d->path, '/');
        base = base ? base + 1 : d->path;
        snprintf(s->name, sizeof s->name, "%s", base);
        size_t l = strlen(s->name);
        if (l > 5 && !strcasecmp(s->name + l - 5, ".gguf")) s->name[l - 5] = 0;
    }
    if (!s->name[0]) return hy_fail(err, errlen, "the model name is empty (use --name)");
    hy_api_canon_name(s->name, s->canon, sizeof s->canon);

    struct stat st;
    if (stat(d->path, &st) == 0) {
        hy_rfc3339(st.st_mtim.tv_sec, st.st_mtim.tv_nsec, s->modified_at, sizeof s->modified_at);
        s->created_unix = st.st_mtim.tv_sec;
    } else {
        hy_rfc3339_now(s->modified_at, sizeof s->modified_at);
        s->created_unix = (long)time(NULL);
    }
    s->file_size = d->file_size;
    s->size_vram = s->session->plan.bytes_tier[HY_TIER_GPU];
    /* not Ollama's manifest digest (there is no manifest): a stable identity of the file */
    uint64_t h0 = splitmix64(d->header_hash), h1 = splitmix64(h0 ^ d->file_size),
             h2 = splitmix64(h1 ^ (uint64_t)s->created_unix), h3 = splitmix64(h2 ^ d->data_offset);
    snprintf(s->digest, sizeof s->digest, "%016llx%016llx%016llx%016llx", (unsigned long long)h0,
             (unsigned long long)h1, (unsigned long long)h2, (unsigned long long)h3);

    char pbuf[32];
    human_params(llama_model_n_params(m), pbuf, sizeof pbuf);
    const char *arch = d->arch[0] ? d->arch : "unknown";
    s->details = json_pack("{s:s,s:s,s:s,s:[s],s:s,s:s}", "parent_model", "", "format", "gguf", "family", arch,
                           "families", arch, "parameter_size", pbuf, "quantization_level",
                           ftype_name((int)llama_model_ftype(m)));
    s->model_info = json_object();
    if (!s->details || !s->model_info) return hy_fail(err, errlen, "out of memory");
    int n_meta = llama_model_meta_count(m);
    for (int i = 0; i < n_meta; i++) {
        char key[256], val[1024];
        if (llama_model_meta_key_by_index(m, i, key, sizeof key) < 0) continue;
        int vl = llama_model_meta_val_str_by_index(m, i, val, sizeof val);
        if (vl < 0 || vl >= (int)sizeof val) continue; /* arrays and long strings (templates) are left out */
        if (!strncmp(key, "tokenizer.ggml.", 15) && strcmp(key, "tokenizer.ggml.model") &&
            strcmp(key, "tokenizer.ggml.pre") && !strstr(key, "token_id"))
            continue;
        json_t *v = meta_value(val);
        if (v) json_object_set_new(s->model_info, key, v);
    }
    json_object_set_new(s->model_info, "general.parameter_count", json_integer((json_int_t)llama_model_n_params(m)));
    const char *tmpl = llama_model_chat_template(m, NULL);
    s->template_text = strdup(tmpl ? tmpl : "chatml");
    if (!s->template_text) return hy_fail(err, errlen, "out of memory");
    return 0;
}

/* ---- Ollama: listings --------------------------------------------------------- */

int hy_api_root(hy_server *s, hy_http_req *r) {
    (void)s;
    return hy_http_text(r, 200, "text/plain; charset=utf-8", "Ollama is running");
}

int hy_api_version(hy_server *s, hy_http_req *r) {
    (void)s;
    return hy_http_json(r, 200, json_pack("{s:s}", "version", HY_SERVER_VERSION));
}

static json_t *model_entry(hy_server *s) {
    return json_pack("{s:s,s:s,s:s,s:I,s:s,s:O}", "name", s->name, "model", s->name, "modified_at", s->modified_at,
                     "size", (json_int_t)s->file_size, "digest", s->digest, "details", s->details);
}

int hy_api_tags(hy_server *s, hy_http_req *r) {
    return hy_http_json(r, 200, json_pack("{s:[o]}", "models", model_entry(s)));
}

int hy_api_ps(hy_server *s, hy_http_req *r) {
    json_t *e = model_entry(s);
    /* loaded for the server's lifetime: no expiry */
    json_object_set_new(e, "expires_at", json_string("2262-04-11T23:47:16.854775807Z"));
    json_object_set_new(e, "size_vram", json_integer((json_int_t)s->size_vram));
    /* what one request may use: its slot's share of the server's context */
    json_object_set_new(e, "context_length", json_integer(s->n_ctx_slot));
    /* hypura's own: the sequence slots generated together and what each holds */
    json_t *slots = json_array();
    /* decode steps by how many sequences they generated for (hy_step_stats): "generating"
     * 0 is every step that read prompt rows */
    json_t *steps = json_array();
    pthread_mutex_lock(&s->queue.mu);
    int busy = s->queue.busy, queued = s->queue.n;
    for (int i = 0; i < s->queue.n_slots && s->queue.snap; i++) {
        const hy_batch_slot_info *si = &s->queue.snap[i];
        json_array_append_new(slots, json_pack("{s:i,s:s,s:i,s:i,s:i}", "id", i, "state",
                                               !si->busy ? "idle" : si->prompt ? "prompt" : "generating", "tokens",
                                               si->n_tokens, "n_ctx", si->n_ctx, "generated", si->n_gen));
    }
    for (int k = 0; k <= s->queue.n_slots && s->queue.steps; k++) {
        const hy_step_stats *st = &s->queue.steps[k];
        if (!st->steps) continue;
        json_t *o = json_pack("{s:i,s:I,s:I,s:f,s:f,s:I}", "generating", k, "steps", (json_int_t)st->steps, "rows",
                              (json_int_t)st->rows, "seconds", st->decode_s, "stall_seconds", st->stall_s, "read_bytes",
                              (json_int_t)st->read_bytes);
        if (s->queue.x_layers > 0)
            json_object_set_new(o, "expert_union_per_layer", json_real(st->x_union / (double)st->steps / s->queue.x_layers));
        json_array_append_new(steps, o);
    }
    pthread_mutex_unlock(&s->queue.mu);
    json_object_set_new(e, "parallel", json_pack("{s:i,s:i,s:i,s:i,s:o,s:o}", "slots", s->n_slots, "busy", busy, "queued",
                                                 queued, "context_total", s->n_ctx, "slot", slots, "steps", steps));
    return hy_http_json(r, 200, json_pack("{s:[o]}", "models", e));
}

int hy_api_show(hy_server *s, hy_http_req *r) {
    hy_perr e = {0};
    hy_api_req q;
    bool ok = parse_req(s, r, HY_ROUTE_SHOW, &q, &e);
    hy_api_req_free(&q);
    if (!ok) return respond_error(r, &e);
    char modelfile[4300 + 64];
    snprintf(modelfile, sizeof modelfile, "# served by hypura %s\nFROM %s\n", HY_SERVER_VERSION, s->model_path);
    char params[64];
    snprintf(params, sizeof params, "num_ctx %d", s->n_ctx_slot);
    return hy_http_json(r, 200,
                        json_pack("{s:s,s:s,s:s,s:s,s:O,s:O,s:[s],s:s}", "license", "", "modelfile", modelfile,
                                  "parameters", params, "template", s->template_text, "details", s->details,
                                  "model_info", s->model_info, "capabilities", "completion", "modified_at",
                                  s->modified_at));
}

int hy_api_manage(hy_server *s, hy_http_req *r) {
    (void)s;
    return hy_http_error(r, 501, "hypura serve does not manage models (%s); it serves the one model it was started with",
                         r->path + 5);
}

static int embeddings_unsupported(hy_server *s, hy_http_req *r, enum hy_api_route route) {
    hy_perr e = {0};
    hy_api_req q;
    bool ok = parse_req(s, r, route, &q, &e);
    hy_api_req_free(&q);
    if (!ok) return respond_error(r, &e);
    return hy_http_error(r, 501, "this model does not support embeddings (hypura serve loads models for text generation only)");
}

int hy_api_embed(hy_server *s, hy_http_req *r) { return embeddings_unsupported(s, r, HY_ROUTE_EMBED); }
int hy_oai_embeddings(hy_server *s, hy_http_req *r) { return embeddings_unsupported(s, r, HY_ROUTE_OAI_EMBEDDINGS); }

/* ---- Ollama: generation ------------------------------------------------------ */

static void fmt_init(hy_server *s, hy_fmt *f, enum hy_api_kind kind, bool stream) {
    memset(f, 0, sizeof *f);
    f->srv = s;
    f->kind = kind;
    f->stream = stream;
    f->created = (long)time(NULL);
    snprintf(f->id, sizeof f->id, "%s%016llx", kind == HY_API_OAI_CHAT ? "chatcmpl-" : "cmpl-",
             (unsigned long long)next_random(s));
}

/* The common end of the generation routes: size the job, set the answer's
 * format (Ollama answers with the model name as asked, OpenAI with its id and,
 * on request, usage) and queue it; or answer with the error of any step before
 * (ok false) or here. Frees the request either way. */
static int submit(hy_server *s, hy_http_req *r, hy_api_req *q, hy_job *j, enum hy_api_kind kind, bool ok,
                  hy_perr *e) {
    if (ok && !j->prompt) ok = hy_perr_fail(e, 500, "out of memory");
    if (ok && budget(s, j, q->n_predict, q->num_ctx, e)) {
        hy_fmt f;
        fmt_init(s, &f, kind, q->stream);
        if (kind == HY_API_GENERATE || kind == HY_API_CHAT) snprintf(f.model, sizeof f.model, "%s", q->model);
        else f.include_usage = q->include_usage;
        hy_api_req_free(q);
        return hy_http_generate(r, &f, j);
    }
    hy_api_req_free(q);
    hy_job_unref(j);
    return respond_error(r, e);
}

int hy_api_generate(hy_server *s, hy_http_req *r) {
    hy_perr e = {0};
    hy_job *j = NULL;
    hy_api_req q;
    if (!parse_req(s, r, HY_ROUTE_GENERATE, &q, &e) || !(j = job_from(&q, &e)))
        return submit(s, r, &q, j, HY_API_GENERATE, false, &e);
    if (!q.prompt || !*q.prompt) {
        /* Ollama's "load the model" request: nothing to generate */
        char ts[64];
        hy_rfc3339_now(ts, sizeof ts);
        json_t *o = json_pack("{s:s,s:s,s:s,s:b,s:s}", "model", q.model, "created_at", ts, "response", "", "done", 1,
                              "done_reason", "load");
        hy_api_req_free(&q);
        hy_job_unref(j);
        return hy_http_json(r, 200, o);
    }
    bool ok = true;
    if (q.raw) {
        j->prompt = strdup(q.prompt);
    } else {
        const char *roles[2], *contents[2];
        int n = 0;
        if (q.system && *q.system) roles[n] = "system", contents[n++] = q.system;
        roles[n] = "user", contents[n++] = q.prompt;
        ok = format_chat(s, roles, contents, n, true, &j->prompt, &e);
    }
    return submit(s, r, &q, j, HY_API_GENERATE, ok, &e);
}

int hy_api_chat(hy_server *s, hy_http_req *r) {
    hy_perr e = {0};
    hy_job *j = NULL;
    hy_api_req q;
    /* a conversation ending with the assistant's turn is continued, not answered */
    bool ok = parse_req(s, r, HY_ROUTE_CHAT, &q, &e) && (j = job_from(&q, &e)) &&
              format_chat(s, q.roles, (const char *const *)q.contents, q.n_msgs, !q.last_assistant, &j->prompt, &e);
    return submit(s, r, &q, j, HY_API_CHAT, ok, &e);
}

/* ---- OpenAI ------------------------------------------------------------------ */

static json_t *oai_model(hy_server *s) {
    return json_pack("{s:s,s:s,s:I,s:s}", "id", s->name, "object", "model", "created", (json_int_t)s->created_unix,
                     "owned_by", "hypura");
}

int hy_oai_models(hy_server *s, hy_http_req *r) {
    return hy_http_json(r, 200, json_pack("{s:s,s:[o]}", "object", "list", "data", oai_model(s)));
}

int hy_oai_model(hy_server *s, hy_http_req *r) {
    char err[HY_ERRLEN];
    unsigned st = hy_api_check_name(s->canon, r->path + strlen("/v1/models/"), err, sizeof err);
    if (st) return hy_http_error(r, st, "%s", err);
    return hy_http_json(r, 200, oai_model(s));
}

int hy_oai_chat(hy_server *s, hy_http_req *r) {
    hy_perr e = {0};
    hy_job *j = NULL;
    hy_api_req q;
    bool ok = parse_req(s, r, HY_ROUTE_OAI_CHAT, &q, &e) && (j = job_from(&q, &e)) &&
              format_chat(s, q.roles, (const char *const *)q.contents, q.n_msgs, !q.last_assistant, &j->prompt, &e);
    return submit(s, r, &q, j, HY_API_OAI_CHAT, ok, &e);
}

int hy_oai_completions(hy_server *s, hy_http_req *r) {
    hy_perr e = {0};
    hy_job *j = NULL;
    hy_api_req q;
    bool ok = parse_req(s, r, HY_ROUTE_OAI_COMPLETIONS, &q, &e) && (j = job_from(&q, &e));
    if (ok) j->prompt = strdup(q.prompt); /* NULL: submit reports out of memory */
    return submit(s, r, &q, j, HY_API_OAI_COMPLETION, ok, &e);
}

/* ---- responses ---------------------------------------------------------------- */

static void emit(hy_fmt *f, json_t *o, hy_buf *out) {
    char *txt = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!txt) return;
    bool sse = f->kind == HY_API_OAI_CHAT || f->kind == HY_API_OAI_COMPLETION;
    if (sse) hy_buf_add(out, "data: ", 6);
    hy_buf_add(out, txt, strlen(txt));
    hy_buf_add(out, sse ? "\n\n" : "\n", sse ? 2 : 1);
    free(txt);
}

static const char *model_of(hy_fmt *f) {
    /* Ollama answers with the name as asked, OpenAI with the listed id */
    return f->model[0] ? f->model : f->srv->name;
}

static json_t *oai_chunk(hy_fmt *f, json_t *choice) {
    const char *obj = f->kind == HY_API_OAI_CHAT ? "chat.completion.chunk" : "text_completion";
    json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:s}", "id", f->id, "object", obj, "created", (json_int_t)f->created,
                          "model", f->srv->name, "system_fingerprint", "hypura-" HY_SERVER_VERSION);
    json_object_set_new(o, "choices", choice ? json_pack("[o]", choice) : json_array());
    return o;
}

static json_t *usage(const hy_job *j) {
    return json_pack("{s:i,s:i,s:i}", "prompt_tokens", j->stats.n_prompt, "completion_tokens", j->stats.n_gen,
                     "total_tokens", j->stats.n_prompt + j->stats.n_gen);
}

static void ollama_stats(json_t *o, const hy_job *j) {
    json_object_set_new(o, "done_reason", json_string(j->done_reason));
    json_object_set_new(o, "total_duration", json_integer(ns(j->t_end - j->t_arrival)));
    json_object_set_new(o, "load_duration", json_integer(ns(j->t_start - j->t_arrival)));
    json_object_set_new(o, "prompt_eval_count", json_integer(j->stats.n_prompt));
    json_object_set_new(o, "prompt_eval_duration", json_integer(ns(j->stats.t_prompt_s)));
    json_object_set_new(o, "eval_count", json_integer(j->stats.n_gen));
    json_object_set_new(o, "eval_duration", json_integer(ns(j->stats.t_gen_s)));
    if (j->has_spec) json_object_set_new(o, "speculative", hy_spec_stats_json(&j->spec, NULL));
}

static json_t *ollama_object(hy_fmt *f, json_t *text, bool done) {
    char ts[64];
    hy_rfc3339_now(ts, sizeof ts);
    if (f->kind == HY_API_GENERATE)
        return json_pack("{s:s,s:s,s:o,s:b}", "model", model_of(f), "created_at", ts, "response", text, "done", done);
    return json_pack("{s:s,s:s,s:{s:s,s:o},s:b}", "model", model_of(f), "created_at", ts, "message", "role",
                     "assistant", "content", text, "done", done);
}

void hy_fmt_begin(hy_fmt *f, hy_buf *out) {
    if (f->kind != HY_API_OAI_CHAT || f->begun) return;
    f->begun = true;
    emit(f, oai_chunk(f, json_pack("{s:i,s:{s:s,s:s},s:n,s:n}", "index", 0, "delta", "role", "assistant", "content",
                                   "", "logprobs", "finish_reason")),
         out);
}

void hy_fmt_piece(hy_fmt *f, const char *text, size_t len, hy_buf *out) {
    json_t *t = hy_json_text(text, len);
    switch (f->kind) {
    case HY_API_GENERATE:
    case HY_API_CHAT: emit(f, ollama_object(f, t, false), out); break;
    case HY_API_OAI_CHAT:
        emit(f, oai_chunk(f, json_pack("{s:i,s:{s:o},s:n,s:n}", "index", 0, "delta", "content", t, "logprobs",
                                       "finish_reason")),
             out);
        break;
    case HY_API_OAI_COMPLETION:
        emit(f, oai_chunk(f, json_pack("{s:o,s:i,s:n,s:n}", "text", t, "index", 0, "logprobs", "finish_reason")), out);
        break;
    }
}

void hy_fmt_end(hy_fmt *f, const hy_job *j, hy_buf *out) {
    bool oai = f->kind == HY_API_OAI_CHAT || f->kind == HY_API_OAI_COMPLETION;
    if (j->err_status) {
        if (oai)
            emit(f, json_pack("{s:{s:s,s:s,s:n,s:n}}", "error", "message", j->err, "type", "server_error", "param",
                              "code"),
                 out);
        else emit(f, json_pack("{s:s}", "error", j->err), out);
        return;
    }
    if (!oai) {
        json_t *o = ollama_object(f, json_string(""), true);
        ollama_stats(o, j);
        emit(f, o, out);
        return;
    }
    json_t *choice = f->kind == HY_API_OAI_CHAT
                         ? json_pack("{s:i,s:{},s:n,s:s}", "index", 0, "delta", "logprobs", "finish_reason",
                                     j->done_reason)
                         : json_pack("{s:s,s:i,s:n,s:s}", "text", "", "index", 0, "logprobs", "finish_reason",
                                     j->done_reason);
    json_t *last = oai_chunk(f, choice);
    if (j->has_spec) json_object_set_new(last, "speculative", hy_spec_stats_json(&j->spec, NULL));
    emit(f, last, out);
    if (f->include_usage) {
        json_t *u = oai_chunk(f, NULL);
        json_object_set_new(u, "usage", usage(j));
        emit(f, u, out);
    }
    hy_buf_add(out, "data: [DONE]\n\n", 14);
}

json_t *hy_fmt_full(hy_fmt *f, const hy_job *j, const char *text, size_t len) {
    json_t *t = hy_json_text(text, len);
    if (f->kind == HY_API_GENERATE || f->kind == HY_API_CHAT) {
        json_t *o = ollama_object(f, t, true);
        ollama_stats(o, j);
        return o;
    }
    json_t *choice = f->kind == HY_API_OAI_CHAT
                         ? json_pack("{s:i,s:{s:s,s:o},s:n,s:s}", "index", 0, "message", "role", "assistant",
                                     "content", t, "logprobs", "finish_reason", j->done_reason)
                         : json_pack("{s:o,s:i,s:n,s:s}", "text", t, "index", 0, "logprobs", "finish_reason",
                                     j->done_reason);
    json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:s,s:[o]}", "id", f->id, "object",
                          f->kind == HY_API_OAI_CHAT ? "chat.completion" : "text_completion", "created",
                          (json_int_t)f->created, "model", f->srv->name, "system_fingerprint",
                          "hypura-" HY_SERVER_VERSION, "choices", choice);
    json_object_set_new(o, "usage", usage(j));
    if (j->has_spec) json_object_set_new(o, "speculative", hy_spec_stats_json(&j->spec, NULL));
    return o;
}
