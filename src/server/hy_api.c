/* The two APIs: Ollama's (/api/...) and OpenAI's (/v1/...). Requests are
 * parsed and checked here (every wrong type or value is a 4xx naming the
 * field), turned into a job — prompt text after the chat template, sampling
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
#define HY_MAX_STOPS 16
#define HY_MAX_STOP_LEN 256

/* ---- small helpers -------------------------------------------------------- */

static bool utf8_next(const unsigned char *s, size_t n, size_t *i, size_t *len_ok) {
    /* WHATWG decoding: returns true and the length of one valid sequence at *i,
     * or false and how many bytes form the invalid maximal subpart */
    unsigned char c = s[*i];
    if (c < 0x80) {
        *len_ok = 1;
        return true;
    }
    int need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) need = 2, lo = 0xA0;
    else if (c == 0xED) need = 2, hi = 0x9F;
    else if (c >= 0xE1 && c <= 0xEF) need = 2;
    else if (c == 0xF0) need = 3, lo = 0x90;
    else if (c == 0xF4) need = 3, hi = 0x8F;
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else {
        *len_ok = 1;
        return false;
    }
    size_t j = *i + 1;
    for (int k = 0; k < need; k++, j++) {
        unsigned char l = k == 0 ? lo : 0x80, h = k == 0 ? hi : 0xBF;
        if (j >= n || s[j] < l || s[j] > h) {
            *len_ok = j - *i;
            return false;
        }
    }
    *len_ok = j - *i;
    return true;
}

json_t *hy_json_text(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, len;
    bool valid = true;
    while (i < n) {
        if (!utf8_next(u, n, &i, &len)) {
            valid = false;
            break;
        }
        i += len;
    }
    if (valid) return json_stringn(s, n);
    hy_buf b = {0};
    for (i = 0; i < n; i += len) {
        if (utf8_next(u, n, &i, &len)) hy_buf_add(&b, s + i, len);
        else hy_buf_add(&b, "\xEF\xBF\xBD", 3);
    }
    json_t *v = json_stringn(b.p ? b.p : "", b.len);
    hy_buf_free(&b);
    return v;
}

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

/* "name" and "name:latest" are the same model; a tag other than latest must match */
static void canon_name(const char *in, char *out, size_t len) {
    const char *slash = strrchr(in, '/');
    const char *colon = strchr(slash ? slash : in, ':');
    snprintf(out, len, "%s%s", in, colon ? "" : ":latest");
}

/* ---- request parsing ------------------------------------------------------ */

typedef struct {
    char err[HY_ERRLEN];
    unsigned status;
} perr;

static bool fail(perr *e, unsigned status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(perr *e, unsigned status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->err, sizeof e->err, fmt, ap);
    va_end(ap);
    e->status = status;
    return false;
}

static json_t *parse_object(hy_http_req *r, perr *e) {
    if (r->body_len == 0) {
        fail(e, 400, "the request body is empty; expected a JSON object");
        return NULL;
    }
    json_error_t je;
    json_t *v = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!v) {
        fail(e, 400, "invalid JSON: %s (line %d, column %d)", je.text, je.line, je.column);
        return NULL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        fail(e, 400, "the request body must be a JSON object");
        return NULL;
    }
    return v;
}

static bool get_bool(json_t *o, const char *k, bool *out, perr *e) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) return true;
    if (!json_is_boolean(v)) return fail(e, 400, "'%s' must be a boolean", k);
    *out = json_is_true(v);
    return true;
}

static bool get_number(json_t *o, const char *k, double lo, double hi, double *out, perr *e) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) return true;
    if (!json_is_number(v)) return fail(e, 400, "'%s' must be a number", k);
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi) return fail(e, 400, "'%s' must be between %g and %g", k, lo, hi);
    *out = d;
    return true;
}

