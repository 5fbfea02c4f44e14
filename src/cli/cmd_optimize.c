/* hypura optimize: write a new GGUF whose experts are stored in co-activation
 * order, so that experts the routers choose together are adjacent on disk
 * (fewer, larger reads when experts stream).
 *
 * Per MoE layer a permutation perm[new] = old is chosen from co-activation
 * statistics (hy_coact_permutation). Every tensor with an expert dimension
 * (the outermost one: ffn_{gate,up,down,gate_up}_exps, their biases and
 * scales) gets its expert slices copied in the new order, and the router
 * (ffn_gate_inp weight rows, its bias, exp_probs_b) is permuted the same way:
 * the router then scores expert perm[j] as j and finds its weights at slot j,
 * so the model computes the same function. The one step whose rounding can
 * depend on the order is the sum inside the router's softmax over all experts
 * (ggml-cpu adds the exponentials in SIMD lanes of floats, then in double): a
 * permutation can move that sum by an ulp. Top-k picks by value and the
 * selected weights keep their slot order, so in practice the logits come out
 * bit for bit the same (measured: 8 to 128 experts, AVX-512, hundreds of
 * tokens), but that is checked, not assumed: --verify runs both files and
 * compares every logit, and refuses to publish a file that differs.
 *
 * Safety: the input is opened read-only and never written; the output is
 * written to OUT.tmp (created exclusively, never through a link) and renamed
 * when complete; any error removes it. OUT must not be the input (path, link
 * or hard link). Memory stays bounded: the header comes from gguf.h, the data
 * is copied through one 4 MiB buffer with pread at computed offsets. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ggml.h>
#include <gguf.h>

#include "cache/hy_coact.h"
#include "cli/cli.h"
#include "cli/cli_sched.h"
#include "engine/hy_engine.h"
#include "gguf/hy_gguf.h"
#include "util/hy_util.h"
#include "util/hy_tensor.h"

extern char **environ;

#define ERRP "hypura optimize: "
#define COPY_BUF ((size_t)4 << 20)

static void opt_usage(FILE *f) {
    fprintf(f, "usage: hypura optimize MODEL.gguf -o OUT.gguf [options]\n\n"
               "Writes a new GGUF whose expert slices are stored in co-activation order (experts that\n"
               "fire together are adjacent on disk), with the routers permuted to match: the model\n"
               "computes the same function. MODEL is never written. OUT records the order applied in the\n"
               "keys hypura.optimize.permutation (n_layer x n_expert int32: new position -> old expert)\n"
               "and hypura.optimize.source_hash (MODEL's header hash).\n\n"
               "  -o, --output OUT      the new file (refused if it exists, unless --force)\n"
               "      --stats FILE      co-activation statistics to use (default: the ones kept for this\n"
               "                        model under $XDG_DATA_HOME/hypura/coact, else calibrate)\n"
               "      --calibrate N     tokens of built-in text to run when there are no statistics\n"
               "                        (default 256)\n"
               "      --verify          run both files greedily and compare their logits bit for bit; OUT\n"
               "                        is written only if they are identical\n"
               "      --force           replace OUT if it exists\n"
               "  -t, --threads N       CPU threads for calibration and verification (default: all)\n"
               "  -h, --help            this help\n");
}

/* ---- calibration: route built-in text through the model, record ffn_moe_topk-N ---- */

static const char *k_calib_text =
    "The history of the river valley begins long before the first farmers arrived. Glaciers carved the wide "
    "floor and left gravel terraces along both banks.\n"
    "int main(int argc, char **argv) {\n    for (int i = 1; i < argc; i++) printf(\"%s\\n\", argv[i]);\n"
    "    return 0;\n}\n"
    "Q: What is 17 times 23? A: 17 x 23 = 391, because 17 x 20 = 340 and 17 x 3 = 51.\n"
    "\"Are you coming tonight?\" she asked. \"Only if the rain stops,\" he said, looking at the grey sky.\n"
    "Photosynthesis converts light energy into chemical energy: carbon dioxide and water become glucose "
    "and oxygen inside the chloroplasts of plant cells.\n"
    "SELECT name, COUNT(*) FROM orders WHERE created_at > '2024-01-01' GROUP BY name ORDER BY 2 DESC;\n"
    "Le marché ouvre à huit heures; les pêcheurs vendent leurs poissons sur le quai. Der Zug nach Berlin "
    "hat zehn Minuten Verspätung.\n"
    "In 1969 the Apollo 11 mission landed on the Moon; Neil Armstrong and Buzz Aldrin walked on the surface "
    "for about two and a half hours.\n"
    "To bake bread, mix 500 g flour, 350 ml water, 10 g salt and 5 g yeast; knead, let it rise for two hours, "
    "then bake at 230 degrees for forty minutes.\n"
    "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n"
    "The theorem states that every continuous function on a closed interval attains a maximum and a minimum.\n"
    "Dear customer, your order #48213 has shipped and should arrive within 3-5 business days.\n";

