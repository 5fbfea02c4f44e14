/* test_mkmodel_skew: hypura-mkmodel's --skew really skews MoE routing.
 *
 * Makes two small MoE models (8 experts, top-2) with --skew 1 and --skew 0,
 * runs one prompt through each with libllama and reads the router's selected
 * expert ids from the "ffn_moe_topk-<layer>" nodes through cb_eval. With skew
 * the two most-selected experts of every layer must take more than half of
 * the selections (uniform: 25 %); without, no expert may take more than 40 %
 * (uniform: 12.5 %).
 *
 * usage: test_mkmodel_skew PATH/TO/hypura-mkmodel WORKDIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ggml-backend.h>
#include <llama.h>

#include "util/hy_tensor.h"

#define N_EXPERT 8
#define TOP_K 2
#define N_LAYER 4
#define MAX_LAYER 64

typedef struct {
    long counts[MAX_LAYER][N_EXPERT];
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
            if (e < 0 || e >= N_EXPERT) st->bad_ids++;
            else st->counts[il][e]++;
        }
    free(copy);
    return true;
}

static void quiet_log(enum ggml_log_level level, const char *text, void *ud) {
    (void)ud;
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static const char *k_prompt =
    "The history of the river valley begins long before the first farmers arrived. "
    "Glaciers carved the wide floor, left gravel terraces along both banks, and dammed "
    "a lake that drained only when the ice retreated north. Later, forests of oak and "
    "hazel covered the slopes, and small groups of hunters followed deer along the water. "
    "When the climate warmed, people built houses of timber and clay, kept cattle, and "
    "planted wheat and barley in the fertile soil near the meanders of the stream.";

/* returns 0 and fills st, or -1 */
static int measure(const char *path, stats *st) {
    memset(st, 0, sizeof *st);
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
    int n = llama_tokenize(vocab, k_prompt, (int32_t)strlen(k_prompt), toks, 512, true, false);
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

/* share of the top-2 experts and of the top expert in layer il */
static void shares(const stats *st, int il, double *top1, double *top2) {
    long a = 0, b = 0, tot = 0;
    for (int e = 0; e < N_EXPERT; e++) {
        long c = st->counts[il][e];
        tot += c;
        if (c > a) { b = a; a = c; }
        else if (c > b) b = c;
    }
    *top1 = tot ? (double)a / (double)tot : 0;
    *top2 = tot ? (double)(a + b) / (double)tot : 0;
}

static void print_layer(const stats *st, int il) {
    double t1, t2;
    shares(st, il, &t1, &t2);
    printf("  layer %d:", il);
    for (int e = 0; e < N_EXPERT; e++) printf(" %3ld", st->counts[il][e]);
    printf("   top-1 %.0f%%  top-2 %.0f%%\n", 100 * t1, 100 * t2);
}

static int make(const char *mk, const char *out, const char *skew) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "'%s' -o '%s' --dim 256 --layers %d --ff 256 --heads 4 --kv-heads 2 --experts %d --top-k %d "
             "--type q8_0 --seed 7 --skew %s --quiet >/dev/null",
             mk, out, N_LAYER, N_EXPERT, TOP_K, skew);
    int rc = system(cmd);
    if (rc != 0) fprintf(stderr, "FAIL: %s exited with %d\n", cmd, rc);
    return rc;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PATH/TO/hypura-mkmodel WORKDIR\n", argv[0]);
        return 2;
    }
    char p1[2048], p0[2048];
    snprintf(p1, sizeof p1, "%s/skew1.gguf", argv[2]);
    snprintf(p0, sizeof p0, "%s/skew0.gguf", argv[2]);
    if (make(argv[1], p1, "1") || make(argv[1], p0, "0")) return 1;

    llama_log_set(quiet_log, NULL);
    llama_backend_init();
    static stats s1, s0;
    int fail = 0;
    if (measure(p1, &s1) || measure(p0, &s0)) fail = 1;

    for (int pass = 0; pass < 2 && !fail; pass++) {
        const stats *st = pass == 0 ? &s1 : &s0;
        printf("--skew %d (selections per expert):\n", pass == 0 ? 1 : 0);
        if (st->bad_ids) { printf("FAIL: %ld expert ids out of range\n", st->bad_ids); fail = 1; }
        for (int il = 0; il < N_LAYER; il++) {
            print_layer(st, il);
            double t1, t2;
            shares(st, il, &t1, &t2);
            if (t2 == 0) { printf("FAIL: layer %d: no selections seen (ffn_moe_topk not observed)\n", il); fail = 1; }
            else if (pass == 0 && t2 <= 0.5) { printf("FAIL: layer %d: top-2 share %.2f <= 0.50 with --skew 1\n", il, t2); fail = 1; }
            else if (pass == 1 && t1 > 0.4) { printf("FAIL: layer %d: top-1 share %.2f > 0.40 with --skew 0\n", il, t1); fail = 1; }
        }
    }
    llama_backend_free();
    remove(p1);
    remove(p0);
    printf(fail ? "FAIL\n" : "PASS\n");
    return fail;
}
