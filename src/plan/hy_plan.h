/* hy_plan: placement of every tensor on a tier (GPU, RAM, NVMe) — a pure
 * function of the model's header, the machine's figures and the budgets. It
 * loads nothing and touches no file, so it can be printed, tested and used for
 * estimates without a weight in memory.
 *
 * Cost model (why this placement is right): a dense decoder reads every weight
 * once per token, so the bytes streamed from storage per token are exactly the
 * bytes not kept resident. Minimising I/O per token is therefore "keep as many
 * bytes resident as the budget allows", and the choice of *which* tensors stream
 * only matters for granularity and overlap: we stream whole per-layer FFN groups
 * (gate/up/down: the largest, uniform, read strictly in layer order) and keep
 * everything touched every token that is small or irregular (norms, attention,
 * embeddings — of which only the prompt's rows are touched —, output) resident.
 * Streamed layers are spread evenly so that I/O of one overlaps compute of the
 * resident layers between them. Attention groups stream only when all FFN
 * groups already do. The pool holds (lookahead + 1) groups; the automatic
 * lookahead uses only slack the budget leaves after the fewest groups stream,
 * so more lookahead never costs extra I/O and the plan is monotone in budget
 * (unless min_lookahead asks for more: batched serving).
 *
 * GPU tier (when gpu_budget > 0), chosen first and independently of the
 * memory budget, by the same cost model: every byte on the GPU is a byte the
 * CPU no longer reads per token, so the GPU takes what is read every token and
 * is worth most per byte of VRAM, in this order: the output head and its norm;
 * then, from the last layer down, each layer's attention, norms and router
 * together with that layer's K/V cache (a layer whose attention runs on the GPU
 * keeps its cache there, as libllama's "GPU layers" do); then whole FFN groups
 * of those layers (dense FFN, or a layer's expert tensors — experts of a layer
 * are one tensor each, so "hot experts" go to the GPU a layer at a time), and
 * for dense models single FFN tensors of one more layer to fill the rest.
 * Token embeddings stay in RAM: a token touches one row of them. Everything
 * not on the GPU is then planned over RAM and NVMe exactly as without a GPU,
 * and is computed on the CPU where it lives (libllama's "-ot exps=CPU", but
 * chosen by the plan). GPU fixed costs (compute buffer, K/V of GPU layers) are
 * charged to the GPU budget; the CUDA runtime's host memory to the RAM budget.
 *
 * Predicted speed (hy_plan_predict): streaming whole groups, decode is bound by
 * the slower of storage and memory (reads run ahead of compute); expert-
 * streaming pays both (a miss is read once the router has chosen it), each
 * charged only what one token touches. Memory (times compute_scale[mode], what
 * earlier runs measured against it: hy_calib.h): every weight
 * not on the GPU (HBM reads it an order of magnitude faster), except that of
 * a MoE's expert tensors only top-k of E — wherever they live, RAM tier
 * included. Storage: a layer-streaming mode reads its streamed groups whole;
 * expert-streaming reads the routed slices the expert cache misses. The cache
 * is assumed to hold the experts that fire most (the decayed-LFU default,
 * seeded from persisted statistics), so its hit rate is the share of
 * selections that the slots it holds cover: from measured routing
 * frequencies when the caller gives them (expert_freq), else a prior: expert
 * popularity falling as rank^-HY_PLAN_ROUTING_PRIOR within each layer.
 * Measured shares of S selections leave Good-Turing's N1/S (N1: experts seen
 * once) to the experts not seen yet, spread by the prior's shape; the seen
 * experts' shares are pulled toward their mean by the part of their spread that
 * S draws show by chance, pooled over the layers (hy_plan_layer_shares). An unknown
 * bandwidth is never 0 s: the HY_PLAN_ASSUMED_* figure is used and flagged as
 * assumed.
 *
 * Invariants (unit-tested):
 *  - resident + pool + KV + compute + overhead <= memory budget, or an error
 *    naming the minimum budget;
 *  - full-resident whenever the whole model plus fixed costs fits;
 *  - io_bytes_per_token is non-increasing as the budget grows;
 *  - pred_io_bytes <= io_bytes_per_token, and the predicted tok/s does not
 *    fall as the memory budget grows. */
