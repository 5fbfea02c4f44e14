/* Tests of src/gguf (hy_gguf_read, hy_gguf_parse_buffer, roles).
 *
 *   test_gguf roles                 name → role / layer table
 *   test_gguf crosscheck DIR        dense and MoE files written with ggml's gguf.h,
 *                                   read by both readers, compared field by field
 *   test_gguf real FILE...          real GGUF files (llama.cpp's vocabularies) vs gguf.h
 *   test_gguf corrupt DIR           truncations, hostile counts/lengths/types/offsets,
 *                                   byte flips: an error with a message, never a crash
 *   test_gguf mkfiles DIR           writes dense.gguf, moe.gguf and some corrupt files
 *                                   for the CLI test
 *
 * The expected roles, layers and expert strides come from the test's own tables
 * and from ggml's tensor strides, not from hy_role_of. */
#include "gguf/hy_gguf.h"

#include <ggml.h>
#include <gguf.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int g_fail = 0;
static int g_checks = 0;

#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        g_checks++;                                                                                                    \
        if (!(cond)) {                                                                                                 \
            g_fail++;                                                                                                  \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                            \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fputc('\n', stderr);                                                                                       \
            if (g_fail > 50) exit(1);                                                                                  \
        }                                                                                                              \
    } while (0)

static uint64_t fnv1a(const uint8_t *p, uint64_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (uint64_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    if (b && n > 0 && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)(n > 0 ? n : 0);
    return b;
}

static int spit(const char *path, const void *buf, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = len ? fwrite(buf, 1, len, f) : 0;
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* invariants every successful read must hold (see hy_gguf.h)               */

static void check_invariants(const hy_model_desc *d, const char *what) {
    uint64_t role_sum = 0, total = 0, layer_sum = 0, in_layers = 0;
    for (int r = 0; r < HY_ROLE_COUNT; r++) role_sum += d->bytes_by_role[r];
    for (int l = 0; l < d->n_layer; l++) layer_sum += d->bytes_by_layer[l];
    CHECK(d->n_layer == 0 || d->bytes_by_layer, "%s: bytes_by_layer NULL", what);
    CHECK(d->data_offset <= d->file_size, "%s: data_offset", what);
    CHECK(d->alignment && !(d->alignment & (d->alignment - 1)), "%s: alignment", what);
    for (int64_t i = 0; i < d->n_tensors; i++) {
        const hy_tensor_info *t = &d->tensors[i];
        size_t nl = strnlen(t->name, sizeof t->name);
        CHECK(nl >= 1 && nl <= 63, "%s: name length %zu", what, nl);
        CHECK(t->type >= 0 && t->type < GGML_TYPE_COUNT && ggml_blck_size(t->type) > 0, "%s: type", what);
        CHECK(t->n_dims >= 1 && t->n_dims <= 4, "%s: n_dims", what);
        for (int k = 0; k < 4; k++) CHECK(t->ne[k] >= 1 && (k < t->n_dims || t->ne[k] == 1), "%s: ne", what);
        CHECK(t->offset >= d->data_offset && (t->offset - d->data_offset) % d->alignment == 0, "%s: offset", what);
        CHECK(t->offset + t->size <= d->file_size && t->offset + t->size >= t->offset, "%s: end", what);
        CHECK(t->layer >= -1 && t->layer < d->n_layer, "%s: layer", what);
        CHECK((unsigned)t->role < HY_ROLE_COUNT, "%s: role", what);
        if (t->n_experts) {
            CHECK(t->role == HY_ROLE_EXPERT, "%s: experts in a non-expert", what);
            CHECK((uint64_t)t->n_experts * t->expert_stride == t->size, "%s: %d experts x %" PRIu64 " != %" PRIu64,
                  what, t->n_experts, t->expert_stride, t->size);
        } else {
            CHECK(t->expert_stride == 0, "%s: stride without experts", what);
        }
        total += t->size;
        if (t->layer >= 0) in_layers += t->size;
        bool dup = false, overlap = false;
        for (int64_t j = 0; j < i; j++) {
            const hy_tensor_info *u = &d->tensors[j];
            dup |= strcmp(t->name, u->name) == 0;
            overlap |= !(t->offset + t->size <= u->offset || u->offset + u->size <= t->offset);
        }
        CHECK(!dup && !overlap, "%s: duplicate name or overlap survived", what);
    }
    CHECK(role_sum == total, "%s: role sum %" PRIu64 " != %" PRIu64, what, role_sum, total);
    CHECK(layer_sum == in_layers, "%s: layer sum", what);
}

/* ------------------------------------------------------------------------ */
/* roles                                                                     */

static int test_roles(void) {
    static const struct {
        const char *name;
        hy_role role;
        int layer;
    } cases[] = {
        {"token_embd.weight", HY_ROLE_EMBED, -1},
        {"token_embd_norm.weight", HY_ROLE_NORM, -1},
        {"per_layer_token_embd.weight", HY_ROLE_EMBED, -1},
        {"output.weight", HY_ROLE_OUTPUT, -1},
        {"output_norm.weight", HY_ROLE_NORM, -1},
        {"output_norm.bias", HY_ROLE_NORM, -1},
        {"rope_freqs.weight", HY_ROLE_OTHER, -1},
        {"blk.0.attn_norm.weight", HY_ROLE_NORM, 0},
        {"blk.0.attn_q.weight", HY_ROLE_ATTN, 0},
        {"blk.12.attn_k.weight", HY_ROLE_ATTN, 12},
        {"blk.3.attn_v.bias", HY_ROLE_ATTN, 3},
        {"blk.3.attn_output.weight", HY_ROLE_ATTN, 3},
        {"blk.3.attn_qkv.weight", HY_ROLE_ATTN, 3},
        {"blk.3.attn_q_norm.weight", HY_ROLE_NORM, 3},
        {"blk.3.attn_k_norm.weight", HY_ROLE_NORM, 3},
        {"blk.3.attn_sinks.weight", HY_ROLE_ATTN, 3},
        {"blk.3.ffn_norm.weight", HY_ROLE_NORM, 3},
        {"blk.3.post_ffw_norm.weight", HY_ROLE_NORM, 3},
        {"blk.3.ffn_gate.weight", HY_ROLE_FFN, 3},
        {"blk.3.ffn_up.weight", HY_ROLE_FFN, 3},
        {"blk.3.ffn_down.weight", HY_ROLE_FFN, 3},
        {"blk.3.ffn_gate_inp.weight", HY_ROLE_ROUTER, 3},
        {"blk.3.exp_probs_b.bias", HY_ROLE_ROUTER, 3},
        {"blk.3.ffn_gate_exps.weight", HY_ROLE_EXPERT, 3},
        {"blk.3.ffn_up_exps.weight", HY_ROLE_EXPERT, 3},
        {"blk.3.ffn_down_exps.weight", HY_ROLE_EXPERT, 3},
        {"blk.3.ffn_gate_up_exps.weight", HY_ROLE_EXPERT, 3},
        {"blk.3.ffn_up_exps.bias", HY_ROLE_EXPERT, 3},
        {"blk.3.ffn_gate.5.weight", HY_ROLE_EXPERT, 3},
        {"blk.3.ffn_gate_shexp.weight", HY_ROLE_FFN, 3},
        {"blk.3.ffn_up_shexp.weight", HY_ROLE_FFN, 3},
        {"blk.3.ffn_down_shexp.weight", HY_ROLE_FFN, 3},
        {"blk.3.ffn_gate_inp_shexp.weight", HY_ROLE_FFN, 3},
        {"blk.3.nextn.embed_tokens.weight", HY_ROLE_EMBED, 3},
        {"blk.3.nextn.shared_head_head.weight", HY_ROLE_OUTPUT, 3},
        {"blk.3.nextn.enorm.weight", HY_ROLE_NORM, 3},
        {"blk.3.ssm_in.weight", HY_ROLE_OTHER, 3},
        {"v.blk.0.attn_q.weight", HY_ROLE_ATTN, -1},
        {"blk.x.attn_q.weight", HY_ROLE_OTHER, -1},
        {"blk.7", HY_ROLE_OTHER, -1},
        {"blk.99999999.attn_q.weight", HY_ROLE_ATTN, -1},
        {"", HY_ROLE_OTHER, -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        hy_role r = hy_role_of(cases[i].name);
        CHECK(r == cases[i].role, "%s: role %s, expected %s", cases[i].name, hy_role_name(r),
              hy_role_name(cases[i].role));
        int l = hy_layer_of(cases[i].name);
        CHECK(l == cases[i].layer, "%s: layer %d, expected %d", cases[i].name, l, cases[i].layer);
    }
    CHECK(hy_role_of(NULL) == HY_ROLE_OTHER, "NULL");
    const char *names[] = {"embedding", "norm", "attention", "ffn", "expert", "router", "output", "other"};
    for (int r = 0; r < HY_ROLE_COUNT; r++) CHECK(!strcmp(hy_role_name((hy_role)r), names[r]), "role name %d", r);
    CHECK(!strcmp(hy_role_name(HY_ROLE_COUNT), "?"), "out of range");
    return 0;
}

/* ------------------------------------------------------------------------ */
/* files written with gguf.h                                                 */

typedef struct {
    const char *name;
    enum ggml_type type;
    int n_dims;
    int64_t ne[4];
    hy_role role;
    int layer;
    int expert_dim; /* dim holding the experts, -1 if none; -2 = split expert (1 expert) */
} tspec;

typedef struct {
    tspec t[128];
    int n;
    const char *arch;
    int n_layer, n_embd, n_ff, n_head, n_head_kv, n_expert, n_expert_used, n_vocab, n_ctx;
} mspec;

static void add(mspec *m, enum ggml_type type, hy_role role, int layer, int expert_dim, int n_dims, int64_t ne0,
                int64_t ne1, int64_t ne2, const char *fmt, ...) {
    static char names[1024][64];
    static int used = 0;
    tspec *t = &m->t[m->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(names[used], sizeof names[used], fmt, ap);
    va_end(ap);
    t->name = names[used++];
    t->type = type;
    t->role = role;
    t->layer = layer;
    t->expert_dim = expert_dim;
    t->n_dims = n_dims;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = ne2;
    t->ne[3] = 1;
}

static void dense_spec(mspec *m) {
    memset(m, 0, sizeof *m);
    m->arch = "llama";
    m->n_layer = 3, m->n_embd = 256, m->n_ff = 512, m->n_head = 4, m->n_head_kv = 2, m->n_vocab = 300;
    m->n_ctx = 4096;
    add(m, GGML_TYPE_Q8_0, HY_ROLE_EMBED, -1, -1, 2, 256, 300, 1, "token_embd.weight");
    add(m, GGML_TYPE_F32, HY_ROLE_OTHER, -1, -1, 1, 32, 1, 1, "rope_freqs.weight");
    enum ggml_type attn_t[3] = {GGML_TYPE_Q4_K, GGML_TYPE_F16, GGML_TYPE_BF16};
    for (int l = 0; l < 3; l++) {
        add(m, GGML_TYPE_F32, HY_ROLE_NORM, l, -1, 1, 256, 1, 1, "blk.%d.attn_norm.weight", l);
        if (l == 1) {
            add(m, GGML_TYPE_Q5_0, HY_ROLE_ATTN, l, -1, 2, 256, 512, 1, "blk.%d.attn_qkv.weight", l);
        } else {
            add(m, attn_t[l], HY_ROLE_ATTN, l, -1, 2, 256, 256, 1, "blk.%d.attn_q.weight", l);
            add(m, attn_t[l], HY_ROLE_ATTN, l, -1, 2, 256, 128, 1, "blk.%d.attn_k.weight", l);
            add(m, attn_t[l], HY_ROLE_ATTN, l, -1, 2, 256, 128, 1, "blk.%d.attn_v.weight", l);
        }
        add(m, GGML_TYPE_Q6_K, HY_ROLE_ATTN, l, -1, 2, 256, 256, 1, "blk.%d.attn_output.weight", l);
        add(m, GGML_TYPE_F32, HY_ROLE_NORM, l, -1, 1, 256, 1, 1, "blk.%d.ffn_norm.weight", l);
        add(m, GGML_TYPE_Q4_K, HY_ROLE_FFN, l, -1, 2, 256, 512, 1, "blk.%d.ffn_gate.weight", l);
        add(m, GGML_TYPE_IQ4_XS, HY_ROLE_FFN, l, -1, 2, 256, 512, 1, "blk.%d.ffn_up.weight", l);
        add(m, GGML_TYPE_Q2_K, HY_ROLE_FFN, l, -1, 2, 512, 256, 1, "blk.%d.ffn_down.weight", l);
    }
    add(m, GGML_TYPE_F32, HY_ROLE_NORM, -1, -1, 1, 256, 1, 1, "output_norm.weight");
    add(m, GGML_TYPE_Q6_K, HY_ROLE_OUTPUT, -1, -1, 2, 256, 300, 1, "output.weight");
}

static void moe_spec(mspec *m) {
    memset(m, 0, sizeof *m);
    m->arch = "qwen3moe";
    m->n_layer = 4, m->n_embd = 256, m->n_ff = 768, m->n_head = 4, m->n_head_kv = 4, m->n_vocab = 0;
    m->n_expert = 8, m->n_expert_used = 2, m->n_ctx = 32768;
    add(m, GGML_TYPE_F16, HY_ROLE_EMBED, -1, -1, 2, 256, 1000, 1, "token_embd.weight");
    for (int l = 0; l < 4; l++) {
        add(m, GGML_TYPE_F32, HY_ROLE_NORM, l, -1, 1, 256, 1, 1, "blk.%d.attn_norm.weight", l);
        add(m, GGML_TYPE_Q8_0, HY_ROLE_ATTN, l, -1, 2, 256, 256, 1, "blk.%d.attn_q.weight", l);
        add(m, GGML_TYPE_F32, HY_ROLE_NORM, l, -1, 1, 64, 1, 1, "blk.%d.attn_q_norm.weight", l);
        add(m, GGML_TYPE_Q8_0, HY_ROLE_ATTN, l, -1, 2, 256, 256, 1, "blk.%d.attn_k.weight", l);
        add(m, GGML_TYPE_Q8_0, HY_ROLE_ATTN, l, -1, 2, 256, 256, 1, "blk.%d.attn_v.weight", l);
        add(m, GGML_TYPE_Q8_0, HY_ROLE_ATTN, l, -1, 2, 256, 256, 1, "blk.%d.attn_output.weight", l);
        add(m, GGML_TYPE_F32, HY_ROLE_NORM, l, -1, 1, 256, 1, 1, "blk.%d.ffn_norm.weight", l);
        add(m, GGML_TYPE_F32, HY_ROLE_ROUTER, l, -1, 2, 256, 8, 1, "blk.%d.ffn_gate_inp.weight", l);
        add(m, GGML_TYPE_F32, HY_ROLE_ROUTER, l, -1, 1, 8, 1, 1, "blk.%d.exp_probs_b.bias", l);
        enum ggml_type et = l % 2 ? GGML_TYPE_Q4_K : GGML_TYPE_Q5_K;
        add(m, et, HY_ROLE_EXPERT, l, 2, 3, 256, 96, 8, "blk.%d.ffn_gate_exps.weight", l);
        add(m, et, HY_ROLE_EXPERT, l, 2, 3, 256, 96, 8, "blk.%d.ffn_up_exps.weight", l);
        add(m, GGML_TYPE_Q8_0, HY_ROLE_EXPERT, l, 2, 3, 96, 256, 8, "blk.%d.ffn_down_exps.weight", l);
        add(m, GGML_TYPE_F32, HY_ROLE_EXPERT, l, 1, 2, 96, 8, 1, "blk.%d.ffn_up_exps.bias", l);
        if (l == 3) add(m, GGML_TYPE_Q4_0, HY_ROLE_EXPERT, l, 2, 3, 256, 192, 8, "blk.%d.ffn_gate_up_exps.weight", l);
        add(m, GGML_TYPE_Q4_K, HY_ROLE_FFN, l, -1, 2, 256, 128, 1, "blk.%d.ffn_gate_shexp.weight", l);
        add(m, GGML_TYPE_Q4_K, HY_ROLE_FFN, l, -1, 2, 256, 128, 1, "blk.%d.ffn_up_shexp.weight", l);
        add(m, GGML_TYPE_Q8_0, HY_ROLE_FFN, l, -1, 2, 128, 256, 1, "blk.%d.ffn_down_shexp.weight", l);
        add(m, GGML_TYPE_F32, HY_ROLE_FFN, l, -1, 1, 256, 1, 1, "blk.%d.ffn_gate_inp_shexp.weight", l);
    }
    /* an old-style split expert, one tensor per expert */
    add(m, GGML_TYPE_Q8_0, HY_ROLE_EXPERT, 3, -2, 2, 256, 96, 1, "blk.3.ffn_gate.0.weight");
    add(m, GGML_TYPE_F32, HY_ROLE_NORM, -1, -1, 1, 256, 1, 1, "output_norm.weight");
    add(m, GGML_TYPE_Q8_0, HY_ROLE_OUTPUT, -1, -1, 2, 256, 1000, 1, "output.weight");
}

/* writes the model; the tensor data is zeros (only the header matters here) */
static int write_model(const mspec *m, const char *path, bool dense_kv_variants) {
    struct ggml_init_params ip = {.mem_size = (size_t)(m->n + 8) * ggml_tensor_overhead(), .mem_buffer = NULL,
                                  .no_alloc = true};
    struct ggml_context *ctx = ggml_init(ip);
    struct gguf_context *g = gguf_init_empty();
    gguf_set_val_str(g, "general.architecture", m->arch);
    gguf_set_val_str(g, "general.name", "hypura test model");
    gguf_set_val_u32(g, "general.alignment", 32);
    gguf_set_val_u32(g, "general.file_type", 15);
    char key[128];
#define AK(s) (snprintf(key, sizeof key, "%s.%s", m->arch, s), key)
    gguf_set_val_u32(g, AK("block_count"), (uint32_t)m->n_layer);
    gguf_set_val_u32(g, AK("embedding_length"), (uint32_t)m->n_embd);
    gguf_set_val_u32(g, AK("attention.head_count"), (uint32_t)m->n_head);
    if (dense_kv_variants) {
        /* other integer encodings, and per-layer arrays (max is reported) */
        gguf_set_val_u64(g, AK("context_length"), (uint64_t)m->n_ctx);
        int32_t ff[3] = {m->n_ff / 2, m->n_ff, m->n_ff / 4};
        gguf_set_arr_data(g, AK("feed_forward_length"), GGUF_TYPE_INT32, ff, 3);
        uint16_t kvh[3] = {(uint16_t)m->n_head_kv, 0, 1};
        gguf_set_arr_data(g, AK("attention.head_count_kv"), GGUF_TYPE_UINT16, kvh, 3);
    } else {
        gguf_set_val_u32(g, AK("context_length"), (uint32_t)m->n_ctx);
        gguf_set_val_i32(g, AK("feed_forward_length"), m->n_ff);
        gguf_set_val_u32(g, AK("attention.head_count_kv"), (uint32_t)m->n_head_kv);
    }
    if (m->n_expert) {
        gguf_set_val_u32(g, AK("expert_count"), (uint32_t)m->n_expert);
        gguf_set_val_u32(g, AK("expert_used_count"), (uint32_t)m->n_expert_used);
        gguf_set_val_u32(g, AK("vocab_size"), 1000);
    }
    /* keys of every type that the reader must skip */
    gguf_set_val_u8(g, "test.u8", 1);
    gguf_set_val_i8(g, "test.i8", -1);
    gguf_set_val_u16(g, "test.u16", 2);
    gguf_set_val_i16(g, "test.i16", -2);
    gguf_set_val_f32(g, "test.f32", 1.5f);
    gguf_set_val_f64(g, "test.f64", 2.5);
    gguf_set_val_bool(g, "test.bool", true);
    gguf_set_val_i64(g, "test.i64", -5);
    gguf_set_val_str(g, "test.empty_string", "");
    float fa[5] = {1, 2, 3, 4, 5};
    gguf_set_arr_data(g, "test.f32_array", GGUF_TYPE_FLOAT32, fa, 5);
    gguf_set_arr_data(g, "test.empty_array", GGUF_TYPE_UINT8, fa, 0);
    if (m->n_vocab) {
        const char **toks = malloc((size_t)m->n_vocab * sizeof *toks);
        static char tokbuf[4096][16];
        for (int i = 0; i < m->n_vocab; i++) {
            snprintf(tokbuf[i], sizeof tokbuf[i], "tok%d", i);
            toks[i] = tokbuf[i];
        }
        gguf_set_arr_str(g, "tokenizer.ggml.tokens", toks, (size_t)m->n_vocab);
        free(toks);
    }
#undef AK
    for (int i = 0; i < m->n; i++) {
        const tspec *t = &m->t[i];
        struct ggml_tensor *x = ggml_new_tensor(ctx, t->type, t->n_dims, t->ne);
        ggml_set_name(x, t->name);
        gguf_add_tensor(g, x);
    }
    bool ok = gguf_write_to_file(g, path, true);
    size_t data_end = 0;
    if (m->n) {
        int64_t last = gguf_get_n_tensors(g) - 1;
        data_end = gguf_get_meta_size(g) + gguf_get_tensor_offset(g, last) + gguf_get_tensor_size(g, last);
    }
    gguf_free(g);
    ggml_free(ctx);
    if (!ok) return -1;
    if (data_end && truncate(path, (off_t)data_end) != 0) return -1;
    return 0;
}

/* compare hy_gguf_read with gguf.h's reader on the same file, and both with the spec */
static void compare_with_gguf(const char *path, const mspec *m) {
    char err[512] = "";
    hy_model_desc *d = NULL;
    int rc = hy_gguf_read(path, &d, err, sizeof err);
    CHECK(rc == 0 && d, "%s: hy_gguf_read: %s", path, err);
    if (rc != 0 || !d) return;
    check_invariants(d, path);

    struct gguf_init_params gp = {.no_alloc = true, .ctx = NULL};
    struct gguf_context *g = gguf_init_from_file(path, gp);
    CHECK(g != NULL, "%s: gguf.h cannot read it", path);
    if (!g) {
        hy_model_desc_free(d);
        return;
    }
    struct stat st;
    stat(path, &st);
    CHECK(d->file_size == (uint64_t)st.st_size, "file_size");
    CHECK(d->version == gguf_get_version(g), "version %u vs %u", d->version, gguf_get_version(g));
    CHECK(d->n_kv == gguf_get_n_kv(g), "n_kv %" PRId64 " vs %" PRId64, d->n_kv, gguf_get_n_kv(g));
    CHECK(d->n_tensors == gguf_get_n_tensors(g), "n_tensors");
    CHECK(d->data_offset == gguf_get_data_offset(g), "data_offset %" PRIu64 " vs %zu", d->data_offset,
          gguf_get_data_offset(g));
    CHECK(d->alignment == gguf_get_alignment(g), "alignment");
    CHECK(!strcmp(d->path, path), "path");
    int64_t ka = gguf_find_key(g, "general.architecture");
    CHECK(ka >= 0 && !strcmp(d->arch, gguf_get_val_str(g, ka)), "arch '%s'", d->arch);
    int64_t kn = gguf_find_key(g, "general.name");
    if (kn >= 0) CHECK(!strcmp(d->name, gguf_get_val_str(g, kn)), "name '%s'", d->name);
    int64_t kt = gguf_find_key(g, "tokenizer.ggml.tokens");
    if (kt >= 0) CHECK(d->n_vocab == (int)gguf_get_arr_n(g, kt), "n_vocab %d", d->n_vocab);
    int64_t kf = gguf_find_key(g, "general.file_type");
    CHECK(d->file_type == (kf >= 0 ? (int)gguf_get_val_u32(g, kf) : -1), "file_type %d", d->file_type);

    /* header hash over [0, data_offset) of the file */
    size_t flen = 0;
    uint8_t *bytes = slurp(path, &flen);
    CHECK(bytes && flen == d->file_size, "slurp");
    if (bytes) CHECK(d->header_hash == fnv1a(bytes, gguf_get_data_offset(g)), "header_hash");
    /* model_id: a byte-identical copy is the same model; a copy with other weights under the same
     * header is another model with the same header hash */
    if (bytes && d->data_offset < flen) {
        char cp[4200];
        snprintf(cp, sizeof cp, "%s.id-copy", path);
        for (int flip = 0; flip < 2; flip++) {
            if (flip)
                for (size_t i = (size_t)d->data_offset; i < flen; i++) bytes[i] ^= 0x5a;
            FILE *f = fopen(cp, "wb");
            CHECK(f && fwrite(bytes, 1, flen, f) == flen && fclose(f) == 0, "write %s", cp);
            hy_model_desc *c = NULL;
            CHECK(hy_gguf_read(cp, &c, err, sizeof err) == 0 && c, "read %s: %s", cp, err);
            if (c) {
                CHECK(c->header_hash == d->header_hash, "copy's header hash");
                CHECK(flip ? c->model_id != d->model_id : c->model_id == d->model_id, "model_id of the %s copy",
                      flip ? "reweighted" : "identical");
                hy_model_desc_free(c);
            }
            if (flip)
                for (size_t i = (size_t)d->data_offset; i < flen; i++) bytes[i] ^= 0x5a;
        }
        unlink(cp);
    }

    uint64_t by_role[HY_ROLE_COUNT] = {0};
    uint64_t *by_layer = calloc((size_t)(m ? m->n_layer : 0) + 1, sizeof *by_layer);
    uint64_t n_params = 0;
    for (int64_t i = 0; i < gguf_get_n_tensors(g); i++) {
        const char *name = gguf_get_tensor_name(g, i);
        const hy_tensor_info *t = hy_model_find(d, name);
        CHECK(t == &d->tensors[i], "tensor %" PRId64 " '%s' not found in order", i, name);
        if (!t) continue;
        const int64_t *ne = gguf_get_tensor_ne(g, i);
        int nd = 4;
        while (nd > 1 && ne[nd - 1] == 1) nd--;
        uint64_t off = gguf_get_data_offset(g) + gguf_get_tensor_offset(g, i);
        uint64_t size = gguf_get_tensor_size(g, i);
        CHECK(t->offset == off, "%s: offset %" PRIu64 " vs %" PRIu64, name, t->offset, off);
        CHECK(t->size == size, "%s: size %" PRIu64 " vs %" PRIu64, name, t->size, size);
        CHECK(t->type == (int)gguf_get_tensor_type(g, i), "%s: type", name);
        CHECK(t->n_dims == nd, "%s: n_dims %d vs %d", name, t->n_dims, nd);
        for (int k = 0; k < 4; k++) CHECK(t->ne[k] == ne[k], "%s: ne[%d]", name, k);
        n_params += (uint64_t)(ne[0] * ne[1] * ne[2] * ne[3]);

        if (m) {
            const tspec *s = NULL;
            for (int j = 0; j < m->n; j++)
                if (!strcmp(m->t[j].name, name)) s = &m->t[j];
            CHECK(s != NULL, "%s: not in spec", name);
            if (!s) continue;
            CHECK(t->role == s->role, "%s: role %s, expected %s", name, hy_role_name(t->role), hy_role_name(s->role));
            CHECK(t->layer == s->layer, "%s: layer %d, expected %d", name, t->layer, s->layer);
            /* expected stride from ggml's own strides of the same shape */
            struct ggml_init_params ip = {.mem_size = ggml_tensor_overhead() * 2, .mem_buffer = NULL, .no_alloc = true};
            struct ggml_context *cx = ggml_init(ip);
            struct ggml_tensor *x = ggml_new_tensor(cx, s->type, s->n_dims, s->ne);
            if (s->expert_dim >= 0) {
                CHECK(t->n_experts == (int)x->ne[s->expert_dim], "%s: n_experts %d", name, t->n_experts);
                CHECK(t->expert_stride == x->nb[s->expert_dim], "%s: stride %" PRIu64 " vs %zu", name,
                      t->expert_stride, x->nb[s->expert_dim]);
            } else if (s->expert_dim == -2) {
                CHECK(t->n_experts == 1 && t->expert_stride == ggml_nbytes(x), "%s: split expert", name);
            } else {
                CHECK(t->n_experts == 0 && t->expert_stride == 0, "%s: not an expert", name);
            }
            CHECK(ggml_nbytes(x) == size, "%s: ggml_nbytes", name);
            ggml_free(cx);
            by_role[s->role] += size;
            if (s->layer >= 0) by_layer[s->layer] += size;
        }
    }
    CHECK(d->n_params == n_params, "n_params %" PRIu64 " vs %" PRIu64, d->n_params, n_params);
    if (m) {
        for (int r = 0; r < HY_ROLE_COUNT; r++)
            CHECK(d->bytes_by_role[r] == by_role[r], "bytes_by_role[%s] %" PRIu64 " vs %" PRIu64,
                  hy_role_name((hy_role)r), d->bytes_by_role[r], by_role[r]);
        CHECK(d->n_layer == m->n_layer, "n_layer %d", d->n_layer);
        for (int l = 0; l < m->n_layer && l < d->n_layer; l++)
            CHECK(d->bytes_by_layer[l] == by_layer[l], "bytes_by_layer[%d]", l);
        CHECK(d->n_embd == m->n_embd, "n_embd %d", d->n_embd);
        CHECK(d->n_ff == m->n_ff, "n_ff %d", d->n_ff);
        CHECK(d->n_head == m->n_head, "n_head %d", d->n_head);
        CHECK(d->n_head_kv == m->n_head_kv, "n_head_kv %d", d->n_head_kv);
        CHECK(d->n_expert == m->n_expert, "n_expert %d", d->n_expert);
        CHECK(d->n_expert_used == m->n_expert_used, "n_expert_used %d", d->n_expert_used);
        CHECK(d->n_ctx_train == m->n_ctx, "n_ctx_train %d", d->n_ctx_train);
        CHECK(d->n_vocab == (m->n_vocab ? m->n_vocab : 1000), "n_vocab %d", d->n_vocab);
        CHECK(hy_model_find(d, "no.such.tensor") == NULL, "find missing");
    }

    /* the buffer variant gives the same answer, and asks for more below the header size */
    if (bytes) {
        hy_model_desc *b = NULL;
        rc = hy_gguf_parse_buffer(bytes, flen, flen, &b, err, sizeof err);
        CHECK(rc == 0 && b, "parse_buffer: %s", err);
        if (b) {
            CHECK(b->header_hash == d->header_hash && b->n_tensors == d->n_tensors && b->path[0] == 0, "buffer");
            CHECK(b->model_id == b->header_hash, "buffer: model_id is the header hash");
            for (int64_t i = 0; i < b->n_tensors; i++)
                CHECK(!memcmp(&b->tensors[i], &d->tensors[i], sizeof b->tensors[i]), "buffer tensor %" PRId64, i);
            hy_model_desc_free(b);
        }
        size_t hdr = (size_t)d->data_offset;
        for (size_t len = 0; len < hdr; len += 1 + len / 7) {
            b = NULL;
            err[0] = 0;
            rc = hy_gguf_parse_buffer(bytes, len, flen, &b, err, sizeof err);
            CHECK(rc == HY_GGUF_EMORE && !b && strstr(err, "header larger than"), "prefix %zu: rc %d '%s'", len, rc,
                  err);
        }
        rc = hy_gguf_parse_buffer(bytes, hdr, flen, &b, err, sizeof err);
        CHECK(rc == 0, "exact header prefix: %s", err);
        hy_model_desc_free(b);
    }
    free(bytes);
    free(by_layer);
    gguf_free(g);
    hy_model_desc_free(d);
}

static int test_crosscheck(const char *dir) {
    char path[4096];
    mspec m;
    dense_spec(&m);
    snprintf(path, sizeof path, "%s/gguf_dense.gguf", dir);
    CHECK(write_model(&m, path, true) == 0, "write %s", path);
    compare_with_gguf(path, &m);
    moe_spec(&m);
    snprintf(path, sizeof path, "%s/gguf_moe.gguf", dir);
    CHECK(write_model(&m, path, false) == 0, "write %s", path);
    compare_with_gguf(path, &m);
    /* a header-only file: no tensors */
    m.n = 0;
    snprintf(path, sizeof path, "%s/gguf_notensors.gguf", dir);
    CHECK(write_model(&m, path, false) == 0, "write %s", path);
    compare_with_gguf(path, NULL);
    return 0;
}

static int test_real(int n, char **files) {
    for (int i = 0; i < n; i++) {
        compare_with_gguf(files[i], NULL);
        printf("ok %s\n", files[i]);
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* hand-made headers, to say what gguf.h's writer never would               */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} bb;

static void put(bb *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u32(bb *b, uint32_t v) { put(b, &v, 4); }
static void put_i32(bb *b, int32_t v) { put(b, &v, 4); }
static void put_u64(bb *b, uint64_t v) { put(b, &v, 8); }
static void put_i64(bb *b, int64_t v) { put(b, &v, 8); }
static void put_str(bb *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void put_kv_u32(bb *b, const char *k, uint32_t v) {
    put_str(b, k);
    put_i32(b, 4);
    put_u32(b, v);
}
static void put_kv_str(bb *b, const char *k, const char *v) {
    put_str(b, k);
    put_i32(b, 8);
    put_str(b, v);
}

typedef struct {
    const char *name;
    uint32_t n_dims;
    int64_t ne[5];
    int32_t type;
    uint64_t offset;
} rawt;

/* magic, version 3, counts, the given KV bytes, tensor infos, padding to 32, data */
static void raw_model(bb *out, const bb *kvs, int64_t n_kv, const rawt *t, int64_t nt, uint64_t data_bytes) {
    out->n = 0;
    put(out, "GGUF", 4);
    put_u32(out, 3);
    put_i64(out, nt);
    put_i64(out, n_kv);
    if (kvs) put(out, kvs->p, kvs->n);
    for (int64_t i = 0; i < nt; i++) {
        put_str(out, t[i].name);
        put_u32(out, t[i].n_dims);
        for (uint32_t d = 0; d < t[i].n_dims && d < 5; d++) put_i64(out, t[i].ne[d]);
        put_i32(out, t[i].type);
        put_u64(out, t[i].offset);
    }
    if (nt) {
        uint8_t z = 0;
        while (out->n % 32) put(out, &z, 1);
    }
    for (uint64_t i = 0; i < data_bytes; i++) {
        uint8_t z = 0;
        put(out, &z, 1);
    }
}

static const char *g_dir;

/* expects an error (not EMORE) with a message containing `want`; also through a file */
static void expect_error(const char *what, const uint8_t *buf, size_t len, const char *want) {
    char err[512];
    hy_model_desc *d = (hy_model_desc *)1;
    memset(err, 'x', sizeof err);
    err[sizeof err - 1] = 0;
    int rc = hy_gguf_parse_buffer(buf, len, len, &d, err, sizeof err);
    CHECK(rc < 0 && rc != HY_GGUF_EMORE && d == NULL, "%s: rc %d", what, rc);
    CHECK(err[0] && !strchr(err, '\n') && strlen(err) < sizeof err - 1, "%s: message '%s'", what, err);
    CHECK(!want || strstr(err, want), "%s: message '%s' lacks '%s'", what, err, want ? want : "");
    if (rc == 0) hy_model_desc_free(d);

    char path[4096];
    snprintf(path, sizeof path, "%s/corrupt.gguf", g_dir);
    spit(path, buf, len);
    d = NULL;
    err[0] = 0;
    rc = hy_gguf_read(path, &d, err, sizeof err);
    CHECK(rc < 0 && d == NULL && err[0] && !strchr(err, '\n'), "%s (file): rc %d '%s'", what, rc, err);
    CHECK(!want || strstr(err, want), "%s (file): message '%s' lacks '%s'", what, err, want ? want : "");
    CHECK(strncmp(err, path, strlen(path)) == 0, "%s (file): message does not start with the path: '%s'", what, err);
    if (rc == 0) hy_model_desc_free(d);
    if (getenv("TEST_GGUF_VERBOSE")) printf("  %-28s -> %s\n", what, err);
}

static void expect_ok(const char *what, const uint8_t *buf, size_t len) {
    char err[512] = "";
    hy_model_desc *d = NULL;
    int rc = hy_gguf_parse_buffer(buf, len, len, &d, err, sizeof err);
    CHECK(rc == 0 && d, "%s: %s", what, err);
    if (d) check_invariants(d, what);
    hy_model_desc_free(d);
}

/* a valid two-tensor model with arch "llama", for the corruptions below */
static const rawt base_t[2] = {
    {"blk.0.attn_q.weight", 2, {32, 4}, GGML_TYPE_F32, 0},
    {"blk.0.ffn_up.weight", 2, {32, 2}, GGML_TYPE_Q8_0, 512},
};
static void base_kvs(bb *kv) {
    kv->n = 0;
    put_kv_str(kv, "general.architecture", "llama");
    put_kv_u32(kv, "llama.block_count", 1);
}

static void with_tensors(const char *what, rawt *t, int64_t nt, uint64_t data, const char *want) {
    bb kv = {0}, out = {0};
    base_kvs(&kv);
    raw_model(&out, &kv, 2, t, nt, data);
    if (want) expect_error(what, out.p, out.n, want);
    else expect_ok(what, out.p, out.n);
    free(kv.p);
    free(out.p);
}

static void with_kv(const char *what, const bb *kv, int64_t n_kv, const char *want) {
    bb out = {0};
    raw_model(&out, kv, n_kv, base_t, 2, 600);
    if (want) expect_error(what, out.p, out.n, want);
    else expect_ok(what, out.p, out.n);
    free(out.p);
}

static int test_corrupt(const char *dir) {
    g_dir = dir;
    char err[512], path[4096];
    hy_model_desc *d = NULL;
    bb kv = {0}, out = {0};

    /* baseline is valid */
    with_tensors("baseline", (rawt *)base_t, 2, 600, NULL);

    /* ---- files and paths ---- */
    int rc = hy_gguf_read("/nonexistent/dir/model.gguf", &d, err, sizeof err);
    CHECK(rc == HY_GGUF_EIO && strstr(err, "No such file"), "missing: %d %s", rc, err);
    rc = hy_gguf_read(dir, &d, err, sizeof err);
    CHECK(rc < 0 && strstr(err, "directory"), "directory: %s", err);
    rc = hy_gguf_read("", &d, err, sizeof err);
    CHECK(rc < 0 && err[0], "empty path: %s", err);
    snprintf(path, sizeof path, "%s/fifo.gguf", dir);
    unlink(path);
    if (mkfifo(path, 0600) == 0) {
        rc = hy_gguf_read(path, &d, err, sizeof err);
        CHECK(rc < 0 && strstr(err, "regular"), "fifo: %s", err);
        unlink(path);
    }
    expect_error("empty file", (const uint8_t *)"", 0, "empty");

    /* ---- fixed header ---- */
    expect_error("bad magic", (const uint8_t *)"GGUX\3\0\0\0", 8, "bad magic");
    expect_error("short bad magic", (const uint8_t *)"GU", 2, "bad magic");
    expect_error("magic only", (const uint8_t *)"GGUF", 4, "truncated");
    expect_error("partial magic", (const uint8_t *)"GG", 2, "truncated");
    uint32_t versions[] = {0, 1, 4, 7, 99, 0x03000000u, 0xFFFFFFFFu};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        base_kvs(&kv);
        raw_model(&out, &kv, 2, base_t, 2, 600);
        memcpy(out.p + 4, &versions[i], 4);
        char what[64];
        snprintf(what, sizeof what, "version %u", versions[i]);
        expect_error(what, out.p, out.n, "unsupported GGUF version");
    }
    { /* version 2 is still read */
        base_kvs(&kv);
        raw_model(&out, &kv, 2, base_t, 2, 600);
        uint32_t v2 = 2;
        memcpy(out.p + 4, &v2, 4);
        expect_ok("version 2", out.p, out.n);
    }
    int64_t counts[] = {-1, INT64_MIN, INT64_MAX, (int64_t)1 << 40, (int64_t)1 << 62, 100000};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        char what[64];
        base_kvs(&kv);
        raw_model(&out, &kv, 2, base_t, 2, 600);
        memcpy(out.p + 8, &counts[i], 8);
        snprintf(what, sizeof what, "n_tensors %" PRId64, counts[i]);
        expect_error(what, out.p, out.n, "tensors cannot fit");
        raw_model(&out, &kv, 2, base_t, 2, 600);
        memcpy(out.p + 16, &counts[i], 8);
        snprintf(what, sizeof what, "n_kv %" PRId64, counts[i]);
        expect_error(what, out.p, out.n, "key-value pairs cannot fit");
    }
    { /* counts that fit the file size but not the bytes that are there: truncation */
        base_kvs(&kv);
        raw_model(&out, &kv, 2, base_t, 2, 600);
        int64_t n = 5;
        memcpy(out.p + 16, &n, 8);
        expect_error("n_kv 5 of 2", out.p, out.n, NULL);
        n = 2;
        memcpy(out.p + 16, &n, 8);
        n = 20;
        memcpy(out.p + 8, &n, 8);
        expect_error("n_tensors 20 of 2", out.p, out.n, NULL);
    }

    /* ---- key-value pairs ---- */
    uint64_t lens[] = {UINT64_MAX, (uint64_t)1 << 63, (uint64_t)1 << 32, 1u << 20, 700};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        base_kvs(&kv);
        raw_model(&out, &kv, 2, base_t, 2, 600);
        memcpy(out.p + 24, &lens[i], 8); /* the first key's length */
        char what[64];
        snprintf(what, sizeof what, "key length %" PRIu64, lens[i]);
        expect_error(what, out.p, out.n, NULL);
        /* the architecture string's length: right after key, type */
        raw_model(&out, &kv, 2, base_t, 2, 600);
        memcpy(out.p + 24 + 8 + 20 + 4, &lens[i], 8);
        snprintf(what, sizeof what, "string length %" PRIu64, lens[i]);
        expect_error(what, out.p, out.n, NULL);
    }
    kv.n = 0;
    put_str(&kv, "");
    put_i32(&kv, 4);
    put_u32(&kv, 1);
    with_kv("empty key", &kv, 1, "empty key");
    kv.n = 0;
    put_str(&kv, "x");
    put_i32(&kv, 13);
    put_u32(&kv, 1);
    with_kv("kv type 13", &kv, 1, "unknown value type 13");
    kv.n = 0;
    put_str(&kv, "x");
    put_i32(&kv, -1);
    with_kv("kv type -1", &kv, 1, "unknown value type -1");
    kv.n = 0;
    put_str(&kv, "x");
    put_i32(&kv, 9);
    put_i32(&kv, 99);
    put_u64(&kv, 1);
    with_kv("array of type 99", &kv, 1, "unknown value type 99");
    uint64_t alens[] = {UINT64_MAX, (uint64_t)1 << 61, (uint64_t)1 << 62, (uint64_t)1 << 40, 100000};
    int32_t atypes[] = {0, 10, 8, 9, 6};
    for (size_t i = 0; i < sizeof alens / sizeof alens[0]; i++)
        for (size_t j = 0; j < sizeof atypes / sizeof atypes[0]; j++) {
            kv.n = 0;
            put_str(&kv, "tokenizer.ggml.tokens");
            put_i32(&kv, 9);
            put_i32(&kv, atypes[j]);
            put_u64(&kv, alens[i]);
            if (atypes[j] == 9) { /* inner arrays, each empty */
                put_i32(&kv, 0);
                put_u64(&kv, 0);
            }
            char what[64];
            snprintf(what, sizeof what, "array type %d length %" PRIu64, atypes[j], alens[i]);
            with_kv(what, &kv, 1, "");
        }
    /* nesting bomb: arrays of arrays, 1000 deep */
    kv.n = 0;
    put_str(&kv, "bomb");
    put_i32(&kv, 9);
    for (int i = 0; i < 1000; i++) {
        put_i32(&kv, 9);
        put_u64(&kv, 1);
    }
    put_i32(&kv, 0);
    put_u64(&kv, 0);
    with_kv("nested arrays x1000", &kv, 1, "nested deeper");
    /* allowed nesting is skipped correctly */
    kv.n = 0;
    put_str(&kv, "nested");
    put_i32(&kv, 9);
    put_i32(&kv, 9);
    put_u64(&kv, 2);
    for (int i = 0; i < 2; i++) {
        put_i32(&kv, 8);
        put_u64(&kv, 2);
        put_str(&kv, "ab");
        put_str(&kv, "");
    }
    put_kv_str(&kv, "general.architecture", "llama");
    with_kv("nested arrays of strings", &kv, 2, NULL);
    /* wide bomb: many empty inner arrays claimed, few present */
    kv.n = 0;
    put_str(&kv, "wide");
    put_i32(&kv, 9);
    put_i32(&kv, 9);
    put_u64(&kv, 50);
    for (int i = 0; i < 10; i++) {
        put_i32(&kv, 9);
        put_u64(&kv, 0);
    }
    with_kv("wide nested array", &kv, 1, "");

    base_kvs(&kv);
    put_kv_str(&kv, "general.architecture", "qwen");
    with_kv("duplicate key", &kv, 3, "duplicate key 'general.architecture'");
    kv.n = 0;
    put_kv_u32(&kv, "general.architecture", 7);
    with_kv("arch not a string", &kv, 1, "expected string");
    kv.n = 0;
    put_kv_str(&kv, "general.architecture", "a-very-long-architecture-name-that-is-longer-than-sixty-three-bytes");
    with_kv("arch too long", &kv, 1, "general.architecture");
    kv.n = 0;
    put_str(&kv, "general.alignment");
    put_i32(&kv, 10);
    put_u64(&kv, 32);
    with_kv("alignment u64", &kv, 1, "expected u32");
    uint32_t aligns[] = {0, 3, 48};
    for (size_t i = 0; i < 3; i++) {
        kv.n = 0;
        put_kv_u32(&kv, "general.alignment", aligns[i]);
        with_kv("alignment not a power of 2", &kv, 1, "not a power of 2");
    }
    kv.n = 0;
    put_kv_u32(&kv, "general.alignment", 1024); /* valid, but the tensors are 32-aligned */
    with_kv("alignment 1024", &kv, 1, "past end of file");
    kv.n = 0;
    put_kv_str(&kv, "general.architecture", "llama");
    put_kv_u32(&kv, "llama.block_count", 1000000000);
    with_kv("block_count huge", &kv, 2, "out of range");
    kv.n = 0;
    put_kv_str(&kv, "general.architecture", "llama");
    put_str(&kv, "llama.embedding_length");
    put_i32(&kv, 5);
    put_i32(&kv, -4096);
    with_kv("embedding_length negative", &kv, 2, "out of range");
    kv.n = 0;
    put_kv_str(&kv, "general.architecture", "llama");
    put_str(&kv, "llama.context_length");
    put_i32(&kv, 10);
    put_u64(&kv, UINT64_MAX);
    with_kv("context_length u64 max", &kv, 2, "out of range");
    kv.n = 0;
    put_kv_str(&kv, "general.architecture", "llama");
    put_kv_str(&kv, "llama.block_count", "many");
    with_kv("block_count string", &kv, 2, "expected an integer");
    kv.n = 0;
    put_kv_u32(&kv, "tokenizer.ggml.tokens", 5);
    with_kv("tokens not an array", &kv, 1, "expected array");
    kv.n = 0;
    put_kv_str(&kv, "general.name", "line\nbreak\x1b[31m");
    with_kv("control characters in name", &kv, 1, NULL);

    /* ---- tensor infos ---- */
    rawt t[4];
#define RESET() memcpy(t, base_t, sizeof base_t)
    RESET();
    t[0].n_dims = 0;
    with_tensors("n_dims 0", t, 2, 600, "dimensions");
    RESET();
    t[0].n_dims = 5;
    t[0].ne[2] = t[0].ne[3] = t[0].ne[4] = 1;
    with_tensors("n_dims 5", t, 2, 600, "dimensions");
    RESET();
    t[1].n_dims = 0xFFFFFFFF;
    with_tensors("n_dims huge", t, 2, 600, "dimensions");
    int64_t bad_ne[] = {-1, 0, INT64_MIN};
    for (size_t i = 0; i < 3; i++) {
        RESET();
        t[0].ne[1] = bad_ne[i];
        with_tensors("ne <= 0", t, 2, 600, "invalid size");
    }
    RESET();
    t[0].n_dims = 4;
    t[0].ne[0] = (int64_t)1 << 40;
    t[0].ne[1] = (int64_t)1 << 30;
    t[0].ne[2] = 1;
    t[0].ne[3] = 1;
    with_tensors("ne product overflows", t, 2, 600, "too many elements");
    RESET();
    t[0].ne[0] = (int64_t)1 << 61; /* elements fit int64, bytes (x4) do not */
    t[0].ne[1] = 2;
    with_tensors("size overflows", t, 2, 600, "too large");
    RESET();
    t[0].ne[0] = (int64_t)1 << 40;
    with_tensors("size past EOF", t, 2, 600, "lies past end of file");
    int32_t bad_types[] = {-1, GGML_TYPE_COUNT, 99, 1000000};
    for (size_t i = 0; i < 4; i++) {
        RESET();
        t[1].type = bad_types[i];
        with_tensors("unknown type", t, 2, 600, "unknown type");
    }
    int32_t dead_types[] = {4, 5, 31, 32, 33, 36, 37, 38};
    for (size_t i = 0; i < 8; i++) {
        RESET();
        t[1].type = dead_types[i];
        t[1].ne[0] = 256 * 9;
        with_tensors("deprecated type", t, 2, 100000, "deprecated");
    }
    RESET();
    t[1].type = GGML_TYPE_Q4_K;
    t[1].ne[0] = 100;
    with_tensors("row not a multiple of the block", t, 2, 600, "not a multiple of block size");
    RESET();
    t[1].offset = 1u << 20;
    with_tensors("data offset past EOF", t, 2, 600, "lies past end of file");
    RESET();
    t[1].offset = UINT64_MAX - 31;
    with_tensors("data offset overflow", t, 2, 600, "lies past end of file");
    RESET();
    t[1].offset = 520;
    with_tensors("offset not aligned", t, 2, 600, "not a multiple of the alignment");
    RESET();
    t[1].offset = 0;
    with_tensors("same offset", t, 2, 600, "overlap");
    RESET();
    t[1].offset = 480;
    with_tensors("overlap by 32", t, 2, 600, "overlap");
    RESET();
    t[0].offset = 512;
    t[1].offset = 0;
    with_tensors("reverse order is fine", t, 2, 1100, NULL);
    RESET();
    t[1].name = t[0].name;
    with_tensors("duplicate name", t, 2, 600, "duplicate tensor name");
    RESET();
    t[1].name = "blk.0.this-name-is-sixty-four-bytes-long-which-ggml-does-not-allow";
    with_tensors("name too long", t, 2, 600, "longer than 63");
    RESET();
    t[1].name = "";
    with_tensors("empty name", t, 2, 600, "empty name");
    RESET();
    t[1].name = "blk.99999999.ffn_up.weight";
    with_tensors("layer index huge", t, 2, 600, "layer index");
    RESET();
    t[1].name = "blk.5.ffn_up.weight"; /* past block_count: n_layer grows */
    with_tensors("layer past block_count", t, 2, 600, NULL);
    RESET();
    with_tensors("data truncated", t, 2, 520, "lies past end of file");
    RESET();
    t[1].name = "blk.0.ffn_up_exps.weight";
    t[1].n_dims = 3;
    t[1].ne[2] = 0x7FFFFFFF;
    with_tensors("too many experts", t, 2, 600, "past end of file");
    { /* NUL inside a tensor name */
        bb k2 = {0};
        base_kvs(&k2);
        raw_model(&out, &k2, 2, base_t, 2, 600);
        uint8_t *p = memmem(out.p, out.n, "blk.0.ffn_up", 12);
        if (p) p[3] = 0;
        expect_error("NUL in name", out.p, out.n, "NUL");
        free(k2.p);
    }
    { /* tensors but the file ends inside the padding before the data */
        base_kvs(&kv);
        raw_model(&out, &kv, 2, base_t, 2, 0);
        expect_error("no data section", out.p, out.n - 1, NULL);
    }

    { /* a header larger than the reader's limit (a sparse file: nothing is read past 2 MiB) */
        bb big = {0};
        put(&big, "GGUF", 4);
        put_u32(&big, 3);
        put_i64(&big, 0);
        put_i64(&big, 1);
        put_u64(&big, (uint64_t)300 << 20);
        snprintf(path, sizeof path, "%s/huge_header.gguf", dir);
        CHECK(spit(path, big.p, big.n) == 0 && truncate(path, ((off_t)300 << 20) + 4096) == 0, "sparse file");
        d = NULL;
        rc = hy_gguf_read(path, &d, err, sizeof err);
        CHECK(rc < 0 && !d && strstr(err, "header larger than 256 MiB"), "huge header: %d '%s'", rc, err);
        unlink(path);
        free(big.p);
    }

    /* ---- every truncation of a real gguf.h file ---- */
    mspec m;
    moe_spec(&m);
    snprintf(path, sizeof path, "%s/gguf_trunc_src.gguf", dir);
    CHECK(write_model(&m, path, false) == 0, "write");
    size_t flen;
    uint8_t *bytes = slurp(path, &flen);
    CHECK(bytes != NULL, "slurp");
    hy_model_desc *full = NULL;
    rc = hy_gguf_parse_buffer(bytes, flen, flen, &full, err, sizeof err);
    CHECK(rc == 0, "full: %s", err);
    size_t hdr = full ? (size_t)full->data_offset : flen;
    hy_model_desc_free(full);
    int n_trunc = 0;
    size_t data_step = (flen - hdr) / 300 + 1;
    for (size_t len = 0; len < flen; len = len < hdr + 64 ? len + 1 : len + data_step) {
        d = NULL;
        err[0] = 0;
        rc = hy_gguf_parse_buffer(bytes, len, len, &d, err, sizeof err);
        CHECK(rc < 0 && rc != HY_GGUF_EMORE && !d && err[0], "truncated at %zu: rc %d", len, rc);
        if (len > 4 && len < hdr)
            CHECK(strstr(err, "truncated") != NULL, "truncated at %zu: '%s'", len, err);
        if (len % 31 == 0) { /* a sample through the file path too */
            char tp[4096];
            snprintf(tp, sizeof tp, "%s/trunc.gguf", dir);
            spit(tp, bytes, len);
            rc = hy_gguf_read(tp, &d, err, sizeof err);
            CHECK(rc < 0 && !d && err[0] && !strchr(err, '\n'), "file truncated at %zu: rc %d", len, rc);
        }
        n_trunc++;
    }
    printf("%d truncations rejected (header %zu bytes, file %zu)\n", n_trunc, hdr, flen);

    /* ---- byte flips through the header: anything but a crash ---- */
    int n_ok = 0, n_err = 0;
    const uint8_t flips[] = {0x00, 0xFF, 0x80, 0x7F, 0x01};
    for (size_t pos = 0; pos < hdr && bytes; pos++)
        for (size_t f = 0; f < sizeof flips; f++) {
            uint8_t save = bytes[pos];
            bytes[pos] = (f == 4) ? (uint8_t)(save + 1) : flips[f];
            d = NULL;
            err[0] = 0;
            rc = hy_gguf_parse_buffer(bytes, flen, flen, &d, err, sizeof err);
            if (rc == 0) {
                check_invariants(d, "flip");
                hy_model_desc_free(d);
                n_ok++;
            } else {
                CHECK(err[0] && !strchr(err, '\n') && !d, "flip at %zu: rc %d no message", pos, rc);
                n_err++;
            }
            bytes[pos] = save;
        }
    printf("byte flips: %d read, %d rejected\n", n_ok, n_err);

    free(bytes);
    free(kv.p);
    free(out.p);
    return 0;
}

/* ------------------------------------------------------------------------ */

static int mkfiles(const char *dir) {
    char path[4096];
    mspec m;
    dense_spec(&m);
    snprintf(path, sizeof path, "%s/dense.gguf", dir);
    if (write_model(&m, path, true)) return 1;
    moe_spec(&m);
    snprintf(path, sizeof path, "%s/moe.gguf", dir);
    if (write_model(&m, path, false)) return 1;
    size_t flen;
    uint8_t *b = slurp(path, &flen);
    if (!b) return 1;
    snprintf(path, sizeof path, "%s/truncated.gguf", dir);
    spit(path, b, 300);
    b[1] = 'X';
    snprintf(path, sizeof path, "%s/bad_magic.gguf", dir);
    spit(path, b, flen);
    free(b);
    snprintf(path, sizeof path, "%s/empty.gguf", dir);
    spit(path, "", 0);
    bb kv = {0}, out = {0};
    rawt t[2];
    memcpy(t, base_t, sizeof t);
    t[1].type = 99;
    base_kvs(&kv);
    raw_model(&out, &kv, 2, t, 2, 600);
    snprintf(path, sizeof path, "%s/bad_type.gguf", dir);
    spit(path, out.p, out.n);
    memcpy(t, base_t, sizeof t);
    t[1].offset = 0;
    raw_model(&out, &kv, 2, t, 2, 600);
    snprintf(path, sizeof path, "%s/overlap.gguf", dir);
    spit(path, out.p, out.n);
    raw_model(&out, &kv, 2, base_t, 2, 600);
    snprintf(path, sizeof path, "%s/tiny.gguf", dir);
    spit(path, out.p, out.n);
    /* a tiny valid MoE (a fuzzing seed) */
    static const rawt moe_t[4] = {
        {"token_embd.weight", 2, {8, 4}, GGML_TYPE_F32, 0},
        {"blk.0.ffn_up_exps.weight", 3, {8, 4, 4}, GGML_TYPE_F32, 128},
        {"blk.0.ffn_gate_inp.weight", 2, {8, 4}, GGML_TYPE_F32, 640},
        {"blk.1.attn_q.weight", 2, {32, 1}, GGML_TYPE_Q8_0, 768},
    };
    base_kvs(&kv);
    put_kv_u32(&kv, "llama.expert_count", 4);
    put_str(&kv, "tokenizer.ggml.tokens");
    put_i32(&kv, 9);
    put_i32(&kv, 8);
    put_u64(&kv, 3);
    put_str(&kv, "a");
    put_str(&kv, "bc");
    put_str(&kv, "");
    raw_model(&out, &kv, 4, moe_t, 4, 832);
    snprintf(path, sizeof path, "%s/tiny_moe.gguf", dir);
    spit(path, out.p, out.n);
    free(kv.p);
    free(out.p);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_gguf roles | crosscheck DIR | real FILE... | corrupt DIR | mkfiles DIR\n");
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "roles")) test_roles();
    else if (!strcmp(cmd, "crosscheck") && argc == 3) test_crosscheck(argv[2]);
    else if (!strcmp(cmd, "real") && argc >= 3) test_real(argc - 2, argv + 2);
    else if (!strcmp(cmd, "corrupt") && argc == 3) test_corrupt(argv[2]);
    else if (!strcmp(cmd, "mkfiles") && argc == 3) return mkfiles(argv[2]);
    else {
        fprintf(stderr, "test_gguf: bad arguments\n");
        return 2;
    }
    printf("%s: %d checks, %d failed\n", cmd, g_checks, g_fail);
    return g_fail ? 1 : 0;
}