static bool get_int(json_t *o, const char *k, long long lo, long long hi, long long *out, bool *has, perr *e) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) return true;
    long long x;
    if (json_is_integer(v)) x = json_integer_value(v);
    else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) && fabs(json_real_value(v)) < 9e15)
        x = (long long)json_real_value(v);
    else return fail(e, 400, "'%s' must be an integer", k);
    if (x < lo || x > hi) return fail(e, 400, "'%s' must be between %lld and %lld", k, lo, hi);
    *out = x;
    if (has) *has = true;
    return true;
}

static bool get_string(json_t *o, const char *k, const char **out, perr *e) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) return true;
    if (!json_is_string(v)) return fail(e, 400, "'%s' must be a string", k);
    *out = json_string_value(v);
    return true;
}

/* stop: a string or an array of strings */
static bool get_stops(json_t *o, const char *k, hy_job *j, perr *e) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) return true;
    json_t *one[1] = {v};
    json_t **items = one;
    size_t n = 1;
    json_t *arr = NULL;
    if (json_is_array(v)) {
        arr = v;
        n = json_array_size(v);
    } else if (!json_is_string(v)) {
        return fail(e, 400, "'%s' must be a string or an array of strings", k);
    }
    if (n > HY_MAX_STOPS) return fail(e, 400, "'%s' has %zu entries; at most %d are accepted", k, n, HY_MAX_STOPS);
    j->stops = calloc(n ? n : 1, sizeof *j->stops);
    if (!j->stops) return fail(e, 500, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *s = arr ? json_array_get(arr, i) : items[i];
        if (!json_is_string(s)) return fail(e, 400, "'%s' must be a string or an array of strings", k);
        size_t len = json_string_length(s);
        if (len == 0) continue;
        if (len > HY_MAX_STOP_LEN)
            return fail(e, 400, "a stop string is %zu bytes; at most %d are accepted", len, HY_MAX_STOP_LEN);
        j->stops[j->n_stops] = strdup(json_string_value(s));
        if (!j->stops[j->n_stops]) return fail(e, 500, "out of memory");
        j->n_stops++;
    }
    return true;
}

static bool check_model(hy_server *s, json_t *req, bool allow_name_key, const char **model, perr *e) {
    json_t *m = json_object_get(req, "model");
    if ((!m || json_is_null(m)) && allow_name_key) m = json_object_get(req, "name");
    if (!m || json_is_null(m)) return fail(e, 400, "'model' is required");
    if (!json_is_string(m)) return fail(e, 400, "'model' must be a string");
    const char *name = json_string_value(m);
    char c[600];
    canon_name(name, c, sizeof c);
    if (strcmp(c, s->canon)) return fail(e, 404, "model '%.200s' not found", name);
    *model = name;
    return true;
}

static int respond_error(hy_http_req *r, perr *e) { return hy_http_error(r, e->status ? e->status : 400, "%s", e->err); }

/* Tokenize to size the request: the prompt must fit the context, and the
 * budget is capped by --max-tokens and by the room left after the prompt. */
static bool budget(hy_server *s, hy_job *j, long long requested, perr *e) {
    int32_t *toks = NULL;
    int n = 0;
    char err[HY_ERRLEN];
    if (hy_engine_tokenize(s->engine, j->prompt, true, &toks, &n, err, sizeof err))
        return fail(e, 400, "cannot tokenize the prompt: %s", err);
    free(toks);
    if (n == 0) return fail(e, 400, "the prompt is empty");
    if (n >= s->n_ctx)
        return fail(e, 400, "the prompt is %d tokens; the context holds %d (start the server with a larger --ctx)", n,
                    s->n_ctx);
    long long cap = s->p.max_tokens;
    if (s->n_ctx - n < cap) cap = s->n_ctx - n;
    j->sp.n_predict = (int)(requested < 0 || requested > cap ? cap : requested);
    return true;
}

