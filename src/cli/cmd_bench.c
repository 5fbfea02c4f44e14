/* hypura bench: A/B of hypura's plan against the naive baseline (libllama's
 * defaults: mmap, repacking), same prompt, tokens and threads, each run as a
 * child process, optionally both inside a cgroup memory group made for the run
 * (--memory-cap) and with a cold page cache (--cold). Writes a JSON result and
 * a PNG chart (gnuplot) under bench/results/. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/cli.h"
#include "cli/cli_sched.h"
#include "util/hy_util.h"

static void bench_usage(FILE *f) {
    fprintf(f,
            "usage: hypura bench MODEL.gguf [options]\n\n"
            "Runs the naive baseline (libllama defaults: mmap + repack, no plan) and hypura's plan\n"
            "on the same prompt, tokens and threads, and reports generation tok/s, bytes read and\n"
            "peak memory of each.\n\n"
            "  -p, --prompt TEXT       prompt (default: a fixed English sentence)\n"
            "  -n, --max-tokens N      tokens to generate (default 16)\n"
            "  -t, --threads N         threads (default: all cores)\n"
            "  -c, --ctx N             context (default 512)\n"
            "      --memory-cap SIZE   run both inside a cgroup memory group of SIZE (root, cgroup v1/v2);\n"
            "                          also the default --memory-budget of the hypura run\n"
            "      --cold              drop the page cache before each run (root)\n"
            "      --force             run the baseline even when the model does not fit in RAM\n"
            "      --out DIR           where to write bench-<time>.json/.png (default bench/results)\n" HY_SCHED_HELP
            "  -h, --help              this help\n");
}

struct result {
    const char *name;
    int exit_code;
    bool killed;
    double gen_tps, prompt_tps;
    double pred_tps;    /* the plan's predicted generation tok/s (hypura's run); 0 = none */
    uint64_t peak;      /* cgroup peak when capped, else the child's max RSS */
    char stats[2048];
};

static char cg_path[512];
static int cg_version;

static int make_cgroup(uint64_t cap, char *err, size_t errlen) {
    if (!access("/sys/fs/cgroup/memory/cgroup.procs", W_OK)) {
        snprintf(cg_path, sizeof cg_path, "/sys/fs/cgroup/memory/hypura-bench-%d", (int)getpid());
        cg_version = 1;
    } else if (!access("/sys/fs/cgroup/cgroup.subtree_control", W_OK)) {
        snprintf(cg_path, sizeof cg_path, "/sys/fs/cgroup/hypura-bench-%d", (int)getpid());
        cg_version = 2;
    } else {
        return hy_fail(err, errlen, "--memory-cap needs a writable cgroup memory controller (run as root)");
    }
    if (mkdir(cg_path, 0755) && errno != EEXIST) return hy_fail(err, errlen, "mkdir %s: %s", cg_path, strerror(errno));
    char f[600];
    snprintf(f, sizeof f, "%s/%s", cg_path, cg_version == 1 ? "memory.limit_in_bytes" : "memory.max");
    FILE *fp = fopen(f, "w");
    if (!fp || fprintf(fp, "%llu\n", (unsigned long long)cap) < 0 || fclose(fp) != 0) {
        rmdir(cg_path);
        return hy_fail(err, errlen, "cannot set the memory limit in %s", cg_path);
    }
    return 0;
}

static uint64_t read_u64(const char *path) {
    FILE *f = fopen(path, "r");
    unsigned long long v = 0;
    if (f) {
        if (fscanf(f, "%llu", &v) != 1) v = 0;
        fclose(f);
    }
    return v;
}

static void reset_cgroup_peak(void) {
    if (cg_version != 1) return;
    char f[600];
    snprintf(f, sizeof f, "%s/memory.max_usage_in_bytes", cg_path);
    FILE *fp = fopen(f, "w");
    if (fp) {
        fputs("0\n", fp);
        fclose(fp);
    }
}

static void drop_caches(void) {
    sync();
    int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
    if (fd >= 0) {
        if (write(fd, "3\n", 2) < 0) { /* best effort */
        }
        close(fd);
    }
}

/* runs argv as a child (in the cgroup when made), its stderr captured and its
 * figures read from the JSON that run --stats-json writes */
