/* hypura-mkmodel: command line; see mkmodel.h for what it writes. */
#include "mkmodel.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/hy_util.h"

#ifndef HY_DEFAULT_VOCAB
#define HY_DEFAULT_VOCAB "models/ggml-vocab-llama-spm.gguf"
#endif

static void usage(FILE *f) {
    fprintf(f,
        "usage: hypura-mkmodel -o OUT.gguf [options]\n"
        "Writes a synthetic GGUF model (llama architecture, random weights, real tokenizer).\n"
        "\n"
        "  -o, --output PATH     output file (written to PATH.tmp, renamed when complete)\n"
        "  --dim N               embedding length (default 256)\n"
        "  --layers N            number of blocks (default 4)\n"
        "  --ff N                feed-forward length, per expert for MoE (default 768)\n"
        "  --heads N             attention heads; must divide --dim (default 4)\n"
        "  --kv-heads N          KV heads; must divide --heads (default 2)\n"
        "  --experts N           experts per layer, 0 = dense (default 0; otherwise 2..1024)\n"
        "  --top-k N             experts used per token, <= --experts (default 2; dense: ignored)\n"
        "  --type T              f32|f16|q8_0|q4_0|q4_k|q6_k for the weight matrices (default q8_0);\n"
        "                        norms and the router are always f32\n"
        "  --seed N              random seed (default 1); same options => same bytes\n"
        "  --skew S              0..1, MoE only: how strongly 1-2 hot experts per layer win routing\n"
        "  --ctx N               llama.context_length (default 2048)\n"
        "  --target-size SIZE    pick --layers so the file is about SIZE (e.g. 3G, 800M)\n"
        "  --vocab PATH          GGUF whose tokenizer.* keys are copied\n"
        "                        (default %s)\n"
        "  --threads N           worker threads (default: number of cores)\n"
        "  --quiet               no progress output\n"
        "  -h, --help            this help\n",
        HY_DEFAULT_VOCAB);
}

static const struct { const char *name; enum ggml_type type; } k_types[] = {
    { "f32", GGML_TYPE_F32 },   { "f16", GGML_TYPE_F16 },   { "q8_0", GGML_TYPE_Q8_0 },
    { "q4_0", GGML_TYPE_Q4_0 }, { "q4_k", GGML_TYPE_Q4_K }, { "q6_k", GGML_TYPE_Q6_K },
};

