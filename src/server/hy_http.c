/* HTTP transport: libmicrohttpd with one thread per connection.
 *
 * A connection's thread may block: while its request waits in the queue, while
 * it collects a non-streaming answer, and inside the content reader of a
 * streaming answer until the worker hands it the next piece. Every such wait
 * is a 100 ms loop that also looks at the socket, so a client that hangs up
 * cancels its request even when nothing is being written to it, and at the
 * server's stop flag, so shutdown never waits on a client. */
#include "server/hy_server_int.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* hy_buf_add, hy_buf_free: hy_api_parse.c */

void hy_server_log(const hy_server *s, const char *fmt, ...) {
    if (!s->p.log_requests) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "[serve] %s\n", line);
}

hy_server_params hy_server_default_params(void) {
    hy_server_params p = {0};
    p.host = "127.0.0.1";
    p.port = 8080;
    p.max_body = 1 << 20;
    p.max_tokens = 4096;
    p.parallel = 1;
    p.max_queue = 512;
    p.log_requests = true;
    p.prompt_cache = true;
    return p;
}

#ifdef HY_HAVE_MHD

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#if MHD_VERSION < 0x00097002
typedef int mhd_result;
#else
typedef enum MHD_Result mhd_result;
#endif

/* bodies this far over the limit are not even drained: the connection is closed */
#define HY_DRAIN_FACTOR 16

struct conn_req {
    hy_buf body;
    bool too_large;
    uint64_t drained;
    double t_arrival;
};

