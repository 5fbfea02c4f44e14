/* The session's remote tiers (--rpc): connect and measure once per process,
 * plan the split (hy_plan_rpc), and hand libllama the devices, the layer split
 * and the overrides that put each remote layer's weights on its device. */
#include "engine/hy_session_rpc.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "util/hy_util.h"

/* ggml-rpc keeps one connection per endpoint for the life of the process and a
 * server serves one client at a time: endpoints are connected and measured
 * once, whatever number of plans the caller makes (serve plans several) */
static hy_rpc g_rpc;
static bool g_rpc_ready, g_rpc_dropped;
static char g_rpc_list[1024];

const char *hy_session_rpc_list(const hy_session_params *p) {
    if (p->rpc && *p->rpc) return p->rpc;
    const char *v = getenv("HYPURA_RPC");
    return v && *v ? v : NULL;
}

/* "SIZE[,SIZE...]": devices that are not there, for estimate's what-ifs */
static int parse_assume(const char *s, hy_rpc_dev_figures *dev, int *n, double mem_gbps, char *err, size_t errlen) {
    *n = 0;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (*n == HY_RPC_MAX_DEVICES) return hy_fail(err, errlen, "--rpc-assume: at most %d devices", HY_RPC_MAX_DEVICES);
        uint64_t b;
        if (!hy_parse_bytes(tok, &b) || !b) return hy_fail(err, errlen, "--rpc-assume: '%s' is not a size (e.g. 16G)", tok);
        dev[*n] = (hy_rpc_dev_figures){.budget = b, .compute_gbps = mem_gbps, .compute_assumed = true};
        (*n)++;
    }
    if (!*n) return hy_fail(err, errlen, "--rpc-assume: no size given");
    return 0;
}

