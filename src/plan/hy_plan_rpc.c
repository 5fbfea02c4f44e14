#include "plan/hy_plan_rpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/hy_util.h"

int hy_rpc_link_parse(const char *s, hy_rpc_link *out) {
    /* Ethernet's payload rate after framing (~94 % of the wire with 1500-byte
     * frames) and round trips of a small TCP request through a switch and two
     * kernels; figures to compare links on paper, printed as assumed */
    static const struct { const char *name; double gbps, rtt_us; } named[] = {
        {"1gbe", 0.117, 150}, {"10gbe", 1.17, 50}, {"25gbe", 2.93, 30}};
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
        if (!strcmp(s, named[i].name)) {
            *out = (hy_rpc_link){.rtt_s = named[i].rtt_us * 1e-6, .gbps = named[i].gbps, .assumed = true};
            return 1;
        }
    double rtt_us, gbps;
    char tail;
    if (sscanf(s, "%lf,%lf%c", &rtt_us, &gbps, &tail) == 2 && rtt_us >= 0 && rtt_us < 1e7 && gbps > 0 && gbps < 1e4) {
        *out = (hy_rpc_link){.rtt_s = rtt_us * 1e-6, .gbps = gbps, .assumed = true};
        return 1;
    }
    return 0;
}

hy_model_desc *hy_plan_rpc_local_desc(const hy_model_desc *d, int n_local) {
    if (n_local < 0 || n_local > d->n_layer) return NULL;
    hy_model_desc *o = malloc(sizeof *o);
    if (!o) return NULL;
    *o = *d;
    o->tensors = malloc(((size_t)d->n_tensors + 1) * sizeof *o->tensors);
    o->bytes_by_layer = calloc((size_t)n_local + 1, sizeof *o->bytes_by_layer);
    if (!o->tensors || !o->bytes_by_layer) {
        free(o->tensors);
        free(o->bytes_by_layer);
        free(o);
        return NULL;
    }
    memset(o->bytes_by_role, 0, sizeof o->bytes_by_role);
    int64_t n = 0;
    for (int64_t i = 0; i < d->n_tensors; i++) {
        const hy_tensor_info *t = &d->tensors[i];
        if (t->layer >= n_local) continue;
        o->tensors[n++] = *t;
        if (t->role >= 0 && t->role < HY_ROLE_COUNT) o->bytes_by_role[t->role] += t->size;
        if (t->layer >= 0) o->bytes_by_layer[t->layer] += t->size;
    }
    o->n_tensors = n;
    o->n_layer = n_local;
    return o;
}

void hy_plan_rpc_layer_bytes(const hy_model_desc *d, int first, int n, uint64_t *read, uint64_t *held) {
    const bool moe = d->n_expert > 1;
    const int k = moe ? (d->n_expert_used > 0 && d->n_expert_used <= d->n_expert ? d->n_expert_used : d->n_expert) : 1;
    uint64_t r = 0, h = 0;
    for (int64_t i = 0; i < d->n_tensors; i++) {
        const hy_tensor_info *t = &d->tensors[i];
        if (t->layer < first || t->layer >= first + n) continue;
        h += hy_plan_gpu_bytes(t->size);
        if (moe && t->role == HY_ROLE_EXPERT)
            r += (uint64_t)((unsigned __int128)t->size * (unsigned)k / (unsigned)d->n_expert);
        else r += t->size;
    }
    *read = r;
    *held = h;
}

/* what one device holding layers [first, first+n) costs and reads */
static bool device_fits(const hy_model_desc *d, const hy_plan_params *p, const hy_rpc_dev_figures *f, int first,
                        int n, uint64_t *held, uint64_t *read, uint64_t *kv, uint64_t *compute) {
    hy_plan_rpc_layer_bytes(d, first, n, read, held);
    uint64_t kv_all = hy_plan_kv_bytes(d, p->n_ctx);
    *kv = d->n_layer > 0 ? kv_all / (uint64_t)d->n_layer * (uint64_t)n : 0;
    *compute = n > 0 ? hy_plan_compute_bytes(d, p->n_ctx, p->n_batch) : 0;
    return *held + *kv + *compute <= f->budget;
}

/* a token's seconds on the link, per boundary */
static double boundary_s(const hy_model_desc *d, const hy_plan_params *p, const hy_rpc_link *l, uint64_t *bytes) {
    uint64_t b = 2 * 4 * (uint64_t)(d->n_embd > 0 ? d->n_embd : 0) + 4 * (uint64_t)(p->n_ctx > 0 ? p->n_ctx : 0) + 64;
    *bytes = b;
    return l->rtt_s + (double)b / (l->gbps > 0 ? l->gbps * 1e9 : 1e9);
}

typedef struct {
    int n[HY_RPC_MAX_DEVICES];
    int first[HY_RPC_MAX_DEVICES];
} split;

/* layout: devices take blocks at the end of the model in search order, the
 * first one searched last: dev[order[0]] holds the final block */
static int lay_out(const hy_model_desc *d, const int *order, int n_order, split *s) {
    int end = d->n_layer;
    for (int k = 0; k < n_order; k++) {
        int dv = order[k];
        s->first[dv] = end - s->n[dv];
        end -= s->n[dv];
    }
    return end; /* local layers */
}