static int conn_fd(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

/* The peer closed its side (or the socket failed). Only hang-up counts:
 * readable data is a pipelined request, not a departure. */
static bool peer_gone(int fd) {
    if (fd < 0) return false;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return false;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

static int queue_buffer(hy_http_req *r, unsigned status, const char *ctype, const char *data, size_t len) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    int ret = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

int hy_http_json(hy_http_req *r, unsigned status, json_t *body) {
    char *txt = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!txt) return queue_buffer(r, 500, "application/json; charset=utf-8", "{\"error\":\"out of memory\"}", 25);
    int ret = queue_buffer(r, status, "application/json; charset=utf-8", txt, strlen(txt));
    if (!r->nolog) hy_server_log(r->srv, "%s %s %u %.3fs", r->method, r->path, status, hy_now() - r->t_arrival);
    free(txt);
    return ret;
}

int hy_http_text(hy_http_req *r, unsigned status, const char *ctype, const char *text) {
    int ret = queue_buffer(r, status, ctype, text, strlen(text));
    hy_server_log(r->srv, "%s %s %u %.3fs", r->method, r->path, status, hy_now() - r->t_arrival);
    return ret;
}

static json_t *error_body(bool openai, unsigned status, const char *msg) {
    if (!openai) return json_pack("{s:s}", "error", msg);
    const char *type = status >= 500 ? "server_error" : "invalid_request_error";
    const char *code = status == 404 ? "model_not_found" : status == 413 ? "request_too_large" : NULL;
    return json_pack("{s:{s:s,s:s,s:n,s:s?}}", "error", "message", msg, "type", type, "param", "code", code);
}

int hy_http_error(hy_http_req *r, unsigned status, const char *fmt, ...) {
    char msg[HY_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return hy_http_json(r, status, error_body(r->openai, status, msg));
}

/* ---- streaming ------------------------------------------------------------ */

struct stream_ctx {
    hy_server *srv;
    hy_job *job;
    hy_fmt fmt;
    hy_buf out;
    size_t off;
    int fd;
    bool ended;
    int pieces;
    char method[16], path[128];
    double t_arrival;
};

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    struct stream_ctx *sc = cls;
    (void)pos;
    while (sc->off >= sc->out.len) {
        sc->off = 0;
        sc->out.len = 0;
        if (sc->ended) return MHD_CONTENT_READER_END_OF_STREAM;
        char *t;
        size_t n;
        int k = hy_job_next(sc->job, &t, &n, 100);
        if (k == 1) {
            do {
                hy_fmt_piece(&sc->fmt, t, n, &sc->out);
                free(t);
                sc->pieces++;
            } while (sc->out.len < max && hy_job_next(sc->job, &t, &n, 0) == 1);
        } else if (k == 0) {
            hy_fmt_end(&sc->fmt, sc->job, &sc->out);
            sc->ended = true;
        } else if (peer_gone(sc->fd)) {
            hy_job_cancel(sc->job);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    size_t n = sc->out.len - sc->off;
    if (n > max) n = max;
    memcpy(buf, sc->out.p + sc->off, n);
    sc->off += n;
    return (ssize_t)n;
}

/* one line for a finished generation: what it made, how much of the prompt came from the cache */
static void log_generation(hy_server *s, const char *method, const char *path, const char *how, hy_job *j,
                           double t_arrival) {
    pthread_mutex_lock(&j->mu);
    hy_gen_stats st = j->stats;
    int status = j->err_status, slot = j->slot, busy = j->n_busy;
    pthread_mutex_unlock(&j->mu);
    /* which sequence slot it ran in, and how many were busy when it joined */
    char where[64] = "";
    if (slot >= 0) snprintf(where, sizeof where, ", slot %d of %d (%d busy)", slot, s->n_slots, busy);
    if (status)
        hy_server_log(s, "%s %s %s: failed (%d: %s) after %d tokens%s, %.3fs", method, path, how, status, j->err,
                      st.n_gen, where, hy_now() - t_arrival);
    else
        hy_server_log(s, "%s %s 200 %s: %d tokens (%s), prompt %d tokens (%d from cache)%s, %.3fs", method, path, how,
                      st.n_gen, j->done_reason, st.n_prompt, st.n_prompt - st.n_prompt_eval, where,
                      hy_now() - t_arrival);
}

static void stream_free(void *cls) {
    struct stream_ctx *sc = cls;
    hy_job *j = sc->job;
    /* a response dropped before its end (write error, shutdown) cancels the job */
    if (!sc->ended) hy_job_cancel(j);
    if (sc->ended)
        log_generation(sc->srv, sc->method, sc->path, "stream", j, sc->t_arrival);
    else
        hy_server_log(sc->srv, "%s %s 200 stream: cancelled (the client went away) after %d pieces, %.3fs",
                      sc->method, sc->path, sc->pieces, hy_now() - sc->t_arrival);
    hy_job_unref(j);
    hy_buf_free(&sc->out);
    free(sc);
}

int hy_http_generate(hy_http_req *r, hy_fmt *f, hy_job *j) {
    hy_server *s = f->srv;
    j->t_arrival = r->t_arrival;
    int st = hy_queue_submit(&s->queue, j);
    if (st) {
        hy_job_unref(j);
        if (atomic_load(&s->stopping)) return hy_http_error(r, 503, "the server is shutting down");
        return hy_http_error(r, 503, "too many requests are queued (%d); try again later", s->p.max_queue);
    }
    int fd = conn_fd(r->conn);
    while (hy_job_wait_start(j, 100) == HY_JOB_QUEUED) {
        if (peer_gone(fd)) {
            hy_job_cancel(j);
            hy_job_unref(j);
            hy_server_log(s, "%s %s dropped: the client went away while queued, %.3fs", r->method, r->path,
                          hy_now() - r->t_arrival);
            return MHD_NO;
        }
    }
    if (f->stream) {
        /* a job that failed before producing anything still gets a proper status */
        pthread_mutex_lock(&j->mu);
        bool failed = j->state == HY_JOB_FINISHED && j->err_status && j->chan_n == 0;
        pthread_mutex_unlock(&j->mu);
        if (failed) {
            int status = j->err_status == 499 ? 500 : j->err_status;
            int ret = hy_http_error(r, (unsigned)status, "%s", j->err);
            hy_job_unref(j);
            return ret;
        }
        struct stream_ctx *sc = calloc(1, sizeof *sc);
        if (!sc) {
            hy_job_cancel(j);
            hy_job_unref(j);
            return MHD_NO;
        }
        sc->srv = s;
        sc->job = j;
        sc->fmt = *f;
        sc->fd = fd;
        sc->t_arrival = r->t_arrival;
        snprintf(sc->method, sizeof sc->method, "%s", r->method);
        snprintf(sc->path, sizeof sc->path, "%s", r->path);
        hy_fmt_begin(&sc->fmt, &sc->out);
        struct MHD_Response *resp =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_reader, sc, stream_free);
        if (!resp) {
            stream_free(sc);
            return MHD_NO;
        }
        bool sse = f->kind == HY_API_OAI_CHAT || f->kind == HY_API_OAI_COMPLETION;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                sse ? "text/event-stream; charset=utf-8" : "application/x-ndjson");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        int ret = MHD_queue_response(r->conn, 200, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    hy_buf text = {0};
    double checked = hy_now();
    for (;;) {
        char *t;
        size_t n;
        int k = hy_job_next(j, &t, &n, 100);
        if (k == 1) {
            hy_buf_add(&text, t, n);
            free(t);
        }
        if (k == 0) break;
        /* look at the socket every 100 ms, also while pieces keep coming */
        if (k == 1 && hy_now() - checked < 0.1) continue;
        checked = hy_now();
        if (peer_gone(fd)) {
            hy_job_cancel(j);
            hy_job_unref(j);
            hy_buf_free(&text);
            hy_server_log(s, "%s %s cancelled: the client went away, %.3fs", r->method, r->path,
                          hy_now() - r->t_arrival);
            return MHD_NO;
        }
    }
    int ret;
    r->nolog = true; /* the generic line is replaced by the one below */
    if (j->err_status) {
        int status = j->err_status == 499 ? 500 : j->err_status;
        ret = hy_http_error(r, (unsigned)status, "%s", j->err);
    } else {
        ret = hy_http_json(r, 200, hy_fmt_full(f, j, text.p ? text.p : "", text.len));
    }
    log_generation(s, r->method, r->path, "complete", j, r->t_arrival);
    hy_buf_free(&text);
    hy_job_unref(j);
    return ret;
}

/* ---- routing ------------------------------------------------------------- */

struct route {
    const char *path;
    const char *method; /* GET routes also answer HEAD */
    hy_route_fn fn;
    bool prefix;
};

static const struct route routes[] = {
    {"/", "GET", hy_api_root, false},
    {"/api/version", "GET", hy_api_version, false},
    {"/api/tags", "GET", hy_api_tags, false},
    {"/api/ps", "GET", hy_api_ps, false},
    {"/api/show", "POST", hy_api_show, false},
    {"/api/generate", "POST", hy_api_generate, false},
    {"/api/chat", "POST", hy_api_chat, false},
    {"/api/embed", "POST", hy_api_embed, false},
    {"/api/embeddings", "POST", hy_api_embed, false},
    {"/api/pull", "POST", hy_api_manage, false},
    {"/api/push", "POST", hy_api_manage, false},
    {"/api/create", "POST", hy_api_manage, false},
    {"/api/copy", "POST", hy_api_manage, false},
    {"/api/delete", "DELETE", hy_api_manage, false},
    {"/v1/models", "GET", hy_oai_models, false},
    {"/v1/models/", "GET", hy_oai_model, true},
    {"/v1/chat/completions", "POST", hy_oai_chat, false},
    {"/v1/completions", "POST", hy_oai_completions, false},
    {"/v1/embeddings", "POST", hy_oai_embeddings, false},
};

static int dispatch(hy_server *s, hy_http_req *r) {
    const struct route *match = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const struct route *rt = &routes[i];
        bool hit = rt->prefix ? !strncmp(r->path, rt->path, strlen(rt->path)) && r->path[strlen(rt->path)]
                              : !strcmp(r->path, rt->path);
        if (!hit) continue;
        match = rt;
        if (!strcmp(r->method, rt->method) || (!strcmp(rt->method, "GET") && !strcmp(r->method, "HEAD")))
            return rt->fn(s, r);
    }
    if (!match) return hy_http_error(r, 404, "not found: %s %s", r->method, r->path);
    const char *allow = !strcmp(match->method, "GET") ? "GET, HEAD" : match->method;
    char msg[256];
    snprintf(msg, sizeof msg, "method %s is not allowed for %s (allowed: %s)", r->method, r->path, allow);
    json_t *body = error_body(r->openai, 405, msg);
    char *txt = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    struct MHD_Response *resp = MHD_create_response_from_buffer(txt ? strlen(txt) : 0, txt ? txt : (char *)"",
                                                                MHD_RESPMEM_MUST_COPY);
    free(txt);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json; charset=utf-8");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    int ret = MHD_queue_response(r->conn, 405, resp);
    MHD_destroy_response(resp);
    hy_server_log(s, "%s %s 405 %.3fs", r->method, r->path, hy_now() - r->t_arrival);
    return ret;
}

static mhd_result on_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                            const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls) {
    hy_server *s = cls;
    (void)version;
    struct conn_req *cr = *con_cls;
    hy_http_req r = {.srv = s, .conn = c, .method = method, .path = url, .openai = !strncmp(url, "/v1/", 4)};
    if (!cr) {
        cr = calloc(1, sizeof *cr);
        if (!cr) return MHD_NO;
        cr->t_arrival = hy_now();
        *con_cls = cr;
        atomic_fetch_add(&s->active, 1);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(cl, &end, 10);
            if (!errno && end != cl && v > s->p.max_body) {
                cr->too_large = true;
                const char *ex = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
                /* a client that waits for "100 Continue" is told now and sends nothing */
                if ((ex && !strcasecmp(ex, "100-continue")) || v / HY_DRAIN_FACTOR > s->p.max_body) {
                    r.t_arrival = cr->t_arrival;
                    return (mhd_result)hy_http_error(&r, 413, "request body of %llu bytes exceeds the limit of %zu bytes",
                                                     v, s->p.max_body);
                }
            }
        }
        return MHD_YES;
    }
    r.t_arrival = cr->t_arrival;
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (!cr->too_large && cr->body.len + n > s->p.max_body) {
            cr->too_large = true;
            hy_buf_free(&cr->body);
        }
        if (cr->too_large) {
            cr->drained += n;
            if (cr->drained / HY_DRAIN_FACTOR > s->p.max_body) return MHD_NO; /* close: not worth reading */
            return MHD_YES;
        }
        size_t before = cr->body.len;
        hy_buf_add(&cr->body, upload_data, n);
        if (cr->body.len != before + n) return MHD_NO; /* out of memory */
        return MHD_YES;
    }
    if (cr->too_large)
        return (mhd_result)hy_http_error(&r, 413, "request body exceeds the limit of %zu bytes", s->p.max_body);
    r.body = cr->body.p ? cr->body.p : "";
    r.body_len = cr->body.len;
    return (mhd_result)dispatch(s, &r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    hy_server *s = cls;
    (void)c;
    (void)toe;
    struct conn_req *cr = *con_cls;
    if (!cr) return;
    hy_buf_free(&cr->body);
    free(cr);
    *con_cls = NULL;
    atomic_fetch_sub(&s->active, 1);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    hy_server *s = cls;
    if (!getenv("HYPURA_SERVE_DEBUG")) return;
    (void)s;
    fputs("[serve] libmicrohttpd: ", stderr);
    vfprintf(stderr, fmt, ap);
}

