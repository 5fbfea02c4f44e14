/* The pipeline in one place: gguf -> profile -> plan -> stream -> engine. */
#include "hypura.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cache/hy_coact.h"
#include "cache/hy_policy.h"
#include "engine/hy_place.h"
#include "engine/hy_session_rpc.h"
#include "engine/hy_spec.h"
#include "stream/hy_vxc.h"
#include "util/hy_util.h"

#define HY_SESSION_BATCH_LOOKAHEAD 2

hy_session_params hy_session_default_params(void) {
    hy_session_params p = {0};
    p.lookahead = -1;
    p.mode = -1;
    p.io_backend = 0;
    p.repack = -1;
    p.cache_policy = -1;
    p.engine = hy_engine_default_params();
    return p;
}

static uint64_t env_bytes(const char *name) {
    const char *v = getenv(name);
    uint64_t b = 0;
    if (v && *v && !hy_parse_bytes(v, &b)) {
        fprintf(stderr, "hypura: ignoring %s='%s' (not a size)\n", name, v);
        return 0;
    }
    return b;
}

/* A MoE: the routing this model's earlier runs persisted (what an
 * expert-streaming run seeds its cache with), for the plan to predict the
 * cache's hit rate and choose between expert- and dense-style streaming with;
 * without any, the plan's routing prior (HY_PLAN_ROUTING_PRIOR) stands. A file
 * that cannot be used is noted. */
static void load_stats(hy_session *s) {
    const hy_model_desc *d = s->desc;
    if (hy_coact_default_path(d->model_id, s->expert_stats_path, sizeof s->expert_stats_path)) {
        s->expert_stats_path[0] = 0;
        return;
    }
    FILE *f = fopen(s->expert_stats_path, "r");
    if (!f) return;
    fclose(f);
    hy_coact *c = NULL;
    if (hy_coact_load(s->expert_stats_path, d->model_id, d->n_layer, d->n_expert, &c, s->expert_stats_error,
                      sizeof s->expert_stats_error))
        return;
    uint64_t tokens = hy_coact_tokens(c);
    size_t n = (size_t)d->n_layer * (size_t)d->n_expert;
    double *freq = tokens ? malloc(n * sizeof *freq) : NULL;
    if (freq) {
        for (int l = 0; l < d->n_layer; l++)
            for (int e = 0; e < d->n_expert; e++) freq[(size_t)l * d->n_expert + e] = hy_coact_freq(c, l, e);
        s->plan_params.expert_freq = freq;
        s->plan_params.expert_freq_n = (int64_t)n;
        s->plan_params.expert_freq_tokens = tokens;
        s->expert_freq = freq;
        s->expert_stats_tokens = tokens;
    }
    hy_coact_free(c);
}

/* A resident draft model (speculative decoding) is memory the target's plan
 * cannot have: its weights, KV and compute come off the budget first. */
static int charge_draft(hy_session *s, const hy_session_params *p, double *draft_tok_s, char *err, size_t errlen) {
    hy_plan_params *q = &s->plan_params;
    if (hy_spec_draft_cost(p->draft_path, q->n_ctx, &s->draft_bytes, draft_tok_s, err, errlen)) return -1;
    if (q->mem_budget <= s->draft_bytes) {
        /* the target's own minimum, from a plan that cannot fit */
        hy_plan_params t = *q;
        hy_plan pl;
        char why[HY_ERRLEN], a[32], b[32], c[32];
        memset(&pl, 0, sizeof pl);
        t.mem_budget = 1;
        hy_plan_make(s->desc, &t, &pl, why, sizeof why);
        uint64_t tmin = pl.min_budget;
        hy_plan_free(&pl);
        return hy_fail(err, errlen, "memory budget %s cannot hold the draft model (%s resident with its KV and compute) "
                                    "and the target besides: the minimum is %s",
                       hy_fmt_bytes(q->mem_budget, a, sizeof a), hy_fmt_bytes(s->draft_bytes, b, sizeof b),
                       hy_fmt_bytes(tmin + s->draft_bytes, c, sizeof c));
    }
    q->mem_budget -= s->draft_bytes;
    return 0;
}

/* Whether drafting pays for this target at all (hy_spec.h's cost model): the
 * plan with the draft charged, drafting the best k at the expected acceptance,
 * against the plan with the whole budget and no draft. Where it does not, the
 * target gets the whole budget and the draft is not to be opened (draft_off);
 * either way draft_why says what was predicted. */
static int decide_draft(hy_session *s, const hy_session_params *p, double draft_tok_s) {
    /* the draft's plan predicted its token at the assumed memory bandwidth: this machine's instead */
    if (s->plan.pred_mem_gbps > 0) draft_tok_s *= HY_PLAN_ASSUMED_MEM_GBPS / s->plan.pred_mem_gbps;
    hy_plan_params whole = s->plan_params;
    whole.mem_budget += s->draft_bytes;
    hy_plan plain;
    char why[HY_ERRLEN];
    memset(&plain, 0, sizeof plain);
    if (hy_plan_make(s->desc, &whole, &plain, why, sizeof why)) return -1;
    s->spec_model = calloc(1, sizeof *s->spec_model);
    int kmax = p->draft_max > 0 ? p->draft_max : hy_spec_default_params().draft_max;
    if (!s->spec_model ||
        hy_spec_model_make(s->desc, &s->plan_params, &s->plan, &plain, draft_tok_s, kmax, s->spec_model)) {
        hy_plan_free(&plain);
        return -1;
    }
    hy_spec_model *m = s->spec_model;
    bool given = p->draft_accept > 0;
    if (given) m->accept = p->draft_accept > 1 ? 1 : p->draft_accept;
    double gain;
    int k = hy_spec_model_best_k(m, m->accept, true, &gain);
    /* the least acceptance at which any k pays, and that k */
    int kbe = 1;
    double be = hy_spec_model_breakeven(m, 1, true);
    for (int j = 2; j <= m->kmax; j++) {
        double b = hy_spec_model_breakeven(m, j, true);
        if (b < be) be = b, kbe = j;
    }
    char moe[160] = "";
    if (m->moe)
        snprintf(moe, sizeof moe, "; %d tokens route to %.1f experts per layer where one routes to %d (%.1f not cached)",
                 k + 1, m->union_x[k + 1], m->top_k, m->miss_x[k + 1]);
    char bes[48];
    if (be > 1) snprintf(bes, sizeof bes, "not even at 100%%");
    else snprintf(bes, sizeof bes, "above %.0f%% (k %d)", 100 * be, kbe);
    s->draft_off = gain < 1 && !p->draft_always;
    snprintf(s->draft_why, sizeof s->draft_why,
             "%s: predicted %.2fx plain decoding at k %d and %.0f%% acceptance (%s); pays %s acceptance; verify pass "
             "%.3f s for %d tokens against %.3f s plain with the whole budget%s",
             s->draft_off ? "drafting off" : gain < 1 ? "drafting kept (--draft-fixed)" : "drafting on", gain, k,
             100 * m->accept, given ? "given" : "prior, not measured", bes, m->pass_s[k], k + 1, m->plain_s, moe);
    if (s->draft_off) {
        hy_plan_free(&s->plan);
        s->plan = plain;
        s->plan_params.mem_budget = whole.mem_budget;
        s->draft_bytes = 0;
    } else {
        hy_plan_free(&plain);
    }
    return 0;
}

/* layers with expert tensors on tier `tier`, or (tier < 0) with tensors the VRAM cache serves */
static int count_expert_layers(const hy_model_desc *d, const hy_plan *pl, int tier) {
    int n = 0;
    for (int l = 0; l < d->n_layer; l++)
        for (int64_t i = 0; i < d->n_tensors; i++)
            if (d->tensors[i].layer == l &&
                (tier < 0 ? hy_vxc_serves(d, pl, i) : d->tensors[i].role == HY_ROLE_EXPERT && (int)pl->tier[i] == tier)) {
                n++;
                break;
            }
    return n;
}

/* the VRAM cache's figures and prediction over plan pl (the cached layers' experts off the GPU) */
static void xcache_predict(hy_session *s, const hy_plan *pl, const hy_plan_params *q, int slots) {
    s->xcache_hit = hy_vxc_expected_hit(s->desc, pl, slots, s->expert_freq, &s->xcache_routed);
    int n = count_expert_layers(s->desc, pl, -1);
    s->xcache_layers = n;
    s->xcache_pred_ok = hy_plan_vxc_predict(pl, q, s->xcache_routed, s->xcache_hit, n, s->desc->n_expert_used,
                                             &s->xcache_pred) == 0;
}

/* expert-streaming's plan, with every streamed tensor one the VRAM cache serves (through the RAM
 * expert cache over NVMe, hy_vxc.h): nothing else would stream */
static bool xcache_nvme_ok(const hy_model_desc *d, const hy_plan *pl) {
    if (pl->mode != HY_MODE_EXPERT) return false;
    for (int64_t i = 0; i < d->n_tensors; i++)
        if (pl->tier[i] == HY_TIER_NVME && !hy_vxc_serves(d, pl, i)) return false;
    return true;
}

