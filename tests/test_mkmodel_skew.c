/* test_mkmodel_skew: hypura-mkmodel's routing models really shape MoE routing.
 *
 * Makes small MoE models, runs prompts through each with libllama and reads
 * the router's selected expert ids from the "ffn_moe_topk-<layer>" nodes
 * through cb_eval.
 *  - --routing skew (llama, 8 experts, top-2): with --skew 1 the two
 *    most-selected experts of every layer take more than half of the
 *    selections (uniform: 25 %); with --skew 0 no expert takes more than 40 %
 *    (uniform: 12.5 %).
 *  - --routing zipf (qwen3moe top-8 and gpt-oss top-4 layouts, 128 experts, as
 *    Qwen3-30B-A3B and gpt-oss-120b): per layer, the top 10 % of the experts
 *    (13) take 60-90 % of a prose prompt's selections (uniform: 10 % at top-8)
 *    and at least half of a code prompt's; each layer's hot set is its own
 *    (two layers share at most half of it on average); the code prompt's hot
 *    set differs from the prose prompt's (on average at most 75 % of the top
 *    13 in common; seeds 1-7 measured 38-63 %).
 *
 * usage: test_mkmodel_skew PATH/TO/hypura-mkmodel WORKDIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ggml-backend.h>
#include <llama.h>

#include "util/hy_tensor.h"

#define MAX_EXPERT 128
#define MAX_LAYER 8

typedef struct {
    int n_expert;
    long counts[MAX_LAYER][MAX_EXPERT];
    long bad_ids;
} stats;

static bool on_eval(struct ggml_tensor *t, bool ask, void *ud) {
    int il;
    if (strncmp(t->name, "ffn_moe_topk-", 13) != 0 || sscanf(t->name + 13, "%d", &il) != 1) return !ask;
    if (ask) return true;
    stats *st = ud;
    if (il < 0 || il >= MAX_LAYER || t->type != GGML_TYPE_I32) return true;
    char *copy;
    const char *base = hy_tensor_host_data(t, &copy);
    if (!base) return true;
    for (int64_t i1 = 0; i1 < t->ne[1]; i1++)
        for (int64_t i0 = 0; i0 < t->ne[0]; i0++) {
            int32_t e = *(const int32_t *)(base + i1 * t->nb[1] + i0 * t->nb[0]);
            if (e < 0 || e >= st->n_expert) st->bad_ids++;
            else st->counts[il][e]++;
        }
    free(copy);
    return true;
}

static void quiet_log(enum ggml_log_level level, const char *text, void *ud) {
    (void)ud;
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static const char *k_prose =
    "The history of the river valley begins long before the first farmers arrived. "
    "Glaciers carved the wide floor, left gravel terraces along both banks, and dammed "
    "a lake that drained only when the ice retreated north. Later, forests of oak and "
    "hazel covered the slopes, and small groups of hunters followed deer along the water. "
    "When the climate warmed, people built houses of timber and clay, kept cattle, and "
    "planted wheat and barley in the fertile soil near the meanders of the stream.";

static const char *k_code =
    "for (int i = 0; i < 1024; i++) {\n"
    "    x[i] = (a[i] * 3 + b[i % 7]) >> 2;\n"
    "    if (x[i] > 255) { x[i] = 255; n++; }\n"
    "}\n"
    "printf(\"%d/%d = %.3f\\n\", n, 1024, (double)n / 1024.0);\n"
    "return (s + 0x7f) & ~0x7f; // 128-byte aligned\n"
    "y = {1: [2, 3], 4: (5, 6)}; z[-1] += 0.25 * (y[1][0] - 9);\n";

/* returns 0 and fills st, or -1 */
static int measure(const char *path, const char *prompt, int n_expert, stats *st) {
    memset(st, 0, sizeof *st);
    st->n_expert = n_expert;
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(path, mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", path); return -1; }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 512;
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    cp.n_threads = cp.n_threads_batch = 2;
    cp.cb_eval = on_eval;
    cp.cb_eval_user_data = st;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "cannot create a context for %s\n", path); llama_model_free(model); return -1; }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    llama_token toks[512];
    int n = llama_tokenize(vocab, prompt, (int32_t)strlen(prompt), toks, 512, true, false);
    int rc = -1;
    if (n <= 16) { fprintf(stderr, "tokenize gave %d tokens\n", n); goto out; }
    struct llama_batch b = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        b.token[i] = toks[i];
        b.pos[i] = i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = 1; /* every token reaches the last layer's experts */
    }
    b.n_tokens = n;
    if (llama_decode(ctx, b) != 0) fprintf(stderr, "llama_decode failed\n");
    else rc = 0;
    llama_batch_free(b);
    printf("%s: %d tokens\n", path, n);
