#include "cli/cli_sched.h"

#include <errno.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_omp.h"
#include "engine/hy_session_rpc.h"
#include "io/hy_io.h"
#include "util/hy_util.h"

int hy_cli_sched_opt(const char *cmd, int c, const char *arg, hy_session_params *p) {
    switch (c) {
    case HY_OPT_MEM_BUDGET:
    case HY_OPT_GPU_BUDGET: {
        uint64_t v;
        bool ok = c == HY_OPT_GPU_BUDGET ? hy_gpu_budget_parse(arg, &v) : hy_parse_bytes(arg, &v) && v > 0;
        if (!ok) {
            fprintf(stderr, "hypura %s: '%s' is not a size (e.g. 1.5G, 800M)\n", cmd, arg);
            return -1;
        }
        if (c == HY_OPT_MEM_BUDGET) p->mem_budget = v;
        else p->gpu_budget = v;
        return 1;
    }
    case HY_OPT_LOOKAHEAD: {
        char *end;
        errno = 0;
        long v = strtol(arg, &end, 10);
        if (errno || *end || end == arg || v < 0 || v > 64) {
            fprintf(stderr, "hypura %s: --lookahead takes 0..64\n", cmd);
            return -1;
        }
        p->lookahead = (int)v;
        return 1;
    }
    case HY_OPT_MODE:
        if (!strcmp(arg, "auto")) p->mode = -1;
        else if (!strcmp(arg, "resident")) p->mode = HY_MODE_RESIDENT;
        else if (!strcmp(arg, "stream") || !strcmp(arg, "experts")) p->mode = HY_MODE_EXPERT; /* dense: layers */
        else if (!strcmp(arg, "dense") || !strcmp(arg, "dense-ffn")) p->mode = HY_MODE_DENSE_FFN;
        else {
            fprintf(stderr, "hypura %s: --mode takes auto, resident, stream, dense or experts\n", cmd);
            return -1;
        }
        return 1;
    case HY_OPT_IO:
        if (!strcmp(arg, "auto")) p->io_backend = HY_IO_AUTO;
        else if (!strcmp(arg, "uring")) p->io_backend = HY_IO_URING;
        else if (!strcmp(arg, "pread")) p->io_backend = HY_IO_PREAD;
        else if (!strcmp(arg, "pagecache")) p->pagecache = true;
        else {
            fprintf(stderr, "hypura %s: --io takes auto, uring, pread or pagecache\n", cmd);
            return -1;
        }
        return 1;
    case HY_OPT_CACHE_POLICY:
        if (!strcmp(arg, "lfu")) p->cache_policy = 0;
        else if (!strcmp(arg, "lru")) p->cache_policy = 1;
        else if (!strcmp(arg, "auto")) p->cache_policy = -1;
        else {
            fprintf(stderr, "hypura %s: --cache-policy takes lfu, lru or auto\n", cmd);
            return -1;
        }
        return 1;
    case HY_OPT_GPU_XCACHE: {
        uint64_t v = HY_XCACHE_AUTO;
        /* the cache's errors surface in run (cmd_run checks it after each generation); serve and
         * bench do not look at it yet */
        if (strcmp(cmd, "run") && strcmp(cmd, "estimate")) {
            fprintf(stderr, "hypura %s: --gpu-xcache is for run and estimate (not %s yet)\n", cmd, cmd);
            return -1;
        }
        if (strcmp(arg, "auto") && (!hy_parse_bytes(arg, &v) || v == 0)) {
            fprintf(stderr, "hypura %s: --gpu-xcache takes a size (e.g. 3G) or auto\n", cmd);
            return -1;
        }
        p->gpu_xcache = v;
        return 1;
    }
    case HY_OPT_NO_PREFETCH: p->no_expert_prefetch = true; return 1;
    case HY_OPT_NO_STATS: p->no_persist_stats = true; return 1;
    case HY_OPT_RPC: p->rpc = arg; return 1;
    case HY_OPT_RPC_LINK: p->rpc_link = arg; return 1;
    case HY_OPT_RPC_ASSUME: p->rpc_assume = arg; return 1;
    default:
        return 0;
    }
}

void hy_cli_reexec_passive(void) {
    if (getenv("OMP_WAIT_POLICY")) return;
    FILE *f = fopen("/proc/self/cmdline", "rb");
    if (!f) return;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    if (n == 0 || n >= sizeof buf - 1) return;
    buf[n] = 0;
    char *args[1024];
    int k = 0;
    for (size_t i = 0; i < n && k < 1023; i += strlen(buf + i) + 1) args[k++] = buf + i;
    args[k] = NULL;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    fflush(NULL);
    execv("/proc/self/exe", args);
    unsetenv("OMP_WAIT_POLICY"); /* exec failed: go on as we are */
}