/* messages: [{role, content}] with the roles the chat templates know */
static bool parse_messages(json_t *msgs, bool openai, const char ***roles_out, char ***contents_out, int *n_out,
                           bool *last_assistant, perr *e) {
    if (!msgs || json_is_null(msgs)) return fail(e, 400, "'messages' is required");
    if (!json_is_array(msgs)) return fail(e, 400, "'messages' must be an array");
    size_t n = json_array_size(msgs);
    if (n == 0) return fail(e, 400, "'messages' must not be empty");
    if (n > 4096) return fail(e, 400, "'messages' has %zu entries; at most 4096 are accepted", n);
    const char **roles = calloc(n, sizeof *roles);
    char **contents = calloc(n, sizeof *contents);
    *roles_out = roles;
    *contents_out = contents;
    *n_out = 0;
    if (!roles || !contents) return fail(e, 500, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(msgs, i);
        if (!json_is_object(m)) return fail(e, 400, "messages[%zu] must be an object", i);
        json_t *role = json_object_get(m, "role");
        if (!json_is_string(role)) return fail(e, 400, "messages[%zu].role must be a string", i);
        const char *rv = json_string_value(role);
        if (!strcmp(rv, "system") || !strcmp(rv, "user") || !strcmp(rv, "assistant") || !strcmp(rv, "tool"))
            roles[i] = !strcmp(rv, "system") ? "system" : !strcmp(rv, "user") ? "user"
                                                       : !strcmp(rv, "assistant") ? "assistant" : "tool";
        else if (openai && !strcmp(rv, "developer")) roles[i] = "system";
        else
            return fail(e, 400, "messages[%zu].role must be one of system, user, assistant, tool (got '%.40s')", i,
                        rv);
        json_t *c = json_object_get(m, "content");
        hy_buf text = {0};
        if (!c || json_is_null(c)) {
            /* an assistant turn that only called tools has no content */
        } else if (json_is_string(c)) {
            hy_buf_add(&text, json_string_value(c), json_string_length(c));
        } else if (openai && json_is_array(c)) {
            for (size_t k = 0; k < json_array_size(c); k++) {
                json_t *part = json_array_get(c, k);
                json_t *type = json_object_get(part, "type");
                json_t *t = json_object_get(part, "text");
                if (!json_is_object(part) || !json_is_string(type) || strcmp(json_string_value(type), "text") ||
                    !json_is_string(t)) {
                    hy_buf_free(&text);
                    return fail(e, 400, "messages[%zu].content[%zu]: only text parts are supported", i, k);
                }
                hy_buf_add(&text, json_string_value(t), json_string_length(t));
            }
        } else {
            return fail(e, 400, "messages[%zu].content must be a string", i);
        }
        json_t *images = json_object_get(m, "images");
        if (images && !json_is_null(images) && !(json_is_array(images) && json_array_size(images) == 0)) {
            hy_buf_free(&text);
            return fail(e, 400, "this model does not support images");
        }
        contents[i] = text.p ? text.p : strdup("");
        *n_out = (int)i + 1;
        if (!contents[i]) return fail(e, 500, "out of memory");
    }
    *last_assistant = !strcmp(roles[n - 1], "assistant");
    return true;
}

static void free_messages(const char **roles, char **contents, int n) {
    for (int i = 0; i < n; i++) free(contents[i]);
    free(contents);
    free((void *)roles);
}

static bool format_chat(hy_server *s, const char *const *roles, const char *const *contents, int n,
                        bool add_assistant, char **out, perr *e) {
    char err[HY_ERRLEN];
    if (hy_engine_format_chat(s->engine, roles, contents, n, add_assistant, out, err, sizeof err))
        return fail(e, 500, "%s", err);
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
    canon_name(s->name, s->canon, sizeof s->canon);

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
    json_object_set_new(e, "context_length", json_integer(s->n_ctx));
    return hy_http_json(r, 200, json_pack("{s:[o]}", "models", e));
}