static int parse_i64(const char *opt, const char *v, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "hypura-mkmodel: %s needs an integer in [%lld, %lld], got '%s'\n", opt,
                (long long)lo, (long long)hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

static int default_threads(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n > 256 ? 256 : n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

/* removed by the signal handler if the run is interrupted */
static char g_tmp[PATH_MAX + 8];
static volatile sig_atomic_t g_tmp_live;

static void on_signal(int sig) {
    if (g_tmp_live) unlink(g_tmp);
    signal(sig, SIG_DFL);
    raise(sig);
}

static uint64_t model_size(const mk_opts *o, int64_t layers, char *err, size_t errlen, int *rc) {
    mk_opts t = *o;
    t.layers = layers;
    mk_model m;
    *rc = mk_layout(&m, &t, err, errlen);
    if (*rc) return 0;
    uint64_t s = m.total;
    mk_model_free(&m);
    return s;
}

int main(int argc, char **argv) {
    mk_opts o = {
        .out = NULL, .vocab = HY_DEFAULT_VOCAB,
        .dim = 256, .layers = 4, .ff = 768, .heads = 4, .kv_heads = 2,
        .experts = 0, .top_k = 2, .ctx = 2048,
        .type = GGML_TYPE_Q8_0, .seed = 1, .skew = 0.0,
        .target_size = 0, .threads = default_threads(), .quiet = false,
    };
    bool layers_given = false;
    const int64_t BIG = (int64_t)1 << 30;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) { o.quiet = true; continue; }
        if (a[0] != '-') {
            fprintf(stderr, "hypura-mkmodel: unexpected argument '%s' (see --help)\n", a);
            return 2;
        }
        /* every other option takes a value, as "--opt v" or "--opt=v" */
        const char *v = NULL;
        char opt[64];
        const char *eq = strchr(a, '=');
        if (eq && a[1] == '-') {
            size_t n = (size_t)(eq - a);
            if (n >= sizeof opt) n = sizeof opt - 1;
            memcpy(opt, a, n);
            opt[n] = 0;
            v = eq + 1;
        } else {
            snprintf(opt, sizeof opt, "%s", a);
            if (i + 1 < argc) v = argv[++i];
        }
        if (!v) {
            fprintf(stderr, "hypura-mkmodel: %s needs a value (see --help)\n", opt);
            return 2;
        }
        int64_t x;
        if (!strcmp(opt, "-o") || !strcmp(opt, "--output")) {
            o.out = v;
        } else if (!strcmp(opt, "--vocab")) {
            o.vocab = v;
        } else if (!strcmp(opt, "--dim")) {
            if (parse_i64(opt, v, 1, BIG, &o.dim)) return 2;
        } else if (!strcmp(opt, "--layers")) {
            if (parse_i64(opt, v, 1, 65536, &o.layers)) return 2;
            layers_given = true;
        } else if (!strcmp(opt, "--ff")) {
            if (parse_i64(opt, v, 1, BIG, &o.ff)) return 2;
        } else if (!strcmp(opt, "--heads")) {
            if (parse_i64(opt, v, 1, 65536, &o.heads)) return 2;
        } else if (!strcmp(opt, "--kv-heads")) {
            if (parse_i64(opt, v, 1, 65536, &o.kv_heads)) return 2;
        } else if (!strcmp(opt, "--experts")) {
            if (parse_i64(opt, v, 0, 1024, &o.experts)) return 2;
        } else if (!strcmp(opt, "--top-k")) {
            if (parse_i64(opt, v, 1, 1024, &o.top_k)) return 2;
        } else if (!strcmp(opt, "--ctx")) {
            if (parse_i64(opt, v, 1, (int64_t)1 << 24, &o.ctx)) return 2;
        } else if (!strcmp(opt, "--threads")) {
            if (parse_i64(opt, v, 1, 256, &x)) return 2;
            o.threads = (int)x;
        } else if (!strcmp(opt, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') {
                fprintf(stderr, "hypura-mkmodel: --seed needs a non-negative integer, got '%s'\n", v);
                return 2;
            }
            o.seed = s;
        } else if (!strcmp(opt, "--skew")) {
            char *end;
            errno = 0;
            double s = strtod(v, &end);
            if (errno || end == v || *end || !(s >= 0.0 && s <= 1.0)) {
                fprintf(stderr, "hypura-mkmodel: --skew needs a number in [0, 1], got '%s'\n", v);
                return 2;
            }
            o.skew = s;
        } else if (!strcmp(opt, "--type")) {
            size_t k;
            for (k = 0; k < sizeof k_types / sizeof k_types[0]; k++)
                if (!strcasecmp(v, k_types[k].name)) break;
            if (k == sizeof k_types / sizeof k_types[0]) {
                fprintf(stderr, "hypura-mkmodel: unknown --type '%s' (f32, f16, q8_0, q4_0, q4_k, q6_k)\n", v);
                return 2;
            }
            o.type = k_types[k].type;
        } else if (!strcmp(opt, "--target-size")) {
            if (!hy_parse_bytes(v, &o.target_size) || o.target_size == 0) {
                fprintf(stderr, "hypura-mkmodel: --target-size needs a size like 3G or 800M, got '%s'\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "hypura-mkmodel: unknown option '%s' (see --help)\n", opt);
            return 2;
        }
    }

    /* validation: everything llama.cpp would reject, reported up front */
#define BAD(...) do { fprintf(stderr, "hypura-mkmodel: " __VA_ARGS__); fputc('\n', stderr); return 2; } while (0)
    if (!o.out || !*o.out) BAD("-o OUT.gguf is required (see --help)");
    if (o.dim % o.heads) BAD("--heads %lld must divide --dim %lld", (long long)o.heads, (long long)o.dim);
    if ((o.dim / o.heads) % 2) BAD("head size --dim/--heads = %lld must be even (RoPE)", (long long)(o.dim / o.heads));
    if (o.heads % o.kv_heads) BAD("--kv-heads %lld must divide --heads %lld", (long long)o.kv_heads, (long long)o.heads);
    if (o.experts == 1) BAD("--experts must be 0 (dense) or at least 2");
    if (o.experts > 0 && o.top_k > o.experts)
        BAD("--top-k %lld must be <= --experts %lld", (long long)o.top_k, (long long)o.experts);
    if (o.experts == 0 && o.skew > 0) BAD("--skew applies to MoE models only (--experts > 0)");
    if (o.target_size && layers_given) BAD("use either --layers or --target-size, not both");
    int64_t blk = ggml_blck_size(o.type);
    if (o.dim % blk || o.ff % blk)
        BAD("--type %s needs --dim and --ff to be multiples of %lld (got dim %lld, ff %lld)",
            ggml_type_name(o.type), (long long)blk, (long long)o.dim, (long long)o.ff);
    if (o.dim > UINT32_MAX || o.ff > UINT32_MAX) BAD("--dim/--ff too large");
    /* ne[0]*ne[1]*ne[2] of the biggest tensor must fit comfortably in int64 */
    if ((double)o.dim * (double)o.ff * (double)(o.experts ? o.experts : 1) > 1e15)
        BAD("tensors of dim %lld x ff %lld are too large", (long long)o.dim, (long long)o.ff);

    size_t olen = strlen(o.out);
    if (olen + 5 > sizeof g_tmp) BAD("output path too long");
    struct stat vs, os;
    if (stat(o.vocab, &vs) != 0) BAD("cannot open vocab %s: %s", o.vocab, strerror(errno));
    snprintf(g_tmp, sizeof g_tmp, "%s.tmp", o.out);
    struct stat ts;
    if (stat(o.out, &os) == 0 && os.st_dev == vs.st_dev && os.st_ino == vs.st_ino)
        BAD("refusing to overwrite the vocab file %s", o.vocab);
    if (stat(g_tmp, &ts) == 0 && ts.st_dev == vs.st_dev && ts.st_ino == vs.st_ino)
        BAD("refusing to overwrite the vocab file %s", o.vocab);
    if (stat(o.out, &os) == 0 && S_ISDIR(os.st_mode)) BAD("%s is a directory", o.out);

    char err[HY_ERRLEN];
    char sz[32];
    if (o.target_size) {
        int rc;
        uint64_t s1 = model_size(&o, 1, err, sizeof err, &rc);
        if (rc) BAD("%s", err);
        uint64_t s2 = model_size(&o, 2, err, sizeof err, &rc);
        if (rc) BAD("%s", err);
        uint64_t per = s2 - s1;
        if (o.target_size < s1)
            BAD("--target-size %s is smaller than a 1-layer model of these shapes (%s)",
                hy_fmt_bytes(o.target_size, sz, sizeof sz), hy_fmt_bytes(s1, err, sizeof err));
        uint64_t l = 1 + (o.target_size - s1 + per / 2) / per;
        if (l > 65536) BAD("--target-size needs %llu layers; use a larger --dim/--ff", (unsigned long long)l);
        o.layers = (int64_t)l;
    }
#undef BAD

    mk_model m;
    if (mk_layout(&m, &o, err, sizeof err)) {
        fprintf(stderr, "hypura-mkmodel: %s\n", err);
        return 1;
    }
    if (!o.quiet) {
        fprintf(stderr, "mkmodel: %s: %s%s, dim %lld, %lld layers, ff %lld, heads %lld/%lld",
                o.out, o.experts ? "MoE " : "dense ", ggml_type_name(o.type), (long long)o.dim,
                (long long)o.layers, (long long)o.ff, (long long)o.heads, (long long)o.kv_heads);
        if (o.experts) fprintf(stderr, ", %lld experts top-%lld, skew %.2f", (long long)o.experts,
                               (long long)o.top_k, o.skew);
        fprintf(stderr, ", %s, %d threads\n", hy_fmt_bytes(m.total, sz, sizeof sz), o.threads);
    }

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);
    double t0 = hy_now();
    int fd = open(g_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "hypura-mkmodel: cannot create %s: %s\n", g_tmp, strerror(errno));
        mk_model_free(&m);
        return 1;
    }
    g_tmp_live = 1;
    int rc = mk_write(&m, fd, g_tmp, err, sizeof err);
    if (rc == 0 && ftruncate(fd, (off_t)m.total) != 0)
        rc = hy_fail(err, sizeof err, "write %s: %s", g_tmp, strerror(errno));
    if (close(fd) != 0 && rc == 0) rc = hy_fail(err, sizeof err, "write %s: %s", g_tmp, strerror(errno));
    if (rc == 0 && rename(g_tmp, o.out) != 0)
        rc = hy_fail(err, sizeof err, "rename %s -> %s: %s", g_tmp, o.out, strerror(errno));
    if (rc) {
        unlink(g_tmp);
        g_tmp_live = 0;
        fprintf(stderr, "hypura-mkmodel: %s\n", err);
        mk_model_free(&m);
        return 1;
    }
    g_tmp_live = 0;
    double el = hy_now() - t0;
    printf("%s %llu bytes (%s) in %.1f s\n", o.out, (unsigned long long)m.total, hy_fmt_bytes(m.total, sz, sizeof sz), el);
    mk_model_free(&m);
    ggml_quantize_free();
    return 0;
}
