/* hy_plan_rpc: other machines' memory as tiers (ggml's RPC backend) — which
 * layers go to which remote device, and what that predicts. Pure: a function
 * of the model's header, the local plan's parameters and the figures of each
 * remote device and of the link; it loads nothing and opens no socket.
 *
 * Cost model. One sequence decodes layer after layer, so a token's time is the
 * sum of its parts, nothing overlaps across machines:
 *   local part  — hy_plan over the layers left here (its RAM, NVMe streaming and
 *                 memory-bound compute, the embeddings and the output head);
 *   each remote device — the weight bytes its layers read per token (a MoE's
 *                 experts only top-k/E) over its measured compute rate;
 *   each boundary — one round trip (ggml-rpc reads the device's output back
 *                 synchronously; inputs and the graph launch are one-way) plus
 *                 the bytes that cross: the hidden state in and out (n_embd f32
 *                 each) and the graph's other inputs (positions, the attention
 *                 mask: at most 4 bytes per context cell), over the link's bandwidth.
 * Remote layers are the model's last ones, whole (weights, K/V and compute),
 * in the order of the devices: libllama's "GPU layers" with a tensor split.
 * The output head and the embeddings — read every token — stay local. A device
 * takes at most what fits its budget (weights padded as ggml pads them, K/V of
 * its layers, a compute buffer); the count per device is chosen by predicted
 * tok/s, each device in turn, every count from 0 to what fits, the local plan
 * remade for what is left (it must fit the local budget). A device that does
 * not pay (slow compute or link) gets no layer.
 *
 * Invariants (unit-tested): each device's weights + K/V + compute <= its budget;
 * the remote layers are the last ones, contiguous, devices in order; layers of
 * devices + local layers = n_layer; no device is used when it predicts slower
 * than without it; the local plan is hy_plan_make's over the local layers. */
#ifndef HY_PLAN_RPC_H
#define HY_PLAN_RPC_H

#include <stdbool.h>
#include <stdint.h>

#include "plan/hy_plan.h"

#define HY_RPC_MAX_DEVICES 16

typedef struct {
    uint64_t budget;        /* bytes the plan may use on it */
    double   compute_gbps;  /* weight bytes per second its backend reads while decoding (GB/s) */
    bool     compute_assumed; /* not measured (estimate's what-if): printed as assumed */
} hy_rpc_dev_figures;

typedef struct {
    double rtt_s;           /* one request-response round trip */
    double gbps;            /* bandwidth to the device, GB/s */
    bool   assumed;         /* a named link (--rpc-link), not measured */
} hy_rpc_link;

/* Named links for what-ifs: 1gbe, 10gbe, 25gbe (wire rate less framing, a
 * typical switched LAN's round trip through the kernel's TCP stack). 0 on a
 * name it does not know; "RTT_US,GBPS" gives both figures. */
int hy_rpc_link_parse(const char *s, hy_rpc_link *out);

typedef struct {
    int      n_dev;
    int      layers[HY_RPC_MAX_DEVICES];      /* layers on each device (0: not used) */
    int      first_layer[HY_RPC_MAX_DEVICES]; /* its first layer */
    uint64_t weight_bytes[HY_RPC_MAX_DEVICES];/* weights it holds (padded) */
    uint64_t kv_bytes[HY_RPC_MAX_DEVICES], compute_bytes[HY_RPC_MAX_DEVICES];
    uint64_t read_bytes[HY_RPC_MAX_DEVICES];  /* weight bytes it reads per token */
    int      n_local_layers;                  /* layers 0 .. n_local_layers-1 stay here */
    int      n_segments;                      /* devices used: boundaries crossed per token, each way */
    uint64_t link_bytes_per_boundary;         /* bytes a token sends and receives per boundary */
    double   pred_local_s, pred_remote_s, pred_link_s; /* per token */
    double   pred_upload_s;                   /* at load: the remote weights over the link */
    double   pred_tok_s;                      /* all of it */
    double   pred_tok_s_local_only;           /* the local plan alone (no device), 0 if it cannot fit */
    char     why[256];
} hy_rpc_plan;

/* The model restricted to layers 0 .. n_local-1 (and the tensors outside the
 * layers): what the local plan is made over. NULL when out of memory. */
hy_model_desc *hy_plan_rpc_local_desc(const hy_model_desc *d, int n_local);

/* Weight bytes a device holding layers [first, first+n) reads per token, and holds. */
void hy_plan_rpc_layer_bytes(const hy_model_desc *d, int first, int n, uint64_t *read, uint64_t *held);

/* Chooses the remote layers and makes the local plan over the rest (*local,
 * over hy_plan_rpc_local_desc(d, rp->n_local_layers), made with p). force:
 * NULL, or the layers each device must take (a hand-set split, still checked
 * against the budgets). 0 on success; < 0 with a reason when no split fits
 * (the local minimum named). */
int hy_plan_rpc_make(const hy_model_desc *d, const hy_plan_params *p, const hy_rpc_dev_figures *dev, int n_dev,
                     const hy_rpc_link *link, const int *force, hy_rpc_plan *rp, hy_plan *local, char *err,
                     size_t errlen);

/* The plan of the local layers as a plan of the whole model (n_tensors of d):
 * tensors of remote layers get tier RAM and no group (libllama's overrides send
 * them to their device before hypura's tiers are matched), sizes and
 * predictions as the local plan has them, except pred_tok_s = the whole
 * prediction. 0, or < 0 when out of memory. */
int hy_plan_rpc_expand(const hy_model_desc *d, const hy_rpc_plan *rp, const hy_plan *local, hy_plan *out);

#endif
