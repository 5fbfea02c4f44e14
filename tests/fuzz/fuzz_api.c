/* libFuzzer target: the JSON request parsing of every HTTP route that takes a
 * body (src/server/hy_api_parse.c) — /api/show, /api/generate, /api/chat,
 * /api/embed(dings), /v1/chat/completions, /v1/completions, /v1/embeddings —
 * plus the model-name check of GET /v1/models/NAME and the UTF-8 repair the
 * responses use. Each input is one request body, given to every route.
 *
 * Besides "no crash, no leak, no UB" it checks what the handlers rely on: an
 * accepted request names the served model and has every field in its range
 * (roles known, stop strings 1..256 bytes without NUL, at most 16 of them,
 * sampling values in range); a refused one has a 4xx (or 500) status and a
 * message that is valid UTF-8, so the error body the server builds
 * from it (json_pack "s") exists. Built by tests/fuzz/build.sh (libFuzzer) and
 * by CMake with tests/fuzz/driver.c (replays the corpus and the reproducers). */
#include "server/hy_server_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_assert.h"

#define CANON "tiny:latest"

static bool is_ollama(enum hy_api_route r) { return r == HY_ROUTE_GENERATE || r == HY_ROUTE_CHAT; }
static bool is_chat(enum hy_api_route r) { return r == HY_ROUTE_CHAT || r == HY_ROUTE_OAI_CHAT; }

/* the error body exactly as hy_http.c's error_body packs it */
static void check_message(unsigned status, const char *err) {
    ASSERT(status == 400 || status == 404 || status == 500);
    ASSERT(err[0]);
    json_t *o = json_pack("{s:s}", "error", err);
    json_t *a = json_pack("{s:{s:s,s:s,s:n,s:s?}}", "error", "message", err, "type", "invalid_request_error", "param",
                          "code", status == 404 ? "model_not_found" : NULL);
    ASSERT(o && a);
    json_decref(o);
    json_decref(a);
}

static void check_accepted(enum hy_api_route r, const hy_api_req *q) {
    ASSERT(json_is_object(q->root));
    ASSERT(q->model);
    char c[600];
    hy_api_canon_name(q->model, c, sizeof c);
    ASSERT(!strcmp(c, CANON));
    if (r == HY_ROUTE_SHOW || r == HY_ROUTE_EMBED || r == HY_ROUTE_OAI_EMBEDDINGS) return;
    if (is_chat(r)) {
        ASSERT(q->n_msgs >= 1 && q->n_msgs <= 4096 && q->roles && q->contents);
        for (int i = 0; i < q->n_msgs; i++) {
            const char *ro = q->roles[i];
            ASSERT(ro && (!strcmp(ro, "system") || !strcmp(ro, "user") || !strcmp(ro, "assistant") ||
                          !strcmp(ro, "tool")));
            ASSERT(q->contents[i]);
        }
        ASSERT(q->last_assistant == !strcmp(q->roles[q->n_msgs - 1], "assistant"));
    } else {
        ASSERT(q->n_msgs == 0 && !q->roles && !q->contents);
    }
    if (r == HY_ROUTE_OAI_COMPLETIONS) ASSERT(q->prompt);
    ASSERT(q->n_stops >= 0 && q->n_stops <= 16 && (q->n_stops == 0 || q->stops));
    for (int i = 0; i < q->n_stops; i++) {
        size_t l = strlen(q->stops[i]);
        ASSERT(l >= 1 && l <= 256);
    }
    ASSERT(q->sp.temp >= 0 && q->sp.temp <= (is_ollama(r) ? 100 : 2));
    ASSERT(q->sp.top_p >= 0 && q->sp.top_p <= 1);
    ASSERT(q->sp.top_k >= 0 && q->sp.top_k <= (1 << 20));
    ASSERT(q->n_predict >= -2 && q->n_predict <= (1 << 30));
    if (!is_ollama(r)) ASSERT(q->n_predict >= -1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *body = (const char *)data;
    for (int r = 0; r < HY_ROUTE_COUNT; r++) {
        hy_api_req q;
        char err[HY_ERRLEN];
        err[0] = 0;
        unsigned st = hy_api_parse((enum hy_api_route)r, CANON, 12345u, body, size, &q, err, sizeof err);
        if (st == 0) check_accepted((enum hy_api_route)r, &q);
        else check_message(st, err);
        hy_api_req_free(&q);
        ASSERT(!q.root && !q.stops && !q.contents);
    }

    /* GET /v1/models/NAME: the path (as libmicrohttpd decodes it) is any bytes up to a NUL */
    char *name = malloc(size + 1);
    ASSERT(name);
    memcpy(name, data, size);
    name[size] = 0;
    char err[HY_ERRLEN];
    unsigned st = hy_api_check_name(CANON, name, err, sizeof err);
    if (st) check_message(st, err);
    /* the repair every refusal goes through: valid afterwards, same length */
    size_t before = strlen(name);
    hy_utf8_fix(name);
    ASSERT(strlen(name) == before);
    json_t *v = json_string(name);
    ASSERT(v);
    json_decref(v);
    free(name);

    /* generated text of any bytes becomes a JSON string (U+FFFD for invalid sequences) */
    json_t *t = hy_json_text(body, size);
    ASSERT(t);
    char *dump = json_dumps(t, JSON_COMPACT | JSON_ENCODE_ANY);
    ASSERT(dump);
    free(dump);
    json_decref(t);
    return 0;
}