int hy_server_start(const hy_server_params *p, hy_session *session, hy_server **out, char *err, size_t errlen) {
    *out = NULL;
    hy_server *s = calloc(1, sizeof *s);
    if (!s) return hy_fail(err, errlen, "out of memory");
    s->p = *p;
    if (!s->p.host) s->p.host = "127.0.0.1";
    if (!s->p.max_body) s->p.max_body = 1 << 20;
    if (s->p.max_tokens <= 0) s->p.max_tokens = 4096;
    if (s->p.max_queue <= 0) s->p.max_queue = 512;
    s->session = session;
    s->engine = session->engine;
    s->n_ctx = hy_engine_n_ctx(s->engine);
    atomic_init(&s->stopping, false);
    atomic_init(&s->seq, 0);
    atomic_init(&s->active, 0);
    if (hy_api_init_model(s, err, errlen)) goto fail;

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", p->port);
    int gai = getaddrinfo(s->p.host, portstr, &hints, &ai);
    if (gai || !ai) {
        hy_fail(err, errlen, "cannot resolve host '%s': %s", s->p.host, gai_strerror(gai));
        goto fail;
    }
    struct sockaddr_storage sa;
    memcpy(&sa, ai->ai_addr, ai->ai_addrlen);
    bool v6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);

    if (hy_queue_start(&s->queue, session, s->p.max_queue, s->p.parallel, 0, s->p.prompt_cache, err, errlen)) goto fail;
    if (p->draft && hy_queue_set_draft(&s->queue, p->draft, &p->spec, err, errlen)) goto fail;
    s->n_slots = s->queue.n_slots;
    s->n_ctx_slot = s->queue.n_ctx_slot;

    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG;
    if (v6) flags |= MHD_USE_IPv6;
    s->mhd = MHD_start_daemon(flags, (uint16_t)p->port, NULL, NULL, on_access, s,
                              MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)1024,
                              MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
                              MHD_OPTION_END);
    if (!s->mhd) {
        hy_fail(err, errlen, "cannot listen on %s port %d: %s", s->p.host, p->port,
                errno ? strerror(errno) : "libmicrohttpd refused to start");
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : p->port;
    char host[256];
    if (v6) {
        char a[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, a, sizeof a);
        snprintf(host, sizeof host, "[%s]", a);
    } else {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, host, sizeof host);
    }
    snprintf(s->url_host, sizeof s->url_host, "%s", host);
    *out = s;
    return 0;
