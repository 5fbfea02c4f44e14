/* hypura profile: this machine as the planner sees it (cached; see hy_profile.h) */
#include "cli/cli.h"
#include "cli/cli_omp.h"
#include "engine/hy_rpc.h"
#include "profile/hy_matvec.h"
#include "profile/hy_profile.h"
#include "util/hy_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: hypura profile [--refresh] [--json] [--path DIR] [--quick] [--no-storage]\n"
            "  Profiles CPU, RAM and its cgroup limit, memory bandwidth, storage read bandwidth\n"
            "  and GPUs. Measurements are cached (XDG cache dir, profile.json) for 7 days;\n"
            "  RAM and cgroup figures are always read fresh.\n"
            "  --refresh     measure again even if the cache is valid\n"
            "  --json        print the profile as JSON\n"
            "  --path DIR    measure the storage of DIR's filesystem (default: the cache dir)\n"
            "  --quick       small, short measurements (rough figures; for tests)\n"
            "  --no-storage  skip the storage sweep\n"
            "  --rpc HOST:PORT,...  also list these ggml-rpc-server endpoints' devices (name, free/total\n"
            "                memory) and measure the link to each (round trip, upload bandwidth) and its\n"
            "                compute (a Q8_0 matrix-vector product there and here); env HYPURA_RPC\n");
}

static void print_human(const hy_profile *p) {
    char a[32], b[32], c[32];
    printf("CPU      %s: %d logical / %d physical cores\n", p->cpu_model, p->cores_logical, p->cores_physical);
    printf("SIMD     %s\n", p->simd[0] ? p->simd : "(none detected)");
    printf("RAM      %s total, %s available\n", hy_fmt_bytes(p->ram_total, a, sizeof a),
           hy_fmt_bytes(p->ram_available, b, sizeof b));
    if (p->cgroup_limit)
        printf("cgroup   limit %s, in use %s\n", hy_fmt_bytes(p->cgroup_limit, a, sizeof a),
               hy_fmt_bytes(p->cgroup_usage, b, sizeof b));
    else
        printf("cgroup   no memory limit\n");
    printf("budget   %s for a run (default)\n", hy_fmt_bytes(p->mem_budget_default, c, sizeof c));
    printf("memcpy   %.1f GB/s (%d threads)\n", p->mem_bw_gbps, p->cores_logical);
    char omp[192];
    printf("openmp   %s\n", hy_omp_spin_note(omp, sizeof omp));
    printf("matvec  ");
    int shown = 0;
    for (int t = 0; t < HY_MATVEC_NTYPES; t++) {
        const char *name = hy_matvec_type_name(t);
        if (!name || !(p->matvec_gbps[t] > 0)) continue;
        printf("%s %s %.1f", shown && shown % 8 == 0 ? "\n        " : "", name, p->matvec_gbps[t]);
        shown++;
    }
    printf(shown ? " GB/s of weights (one vector, %d threads)\n" : " not measured\n", p->cores_logical);
    printf("graph    %.0f us to start a piece of a graph on %d threads after a pause\n", p->piece_s * 1e6,
           p->cores_logical);
    if (p->n_sweep > 0) {
        printf("storage  %s (%s, %s)\n", p->storage_path, p->storage_fs,
               p->storage_direct ? "O_DIRECT" : "no O_DIRECT: buffered reads");
        printf("         sequential %.2f GB/s best, %.2f GB/s at queue depth 1; 4K random %.0f IOPS\n",
               p->seq_read_gbps, p->seq_read_qd1_gbps, p->rand4k_iops);
    } else {
        printf("storage  %s (%s): not measured\n", p->storage_path, p->storage_fs);
    }
    if (p->n_gpu == 0) printf("GPU      none\n");
    for (int i = 0; i < p->n_gpu; i++) {
        printf("GPU %d    %s (%s): %s total, %s free", i, p->gpu[i].name, p->gpu[i].kind,
               hy_fmt_bytes(p->gpu[i].mem_total, a, sizeof a), hy_fmt_bytes(p->gpu[i].mem_free, b, sizeof b));
        if (p->gpu[i].h2d_gbps > 0) printf(", host->device %.1f GB/s", p->gpu[i].h2d_gbps);
        printf("\n");
    }
}

int hy_cmd_profile(int argc, char **argv) {
    hy_profile_params pp = hy_profile_default_params();
    bool json = false;
    const char *rpc = getenv("HYPURA_RPC");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--refresh")) pp.refresh = true;
        else if (!strcmp(argv[i], "--json")) json = true;
        else if (!strcmp(argv[i], "--quick")) pp.quick = true;
        else if (!strcmp(argv[i], "--no-storage")) pp.storage = false;
        else if (!strcmp(argv[i], "--path") && i + 1 < argc) pp.storage_path = argv[++i];
        else if (!strncmp(argv[i], "--path=", 7)) pp.storage_path = argv[i] + 7;
        else if (!strcmp(argv[i], "--rpc") && i + 1 < argc) rpc = argv[++i];
        else if (!strncmp(argv[i], "--rpc=", 6)) rpc = argv[i] + 6;
        else {
            fprintf(stderr, "hypura profile: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    char cdir[1024] = "";
    hy_cache_dir(cdir, sizeof cdir);
    if (!pp.refresh) fprintf(stderr, "hypura: profiling (cache: %s/profile.json)\n", cdir);
    else fprintf(stderr, "hypura: profiling (--refresh: measuring again)\n");

    hy_profile p;
    char err[HY_ERRLEN];
    if (hy_profile_get(&pp, &p, err, sizeof err)) {
        fprintf(stderr, "hypura profile: %s\n", err);
        return 1;
    }
    hy_rpc r = {0};
    if (rpc && *rpc) {
        if (hy_rpc_parse(rpc, &r, err, sizeof err) || hy_rpc_connect(&r, 5.0, false, err, sizeof err) ||
            hy_rpc_measure(&r, 0, err, sizeof err)) {
            fprintf(stderr, "hypura profile: %s\n", err);
            return 1;
        }
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    double age = now.tv_sec + now.tv_nsec * 1e-9 - p.created;
    if (p.from_cache)
        fprintf(stderr, "hypura: profile from cache %s/profile.json (measured %.0f s ago; --refresh to measure again)\n",
                cdir, age);
    else
        fprintf(stderr, "hypura: profile measured in %.1f s%s; cached in %s/profile.json\n", p.elapsed_s,
                p.quick ? " (quick)" : "", cdir);

    if (json) {
        char *js = NULL;
        if (hy_profile_to_json(&p, &js)) {
            fprintf(stderr, "hypura profile: cannot write JSON\n");
            return 1;
        }
        if (r.n) { /* the profile's JSON with the remote devices added */
            json_t *o = json_loads(js, 0, NULL);
            if (o) {
                json_object_set_new(o, "remote", hy_rpc_json(&r));
                free(js);
                js = json_dumps(o, JSON_INDENT(2));
                json_decref(o);
            }
        }
        printf("%s\n", js);
        free(js);
    } else {
        if (p.from_cache) printf("profile  from cache (measured %.0f s ago)\n", age);
        else printf("profile  measured now in %.1f s%s\n", p.elapsed_s, p.quick ? " (quick)" : "");
        print_human(&p);
        hy_rpc_print(stdout, &r);
    }
    return 0;
}