#ifndef HY_PLAN_H
#define HY_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "gguf/hy_gguf.h"

typedef enum { HY_TIER_GPU, HY_TIER_RAM, HY_TIER_NVME, HY_TIER_COUNT } hy_tier;

/* Routing prior for a model without statistics: within a layer the r-th most
 * used expert takes a share proportional to r^-0.5. Fitted to the published
 * figure in DESIGN.md (a cache of 64 of 128 experts per layer hit ~67 % in a
 * llama.cpp measurement: this law gives 68 %); uniform routing (0) would
 * predict 50 %, and real routers are skewed. A run's kept statistics replace it. */
#define HY_PLAN_ROUTING_PRIOR 0.5

/* Expert-streaming's compute per token over what memory bandwidth alone says,
 * until runs on this machine have measured it (hy_calib): the callback's work,
 * the graph cut into pieces and unrepacked arenas cost it more than a resident
 * pass. Measured on first runs: 1.63 (qwen3moe) and 1.92 (gpt-oss) on the
 * 2-core machine, 1.24 on the H200 machine's 16 threads (qwen3moe, OpenMP
 * threads spinning: cli_omp.h); resident runs measured 0.8-1.2, so other modes
 * take 1. A run's measurement replaces it. */
#define HY_PLAN_EXPERT_COMPUTE_PRIOR 1.6

/* Expert-streaming keeps cached expert slices in arenas (hy_experts.c): one per
 * kind of expert tensor (its name after "blk.N.": ffn_gate_exps, ffn_down_exps.bias,
 * ...), cut into slots. Slot s of every kind holds one cached expert (layer, e), so
 * a layer's expert matmuls read slot ids instead of expert ids. A kind's slot pitch
 * is its largest slice rounded up to whole pages plus one page: a slice is read
 * page-aligned into its slot and moved to the slot's start. Slots are packed and
 * reused, never given back, so the cache commits what it charges: its slots, and
 * per arena at most one partly used huge page (HY_PLAN_XARENA_TAIL). */
static inline uint64_t hy_plan_xslot_pitch(uint64_t stride) {
    return stride > (UINT64_MAX >> 2) ? UINT64_MAX >> 2 : (stride + 4095) / 4096 * 4096 + 4096;
}
#define HY_PLAN_XARENA_TAIL ((uint64_t)2 << 20)
#define HY_PLAN_MAX_XKINDS 8
typedef struct {
    char suffix[64];    /* the tensor name after "blk.N." */
    uint64_t pitch;     /* slot pitch: hy_plan_xslot_pitch of the kind's largest slice */
    int n_tensors;      /* layers holding this kind */
} hy_xkind;
/* The kinds of the expert tensors whose tier is NVMe (every expert tensor when tier
 * is NULL): number of kinds, or -1 when there are more than max, or a name has no
 * layer prefix. Pure; the plan and the expert cache both size slots with it. */
int hy_plan_xkinds(const hy_model_desc *d, const hy_tier *tier, hy_xkind *kinds, int max);
/* the index in kinds of a tensor named "blk.N.<kind>", or -1 */
int hy_plan_xkind_of(const hy_xkind *kinds, int n_kinds, const char *name);
/* Bytes one expert slot costs across all kinds: the kinds' pitches, plus the
 * matmul's scratch that grows with the slot count (ggml's mul_mat_id keeps a row
 * map of n_as x k x n_batch entries of 8 bytes, and 72 bytes per n_as). */
uint64_t hy_plan_xslot_cost(const hy_xkind *kinds, int n_kinds, int n_expert_used, int n_batch);

/* Memory a streamed tensor of `size` bytes commits while resident: its own
 * 2 MiB-aligned slot on transparent huge pages, room included to shift it to its
 * in-page file offset and to read whole pages (hy_stream.c). Groups and pools
 * are counted in these, so the budget holds what the kernel really commits. */