int hy_session_plan(const hy_session_params *p, hy_session **out, char *err, size_t errlen) {
    *out = NULL;
    hy_session *s = calloc(1, sizeof *s);
    if (!s) return hy_fail(err, errlen, "out of memory");
    if (hy_gguf_read(p->model_path, &s->desc, err, errlen)) goto fail;

    hy_profile_params pp = hy_profile_default_params();
    const char *np = getenv("HYPURA_NO_STORAGE_PROFILE");
    pp.storage = !(p->no_profile_storage || (np && *np && strcmp(np, "0")));
    if (pp.storage && isatty(2)) {
        /* the first run measures storage once (cached afterwards) */
        char cache[4096];
        if (hy_cache_dir(cache, sizeof cache) == 0) {
            char path[4200];
            snprintf(path, sizeof path, "%s/profile.json", cache);
            FILE *f = fopen(path, "r");
            if (f) fclose(f);
            else fprintf(stderr, "hypura: profiling this machine once (storage sweep, ~15 s)...\n");
        }
    }
    if (hy_profile_get(&pp, &s->profile, err, errlen)) goto fail;

    hy_plan_params *q = &s->plan_params;
    *q = hy_plan_default_params();
    q->mem_budget = p->mem_budget ? p->mem_budget : env_bytes("HYPURA_MEMORY_BUDGET");
    if (!q->mem_budget) q->mem_budget = s->profile.mem_budget_default;
    /* GPU budget: flag > HYPURA_GPU_BUDGET > the first GPU's free memory less headroom; 0/none = no GPU */
    uint64_t g = p->gpu_budget;
    const char *genv = getenv("HYPURA_GPU_BUDGET");
    if (!g && genv && *genv && !hy_gpu_budget_parse(genv, &g)) {
        fprintf(stderr, "hypura: ignoring HYPURA_GPU_BUDGET='%s' (not a size)\n", genv);
        g = 0;
    }
    if (g == HY_GPU_NONE) q->gpu_budget = 0;
    else if (g) q->gpu_budget = g;
    else if (s->profile.n_gpu > 0) q->gpu_budget = hy_session_gpu_default(&s->profile.gpu[0]);
    if (q->gpu_budget && s->profile.n_gpu == 0 && !p->plan_only) {
        char b[32];
        hy_fail(err, errlen, "a GPU budget of %s was given, but this machine (this build) has no GPU",
                hy_fmt_bytes(q->gpu_budget, b, sizeof b));
        goto fail;
    }
    if (p->gpu_xcache && (hy_session_rpc_list(p) || p->rpc_assume)) {
        hy_fail(err, errlen, "--gpu-xcache does not work with remote tiers (--rpc) yet");
        goto fail;
    }
    if (p->gpu_xcache && p->gpu_xcache != HY_XCACHE_AUTO) {
        /* the VRAM expert cache comes out of the GPU budget; the rest is planned as usual */
        char a[32], b[32];
        if (q->gpu_budget && q->gpu_budget <= p->gpu_xcache) {
            hy_fail(err, errlen, "--gpu-xcache %s leaves nothing of the GPU budget of %s for the rest",
                    hy_fmt_bytes(p->gpu_xcache, a, sizeof a), hy_fmt_bytes(q->gpu_budget, b, sizeof b));
            goto fail;
        }
        if (!q->gpu_budget && !getenv("HYPURA_XCACHE_CPU")) {
            hy_fail(err, errlen, "--gpu-xcache needs a GPU tier (a GPU and a GPU budget)");
            goto fail;
        }
        if (q->gpu_budget) q->gpu_budget -= p->gpu_xcache;
        s->xcache_bytes = p->gpu_xcache;
    }
    int n_ctx = p->engine.n_ctx;
    if (n_ctx <= 0) n_ctx = s->desc->n_ctx_train > 0 && s->desc->n_ctx_train < 4096 ? s->desc->n_ctx_train : 4096;
    q->n_ctx = n_ctx;
    q->n_batch = p->engine.n_batch > 0 ? p->engine.n_batch : 512;
    /* a decode step of n_seq sequences is one ubatch of n_seq tokens (and the batcher's holding
     * sequence's, hy_batch.h): compute is charged for it, and libllama needs a batch that large */
    if (p->n_seq > 1 && p->n_seq + 1 > q->n_batch) q->n_batch = p->n_seq + 1;
    s->n_seq = p->n_seq > 1 ? p->n_seq : 1;
    q->seq_read_gbps = s->profile.seq_read_gbps;
    q->mem_bw_gbps = s->profile.mem_bw_gbps;
    q->piece_s = s->profile.piece_s;
    _Static_assert(HY_MATVEC_NTYPES == HY_PLAN_NTYPES, "one slot per weight type on both sides");
    memcpy(q->matvec_gbps, s->profile.matvec_gbps, sizeof q->matvec_gbps);
    /* compute time as earlier runs measured it on this machine (hy_calib.h) */
    s->n_threads = p->engine.n_threads > 0 ? p->engine.n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (s->n_threads < 1) s->n_threads = 1;
    q->threads = s->n_threads;
    q->profile_threads = s->profile.cores_logical;
    const char *modes[HY_MODE_COUNT];
    for (int m = 0; m < HY_MODE_COUNT; m++) modes[m] = hy_mode_name(m);
    if (getenv("HYPURA_NO_CALIBRATION")) {
        for (int m = 0; m < HY_MODE_COUNT; m++) s->calib[m] = s->calib_read[m] = (hy_calib){.scale = 1};
        s->calib_wait = (hy_calib){.scale = 1};
    } else {
        hy_calib_get_modes(NULL, s->desc->model_id, s->n_threads, q->gpu_budget, modes, HY_MODE_COUNT, s->calib);
        hy_calib_get_read_modes(NULL, modes, HY_MODE_COUNT, s->calib_read);
        s->calib_wait = hy_calib_get(NULL, s->desc->model_id, s->n_threads, q->gpu_budget, HY_CALIB_IO_WAIT);
    }
    q->io_wait_share = s->calib_wait.runs ? s->calib_wait.scale : 0;
    /* a streamed mode that no run here has measured yet reads at what the other one found: the
     * disk is the same, and the profile's one sample of it was further off than the access
     * pattern (this machine: dense-style 1.46x the profile, expert-streaming 1.21x, the first
     * dense-style run at the profile's figure 1.51x faster than predicted) */
    for (int m = 0; m < HY_MODE_COUNT; m++) s->calib_read_from[m] = m;
    const int streamed[2] = {HY_MODE_DENSE_FFN, HY_MODE_EXPERT};
    for (int i = 0; i < 2; i++) {
        int m = streamed[i], o = streamed[1 - i];
        if (!s->calib_read[m].runs && s->calib_read_from[o] == o && s->calib_read[o].runs) {
            s->calib_read[m] = s->calib_read[o];
            s->calib_read_from[m] = o;
        }
    }
    for (int m = 0; m < HY_MODE_COUNT; m++) {
        q->compute_scale[m] = s->calib[m].runs ? s->calib[m].scale : 0; /* 0: the plan's prior */
        q->read_scale[m] = s->calib_read[m].runs ? s->calib_read[m].scale : 0;
    }
    q->lookahead = p->lookahead;
    /* batched steps (serve): their compute per layer is about a group's read (8 rows of a
     * 5.7 B Q4_K model on 2 cores: 0.78 s per step with 2 groups in flight where 1 stalled
     * 0.2 s more; bench/serve_batch.sh) */
    q->min_lookahead = p->n_seq > 1 ? HY_SESSION_BATCH_LOOKAHEAD : 0;
    q->force_mode = p->mode;
    bool persist = !p->no_persist_stats && !getenv("HYPURA_NO_PERSIST_STATS");
    if (s->desc->n_expert > 1 && persist) load_stats(s);
    /* the expert cache's policy: given, or what this model's earlier runs measured hitting more */
    s->cache_policy = p->cache_policy > 0 ? HY_XC_LRU : HY_XC_LFU;
    if (p->cache_policy >= 0) {
        snprintf(s->cache_policy_why, sizeof s->cache_policy_why, "given (--cache-policy)");
    } else {
        hy_policy_record r = {0};
        char path[4096];
        if (s->desc->n_expert > 1 && persist && !hy_policy_path(s->desc->model_id, path, sizeof path))
            hy_policy_load(path, s->desc->model_id, &r);
        s->cache_policy = (int)hy_policy_choose(&r, s->cache_policy_why, sizeof s->cache_policy_why);
    }
    double draft_tok_s = 0;
    if (p->draft_path && charge_draft(s, p, &draft_tok_s, err, errlen)) goto fail;
    if (hy_session_rpc_list(p) || p->rpc_assume) {
        if (hy_session_rpc_plan(s, p, err, errlen)) goto fail;
    } else if (hy_plan_make(s->desc, q, &s->plan, err, errlen)) {
        if (s->draft_bytes) {
            char a[32], b[32];
            size_t l = strlen(err);
            snprintf(err + l, errlen > l ? errlen - l : 0, "; with the draft model's %s besides, at least %s in all",
                     hy_fmt_bytes(s->draft_bytes, a, sizeof a), hy_fmt_bytes(s->plan.min_budget + s->draft_bytes, b, sizeof b));
        }
        goto fail;
    }
    if (p->gpu_xcache == HY_XCACHE_AUTO) {
        /* auto: the GPU keeps what it holds besides experts (output head, attention, K/V, compute),
         * and the rest of its budget is the cache, when that holds top-k experts per layer and
         * the prediction says it beats whole expert layers on the GPU and the rest on the CPU */
        char a[32], b[32];
        if (!s->plan.gpu_output) {
            snprintf(s->xcache_why, sizeof s->xcache_why, "not used: no GPU tier");
        } else if (s->plan.mode == HY_MODE_EXPERT && p->pagecache) {
            snprintf(s->xcache_why, sizeof s->xcache_why, "not used: --io pagecache (the cache over NVMe reads with direct I/O)");
        } else if (s->plan.mode != HY_MODE_RESIDENT && !xcache_nvme_ok(s->desc, &s->plan)) {
            snprintf(s->xcache_why, sizeof s->xcache_why, "not used: the plan (%s) streams more than experts",
                     hy_mode_name(s->plan.mode));
        } else {
            uint64_t xg = 0;
            for (int64_t i = 0; i < s->desc->n_tensors; i++)
                if (s->plan.tier[i] == HY_TIER_GPU && s->desc->tensors[i].role == HY_ROLE_EXPERT) xg += s->desc->tensors[i].size;
            uint64_t keep = s->plan.gpu_used - xg;
            keep += keep / 32 + ((uint64_t)64 << 20); /* margin: CUDA's own allocations beside the plan's */
            hy_plan trial;
            hy_plan_params tq = *q;
            tq.gpu_budget = keep;
            if (q->gpu_budget <= keep) {
                snprintf(s->xcache_why, sizeof s->xcache_why, "not used: the GPU budget holds no more than the %s the rest needs there",
                         hy_fmt_bytes(keep, a, sizeof a));
            } else if (hy_plan_make(s->desc, &tq, &trial, err, errlen) == 0) {
                uint64_t x = q->gpu_budget - keep;
                int slots = hy_vxc_slots_for(s->desc, &trial, x);
                bool took = false;
                if (trial.mode != HY_MODE_RESIDENT && !xcache_nvme_ok(s->desc, &trial)) {
                    snprintf(s->xcache_why, sizeof s->xcache_why, "not used: without expert layers on the GPU the plan (%s) streams more than experts",
                             hy_mode_name(trial.mode));
                } else if (slots < s->desc->n_expert_used) {
                    snprintf(s->xcache_why, sizeof s->xcache_why,
                             "not used: the %s the GPU budget leaves for it holds fewer than %d experts per layer (top-k) "
                             "besides the whole-layer area; at least %s",
                             hy_fmt_bytes(x, a, sizeof a), s->desc->n_expert_used,
                             hy_fmt_bytes(hy_vxc_bytes_for(s->desc, &trial, s->desc->n_expert_used), b, sizeof b));
                } else if (slots >= s->desc->n_expert) {
                    snprintf(s->xcache_why, sizeof s->xcache_why, "not used: every expert of the layers off the GPU fits in it");
                } else {
                    xcache_predict(s, &trial, &tq, slots);
                    double alt = s->plan.pred_tok_s;
                    s->xcache_alt_tok_s = alt;
                    const hy_plan_vxc_pred *xp = &s->xcache_pred;
                    char c[32];
                    /* over NVMe the storage the cache adds is charged too (hy_plan_vxc_judge): the Mixtral
                     * shape at 8 GiB in a 12 GiB cgroup on the H200 machine decoded at 2.1 tok/s with
                     * the cache (the per-layer rule's choice), 5.5 without */
                    double extra = 0;
                    hy_vxc_verdict v = hy_plan_vxc_judge(xp, &trial, &s->plan, &extra);
                    char more[200] = "";
                    if (v == HY_VXC_NVME_SLOWER)
                        snprintf(more, sizeof more, " (over NVMe it also waits %.1f ms more per token for storage, over %.0fx what it "
                                 "saves: the expert layers the plan keeps whole on the GPU spare the RAM expert cache those reads)",
                                 1e3 * extra, HY_PLAN_VXC_NVME_DOUBT);
                    took = !s->xcache_pred_ok || v == HY_VXC_USE;
                    snprintf(s->xcache_why, sizeof s->xcache_why,
                             "%s%s: a %s cache (%d of %d experts per layer, %.0f%% expected hits) serves the %d layers' experts "
                             "in %.1f ms per token (%s of misses over PCIe), against %.1f ms on the CPU; predicted %.2f tok/s "
                             "with it, %.2f without it (experts of %d layers whole on the GPU)",
                             took ? "used" : "not used",
                             more,
                             hy_fmt_bytes(x, a, sizeof a), slots, s->desc->n_expert,
                             100.0 * s->xcache_hit, s->xcache_layers, 1e3 * (xp->pcie_s + xp->gpu_s + xp->sync_s),
                             hy_fmt_bytes((uint64_t)xp->pcie_bytes, c, sizeof c), 1e3 * xp->cpu_alt_s, xp->tok_s, alt,
                             count_expert_layers(s->desc, &s->plan, HY_TIER_GPU));
                }
                if (took) {
                    hy_plan_free(&s->plan);
                    s->plan = trial;
                    *q = tq;
                    s->xcache_bytes = x;
                    s->xcache_slots = slots;
                } else {
                    s->xcache_pred_ok = false;
                    hy_plan_free(&trial);
                }
            } else {
                snprintf(s->xcache_why, sizeof s->xcache_why, "not used: %s", err);
                err[0] = 0;
            }
        }
    } else if (p->gpu_xcache && p->gpu_xcache != HY_XCACHE_AUTO) {
        char a[32], b[32];
        if (s->plan.mode != HY_MODE_RESIDENT && s->plan.mode != HY_MODE_EXPERT) {
            hy_fail(err, errlen, "--gpu-xcache is for MoE models; the plan is %s", hy_mode_name(s->plan.mode));
            goto fail;
        }
        /* expert-streaming: the experts the memory budget cannot hold come from NVMe through a
         * RAM expert cache of the plan's pool under the VRAM cache (hy_vxc.h); the cache serves
         * every streamed tensor, so nothing else streams */
        if (s->plan.mode == HY_MODE_EXPERT && !xcache_nvme_ok(s->desc, &s->plan)) {
            hy_fail(err, errlen, "--gpu-xcache: a tensor streams from NVMe that is no expert tensor the cache serves");
            goto fail;
        }
        if (s->plan.mode == HY_MODE_EXPERT && p->pagecache) {
            hy_fail(err, errlen, "--gpu-xcache over the NVMe tier reads experts with direct I/O into its RAM expert cache; "
                                 "--io pagecache does not apply");
            goto fail;
        }
        s->xcache_slots = hy_vxc_slots_for(s->desc, &s->plan, p->gpu_xcache);
        uint64_t need = hy_vxc_bytes_for(s->desc, &s->plan, s->desc->n_expert_used);
        if (need == 0) {
            hy_fail(err, errlen, "--gpu-xcache: no expert layer is left outside the GPU tier to cache");
            goto fail;
        }
        if (s->xcache_slots < s->desc->n_expert_used) {
            hy_fail(err, errlen, "--gpu-xcache %s holds fewer than %d experts per layer; at least %s", hy_fmt_bytes(p->gpu_xcache, a, sizeof a),
                    s->desc->n_expert_used, hy_fmt_bytes(need, b, sizeof b));
            goto fail;
        }
        xcache_predict(s, &s->plan, q, s->xcache_slots);
    }
    /* through the page cache, the kernel decides what stays under a cap (the expert cache's
     * slots are not what is read): no figure rather than a wrong one (bench/moe_vs_llama.sh
     * measured 0.52 tok/s where the slots' hit rate said 5.68) */
    if (p->pagecache && s->plan.mode == HY_MODE_EXPERT) {
        s->pred_none = "--io pagecache: what stays cached is the kernel's choice";
        s->plan.pred_tok_s = 0;
    }
    if (p->draft_path && decide_draft(s, p, draft_tok_s)) {
        hy_fail(err, errlen, "out of memory");
        goto fail;
    }
    *out = s;
    return 0;
fail:
    hy_session_free(s);
    return -1;
}

