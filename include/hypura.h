/* hypura: the public C API — open a model with a placement plan and generate.
 *
 * A session runs the whole pipeline once: read the GGUF header, profile the
 * machine (cached), make the plan (pure), set up the NVMe tier for what the plan
 * streams, and load the model through libllama with that placement. Budgets
 * follow the precedence flags > HYPURA_* environment > profile defaults.
 *
 * Invariant: the plan decides where bytes live, never what is computed; any
 * mode's logits equal full-resident's for the same file, build and kernels. */
#ifndef HYPURA_H
#define HYPURA_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/hy_engine.h"
#include "gguf/hy_gguf.h"
#include "plan/hy_plan.h"
#include "profile/hy_calib.h"
#include "profile/hy_profile.h"
#include "stream/hy_stream.h"

typedef struct {
    const char *model_path;
    uint64_t mem_budget;   /* 0: HYPURA_MEMORY_BUDGET, else the profile's default */
    uint64_t gpu_budget;   /* 0: HYPURA_GPU_BUDGET, else the first GPU's free memory less headroom
                              (hy_session_gpu_default); HY_GPU_NONE: no GPU tier */
    uint64_t gpu_xcache;   /* > 0: an expert cache in VRAM of this size, out of the GPU budget (hy_vxc.h);
                              HY_XCACHE_AUTO: what the GPU budget leaves besides the non-expert weights */
    int  lookahead;        /* < 0: automatic */
    int  mode;             /* < 0: automatic; else hy_mode */
    int  io_backend;       /* HY_IO_AUTO, HY_IO_URING, HY_IO_PREAD */
    bool pagecache;        /* expert-streaming through the page cache (mmap + MADV_WILLNEED) instead of direct I/O */
    bool no_profile_storage; /* use a bandwidth guess instead of measuring storage */
    bool plan_only;        /* nothing will load (estimate): a GPU budget is planned also where
                              there is no GPU, as a what-if */
    int  repack;           /* < 0 auto: on when full-resident (llama.cpp's default kernels), off when
                              streaming (streamed tensors cannot be repacked; resident ones are kept
                              unpacked too, so a streamed run equals a resident --no-repack run bit
                              for bit); 0 off; 1 on (streaming: the tensors kept resident are
                              repacked, the streamed ones stay plain; no resident run computes
                              the same bits then) */
    int  cache_policy;     /* expert cache: < 0 automatic (the policy this model's earlier runs measured
                              hitting more, else decayed LFU: src/cache/hy_policy.h), 0 decayed LFU, 1 LRU */
    bool no_expert_prefetch; /* no prefetch of the next layer's experts */
    bool no_persist_stats;   /* neither load nor save co-activation statistics */
    int  n_seq;            /* sequences decoded together (serve's --parallel); <= 1: one. The context
                              (engine.n_ctx) is their total, the compute buffer is planned for a batch
                              of at least n_seq + 1 tokens, and the engine gets one KV cache for all */
    hy_engine_params engine; /* model_path, cb_eval, overrides, abort are filled by the session */
    const char *draft_path;  /* a draft model for speculative decoding (hy_spec.h), or NULL: the plan charges
                                its resident weights, KV (n_ctx) and compute against the memory budget first;
                                the caller opens it (hy_spec_open_draft) */
    double draft_accept;     /* the acceptance the plan expects of the draft when deciding whether drafting pays
                                (hy_spec.h's model); 0: HY_SPEC_ACCEPT_PRIOR */
    bool   draft_always;     /* keep the draft whatever the model predicts (--draft-fixed) */
    int    draft_max;        /* most tokens drafted per round, as the model may choose (0: 8, --draft-max) */
    /* remote tiers (hy_session_rpc.h): endpoints "HOST:PORT[@SIZE],..." (NULL: HYPURA_RPC), an assumed
     * link for the plan ("1gbe", "10gbe", "25gbe", "RTT_US,GBPS"), devices on paper for estimate
     * ("SIZE,..."), and whether a lost endpoint is dropped (serve) rather than fatal */
    const char *rpc;
    const char *rpc_link;
    const char *rpc_assume;
    bool   rpc_keep_going;
} hy_session_params;

#define HY_GPU_NONE UINT64_MAX
#define HY_XCACHE_AUTO UINT64_MAX
/* A GPU budget as the flag and HYPURA_GPU_BUDGET take it: "0" or "none" is
 * HY_GPU_NONE, else a size > 0 ("1.5G"); false when it is neither. */
bool hy_gpu_budget_parse(const char *s, uint64_t *out);

hy_session_params hy_session_default_params(void);

