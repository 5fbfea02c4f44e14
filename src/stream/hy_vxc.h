/* hy_vxc: an expert cache in VRAM. The expert tensors of the MoE layers the
 * GPU tier does not hold (they stay in RAM, in pinned host memory) are computed
 * on the GPU all the same: each layer has a window of `slots` expert slices in
 * VRAM, filled by explicit host-to-device copies of the experts its router
 * chooses, and its expert matmuls read the window instead of RAM.
 *
 * How it hooks into libllama + ggml (pinned, unmodified):
 *  - Loading: the cached layers' expert tensors are placed (tensor_buft_overrides)
 *    in a host buffer type of ours that wraps the device's pinned host buffer
 *    type, so their bytes load into pinned memory (fast DMA) and we see each
 *    tensor (init_tensor).
 *  - After the model is loaded and before its context exists (hy_vxc_attach),
 *    every such tensor is pointed at a device buffer of ours (tensor->buffer,
 *    tensor->data; its shape is untouched, ne = n_expert): ggml_backend_sched
 *    assigns an op to the backend owning its weight's buffer, so the expert
 *    matmuls are scheduled on the GPU. The tensor's full size is never allocated.
 *  - Arena layout, one device buffer per kind of expert tensor (gate, up, down,
 *    fused, biases; hy_plan_xkinds): [layer 0's window: slots x stride] ...
 *    [last cached layer's window] [W: n_expert x stride] [zeroed padding]. A
 *    layer's tensor points at its window; since W follows the windows, every
 *    tensor's nominal range (n_expert x stride) ends inside the buffer.
 *  - cb_eval at the router ("ffn_moe_topk-N", read back from the GPU): the
 *    choices go through the policy (hy_xcache: decayed LFU or LRU, seeded from
 *    the persisted routing statistics); misses are copied host -> window on a
 *    backend of our own (async copies, one synchronize per layer). Before each
 *    mul_mat_id / add_id of the layer runs, its ids source is pointed at a small
 *    device tensor holding the choices mapped to slots; every other reader of the
 *    router's choice still sees expert ids. Put back after the layer.
 *  - Batches (more than HY_VXC_SLOT_TOKENS tokens, or more distinct experts than
 *    a window holds): the routed experts are copied whole into W at their own
 *    index and the tensor points at W for that layer: ids unchanged. The
 *    batched kernels (MMQ's stream-k) split work by the expert's index, so
 *    keeping it is what keeps prefill bit-identical; mmvq (decode) computes each
 *    row from the selected expert's rows alone, wherever they sit.
 *
 * The NVMe tier under it (hy_vxc_params.model_path set: the memory budget cannot
 * hold the served experts in RAM, the plan is expert-streaming): the served
 * tensors then load nowhere (their host buffer is address space only, never
 * touched; the loader's bytes are ignored) and a miss of the VRAM window is
 * served from a RAM expert cache of pinned slots (ram_bytes of them, one slot =
 * one expert of a layer across kinds, the same hy_xcache policy and seeding as
 * the windows), else read from the GGUF file with direct I/O (hy_io, all of a
 * chunk's reads in flight at once) into a RAM slot and copied from there. A slot
 * that is the source of a copy not yet synchronized is pinned, never evicted.
 *
 * Invariants: a node reading a cached tensor other than mul_mat_id (src 0) or
 * add_id (src 1), or before its layer's router ran in the pass, aborts the pass
 * with an error (never computes on a window); every swap is undone before the
 * pass ends; slot ids written are < n_expert (slots per layer <= n_expert).
 * Generic over ggml devices: with the CPU device (HYPURA_XCACHE_CPU=1, tests on
 * machines without a GPU) the same slot and W logic runs in a CPU buffer. */
#ifndef HY_VXC_H
#define HY_VXC_H

#include <stdbool.h>
#include <stdint.h>

#include "ggml-backend.h"
#include "gguf/hy_gguf.h"
#include "io/hy_io.h"
#include "plan/hy_plan.h"

typedef struct hy_vxc hy_vxc;

/* decode batches up to this many tokens use the slot windows (mmvq: row-wise) */
#define HY_VXC_SLOT_TOKENS 4