static inline uint64_t hy_plan_slot_bytes(uint64_t size) {
    const uint64_t page = 4096, huge = (uint64_t)2 << 20;
    uint64_t s = (size + page - 1) / page * page + 2 * page;
    return (s + huge - 1) / huge * huge;
}
typedef enum { HY_MODE_RESIDENT, HY_MODE_DENSE_FFN, HY_MODE_EXPERT, HY_MODE_COUNT } hy_mode;

#define HY_PLAN_NTYPES 64 /* weight types (enum ggml_type) the compute rates are kept for */

typedef struct {
    uint64_t mem_budget;     /* bytes the process may use in RAM (weights, pool, KV, compute, overhead) */
    uint64_t gpu_budget;     /* bytes of VRAM the plan may use (weights, K/V, compute); 0 = no GPU tier */
    int      n_ctx;          /* context the run will use */
    int      n_batch;        /* prompt batch */
    double   seq_read_gbps;  /* storage bandwidth (profile); 0 = unknown */
    double   mem_bw_gbps;    /* memory bandwidth (profile); 0 = unknown */
    double   piece_s;        /* starting one piece of a graph on all threads (profile); 0 = unknown */
    int      threads;        /* the run's CPU threads, and the profile's (its rates were measured on */
    int      profile_threads; /* that many); 0 = unknown: the rates as measured */
    /* weight bytes per second of the CPU's matrix-vector product, by enum ggml_type (profile:
     * hy_matvec.h); 0 = not measured: that type is charged at mem_bw_gbps */
    double   matvec_gbps[HY_PLAN_NTYPES];
    /* measured over predicted compute time of earlier runs (hy_calib), per mode (a streamed pass
     * is cut at the nodes the eval callback serves, which costs more where threads are many);
     * 0: none measured (expert-streaming then takes HY_PLAN_EXPERT_COMPUTE_PRIOR, the rest 1) */
    double   compute_scale[HY_MODE_COUNT];
    /* what earlier runs' reads reached against seq_read_gbps, per mode (hy_calib.h); 0: none (1) */
    double   read_scale[HY_MODE_COUNT];
    /* expert-streaming: the share of its read time a token waits for (pre-gating reads a layer's
     * experts while the one before computes), as earlier runs measured it (stalls over the time
     * reads were in flight, hy_calib); 0 = none measured: every read waited for */
    double   io_wait_share;
    int      lookahead;      /* groups in flight ahead of compute; < 0 = automatic */
    int      min_lookahead;  /* automatic lookahead: at least this many where the budget allows it,
                                even at the cost of streaming a group or two more (0: 1, the
                                automatic rule). For batched steps (serve --parallel), whose
                                compute per layer is as long as a group's read: with one group
                                in flight the reads wait behind the compute of resident layers */
    int      force_mode;     /* < 0 = automatic, else a hy_mode to force (streams even when it fits) */
    /* Measured routing, optional, read only by the prediction: expert_freq[l * n_expert + e] is the
     * share of layer l's selections that chose expert e (hy_coact_freq: sums to 1 over a layer with
     * data, all 0 for a layer without, which counts as uniform). Used only when expert_freq_n equals
     * the model's n_layer * n_expert; NULL: uniform routing. expert_freq_tokens: the tokens they were
     * counted over: what the shares cannot show of a small sample is estimated from it (hy_plan.h,
     * above: Good-Turing, and shrinkage by the sampling noise); 0: used as they are. */
    const double *expert_freq;
    int64_t       expert_freq_n;
    uint64_t      expert_freq_tokens;
} hy_plan_params;

/* Bandwidths the prediction assumes when the profile has none (storage not
 * swept, e.g. HYPURA_NO_STORAGE_PROFILE=1): about this repository's machines at
 * queue depth 1 and a modest memcpy. Printed as assumed, never as measured. */