/* predict one split; the local plan is left in *local (freed by the caller) when it fits */
static int evaluate(const hy_model_desc *d, const hy_plan_params *p, const hy_rpc_dev_figures *dev, int n_dev,
                    const hy_rpc_link *link, const int *order, int n_order, split *s, hy_rpc_plan *rp, hy_plan *local,
                    char *err, size_t errlen) {
    memset(rp, 0, sizeof *rp);
    rp->n_dev = n_dev;
    int n_local = lay_out(d, order, n_order, s);
    rp->n_local_layers = n_local;
    double remote_s = 0;
    for (int dv = 0; dv < n_dev; dv++) {
        rp->layers[dv] = s->n[dv];
        rp->first_layer[dv] = s->n[dv] ? s->first[dv] : -1;
        if (!s->n[dv]) continue;
        if (!device_fits(d, p, &dev[dv], s->first[dv], s->n[dv], &rp->weight_bytes[dv], &rp->read_bytes[dv],
                         &rp->kv_bytes[dv], &rp->compute_bytes[dv]))
            return hy_fail(err, errlen, "device %d cannot hold %d layers", dv, s->n[dv]);
        remote_s += (double)rp->read_bytes[dv] / (dev[dv].compute_gbps > 0 ? dev[dv].compute_gbps * 1e9 : 1e9);
        rp->n_segments++;
    }
    hy_model_desc *ld = hy_plan_rpc_local_desc(d, n_local);
    if (!ld) return hy_fail(err, errlen, "out of memory");
    memset(local, 0, sizeof *local);
    /* measured routing is per layer, [layer * n_expert + e]: the local layers' rows are its prefix */
    hy_plan_params lp = *p;
    if (p->expert_freq && d->n_expert > 0 && p->expert_freq_n == (int64_t)d->n_layer * d->n_expert)
        lp.expert_freq_n = (int64_t)n_local * d->n_expert;
    int rc = hy_plan_make(ld, &lp, local, err, errlen);
    hy_model_desc_free(ld);
    if (rc) {
        hy_plan_free(local);
        return -1;
    }
    uint64_t bb = 0;
    double per = boundary_s(d, p, link, &bb);
    rp->link_bytes_per_boundary = bb;
    rp->pred_local_s = local->pred_tok_s > 0 ? 1.0 / local->pred_tok_s : 0;
    rp->pred_remote_s = remote_s;
    rp->pred_link_s = per * rp->n_segments;
    uint64_t up = 0;
    for (int dv = 0; dv < n_dev; dv++) up += rp->weight_bytes[dv];
    rp->pred_upload_s = (double)up / (link->gbps > 0 ? link->gbps * 1e9 : 1e9);
    double t = rp->pred_local_s + rp->pred_remote_s + rp->pred_link_s;
    rp->pred_tok_s = t > 0 ? 1.0 / t : 0;
    return 0;
}