bool hy_gpu_budget_parse(const char *s, uint64_t *out) {
    if (!strcmp(s, "0") || !strcmp(s, "none")) {
        *out = HY_GPU_NONE;
        return true;
    }
    return hy_parse_bytes(s, out) && *out > 0;
}

uint64_t hy_session_gpu_default(const hy_gpu_info *g) {
    /* leave room for the CUDA context's own allocations and other programs:
     * 1 GiB or 5 % of the card, whichever is more */
    uint64_t head = (uint64_t)1 << 30;
    if (g->mem_total / 20 > head) head = g->mem_total / 20;
    return g->mem_free > head ? g->mem_free - head : 0;
}

static int session_loaded(void *ud, char *err, size_t errlen) { return hy_stream_check_loaded(ud, err, errlen); }
static int session_vxc_attach(void *ud, char *err, size_t errlen) { return hy_vxc_attach(ud, err, errlen); }

int hy_session_load(hy_session *s, const hy_session_params *p, char *err, size_t errlen) {
    hy_engine_params ep = p->engine;
    ep.model_path = p->model_path;
    ep.n_ctx = s->plan_params.n_ctx;
    ep.n_batch = s->plan_params.n_batch;
    /* full-resident: weights read into anonymous memory (load mode none), with
     * llama.cpp's repacked kernels unless told otherwise */
    ep.use_mmap = false;
    ep.repack = p->repack != 0;
    /* Without repacking, resident weights go to hypura's RAM tier (anonymous
     * memory with transparent huge pages), also when nothing streams: libllama's
     * own CPU buffers use 4 KiB pages, measured several times slower here. */
    bool streams = s->plan.mode != HY_MODE_RESIDENT;
    bool gpu = s->plan.gpu_output;
    bool vx = s->xcache_bytes > 0; /* hy_session_plan checked: some expert layer in RAM, or on NVMe */
    /* the VRAM cache over the NVMe tier: the stream object only loads the resident tensors
     * (a plan without the served ones: they load into the cache's buffer type) */
    bool vxn = vx && s->plan.mode == HY_MODE_EXPERT;
    hy_plan splan = s->plan;
    hy_tier *stier = NULL;
    if (vxn) {
        stier = malloc(sizeof *stier * (size_t)(s->desc->n_tensors + 1));
        if (!stier) return hy_fail(err, errlen, "out of memory");
        for (int64_t i = 0; i < s->desc->n_tensors; i++)
            stier[i] = hy_vxc_serves(s->desc, &s->plan, i) ? HY_TIER_GPU : s->plan.tier[i]; /* not the stream's */
        splan.tier = stier;
        splan.mode = HY_MODE_RESIDENT;
        splan.pool_bytes = 0;
    }
    /* Full-resident with repacking and no GPU: the tensors libllama would repack
     * go to HYPURA_REPACK (its layout and kernels, our memory and reads), the
     * rest to the RAM tier; libllama's own load path (load mode none) staged
     * every repacked tensor in fresh memory several times over (issue 12). */
    signed char *cls = NULL;
    ggml_backend_buffer_type_t repack_real = NULL;
    /* Streaming with --repack (asked for, never automatic): the tensors that stay
     * resident and that libllama would repack go to HYPURA_REPACK too; streamed
     * ones stay plain (they are read afresh every pass). ggml's repacked Q4_K
     * kernels share the unpacking among 4 rows (a GEMM): a batched step of 8-32
     * rows computes those weights ~1.8x faster here (2 cores, AVX2). The logits
     * then equal no resident run's (its streamed tensors would be repacked too). */
    bool repack_streamed = streams && !gpu && !s->rpc && p->repack > 0 && !vx;
    /* one more sequence for the batcher's holding sequence (hy_batch.h); a server of
     * one sequence needs it too when repacked weights stream (it pads every step) */
    ep.n_seq_max = p->n_seq > 1 || (p->n_seq == 1 && repack_streamed) ? p->n_seq + 1 : 1;
    if ((!streams && !gpu && p->repack != 0 && !vx) || repack_streamed) {
        cls = malloc((size_t)s->desc->n_tensors + 1);
        if (cls && hy_place_repack_classes(s->desc, cls, &repack_real)) repack_real = NULL; /* libllama's own way */
        if (cls && repack_real && streams)
            for (int64_t i = 0; i < s->desc->n_tensors; i++) {
                if (s->plan.tier[i] == HY_TIER_NVME) cls[i] = HY_TIER_NVME;
                else if (cls[i] == HY_PLACE_LIBLLAMA) cls[i] = HY_PLACE_HOST; /* our RAM tier, as without repacking */
            }
    }
    ggml_backend_buffer_type_t buft[HY_TIER_COUNT] = {0};
    if (gpu) {
        ep.gpu = hy_place_gpu_device();
        if (!ep.gpu) return hy_fail(err, errlen, "the plan uses a GPU, but ggml finds none");
        buft[HY_TIER_GPU] = ggml_backend_dev_buffer_type(ep.gpu);
        /* libllama's "GPU layers" are the last ones, and the output head counts as one more */
        ep.n_gpu_layers = s->plan.gpu_layers + 1;
    }
    if (streams || p->repack == 0 || repack_real || (vx && !gpu)) {
        ep.repack = repack_real != NULL; /* tensors left to libllama (HY_PLACE_LIBLLAMA) are repacked as it likes */
        hy_stream_params sp = hy_stream_default_params();
        sp.model_path = p->model_path;
        sp.desc = s->desc;
        sp.plan = vxn ? &splan : &s->plan;
        sp.lookahead = p->lookahead;
        sp.io.backend = p->io_backend;
        sp.pagecache = p->pagecache;
        if (p->pagecache && s->plan.mode != HY_MODE_EXPERT)
            return hy_fail(err, errlen, "--io pagecache is for expert-streaming (a MoE model that does not fit)");
        sp.cache_policy = s->cache_policy;
        sp.prefetch_experts = !p->no_expert_prefetch;
        sp.persist_stats = !p->no_persist_stats && !getenv("HYPURA_NO_PERSIST_STATS");
        sp.repack = repack_real;
        int src = hy_stream_create(&sp, &s->stream, err, errlen);
        free(stier); /* the stream keeps no pointer to its plan's tiers once created */
        stier = NULL;
        if (src) {
            free(cls);
            return -1;
        }
        buft[HY_TIER_NVME] = hy_stream_nvme_buft(s->stream);
        buft[HY_TIER_RAM] = hy_stream_ram_buft(s->stream);
        if (streams) {
            ep.cb_eval = hy_stream_eval_cb;
            ep.cb_eval_user_data = s->stream;
            ep.abort_cb = hy_stream_abort_cb;
            ep.abort_cb_data = s->stream;
        }
        /* both runs of an identity comparison compute host-resident weights on the CPU */
        ep.no_op_offload = true;
        ep.use_mmap = true; /* required: see hy_stream.h */
        ep.lazy_load = true;
    } else if (gpu) {
        /* full-resident with a GPU tier: the rest in libllama's CPU buffers. A
         * dense model's CPU weights are repacked, which needs them out of the
         * GPU's pinned host buffers (llama.cpp's --no-host): ~17 % faster decode
         * than the pinned, plain layout (H100 machine, 10 GiB dense, 39 CPU
         * layers). A MoE's stay pinned and plain, as llama.cpp's default puts
         * them: repacked mul_mat_id decoded ~6 % slower there (19.4 GiB MoE,
         * 27 CPU layers). */
        buft[HY_TIER_RAM] = ggml_backend_cpu_buffer_type();
        ep.no_host = s->desc->n_expert <= 1;
    }
    /* the VRAM expert cache: its tensors load into its pinned host buffer type (placed
     * as a tier of their own), move to its device arenas once loaded, and its eval
     * callback serves their matmuls */
    hy_plan vplan = s->plan;
    hy_tier *vtier = NULL;
    if (vx) {
        ggml_backend_dev_t dev = gpu ? ep.gpu : ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
        hy_vxc_params vp = {.desc = s->desc,
                            .plan = &s->plan,
                            .dev = dev,
                            .bytes = s->xcache_bytes,
                            .policy = s->cache_policy,
                            .freq = s->expert_freq,
                            .freq_tokens = s->expert_stats_tokens,
                            .persist_stats = !p->no_persist_stats && !getenv("HYPURA_NO_PERSIST_STATS")};
        if (vxn) {
            vp.model_path = p->model_path;
            vp.ram_bytes = s->plan.pool_bytes; /* the expert cache the plan sized within the memory budget */
            vp.io = hy_io_default_params();
            vp.io.backend = p->io_backend;
        }
        vtier = malloc(sizeof *vtier * (size_t)(s->desc->n_tensors + 1));
        if (!vtier) {
            free(cls);
            return hy_fail(err, errlen, "out of memory");
        }
        if (hy_vxc_create(&vp, &s->vxc, err, errlen)) {
            free(cls);
            free(vtier);
            return -1;
        }
        for (int64_t i = 0; i < s->desc->n_tensors; i++)
            vtier[i] = hy_vxc_serves(s->desc, &s->plan, i) ? HY_TIER_NVME : s->plan.tier[i];
        vplan.tier = vtier;
        buft[HY_TIER_NVME] = hy_vxc_host_buft(s->vxc);
        ep.cb_eval = hy_vxc_eval_cb;
        ep.cb_eval_user_data = s->vxc;
        ep.abort_cb = hy_vxc_abort_cb;
        ep.abort_cb_data = s->vxc;
        ep.model_loaded = session_vxc_attach;
        ep.model_loaded_ud = s->vxc;
    }
    int rc = 0;
    if (repack_real)
        rc = hy_place_make_classes(s->desc, cls, buft[HY_TIER_RAM], hy_stream_repack_buft(s->stream),
                                   streams ? buft[HY_TIER_NVME] : NULL, &s->place, err, errlen);
    else if (gpu || s->stream) rc = hy_place_make(s->desc, &vplan, buft, &s->place, err, errlen);
    free(cls);
    free(vtier);
    if (rc) return -1;
    if (s->place) ep.overrides = hy_place_overrides(s->place);
    if (hy_session_rpc_engine(s, &ep, err, errlen)) return -1;
    if (s->stream) {
        /* the resident tensors' fills finish inside the load (and its time) */
        ep.loaded = session_loaded;
        ep.loaded_ud = s->stream;
    }
    uint64_t rb0 = hy_io_read_bytes();
    if (hy_engine_open(&ep, &s->engine, err, errlen)) {
        const char *why = hy_stream_error(s->stream);
        if (why) hy_fail(err, errlen, "%s", why);
        return -1;
    }
    s->load_read_bytes = hy_io_read_bytes() - rb0;
    hy_session_rpc_loaded(s, p);
    if (s->stream) hy_stream_load_bytes(s->stream, &s->load_cached_bytes, &s->load_direct_bytes);
    return 0;
}