typedef struct {
    hy_coact *c;
    int32_t *buf;
    size_t cap;
    uint64_t calls;
} calib_state;

static bool topk_layer(const char *name, int *il) {
    if (strncmp(name, "ffn_moe_topk-", 13) != 0) return false;
    char *end;
    errno = 0;
    long v = strtol(name + 13, &end, 10);
    if (errno || end == name + 13 || *end || v < 0 || v > INT_MAX) return false;
    *il = (int)v;
    return true;
}

static bool calib_eval(struct ggml_tensor *t, bool ask, void *ud) {
    int il;
    if (!topk_layer(t->name, &il)) return !ask;
    if (ask) return true;
    calib_state *st = ud;
    if (t->type != GGML_TYPE_I32 || t->ne[2] != 1 || t->ne[3] != 1 || t->ne[0] < 1 || t->ne[1] < 1 || t->ne[0] > 4096 ||
        t->ne[1] > (1 << 20))
        return true;
    const int k = (int)t->ne[0], n = (int)t->ne[1];
    size_t need = (size_t)k * (size_t)n;
    if (need > st->cap) {
        int32_t *p = realloc(st->buf, need * sizeof *p);
        if (!p) return true;
        st->buf = p;
        st->cap = need;
    }
    char *copy;
    const char *base = hy_tensor_host_data(t, &copy);
    if (base) {
        for (int i1 = 0; i1 < n; i1++)
            for (int i0 = 0; i0 < k; i0++)
                st->buf[(size_t)i1 * (size_t)k + (size_t)i0] =
                    *(const int32_t *)(base + (size_t)i1 * t->nb[1] + (size_t)i0 * t->nb[0]);
        hy_coact_record(st->c, il, st->buf, k, n);
        st->calls++;
    }
    free(copy);
    return true;
}

static int calibrate(const hy_model_desc *d, int n_tokens, int threads, hy_coact *c, char *err, size_t errlen) {
    calib_state st = {.c = c};
    hy_engine_params ep = hy_engine_default_params();
    ep.model_path = d->path;
    int n_ctx = n_tokens < 1024 ? n_tokens : 1024;
    if (n_ctx < 16) n_ctx = 16;
    if (d->n_ctx_train > 0 && n_ctx > d->n_ctx_train) n_ctx = d->n_ctx_train;
    ep.n_ctx = n_ctx;
    /* every token asks for logits: libllama drops the rows of tokens without outputs before the last
     * layer, whose routers would then see almost nothing; a small batch keeps the logits buffer small */
    ep.n_batch = n_ctx < 128 ? n_ctx : 128;
    ep.n_threads = threads;
    ep.cb_eval = calib_eval;
    ep.cb_eval_user_data = &st;
    hy_engine *e = NULL;
    if (hy_engine_open(&ep, &e, err, errlen)) return -1;
    int rc = -1;
    int32_t *toks = NULL;
    int nt = 0;
    struct llama_batch b = llama_batch_init(ep.n_batch, 0, 1);
    if (hy_engine_tokenize(e, k_calib_text, true, &toks, &nt, err, errlen)) goto out;
    if (nt < 2) {
        hy_fail(err, errlen, "the calibration text gave %d tokens", nt);
        goto out;
    }
    n_ctx = hy_engine_n_ctx(e);
    struct llama_context *ctx = hy_engine_context(e);
    /* windows of n_ctx tokens, the text repeated; the KV cache is cleared between windows */
    for (int done = 0; done < n_tokens;) {
        llama_memory_clear(llama_get_memory(ctx), true);
        int win = n_tokens - done < n_ctx ? n_tokens - done : n_ctx;
        for (int pos = 0; pos < win;) {
            int nb = win - pos < ep.n_batch ? win - pos : ep.n_batch;
            b.n_tokens = nb;
            for (int i = 0; i < nb; i++) {
                b.token[i] = toks[(done + pos + i) % nt];
                b.pos[i] = pos + i;
                b.n_seq_id[i] = 1;
                b.seq_id[i][0] = 0;
                b.logits[i] = 1;
            }
            int r = llama_decode(ctx, b);
            if (r != 0) {
                hy_fail(err, errlen, "calibration: llama_decode failed (%d)", r);
                goto out;
            }
            pos += nb;
        }
        done += win;
    }
    if (st.calls == 0) {
        hy_fail(err, errlen, "calibration saw no router selections (no ffn_moe_topk nodes in the graph)");
        goto out;
    }
    rc = 0;
out:
    llama_batch_free(b);
    free(toks);
    free(st.buf);
    hy_engine_free(e);
    return rc;
}

/* ---- the rewrite ---- */

typedef struct {
    int fd;
    const char *path;
    uint8_t *buf;
    size_t len;
    uint64_t written, total, next_report;
    bool progress, tty;
    double t0;
} writer;