out:
    llama_free(ctx);
    llama_model_free(model);
    return rc;
}

/* the experts of layer il by selections, most first, into order (n_expert entries) */
static void rank_experts(const stats *st, int il, int *order) {
    for (int e = 0; e < st->n_expert; e++) order[e] = e;
    for (int i = 1; i < st->n_expert; i++) /* insertion sort, ties by id: deterministic */
        for (int j = i; j > 0 && st->counts[il][order[j]] > st->counts[il][order[j - 1]]; j--) {
            int x = order[j];
            order[j] = order[j - 1];
            order[j - 1] = x;
        }
}

/* share of layer il's selections taken by its n most selected experts */
static double top_share(const stats *st, int il, int n) {
    int order[MAX_EXPERT];
    rank_experts(st, il, order);
    long top = 0, tot = 0;
    for (int e = 0; e < st->n_expert; e++) {
        tot += st->counts[il][order[e]];
        if (e < n) top += st->counts[il][order[e]];
    }
    return tot ? (double)top / (double)tot : 0;
}

/* fraction of the top-n experts that two (layer, stats) pairs have in common */
static double overlap(const stats *a, int la, const stats *b, int lb, int n) {
    int oa[MAX_EXPERT], ob[MAX_EXPERT], k = 0;
    rank_experts(a, la, oa);
    rank_experts(b, lb, ob);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) k += oa[i] == ob[j];
    return (double)k / n;
}

static void print_layer(const stats *st, int il) {
    double t1 = top_share(st, il, 1), t2 = top_share(st, il, 2);
    printf("  layer %d:", il);
    for (int e = 0; e < st->n_expert; e++) printf(" %3ld", st->counts[il][e]);
    printf("   top-1 %.0f%%  top-2 %.0f%%\n", 100 * t1, 100 * t2);
}

static int make(const char *mk, const char *out, const char *args) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' -o '%s' --dim 256 --heads 4 --kv-heads 2 --type q8_0 --seed 7 %s --quiet >/dev/null",
             mk, out, args);
    int rc = system(cmd);
    if (rc != 0) fprintf(stderr, "FAIL: %s exited with %d\n", cmd, rc);
    return rc;
}

/* --routing skew: the original check */
static int check_skew(const char *mk, const char *work) {
    enum { E = 8, L = 4 };
    char p1[2048], p0[2048];
    snprintf(p1, sizeof p1, "%s/skew1.gguf", work);
    snprintf(p0, sizeof p0, "%s/skew0.gguf", work);
    const char *common = "--layers 4 --ff 256 --experts 8 --top-k 2";
    char a1[256], a0[256];
    snprintf(a1, sizeof a1, "%s --skew 1", common);
    snprintf(a0, sizeof a0, "%s --skew 0", common);
    if (make(mk, p1, a1) || make(mk, p0, a0)) return 1;
    static stats s1, s0;
    int fail = 0;
    if (measure(p1, k_prose, E, &s1) || measure(p0, k_prose, E, &s0)) fail = 1;
    for (int pass = 0; pass < 2 && !fail; pass++) {
        const stats *st = pass == 0 ? &s1 : &s0;
        printf("--skew %d (selections per expert):\n", pass == 0 ? 1 : 0);
        if (st->bad_ids) { printf("FAIL: %ld expert ids out of range\n", st->bad_ids); fail = 1; }
        for (int il = 0; il < L; il++) {
            print_layer(st, il);
            double t1 = top_share(st, il, 1), t2 = top_share(st, il, 2);
            if (t2 == 0) { printf("FAIL: layer %d: no selections seen (ffn_moe_topk not observed)\n", il); fail = 1; }
            else if (pass == 0 && t2 <= 0.5) { printf("FAIL: layer %d: top-2 share %.2f <= 0.50 with --skew 1\n", il, t2); fail = 1; }
            else if (pass == 1 && t1 > 0.4) { printf("FAIL: layer %d: top-1 share %.2f > 0.40 with --skew 0\n", il, t1); fail = 1; }
        }
    }
    remove(p1);
    remove(p0);
    return fail;
}