static void run_child(char **argv0, struct result *r) {
    char tmpl[] = "/tmp/hypura-bench-XXXXXX";
    char jtmpl[] = "/tmp/hypura-bench-stats-XXXXXX";
    int fd = mkstemp(tmpl);
    int jfd = mkstemp(jtmpl);
    if (fd < 0 || jfd < 0) {
        if (fd >= 0) close(fd), unlink(tmpl);
        if (jfd >= 0) close(jfd), unlink(jtmpl);
        r->exit_code = -1;
        return;
    }
    unlink(tmpl);
    close(jfd);
    char *argv[64];
    int n_args = 0;
    while (argv0[n_args] && n_args < 60) argv[n_args] = argv0[n_args], n_args++;
    argv[n_args++] = "--stats-json";
    argv[n_args++] = jtmpl;
    argv[n_args] = NULL;
    reset_cgroup_peak();
    pid_t pid = fork();
    if (pid == 0) {
        if (cg_path[0]) {
            char f[600];
            snprintf(f, sizeof f, "%s/cgroup.procs", cg_path);
            FILE *fp = fopen(f, "w");
            if (!fp || fprintf(fp, "%d\n", (int)getpid()) < 0 || fclose(fp) != 0) _exit(125);
        }
        dup2(fd, 2);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) dup2(devnull, 1);
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    int st = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    wait4(pid, &st, 0, &ru);
    r->exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r->killed = WIFSIGNALED(st);
    char f[600];
    if (cg_path[0]) {
        snprintf(f, sizeof f, "%s/%s", cg_path, cg_version == 1 ? "memory.max_usage_in_bytes" : "memory.peak");
        r->peak = read_u64(f);
    } else {
        r->peak = (uint64_t)ru.ru_maxrss * 1024;
    }
    static char out[1 << 16];
    ssize_t n = pread(fd, out, sizeof out - 1, 0);
    close(fd);
    out[n > 0 ? n : 0] = 0;
    json_t *js = json_load_file(jtmpl, 0, NULL); /* absent when the run failed */
    unlink(jtmpl);
    r->gen_tps = js ? json_real_value(json_object_get(js, "gen_tps")) : 0;
    r->prompt_tps = js ? json_real_value(json_object_get(js, "prompt_tps")) : 0;
    r->pred_tps = js ? json_real_value(json_object_get(js, "predicted_tok_s")) : 0;
    json_decref(js);
    const char *s = strstr(out, "[hypura] streamed");
    snprintf(r->stats, sizeof r->stats, "%.*s", s ? (int)strcspn(s, "\n") : 0, s ? s : "");
    if (r->exit_code != 0) {
        const char *e = strstr(out, "hypura run: ");
        if (e) snprintf(r->stats, sizeof r->stats, "%.*s", (int)strcspn(e, "\n"), e);
    }
}