static int wr_flush(writer *w, char *err, size_t errlen) {
    size_t off = 0;
    while (off < w->len) {
        ssize_t n = write(w->fd, w->buf + off, w->len - off);
        if (n < 0) {
            if (errno == EINTR) continue;
            return hy_fail(err, errlen, "writing %s failed: %s", w->path, strerror(errno));
        }
        if (n == 0) return hy_fail(err, errlen, "writing %s failed: no progress", w->path);
        off += (size_t)n;
    }
    w->written += w->len;
    w->len = 0;
    if (w->progress && w->written >= w->next_report) {
        double s = hy_now() - w->t0;
        char a[32], b[32];
        fprintf(stderr, "%s[optimize] %s / %s (%.0f%%), %.1f s%s", w->tty ? "\r" : "",
                hy_fmt_bytes(w->written, a, sizeof a), hy_fmt_bytes(w->total, b, sizeof b),
                100.0 * (double)w->written / (double)w->total, s, w->tty ? "" : "\n");
        fflush(stderr);
        w->next_report = w->written + (w->tty ? ((uint64_t)64 << 20) : w->total / 10 + 1);
    }
    return 0;
}

static int wr_bytes(writer *w, const void *p, size_t n, char *err, size_t errlen) {
    const uint8_t *s = p;
    while (n) {
        if (w->len == COPY_BUF && wr_flush(w, err, errlen)) return -1;
        size_t ch = COPY_BUF - w->len < n ? COPY_BUF - w->len : n;
        if (s)
            memcpy(w->buf + w->len, s, ch), s += ch;
        else
            memset(w->buf + w->len, 0, ch);
        w->len += ch;
        n -= ch;
    }
    return 0;
}

/* bytes [off, off+n) of the input straight into the write buffer */
static int wr_copy(writer *w, int in, const char *in_path, uint64_t off, uint64_t n, char *err, size_t errlen) {
    while (n) {
        if (w->len == COPY_BUF && wr_flush(w, err, errlen)) return -1;
        size_t ch = COPY_BUF - w->len < n ? COPY_BUF - w->len : (size_t)n;
        ssize_t r = pread(in, w->buf + w->len, ch, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0)
            return hy_fail(err, errlen, "reading %s at %" PRIu64 " failed: %s", in_path, off,
                           r < 0 ? strerror(errno) : "unexpected end of file");
        w->len += (size_t)r;
        off += (uint64_t)r;
        n -= (uint64_t)r;
    }
    return 0;
}

/* How tensor i is written: copied, or its outermost dimension (the expert
 * dimension, E slices of `slice` bytes) reordered by the layer's permutation. */
typedef struct {
    int layer; /* -1: copied unchanged */
    uint64_t slice;
} tensor_plan;

static const char *block_part(const char *name, char *buf, size_t len) {
    /* "blk.N.ffn_gate_inp.weight" -> "ffn_gate_inp" */
    const char *p = strstr(name, "blk.");
    if (p) {
        p += 4;
        while (*p >= '0' && *p <= '9') p++;
        if (*p == '.') p++;
    } else {
        p = name;
    }
    size_t n = strcspn(p, ".");
    if (n >= len) n = len - 1;
    memcpy(buf, p, n);
    buf[n] = 0;
    return buf;
}

static int plan_tensors(const hy_model_desc *d, tensor_plan *tp, bool *moe_layer, int *n_perm_tensors, char *err,
                        size_t errlen) {
    const int E = d->n_expert;
    *n_perm_tensors = 0;
    for (int64_t i = 0; i < d->n_tensors; i++) {
        const hy_tensor_info *t = &d->tensors[i];
        tp[i].layer = -1;
        tp[i].slice = 0;
        char part[96];
        block_part(t->name, part, sizeof part);
        bool outer_is_e = t->ne[t->n_dims - 1] == E;
        if (t->role == HY_ROLE_EXPERT) {
            if (t->n_experts <= 1)
                return hy_fail(err, errlen,
                               "%s: split expert tensors (the old one-tensor-per-expert layout) are not supported",
                               t->name);
            if (t->n_experts != E || t->layer < 0 || t->layer >= d->n_layer ||
                (uint64_t)t->n_experts * t->expert_stride != t->size)
                return hy_fail(err, errlen, "%s: %d experts in its outer dimension, the model has %d: cannot permute",
                               t->name, t->n_experts, E);
            tp[i].layer = t->layer;
            tp[i].slice = t->expert_stride;
        } else if (t->role == HY_ROLE_ROUTER) {
            if (strcmp(part, "ffn_gate_inp") != 0 && strncmp(part, "exp_probs_b", 11) != 0)
                return hy_fail(err, errlen, "%s: a router tensor this command cannot permute", t->name);
            if (!outer_is_e || t->layer < 0 || t->layer >= d->n_layer || t->size % (uint64_t)E != 0 ||
                (t->n_dims == 1 && ggml_blck_size((enum ggml_type)t->type) != 1))
                return hy_fail(err, errlen, "%s: outer dimension %lld is not the %d experts: cannot permute", t->name,
                               (long long)t->ne[t->n_dims - 1], E);
            tp[i].layer = t->layer;
            tp[i].slice = t->size / (uint64_t)E;
        } else {
            continue;
        }
        moe_layer[t->layer] = true;
        (*n_perm_tensors)++;
    }
    /* a layer's routers and experts move together, or the function changes */
    for (int l = 0; l < d->n_layer; l++) {
        if (!moe_layer[l]) continue;
        int n_exp = 0, n_router = 0;
        for (int64_t i = 0; i < d->n_tensors; i++)
            if (tp[i].layer == l) {
                n_exp += d->tensors[i].role == HY_ROLE_EXPERT;
                n_router += d->tensors[i].role == HY_ROLE_ROUTER;
            }
        if (!n_exp || !n_router)
            return hy_fail(err, errlen, "layer %d has %s but no %s: cannot reorder its experts", l,
                           n_exp ? "expert tensors" : "a router", n_exp ? "router" : "expert tensors");
    }
    return 0;
}