int hy_session_open(const hy_session_params *p, hy_session **out, char *err, size_t errlen) {
    *out = NULL;
    hy_session *s = NULL;
    if (hy_session_plan(p, &s, err, errlen)) return -1;
    if (hy_session_load(s, p, err, errlen)) {
        hy_session_free(s);
        return -1;
    }
    *out = s;
    return 0;
}

void hy_session_free(hy_session *s) {
    if (!s) return;
    hy_engine_free(s->engine); /* before the stream: the model owns buffers of its type */
    hy_stream_free(s->stream);
    hy_vxc_free(s->vxc);
    hy_place_free(s->place);
    hy_session_rpc_free(s);
    hy_plan_free(&s->plan);
    hy_model_desc_free(s->desc);
    free(s->expert_freq);
    free(s->spec_model);
    free(s);
}

/* where expert-streaming's expected hit rate comes from, for humans */
static void hit_source(const hy_session *s, char *buf, size_t len) {
    if (s->plan.pred_hit_measured)
        snprintf(buf, len, "from this model's routing statistics: %llu tokens in %s",
                 (unsigned long long)s->expert_stats_tokens, s->expert_stats_path);
    else if (s->expert_stats_error[0])
        snprintf(buf, len, "routing prior assumed (popularity ~ rank^-0.5): the statistics in %s are not usable: %s", s->expert_stats_path,
                 s->expert_stats_error);
    else if (s->expert_stats_path[0])
        snprintf(buf, len, "routing prior assumed (popularity ~ rank^-0.5): no routing statistics for this model yet; runs keep them in %s",
                 s->expert_stats_path);
    else
        snprintf(buf, len, "routing prior assumed (popularity ~ rank^-0.5): routing statistics not used");
}