#define HY_PLAN_ASSUMED_READ_GBPS 1.0
#define HY_PLAN_ASSUMED_MEM_GBPS 10.0
/* What a token's weights on the GPU cost: read at this rate (bytes a token touches there: all of
 * a dense weight, top-k/E of an expert tensor). Not measured (the profile times the host-to-device
 * link only); about what the H200 machine decoded a qwen3moe at wholly on the GPU (415 MiB per
 * token in 1.0 ms with launches and syncs). Without it, a plan with most weights on the GPU was
 * predicted at twice its speed there once the CPU's share was charged at its measured rates. */
#define HY_PLAN_ASSUMED_GPU_GBPS 700.0
/* A run on t of the profile's T threads computes at (t/T)^this of the measured rates: on the H200
 * machine (16 cores) a resident qwen3moe decoded at 34.4 / 62.8 / 104.4 / 152.4 tok/s on 2 / 4 /
 * 8 / 16 threads, 0.23 / 0.41 / 0.69 of the 16-thread speed where this law gives 0.23 / 0.38 /
 * 0.62 (memory bandwidth grows slower than the thread count); the prediction had ignored -t. */
#define HY_PLAN_THREAD_EXP 0.7

hy_plan_params hy_plan_default_params(void);

typedef struct {
    hy_mode  mode;
    int      n_tensors;
    hy_tier *tier;                 /* per tensor of the model description, same order */
    int     *group;                /* per tensor: streaming group (layer) or -1 */
    uint64_t bytes_tier[HY_TIER_COUNT];
    uint64_t kv_bytes, compute_bytes, overhead_bytes; /* in RAM: K/V of the layers not on the GPU */
    int      gpu_layers;           /* last layers whose attention and K/V live on the GPU */
    bool     gpu_output;           /* output head on the GPU (the GPU tier is in use) */
    uint64_t gpu_kv_bytes, gpu_compute_bytes;
    uint64_t gpu_used;             /* GPU weights + K/V + compute, <= gpu_budget */
    uint64_t pool_bytes;           /* committed memory for streamed groups at most (expert-streaming: the cache) */
    int      x_slots;              /* expert-streaming: cached experts the cache holds (>= one layer's) */
    int      x_kinds;              /* expert-streaming: arenas (kinds of expert tensors) */
    uint64_t x_slot_bytes;         /* expert-streaming: what one slot costs (hy_plan_xslot_cost) */
    uint64_t max_group_bytes;
    uint64_t budget_used;          /* RAM tier + pool + KV + compute + overhead */
    uint64_t min_budget;           /* smallest memory budget that can run this model */
    char     mode_why[192];        /* why this mode: fits, forced, below a minimum, or the predictions compared */
    int      lookahead;
    int      n_groups;             /* streamed groups (layers) */
    uint64_t io_bytes_per_token;   /* streamed per token before caching (expert-streaming: the routed slices) */
    /* the prediction (hy_plan_predict) */
    uint64_t pred_io_bytes;        /* expected storage reads per token: io_bytes_per_token less cache hits */
    uint64_t pred_compute_bytes;   /* weight bytes the CPU reads per token (non-GPU; experts k/E) */
    double   pred_hit_rate;        /* expert-streaming: expected share of routed slices the cache holds */
    bool     pred_hit_measured;    /* ... from expert_freq; false: uniform routing assumed */
    uint64_t cache_slots;          /* expert-streaming: expert slots (one expert's slices in one layer) it holds */
    double   cache_slots_per_layer; /* cache_slots over the layers whose experts stream */
    double   pred_read_gbps, pred_mem_gbps; /* the bandwidths used; pred_mem_gbps: the touched bytes over
                                               their compute time (per-type matvec rates where measured) */
    bool     pred_mem_matvec;      /* pred_mem_gbps from measured matvec rates (else memcpy or assumed) */
    uint64_t pred_gpu_bytes;       /* weight bytes a token reads on the GPU (charged at HY_PLAN_ASSUMED_GPU_GBPS) */
    double   pred_gpu_s;           /* their time, part of pred_compute_s */
    double   pred_compute_scale;   /* compute_scale[mode] as applied, or the mode's prior */
    double   pred_read_scale;      /* read_scale[mode] as applied to a measured storage figure (else 1) */
    double   pred_thread_scale;    /* the CPU rates' share at the run's thread count (HY_PLAN_THREAD_EXP), <= 1 */
    uint64_t pred_pieces;          /* pieces the eval callback cuts a pass into (streamed modes) */
    bool     pred_read_assumed, pred_mem_assumed; /* HY_PLAN_ASSUMED_* used: the profile had none */
    bool     pred_io_bound;        /* storage is the slower side (else memory) */
    double   pred_stall_piece_s;   /* expected wait for storage between two pieces of the graph: expert-
                                    * streaming's reads over its pieces; whole groups' I/O beyond compute */
    double   pred_io_s, pred_compute_s, pred_tok_s;
    double   pred_io_wait_s;       /* what of pred_io_s a token waits for: expert-streaming's reads times
                                    * io_wait_share; whole groups' I/O beyond compute */
} hy_plan;