static void print_order(FILE *f, const int32_t *perm, int E) {
    int show = E <= 16 ? E : 12;
    for (int j = 0; j < show; j++) fprintf(f, " %d", perm[j]);
    if (show < E) fprintf(f, " ... (%d more)", E - show);
}

/* ---- verification: both files through `hypura run`, logits compared ---- */

static const char *k_verify_prompt = "The old lighthouse keeper climbed the stairs and looked out over the sea";
#define VERIFY_TOKENS "8"

static int run_child(const char *model, const char *dump, const char *errfile, int threads) {
    char tbuf[16];
    snprintf(tbuf, sizeof tbuf, "%d", threads);
    char *argv[32];
    int n = 0;
    argv[n++] = "hypura";
    argv[n++] = "run";
    argv[n++] = (char *)model;
    argv[n++] = "-p";
    argv[n++] = (char *)k_verify_prompt;
    argv[n++] = "-n";
    argv[n++] = VERIFY_TOKENS;
    argv[n++] = "--temp";
    argv[n++] = "0";
    argv[n++] = "--no-repack";
    argv[n++] = "-c";
    argv[n++] = "256";
    argv[n++] = "--dump-logits";
    argv[n++] = (char *)dump;
    if (threads > 0) {
        argv[n++] = "-t";
        argv[n++] = tbuf;
    }
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa)) return -1;
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, errfile, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid;
    int r = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (r != 0) return -1;
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

static void last_line(const char *path, char *buf, size_t len) {
    buf[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (line[0]) snprintf(buf, len, "%s", line);
    }
    fclose(f);
}