void hy_cli_omp_for_plan(const hy_plan *pl) {
    if (pl->mode == HY_MODE_RESIDENT) return;
    const char *set = getenv("HYPURA_OMP_SPIN_SET"), *sc = getenv("GOMP_SPINCOUNT");
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    /* only where the answer can matter: hypura's short spin, and short waits */
    double others = sc && set && pl->pred_stall_piece_s < HY_OMP_PASSIVE_STALL_S ? hy_omp_others_running() : -1;
    if (!hy_omp_passive_wanted(set, sc, getenv("OMP_WAIT_POLICY"), pl->pred_stall_piece_s, cpus, others)) return;
    char old_sc[32] = "", old_set[192] = "", why[192];
    if (sc) snprintf(old_sc, sizeof old_sc, "%s", sc);
    if (set) snprintf(old_set, sizeof old_set, "%s", set);
    if (sc && others >= 0)
        snprintf(why, sizeof why, "%.1f other tasks running on %ld cpus (the plan expects %.2f ms of waiting per piece of the graph)",
                 others, cpus, pl->pred_stall_piece_s * 1e3);
    else if (sc)
        snprintf(why, sizeof why, "the plan expects %.1f ms of waiting for storage per piece of the graph",
                 pl->pred_stall_piece_s * 1e3);
    else snprintf(why, sizeof why, "the plan streams");
    unsetenv("GOMP_SPINCOUNT"); /* hypura's own short spin (hy_omp_passive_wanted) */
    setenv("HYPURA_OMP_SPIN_SET", why, 1);
    hy_cli_reexec_passive();
    /* not executed again: as it was */
    if (old_sc[0]) setenv("GOMP_SPINCOUNT", old_sc, 1);
    if (old_set[0]) setenv("HYPURA_OMP_SPIN_SET", old_set, 1);
    else unsetenv("HYPURA_OMP_SPIN_SET");
}

void hy_cli_print_omp(const hy_plan *pl) {
    if (pl->mode == HY_MODE_RESIDENT) return;
    char note[256];
    fprintf(stderr, "[hypura] openmp: %s\n", hy_omp_spin_note(note, sizeof note));
}

bool hy_cli_parse_int(const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) return false;
    *out = (int)v;
    return true;
}

bool hy_cli_parse_float(const char *s, float lo, float hi, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || *end || end == s || !(v >= lo && v <= hi)) return false;
    *out = v;
    return true;
}

int hy_cli_draft_opt(int c, const char *arg, const char **draft_path, hy_spec_params *xp, hy_session_params *p) {
    switch (c) {
    case HY_OPT_DRAFT: *draft_path = arg; return 1;
    case HY_OPT_DRAFT_MAX: return hy_cli_parse_int(arg, 0, 64, &xp->draft_max) ? 1 : -1;
    case HY_OPT_DRAFT_FIXED: xp->adaptive = false; return 1;
    case HY_OPT_DRAFT_ACCEPT: { /* an acceptance in (0, 1] */
        float a = 0;
        bool ok = hy_cli_parse_float(arg, 0.0f, 1.0f, &a) && a > 0;
        p->draft_accept = a;
        return ok ? 1 : -1;
    }
    default: return 0;
    }
}

hy_session *hy_cli_session(const char *cmd, const hy_session_params *p, bool show_plan) {
    char err[HY_ERRLEN];
    hy_session *s = NULL;
    /* with remote tiers, re-execute (passive OpenMP wait: this machine's threads idle while a remote
     * device computes) before the first connection: a connection inherited by exec would keep a
     * one-client server busy */
    if (hy_session_rpc_list(p)) hy_cli_reexec_passive();
    if (hy_session_plan(p, &s, err, sizeof err)) {
        fprintf(stderr, "hypura %s: %s\n", cmd, err);
        return NULL;
    }
    bool streams = s->plan.mode != HY_MODE_RESIDENT;
    hy_cli_omp_for_plan(&s->plan); /* may start this process again (cli_omp.h) */
    if (show_plan || streams) hy_session_print_plan(stderr, s, false);
    hy_cli_print_omp(&s->plan);
    if (hy_session_load(s, p, err, sizeof err)) {
        fprintf(stderr, "hypura %s: %s\n", cmd, err);
        hy_session_free(s);
        return NULL;
    }
    return s;
}