int hy_session_rpc_plan(hy_session *s, const hy_session_params *p, char *err, size_t errlen) {
    hy_plan_params *q = &s->plan_params;
    const char *list = hy_session_rpc_list(p);
    hy_session_rpc *x = calloc(1, sizeof *x);
    if (!x) return hy_fail(err, errlen, "out of memory");
    s->rpc = x;
    if (q->gpu_budget) {
        if (p->gpu_budget && p->gpu_budget != HY_GPU_NONE)
            return hy_fail(err, errlen, "--rpc with a local GPU tier is not supported yet: give --gpu-budget 0");
        fprintf(stderr, "hypura: --rpc: the local GPU is not used (a GPU tier and remote tiers together are not "
                        "supported yet)\n");
        q->gpu_budget = 0;
    }
    double mem_gbps = q->mem_bw_gbps > 0 ? q->mem_bw_gbps : HY_PLAN_ASSUMED_MEM_GBPS;
    hy_rpc_link link = {0};
    if (p->rpc_link && !hy_rpc_link_parse(p->rpc_link, &link))
        return hy_fail(err, errlen, "--rpc-link takes 1gbe, 10gbe, 25gbe or RTT_US,GBPS (e.g. 200,0.1), not '%s'",
                       p->rpc_link);
    hy_rpc_dev_figures dev[HY_RPC_MAX_DEVICES];
    int n_dev = 0;
    if (p->rpc_assume) {
        if (list) return hy_fail(err, errlen, "--rpc-assume is a what-if without servers: not with --rpc");
        if (parse_assume(p->rpc_assume, dev, &n_dev, mem_gbps, err, errlen)) return -1;
        if (!p->rpc_link) hy_rpc_link_parse("10gbe", &link);
        x->assumed = true;
    } else {
        if (!g_rpc_ready || strcmp(g_rpc_list, list)) {
            if (g_rpc_ready)
                return hy_fail(err, errlen, "RPC endpoints cannot change within a process (%s, then %s)", g_rpc_list, list);
            hy_rpc r;
            if (hy_rpc_parse(list, &r, err, errlen)) return -1;
            int given = r.n;
            /* a re-executed serve: the endpoints it lost stay out */
            const char *lostl = p->rpc_keep_going ? hy_rpc_lost_endpoints() : NULL;
            if (lostl) {
                int k = 0;
                for (int i = 0; i < r.n; i++) {
                    char pat[160];
                    snprintf(pat, sizeof pat, ",%s,", r.ep[i].endpoint);
                    char wrapped[1100];
                    snprintf(wrapped, sizeof wrapped, ",%s,", lostl);
                    if (strstr(wrapped, pat)) fprintf(stderr, "hypura: RPC endpoint %s was lost: serving without it\n", r.ep[i].endpoint);
                    else r.ep[k++] = r.ep[i];
                }
                r.n = k;
            }
            if (hy_rpc_connect(&r, 5.0, p->rpc_keep_going, err, errlen)) return -1;
            g_rpc_dropped = r.n != given;
            int threads = p->engine.n_threads > 0 ? p->engine.n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
            if (r.n && hy_rpc_measure(&r, threads, err, errlen)) return -1;
            g_rpc = r;
            g_rpc_ready = true;
            snprintf(g_rpc_list, sizeof g_rpc_list, "%s", list);
        }
        x->r = g_rpc;
        n_dev = x->r.n;
        for (int i = 0; i < n_dev; i++) {
            const hy_rpc_endpoint *e = &x->r.ep[i];
            /* the rate its backend reads weights at in a product, measured there (a ratio to this
             * machine's product would carry the noise of two measurements on a shared machine) */
            dev[i] = (hy_rpc_dev_figures){.budget = e->budget, .compute_gbps = e->matvec_gbps, .compute_assumed = false};
        }
        if (!p->rpc_link) link = hy_rpc_link_of(&x->r);
    }
    x->link = link;
    x->n_dev = n_dev;
    memcpy(x->dev, dev, sizeof dev);
    /* HYPURA_RPC_LAYERS=N,N,...: the layers each endpoint takes, set by hand (as llama.cpp's -ts) */
    int force[HY_RPC_MAX_DEVICES] = {0}, *forcep = NULL;
    const char *fl = getenv("HYPURA_RPC_LAYERS");
    x->dropped = g_rpc_dropped;
    if (fl && *fl && x->dropped && !x->assumed) {
        fprintf(stderr, "hypura: HYPURA_RPC_LAYERS is ignored: an endpoint it counts is gone; the plan splits\n");
        fl = NULL;
    }
    if (fl && *fl) {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", fl);
        int k = 0;
        for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ","), k++) {
            char *end;
            long v = strtol(tok, &end, 10);
            if (*end || v < 0 || v > 65536 || k >= n_dev)
                return hy_fail(err, errlen, "HYPURA_RPC_LAYERS='%s': want one layer count per endpoint (%d)", fl, n_dev);
            force[k] = (int)v;
        }
        if (k != n_dev)
            return hy_fail(err, errlen, "HYPURA_RPC_LAYERS='%s': want one layer count per endpoint (%d)", fl, n_dev);
        forcep = force;
    }
    hy_plan local;
    if (hy_plan_rpc_make(s->desc, q, dev, n_dev, &link, forcep, &x->plan, &local, err, errlen)) return -1;
    int rc = hy_plan_rpc_expand(s->desc, &x->plan, &local, &s->plan);
    hy_plan_free(&local);
    if (rc) return hy_fail(err, errlen, "out of memory");
    for (int i = 0; i < n_dev; i++) x->used |= x->plan.layers[i] > 0;
    return 0;
}

int hy_session_rpc_engine(hy_session *s, hy_engine_params *ep, char *err, size_t errlen) {
    hy_session_rpc *x = s->rpc;
    if (!x || !x->used) return 0;
    if (x->assumed) return hy_fail(err, errlen, "--rpc-assume plans devices that are not there: estimate only");
    /* devices in layer order; libllama's n_gpu_layers counts the output head as one more layer, given to
     * the last device, but the head's weights stay here (hypura's overrides) */
    int order[HY_RPC_MAX_DEVICES], n = 0, total = 0;
    for (int i = 0; i < x->n_dev; i++)
        if (x->plan.layers[i] > 0) order[n++] = i;
    for (int a = 0; a < n; a++)
        for (int b = a + 1; b < n; b++)
            if (x->plan.first_layer[order[b]] < x->plan.first_layer[order[a]]) {
                int t = order[a];
                order[a] = order[b];
                order[b] = t;
            }
    for (int k = 0; k < n; k++) {
        int i = order[k];
        x->devs[k] = x->r.ep[i].dev;
        x->split[k] = (float)x->plan.layers[i] + (k == n - 1 ? 1.0f : 0.0f);
        total += x->plan.layers[i];
    }
    x->devs[n] = NULL;
    ep->devices = x->devs;
    ep->tensor_split = x->split;
    ep->n_gpu_layers = total + 1;
    ep->no_op_offload = true; /* host weights are computed here, never copied to a device */
    /* overrides: each device's layers first (libllama takes the first pattern that matches), then hypura's */
    int n_rest = 0;
    const struct llama_model_tensor_buft_override *rest = ep->overrides;
    while (rest && rest[n_rest].pattern) n_rest++;
    free(x->ovr);
    x->ovr = calloc((size_t)(n + n_rest + 1), sizeof *x->ovr);
    if (!x->ovr) return hy_fail(err, errlen, "out of memory");
    for (int k = 0; k < n; k++) {
        int i = order[k];
        size_t cap = 32 + 12 * (size_t)x->plan.layers[i], len = 0;
        char *pat = malloc(cap);
        if (!pat) return hy_fail(err, errlen, "out of memory");
        len += (size_t)snprintf(pat + len, cap - len, "^blk\\.(");
        for (int l = 0; l < x->plan.layers[i]; l++)
            len += (size_t)snprintf(pat + len, cap - len, "%s%d", l ? "|" : "", x->plan.first_layer[i] + l);
        snprintf(pat + len, cap - len, ")\\.");
        x->ovr[k].pattern = pat;
        x->ovr[k].buft = ggml_backend_dev_buffer_type(x->r.ep[i].dev);
    }
    for (int k = 0; k < n_rest; k++) x->ovr[n + k] = rest[k];
    x->n_own = n;
    ep->overrides = x->ovr;
    return 0;
}

