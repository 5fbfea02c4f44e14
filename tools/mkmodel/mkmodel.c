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
        "Writes a synthetic GGUF model (random weights, real tokenizer) in the layout of a\n"
        "llama.cpp architecture.\n"
        "\n"
        "  -o, --output PATH     output file (written to PATH.tmp, renamed when complete)\n"
        "  --arch A              llama (default: dense, or Mixtral-style MoE with --experts),\n"
        "                        qwen3moe (attention q/k norms), qwen2moe (plus a shared expert),\n"
        "                        gpt-oss (MXFP4 experts with biases, attention sinks and biases,\n"
        "                        sliding window); the last three are MoE and need --experts\n"
        "  --dim N               embedding length (default 256)\n"
        "  --layers N            number of blocks (default 4)\n"
        "  --ff N                feed-forward length; llama MoE: per expert; gpt-oss: = --expert-ff\n"
        "                        (default 768)\n"
        "  --expert-ff N         qwen3moe/qwen2moe/gpt-oss: FFN length of each expert (default --ff)\n"
        "  --shared-ff N         qwen2moe: FFN length of the shared expert (default --ff)\n"
        "  --heads N             attention heads (default 4)\n"
        "  --kv-heads N          KV heads; must divide --heads (default 2)\n"
        "  --head-dim N          qwen3moe/gpt-oss: size of a head (default --dim/--heads; the\n"
        "                        released models: 128 and 64)\n"
        "  --sliding-window N    gpt-oss: sliding-window length of every other layer (default 128)\n"
        "  --experts N           experts per layer, 0 = dense (default 0; otherwise 2..1024)\n"
        "  --top-k N             experts used per token, <= --experts (default 2; dense: ignored)\n"
        "  --type T              f32|f16|q8_0|q4_0|q4_k|q6_k|mxfp4 for the weight matrices\n"
        "                        (default q8_0); norms, biases and the router are always f32\n"
        "  --expert-type T       the same for the experts (default: mxfp4 for gpt-oss, else --type)\n"
        "  --routing R           MoE routing: skew (default; see --skew) or zipf (per layer, expert\n"
        "                        popularity falls as a power of its rank, ~10%% of the experts take\n"
        "                        most selections, the hot set moves with the prompt)\n"
        "  --skew S              0..1, --routing skew: how strongly 1-2 hot experts per layer win\n"
        "  --seed N              random seed (default 1); same options => same bytes\n"
        "  --ctx N               <arch>.context_length (default 2048)\n"
        "  --target-size SIZE    pick --layers so the file is about SIZE (e.g. 3G, 800M)\n"
        "  --vocab PATH          GGUF whose tokenizer.* keys are copied\n"
        "                        (default %s)\n"
        "  --threads N           worker threads (default: number of cores)\n"
        "  --layer-scale S       scale of what each block writes into the residual stream (default 1:\n"
        "                        all blocks together as much as the embedding; smaller: later blocks\n"
        "                        change the prediction less, so an early-exit draft agrees more)\n"
        "  --draft-of TARGET     write an early-exit draft of TARGET.gguf instead: its vocabulary,\n"
        "                        metadata, embeddings, output norm and head and its first --layers\n"
        "                        blocks, bytes unchanged (a draft that agrees with it measurably;\n"
        "                        an unrelated draft is any other model of the same --vocab)\n"
        "  --quiet               no progress output\n"
        "  -h, --help            this help\n",
        HY_DEFAULT_VOCAB);
}

static const struct { const char *name; enum ggml_type type; } k_types[] = {
    { "f32", GGML_TYPE_F32 },   { "f16", GGML_TYPE_F16 },   { "q8_0", GGML_TYPE_Q8_0 },
    { "q4_0", GGML_TYPE_Q4_0 }, { "q4_k", GGML_TYPE_Q4_K }, { "q6_k", GGML_TYPE_Q6_K },
    { "mxfp4", GGML_TYPE_MXFP4 },
};