/* the plan's "predicted:" line: tok/s, both sides and what each was charged */
static void print_prediction(FILE *f, const hy_session *s) {
    const hy_plan *pl = &s->plan;
    char a[32], b[32];
    fprintf(f, "  predicted: %.2f tok/s, bound by %s | I/O %.3f s per token", pl->pred_tok_s,
            pl->pred_io_bound ? "I/O" : "memory", pl->pred_io_s);
    const hy_calib *rb = &s->calib_read[pl->mode];
    if (pl->mode == HY_MODE_EXPERT && pl->pred_io_s > 0 && s->calib_wait.runs)
        fprintf(f, ", %.3f s of it waited for (x%.2f as %d earlier run%s of %s measured)", pl->pred_io_wait_s,
                s->calib_wait.scale, s->calib_wait.runs, s->calib_wait.runs > 1 ? "s" : "",
                s->calib_wait.per_model ? "this model" : "other models here");
    if (pl->pred_io_bytes && !pl->pred_read_assumed && rb->runs)
        fprintf(f, " (%s at %.2f GB/s: the profile's %.2f x%.2f as %d earlier %s run%s read)",
                hy_fmt_bytes(pl->pred_io_bytes, a, sizeof a), pl->pred_read_gbps, s->plan_params.seq_read_gbps,
                pl->pred_read_scale, rb->runs, hy_mode_name(s->calib_read_from[pl->mode]), rb->runs > 1 ? "s" : "");
    else if (pl->pred_io_bytes)
        fprintf(f, " (%s at %.2f GB/s %s)", hy_fmt_bytes(pl->pred_io_bytes, a, sizeof a), pl->pred_read_gbps,
                pl->pred_read_assumed ? "assumed, not measured: no storage profile" : "measured");
    fprintf(f, " | memory %.3f s per token (%s at %.1f GB/s %s", pl->pred_compute_s,
            hy_fmt_bytes(pl->pred_compute_bytes, b, sizeof b), pl->pred_mem_gbps,
            pl->pred_mem_assumed ? "assumed, not measured"
            : pl->pred_mem_matvec ? "measured: matrix-vector products of its weight types"
                                  : "measured: memcpy");
    if (pl->pred_thread_scale < 1)
        fprintf(f, ", x%.2f on %d of the profile's %d threads", pl->pred_thread_scale, s->plan_params.threads,
                s->plan_params.profile_threads);
    if (pl->pred_gpu_bytes)
        fprintf(f, " + %s on the GPU at %.0f GB/s assumed", hy_fmt_bytes(pl->pred_gpu_bytes, a, sizeof a),
                HY_PLAN_ASSUMED_GPU_GBPS);
    if (pl->pred_pieces)
        fprintf(f, " + %llu pieces of the graph at %.0f us", (unsigned long long)pl->pred_pieces,
                s->plan_params.piece_s * 1e6);
    const hy_calib *cb = &s->calib[pl->mode];
    if (cb->runs)
        fprintf(f, ", x%.2f as %d earlier %s run%s of %s measured", pl->pred_compute_scale, cb->runs,
                hy_mode_name(pl->mode), cb->runs > 1 ? "s" : "", cb->per_model ? "this model" : "other models here");
    else if (pl->pred_compute_scale != 1)
        fprintf(f, ", x%.2f: %s's prior until a run here measures it", pl->pred_compute_scale, hy_mode_name(pl->mode));
    fprintf(f, ")\n");
}

