/* hy_server: the HTTP front of a loaded session — Ollama's API (/api/...) and
 * OpenAI's (/v1/...), over libmicrohttpd, JSON through jansson.
 *
 * Invariants:
 *  - One worker thread owns the engine. Generation requests are queued in
 *    arrival order (FIFO) and up to `parallel` of them are generated together,
 *    one sequence slot each, one decode step for all (engine/hy_batch.h); each
 *    HTTP connection has its own thread that waits for its turn and then relays
 *    the pieces the worker produces through a bounded per-request channel (a
 *    request whose client reads slower than it generates sits out the steps
 *    until there is room, so memory stays bounded and the others go on).
 *  - A client that goes away cancels its request: while queued it is dropped,
 *    while generating it leaves the batch before the next step.
 *  - Every failure a client can cause is a 4xx with a JSON error body; nothing
 *    a request contains stops the server.
 *  - A finished request's tokens stay in its slot's KV cache (prompt_cache), so
 *    a prompt that shares a prefix with them decodes only the rest.
 *  - The server never frees the session: hy_server_stop() stops accepting,
 *    cancels the running generation, fails what is queued with 503, joins all
 *    threads and returns; the caller frees the session afterwards. */
#ifndef HY_SERVER_H
#define HY_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "hypura.h"
#include "engine/hy_spec.h"

typedef struct {
    const char *host;        /* address to bind; default "127.0.0.1" (loopback only) */
    int    port;             /* 0 = let the system pick a free port; default 8080 */
    const char *model_name;  /* listed name; NULL = the model file's stem (moe.gguf -> "moe") */
    size_t max_body;         /* request bodies larger than this get 413; default 1 MiB */
    int    max_tokens;       /* cap on tokens generated per request; default 4096 */
    int    parallel;         /* sequences generated at once, <= the session's n_seq; default 1. The
                                context (the engine's n_ctx) is split among them equally */
    int    max_queue;        /* generation requests waiting at once before 503; default 512 */
    bool   log_requests;     /* one line per request on stderr; default true */
    bool   prompt_cache;     /* reuse the KV cache of the previous request's shared prefix; default
                                true. Off: every prompt is decoded in full, so a greedy answer equals
                                a fresh `hypura run` bit for bit whatever came before (see README). */
    hy_engine *draft;        /* speculative decoding (serve --draft, hy_spec.h): this resident draft's tokens
                                are verified by the model; NULL: none. Needs parallel 1: each request then
                                runs whole, without the prompt cache. */
    hy_spec_params spec;     /* draft_max, adaptive; spec.session is set to the server's session */
} hy_server_params;

hy_server_params hy_server_default_params(void);

typedef struct hy_server hy_server;

/* Starts listening and the worker; the session must stay open until hy_server_stop. */
int  hy_server_start(const hy_server_params *p, hy_session *session, hy_server **out, char *err, size_t errlen);
/* The port actually bound (the chosen one when params.port was 0). */
int  hy_server_port(const hy_server *s);
/* "127.0.0.1" or "[::1]": the host part of the URL the server answers on. */
const char *hy_server_url_host(const hy_server *s);
/* The name clients use for the model ("moe" for moe.gguf unless named). */
const char *hy_server_model_name(const hy_server *s);
/* Stop and free the server (not the session). Safe to call once, from any thread
 * that is not one of the server's. */
void hy_server_stop(hy_server *s);

#endif