/* 0 on success; on an impossible budget returns < 0 with a message that says
 * the minimum. out->tier/group are malloc'd: free with hy_plan_free. */
int  hy_plan_make(const hy_model_desc *d, const hy_plan_params *p, hy_plan *out, char *err, size_t errlen);
void hy_plan_free(hy_plan *p);
/* Fills the pred_* and cache_slots* figures of a made plan from p's bandwidths
 * and routing frequencies, the placement unchanged (hy_plan_make calls it; call
 * again with measured frequencies). Pure; 0, or < 0 when out of memory. */
int  hy_plan_predict(const hy_model_desc *d, const hy_plan_params *p, hy_plan *out);
/* How much of the spread among the seen experts' measured shares is the routing's own rather
 * than chance, pooled over all layers (0..1; 1 without counts): hy_plan.c. Computed once per
 * prediction and passed to hy_plan_layer_shares for each layer. */
double hy_plan_routing_keep(const hy_model_desc *d, const hy_plan_params *p);
/* Layer l's routing shares, sh[n_expert] summing to 1: from p's measured routing (Good-Turing's
 * mass for the experts not seen; the seen pulled toward their mean, keeping `keep` of their
 * distance from it: hy_plan_routing_keep) -> 1; without data for the layer, the prior, hottest
 * first -> 0. The expert-streaming prediction and hy_spec's cost model read routing through it. */
int  hy_plan_layer_shares(const hy_model_desc *d, const hy_plan_params *p, int l, double keep, double *sh);

/* The VRAM expert cache (--gpu-xcache, src/stream/hy_vxc.h) in the prediction. `trial` is the plan
 * with the cached layers' experts off the GPU (computed on the CPU from RAM, or streamed: its
 * prediction charges them there); the cache moves their compute to the GPU, where a token reads
 * `routed` expert bytes over `layers` cached layers, of which the share `hit` is found in VRAM and
 * the rest is copied host -> device first (HY_PLAN_ASSUMED_PCIE_GBPS; no overlap: the copies of a
 * layer land before its matmuls), with one host synchronization per layer (piece_s). Storage reads
 * stay the trial's (the RAM expert cache under the VRAM one sees the same misses of the hot set).
 * A steady-state figure: the caches' first fills are not in it.
 * Whether the cache pays (`pays`): the cached layers' experts served on the GPU (copies of the
 * misses, GPU reads, syncs) against the same experts computed on the CPU (`cpu_alt_s`: their
 * bytes at the trial's measured rate and compute scale, plus HY_PLAN_CPU_EXPERT_OP_S per
 * selected expert and layer, `k` of them per layer).
 * Pure. 0, or < 0 when the trial has no prediction. */
#define HY_PLAN_CPU_EXPERT_OP_S 40e-6 /* per expert matmul a token selects, on the CPU besides its bytes: the
                                         qwen3moe-layout bench model (2.65 MiB experts, top-8) without the cache
                                         decoded 24 ms per token on the H200 machine's 16 threads with 46 layers of
                                         experts on the CPU, where their bytes at the measured matvec rate take ~8 */