int hy_api_show(hy_server *s, hy_http_req *r) {
    perr e = {0};
    json_t *req = parse_object(r, &e);
    const char *model;
    if (!req || !check_model(s, req, true, &model, &e)) {
        json_decref(req);
        return respond_error(r, &e);
    }
    json_decref(req);
    char modelfile[4300 + 64];
    snprintf(modelfile, sizeof modelfile, "# served by hypura %s\nFROM %s\n", HY_SERVER_VERSION, s->model_path);
    char params[64];
    snprintf(params, sizeof params, "num_ctx %d", s->n_ctx);
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

static int embeddings_unsupported(hy_server *s, hy_http_req *r) {
    perr e = {0};
    json_t *req = parse_object(r, &e);
    const char *model;
    bool ok = req && check_model(s, req, false, &model, &e);
    json_decref(req);
    if (!ok) return respond_error(r, &e);
    return hy_http_error(r, 501, "this model does not support embeddings (hypura serve loads models for text generation only)");
}

int hy_api_embed(hy_server *s, hy_http_req *r) { return embeddings_unsupported(s, r); }
int hy_oai_embeddings(hy_server *s, hy_http_req *r) { return embeddings_unsupported(s, r); }

/* ---- Ollama: generation ------------------------------------------------------ */

/* options: temperature, top_k, top_p, seed, num_predict, stop, num_ctx (others are ignored) */
static bool parse_ollama_options(hy_server *s, json_t *req, hy_job *j, long long *n_predict, perr *e) {
    j->sp.temp = 0.8f;
    j->sp.top_k = 40;
    j->sp.top_p = 0.9f;
    j->sp.seed = (uint32_t)next_random(s);
    *n_predict = -1;
    json_t *o = json_object_get(req, "options");
    if (!o || json_is_null(o)) return true;
    if (!json_is_object(o)) return fail(e, 400, "'options' must be an object");
    double temp = j->sp.temp, top_p = j->sp.top_p;
    long long top_k = j->sp.top_k, seed = -1, num_ctx = 0;
    bool has_seed = false;
    if (!get_number(o, "temperature", 0, 100, &temp, e) || !get_number(o, "top_p", 0, 1, &top_p, e) ||
        !get_int(o, "top_k", 0, 1 << 20, &top_k, NULL, e) ||
        !get_int(o, "seed", -1, 0xFFFFFFFFll, &seed, &has_seed, e) ||
        !get_int(o, "num_predict", -2, 1 << 30, n_predict, NULL, e) ||
        !get_int(o, "num_ctx", 0, 1 << 30, &num_ctx, NULL, e) || !get_stops(o, "stop", j, e))
        return false;
    /* num_ctx is accepted but the context is the server's (--ctx): one engine serves everyone */
    j->sp.temp = (float)temp;
    j->sp.top_p = (float)top_p;
    j->sp.top_k = (int)top_k;
    if (has_seed && seed >= 0) j->sp.seed = (uint32_t)seed;
    return true;
}

static void fmt_init(hy_server *s, hy_fmt *f, enum hy_api_kind kind, bool stream) {
    memset(f, 0, sizeof *f);
    f->srv = s;
    f->kind = kind;
    f->stream = stream;
    f->created = (long)time(NULL);
    snprintf(f->id, sizeof f->id, "%s%016llx", kind == HY_API_OAI_CHAT ? "chatcmpl-" : "cmpl-",
             (unsigned long long)next_random(s));
}

int hy_api_generate(hy_server *s, hy_http_req *r) {
    perr e = {0};
    hy_job *j = NULL;
    json_t *req = parse_object(r, &e);
    const char *model, *prompt = NULL, *system = NULL;
    bool stream = true, raw = false;
    long long n_predict;
    if (!req || !check_model(s, req, false, &model, &e)) goto bad;
    if (!get_string(req, "prompt", &prompt, &e) || !get_string(req, "system", &system, &e) ||
        !get_bool(req, "stream", &stream, &e) || !get_bool(req, "raw", &raw, &e))
        goto bad;
    json_t *images = json_object_get(req, "images");
    if (images && !json_is_null(images) && !(json_is_array(images) && json_array_size(images) == 0)) {
        fail(&e, 400, "this model does not support images");
        goto bad;
    }
    if (!(j = hy_job_new())) {
        fail(&e, 500, "out of memory");
        goto bad;
    }
    if (!parse_ollama_options(s, req, j, &n_predict, &e)) goto bad;
    if (!prompt || !*prompt) {
        /* Ollama's "load the model" request: nothing to generate */
        char ts[64];
        hy_rfc3339_now(ts, sizeof ts);
        json_t *o = json_pack("{s:s,s:s,s:s,s:b,s:s}", "model", model, "created_at", ts, "response", "", "done", 1,
                              "done_reason", "load");
        json_decref(req);
        hy_job_unref(j);
        return hy_http_json(r, 200, o);
    }
    if (raw) {
        j->prompt = strdup(prompt);
    } else {
        const char *roles[2], *contents[2];
        int n = 0;
        if (system && *system) roles[n] = "system", contents[n++] = system;
        roles[n] = "user", contents[n++] = prompt;
        if (!format_chat(s, roles, contents, n, true, &j->prompt, &e)) goto bad;
    }
    if (!j->prompt) {
        fail(&e, 500, "out of memory");
        goto bad;
    }
    if (!budget(s, j, n_predict, &e)) goto bad;
    hy_fmt f;
    fmt_init(s, &f, HY_API_GENERATE, stream);
    snprintf(f.model, sizeof f.model, "%s", model);
    json_decref(req);
    return hy_http_generate(r, &f, j);
bad:
    json_decref(req);
    hy_job_unref(j);
    return respond_error(r, &e);
}

int hy_api_chat(hy_server *s, hy_http_req *r) {
    perr e = {0};
    hy_job *j = NULL;
    const char **roles = NULL;
    char **contents = NULL;
    int n = 0;
    json_t *req = parse_object(r, &e);
    const char *model;
    bool stream = true, last_assistant = false;
    long long n_predict;
    if (!req || !check_model(s, req, false, &model, &e)) goto bad;
    if (!get_bool(req, "stream", &stream, &e)) goto bad;
    if (!parse_messages(json_object_get(req, "messages"), false, &roles, &contents, &n, &last_assistant, &e)) goto bad;
    if (!(j = hy_job_new())) {
        fail(&e, 500, "out of memory");
        goto bad;
    }
    if (!parse_ollama_options(s, req, j, &n_predict, &e)) goto bad;
    /* a conversation ending with the assistant's turn is continued, not answered */
    if (!format_chat(s, roles, (const char *const *)contents, n, !last_assistant, &j->prompt, &e)) goto bad;
    if (!budget(s, j, n_predict, &e)) goto bad;
    free_messages(roles, contents, n);
    hy_fmt f;
    fmt_init(s, &f, HY_API_CHAT, stream);
    snprintf(f.model, sizeof f.model, "%s", model);
    json_decref(req);
    return hy_http_generate(r, &f, j);
bad:
    free_messages(roles, contents, n);
    json_decref(req);
    hy_job_unref(j);
    return respond_error(r, &e);
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
    const char *id = r->path + strlen("/v1/models/");
    char c[600];
    canon_name(id, c, sizeof c);
    if (strcmp(c, s->canon)) return hy_http_error(r, 404, "model '%.200s' not found", id);
    return hy_http_json(r, 200, oai_model(s));
}

/* temperature, top_p, max_tokens / max_completion_tokens, seed, stop, n, stream, stream_options */
static bool parse_oai_common(hy_server *s, json_t *req, hy_job *j, long long *n_predict, bool *stream,
                             bool *include_usage, perr *e) {
    j->sp.temp = 1.0f;
    j->sp.top_p = 1.0f;
    j->sp.top_k = 0;
    j->sp.seed = (uint32_t)next_random(s);
    *n_predict = -1;
    double temp = j->sp.temp, top_p = j->sp.top_p;
    long long seed = 0, nn = 1, top_k = 0, mt = -1;
    bool has_seed = false, has_mt = false;
    if (!get_number(req, "temperature", 0, 2, &temp, e) || !get_number(req, "top_p", 0, 1, &top_p, e) ||
        !get_int(req, "top_k", 0, 1 << 20, &top_k, NULL, e) ||
        !get_int(req, "seed", -(1ll << 62), 1ll << 62, &seed, &has_seed, e) ||
        !get_int(req, "max_completion_tokens", 0, 1 << 30, &mt, &has_mt, e) ||
        (!has_mt && !get_int(req, "max_tokens", 0, 1 << 30, &mt, &has_mt, e)) ||
        !get_int(req, "n", 1, 1 << 20, &nn, NULL, e) || !get_bool(req, "stream", stream, e) ||
        !get_stops(req, "stop", j, e))
        return false;
    if (nn != 1) return fail(e, 400, "only n=1 is supported");
    json_t *so = json_object_get(req, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) return fail(e, 400, "'stream_options' must be an object");
        if (!get_bool(so, "include_usage", include_usage, e)) return false;
    }
    j->sp.temp = (float)temp;
    j->sp.top_p = (float)top_p;
    j->sp.top_k = (int)top_k;
    if (has_seed) j->sp.seed = (uint32_t)(uint64_t)seed;
    if (has_mt) *n_predict = mt;
    return true;
}