int hy_cmd_bench(int argc, char **argv) {
    hy_session_params sp = hy_session_default_params();
    const char *prompt = "The history of the printing press begins";
    const char *outdir = "bench/results";
    int n_gen = 16, threads = 0, n_ctx = 512;
    uint64_t cap = 0;
    bool cold = false, force = false;
    char *sched_args[32];
    char sched_flags[16][48]; /* "--NAME" of each passed-on flag; sched_args points here */
    int n_sched = 0;
    enum { O_CAP = 1000, O_COLD, O_FORCE, O_OUT };
    static const struct option opts[] = {{"prompt", required_argument, 0, 'p'},    {"max-tokens", required_argument, 0, 'n'},
                                         {"threads", required_argument, 0, 't'},   {"ctx", required_argument, 0, 'c'},
                                         {"memory-cap", required_argument, 0, O_CAP}, {"cold", no_argument, 0, O_COLD},
                                         {"force", no_argument, 0, O_FORCE},        {"out", required_argument, 0, O_OUT},
                                         HY_SCHED_LONG_OPTIONS,                     {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "p:n:t:c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'p': prompt = optarg; break;
        case 'n': n_gen = atoi(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'c': n_ctx = atoi(optarg); break;
        case O_CAP:
            if (!hy_parse_bytes(optarg, &cap) || cap < (16u << 20)) {
                fprintf(stderr, "hypura bench: '%s' is not a usable size\n", optarg);
                return 2;
            }
            break;
        case O_COLD: cold = true; break;
        case O_FORCE: force = true; break;
        case O_OUT: outdir = optarg; break;
        case 'h': bench_usage(stdout); return 0;
        default: {
            int r = hy_cli_sched_opt("bench", c, optarg, &sp);
            if (r <= 0) {
                if (r == 0) bench_usage(stderr);
                return 2;
            }
            /* pass it on to the hypura run */
            for (int i = 0; opts[i].name; i++)
                if (opts[i].val == c && n_sched < 30) {
                    char *a = sched_flags[n_sched / 2];
                    snprintf(a, sizeof sched_flags[0], "--%s", opts[i].name);
                    sched_args[n_sched++] = a;
                    sched_args[n_sched++] = optarg;
                }
        }
        }
    }
    if (optind != argc - 1 || n_gen < 1 || n_ctx < 16 || threads < 0) {
        fprintf(stderr, "hypura bench: expected one MODEL and sane -n/-c/-t (see --help)\n");
        return 2;
    }
    const char *model = argv[optind];
    char err[HY_ERRLEN];
    /* remote tiers are the hypura run's alone: this process must not connect (a ggml-rpc-server
     * serves one client at a time) and the baseline (llama.cpp's defaults) uses none */
    static char rpc_env[2048];
    const char *re = getenv("HYPURA_RPC");
    if (re && *re && !sp.rpc && n_sched < 30) {
        snprintf(rpc_env, sizeof rpc_env, "%s", re);
        sched_args[n_sched++] = "--rpc";
        sched_args[n_sched++] = rpc_env;
    }
    unsetenv("HYPURA_RPC");
    hy_session_params sp_plan = sp;
    sp_plan.rpc = sp_plan.rpc_link = sp_plan.rpc_assume = NULL;

    /* does the baseline fit? the whole model resident, plus fixed costs */
    sp.model_path = model;
    sp.engine.n_ctx = n_ctx;
    if (cap && !sp.mem_budget) sp.mem_budget = cap;
    hy_session *plan = NULL;
    sp_plan.mem_budget = sp.mem_budget;
    sp_plan.model_path = sp.model_path;
    sp_plan.engine.n_ctx = sp.engine.n_ctx;
    if (hy_session_plan(&sp_plan, &plan, err, sizeof err)) {
        fprintf(stderr, "hypura bench: %s\n", err);
        return 1;
    }
    uint64_t need = plan->desc->file_size + plan->plan.kv_bytes + plan->plan.compute_bytes + plan->plan.overhead_bytes;
    /* the memory there is: the cap, else the budget the user gave, else RAM minus headroom */
    uint64_t room = cap ? cap : plan->plan_params.mem_budget;
    bool baseline_fits = need <= room;
    char b1[32], b2[32];
    fprintf(stderr, "hypura bench: %s, plan %s; the baseline needs %s, has %s\n", model, hy_mode_name(plan->plan.mode),
            hy_fmt_bytes(need, b1, sizeof b1), hy_fmt_bytes(room, b2, sizeof b2));
    hy_session_free(plan);
    if (!baseline_fits && !force) {
        fprintf(stderr, "hypura bench: the naive baseline cannot fit (it would be killed or thrash); "
                        "use --force to run it anyway\n");
        return 1;
    }
    if (cap && make_cgroup(cap, err, sizeof err)) {
        fprintf(stderr, "hypura bench: %s\n", err);
        return 1;
    }

    char nbuf[16], tbuf[16], cbuf[16], capbuf[32];
    snprintf(nbuf, sizeof nbuf, "%d", n_gen);
    snprintf(tbuf, sizeof tbuf, "%d", threads > 0 ? threads : (int)sysconf(_SC_NPROCESSORS_ONLN));
    snprintf(cbuf, sizeof cbuf, "%d", n_ctx);
    snprintf(capbuf, sizeof capbuf, "%llu", (unsigned long long)cap);
    char *common[] = {"hypura", "run", (char *)model, "-p", (char *)prompt, "-n", nbuf, "--temp", "0", "-t", tbuf, "-c", cbuf};
    enum { NC = sizeof common / sizeof common[0] };
    char *a_base[NC + 4], *a_hy[NC + 40];
    int k = 0;
    for (int i = 0; i < NC; i++) a_base[k++] = common[i];
    a_base[k++] = "--naive";
    a_base[k] = NULL;
    k = 0;
    for (int i = 0; i < NC; i++) a_hy[k++] = common[i];
    for (int i = 0; i < n_sched; i++) a_hy[k++] = sched_args[i];
    if (cap && !sp.mem_budget) {
        a_hy[k++] = "--memory-budget";
        a_hy[k++] = capbuf;
    }
    a_hy[k] = NULL;

    struct result res[2] = {{.name = "llama.cpp defaults (mmap)"}, {.name = "hypura plan"}};
    char **runs[2] = {a_base, a_hy};
    for (int i = 0; i < 2; i++) {
        if (cold) drop_caches();
        fprintf(stderr, "  running %s...\n", res[i].name);
        run_child(runs[i], &res[i]);
        fprintf(stderr, "  %-28s exit %d%s  gen %.2f tok/s  prompt %.2f tok/s  peak %s\n", res[i].name,
                res[i].exit_code, res[i].killed ? " (killed)" : "", res[i].gen_tps, res[i].prompt_tps,
                hy_fmt_bytes(res[i].peak, b1, sizeof b1));
        if (res[i].pred_tps > 0)
            fprintf(stderr, "    gen predicted %.2f tok/s, measured %.2f tok/s (%.2fx the prediction)\n", res[i].pred_tps,
                    res[i].gen_tps, res[i].gen_tps / res[i].pred_tps);
        if (res[i].stats[0]) fprintf(stderr, "    %s\n", res[i].stats);
    }
    if (cg_path[0]) rmdir(cg_path);
    if (res[0].gen_tps > 0 && res[1].gen_tps > 0)
        fprintf(stderr, "  speedup: %.2fx\n", res[1].gen_tps / res[0].gen_tps);

    /* results */
    hy_mkdirs(outdir);
    time_t now = time(NULL);
    char stamp[32], jpath[1024], dpath[1024], ppath[1024];
    strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", gmtime(&now));
    snprintf(jpath, sizeof jpath, "%s/bench-%s.json", outdir, stamp);
    snprintf(dpath, sizeof dpath, "%s/bench-%s.dat", outdir, stamp);
    snprintf(ppath, sizeof ppath, "%s/bench-%s.png", outdir, stamp);
    json_t *o = json_object();
    json_object_set_new(o, "model", json_string(model));
    json_object_set_new(o, "n_gen", json_integer(n_gen));
    json_object_set_new(o, "threads", json_string(tbuf));
    json_object_set_new(o, "memory_cap", json_integer((json_int_t)cap));
    json_object_set_new(o, "cold", json_boolean(cold));
    json_t *arr = json_array();
    for (int i = 0; i < 2; i++) {
        json_t *r = json_object();
        json_object_set_new(r, "name", json_string(res[i].name));
        json_object_set_new(r, "exit", json_integer(res[i].exit_code));
        json_object_set_new(r, "killed", json_boolean(res[i].killed));
        json_object_set_new(r, "gen_tps", json_real(res[i].gen_tps));
        json_object_set_new(r, "prompt_tps", json_real(res[i].prompt_tps));
        if (res[i].pred_tps > 0) json_object_set_new(r, "predicted_tps", json_real(res[i].pred_tps));
        json_object_set_new(r, "peak_bytes", json_integer((json_int_t)res[i].peak));
        json_object_set_new(r, "stats", json_string(res[i].stats));
        json_array_append_new(arr, r);
    }
    json_object_set_new(o, "runs", arr);
    int rc = json_dump_file(o, jpath, JSON_INDENT(2)) ? 1 : 0;
    json_decref(o);
    FILE *d = fopen(dpath, "w");
    if (d) {
        for (int i = 0; i < 2; i++) fprintf(d, "\"%s\" %.4f\n", res[i].name, res[i].gen_tps);
        fclose(d);
        char cmd[4096];
        snprintf(cmd, sizeof cmd,
                 "gnuplot -e \"set terminal png size 640,400; set output '%s'; set style fill solid; set boxwidth 0.5; "
                 "set ylabel 'generation tok/s'; set yrange [0:*]; set title 'hypura bench'; "
                 "plot '%s' using 0:2:xtic(1) with boxes notitle\" 2>/dev/null",
                 ppath, dpath);
        if (system(cmd) != 0) fprintf(stderr, "hypura bench: gnuplot failed; no chart\n");
    }
    fprintf(stderr, "hypura bench: wrote %s and %s\n", jpath, ppath);
    return rc;
}