#define HY_PLAN_ASSUMED_PCIE_GBPS 50.0 /* pinned host->device copies: 52.8 GB/s measured on the H200 machine
                                          (bench/gpu/managed_probe.cu), 55 on the H100 one */
typedef struct {
    double tok_s;
    double pcie_bytes;     /* per token: VRAM misses copied */
    double nvme_bytes;     /* per token: read from storage (the trial's expected reads) */
    double cpu_saved_s;    /* the trial's charge for computing those experts on the CPU */
    double pcie_s, gpu_s, sync_s, rest_s; /* rest: the trial's time less cpu_saved_s */
    double cpu_alt_s;      /* the same experts computed on the CPU */
    bool   pays;           /* pcie_s + gpu_s + sync_s < cpu_alt_s */
} hy_plan_vxc_pred;
int hy_plan_vxc_predict(const hy_plan *trial, const hy_plan_params *p, uint64_t routed, double hit, int layers, int k,
                        hy_plan_vxc_pred *out);

/* --gpu-xcache auto's verdict on a prediction of the trial against the plan without the cache
 * (`plan`): HY_VXC_USE where the cache pays (above) once the storage it adds is charged too. Under
 * expert-streaming the cache's slots copy from the RAM expert cache under it and add no capacity,
 * while the expert layers the plan keeps whole on the GPU are a tier of their own: the trial may wait
 * longer for NVMe per token (pred_io_wait_s), and that wait goes on the cache's side of the
 * comparison: HY_VXC_NVME_SLOWER where it exceeds HY_PLAN_VXC_NVME_DOUBT times what the cache
 * saves per token (*extra_wait_s, if given, gets that wait). Not the whole plans' tok/s: the
 * trial's prediction with the cache is uncalibrated (it said 10 tok/s where 123 were measured). Pure. */
#define HY_PLAN_VXC_NVME_DOUBT 2.0 /* the trial's expected storage reads ran up to ~2x the measured ones on the H200
                                      machine (qwen3moe layout, 12 GiB cgroup: 325 MiB per token expected from the
                                      routing prior, 149 read cold; with one run's 85 tokens of statistics 75
                                      expected, 40.9 read), where the Mixtral shape's extra wait is 30x what the
                                      cache saves (1029 ms against 28 per token) */
typedef enum { HY_VXC_USE = 0, HY_VXC_NO_PAY = 1, HY_VXC_NVME_SLOWER = 2 } hy_vxc_verdict;
hy_vxc_verdict hy_plan_vxc_judge(const hy_plan_vxc_pred *xp, const hy_plan *trial, const hy_plan *plan, double *extra_wait_s);

const char *hy_mode_name(hy_mode m);   /* "full-resident", "dense-FFN-streaming", "expert-streaming" */
const char *hy_tier_name(hy_tier t);   /* "GPU", "RAM", "NVMe" */

/* Host memory the GPU runtime takes when the GPU tier is used (CUDA context,
 * libraries, pinned staging), charged to the memory budget. Measured on the
 * H100 machine (bench/gpu_vs_llama.sh mem): a llama.cpp run with 18 GPU layers
 * held 189 MiB anonymous (its 31 MiB of K/V included) and 157-223 MiB of mapped
 * libraries besides its weights; the mapped pages are reclaimable under a cap. */
#define HY_PLAN_GPU_HOST_OVERHEAD ((uint64_t)256 << 20)
/* VRAM a tensor of `size` bytes takes in a GPU buffer (alignment, row padding). */
static inline uint64_t hy_plan_gpu_bytes(uint64_t size) { return (size + 511) / 512 * 512 + 4096; }

/* Fixed costs of a run, the same estimates the plan uses. */
uint64_t hy_plan_kv_bytes(const hy_model_desc *d, int n_ctx);
uint64_t hy_plan_compute_bytes(const hy_model_desc *d, int n_ctx, int n_batch);

#endif
