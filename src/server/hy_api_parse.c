/* Request parsing of both APIs, apart from the handlers in hy_api.c: a JSON
 * body in, a checked hy_api_req (or an HTTP status and a one-line message)
 * out. Nothing here needs a loaded model, the engine or a connection, so the
 * whole of it can be fuzzed on its own (tests/fuzz/fuzz_api.c). The handlers
 * then apply the chat template, size the prompt and queue the job. */
#include "server/hy_server_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HY_MAX_STOPS 16
#define HY_MAX_STOP_LEN 256
#define HY_MAX_MESSAGES 4096

/* ---- text helpers ---------------------------------------------------------- */

void hy_buf_add(hy_buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return; /* the text is cut; the caller's JSON stays valid */
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void hy_buf_free(hy_buf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

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

void hy_utf8_fix(char *s) {
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s), len;
    for (size_t i = 0; i < n; i += len)
        if (!utf8_next(u, n, &i, &len)) memset(s + i, '?', len);
}

void hy_api_canon_name(const char *in, char *out, size_t len) {
    const char *slash = strrchr(in, '/');
    const char *colon = strchr(slash ? slash : in, ':');
    snprintf(out, len, "%s%s", in, colon ? "" : ":latest");
}

/* ---- checks ---------------------------------------------------------------- */

bool hy_perr_fail(hy_perr *e, unsigned status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->err, sizeof e->err, fmt, ap);
    va_end(ap);
    e->status = status;
    return false;
}

static json_t *parse_object(const char *body, size_t len, hy_perr *e) {
    if (len == 0) {
        hy_perr_fail(e, 400, "the request body is empty; expected a JSON object");
        return NULL;
    }
    json_error_t je;
    json_t *v = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!v) {
        hy_perr_fail(e, 400, "invalid JSON: %s (line %d, column %d)", je.text, je.line, je.column);
        return NULL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        hy_perr_fail(e, 400, "the request body must be a JSON object");
        return NULL;
    }
    return v;
}

static bool get_bool(json_t *o, const char *k, bool *out, hy_perr *e) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) return true;
    if (!json_is_boolean(v)) return hy_perr_fail(e, 400, "'%s' must be a boolean", k);
    *out = json_is_true(v);
    return true;
}

static bool get_number(json_t *o, const char *k, double lo, double hi, double *out, hy_perr *e) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) return true;
    if (!json_is_number(v)) return hy_perr_fail(e, 400, "'%s' must be a number", k);
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi) return hy_perr_fail(e, 400, "'%s' must be between %g and %g", k, lo, hi);
    *out = d;
    return true;
}

static bool get_int(json_t *o, const char *k, long long lo, long long hi, long long *out, bool *has, hy_perr *e) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) return true;
    long long x;
    if (json_is_integer(v)) x = json_integer_value(v);
    else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) && fabs(json_real_value(v)) < 9e15)
        x = (long long)json_real_value(v);
    else return hy_perr_fail(e, 400, "'%s' must be an integer", k);
    if (x < lo || x > hi) return hy_perr_fail(e, 400, "'%s' must be between %lld and %lld", k, lo, hi);
    *out = x;
    if (has) *has = true;
    return true;
}

static bool get_string(json_t *o, const char *k, const char **out, hy_perr *e) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) return true;
    if (!json_is_string(v)) return hy_perr_fail(e, 400, "'%s' must be a string", k);
    *out = json_string_value(v);
    return true;
}