/* 0 identical, 1 different (result says how), -1 could not run */
static int verify(const char *model, const char *out, int threads, char *result, size_t rlen) {
    const char *tmpdir = getenv("TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/hypura-optimize-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    if (!mkdtemp(dir)) return hy_fail(result, rlen, "cannot make a temporary directory: %s", strerror(errno));
    char d1[4200], d2[4200], e1[4200], e2[4200];
    snprintf(d1, sizeof d1, "%s/original.bin", dir);
    snprintf(d2, sizeof d2, "%s/optimized.bin", dir);
    snprintf(e1, sizeof e1, "%s/original.err", dir);
    snprintf(e2, sizeof e2, "%s/optimized.err", dir);
    int rc = -1;
    FILE *f1 = NULL, *f2 = NULL;
    const char *which[2] = {model, out};
    const char *dumps[2] = {d1, d2}, *errs[2] = {e1, e2};
    for (int i = 0; i < 2; i++) {
        int r = run_child(which[i], dumps[i], errs[i], threads);
        if (r != 0) {
            char why[600];
            last_line(errs[i], why, sizeof why);
            hy_fail(result, rlen, "running %s failed (exit %d): %s", which[i], r, why[0] ? why : "no message");
            goto out;
        }
    }
    f1 = fopen(d1, "rb");
    f2 = fopen(d2, "rb");
    if (!f1 || !f2) {
        hy_fail(result, rlen, "the logits were not written");
        goto out;
    }
    uint64_t n = 0, first_diff = UINT64_MAX, n_diff = 0;
    double max_abs = 0;
    for (;;) {
        float a, b;
        size_t ra = fread(&a, sizeof a, 1, f1), rb = fread(&b, sizeof b, 1, f2);
        if (ra != rb) {
            hy_fail(result, rlen, "logits differ in length");
            rc = 1;
            goto out;
        }
        if (ra == 0) break;
        if (memcmp(&a, &b, sizeof a) != 0) {
            if (first_diff == UINT64_MAX) first_diff = n;
            n_diff++;
            double dd = fabs((double)a - (double)b);
            if (dd > max_abs || isnan(dd)) max_abs = dd;
        }
        n++;
    }
    if (n == 0) {
        hy_fail(result, rlen, "no logits were produced");
        goto out;
    }
    if (n_diff) {
        snprintf(result, rlen, "logits DIFFER: %" PRIu64 " of %" PRIu64 " values, first at %" PRIu64 ", max |diff| %g",
                 n_diff, n, first_diff, max_abs);
        rc = 1;
    } else {
        snprintf(result, rlen, "logits identical (%s tokens, %" PRIu64 " values, bit for bit)", VERIFY_TOKENS, n);
        rc = 0;
    }
out:
    if (f1) fclose(f1);
    if (f2) fclose(f2);
    unlink(d1);
    unlink(d2);
    unlink(e1);
    unlink(e2);
    rmdir(dir);
    return rc;
}

/* ---- the command ---- */

/* SIGINT/SIGTERM while OUT.tmp exists: remove it (unlink is async-signal-safe) */
static const char *volatile g_cleanup_path;
static void on_signal(int sig) {
    const char *p = g_cleanup_path;
    if (p) unlink(p);
    signal(sig, SIG_DFL);
    raise(sig);
}

static bool same_file(const struct stat *a, const struct stat *b) {
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

int hy_cmd_optimize(int argc, char **argv) {
    const char *out_path = NULL, *stats_path = NULL;
    int calib_n = 256, threads = 0;
    bool do_verify = false, force = false;
    enum { O_STATS = 1000, O_CALIB, O_VERIFY, O_FORCE };
    static const struct option opts[] = {{"output", required_argument, 0, 'o'},
                                         {"stats", required_argument, 0, O_STATS},
                                         {"calibrate", required_argument, 0, O_CALIB},
                                         {"verify", no_argument, 0, O_VERIFY},
                                         {"force", no_argument, 0, O_FORCE},
                                         {"threads", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "o:t:h", opts, NULL)) != -1) {
        bool ok = true;
        switch (ch) {
        case 'o': out_path = optarg; break;
        case O_STATS: stats_path = optarg; break;
        case O_CALIB: ok = hy_cli_parse_int(optarg, 1, 1 << 20, &calib_n); break;
        case O_VERIFY: do_verify = true; break;
        case O_FORCE: force = true; break;
        case 't': ok = hy_cli_parse_int(optarg, 1, 4096, &threads); break;
        case 'h': opt_usage(stdout); return 0;
        default: opt_usage(stderr); return 2;
        }
        if (!ok) {
            fprintf(stderr, ERRP "invalid value '%s' for %s\n", optarg, argv[optind - 1]);
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, ERRP "expected exactly one MODEL argument (see hypura optimize --help)\n");
        return 2;
    }
    if (!out_path || !*out_path) {
        fprintf(stderr, ERRP "give the output file with -o OUT.gguf\n");
        return 2;
    }
    const char *model_path = argv[optind];
    char err[HY_ERRLEN];
    double t_start = hy_now();

    hy_model_desc *d = NULL;
    if (hy_gguf_read(model_path, &d, err, sizeof err)) {
        fprintf(stderr, ERRP "%s\n", err);
        return 1;
    }
    int rc = 1;
    int in = -1, outfd = -1;
    bool tmp_made = false;
    char tmp_path[4200] = "";
    struct gguf_context *g = NULL;
    tensor_plan *tp = NULL;
    bool *moe_layer = NULL;
    int32_t *perms = NULL;
    hy_coact *co = NULL;
    uint8_t *meta = NULL;
    writer w = {.fd = -1};

    const int L = d->n_layer, E = d->n_expert;
    bool has_experts = false;
    for (int64_t i = 0; i < d->n_tensors; i++) has_experts |= d->tensors[i].role == HY_ROLE_EXPERT;
    if (E < 2 || !has_experts || L < 1) {
        fprintf(stderr, ERRP "%s: not a mixture-of-experts model (no expert tensors to reorder)\n", model_path);
        goto out;
    }
    if (d->n_expert_used < 1 || d->n_expert_used > E) {
        fprintf(stderr, ERRP "%s: expert_used_count %d is not in 1..%d\n", model_path, d->n_expert_used, E);
        goto out;
    }

    /* the output: never the input, never an existing file without --force */
    struct stat st_in, st_out;
    if (stat(model_path, &st_in) != 0) {
        fprintf(stderr, ERRP "%s: %s\n", model_path, strerror(errno));
        goto out;
    }
    if (stat(out_path, &st_out) == 0) {
        if (same_file(&st_in, &st_out)) {
            fprintf(stderr, ERRP "%s is the input model: give another output file (the input is never written)\n",
                    out_path);
            goto out;
        }
        if (!force) {
            fprintf(stderr, ERRP "%s exists (use --force to replace it)\n", out_path);
            goto out;
        }
        if (!S_ISREG(st_out.st_mode)) {
            fprintf(stderr, ERRP "%s exists and is not a regular file\n", out_path);
            goto out;
        }
    } else if (lstat(out_path, &st_out) == 0 && !force) { /* a dangling link */
        fprintf(stderr, ERRP "%s exists (use --force to replace it)\n", out_path);
        goto out;
    }
    snprintf(tmp_path, sizeof tmp_path, "%s.tmp", out_path);
    if (strlen(out_path) + 5 > sizeof tmp_path - 1) {
        fprintf(stderr, ERRP "%s: path too long\n", out_path);
        goto out;
    }
    struct stat st_tmp;
    if ((stat(tmp_path, &st_tmp) == 0 && same_file(&st_in, &st_tmp)) ||
        (lstat(tmp_path, &st_tmp) == 0 && same_file(&st_in, &st_tmp))) {
        fprintf(stderr, ERRP "%s (the temporary output) is the input model: give another output file\n", tmp_path);
        goto out;
    }

    /* OUT.tmp now: an unwritable destination fails before any calibration */
    if (unlink(tmp_path) != 0 && errno != ENOENT) {
        fprintf(stderr, ERRP "cannot remove the stale %s: %s\n", tmp_path, strerror(errno));
        goto out;
    }
    outfd = open(tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (outfd < 0) {
        fprintf(stderr, ERRP "cannot create %s: %s\n", tmp_path, strerror(errno));
        goto out;
    }
    tmp_made = true;
    g_cleanup_path = tmp_path;
    /* keep an inherited "ignore" (nohup, background jobs) */
    if (signal(SIGINT, on_signal) == SIG_IGN) signal(SIGINT, SIG_IGN);
    if (signal(SIGTERM, on_signal) == SIG_IGN) signal(SIGTERM, SIG_IGN);

    /* which tensors move; refuse models whose expert numbering means more than routing */
    tp = calloc((size_t)d->n_tensors, sizeof *tp);
    moe_layer = calloc((size_t)L, sizeof *moe_layer);
    if (!tp || !moe_layer) {
        fprintf(stderr, ERRP "out of memory\n");
        goto out;
    }
    int n_perm_tensors = 0;
    if (plan_tensors(d, tp, moe_layer, &n_perm_tensors, err, sizeof err)) {
        fprintf(stderr, ERRP "%s: %s\n", model_path, err);
        goto out;
    }
    {
        struct gguf_init_params gp = {.no_alloc = true, .ctx = NULL};
        g = gguf_init_from_file(model_path, gp);
        if (!g) {
            fprintf(stderr, ERRP "%s: ggml's GGUF reader rejected the header\n", model_path);
            goto out;
        }
        char key[128];
        snprintf(key, sizeof key, "%s.expert_group_count", d->arch);
        int64_t kid = gguf_find_key(g, key);
        if (kid >= 0 && gguf_get_kv_type(g, kid) == GGUF_TYPE_UINT32 && gguf_get_val_u32(g, kid) > 1) {
            fprintf(stderr,
                    ERRP "%s: the router picks experts by groups of consecutive ids (%s = %u): reordering would "
                         "change the model\n",
                    model_path, key, gguf_get_val_u32(g, kid));
            goto out;
        }
        if (gguf_get_n_tensors(g) != d->n_tensors) {
            fprintf(stderr, ERRP "%s: ggml's reader and hypura's disagree on the tensors\n", model_path);
            goto out;
        }
        for (int64_t i = 0; i < d->n_tensors; i++) {
            const hy_tensor_info *t = &d->tensors[i];
            if (strcmp(gguf_get_tensor_name(g, i), t->name) != 0 || gguf_get_tensor_size(g, i) != t->size ||
                gguf_get_data_offset(g) + gguf_get_tensor_offset(g, i) != t->offset) {
                fprintf(stderr, ERRP "%s: ggml's reader and hypura's disagree on tensor %s\n", model_path, t->name);
                goto out;
            }
        }
    }

    /* statistics: --stats, else the ones kept for this model, else calibrate */
    char default_stats[4200] = "";
    char stats_desc[4600] = "";
    bool have_default = hy_coact_default_path(d->model_id, default_stats, sizeof default_stats) == 0;
    if (stats_path) {
        if (hy_coact_load(stats_path, d->model_id, L, E, &co, err, sizeof err)) {
            fprintf(stderr, ERRP "%s\n", err);
            goto out;
        }
        snprintf(stats_desc, sizeof stats_desc, "%s (%" PRIu64 " tokens)", stats_path, hy_coact_tokens(co));
    } else if (have_default && access(default_stats, F_OK) == 0) {
        if (hy_coact_load(default_stats, d->model_id, L, E, &co, err, sizeof err)) {
            fprintf(stderr, ERRP "warning: ignoring saved statistics: %s\n", err);
            co = NULL;
        } else {
            snprintf(stats_desc, sizeof stats_desc, "%s (%" PRIu64 " tokens)", default_stats, hy_coact_tokens(co));
        }
    }
    if (!co) {
        co = hy_coact_new(L, E, d->n_expert_used, d->model_id);
        if (!co) {
            fprintf(stderr, ERRP "%s: %d layers x %d experts is beyond the co-activation statistics' limits\n",
                    model_path, L, E);
            goto out;
        }
        fprintf(stderr, "[optimize] no statistics for this model: calibrating on %d tokens of built-in text\n",
                calib_n);
        if (calibrate(d, calib_n, threads, co, err, sizeof err)) {
            fprintf(stderr, ERRP "calibration failed: %s\n", err);
            goto out;
        }
        int n = snprintf(stats_desc, sizeof stats_desc, "calibrated on %" PRIu64 " tokens", hy_coact_tokens(co));
        if (have_default) {
            if (hy_coact_save(co, default_stats, err, sizeof err))
                fprintf(stderr, ERRP "warning: could not keep the statistics: %s\n", err);
            else if (n > 0 && (size_t)n < sizeof stats_desc)
                snprintf(stats_desc + n, sizeof stats_desc - (size_t)n, " (kept in %s)", default_stats);
        }
    }
    if (hy_coact_tokens(co) == 0)
        fprintf(stderr, ERRP "warning: the statistics hold no tokens: experts keep their order\n");

    /* permutations */
    perms = malloc((size_t)L * (size_t)E * sizeof *perms);
    if (!perms) {
        fprintf(stderr, ERRP "out of memory\n");
        goto out;
    }
    int n_moved_layers = 0;
    for (int l = 0; l < L; l++) {
        int32_t *p = perms + (size_t)l * (size_t)E;
        if (!moe_layer[l]) {
            for (int e = 0; e < E; e++) p[e] = e;
            continue;
        }
        if (hy_coact_permutation(co, l, p)) {
            fprintf(stderr, ERRP "cannot compute the order of layer %d\n", l);
            goto out;
        }
        /* belt and braces: a permutation, or nothing is written */
        bool *seen = calloc((size_t)E, 1);
        bool okp = seen != NULL;
        for (int e = 0; okp && e < E; e++) {
            okp = p[e] >= 0 && p[e] < E && !seen[p[e]];
            if (okp) seen[p[e]] = true;
        }
        free(seen);
        if (!okp) {
            fprintf(stderr, ERRP "internal error: layer %d's order is not a permutation\n", l);
            goto out;
        }
        for (int e = 0; e < E; e++)
            if (p[e] != e) {
                n_moved_layers++;
                break;
            }
    }

    /* the header: the input's KVs and tensor infos + ours; offsets stay gguf's */
    {
        gguf_set_arr_data(g, "hypura.optimize.permutation", GGUF_TYPE_INT32, perms, (size_t)L * (size_t)E);
        char hex[32];
        snprintf(hex, sizeof hex, "%016" PRIx64, d->header_hash);
        gguf_set_val_str(g, "hypura.optimize.source_hash", hex);
    }
    size_t meta_size = gguf_get_meta_size(g);
    meta = malloc(meta_size);
    if (!meta) {
        fprintf(stderr, ERRP "out of memory\n");
        goto out;
    }
    gguf_get_meta_data(g, meta);
    const size_t align = gguf_get_alignment(g);
    uint64_t total = meta_size;
    for (int64_t i = 0; i < d->n_tensors; i++) {
        if (total - meta_size != gguf_get_tensor_offset(g, i)) {
            fprintf(stderr, ERRP "%s: tensor %s is not where gguf places it\n", model_path, d->tensors[i].name);
            goto out;
        }
        total += hy_round_up(d->tensors[i].size, align);
    }

    /* write OUT.tmp, then rename */
    in = open(model_path, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        fprintf(stderr, ERRP "%s: %s\n", model_path, strerror(errno));
        goto out;
    }
    w.fd = outfd;
    w.path = tmp_path;
    w.buf = malloc(COPY_BUF);
    w.total = total;
    w.progress = total >= ((uint64_t)256 << 20);
    w.tty = isatty(2);
    w.t0 = hy_now();
    w.next_report = w.tty ? ((uint64_t)64 << 20) : total / 10 + 1;
    if (!w.buf) {
        fprintf(stderr, ERRP "out of memory\n");
        goto out;
    }
    if (wr_bytes(&w, meta, meta_size, err, sizeof err)) goto fail_write;
    /* test hook: leave the routers unpermuted, a wrong file that --verify must catch */
    const char *fault = getenv("HYPURA_TEST_OPTIMIZE_FAULT");
    bool fault_router = fault && !strcmp(fault, "router");
    for (int64_t i = 0; i < d->n_tensors; i++) {
        const hy_tensor_info *t = &d->tensors[i];
        if (tp[i].layer < 0 || (fault_router && t->role == HY_ROLE_ROUTER)) {
            if (wr_copy(&w, in, model_path, t->offset, t->size, err, sizeof err)) goto fail_write;
        } else {
            const int32_t *p = perms + (size_t)tp[i].layer * (size_t)E;
            for (int j = 0; j < E; j++)
                if (wr_copy(&w, in, model_path, t->offset + (uint64_t)p[j] * tp[i].slice, tp[i].slice, err, sizeof err))
                    goto fail_write;
        }
        if (wr_bytes(&w, NULL, hy_round_up(t->size, align) - t->size, err, sizeof err)) goto fail_write;
    }
    if (wr_flush(&w, err, sizeof err)) goto fail_write;
    if (w.progress && w.tty) fputc('\n', stderr);
    if (w.written != total) {
        snprintf(err, sizeof err, "wrote %" PRIu64 " bytes, expected %" PRIu64, w.written, total);
        goto fail_write;
    }
    if (fsync(outfd) != 0) {
        snprintf(err, sizeof err, "writing %s failed: %s", tmp_path, strerror(errno));
        goto fail_write;
    }
    if (close(outfd) != 0) {
        outfd = -1;
        snprintf(err, sizeof err, "writing %s failed: %s", tmp_path, strerror(errno));
        goto fail_write;
    }
    outfd = -1;
    {
        /* the result must read back as the same model with our keys */
        hy_model_desc *od = NULL;
        if (hy_gguf_read(tmp_path, &od, err, sizeof err)) goto fail_write;
        bool same = od->n_tensors == d->n_tensors && od->file_size == total;
        for (int64_t i = 0; same && i < d->n_tensors; i++)
            same = !strcmp(od->tensors[i].name, d->tensors[i].name) && od->tensors[i].size == d->tensors[i].size &&
                   od->tensors[i].type == d->tensors[i].type;
        hy_model_desc_free(od);
        if (!same) {
            snprintf(err, sizeof err, "%s does not read back as the same model", tmp_path);
            goto fail_write;
        }
    }
    double t_write = hy_now() - w.t0;

    /* --verify runs the temporary file: the output appears only once it is known to be right */
    char vresult[HY_ERRLEN] = "";
    int vr = 0;
    if (do_verify) {
        fprintf(stderr, "[optimize] verifying: both files, greedy, %s tokens\n", VERIFY_TOKENS);
        vr = verify(model_path, tmp_path, threads, vresult, sizeof vresult);
        if (vr != 0) {
            fprintf(stderr, ERRP "verification %s: %s; %s not written\n", vr > 0 ? "failed" : "could not run", vresult,
                    out_path);
            goto out;
        }
    }
    if (rename(tmp_path, out_path) != 0) {
        snprintf(err, sizeof err, "cannot rename %s to %s: %s", tmp_path, out_path, strerror(errno));
        goto fail_write;
    }
    tmp_made = false;
    g_cleanup_path = NULL;

    /* summary */
    char b1[32];
    printf("optimized %s -> %s\n", model_path, out_path);
    printf("  statistics: %s\n", stats_desc);
    int n_moe_layers = 0;
    for (int l = 0; l < L; l++) n_moe_layers += moe_layer[l];
    printf("  expert order (new position -> old expert), %d of %d MoE layers reordered:\n", n_moved_layers,
           n_moe_layers);
    for (int l = 0; l < L; l++) {
        if (!moe_layer[l]) continue;
        const int32_t *p = perms + (size_t)l * (size_t)E;
        int moved = 0;
        for (int e = 0; e < E; e++) moved += p[e] != e;
        printf("    layer %3d: moved %d of %d:", l, moved, E);
        print_order(stdout, p, E);
        printf("\n");
    }
    printf("  wrote %s (%" PRIu64 " bytes, %lld tensors, %d with their expert dimension reordered) in %.1f s\n",
           hy_fmt_bytes(total, b1, sizeof b1), total, (long long)d->n_tensors, n_perm_tensors, t_write);
    if (do_verify)
        printf("  verify: %s\n", vresult);
    else
        printf("  verify: skipped (--verify runs both files and compares their logits)\n");
    rc = 0;
    printf("  total %.1f s\n", hy_now() - t_start);
    goto out;

fail_write:
    fprintf(stderr, ERRP "%s\n", err);
out:
    if (outfd >= 0) close(outfd);
    if (tmp_made) unlink(tmp_path);
    g_cleanup_path = NULL;
    if (in >= 0) close(in);
    free(w.buf);
    free(meta);
    free(perms);
    free(tp);
    free(moe_layer);
    hy_coact_free(co);
    if (g) gguf_free(g);
    hy_model_desc_free(d);
    return rc;
}
