/* Internals shared by the server's files: the job queue and the batching worker (hy_jobs.c), the HTTP
 * transport (hy_http.c) and the two APIs' request parsing and response
 * formatting (hy_api.c). Not a public header.
 *
 * A job is one generation request. The connection thread that received it
 * fills the request part, submits it, and then only reads: the worker thread
 * writes the state, the pieces (into a bounded channel) and the results, all
 * under the job's mutex. Each side holds a reference; the last one frees it. */
#ifndef HY_SERVER_INT_H
#define HY_SERVER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "engine/hy_batch.h"
#include "server/hy_server.h"
#include "util/hy_util.h"

/* ---- jobs, the FIFO queue and the batching worker (hy_jobs.c) ------------ */

#define HY_CHAN_CAP 64      /* pieces buffered between the worker and one connection */
#define HY_STALL_S  120.0   /* a client that reads nothing for this long is cancelled */

enum hy_job_state { HY_JOB_QUEUED, HY_JOB_RUNNING, HY_JOB_FINISHED };

struct hy_queue;

typedef struct hy_job {
    /* the request: set before hy_queue_submit, read-only afterwards */
    char  *prompt;             /* text given to the engine as is (template already applied) */
    hy_sample_params sp;
    int    n_ctx;              /* the request's context (num_ctx, at most a slot's share); 0 = the share */
    char **stops;              /* stop strings (not emitted; generation ends at the first) */
    int    n_stops;
    double t_arrival;          /* hy_now() when the request arrived */

    pthread_mutex_t mu;
    pthread_cond_t  cv;        /* broadcast on any change below */
    int   refs;
    enum hy_job_state state;
    atomic_bool cancelled;     /* the client went away (or stalled): stop at the next token */
    struct { char *text; size_t len; } chan[HY_CHAN_CAP];
    int   chan_head, chan_n;
    /* results, valid once FINISHED */
    hy_gen_stats stats;
    const char *done_reason;   /* "stop" or "length" (static) */
    int   err_status;          /* 0 = success, else the HTTP status of the failure */
    char  err[HY_ERRLEN];
    double t_start, t_end;
    int    slot;               /* the sequence slot it ran in (-1: none), and how many */
    int    n_busy;             /* slots were busy when it joined, itself included */
    bool   has_spec;           /* drafted (serve --draft): spec holds its figures */
    hy_spec_stats spec;

    /* worker only */
    double full_since;         /* its channel has been full since (0: it has room) */
    struct hy_queue *queue;
    char  *hold;               /* generated text held back while it may begin a stop string */
    size_t hold_len, hold_cap;
    bool   stop_hit;
    struct hy_job *next;       /* queue link */
} hy_job;

hy_job *hy_job_new(void);
void hy_job_unref(hy_job *j);
void hy_job_cancel(hy_job *j);
/* Waits up to timeout_ms while the job is queued; returns its state. */
enum hy_job_state hy_job_wait_start(hy_job *j, int timeout_ms);
/* Next piece: 1 with *text (malloc'd, caller frees), 0 when the job has finished
 * and every piece was taken, -1 when nothing came within timeout_ms. */
int hy_job_next(hy_job *j, char **text, size_t *len, int timeout_ms);

/* Decode steps of one kind, summed: the steps that generated for n sequences and
 * read no prompt (hy_queue.steps[n]), or every step that read prompt rows
 * (steps[0]). What a step costs as the batch grows: its time, its reads from
 * storage and stalls on them, and for a MoE whose experts stream the union of
 * the routed experts it read (each (layer, expert) once per step). */
typedef struct {
    uint64_t steps, rows;
    double   decode_s, stall_s;
    uint64_t read_bytes;
    double   x_union;          /* unique routed experts, summed over the steps' layers */
} hy_step_stats;

typedef struct hy_queue {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    hy_job *head, *tail;
    int n, max;
    atomic_bool stopping;
    bool started;
    pthread_t thread;
    hy_session *session;
    bool hold;                 /* the head waits for room: admit nothing until the batch is idle */
    /* worker only */
    hy_batcher *batcher;       /* the sequences generated together */
    hy_job **running;          /* per slot, the job in it or NULL */
    /* what /api/ps shows, refreshed by the worker after each step (under mu) */
    int n_slots, n_ctx_slot, busy;
    hy_batch_slot_info *snap;
    hy_step_stats *steps;      /* n_slots + 1 (see hy_step_stats), under mu */
    double x_slice;            /* one expert's streamed slices in one layer (bytes; 0: none stream) */
    int    x_layers;           /* layers whose experts stream */
    bool   trace;              /* HYPURA_BATCH_TRACE: a line per step on stderr */
    /* serve --draft: requests run whole through hy_spec_generate (hy_batcher_set_runner) */
    hy_engine *draft;
    hy_spec_params spec;
} hy_queue;