/* stop: a string or an array of strings */
static bool get_stops(json_t *o, const char *k, hy_api_req *q, hy_perr *e) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) return true;
    size_t n = 1;
    json_t *arr = NULL;
    if (json_is_array(v)) {
        arr = v;
        n = json_array_size(v);
    } else if (!json_is_string(v)) {
        return hy_perr_fail(e, 400, "'%s' must be a string or an array of strings", k);
    }
    if (n > HY_MAX_STOPS) return hy_perr_fail(e, 400, "'%s' has %zu entries; at most %d are accepted", k, n, HY_MAX_STOPS);
    q->stops = calloc(n ? n : 1, sizeof *q->stops);
    if (!q->stops) return hy_perr_fail(e, 500, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *s = arr ? json_array_get(arr, i) : v;
        if (!json_is_string(s)) return hy_perr_fail(e, 400, "'%s' must be a string or an array of strings", k);
        size_t len = json_string_length(s);
        if (len == 0) continue;
        if (len > HY_MAX_STOP_LEN)
            return hy_perr_fail(e, 400, "a stop string is %zu bytes; at most %d are accepted", len, HY_MAX_STOP_LEN);
        /* the generation side matches C strings: a NUL inside would leave an empty stop string */
        if (strlen(json_string_value(s)) != len) return hy_perr_fail(e, 400, "a stop string must not contain U+0000");
        q->stops[q->n_stops] = strdup(json_string_value(s));
        if (!q->stops[q->n_stops]) return hy_perr_fail(e, 500, "out of memory");
        q->n_stops++;
    }
    return true;
}

static bool check_name(const char *canon, const char *name, hy_perr *e) {
    char c[600];
    hy_api_canon_name(name, c, sizeof c);
    if (strcmp(c, canon)) return hy_perr_fail(e, 404, "model '%.200s' not found", name);
    return true;
}

static bool check_model(const char *canon, json_t *req, bool allow_name_key, const char **model, hy_perr *e) {
    json_t *m = json_object_get(req, "model");
    if ((!m || json_is_null(m)) && allow_name_key) m = json_object_get(req, "name");
    if (!m || json_is_null(m)) return hy_perr_fail(e, 400, "'model' is required");
    if (!json_is_string(m)) return hy_perr_fail(e, 400, "'model' must be a string");
    const char *name = json_string_value(m);
    if (strlen(name) != json_string_length(m)) return hy_perr_fail(e, 400, "'model' must not contain U+0000");
    if (!check_name(canon, name, e)) return false;
    *model = name;
    return true;
}

/* messages: [{role, content}] with the roles the chat templates know */
static bool parse_messages(json_t *msgs, bool openai, hy_api_req *q, hy_perr *e) {
    if (!msgs || json_is_null(msgs)) return hy_perr_fail(e, 400, "'messages' is required");
    if (!json_is_array(msgs)) return hy_perr_fail(e, 400, "'messages' must be an array");
    size_t n = json_array_size(msgs);
    if (n == 0) return hy_perr_fail(e, 400, "'messages' must not be empty");
    if (n > HY_MAX_MESSAGES)
        return hy_perr_fail(e, 400, "'messages' has %zu entries; at most %d are accepted", n, HY_MAX_MESSAGES);
    const char **roles = calloc(n, sizeof *roles);
    char **contents = calloc(n, sizeof *contents);
    q->roles = roles;
    q->contents = contents;
    q->n_msgs = 0;
    if (!roles || !contents) return hy_perr_fail(e, 500, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(msgs, i);
        if (!json_is_object(m)) return hy_perr_fail(e, 400, "messages[%zu] must be an object", i);
        json_t *role = json_object_get(m, "role");
        if (!json_is_string(role)) return hy_perr_fail(e, 400, "messages[%zu].role must be a string", i);
        const char *rv = json_string_value(role);
        if (!strcmp(rv, "system") || !strcmp(rv, "user") || !strcmp(rv, "assistant") || !strcmp(rv, "tool"))
            roles[i] = !strcmp(rv, "system") ? "system" : !strcmp(rv, "user") ? "user"
                                                       : !strcmp(rv, "assistant") ? "assistant" : "tool";
        else if (openai && !strcmp(rv, "developer")) roles[i] = "system";
        else
            return hy_perr_fail(e, 400, "messages[%zu].role must be one of system, user, assistant, tool (got '%.40s')", i,
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
                    return hy_perr_fail(e, 400, "messages[%zu].content[%zu]: only text parts are supported", i, k);
                }
                hy_buf_add(&text, json_string_value(t), json_string_length(t));
            }
        } else {
            return hy_perr_fail(e, 400, "messages[%zu].content must be a string", i);
        }
        json_t *images = json_object_get(m, "images");
        if (images && !json_is_null(images) && !(json_is_array(images) && json_array_size(images) == 0)) {
            hy_buf_free(&text);
            return hy_perr_fail(e, 400, "this model does not support images");
        }
        contents[i] = text.p ? text.p : strdup("");
        q->n_msgs = (int)i + 1;
        if (!contents[i]) return hy_perr_fail(e, 500, "out of memory");
    }
    q->last_assistant = !strcmp(roles[n - 1], "assistant");
    return true;
}