static int parse_type(const char *opt, const char *v, enum ggml_type *out) {
    for (size_t k = 0; k < sizeof k_types / sizeof k_types[0]; k++)
        if (!strcasecmp(v, k_types[k].name)) {
            *out = k_types[k].type;
            return 0;
        }
    fprintf(stderr, "hypura-mkmodel: unknown %s '%s' (f32, f16, q8_0, q4_0, q4_k, q6_k, mxfp4)\n", opt, v);
    return -1;
}

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
        .out = NULL, .vocab = HY_DEFAULT_VOCAB, .arch = MK_ARCH_LLAMA,
        .dim = 256, .layers = 4, .ff = 768, .heads = 4, .kv_heads = 2,
        .experts = 0, .top_k = 2, .ctx = 2048,
        .type = GGML_TYPE_Q8_0, .expert_type = GGML_TYPE_COUNT, .seed = 1,
        .routing = MK_ROUTING_SKEW, .skew = 0.0, .layer_scale = 1.0,
        .target_size = 0, .threads = default_threads(), .quiet = false,
    };
    bool layers_given = false, skew_given = false, routing_given = false;
    /* 0: not given (arch defaults below) */
    int64_t expert_ff = 0, shared_ff = 0, head_dim = 0, swa = 0;
    const char *draft_of = NULL;
    int n_given = 0; /* options given besides -o, --layers, --draft-of and --quiet */
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
        if (strcmp(opt, "-o") && strcmp(opt, "--output") && strcmp(opt, "--layers") && strcmp(opt, "--draft-of"))
            n_given++;
        if (!strcmp(opt, "-o") || !strcmp(opt, "--output")) {
            o.out = v;
        } else if (!strcmp(opt, "--layer-scale")) {
            char *end;
            errno = 0;
            double s = strtod(v, &end);
            if (errno || end == v || *end || !(s > 0.0 && s <= 10.0)) {
                fprintf(stderr, "hypura-mkmodel: --layer-scale needs a number in (0, 10], got '%s'\n", v);
                return 2;
            }
            o.layer_scale = s;
        } else if (!strcmp(opt, "--draft-of")) {
            draft_of = v;
        } else if (!strcmp(opt, "--vocab")) {
            o.vocab = v;
        } else if (!strcmp(opt, "--dim")) {
            if (parse_i64(opt, v, 1, BIG, &o.dim)) return 2;
        } else if (!strcmp(opt, "--layers")) {
            if (parse_i64(opt, v, 1, 65536, &o.layers)) return 2;
            layers_given = true;
        } else if (!strcmp(opt, "--arch")) {
            int a = mk_arch_parse(v);
            if (a < 0) {
                fprintf(stderr, "hypura-mkmodel: unknown --arch '%s' (llama, qwen3moe, qwen2moe, gpt-oss)\n", v);
                return 2;
            }
            o.arch = (mk_arch)a;
        } else if (!strcmp(opt, "--ff")) {
            if (parse_i64(opt, v, 1, BIG, &o.ff)) return 2;
        } else if (!strcmp(opt, "--expert-ff")) {
            if (parse_i64(opt, v, 1, BIG, &expert_ff)) return 2;
        } else if (!strcmp(opt, "--shared-ff")) {
            if (parse_i64(opt, v, 1, BIG, &shared_ff)) return 2;
        } else if (!strcmp(opt, "--head-dim")) {
            if (parse_i64(opt, v, 1, 65536, &head_dim)) return 2;
        } else if (!strcmp(opt, "--sliding-window")) {
            if (parse_i64(opt, v, 1, (int64_t)1 << 24, &swa)) return 2;
        } else if (!strcmp(opt, "--routing")) {
            if (!strcmp(v, "skew")) o.routing = MK_ROUTING_SKEW;
            else if (!strcmp(v, "zipf")) o.routing = MK_ROUTING_ZIPF;
            else {
                fprintf(stderr, "hypura-mkmodel: unknown --routing '%s' (skew, zipf)\n", v);
                return 2;
            }
            routing_given = true;
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
            skew_given = true;
        } else if (!strcmp(opt, "--type")) {
            if (parse_type(opt, v, &o.type)) return 2;
        } else if (!strcmp(opt, "--expert-type")) {
            if (parse_type(opt, v, &o.expert_type)) return 2;
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
#define LL(x) ((long long)(x))
    const char *an = mk_arch_name(o.arch);
    const bool llama = o.arch == MK_ARCH_LLAMA;
    if (!o.out || !*o.out) BAD("-o OUT.gguf is required (see --help)");
    if (draft_of) {
        if (!layers_given) BAD("--draft-of needs --layers N (the blocks the draft keeps)");
        if (n_given) BAD("--draft-of takes only -o, --layers and --quiet (the rest comes from the target)");
        char derr[HY_ERRLEN];
        if (mk_draft_of(draft_of, o.layers, o.out, o.quiet, derr, sizeof derr)) {
            fprintf(stderr, "hypura-mkmodel: %s\n", derr);
            return 1;
        }
        return 0;
    }
    if (!llama && o.experts == 0)
        BAD("--arch %s is a MoE layout: give --experts N (2..1024) and --top-k", an);
    if (o.experts == 1) BAD("--experts must be 0 (dense) or at least 2");
    if (o.experts > 0 && o.top_k > o.experts) BAD("--top-k %lld must be <= --experts %lld", LL(o.top_k), LL(o.experts));
    if (expert_ff && o.experts == 0) BAD("--expert-ff applies to MoE models only (--experts > 0)");
    if (expert_ff && llama) BAD("--expert-ff needs --arch qwen3moe, qwen2moe or gpt-oss (llama's experts use --ff)");
    if (shared_ff && o.arch != MK_ARCH_QWEN2MOE) BAD("--shared-ff applies to --arch qwen2moe only (its shared expert)");
    if (swa && o.arch != MK_ARCH_GPT_OSS) BAD("--sliding-window applies to --arch gpt-oss only");
    if (head_dim && o.arch != MK_ARCH_QWEN3MOE && o.arch != MK_ARCH_GPT_OSS)
        BAD("--head-dim needs --arch qwen3moe or gpt-oss (%s: --dim/--heads)", an);
    if (o.experts == 0 && o.expert_type != GGML_TYPE_COUNT) BAD("--expert-type applies to MoE models only (--experts > 0)");
    if (o.experts == 0 && o.skew > 0) BAD("--skew applies to MoE models only (--experts > 0)");
    if (o.experts == 0 && routing_given) BAD("--routing applies to MoE models only (--experts > 0)");
    if (skew_given && o.routing != MK_ROUTING_SKEW) BAD("--skew applies to --routing skew only");
    if (o.target_size && layers_given) BAD("use either --layers or --target-size, not both");
    if (!head_dim) {
        if (o.dim % o.heads) BAD("--heads %lld must divide --dim %lld", LL(o.heads), LL(o.dim));
        head_dim = o.dim / o.heads;
    }
    if (o.heads % o.kv_heads) BAD("--kv-heads %lld must divide --heads %lld", LL(o.kv_heads), LL(o.heads));
    if (head_dim % 2) BAD("head size %lld must be even (RoPE)%s", LL(head_dim), head_dim == o.dim / o.heads ? " (--dim/--heads)" : "");
    if (head_dim * o.heads > UINT32_MAX) BAD("--head-dim x --heads too large");
    o.head_dim = head_dim;
    o.expert_ff = expert_ff ? expert_ff : o.ff;
    if (o.arch == MK_ARCH_GPT_OSS) o.ff = o.expert_ff; /* its files give one FFN length */
    o.shared_ff = shared_ff ? shared_ff : o.ff;
    o.swa = swa ? swa : 128;
    if (o.expert_type == GGML_TYPE_COUNT) o.expert_type = o.arch == MK_ARCH_GPT_OSS ? GGML_TYPE_MXFP4 : o.type;
    if (o.experts == 0) o.expert_type = o.type;

    if (o.arch == MK_ARCH_GPT_OSS && o.expert_type == GGML_TYPE_MXFP4 && (o.dim % 32 || o.expert_ff % 32))
        BAD("gpt-oss: MXFP4 experts need --dim and --expert-ff to be multiples of 32 (got dim %lld, expert-ff %lld; "
            "gpt-oss-20b/120b: 2880 and 2880)", LL(o.dim), LL(o.expert_ff));
    /* every matrix's rows must be whole blocks of its type */
    int64_t blk = ggml_blck_size(o.type);
    if (o.dim % blk || (head_dim * o.heads) % blk || (o.experts == 0 && o.ff % blk) ||
        (o.arch == MK_ARCH_QWEN2MOE && o.shared_ff % blk)) {
        if (o.arch == MK_ARCH_QWEN2MOE)
            BAD("--type %s needs --dim, --shared-ff and the attention width to be multiples of %lld "
                "(got dim %lld, shared-ff %lld, heads x head size %lld)",
                ggml_type_name(o.type), LL(blk), LL(o.dim), LL(o.shared_ff), LL(head_dim * o.heads));
        if (head_dim * o.heads != o.dim)
            BAD("--type %s needs --dim and --heads x --head-dim to be multiples of %lld (got dim %lld, %lld)",
                ggml_type_name(o.type), LL(blk), LL(o.dim), LL(head_dim * o.heads));
        BAD("--type %s needs --dim and --ff to be multiples of %lld (got dim %lld, ff %lld)",
            ggml_type_name(o.type), LL(blk), LL(o.dim), LL(o.ff));
    }
    int64_t eblk = ggml_blck_size(o.expert_type);
    if (o.experts > 0 && (o.dim % eblk || o.expert_ff % eblk)) {
        if (llama && o.expert_type == o.type)
            BAD("--type %s needs --dim and --ff to be multiples of %lld (got dim %lld, ff %lld)",
                ggml_type_name(o.type), LL(blk), LL(o.dim), LL(o.ff));
        BAD("%s experts (--expert-type) need --dim and %s to be multiples of %lld (got dim %lld, %s %lld)",
            ggml_type_name(o.expert_type), llama ? "--ff" : "--expert-ff", LL(eblk), LL(o.dim),
            llama ? "ff" : "expert-ff", LL(o.expert_ff));
    }
    if (o.routing == MK_ROUTING_ZIPF && o.dim < 8 * MK_ZIPF_DIRS)
        BAD("--routing zipf needs --dim >= %d (got %lld)", 8 * MK_ZIPF_DIRS, LL(o.dim));
    int64_t ffmax = o.ff > o.expert_ff ? o.ff : o.expert_ff;
    if (o.shared_ff > ffmax) ffmax = o.shared_ff;
    if (o.dim > UINT32_MAX || ffmax > UINT32_MAX) BAD("--dim/--ff too large");
    /* ne[0]*ne[1]*ne[2] of the biggest tensor must fit comfortably in int64 */
    if ((double)o.dim * (double)ffmax * (double)(o.experts ? o.experts : 1) > 1e15)
        BAD("tensors of dim %lld x ff %lld are too large", LL(o.dim), LL(ffmax));

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
        fprintf(stderr, "mkmodel: %s: %s%s%s%s, dim %lld, %lld layers, ff %lld, heads %lld/%lld",
                o.out, llama ? "" : an, llama ? "" : " ", o.experts ? "MoE " : "dense ", ggml_type_name(o.type),
                (long long)o.dim, (long long)o.layers, (long long)o.ff, (long long)o.heads, (long long)o.kv_heads);
        if (head_dim != o.dim / o.heads) fprintf(stderr, " x %lld", LL(head_dim));
        if (o.experts) {
            fprintf(stderr, ", %lld experts top-%lld", LL(o.experts), LL(o.top_k));
            if (!llama) fprintf(stderr, " of ff %lld", LL(o.expert_ff));
            if (o.expert_type != o.type) fprintf(stderr, " %s", ggml_type_name(o.expert_type));
            if (o.arch == MK_ARCH_QWEN2MOE) fprintf(stderr, ", shared expert ff %lld", LL(o.shared_ff));
            if (o.routing == MK_ROUTING_ZIPF) fprintf(stderr, ", zipf routing");
            else fprintf(stderr, ", skew %.2f", o.skew);
        }
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
