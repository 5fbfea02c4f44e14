/* The session's remote tiers (--rpc, HYPURA_RPC; --rpc-assume for estimate's
 * what-ifs): the glue between hy_rpc (endpoints, devices, link figures,
 * faults), hy_plan_rpc (which layers go where, and the prediction) and the
 * engine (libllama's devices, tensor split and overrides).
 *
 * Invariants: endpoints are connected and measured once per process (ggml-rpc
 * holds one connection per endpoint for the process's life, and a server
 * serves one client at a time); a session whose plan uses no remote layer
 * gives libllama no remote device; the remote layers' overrides come before
 * hypura's own, so they win. */
#ifndef HY_SESSION_RPC_H
#define HY_SESSION_RPC_H

#include <stdio.h>

#include "engine/hy_rpc.h"
#include "hypura.h"
#include "plan/hy_plan_rpc.h"

typedef struct hy_session_rpc {
    hy_rpc r;                         /* the endpoints (none when assumed) */
    bool assumed;                     /* --rpc-assume: devices on paper */
    int n_dev;
    hy_rpc_dev_figures dev[HY_RPC_MAX_DEVICES];
    hy_rpc_link link;
    hy_rpc_plan plan;
    bool used;                        /* some layer is remote */
    ggml_backend_dev_t devs[HY_RPC_MAX_DEVICES + 1];
    float split[HY_RPC_MAX_DEVICES];
    struct llama_model_tensor_buft_override *ovr;
    int n_own;                        /* patterns of ours at the head of ovr */
    bool dropped;                     /* some endpoint given was left out (lost, or unreachable in serve) */
} hy_session_rpc;

/* the endpoints asked for: params, else HYPURA_RPC; NULL for none */
const char *hy_session_rpc_list(const hy_session_params *p);
/* plan with remote tiers: s->rpc and s->plan (the whole model's) */
int  hy_session_rpc_plan(hy_session *s, const hy_session_params *p, char *err, size_t errlen);
/* the engine's devices, split and overrides (ep->overrides: hypura's, to put after ours) */
int  hy_session_rpc_engine(hy_session *s, hy_engine_params *ep, char *err, size_t errlen);
/* after the load: fault handling (abort callback, stall watchdog) */
void hy_session_rpc_loaded(hy_session *s, const hy_session_params *p);
void hy_session_rpc_free(hy_session *s);
void hy_session_rpc_print(FILE *f, const hy_session *s);
struct json_t *hy_session_rpc_json(const hy_session *s);

#endif