/* options: temperature, top_k, top_p, seed, num_predict, stop, num_ctx (others are ignored) */
static bool parse_ollama_options(json_t *req, uint32_t seed_default, hy_api_req *q, hy_perr *e) {
    q->sp.temp = 0.8f;
    q->sp.top_k = 40;
    q->sp.top_p = 0.9f;
    q->sp.seed = seed_default;
    q->n_predict = -1;
    json_t *o = json_object_get(req, "options");
    if (!o || json_is_null(o)) return true;
    if (!json_is_object(o)) return hy_perr_fail(e, 400, "'options' must be an object");
    double temp = q->sp.temp, top_p = q->sp.top_p;
    long long top_k = q->sp.top_k, seed = -1;
    bool has_seed = false;
    if (!get_number(o, "temperature", 0, 100, &temp, e) || !get_number(o, "top_p", 0, 1, &top_p, e) ||
        !get_int(o, "top_k", 0, 1 << 20, &top_k, NULL, e) ||
        !get_int(o, "seed", -1, 0xFFFFFFFFll, &seed, &has_seed, e) ||
        !get_int(o, "num_predict", -2, 1 << 30, &q->n_predict, NULL, e) ||
        !get_int(o, "num_ctx", 0, 1 << 30, &q->num_ctx, NULL, e) || !get_stops(o, "stop", q, e))
        return false;
    /* num_ctx is honoured up to a sequence slot's share of the server's --ctx (hy_api.c) */
    q->sp.temp = (float)temp;
    q->sp.top_p = (float)top_p;
    q->sp.top_k = (int)top_k;
    if (has_seed && seed >= 0) q->sp.seed = (uint32_t)seed;
    return true;
}

/* temperature, top_p, max_tokens / max_completion_tokens, seed, stop, n, stream, stream_options */
static bool parse_oai_common(json_t *req, uint32_t seed_default, hy_api_req *q, hy_perr *e) {
    q->sp.temp = 1.0f;
    q->sp.top_p = 1.0f;
    q->sp.top_k = 0;
    q->sp.seed = seed_default;
    q->n_predict = -1;
    double temp = q->sp.temp, top_p = q->sp.top_p;
    long long seed = 0, nn = 1, top_k = 0, mt = -1;
    bool has_seed = false, has_mt = false;
    if (!get_number(req, "temperature", 0, 2, &temp, e) || !get_number(req, "top_p", 0, 1, &top_p, e) ||
        !get_int(req, "top_k", 0, 1 << 20, &top_k, NULL, e) ||
        !get_int(req, "seed", -(1ll << 62), 1ll << 62, &seed, &has_seed, e) ||
        !get_int(req, "max_completion_tokens", 0, 1 << 30, &mt, &has_mt, e) ||
        (!has_mt && !get_int(req, "max_tokens", 0, 1 << 30, &mt, &has_mt, e)) ||
        !get_int(req, "n", 1, 1 << 20, &nn, NULL, e) || !get_bool(req, "stream", &q->stream, e) ||
        !get_stops(req, "stop", q, e))
        return false;
    if (nn != 1) return hy_perr_fail(e, 400, "only n=1 is supported");
    json_t *so = json_object_get(req, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) return hy_perr_fail(e, 400, "'stream_options' must be an object");
        if (!get_bool(so, "include_usage", &q->include_usage, e)) return false;
    }
    q->sp.temp = (float)temp;
    q->sp.top_p = (float)top_p;
    q->sp.top_k = (int)top_k;
    if (has_seed) q->sp.seed = (uint32_t)(uint64_t)seed;
    if (has_mt) q->n_predict = mt;
    return true;
}