typedef struct {
    hy_model_desc *desc;
    hy_profile profile;
    hy_plan_params plan_params;
    hy_plan plan;
    hy_stream *stream;     /* NULL when no tensor lives in hypura's own buffer types */
    struct hy_vxc *vxc;    /* the expert cache in VRAM (--gpu-xcache), or NULL */
    uint64_t xcache_bytes;     /* --gpu-xcache: VRAM the cache takes (out of the GPU budget) */
    int      xcache_slots;     /* ... expert slots per cached layer */
    int      xcache_layers;    /* ... layers it serves */
    double   xcache_hit;       /* ... expected share of selections found in VRAM */
    uint64_t xcache_routed;    /* ... expert bytes a token routes through those layers */
    bool     xcache_pred_ok;   /* xcache_pred holds a prediction */
    hy_plan_vxc_pred xcache_pred; /* the plan's prediction with the cache (hy_plan_vxc_predict) */
    double   xcache_alt_tok_s; /* --gpu-xcache auto: the prediction without the cache (0: none) */
    char     xcache_why[640];  /* --gpu-xcache auto: why it is used or not */
    struct hy_place *place; /* the plan as libllama overrides, NULL when libllama's defaults place all */
    hy_engine *engine;
    uint64_t load_read_bytes;  /* bytes this process read from storage while loading (/proc/self/io) */
    int      n_seq;            /* sequences decoded together (params.n_seq, at least 1) */
    uint64_t load_cached_bytes, load_direct_bytes; /* resident tensors copied from the page cache, read with direct I/O */
    /* expert-streaming's prediction: routing frequencies from this model's persisted co-activation
     * statistics (plan_params.expert_freq points here; NULL: none, uniform routing assumed) */
    double  *expert_freq;
    uint64_t expert_stats_tokens;   /* tokens those statistics recorded */
    char     expert_stats_path[4096]; /* where they are (or would be) kept; "" when not looked for */
    char     expert_stats_error[256]; /* why a file there was not used; "" when it was, or is absent */
    /* expert-streaming: the prediction made again when generation starts (hy_session_predict_generation) */
    double   pred_tok_s_plan;         /* the plan's, before the run (0: not made again) */
    const char *pred_none;            /* why no speed is predicted (NULL: one is): --io pagecache */
    hy_calib calib[HY_MODE_COUNT];    /* earlier runs' compute ratios per mode (plan_params.compute_scale) */
    hy_calib calib_read[HY_MODE_COUNT]; /* earlier runs' storage ratios per mode (plan_params.read_scale) */
    int calib_read_from[HY_MODE_COUNT];
    hy_calib calib_wait;              /* expert-streaming's share of read time waited for (plan_params.io_wait_share) */ /* the mode whose runs calib_read[m] comes from (m, or the other streamed one) */
    int      n_threads;               /* threads the engine will use (the calibration's key) */
    uint64_t pred_gen_tokens;         /* tokens of routing behind the one at generation start */
    int      cache_policy;            /* expert cache: the policy in use (0 LFU, 1 LRU) */
    char     cache_policy_why[256];   /* given, or measured, or the default */
    uint64_t draft_bytes;             /* memory the draft model is charged (0: none), off mem_budget already */
    struct hy_spec_model *spec_model; /* drafting's cost model (hy_spec.h), NULL without a draft */
    bool     draft_off;               /* the plan predicts drafting does not pay: the target is planned with the
                                         whole budget, and the draft is not to be opened */
    char     draft_why[320];          /* the decision and its figures ("" without a draft) */
    struct hy_session_rpc *rpc;       /* remote tiers (--rpc), NULL without */
} hy_session;

/* Header, profile and plan only: nothing is loaded (estimate, inspect --plan). */
int  hy_session_plan(const hy_session_params *p, hy_session **out, char *err, size_t errlen);
/* Load the model of a planned session (same params): streaming set up, weights
 * placed, ready to generate. On failure the session stays for hy_session_free. */
int  hy_session_load(hy_session *s, const hy_session_params *p, char *err, size_t errlen);
/* Plan and load in one step. */
int  hy_session_open(const hy_session_params *p, hy_session **out, char *err, size_t errlen);
void hy_session_free(hy_session *s);

/* The default GPU budget for a device: its free memory less headroom. */
uint64_t hy_session_gpu_default(const hy_gpu_info *g);

/* Human summary of the plan (and, with tensors, every tensor's tier). */
void hy_session_print_plan(FILE *f, const hy_session *s, bool tensors);
/* The plan as a JSON object (malloc'd text). */
char *hy_session_plan_json(const hy_session *s, bool tensors);
/* The plan's prediction as a JSON object (tok/s, its bound, bytes and bandwidths,
 * expert-streaming's cache slots and hit rate with their source); a new reference. */
struct json_t *hy_session_prediction_json(const hy_session *s);
/* Expert-streaming, when generation starts: the prediction again, from the routing
 * seen so far (the kept statistics and this run's prompt) instead of the prior or
 * the statistics alone; the plan's own figure stays in pred_tok_s_plan. */
void hy_session_predict_generation(hy_session *s);
/* One line after a run: predicted against measured generation tok/s (and, when
 * expert-streaming, predicted against measured cache hit rate). */
void hy_session_print_predicted(FILE *f, const hy_session *s, double gen_tps);
/* Streaming and memory figures after a run, one block for humans. */
void hy_session_print_stats(FILE *f, const hy_session *s, double seconds);

/* Peak memory of this process's cgroup, 0 if unknown (hy_peak_rss and
 * hy_io_read_bytes, for the process itself, are in util/hy_util.h). */
uint64_t hy_cgroup_peak(void);

#endif