int hy_oai_chat(hy_server *s, hy_http_req *r) {
    perr e = {0};
    hy_job *j = NULL;
    const char **roles = NULL;
    char **contents = NULL;
    int n = 0;
    json_t *req = parse_object(r, &e);
    const char *model;
    bool stream = false, include_usage = false, last_assistant = false;
    long long n_predict;
    if (!req || !check_model(s, req, false, &model, &e)) goto bad;
    if (!parse_messages(json_object_get(req, "messages"), true, &roles, &contents, &n, &last_assistant, &e)) goto bad;
    if (!(j = hy_job_new())) {
        fail(&e, 500, "out of memory");
        goto bad;
    }
    if (!parse_oai_common(s, req, j, &n_predict, &stream, &include_usage, &e)) goto bad;
    if (!format_chat(s, roles, (const char *const *)contents, n, !last_assistant, &j->prompt, &e)) goto bad;
    if (!budget(s, j, n_predict, &e)) goto bad;
    free_messages(roles, contents, n);
    json_decref(req);
    hy_fmt f;
    fmt_init(s, &f, HY_API_OAI_CHAT, stream);
    f.include_usage = include_usage;
    return hy_http_generate(r, &f, j);
bad:
    free_messages(roles, contents, n);
    json_decref(req);
    hy_job_unref(j);
    return respond_error(r, &e);
}