static bool no_images(json_t *req, hy_perr *e) {
    json_t *images = json_object_get(req, "images");
    if (images && !json_is_null(images) && !(json_is_array(images) && json_array_size(images) == 0))
        return hy_perr_fail(e, 400, "this model does not support images");
    return true;
}

static bool parse_route(enum hy_api_route route, const char *canon, uint32_t seed, const char *body, size_t len,
                        hy_api_req *q, hy_perr *e) {
    json_t *req = q->root = parse_object(body, len, e);
    if (!req || !check_model(canon, req, route == HY_ROUTE_SHOW, &q->model, e)) return false;
    switch (route) {
    case HY_ROUTE_SHOW:
    case HY_ROUTE_EMBED:
    case HY_ROUTE_OAI_EMBEDDINGS: return true;
    case HY_ROUTE_GENERATE:
        q->stream = true;
        return get_string(req, "prompt", &q->prompt, e) && get_string(req, "system", &q->system, e) &&
               get_bool(req, "stream", &q->stream, e) && get_bool(req, "raw", &q->raw, e) && no_images(req, e) &&
               parse_ollama_options(req, seed, q, e);
    case HY_ROUTE_CHAT:
        q->stream = true;
        return get_bool(req, "stream", &q->stream, e) &&
               parse_messages(json_object_get(req, "messages"), false, q, e) &&
               parse_ollama_options(req, seed, q, e);
    case HY_ROUTE_OAI_CHAT:
        return parse_messages(json_object_get(req, "messages"), true, q, e) && parse_oai_common(req, seed, q, e);
    case HY_ROUTE_OAI_COMPLETIONS: {
        json_t *p = json_object_get(req, "prompt");
        if (json_is_array(p) && json_array_size(p) == 1) p = json_array_get(p, 0);
        if (!p || json_is_null(p)) return hy_perr_fail(e, 400, "'prompt' is required");
        if (!json_is_string(p)) return hy_perr_fail(e, 400, "'prompt' must be a string (or an array of one string)");
        q->prompt = json_string_value(p);
        return parse_oai_common(req, seed, q, e);
    }
    case HY_ROUTE_COUNT: break;
    }
    return hy_perr_fail(e, 500, "unknown route %d", (int)route);
}

unsigned hy_api_parse(enum hy_api_route route, const char *canon, uint32_t seed, const char *body, size_t len,
                      hy_api_req *q, char *err, size_t errlen) {
    hy_perr e = {{0}, 0};
    memset(q, 0, sizeof *q);
    q->n_predict = -1;
    if (parse_route(route, canon, seed, body, len, q, &e)) return 0;
    hy_utf8_fix(e.err); /* names and jansson's messages quote the input, cut anywhere */
    snprintf(err, errlen, "%s", e.err);
    return e.status ? e.status : 400;
}

unsigned hy_api_check_name(const char *canon, const char *name, char *err, size_t errlen) {
    hy_perr e = {{0}, 0};
    if (check_name(canon, name, &e)) return 0;
    hy_utf8_fix(e.err);
    snprintf(err, errlen, "%s", e.err);
    return e.status;
}

void hy_api_req_free(hy_api_req *q) {
    for (int i = 0; i < q->n_msgs; i++) free(q->contents[i]);
    free(q->contents);
    free((void *)q->roles);
    for (int i = 0; i < q->n_stops; i++) free(q->stops[i]);
    free(q->stops);
    json_decref(q->root);
    memset(q, 0, sizeof *q);
}
