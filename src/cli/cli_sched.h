/* Scheduler flags shared by run, bench, estimate, inspect --plan and serve. */
#ifndef HY_CLI_SCHED_H
#define HY_CLI_SCHED_H

#include <getopt.h>
#include <stdio.h>

#include "engine/hy_spec.h"
#include "hypura.h"

enum {
    HY_OPT_MEM_BUDGET = 2000,
    HY_OPT_GPU_BUDGET,
    HY_OPT_LOOKAHEAD,
    HY_OPT_MODE,
    HY_OPT_IO,
    HY_OPT_CACHE_POLICY,
    HY_OPT_NO_PREFETCH,
    HY_OPT_NO_STATS,
    HY_OPT_RPC,
    HY_OPT_RPC_LINK,
    HY_OPT_RPC_ASSUME,
    HY_OPT_DRAFT,
    HY_OPT_DRAFT_MAX,
    HY_OPT_DRAFT_FIXED,
    HY_OPT_DRAFT_ACCEPT,
    HY_OPT_GPU_XCACHE,
};

#define HY_SCHED_LONG_OPTIONS                                                                                   \
    {"memory-budget", required_argument, 0, HY_OPT_MEM_BUDGET}, {"gpu-budget", required_argument, 0, HY_OPT_GPU_BUDGET}, \
        {"lookahead", required_argument, 0, HY_OPT_LOOKAHEAD}, {"mode", required_argument, 0, HY_OPT_MODE},    \
        {"io", required_argument, 0, HY_OPT_IO}, {"cache-policy", required_argument, 0, HY_OPT_CACHE_POLICY},     \
        {"no-prefetch", no_argument, 0, HY_OPT_NO_PREFETCH}, {"no-stats", no_argument, 0, HY_OPT_NO_STATS}, \
        {"rpc", required_argument, 0, HY_OPT_RPC}, {"rpc-link", required_argument, 0, HY_OPT_RPC_LINK},        \
        {"rpc-assume", required_argument, 0, HY_OPT_RPC_ASSUME}, {"gpu-xcache", required_argument, 0, HY_OPT_GPU_XCACHE}

/* speculative decoding's flags, shared by run and serve (hy_cli_draft_opt) */
#define HY_DRAFT_LONG_OPTIONS                                                                                  \
    {"draft", required_argument, 0, HY_OPT_DRAFT}, {"draft-max", required_argument, 0, HY_OPT_DRAFT_MAX},     \
        {"draft-fixed", no_argument, 0, HY_OPT_DRAFT_FIXED}, {"draft-accept", required_argument, 0, HY_OPT_DRAFT_ACCEPT}

#define HY_SCHED_HELP                                                                                         \
    "  --memory-budget SIZE    RAM the run may use (e.g. 1.5G; default: available RAM or the cgroup\n"      \
    "                          limit minus headroom; env HYPURA_MEMORY_BUDGET)\n"                           \
    "  --gpu-budget SIZE       VRAM the plan may use on the first GPU (weights, K/V, compute; default:\n"  \
    "                          its free memory less max(1 GiB, 5 pct); 0 or none: no GPU; env HYPURA_GPU_BUDGET)\n" \
    "  --gpu-xcache SIZE|auto  an expert cache in VRAM, taken out of the GPU budget: the MoE layers whose\n" \
    "                          experts stay in RAM compute them on the GPU from a window of slots per\n" \
    "                          layer, filled with the routed experts over PCIe (full-resident plans);\n" \
    "                          auto: the budget less the output head, attention, K/V and compute\n" \
    "  --mode MODE             auto | resident | stream (force streaming even when it fits: the\n"         \
    "                          experts of a MoE model, layer groups of a dense one) | dense (whole\n"    \
    "                          layer groups, for MoE too: every expert of a layer) | experts\n"         \
    "  --lookahead N           layer groups read ahead of compute (default: adaptive, up to the plan's)\n"  \
    "  --io BACKEND            auto | uring | pread (direct-I/O backend) | pagecache (experts through\n"    \
    "                          the page cache: mmap + MADV_WILLNEED of the routed slices)\n"                                 \
    "  --cache-policy P        expert cache eviction: lfu (decayed use count) | lru | auto (default: the one\n" \
    "                          this model's earlier runs measured hitting more, else lfu)\n"            \
    "  --no-prefetch           do not prefetch the next layer's predicted experts\n"                       \
    "  --no-stats              neither load nor save the co-activation statistics (XDG data dir)\n"      \
    "  --rpc HOST:PORT[@SIZE],...  other machines' memory as tiers: ggml-rpc-server endpoints (env\n"      \
    "                          HYPURA_RPC); @SIZE caps what the plan puts there (default: its free memory\n" \
    "                          less headroom). The protocol has NO authentication: private networks only\n" \
    "  --rpc-link LINK         plan with an assumed link instead of the measured one: 1gbe | 10gbe |\n"  \
    "                          25gbe | RTT_US,GBPS\n"                                                   \
    "  --rpc-assume SIZE,...   estimate only: remote devices on paper, as fast as this machine\n"

/* strict number parsing for flags: the whole string, within [lo, hi] */
bool hy_cli_parse_int(const char *s, long lo, long hi, int *out);
bool hy_cli_parse_float(const char *s, float lo, float hi, float *out);

/* 1 if c was a drafting option (applied to *draft_path, *xp, p), 0 if not ours, -1 on a bad
 * value (the caller names it). */
int hy_cli_draft_opt(int c, const char *arg, const char **draft_path, hy_spec_params *xp, hy_session_params *p);

/* 1 if c was a scheduler option (applied), 0 if not ours, -1 on a bad value (message printed). */
int hy_cli_sched_opt(const char *cmd, int c, const char *arg, hy_session_params *p);

/* Streaming leaves the CPU threads idle while a read is in flight; OpenMP's
 * default active wait would then spin on the cores the I/O completion needs
 * (measured here: 2-6x slower streamed decode on 2 cores). libgomp reads
 * OMP_WAIT_POLICY once at load, so when it is unset this re-executes the
 * process with OMP_WAIT_POLICY=passive. Returns only when it did not. */
void hy_cli_reexec_passive(void);
/* After the plan: a streamed plan re-executes with a passive wait where hy_omp_passive_wanted
 * says so (cli_omp.h), restoring what was set when it cannot. */
void hy_cli_omp_for_plan(const hy_plan *pl);
/* "[hypura] openmp: ..." for a streamed plan: how the threads wait */
void hy_cli_print_omp(const hy_plan *pl);

/* What run and serve do to start: plan (header + profile, read once), re-exec
 * with a passive OpenMP wait when the plan streams, print the plan (always when
 * it streams), load. NULL after printing "hypura CMD: reason". */
hy_session *hy_cli_session(const char *cmd, const hy_session_params *p, bool show_plan);

#endif