void hy_session_print_plan(FILE *f, const hy_session *s, bool tensors) {
    const hy_plan *pl = &s->plan;
    const hy_plan_params *q = &s->plan_params;
    char a[32], b[32], c[32], d[32], e[32];
    fprintf(f, "plan: %s  (model %s, budget %s)\n", hy_mode_name(pl->mode),
            hy_fmt_bytes(s->desc->file_size, a, sizeof a), hy_fmt_bytes(q->mem_budget, b, sizeof b));
    if (pl->mode_why[0]) fprintf(f, "  why: %s\n", pl->mode_why);
    if (s->draft_bytes)
        fprintf(f, "  draft model: %s resident (weights, KV, compute), charged before the target's budget\n",
                hy_fmt_bytes(s->draft_bytes, a, sizeof a));
    if (s->draft_why[0]) fprintf(f, "  speculative: %s\n", s->draft_why);
    if (pl->mode == HY_MODE_EXPERT)
        fprintf(f, "  cache policy: %s (%s)\n", hy_xcache_policy_name((hy_xc_policy)s->cache_policy),
                s->cache_policy_why);
    fprintf(f, "  tiers: GPU %s | RAM %s | NVMe %s\n", hy_fmt_bytes(pl->bytes_tier[HY_TIER_GPU], a, sizeof a),
            hy_fmt_bytes(pl->bytes_tier[HY_TIER_RAM], b, sizeof b),
            hy_fmt_bytes(pl->bytes_tier[HY_TIER_NVME], c, sizeof c));
    char seqs[64] = "";
    if (s->n_seq > 1) snprintf(seqs, sizeof seqs, " = %d sequences x %d", s->n_seq, q->n_ctx / s->n_seq);
    fprintf(f, "  fixed: KV %s (ctx %d%s) | compute %s (batch %d) | overhead %s\n", hy_fmt_bytes(pl->kv_bytes, a, sizeof a),
            q->n_ctx, seqs, hy_fmt_bytes(pl->compute_bytes, b, sizeof b), q->n_batch,
            hy_fmt_bytes(pl->overhead_bytes, c, sizeof c));
    if (pl->gpu_output) {
        /* layers with FFN/expert tensors on the GPU: one pass over the tensors */
        int ffn_layers = 0;
        bool *on = calloc((size_t)s->desc->n_layer, sizeof *on);
        for (int64_t i = 0; on && i < s->desc->n_tensors; i++) {
            const hy_tensor_info *t = &s->desc->tensors[i];
            if (t->layer < 0 || t->layer >= s->desc->n_layer || on[t->layer] || pl->tier[i] != HY_TIER_GPU) continue;
            if (t->role != HY_ROLE_FFN && t->role != HY_ROLE_EXPERT) continue;
            on[t->layer] = true;
            ffn_layers++;
        }
        free(on);
        fprintf(f, "  GPU: %s: output head, attention + K/V of %d of %d layers, %s of %d layers; uses %s of %s "
                   "(K/V %s, compute %s)\n",
                s->profile.n_gpu > 0 ? s->profile.gpu[0].name : "none here (what-if)", pl->gpu_layers, s->desc->n_layer,
                s->desc->n_expert > 1 ? "experts" : "FFN (whole or part)", ffn_layers,
                hy_fmt_bytes(pl->gpu_used, a, sizeof a), hy_fmt_bytes(q->gpu_budget, b, sizeof b),
                hy_fmt_bytes(pl->gpu_kv_bytes, c, sizeof c), hy_fmt_bytes(pl->gpu_compute_bytes, d, sizeof d));
    } else if (q->gpu_budget) {
        fprintf(f, "  GPU: budget %s is too small for the output head and compute buffer; not used\n",
                hy_fmt_bytes(q->gpu_budget, a, sizeof a));
    }
    if (pl->mode == HY_MODE_EXPERT)
        fprintf(f, "  experts: %d layers of %d experts (top-%d) on NVMe; expert cache %s: %d experts (%.1f per layer, "
                   "%.0f%% of them; %s per slot); %s routed per token before caching\n",
                pl->n_groups, s->desc->n_expert, s->desc->n_expert_used, hy_fmt_bytes(pl->pool_bytes, a, sizeof a),
                pl->x_slots, pl->n_groups ? (double)pl->x_slots / pl->n_groups : 0.0,
                pl->n_groups ? 100.0 * pl->x_slots / ((double)pl->n_groups * s->desc->n_expert) : 0.0,
                hy_fmt_bytes(pl->x_slot_bytes, c, sizeof c), hy_fmt_bytes(pl->io_bytes_per_token, b, sizeof b));
    else if (pl->mode != HY_MODE_RESIDENT)
        fprintf(f, "  streaming: %d layer groups, pool %s (lookahead %d, largest group %s), %s read per token\n",
                pl->n_groups, hy_fmt_bytes(pl->pool_bytes, a, sizeof a), pl->lookahead,
                hy_fmt_bytes(pl->max_group_bytes, b, sizeof b), hy_fmt_bytes(pl->io_bytes_per_token, c, sizeof c));
    fprintf(f, "  memory: uses %s of %s; minimum budget for this model %s\n",
            hy_fmt_bytes(pl->budget_used, d, sizeof d), hy_fmt_bytes(q->mem_budget, e, sizeof e),
            hy_fmt_bytes(pl->min_budget, a, sizeof a));
    if (pl->mode == HY_MODE_EXPERT) {
        char src[4500];
        hit_source(s, src, sizeof src);
        fprintf(f, "  expert cache: %llu slots = %.1f of %d experts per layer; expected hit rate %.1f%% (%s)\n",
                (unsigned long long)pl->cache_slots, pl->cache_slots_per_layer, s->desc->n_expert,
                100.0 * pl->pred_hit_rate, src);
        fprintf(f, "  expert I/O per token: %s routed, %s expected from storage after cache hits\n",
                hy_fmt_bytes(pl->io_bytes_per_token, a, sizeof a), hy_fmt_bytes(pl->pred_io_bytes, b, sizeof b));
    }
    if (s->xcache_bytes) {
        double hit = s->xcache_hit;
        uint64_t routed = s->xcache_routed;
        char src[4500];
        if (s->expert_freq && s->expert_stats_tokens) /* the plan's own flag is set by expert-streaming only */
            snprintf(src, sizeof src, "from this model's routing statistics: %llu tokens in %s",
                     (unsigned long long)s->expert_stats_tokens, s->expert_stats_path);
        else
            hit_source(s, src, sizeof src);
        bool nv = pl->mode == HY_MODE_EXPERT;
        fprintf(f, "  VRAM expert cache: %s (--gpu-xcache, out of the GPU budget): %d layers whose experts stay off the GPU "
                   "(%s) compute on the GPU from %d of %d experts per layer; expected hit rate %.1f%% (%s)\n",
                hy_fmt_bytes(s->xcache_bytes, a, sizeof a), s->xcache_layers, nv ? "on NVMe" : "in pinned RAM", s->xcache_slots,
                s->desc->n_expert, 100.0 * hit, src);
        if (nv)
            fprintf(f, "    under it: RAM expert cache %s (%d experts, pinned; the plan's expert cache) over NVMe: %s per token "
                       "expected from storage (direct I/O)\n",
                    hy_fmt_bytes(pl->pool_bytes, a, sizeof a), hy_vxc_ram_slots_for(s->desc, pl, pl->pool_bytes, 4096),
                    hy_fmt_bytes(pl->pred_io_bytes, b, sizeof b));
        else
            fprintf(f, "    under it: the experts of those layers whole in pinned RAM (%s)\n",
                    hy_fmt_bytes(pl->bytes_tier[HY_TIER_RAM], a, sizeof a));
        fprintf(f, "    PCIe per token: %s routed, %s expected after hits\n", hy_fmt_bytes(routed, b, sizeof b),
                hy_fmt_bytes((uint64_t)((1.0 - hit) * (double)routed), c, sizeof c));
    } else if (s->xcache_why[0]) {
        fprintf(f, "  VRAM expert cache (--gpu-xcache auto): %s\n", s->xcache_why);
    }
    if (s->xcache_bytes && s->xcache_pred_ok) {
        const hy_plan_vxc_pred *xp = &s->xcache_pred;
        fprintf(f, "  predicted: %.2f tok/s with the VRAM expert cache (this plan's %.3f s per token less %.3f s of CPU "
                   "expert compute; + %.3f s copying %s over PCIe at %.0f GB/s assumed, %.3f s on the GPU at %.0f GB/s "
                   "assumed, %.3f s for %d layer synchronizations)%s%s\n",
                xp->tok_s, pl->pred_tok_s > 0 ? 1.0 / pl->pred_tok_s : 0.0, xp->cpu_saved_s, xp->pcie_s,
                hy_fmt_bytes((uint64_t)xp->pcie_bytes, a, sizeof a), HY_PLAN_ASSUMED_PCIE_GBPS, xp->gpu_s,
                HY_PLAN_ASSUMED_GPU_GBPS, xp->sync_s, s->xcache_layers, s->xcache_why[0] ? "\n  auto: " : "",
                s->xcache_why);
    } else if (s->xcache_bytes) fprintf(f, "  predicted: none (no prediction for the plan under the VRAM expert cache)\n");
    else if (s->pred_none) fprintf(f, "  predicted: none (%s)\n", s->pred_none);
    else print_prediction(f, s);
    hy_session_rpc_print(f, s);
    if (tensors) {
        for (int64_t i = 0; i < s->desc->n_tensors; i++) {
            const hy_tensor_info *t = &s->desc->tensors[i];
            fprintf(f, "  %-36s %-10s %5s %10s\n", t->name, hy_role_name(t->role), hy_tier_name(pl->tier[i]),
                    hy_fmt_bytes(t->size, a, sizeof a));
        }
    }
}