/* Speculative decoding for the queue's requests (one slot only); after hy_queue_start. */
int  hy_queue_set_draft(hy_queue *q, hy_engine *draft, const hy_spec_params *pp, char *err, size_t errlen);

/* Starts the worker with n_slots sequences of n_ctx_slot tokens each (0: the
 * context's share). prompt_cache: a finished request's tokens stay for reuse. */
int  hy_queue_start(hy_queue *q, hy_session *session, int max_queue, int n_slots, int n_ctx_slot, bool prompt_cache,
                    char *err, size_t errlen);
/* 0, or the HTTP status to answer with (503: full or shutting down). Takes a reference. */
int  hy_queue_submit(hy_queue *q, hy_job *j);
/* Cancel the running jobs, fail the queued ones with 503, join the worker. */
void hy_queue_stop(hy_queue *q);

/* ---- the server ---------------------------------------------------------- */

struct MHD_Daemon;
struct MHD_Connection;

struct hy_server {
    hy_server_params p;
    hy_session *session;
    hy_engine  *engine;
    struct MHD_Daemon *mhd;
    hy_queue queue;
    atomic_bool stopping;
    atomic_uint_fast64_t seq;  /* request ids and default seeds */
    atomic_int active;         /* requests between their first byte and their completion */
    int  port;
    char url_host[300];
    char name[256];            /* the listed model name */
    char canon[300];           /* name with its tag (":latest" when none) for matching */
    char model_path[4096];
    /* model facts, computed once at start (libllama calls stay off the request threads) */
    json_t  *details;          /* Ollama's "details" object */
    json_t  *model_info;       /* GGUF metadata (scalars) */
    char    *template_text;    /* the GGUF chat template, or "chatml" (libllama's built-in) */
    char     modified_at[64];  /* the file's mtime, RFC 3339 */
    long     created_unix;
    uint64_t file_size;
    uint64_t size_vram;
    char     digest[72];
    int      n_ctx;                /* the whole context, shared by the slots */
    int      n_slots, n_ctx_slot;  /* sequences generated at once, and each one's share of n_ctx */
};

/* ---- HTTP transport (hy_http.c) ------------------------------------------ */

typedef struct {
    struct hy_server *srv;
    struct MHD_Connection *conn;
    const char *method, *path;
    const char *body;          /* NUL-terminated */
    size_t body_len;
    double t_arrival;
    bool openai;               /* error bodies in OpenAI's shape */
    bool nolog;                /* the caller logs this request itself */
} hy_http_req;

enum hy_api_kind { HY_API_GENERATE, HY_API_CHAT, HY_API_OAI_CHAT, HY_API_OAI_COMPLETION };

typedef struct {
    char *p;
    size_t len, cap;
} hy_buf;

void hy_buf_add(hy_buf *b, const char *s, size_t n);
void hy_buf_free(hy_buf *b);

typedef struct {
    hy_server *srv;
    enum hy_api_kind kind;
    bool stream;
    bool include_usage;        /* OpenAI stream_options.include_usage */
    bool begun;                /* OpenAI chat stream: the role chunk was sent */
    char id[48];               /* chatcmpl-... / cmpl-... */
    char model[256];           /* the model name as the request gave it (Ollama echoes it) */
    long created;              /* unix seconds */
} hy_fmt;