/* --routing zipf on one layout */
static int check_zipf(const char *mk, const char *work, const char *label, const char *args, int top_k,
                      double min_share, double max_share) {
    enum { E = 128, L = 4, N10 = (E + 9) / 10 };
    char path[2048], a[512];
    snprintf(path, sizeof path, "%s/zipf-%s.gguf", work, label);
    snprintf(a, sizeof a, "--layers %d --experts %d --top-k %d --routing zipf %s", L, E, top_k, args);
    if (make(mk, path, a)) return 1;
    static stats sp, sc;
    if (measure(path, k_prose, E, &sp) || measure(path, k_code, E, &sc)) {
        remove(path);
        return 1;
    }
    int fail = 0;
    if (sp.bad_ids || sc.bad_ids) { printf("FAIL: %ld expert ids out of range\n", sp.bad_ids + sc.bad_ids); fail = 1; }
    double mean_pc = 0, mean_ll = 0;
    printf("--routing zipf, %s, %d experts top-%d: share of the top %d experts (prose, code), "
           "top-%d sets in common between the prompts:\n", label, E, top_k, N10, N10);
    for (int il = 0; il < L; il++) {
        double shp = top_share(&sp, il, N10), shc = top_share(&sc, il, N10), ov = overlap(&sp, il, &sc, il, N10);
        mean_pc += ov / L;
        printf("  layer %d: %.2f  %.2f   in common %.2f   (top-1 %.2f)\n", il, shp, shc, ov, top_share(&sp, il, 1));
        if (shp < min_share || shp > max_share) {
            printf("FAIL: layer %d: top-%d share %.2f of the prose prompt outside [%.2f, %.2f]\n", il, N10, shp,
                   min_share, max_share);
            fail = 1;
        }
        if (shc < min_share - 0.1) {
            printf("FAIL: layer %d: top-%d share %.2f of the code prompt < %.2f\n", il, N10, shc, min_share - 0.1);
            fail = 1;
        }
        for (int jl = il + 1; jl < L; jl++) mean_ll += overlap(&sp, il, &sp, jl, N10) / (L * (L - 1) / 2);
    }
    printf("  mean in common: prose vs code %.2f; between layers (prose) %.2f\n", mean_pc, mean_ll);
    if (mean_pc > 0.75) { printf("FAIL: the code prompt's hot sets are the prose prompt's (%.2f in common)\n", mean_pc); fail = 1; }
    if (mean_ll > 0.5) { printf("FAIL: the layers share their hot sets (%.2f in common)\n", mean_ll); fail = 1; }
    remove(path);
    return fail;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PATH/TO/hypura-mkmodel WORKDIR\n", argv[0]);
        return 2;
    }
    llama_log_set(quiet_log, NULL);
    llama_backend_init();
    int fail = check_skew(argv[1], argv[2]);
    fail |= check_zipf(argv[1], argv[2], "qwen3moe", "--arch qwen3moe --expert-ff 64", 8, 0.6, 0.9);
    fail |= check_zipf(argv[1], argv[2], "gpt-oss", "--arch gpt-oss --expert-ff 64 --head-dim 64", 4, 0.6, 0.9);
    llama_backend_free();
    printf(fail ? "FAIL\n" : "PASS\n");
    return fail;
}