/* libllama's loader reads a remote layer's weights through its mapping of the file to send
 * them: those pages stay mapped (counted in this process's memory, and in its cgroup's)
 * though nothing here reads them again. Unmapped from the process and dropped from the
 * page cache, so that the local budget holds what the plan says. Best effort. */
static void drop_remote_pages(const hy_session *s, const hy_session_rpc *x) {
    const hy_model_desc *d = s->desc;
    FILE *f = fopen("/proc/self/maps", "r");
    int fd = open(d->path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    bool have = fd >= 0 && fstat(fd, &st) == 0;
    char line[4600];
    const uint64_t pg = 4096;
    while (f && have && fgets(line, sizeof line, f)) {
        unsigned long lo, hi, off, ino;
        char perms[8], dev[16];
        int n = 0;
        if (sscanf(line, "%lx-%lx %7s %lx %15s %lu %n", &lo, &hi, perms, &off, dev, &ino, &n) < 6 || ino != st.st_ino)
            continue;
        for (int64_t i = 0; i < d->n_tensors; i++) {
            const hy_tensor_info *t = &d->tensors[i];
            if (t->layer < x->plan.n_local_layers) continue;
            uint64_t a = (t->offset + pg - 1) / pg * pg, b = (t->offset + t->size) / pg * pg;
            if (b <= a || a < off || b > off + (hi - lo)) continue;
            madvise((void *)(lo + (a - off)), b - a, MADV_DONTNEED);
        }
    }
    for (int64_t i = 0; have && i < d->n_tensors; i++) {
        const hy_tensor_info *t = &d->tensors[i];
        if (t->layer >= x->plan.n_local_layers)
            posix_fadvise(fd, (off_t)t->offset, (off_t)t->size, POSIX_FADV_DONTNEED);
    }
    if (fd >= 0) close(fd);
    if (f) fclose(f);
}

void hy_session_rpc_loaded(hy_session *s, const hy_session_params *p) {
    hy_session_rpc *x = s->rpc;
    if (!x || !x->used) return;
    drop_remote_pages(s, x);
    (void)p; /* fault handling started at the connection (hy_rpc_connect) */
}

void hy_session_rpc_free(hy_session *s) {
    hy_session_rpc *x = s->rpc;
    if (!x) return;
    if (x->ovr)
        for (int k = 0; k < x->n_own; k++) free((char *)x->ovr[k].pattern);
    free(x->ovr);
    free(x);
    s->rpc = NULL;
}

void hy_session_rpc_print(FILE *f, const hy_session *s) {
    const hy_session_rpc *x = s->rpc;
    if (!x) return;
    const hy_rpc_plan *rp = &x->plan;
    char a[32], b[32], c[32], d[32];
    fprintf(f, "  remote: %s\n", rp->why);
    fprintf(f, "  link: round trip %.3f ms, %.3f GB/s (%s); %s cross each boundary per token\n", x->link.rtt_s * 1e3,
            x->link.gbps, x->link.assumed ? "assumed (--rpc-link)" : "measured",
            hy_fmt_bytes(rp->link_bytes_per_boundary, a, sizeof a));
    for (int i = 0; i < x->n_dev; i++) {
        const char *name = x->assumed ? "assumed" : x->r.ep[i].endpoint;
        if (!x->assumed) {
            const hy_rpc_endpoint *e = &x->r.ep[i];
            fprintf(f, "  remote %s (%s): free %s of %s, budget %s; product %.1f GB/s there, %.1f here\n", name,
                    e->dev_name, hy_fmt_bytes(e->mem_free, a, sizeof a), hy_fmt_bytes(e->mem_total, b, sizeof b),
                    hy_fmt_bytes(e->budget, c, sizeof c), e->matvec_gbps, x->r.local_matvec_gbps);
        } else {
            fprintf(f, "  remote device %d (assumed): budget %s, compute %.1f GB/s (this machine's, assumed)\n", i,
                    hy_fmt_bytes(x->dev[i].budget, a, sizeof a), x->dev[i].compute_gbps);
        }
        if (rp->layers[i] > 0)
            fprintf(f, "    layers %d-%d: weights %s, KV %s, compute %s; reads %s per token at %.1f GB/s\n",
                    rp->first_layer[i], rp->first_layer[i] + rp->layers[i] - 1, hy_fmt_bytes(rp->weight_bytes[i], a, sizeof a),
                    hy_fmt_bytes(rp->kv_bytes[i], b, sizeof b), hy_fmt_bytes(rp->compute_bytes[i], c, sizeof c),
                    hy_fmt_bytes(rp->read_bytes[i], d, sizeof d), x->dev[i].compute_gbps);
        else fprintf(f, "    no layer\n");
    }
    fprintf(f, "  predicted with remote tiers: %.2f tok/s = 1 / (local %.3f s + remote %.3f s + link %.4f s per token; "
               "%d layers here, %d boundaries); sending the remote weights at load: %.1f s\n",
            rp->pred_tok_s, rp->pred_local_s, rp->pred_remote_s, rp->pred_link_s, rp->n_local_layers, rp->n_segments,
            rp->pred_upload_s);
}

json_t *hy_session_rpc_json(const hy_session *s) {
    const hy_session_rpc *x = s->rpc;
    if (!x) return NULL;
    const hy_rpc_plan *rp = &x->plan;
    json_t *o = json_object();
    json_object_set_new(o, "why", json_string(rp->why));
    json_object_set_new(o, "link_rtt_s", json_real(x->link.rtt_s));
    json_object_set_new(o, "link_gbps", json_real(x->link.gbps));
    json_object_set_new(o, "link_assumed", json_boolean(x->link.assumed));
    json_object_set_new(o, "link_bytes_per_boundary", json_integer((json_int_t)rp->link_bytes_per_boundary));
    json_object_set_new(o, "local_layers", json_integer(rp->n_local_layers));
    json_object_set_new(o, "pred_tok_s", json_real(rp->pred_tok_s));
    json_object_set_new(o, "pred_tok_s_local_only", json_real(rp->pred_tok_s_local_only));
    json_object_set_new(o, "pred_local_s", json_real(rp->pred_local_s));
    json_object_set_new(o, "pred_remote_s", json_real(rp->pred_remote_s));
    json_object_set_new(o, "pred_link_s", json_real(rp->pred_link_s));
    json_object_set_new(o, "pred_upload_s", json_real(rp->pred_upload_s));
    json_t *arr = json_array();
    for (int i = 0; i < x->n_dev; i++) {
        json_t *d = json_object();
        if (!x->assumed) {
            const hy_rpc_endpoint *e = &x->r.ep[i];
            json_object_set_new(d, "endpoint", json_string(e->endpoint));
            json_object_set_new(d, "device", json_string(e->dev_name));
            json_object_set_new(d, "mem_free", json_integer((json_int_t)e->mem_free));
            json_object_set_new(d, "mem_total", json_integer((json_int_t)e->mem_total));
            json_object_set_new(d, "rtt_s", json_real(e->rtt_s));
            json_object_set_new(d, "upload_gbps", json_real(e->up_gbps));
            json_object_set_new(d, "matvec_gbps", json_real(e->matvec_gbps));
        }
        json_object_set_new(d, "budget", json_integer((json_int_t)x->dev[i].budget));
        json_object_set_new(d, "compute_gbps", json_real(x->dev[i].compute_gbps));
        json_object_set_new(d, "layers", json_integer(rp->layers[i]));
        json_object_set_new(d, "first_layer", json_integer(rp->first_layer[i]));
        json_object_set_new(d, "weight_bytes", json_integer((json_int_t)rp->weight_bytes[i]));
        json_object_set_new(d, "kv_bytes", json_integer((json_int_t)rp->kv_bytes[i]));
        json_object_set_new(d, "read_bytes_per_token", json_integer((json_int_t)rp->read_bytes[i]));
        json_array_append_new(arr, d);
    }
    json_object_set_new(o, "devices", arr);
    return o;
}