fail:
    hy_server_stop(s);
    return -1;
}

int hy_server_port(const hy_server *s) { return s->port; }
const char *hy_server_url_host(const hy_server *s) { return s->url_host; }
const char *hy_server_model_name(const hy_server *s) { return s->name; }

void hy_server_stop(hy_server *s) {
    if (!s) return;
    atomic_store(&s->stopping, true);
    if (s->mhd) {
        MHD_socket ls = MHD_quiesce_daemon(s->mhd); /* stop accepting */
        if (ls != MHD_INVALID_SOCKET) close(ls);
    }
    /* the running generation stops at its next token; queued ones get 503 */
    hy_queue_stop(&s->queue);
    /* let the connections deliver those last answers (each wait in them is at most 100 ms),
     * but never wait long for a slow client */
    double t0 = hy_now();
    while (s->mhd && atomic_load(&s->active) > 0 && hy_now() - t0 < 2.0) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (s->mhd) MHD_stop_daemon(s->mhd); /* closes what is left, joins the connection threads */
    json_decref(s->details);
    json_decref(s->model_info);
    free(s->template_text);
    free(s);
}

#else /* no libmicrohttpd */

int hy_http_json(hy_http_req *r, unsigned status, json_t *body) {
    (void)r;
    (void)status;
    json_decref(body);
    return 0;
}
int hy_http_text(hy_http_req *r, unsigned status, const char *ctype, const char *text) {
    (void)r, (void)status, (void)ctype, (void)text;
    return 0;
}
int hy_http_error(hy_http_req *r, unsigned status, const char *fmt, ...) {
    (void)r, (void)status, (void)fmt;
    return 0;
}
int hy_http_generate(hy_http_req *r, hy_fmt *f, hy_job *j) {
    (void)r, (void)f;
    hy_job_unref(j);
    return 0;
}
int hy_server_start(const hy_server_params *p, hy_session *session, hy_server **out, char *err, size_t errlen) {
    (void)p, (void)session;
    *out = NULL;
    return hy_fail(err, errlen, "this build has no HTTP server (libmicrohttpd was not found at configure time)");
}
int hy_server_port(const hy_server *s) { return s ? s->port : 0; }
const char *hy_server_url_host(const hy_server *s) { return s ? s->url_host : ""; }
const char *hy_server_model_name(const hy_server *s) { return s ? s->name : ""; }
void hy_server_stop(hy_server *s) { free(s); }

#endif