int hy_oai_completions(hy_server *s, hy_http_req *r) {
    perr e = {0};
    hy_job *j = NULL;
    json_t *req = parse_object(r, &e);
    const char *model;
    bool stream = false, include_usage = false;
    long long n_predict;
    if (!req || !check_model(s, req, false, &model, &e)) goto bad;
    json_t *p = json_object_get(req, "prompt");
    if (json_is_array(p) && json_array_size(p) == 1) p = json_array_get(p, 0);
    if (!p || json_is_null(p)) {
        fail(&e, 400, "'prompt' is required");
        goto bad;
    }
    if (!json_is_string(p)) {
        fail(&e, 400, "'prompt' must be a string (or an array of one string)");
        goto bad;
    }
    if (!(j = hy_job_new())) {
        fail(&e, 500, "out of memory");
        goto bad;
    }
    if (!parse_oai_common(s, req, j, &n_predict, &stream, &include_usage, &e)) goto bad;
    if (!(j->prompt = strdup(json_string_value(p)))) {
        fail(&e, 500, "out of memory");
        goto bad;
    }
    if (!budget(s, j, n_predict, &e)) goto bad;
    json_decref(req);
    hy_fmt f;
    fmt_init(s, &f, HY_API_OAI_COMPLETION, stream);
    f.include_usage = include_usage;
    return hy_http_generate(r, &f, j);
bad:
    json_decref(req);
    hy_job_unref(j);
    return respond_error(r, &e);
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
    emit(f, oai_chunk(f, choice), out);
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
    return o;
}