int hy_plan_rpc_make(const hy_model_desc *d, const hy_plan_params *p, const hy_rpc_dev_figures *dev, int n_dev,
                     const hy_rpc_link *link, const int *force, hy_rpc_plan *rp, hy_plan *local, char *err,
                     size_t errlen) {
    memset(rp, 0, sizeof *rp);
    memset(local, 0, sizeof *local);
    if (n_dev < 0 || n_dev > HY_RPC_MAX_DEVICES) return hy_fail(err, errlen, "at most %d RPC devices", HY_RPC_MAX_DEVICES);
    if (d->n_layer < 2 && n_dev > 0) return hy_fail(err, errlen, "a model of %d layer(s) cannot be split", d->n_layer);
    split s;
    memset(&s, 0, sizeof s);
    int order[HY_RPC_MAX_DEVICES] = {0}, n_order = 0;
    if (force) {
        /* a hand-set split: devices in the order given, first device first in the model */
        int total = 0;
        for (int dv = 0; dv < n_dev; dv++) {
            if (force[dv] < 0) return hy_fail(err, errlen, "a negative layer count for remote device %d", dv);
            total += force[dv];
            s.n[dv] = force[dv];
        }
        if (total > d->n_layer - 1)
            return hy_fail(err, errlen, "the split asks for %d remote layers; this model has %d, one stays here", total,
                           d->n_layer);
        for (int dv = n_dev - 1; dv >= 0; dv--) order[n_order++] = dv;
        for (int dv = 0; dv < n_dev; dv++) {
            if (!s.n[dv]) continue;
            uint64_t held, rd, kv, cb;
            lay_out(d, order, n_order, &s);
            if (!device_fits(d, p, &dev[dv], s.first[dv], s.n[dv], &held, &rd, &kv, &cb)) {
                char a[32], b[32];
                return hy_fail(err, errlen, "remote device %d cannot hold %d layers: they need %s, its budget is %s", dv,
                               s.n[dv], hy_fmt_bytes(held + kv + cb, a, sizeof a), hy_fmt_bytes(dev[dv].budget, b, sizeof b));
            }
        }
        if (evaluate(d, p, dev, n_dev, link, order, n_order, &s, rp, local, err, errlen)) return -1;
        split z;
        memset(&z, 0, sizeof z);
        hy_rpc_plan lrp;
        hy_plan lpl;
        char why[HY_ERRLEN];
        if (!evaluate(d, p, dev, n_dev, link, order, 0, &z, &lrp, &lpl, why, sizeof why)) {
            rp->pred_tok_s_local_only = lrp.pred_tok_s;
            hy_plan_free(&lpl);
        }
        snprintf(rp->why, sizeof rp->why, "%d of %d layers remote, as set by hand (HYPURA_RPC_LAYERS): %.2f tok/s predicted",
                 d->n_layer - rp->n_local_layers, d->n_layer, rp->pred_tok_s);
        return 0;
    }
    hy_rpc_plan best_rp, cand_rp;
    hy_plan best_local, cand_local;
    memset(&best_local, 0, sizeof best_local);
    bool have_best = false;
    char first_err[HY_ERRLEN] = "";
    /* no device: the local plan alone (also what "without it" is compared with) */
    if (!evaluate(d, p, dev, n_dev, link, order, 0, &s, &cand_rp, &cand_local, first_err, sizeof first_err)) {
        best_rp = cand_rp;
        best_local = cand_local;
        have_best = true;
    }
    double local_only = have_best ? best_rp.pred_tok_s : 0;
    for (int dv = 0; dv < n_dev; dv++) {
        int used = 0;
        for (int k = 0; k < n_order; k++) used += s.n[order[k]];
        order[n_order++] = dv;
        int best_n = have_best ? 0 : -1, max_fit = 0;
        char why[HY_ERRLEN];
        for (int n = 1; n <= d->n_layer - 1 - used; n++) { /* one layer at least stays local */
            s.n[dv] = n;
            /* the device must hold its block: stop at the first count that does not fit */
            uint64_t held, rd, kv, cb;
            lay_out(d, order, n_order, &s);
            if (!device_fits(d, p, &dev[dv], s.first[dv], n, &held, &rd, &kv, &cb)) break;
            max_fit = n;
            if (evaluate(d, p, dev, n_dev, link, order, n_order, &s, &cand_rp, &cand_local, why, sizeof why)) {
                if (!first_err[0]) snprintf(first_err, sizeof first_err, "%s", why);
                continue; /* the local part does not fit yet: more layers away may */
            }
            if (!have_best || cand_rp.pred_tok_s > best_rp.pred_tok_s) {
                if (have_best) hy_plan_free(&best_local);
                best_rp = cand_rp;
                best_local = cand_local;
                have_best = true;
                best_n = n;
            } else hy_plan_free(&cand_local);
        }
        /* nothing fits yet: this device takes all it can, and the next ones may make it fit */
        s.n[dv] = best_n > 0 ? best_n : best_n < 0 ? max_fit : 0;
    }
    if (!have_best) return hy_fail(err, errlen, "%s", first_err[0] ? first_err : "no placement fits");
    *rp = best_rp;
    rp->pred_tok_s_local_only = local_only;
    *local = best_local;
    int used = 0;
    for (int dv = 0; dv < n_dev; dv++) used += rp->layers[dv] > 0;
    if (!n_dev) snprintf(rp->why, sizeof rp->why, "no remote device");
    else if (!used)
        snprintf(rp->why, sizeof rp->why, "no remote layer: the local plan alone predicts %.2f tok/s, no split predicts more",
                 local_only);
    else if (local_only > 0)
        snprintf(rp->why, sizeof rp->why, "%d of %d layers remote: %.2f tok/s predicted against %.2f with this machine alone",
                 d->n_layer - rp->n_local_layers, d->n_layer, rp->pred_tok_s, local_only);
    else
        snprintf(rp->why, sizeof rp->why, "%d of %d layers remote: %.2f tok/s predicted; this machine alone cannot run it (%s)",
                 d->n_layer - rp->n_local_layers, d->n_layer, rp->pred_tok_s, first_err);
    return 0;
}

int hy_plan_rpc_expand(const hy_model_desc *d, const hy_rpc_plan *rp, const hy_plan *local, hy_plan *out) {
    *out = *local;
    out->n_tensors = (int)d->n_tensors;
    out->tier = malloc(((size_t)d->n_tensors + 1) * sizeof *out->tier);
    out->group = malloc(((size_t)d->n_tensors + 1) * sizeof *out->group);
    if (!out->tier || !out->group) {
        free(out->tier);
        free(out->group);
        out->tier = NULL;
        out->group = NULL;
        return -1;
    }
    int li = 0;
    for (int64_t i = 0; i < d->n_tensors; i++) {
        if (d->tensors[i].layer >= rp->n_local_layers) {
            out->tier[i] = HY_TIER_RAM;
            out->group[i] = -1;
        } else {
            out->tier[i] = li < local->n_tensors ? local->tier[li] : HY_TIER_RAM;
            out->group[i] = li < local->n_tensors ? local->group[li] : -1;
            li++;
        }
    }
    out->pred_tok_s = rp->pred_tok_s;
    return 0;
}
