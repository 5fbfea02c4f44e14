/* The FIFO queue and the worker thread that owns the engine.
 *
 * Requests leave the queue in arrival order for the batcher's sequence slots
 * (hy_batch.h): up to n_slots generate together, one decode step for all of
 * them; beyond that they wait here. The worker hands each piece of generated
 * text to the request's bounded channel; a request whose channel is full sits
 * out the steps until its client reads (the others go on), and is cancelled
 * after HY_STALL_S. Stop strings are cut here, before anything reaches the
 * channel. */
#include "server/hy_server_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void cond_init_monotonic(pthread_cond_t *cv) {
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

/* wait on cv for at most ms milliseconds (mutex held) */
static void cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int ms) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(cv, mu, &ts);
}

hy_job *hy_job_new(void) {
    hy_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    pthread_mutex_init(&j->mu, NULL);
    cond_init_monotonic(&j->cv);
    j->refs = 1;
    atomic_init(&j->cancelled, false);
    j->state = HY_JOB_QUEUED;
    j->sp = hy_sample_default_params();
    j->done_reason = "stop";
    j->t_arrival = hy_now();
    j->slot = -1;
    return j;
}

void hy_job_unref(hy_job *j) {
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left > 0) return;
    for (int i = 0; i < j->chan_n; i++) free(j->chan[(j->chan_head + i) % HY_CHAN_CAP].text);
    for (int i = 0; i < j->n_stops; i++) free(j->stops[i]);
    free(j->stops);
    free(j->prompt);
    free(j->hold);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