json_t *hy_session_prediction_json(const hy_session *s) {
    const hy_plan *pl = &s->plan;
    json_t *o = json_object();
    json_object_set_new(o, "tok_s", json_real(pl->pred_tok_s));
    if (s->pred_none) json_object_set_new(o, "none", json_string(s->pred_none));
    json_object_set_new(o, "bound", json_string(pl->pred_io_bound ? "io" : "memory"));
    json_object_set_new(o, "io_s", json_real(pl->pred_io_s));
    json_object_set_new(o, "io_wait_s", json_real(pl->pred_io_wait_s));
    json_object_set_new(o, "compute_s", json_real(pl->pred_compute_s));
    json_object_set_new(o, "io_bytes_per_token", json_integer((json_int_t)pl->pred_io_bytes));
    json_object_set_new(o, "compute_bytes_per_token", json_integer((json_int_t)pl->pred_compute_bytes));
    json_object_set_new(o, "gpu_bytes_per_token", json_integer((json_int_t)pl->pred_gpu_bytes));
    json_object_set_new(o, "gpu_s", json_real(pl->pred_gpu_s));
    json_object_set_new(o, "storage_gbps", json_real(pl->pred_read_gbps));
    json_object_set_new(o, "storage_measured", json_boolean(!pl->pred_read_assumed));
    json_object_set_new(o, "storage_scale", json_real(pl->pred_read_scale));
    json_object_set_new(o, "storage_scale_runs", json_integer(s->calib_read[pl->mode].runs));
    json_object_set_new(o, "storage_scale_mode", json_string(hy_mode_name(s->calib_read_from[pl->mode])));
    json_object_set_new(o, "memory_gbps", json_real(pl->pred_mem_gbps));
    json_object_set_new(o, "memory_measured", json_boolean(!pl->pred_mem_assumed));
    json_object_set_new(o, "memory_source",
                        json_string(pl->pred_mem_assumed ? "assumed" : pl->pred_mem_matvec ? "matvec" : "memcpy"));
    json_object_set_new(o, "compute_scale", json_real(pl->pred_compute_scale));
    json_object_set_new(o, "thread_scale", json_real(pl->pred_thread_scale));
    json_object_set_new(o, "graph_pieces", json_integer((json_int_t)pl->pred_pieces));
    json_object_set_new(o, "piece_s", json_real(s->plan_params.piece_s));
    const hy_calib *cb = &s->calib[pl->mode];
    json_object_set_new(o, "compute_scale_runs", json_integer(cb->runs));
    json_object_set_new(o, "compute_scale_source", json_string(cb->runs ? (cb->per_model ? "model" : "machine")
                                                               : pl->pred_compute_scale != 1 ? "prior"
                                                                                             : "none"));
    if (pl->mode == HY_MODE_EXPERT) {
        json_t *x = json_object();
        json_object_set_new(x, "slots", json_integer((json_int_t)pl->cache_slots));
        json_object_set_new(x, "slots_per_layer", json_real(pl->cache_slots_per_layer));
        json_object_set_new(x, "experts_per_layer", json_integer(s->desc->n_expert));
        json_object_set_new(x, "routed_bytes_per_token", json_integer((json_int_t)pl->io_bytes_per_token));
        json_object_set_new(x, "hit_rate", json_real(pl->pred_hit_rate));
        json_object_set_new(x, "hit_rate_source", json_string(pl->pred_hit_measured ? "statistics" : "prior"));
        json_object_set_new(x, "stats_tokens", json_integer((json_int_t)s->expert_stats_tokens));
        if (s->pred_gen_tokens) { /* made again when generation started */
            json_object_set_new(x, "generation_start_tokens", json_integer((json_int_t)s->pred_gen_tokens));
            json_object_set_new(o, "plan_tok_s", json_real(s->pred_tok_s_plan));
        }
        json_object_set_new(x, "stats_path", json_string(s->expert_stats_path));
        if (s->expert_stats_error[0]) json_object_set_new(x, "stats_error", json_string(s->expert_stats_error));
        json_object_set_new(o, "expert_cache", x);
    }
    return o;
}

void hy_session_predict_generation(hy_session *s) {
    const hy_model_desc *d = s->desc;
    if (s->plan.mode != HY_MODE_EXPERT || !s->stream || d->n_expert < 2 || d->n_layer < 1 || s->pred_none) return;
    size_t n = (size_t)d->n_layer * (size_t)d->n_expert;
    double *freq = malloc(n * sizeof *freq);
    uint64_t tokens = freq ? hy_stream_routing(s->stream, freq, n) : 0;
    hy_plan_params q = s->plan_params;
    q.expert_freq = freq;
    q.expert_freq_n = (int64_t)n;
    q.expert_freq_tokens = tokens;
    double before = s->pred_tok_s_plan > 0 ? s->pred_tok_s_plan : s->plan.pred_tok_s;
    if (tokens && hy_plan_predict(d, &q, &s->plan) == 0) {
        s->pred_tok_s_plan = before;
        s->pred_gen_tokens = tokens;
    }
    free(freq);
}

void hy_session_print_predicted(FILE *f, const hy_session *s, double gen_tps) {
    const hy_plan *pl = &s->plan;
    if (s->pred_none)
        fprintf(f, "[hypura] generation: no prediction (%s), measured %.2f tok/s", s->pred_none, gen_tps);
    else
        fprintf(f, "[hypura] generation: predicted %.2f tok/s (bound by %s%s), measured %.2f tok/s", pl->pred_tok_s,
                pl->pred_io_bound ? "I/O" : "memory",
                (pl->pred_io_bound ? pl->pred_read_assumed : pl->pred_mem_assumed) ? ", bandwidth assumed" : "",
                gen_tps);
    if (pl->pred_tok_s > 0 && gen_tps > 0) fprintf(f, " (%.2fx the prediction)", gen_tps / pl->pred_tok_s);
    if (s->pred_gen_tokens)
        fprintf(f, "; predicted when generation started, from the routing of %llu tokens (kept and this prompt's); "
                   "the plan's before the run: %.2f tok/s",
                (unsigned long long)s->pred_gen_tokens, s->pred_tok_s_plan);
    if (pl->mode == HY_MODE_EXPERT && s->stream) {
        hy_stream_stats st;
        hy_stream_get_stats(s->stream, &st);
        uint64_t acc = st.x_hits + st.x_misses;
        fprintf(f, "; expert cache hits: predicted %.1f%% (%s), measured ", 100.0 * pl->pred_hit_rate,
                pl->pred_hit_measured ? "statistics" : "prior");
        if (acc) fprintf(f, "%.1f%%", 100.0 * st.x_hits / acc);
        else fprintf(f, "n/a");
    }
    fputc('\n', f);
}

char *hy_session_plan_json(const hy_session *s, bool tensors) {
    const hy_plan *pl = &s->plan;
    const hy_plan_params *q = &s->plan_params;
    json_t *o = json_object();
    json_object_set_new(o, "model", json_string(s->desc->path));
    json_object_set_new(o, "mode", json_string(hy_mode_name(pl->mode)));
    json_object_set_new(o, "memory_budget", json_integer((json_int_t)q->mem_budget));
    json_object_set_new(o, "gpu_budget", json_integer((json_int_t)q->gpu_budget));
    json_object_set_new(o, "n_ctx", json_integer(q->n_ctx));
    json_object_set_new(o, "n_seq", json_integer(s->n_seq));
    json_object_set_new(o, "n_batch", json_integer(q->n_batch));
    json_t *tiers = json_object();
    for (int t = 0; t < HY_TIER_COUNT; t++)
        json_object_set_new(tiers, hy_tier_name((hy_tier)t), json_integer((json_int_t)pl->bytes_tier[t]));
    json_object_set_new(o, "bytes_per_tier", tiers);
    json_object_set_new(o, "kv_bytes", json_integer((json_int_t)pl->kv_bytes));
    json_object_set_new(o, "gpu_layers", json_integer(pl->gpu_layers));
    json_object_set_new(o, "gpu_used", json_integer((json_int_t)pl->gpu_used));
    json_object_set_new(o, "gpu_kv_bytes", json_integer((json_int_t)pl->gpu_kv_bytes));
    json_object_set_new(o, "compute_bytes", json_integer((json_int_t)pl->compute_bytes));
    json_object_set_new(o, "overhead_bytes", json_integer((json_int_t)pl->overhead_bytes));
    json_object_set_new(o, "pool_bytes", json_integer((json_int_t)pl->pool_bytes));
    json_object_set_new(o, "mode_why", json_string(pl->mode_why));
    json_object_set_new(o, "lookahead", json_integer(pl->lookahead));
    json_object_set_new(o, "stream_groups", json_integer(pl->n_groups));
    json_object_set_new(o, "io_bytes_per_token", json_integer((json_int_t)pl->io_bytes_per_token));
    json_object_set_new(o, "budget_used", json_integer((json_int_t)pl->budget_used));
    json_object_set_new(o, "min_budget", json_integer((json_int_t)pl->min_budget));
    json_object_set_new(o, "predicted_tok_s", json_real(pl->pred_tok_s));
    json_object_set_new(o, "storage_gbps", json_real(pl->pred_read_gbps));
    json_object_set_new(o, "storage_measured", json_boolean(!pl->pred_read_assumed));
    json_object_set_new(o, "prediction", hy_session_prediction_json(s));
    if (s->xcache_bytes || s->xcache_why[0]) { /* the VRAM expert cache (--gpu-xcache) */
        json_t *x = json_object();
        json_object_set_new(x, "bytes", json_integer((json_int_t)s->xcache_bytes));
        if (s->xcache_bytes) {
            json_object_set_new(x, "layers", json_integer(s->xcache_layers));
            json_object_set_new(x, "slots_per_layer", json_integer(s->xcache_slots));
            json_object_set_new(x, "expected_hit_rate", json_real(s->xcache_hit));
            json_object_set_new(x, "routed_bytes_per_token", json_integer((json_int_t)s->xcache_routed));
            json_object_set_new(x, "tier_under", json_string(pl->mode == HY_MODE_EXPERT ? "ram+nvme" : "ram"));
        }
        if (s->xcache_pred_ok) {
            const hy_plan_vxc_pred *xp = &s->xcache_pred;
            json_object_set_new(x, "pred_tok_s", json_real(xp->tok_s));
            json_object_set_new(x, "pcie_bytes_per_token", json_real(xp->pcie_bytes));
            json_object_set_new(x, "nvme_bytes_per_token", json_real(xp->nvme_bytes));
            json_object_set_new(x, "gpu_path_s", json_real(xp->pcie_s + xp->gpu_s + xp->sync_s));
            json_object_set_new(x, "cpu_path_s", json_real(xp->cpu_alt_s));
            json_object_set_new(x, "pays", json_boolean(xp->pays));
        }
        if (s->xcache_why[0]) json_object_set_new(x, "auto", json_string(s->xcache_why));
        json_object_set_new(o, "vram_xcache", x);
    }
    if (s->rpc) json_object_set_new(o, "remote", hy_session_rpc_json(s));
    if (tensors) {
        json_t *arr = json_array();
        for (int64_t i = 0; i < s->desc->n_tensors; i++) {
            json_t *t = json_object();
            json_object_set_new(t, "name", json_string(s->desc->tensors[i].name));
            json_object_set_new(t, "role", json_string(hy_role_name(s->desc->tensors[i].role)));
            json_object_set_new(t, "tier", json_string(hy_tier_name(pl->tier[i])));
            json_object_set_new(t, "bytes", json_integer((json_int_t)s->desc->tensors[i].size));
            json_array_append_new(arr, t);
        }
        json_object_set_new(o, "tensors", arr);
    }
    char *txt = json_dumps(o, JSON_INDENT(2));
    json_decref(o);
    return txt;
}

