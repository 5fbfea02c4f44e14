/* hy_rpc: other machines' memory and compute through ggml's RPC backend
 * (ggml-rpc, a `ggml-rpc-server` on each machine): endpoints, the checks made
 * before libggml is let near one, the devices, the link's figures, and what
 * happens when a remote server dies or stalls.
 *
 * Why the checks: ggml-rpc aborts the process on any connection failure, and
 * its connect and reads have no timeout. So an endpoint is first tried here,
 * with timeouts: resolved (IPv4, as ggml-rpc does), connected, and given the
 * protocol's HELLO (a server busy with another client, which ggml-rpc-server
 * serves one at a time, does not answer it). Only an endpoint that answered
 * with this build's protocol version is handed to ggml_backend_rpc_add_server.
 *
 * Security: the RPC protocol has no authentication and no encryption; anyone
 * who reaches the port can read, write and run what the server holds. An
 * endpoint that is not on loopback or a private network (RFC 1918, link-local)
 * is warned about. hypura never starts a server itself except in the demo,
 * bench and tests, and those bind 127.0.0.1.
 *
 * Faults: hy_rpc_connect starts hy_rpc_guard_start: ggml's abort callback and a watchdog.
 * A server that closes the connection (it died) makes ggml-rpc abort: the
 * callback names the endpoint and ends the process with HY_RPC_EXIT_LOST
 * instead of a core dump. A server that stops answering (a request sent, no
 * byte moving either way for `timeout_s` seconds while a thread waits on its socket —
 * an answer, or room to send — seen in the socket's TCP counters) is cut
 * off by the watchdog (shutdown of that socket), which leads to the same
 * message. `serve` sets re-exec: the process starts again without the lost
 * device (hy_rpc_lost_endpoints) and keeps answering.
 *
 * The RPC backend is found at run time (ggml_backend_reg_by_name("RPC")), so a
 * libggml built without it fails --rpc with a clear message, nothing else. */
#ifndef HY_RPC_H
#define HY_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "ggml-backend.h"
#include "plan/hy_plan_rpc.h"

#define HY_RPC_MAX_ENDPOINTS 8
#define HY_RPC_EXIT_LOST 3          /* exit status after a lost remote server */
#define HY_RPC_DEFAULT_TIMEOUT_S 120 /* HYPURA_RPC_TIMEOUT: seconds without an answer to a request */

typedef struct {
    char     endpoint[128];   /* as given: HOST:PORT */
    char     host[100];
    int      port;
    uint64_t budget;          /* @SIZE given, else 0: the device's free memory less headroom */
    char     addr[64];        /* resolved IPv4 address */
    bool     loopback, private_net;
    /* after hy_rpc_connect */
    ggml_backend_dev_t dev;   /* the server's first device */
    char     dev_name[64];    /* libggml's name (RPC0, ...) */
    size_t   mem_free, mem_total;
    /* after hy_rpc_measure */
    double   rtt_s, up_gbps;  /* round trip (median), upload bandwidth */
    double   matvec_gbps;     /* weight bytes per second of a Q8_0 matrix-vector product on it */
} hy_rpc_endpoint;

typedef struct {
    int n;
    hy_rpc_endpoint ep[HY_RPC_MAX_ENDPOINTS];
    double local_matvec_gbps; /* the same product on this machine's CPU (hy_rpc_measure) */
} hy_rpc;

/* "HOST:PORT[@SIZE][,HOST:PORT...]": parsed, resolved and classified. An
 * endpoint outside loopback/private networks gets a warning on stderr. */
int hy_rpc_parse(const char *list, hy_rpc *out, char *err, size_t errlen);

/* The pre-check alone (resolve, connect, HELLO) with a timeout; 0 when the
 * endpoint is an RPC server of this protocol that answers now. */
int hy_rpc_probe(const hy_rpc_endpoint *e, double timeout_s, char *err, size_t errlen);

/* Whether this libggml has the RPC backend. */
bool hy_rpc_available(void);

/* Probe each endpoint, then add it to libggml; fills dev and memory. Errors name
 * the endpoint. Drops (with a warning) the endpoints that fail when keep_going. */
int hy_rpc_connect(hy_rpc *r, double timeout_s, bool keep_going, char *err, size_t errlen);

/* Round trip, upload bandwidth and matrix-vector speed of each device (and of
 * the local CPU with n_threads, for the ratio). A few hundred ms. */
int hy_rpc_measure(hy_rpc *r, int n_threads, char *err, size_t errlen);

/* The link figures the plan uses: the slowest endpoint's (measured). */
hy_rpc_link hy_rpc_link_of(const hy_rpc *r);

/* Start fault handling for a loaded run: the abort callback and, when
 * timeout_s > 0, the stall watchdog. reexec: on a lost server, re-execute this
 * process with HYPURA_RPC_LOST naming the endpoint (serve), else exit. */
void hy_rpc_guard_start(const hy_rpc *r, double timeout_s, bool reexec);
void hy_rpc_guard_stop(void);

/* `profile --rpc`: each endpoint, its device and memory, the link and the product speed */
void hy_rpc_print(FILE *f, const hy_rpc *r);
struct json_t *hy_rpc_json(const hy_rpc *r);

/* HYPURA_RPC_TIMEOUT or the default, in seconds (0: no watchdog) */
double hy_rpc_timeout_s(void);

/* endpoints a re-executed serve lost (HYPURA_RPC_LOST), comma-separated, or NULL */
const char *hy_rpc_lost_endpoints(void);

#endif
