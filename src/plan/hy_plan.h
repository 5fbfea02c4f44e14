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
 * so more lookahead never costs extra I/O and the plan is monotone in budget.
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
 * Invariants (unit-tested):
 *  - resident + pool + KV + compute + overhead <= memory budget, or an error
 *    naming the minimum budget;
 *  - full-resident whenever the whole model plus fixed costs fits;
 *  - io_bytes_per_token is non-increasing as the budget grows. */
#ifndef HY_PLAN_H
#define HY_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "gguf/hy_gguf.h"

typedef enum { HY_TIER_GPU, HY_TIER_RAM, HY_TIER_NVME, HY_TIER_COUNT } hy_tier;

/* Memory an expert slice may commit beyond its bytes: expert tensors live on
 * transparent huge pages, and a slice read faults in up to a huge page past
 * each of its ends (hy_experts.c). Charged per slice of each expert tensor. */
#define HY_PLAN_SLICE_OVERHEAD (2 * ((uint64_t)2 << 20) - 4096)

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

typedef struct {
    uint64_t mem_budget;     /* bytes the process may use in RAM (weights, pool, KV, compute, overhead) */
    uint64_t gpu_budget;     /* bytes of VRAM the plan may use (weights, K/V, compute); 0 = no GPU tier */
    int      n_ctx;          /* context the run will use */
    int      n_batch;        /* prompt batch */
    double   seq_read_gbps;  /* storage bandwidth (profile); 0 = unknown */
    double   mem_bw_gbps;    /* memory bandwidth (profile); 0 = unknown */
    int      lookahead;      /* groups in flight ahead of compute; < 0 = automatic */
    int      force_mode;     /* < 0 = automatic, else a hy_mode to force (streams even when it fits) */
} hy_plan_params;

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
    uint64_t pool_bytes;           /* committed memory for streamed groups at most */
    uint64_t max_group_bytes;
    uint64_t budget_used;          /* RAM tier + pool + KV + compute + overhead */
    uint64_t min_budget;           /* smallest memory budget that can run this model */
    int      lookahead;
    int      n_groups;             /* streamed groups (layers) */
    uint64_t io_bytes_per_token;
    double   pred_io_s, pred_compute_s, pred_tok_s;
} hy_plan;

/* 0 on success; on an impossible budget returns < 0 with a message that says
 * the minimum. out->tier/group are malloc'd: free with hy_plan_free. */
int  hy_plan_make(const hy_model_desc *d, const hy_plan_params *p, hy_plan *out, char *err, size_t errlen);
void hy_plan_free(hy_plan *p);

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