void hy_session_print_stats(FILE *f, const hy_session *s, double seconds) {
    char a[32], b[32], c[32];
    uint64_t peak = hy_peak_rss(), cg = hy_cgroup_peak();
    if (s->vxc) {
        hy_vxc_stats v;
        hy_vxc_get_stats(s->vxc, &v);
        uint64_t sel = v.hits + v.misses;
        fprintf(f, "[hypura] VRAM expert cache: %d layers x %d slots (%s on the device); decode selections %llu, "
                   "hit rate %.1f%%; copied %s host->device (%s per token over %llu tokens); layer passes: %llu from "
                   "slots, %llu batched through the whole-layer area\n",
                v.layers, v.slots, hy_fmt_bytes(v.device_bytes, a, sizeof a), (unsigned long long)sel,
                sel ? 100.0 * (double)v.hits / (double)sel : 0.0, hy_fmt_bytes(v.h2d_bytes, b, sizeof b),
                hy_fmt_bytes(v.tokens ? v.h2d_bytes / v.tokens : 0, c, sizeof c), (unsigned long long)v.tokens,
                (unsigned long long)v.slot_passes, (unsigned long long)v.w_passes);
        if (v.preload_ram || v.preload_vram) {
            char r[96] = "";
            if (v.nvme)
                snprintf(r, sizeof r, "%d experts into the RAM expert cache (%s read), ", v.preload_ram,
                         hy_fmt_bytes(v.preload_bytes, a, sizeof a));
            fprintf(f, "[hypura] filled ahead from the routing statistics at load: %s%d experts into the VRAM windows, %.2f s\n",
                    r, v.preload_vram, v.preload_s);
        }
        if (v.nvme) {
            uint64_t r = v.ram_hits + v.ram_misses;
            fprintf(f, "[hypura] under it: RAM expert cache %d experts (%s pinned), %.1f%% of the copies served from it; "
                       "read %s from NVMe (%s per token, %s%s), %.2f s waiting for reads\n",
                    v.ram_slots, hy_fmt_bytes(v.ram_bytes, a, sizeof a), r ? 100.0 * (double)v.ram_hits / (double)r : 0.0,
                    hy_fmt_bytes(v.nvme_bytes, b, sizeof b), hy_fmt_bytes(v.tokens ? v.nvme_bytes / v.tokens : 0, c, sizeof c),
                    v.io_backend ? v.io_backend : "?", v.direct ? ", O_DIRECT" : ", buffered", v.nvme_wait_s);
        }
    }
    if (s->stream && s->plan.mode != HY_MODE_RESIDENT && !s->vxc) { /* a resident run's stream object only loads */
        hy_stream_stats st;
        hy_stream_get_stats(s->stream, &st);
        /* per pass (one decoded batch: the prompt's, then one per token), as the plan's "read per token";
         * the load's reads of resident weights are not counted */
        double per_pass = st.passes > 0 ? (double)st.bytes_read / (double)st.passes : 0;
        fprintf(f, "[hypura] streamed %s in %llu passes (%s per pass), I/O %.2f GB/s while busy, "
                   "stalls %.2f s of %.2f s, lookahead %d, pool peak %s, %s%s\n",
                hy_fmt_bytes(st.bytes_read, a, sizeof a), (unsigned long long)st.passes,
                hy_fmt_bytes((uint64_t)per_pass, b, sizeof b),
                st.io_busy_s > 0 ? st.bytes_read / st.io_busy_s / 1e9 : 0.0, st.stall_s, seconds, st.lookahead,
                hy_fmt_bytes(st.committed_peak, c, sizeof c), st.io_backend, st.direct ? ", O_DIRECT" : ", buffered");
        if (st.experts) {
            uint64_t acc = st.x_hits + st.x_misses;
            char e_[32];
            fprintf(f,
                    "[hypura] experts: %llu routed slices, %.1f%% cache hits (%llu of them prefetched), %llu misses, "
                    "%llu evictions, cache %d of %d experts, %s of %s (%s)\n",
                    (unsigned long long)acc, acc ? 100.0 * st.x_hits / acc : 0.0, (unsigned long long)st.x_prefetch_hits,
                    (unsigned long long)st.x_misses, (unsigned long long)st.x_evictions, st.x_slots_used, st.x_slots,
                    hy_fmt_bytes(st.x_cache_bytes, a, sizeof a), hy_fmt_bytes(st.x_cache_capacity, b, sizeof b),
                    st.x_policy);
            if (st.x_shadow_accesses)
                fprintf(f, "[hypura] cache policies replayed on this run's %llu accesses: LFU %.1f%%, LRU %.1f%% hits "
                           "(kept for the automatic choice)\n",
                        (unsigned long long)st.x_shadow_accesses, 100.0 * st.x_shadow_hits[0] / st.x_shadow_accesses,
                        100.0 * st.x_shadow_hits[1] / st.x_shadow_accesses);
            uint64_t resolved = st.x_prefetch_hits + st.x_prefetch_wasted;
            fprintf(f, "[hypura] expert prefetch: %llu issued, %llu used, %llu evicted unused (accuracy %.1f%%)%s\n",
                    (unsigned long long)st.x_prefetches, (unsigned long long)st.x_prefetch_hits,
                    (unsigned long long)st.x_prefetch_wasted, resolved ? 100.0 * st.x_prefetch_hits / resolved : 0.0,
                    st.x_prefetch_off ? "; turned off: it guessed wrong more often than right" : "");
            fprintf(f,
                    "[hypura] expert I/O: whole expert tensors would read %s, the routed slices are %s (%.1f%% less), "
                    "read with the cache %s (%.1f%% less)\n",
                    hy_fmt_bytes(st.x_whole_bytes, a, sizeof a), hy_fmt_bytes(st.x_routed_bytes, b, sizeof b),
                    st.x_whole_bytes ? 100.0 * (1.0 - (double)st.x_routed_bytes / (double)st.x_whole_bytes) : 0.0,
                    hy_fmt_bytes(st.bytes_read, e_, sizeof e_),
                    st.x_whole_bytes ? 100.0 * (1.0 - (double)st.bytes_read / (double)st.x_whole_bytes) : 0.0);
        }
    }
    fprintf(f, "[hypura] load read %s from storage (resident weights %s)",
            hy_fmt_bytes(s->load_read_bytes, a, sizeof a),
            hy_fmt_bytes(s->plan.bytes_tier[HY_TIER_RAM] + s->plan.bytes_tier[HY_TIER_GPU], b, sizeof b));
    if (s->load_cached_bytes) fprintf(f, ", %s of them copied from the page cache", hy_fmt_bytes(s->load_cached_bytes, c, sizeof c));
    fputc('\n', f);
    fprintf(f, "[hypura] peak memory: process %s", hy_fmt_bytes(peak, a, sizeof a));
    if (cg) fprintf(f, ", cgroup %s", hy_fmt_bytes(cg, b, sizeof b));
    fprintf(f, " (budget %s)\n", hy_fmt_bytes(s->plan_params.mem_budget, c, sizeof c));
}

uint64_t hy_cgroup_peak(void) {
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return 0;
    char line[1024], v1[900] = "", v2[900] = "";
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *p1 = strchr(line, ':');
        char *p2 = p1 ? strchr(p1 + 1, ':') : NULL;
        if (!p2) continue;
        *p2 = 0;
        if (!strcmp(p1 + 1, "memory")) snprintf(v1, sizeof v1, "%s", p2 + 1);
        else if (p1[1] == 0) snprintf(v2, sizeof v2, "%s", p2 + 1);
    }
    fclose(f);
    char path[1100];
    unsigned long long v = 0;
    if (v1[0] && strcmp(v1, "/")) snprintf(path, sizeof path, "/sys/fs/cgroup/memory%s/memory.max_usage_in_bytes", v1);
    else if (v2[0] && strcmp(v2, "/")) snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.peak", v2);
    else return 0;
    f = fopen(path, "r");
    if (!f) return 0;
    if (fscanf(f, "%llu", &v) != 1) v = 0;
    fclose(f);
    return (uint64_t)v;
}