typedef struct {
    const hy_model_desc *desc;
    const hy_plan *plan;         /* the layers whose expert tensors are on the RAM tier are cached */
    ggml_backend_dev_t dev;      /* the device holding the cache (a GPU; the CPU device for tests) */
    uint64_t bytes;              /* device memory for the windows, W and padding */
    int policy;                  /* HY_XC_LFU or HY_XC_LRU */
    const double *freq;          /* optional: measured routing shares [n_layer * n_expert] (hy_coact_freq) */
    uint64_t freq_tokens;
    bool persist_stats;          /* record the routing into this model's co-activation statistics (hy_coact,
                                    the file the CPU expert cache keeps too) and save them at the end */
    const char *model_path;      /* set: the served experts are not loaded but read from this file (NVMe tier) */
    uint64_t ram_bytes;          /* with model_path: pinned RAM for the RAM expert cache between NVMe and VRAM */
    hy_io_params io;
} hy_vxc_params;

typedef struct {
    int layers, slots;           /* cached layers, slots per layer */
    uint64_t device_bytes;       /* allocated on the device */
    uint64_t hits, misses;       /* slot-mode selections (an expert once per layer and pass) */
    uint64_t h2d_bytes;          /* copied host -> device, slot misses and W fills */
    uint64_t slot_passes, w_passes; /* layer passes served by the windows / by W */
    uint64_t tokens;             /* tokens through the first cached layer */
    /* the NVMe tier (model_path set) */
    bool nvme;
    int ram_slots;               /* experts (of a layer, every kind) the RAM cache holds */
    uint64_t ram_bytes;          /* its pinned memory */
    uint64_t ram_hits, ram_misses; /* copies to the device served from the RAM cache / read from the file first */
    uint64_t nvme_bytes;         /* read from the file (page-aligned ranges) */
    double nvme_wait_s;          /* time waiting for those reads */
    const char *io_backend;
    bool direct;
    /* filled ahead at attach from the routing statistics (RAM: read from the file; VRAM: copied) */
    int preload_ram, preload_vram;
    uint64_t preload_bytes;
    double preload_s;
} hy_vxc_stats;

/* Bytes the cache needs for `slots` per layer over the plan's RAM- or NVMe-tier expert layers
 * (0 when there is none); and the slots per layer a budget of `bytes` gives (capped
 * at n_expert; 0 if the budget cannot hold W). Pure. */
uint64_t hy_vxc_bytes_for(const hy_model_desc *d, const hy_plan *plan, int slots);
int      hy_vxc_slots_for(const hy_model_desc *d, const hy_plan *plan, uint64_t bytes);
/* With the NVMe tier: the bytes one RAM slot takes (every kind's slice with room to read it
 * page-aligned: `align` = the direct-I/O alignment), and the slots `ram_bytes` give. Pure. */
uint64_t hy_vxc_ram_slot_bytes(const hy_model_desc *d, const hy_plan *plan, uint64_t align);
int      hy_vxc_ram_slots_for(const hy_model_desc *d, const hy_plan *plan, uint64_t ram_bytes, uint64_t align);
/* The share of slot-mode selections `slots` per layer are expected to hit, over the served
 * layers: the top `slots` measured shares of each layer (freq, as hy_vxc_params; a layer
 * without data, or freq NULL, takes the plan's prior rank^-HY_PLAN_ROUTING_PRIOR). *routed:
 * bytes of experts one token routes through the served layers (top-k slices). Pure. */
double   hy_vxc_expected_hit(const hy_model_desc *d, const hy_plan *plan, int slots, const double *freq,
                             uint64_t *routed);
/* whether tensor i of the model is one the cache serves (an expert tensor of the RAM tier, or of
 * the NVMe tier: expert-streaming's, served through the RAM expert cache) */
bool     hy_vxc_serves(const hy_model_desc *d, const hy_plan *plan, int64_t i);

int  hy_vxc_create(const hy_vxc_params *p, hy_vxc **out, char *err, size_t errlen);
/* the buffer type the served tensors load into (pinned host memory where the device offers it;
 * address space only, never filled, with model_path set) */
ggml_backend_buffer_type_t hy_vxc_host_buft(hy_vxc *v);
/* after the model's load, before its context: allocate the device arenas and point the tensors there;
 * with routing statistics (freq), fill the RAM expert cache and the windows with the hottest experts */
int  hy_vxc_attach(hy_vxc *v, char *err, size_t errlen);
/* llama_context_params.cb_eval / abort_callback */
bool hy_vxc_eval_cb(struct ggml_tensor *t, bool ask, void *user_data);
bool hy_vxc_abort_cb(void *user_data);
/* after an aborted pass: undo swaps; returns the error (NULL when none) and clears it */
const char *hy_vxc_error(const hy_vxc *v);
void hy_vxc_settle(hy_vxc *v);
void hy_vxc_get_stats(const hy_vxc *v, hy_vxc_stats *st);
void hy_vxc_free(hy_vxc *v);

#endif