/* All return the MHD result of queueing the response. */
int hy_http_json(hy_http_req *r, unsigned status, json_t *body /* stolen */);
int hy_http_text(hy_http_req *r, unsigned status, const char *ctype, const char *text);
int hy_http_error(hy_http_req *r, unsigned status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Submit the job (the caller's reference passes to this call) and answer: a
 * stream, or one object once it has finished. */
int hy_http_generate(hy_http_req *r, hy_fmt *f, hy_job *j);

/* ---- the APIs (hy_api.c) -------------------------------------------------- */

typedef int (*hy_route_fn)(hy_server *s, hy_http_req *r);

int hy_api_root(hy_server *s, hy_http_req *r);
int hy_api_version(hy_server *s, hy_http_req *r);
int hy_api_tags(hy_server *s, hy_http_req *r);
int hy_api_ps(hy_server *s, hy_http_req *r);
int hy_api_show(hy_server *s, hy_http_req *r);
int hy_api_generate(hy_server *s, hy_http_req *r);
int hy_api_chat(hy_server *s, hy_http_req *r);
int hy_api_embed(hy_server *s, hy_http_req *r);
int hy_api_manage(hy_server *s, hy_http_req *r);
int hy_oai_models(hy_server *s, hy_http_req *r);
int hy_oai_model(hy_server *s, hy_http_req *r);
int hy_oai_chat(hy_server *s, hy_http_req *r);
int hy_oai_completions(hy_server *s, hy_http_req *r);
int hy_oai_embeddings(hy_server *s, hy_http_req *r);

/* ---- request parsing (hy_api_parse.c): needs no model, engine or connection ---- */

/* A refusal on its way to the client: message and HTTP status (0 = 400). */
typedef struct {
    char err[HY_ERRLEN];
    unsigned status;
} hy_perr;
/* Fills e and returns false, so checks read `return hy_perr_fail(e, 404, ...)`. */
bool hy_perr_fail(hy_perr *e, unsigned status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The routes whose JSON bodies are parsed (the embeddings routes only check the model). */
enum hy_api_route {
    HY_ROUTE_SHOW, HY_ROUTE_GENERATE, HY_ROUTE_CHAT, HY_ROUTE_EMBED, HY_ROUTE_OAI_CHAT,
    HY_ROUTE_OAI_COMPLETIONS, HY_ROUTE_OAI_EMBEDDINGS, HY_ROUTE_COUNT
};

/* A request as its body gives it, checked, before the chat template and the
 * tokenizer see it. Strings point into root (valid until hy_api_req_free). */
typedef struct {
    json_t *root;              /* the parsed body */
    const char *model;         /* the name as the request gave it (no NUL inside) */
    bool stream, include_usage, raw;
    const char *prompt;        /* generate (NULL or "": Ollama's "load" request), completions */
    const char *system;        /* generate */
    const char **roles;        /* chat routes: n_msgs turns; roles are static strings */
    char **contents;           /* malloc'd, each NUL-terminated */
    int n_msgs;
    bool last_assistant;
    hy_sample_params sp;       /* the route's defaults, then the request's values */
    char **stops;              /* n_stops strings of 1..256 bytes, no NUL inside */
    int n_stops;
    long long n_predict;       /* -1 (or -2, Ollama) when not limited by the request */
    long long num_ctx;         /* Ollama's options.num_ctx; 0 when not given */
} hy_api_req;

/* Parses and checks `route`'s body: a JSON object naming the model whose
 * canonical name ("name:tag") is `canon`. `seed` is the default sampling seed.
 * Returns 0, or the HTTP status (4xx; 500 when out of memory) with a one-line,
 * valid UTF-8 message in err naming the problem. Call hy_api_req_free after,
 * either way. */
unsigned hy_api_parse(enum hy_api_route route, const char *canon, uint32_t seed, const char *body, size_t len,
                      hy_api_req *q, char *err, size_t errlen);
void hy_api_req_free(hy_api_req *q);
/* 0 when `name` names the model `canon`, else 404 and the message. */
unsigned hy_api_check_name(const char *canon, const char *name, char *err, size_t errlen);
/* "name" and "name:latest" are the same model; a tag other than latest must match. */
void hy_api_canon_name(const char *in, char *out, size_t len);
/* Replaces every byte of an invalid UTF-8 sequence in s with '?'. */
void hy_utf8_fix(char *s);

/* Model facts for the listings; called once by hy_server_start. */
int hy_api_init_model(hy_server *s, char *err, size_t errlen);

/* Wire bytes of a stream: the opening (OpenAI chat's role chunk), one piece,
 * and the end (final object(s), or the error, then [DONE] for SSE). */
void hy_fmt_begin(hy_fmt *f, hy_buf *out);
void hy_fmt_piece(hy_fmt *f, const char *text, size_t len, hy_buf *out);
void hy_fmt_end(hy_fmt *f, const hy_job *j, hy_buf *out);
/* The single response object of a non-streaming request. */
json_t *hy_fmt_full(hy_fmt *f, const hy_job *j, const char *text, size_t len);

/* JSON string from bytes that may not be valid UTF-8 (invalid sequences
 * become U+FFFD, as a WHATWG decoder would read them). */
json_t *hy_json_text(const char *s, size_t n);
/* RFC 3339 UTC time with nanoseconds ("2024-05-01T12:00:00.123456789Z"). */
void hy_rfc3339_now(char *buf, size_t len);
void hy_rfc3339(long sec, long nsec, char *buf, size_t len);

void hy_server_log(const hy_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