void hy_job_cancel(hy_job *j) {
    pthread_mutex_lock(&j->mu);
    atomic_store(&j->cancelled, true);
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

enum hy_job_state hy_job_wait_start(hy_job *j, int timeout_ms) {
    pthread_mutex_lock(&j->mu);
    if (j->state == HY_JOB_QUEUED) cond_wait_ms(&j->cv, &j->mu, timeout_ms);
    enum hy_job_state st = j->state;
    pthread_mutex_unlock(&j->mu);
    return st;
}

int hy_job_next(hy_job *j, char **text, size_t *len, int timeout_ms) {
    pthread_mutex_lock(&j->mu);
    if (j->chan_n == 0 && j->state != HY_JOB_FINISHED && timeout_ms > 0) cond_wait_ms(&j->cv, &j->mu, timeout_ms);
    int r;
    if (j->chan_n > 0) {
        *text = j->chan[j->chan_head].text;
        *len = j->chan[j->chan_head].len;
        j->chan[j->chan_head].text = NULL;
        j->chan_head = (j->chan_head + 1) % HY_CHAN_CAP;
        j->chan_n--;
        pthread_cond_broadcast(&j->cv); /* room for the worker */
        r = 1;
    } else {
        r = j->state == HY_JOB_FINISHED ? 0 : -1;
    }
    pthread_mutex_unlock(&j->mu);
    return r;
}

/* ---- the worker's side --------------------------------------------------- */

static bool job_should_stop(hy_job *j) {
    return atomic_load(&j->cancelled) || atomic_load(&j->queue->stopping);
}

/* Hand text to the connection; false when the request is to stop. */
static bool chan_push(hy_job *j, const char *t, size_t n) {
    if (n == 0) return true;
    char *copy = malloc(n + 1);
    if (!copy) return false;
    memcpy(copy, t, n);
    copy[n] = 0;
    pthread_mutex_lock(&j->mu);
    double t0 = hy_now();
    while (j->chan_n == HY_CHAN_CAP && !atomic_load(&j->cancelled) && !atomic_load(&j->queue->stopping)) {
        cond_wait_ms(&j->cv, &j->mu, 100);
        if (j->chan_n == HY_CHAN_CAP && hy_now() - t0 > HY_STALL_S) atomic_store(&j->cancelled, true);
    }
    bool ok = !atomic_load(&j->cancelled) && !atomic_load(&j->queue->stopping);
    if (ok) {
        int slot = (j->chan_head + j->chan_n) % HY_CHAN_CAP;
        j->chan[slot].text = copy;
        j->chan[slot].len = n;
        j->chan_n++;
        pthread_cond_broadcast(&j->cv);
    }
    pthread_mutex_unlock(&j->mu);
    if (!ok) free(copy);
    return ok;
}

static bool hold_append(hy_job *j, const char *t, size_t n) {
    if (j->hold_len + n + 1 > j->hold_cap) {
        size_t cap = (j->hold_len + n + 1) * 2;
        char *h = realloc(j->hold, cap);
        if (!h) return false;
        j->hold = h;
        j->hold_cap = cap;
    }
    memcpy(j->hold + j->hold_len, t, n);
    j->hold_len += n;
    return true;
}

/* Every piece goes through the held-back buffer when there are stop strings:
 * text is emitted only once it can no longer be the start of a stop string. */
static bool on_piece(const char *piece, size_t len, void *ud) {
    hy_job *j = ud;
    if (j->stop_hit || job_should_stop(j)) return false;
    if (j->n_stops == 0) return chan_push(j, piece, len);
    if (!hold_append(j, piece, len)) return false;
    /* earliest complete stop string */
    size_t cut = SIZE_MAX;
    for (int i = 0; i < j->n_stops; i++) {
        size_t sl = strlen(j->stops[i]);
        if (sl == 0 || sl > j->hold_len) continue;
        const char *at = memmem(j->hold, j->hold_len, j->stops[i], sl);
        if (at && (size_t)(at - j->hold) < cut) cut = (size_t)(at - j->hold);
    }
    if (cut != SIZE_MAX) {
        chan_push(j, j->hold, cut);
        j->hold_len = 0;
        j->stop_hit = true;
        return false;
    }
    /* the longest tail that is a proper prefix of some stop string stays held */
    size_t keep = 0;
    for (int i = 0; i < j->n_stops; i++) {
        size_t sl = strlen(j->stops[i]);
        size_t maxk = sl - 1 < j->hold_len ? sl - 1 : j->hold_len;
        for (size_t k = maxk; k > keep; k--)
            if (!memcmp(j->hold + j->hold_len - k, j->stops[i], k)) {
                keep = k;
                break;
            }
    }
    size_t emit = j->hold_len - keep;
    bool ok = chan_push(j, j->hold, emit);
    memmove(j->hold, j->hold + emit, keep);
    j->hold_len = keep;
    return ok;
}

static void job_finish(hy_job *j, int status, const char *msg) {
    pthread_mutex_lock(&j->mu);
    j->err_status = status;
    if (msg) snprintf(j->err, sizeof j->err, "%s", msg);
    j->t_end = hy_now();
    if (j->t_start == 0) j->t_start = j->t_end;
    j->state = HY_JOB_FINISHED;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

/* Room in the channel for this step's piece and the two an end may flush (the
 * last bytes of a character, text held back for a stop string): a slot whose
 * client reads slower than it generates sits out the step instead of blocking
 * every other slot. */
static bool job_ready(void *ud) {
    hy_job *j = ud;
    pthread_mutex_lock(&j->mu);
    bool room = j->chan_n <= HY_CHAN_CAP - 3;
    pthread_mutex_unlock(&j->mu);
    return room;
}

static void publish(hy_queue *q);

/* The batcher ended the job's sequence (on the worker's thread). */
static void job_done(void *ud, int rc, const hy_gen_stats *st, const char *err) {
    hy_job *j = ud;
    hy_queue *q = j->queue;
    bool stopping = atomic_load(&q->stopping);
    const char *sr = st->stop_reason ? st->stop_reason : "";
    if (rc == 0 && !j->stop_hit && j->hold_len > 0 && !job_should_stop(j)) chan_push(j, j->hold, j->hold_len);
    j->hold_len = 0;
    pthread_mutex_lock(&j->mu);
    j->stats = *st;
    bool cancelled = atomic_load(&j->cancelled);
    pthread_mutex_unlock(&j->mu);
    if (j->stop_hit || !strcmp(sr, "stop")) j->done_reason = "stop";
    else j->done_reason = "length"; /* n_predict reached or the context is full */
    bool gone = rc == 0 && !stopping && cancelled && !j->stop_hit && !strcmp(sr, "cancelled");
    if (gone) hy_batcher_forget(q->batcher, j->slot); /* a cancelled request's KV goes at once */
    /* /api/ps shows the slot free before the client hears that its request ended
     * (the step's own publish comes only after every slot of the step) */
    publish(q);
    if (rc != 0) {
        /* an I/O error fails the requests of that step only: the stream forgets it
         * (failed reads were not kept; the worker clears the error after the step)
         * and the next requests read again */
        const char *why = hy_stream_error(q->session->stream);
        job_finish(j, 500, why ? why : err);
    } else if (stopping && !j->stop_hit && !strcmp(sr, "cancelled")) {
        job_finish(j, 503, "the server is shutting down");
    } else if (gone) {
        job_finish(j, 499, "the client went away");
    } else {
        job_finish(j, 0, NULL);
    }
    if (j->slot >= 0 && j->slot < q->n_slots && q->running[j->slot] == j) q->running[j->slot] = NULL;
    hy_job_unref(j); /* the worker's reference */
}

/* A job leaves the queue for a slot (or fails, or was abandoned while queued).
 * False: the batcher has no room for it until the running requests end (the
 * caller puts it back at the head of the queue). */
static bool start_job(hy_queue *q, hy_job *j) {
    if (atomic_load(&j->cancelled)) {
        job_finish(j, 499, "the client went away while queued");
        hy_job_unref(j);
        return true;
    }
    if (atomic_load(&q->stopping)) {
        job_finish(j, 503, "the server is shutting down");
        hy_job_unref(j);
        return true;
    }
    char err[HY_ERRLEN];
    hy_batch_cbs cbs = {.on_piece = on_piece, .ready = job_ready, .on_done = job_done, .ud = j};
    pthread_mutex_lock(&j->mu);
    j->t_start = hy_now(); /* before the prompt is read: load_duration is the wait in the queue */
    pthread_mutex_unlock(&j->mu);
    int slot = hy_batcher_add(q->batcher, j->prompt, &j->sp, j->n_ctx, &cbs, err, sizeof err);
    if (slot == HY_BATCH_WAIT) {
        pthread_mutex_lock(&j->mu);
        j->t_start = 0;
        pthread_mutex_unlock(&j->mu);
        return false;
    }
    if (slot < 0) {
        job_finish(j, 500, err);
        hy_job_unref(j);
        return true;
    }
    q->running[slot] = j;
    pthread_mutex_lock(&j->mu);
    j->slot = slot;
    j->n_busy = hy_batcher_busy(q->batcher);
    j->state = HY_JOB_RUNNING;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return true;
}

/* /api/ps reads this copy of the slots' state */
static void publish(hy_queue *q) {
    pthread_mutex_lock(&q->mu);
    q->busy = hy_batcher_busy(q->batcher);
    for (int i = 0; i < q->n_slots; i++) hy_batcher_slot_info(q->batcher, i, &q->snap[i]);
    pthread_mutex_unlock(&q->mu);
}

/* The step just decoded, into q->steps (see hy_step_stats), from the stream's
 * figures before (x0) and after it (x1); a line on stderr with HYPURA_BATCH_TRACE. */
static void count_step(hy_queue *q, const hy_stream_stats *x0, const hy_stream_stats *x1) {
    hy_batch_step_info si;
    hy_batcher_last_step(q->batcher, &si);
    if (si.n_rows == 0) return;
    int k = si.n_prompt > 0 ? 0 : si.n_gen;
    if (k > q->n_slots) k = q->n_slots;
    double stall = x1->stall_s - x0->stall_s;
    uint64_t read = x1->bytes_read - x0->bytes_read;
    /* each (layer, expert) the step's routers chose adds its slices to x_routed_bytes once */
    double xu = q->x_slice > 0 ? (double)(x1->x_routed_bytes - x0->x_routed_bytes) / q->x_slice : 0;
    pthread_mutex_lock(&q->mu);
    hy_step_stats *st = &q->steps[k];
    st->steps++;
    st->rows += (uint64_t)si.n_rows;
    st->decode_s += si.decode_s;
    st->stall_s += stall;
    st->read_bytes += read;
    st->x_union += xu;
    pthread_mutex_unlock(&q->mu);
    if (!q->trace) return;
    fprintf(stderr, "[batch] step: %d rows (%d generating, %d prompt), %.3f s, read %.1f MiB (storage busy %.3f s), stalls %.3f s",
            si.n_rows, si.n_gen, si.n_prompt, si.decode_s, read / 1048576.0, x1->io_busy_s - x0->io_busy_s, stall);
    if (q->x_layers > 0)
        fprintf(stderr,
                ", routed experts %.1f per layer; cache hits %llu, misses %llu, guesses read %llu (%llu used, %llu "
                "evicted unused)",
                xu / q->x_layers, (unsigned long long)(x1->x_hits - x0->x_hits),
                (unsigned long long)(x1->x_misses - x0->x_misses),
                (unsigned long long)(x1->x_prefetches - x0->x_prefetches),
                (unsigned long long)(x1->x_prefetch_hits - x0->x_prefetch_hits),
                (unsigned long long)(x1->x_prefetch_wasted - x0->x_prefetch_wasted));
    fputc('\n', stderr);
}

/* The worker: admits queued jobs into free slots (first come, first served),
 * ends the ones whose client left, and runs decode steps while any slot is busy. */
static void *worker_main(void *arg) {
    hy_queue *q = arg;
    hy_job **admit = calloc((size_t)q->n_slots, sizeof *admit);
    for (;;) {
        pthread_mutex_lock(&q->mu);
        int busy = hy_batcher_busy(q->batcher);
        while (!q->head && busy == 0 && !atomic_load(&q->stopping)) pthread_cond_wait(&q->cv, &q->mu);
        bool stopping = atomic_load(&q->stopping);
        int na = 0;
        /* a request waiting for room (hold) waits for an idle batch, and those behind it too */
        if (busy == 0) q->hold = false;
        /* on stop every queued job is taken, to be answered 503 */
        while (q->head && (stopping || (busy + na < q->n_slots && !q->hold)) && admit) {
            hy_job *j = q->head;
            q->head = j->next;
            if (!q->head) q->tail = NULL;
            q->n--;
            if (stopping) {
                pthread_mutex_unlock(&q->mu);
                job_finish(j, 503, "the server is shutting down");
                hy_job_unref(j);
                pthread_mutex_lock(&q->mu);
                continue;
            }
            admit[na++] = j;
        }
        pthread_mutex_unlock(&q->mu);
        if (stopping && busy == 0 && na == 0) break;
        for (int k = 0; k < na; k++) {
            if (start_job(q, admit[k])) continue;
            /* no room: this one and the ones after it go back to the head, in order */
            pthread_mutex_lock(&q->mu);
            for (int m = na - 1; m >= k; m--) {
                admit[m]->next = q->head;
                q->head = admit[m];
                if (!q->tail) q->tail = admit[m];
                q->n++;
            }
            q->hold = true;
            pthread_mutex_unlock(&q->mu);
            break;
        }
        /* requests whose client left (or stalled) or that the server stops end now */
        double now = hy_now();
        for (int i = 0; i < q->n_slots; i++) {
            hy_job *j = q->running[i];
            if (!j) continue;
            if (!job_ready(j)) {
                if (j->full_since == 0) j->full_since = now;
                else if (now - j->full_since > HY_STALL_S) atomic_store(&j->cancelled, true);
            } else {
                j->full_since = 0;
            }
            if (job_should_stop(j)) hy_batcher_cancel(q->batcher, i);
        }
        char err[HY_ERRLEN];
        hy_stream_stats x0, x1;
        if (q->session->stream) hy_stream_get_stats(q->session->stream, &x0);
        int r = hy_batcher_step(q->batcher, err, sizeof err);
        if (r > 0 && q->session->stream) {
            hy_stream_get_stats(q->session->stream, &x1);
            count_step(q, &x0, &x1);
        }
        if (r < 0) hy_stream_clear_error(q->session->stream);
        publish(q);
        if (r == 0 && hy_batcher_busy(q->batcher) > 0) {
            /* every busy slot waits for its client to read: look again soon */
            pthread_mutex_lock(&q->mu);
            if (!q->head && !atomic_load(&q->stopping)) cond_wait_ms(&q->cv, &q->mu, 5);
            pthread_mutex_unlock(&q->mu);
        }
    }
    free(admit);
    return NULL;
}

int hy_queue_start(hy_queue *q, hy_session *session, int max_queue, int n_slots, int n_ctx_slot, bool prompt_cache,
                   char *err, size_t errlen) {
    memset(q, 0, sizeof *q);
    pthread_mutex_init(&q->mu, NULL);
    cond_init_monotonic(&q->cv); /* cond_wait_ms counts on CLOCK_MONOTONIC */
    atomic_init(&q->stopping, false);
    q->session = session;
    q->max = max_queue > 0 ? max_queue : 512;
    hy_batcher_params bp = {.n_slots = n_slots > 0 ? n_slots : 1, .n_ctx_slot = n_ctx_slot, .prompt_cache = prompt_cache};
    /* streamed layer groups beside repacked resident weights (--repack): every step in
     * the repacked kernels' GEMM, so that batched answers equal answers alone more often
     * (a lone streamed step waits on storage; its 3 extra rows hide behind that). Not
     * for expert-streaming: a throwaway row is routed too, and its experts would be
     * read (the lone client measured 2.84 tok/s padded, 3.42 not) */
    if (session->stream && hy_stream_repack_buft(session->stream) && session->plan.mode == HY_MODE_DENSE_FFN)
        bp.pad_rows = 4;
    if (hy_batcher_new(session->engine, &bp, &q->batcher, err, errlen)) return -1;
    q->n_slots = hy_batcher_n_slots(q->batcher);
    q->n_ctx_slot = hy_batcher_n_ctx_slot(q->batcher);
    q->running = calloc((size_t)q->n_slots, sizeof *q->running);
    q->snap = calloc((size_t)q->n_slots, sizeof *q->snap);
    q->steps = calloc((size_t)q->n_slots + 1, sizeof *q->steps);
    if (!q->running || !q->snap || !q->steps) return hy_fail(err, errlen, "out of memory");
    q->trace = getenv("HYPURA_BATCH_TRACE") != NULL;
    /* one expert's slices in one layer, averaged over the layers whose experts stream */
    if (session->desc && session->plan.mode == HY_MODE_EXPERT) {
        const hy_model_desc *d = session->desc;
        bool *has = calloc((size_t)(d->n_layer > 0 ? d->n_layer : 1), sizeof *has);
        double sum = 0;
        for (int64_t i = 0; has && i < d->n_tensors; i++) {
            const hy_tensor_info *t = &d->tensors[i];
            if (session->plan.tier[i] != HY_TIER_NVME || t->role != HY_ROLE_EXPERT || t->layer < 0 || t->layer >= d->n_layer)
                continue;
            sum += (double)t->expert_stride;
            if (!has[t->layer]) q->x_layers++;
            has[t->layer] = true;
        }
        free(has);
        q->x_slice = q->x_layers ? sum / q->x_layers : 0;
    }
    for (int i = 0; i < q->n_slots; i++) hy_batcher_slot_info(q->batcher, i, &q->snap[i]);
    int rc = pthread_create(&q->thread, NULL, worker_main, q);
    if (rc) return hy_fail(err, errlen, "cannot start the worker thread: %s", strerror(rc));
    q->started = true;
    return 0;
}

/* serve --draft: the batcher's runner; the job (cbs->ud) keeps the drafting figures */
static int spec_runner(void *ud, const char *prompt, const hy_sample_params *sp, int n_ctx, const hy_batch_cbs *cbs,
                       hy_gen_stats *st, char *err, size_t errlen) {
    hy_queue *q = ud;
    hy_job *j = cbs->ud;
    (void)n_ctx; /* the slot is the whole context */
    hy_spec_stats xs;
    int rc = hy_spec_generate(q->session->engine, q->draft, prompt, sp, &q->spec, cbs->on_piece, cbs->ud, NULL, NULL,
                              st, &xs, err, errlen);
    if (rc == 0) {
        j->spec = xs;
        j->has_spec = true;
    }
    return rc;
}

int hy_queue_set_draft(hy_queue *q, hy_engine *draft, const hy_spec_params *pp, char *err, size_t errlen) {
    q->draft = draft;
    q->spec = *pp;
    q->spec.session = q->session;
    return hy_batcher_set_runner(q->batcher, spec_runner, q, err, errlen);
}

int hy_queue_submit(hy_queue *q, hy_job *j) {
    pthread_mutex_lock(&q->mu);
    if (atomic_load(&q->stopping) || q->n >= q->max) {
        pthread_mutex_unlock(&q->mu);
        return 503;
    }
    pthread_mutex_lock(&j->mu);
    j->refs++;
    j->queue = q;
    pthread_mutex_unlock(&j->mu);
    j->next = NULL;
    if (q->tail) q->tail->next = j;
    else q->head = j;
    q->tail = j;
    q->n++;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

void hy_queue_stop(hy_queue *q) {
    if (q->started) {
        pthread_mutex_lock(&q->mu);
        atomic_store(&q->stopping, true);
        pthread_cond_broadcast(&q->cv);
        pthread_mutex_unlock(&q->mu);
        pthread_join(q->thread, NULL);
        q->started = false;
    }
    hy_batcher_free(q->batcher);
    q->batcher = NULL;
    free(q->running);
    free(q->snap);
    free(q->steps);
    q->running = NULL;
    q->snap = NULL;
    if (q->session) { /* initialised by hy_queue_start */
        pthread_cond_destroy(&q->cv);
        pthread_mutex_destroy(&q->mu);
        q->session = NULL;
    }
}
