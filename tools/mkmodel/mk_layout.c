/* mk_layout: the tensor list, scales and GGUF header of a synthetic model. */
#include "mkmodel.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gguf.h>

#include "util/hy_util.h"

/* elements per generated chunk (whole rows): small enough for per-thread
 * buffers, large enough to amortise the per-chunk work */
#define MK_CHUNK_ELEMS (1 << 20)

uint64_t mk_hash_str(uint64_t seed, const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 0x100000001b3ull;
    }
    return mk_splitmix(mk_splitmix(seed) ^ h);
}

static const char *const k_arch_names[MK_ARCH_COUNT] = {
    [MK_ARCH_LLAMA] = "llama", [MK_ARCH_QWEN3MOE] = "qwen3moe",
    [MK_ARCH_QWEN2MOE] = "qwen2moe", [MK_ARCH_GPT_OSS] = "gpt-oss",
};

const char *mk_arch_name(mk_arch a) { return a >= 0 && a < MK_ARCH_COUNT ? k_arch_names[a] : "?"; }

int mk_arch_parse(const char *name) {
    for (int a = 0; a < MK_ARCH_COUNT; a++)
        if (!strcmp(name, k_arch_names[a])) return a;
    return -1;
}

/* llama_ftype of a file whose matrices are all `type` */
static uint32_t file_type_of(enum ggml_type type) {
    switch (type) {
        case GGML_TYPE_MXFP4: return 38; /* MOSTLY_MXFP4_MOE */
        case GGML_TYPE_F32:  return 0;  /* ALL_F32 */
        case GGML_TYPE_F16:  return 1;  /* MOSTLY_F16 */
        case GGML_TYPE_Q4_0: return 2;  /* MOSTLY_Q4_0 */
        case GGML_TYPE_Q8_0: return 7;  /* MOSTLY_Q8_0 */
        case GGML_TYPE_Q4_K: return 14; /* MOSTLY_Q4_K_S */
        case GGML_TYPE_Q6_K: return 18; /* MOSTLY_Q6_K */
        default:             return 0;
    }
}

static bool is_block_quant(enum ggml_type t) {
    return t != GGML_TYPE_F32 && t != GGML_TYPE_F16 && t != GGML_TYPE_BF16;
}

/* copy every tokenizer.* key of the vocab GGUF faithfully */
static int copy_tokenizer(struct gguf_context *dst, const struct gguf_context *src, const char *path,
                          char *err, size_t errlen) {
    int64_t n = gguf_get_n_kv(src);
    for (int64_t i = 0; i < n; i++) {
        const char *key = gguf_get_key(src, i);
        if (strncmp(key, "tokenizer.", 10) != 0) continue;
        enum gguf_type kt = gguf_get_kv_type(src, i);
        switch (kt) {
            case GGUF_TYPE_UINT8:   gguf_set_val_u8(dst, key, gguf_get_val_u8(src, i)); break;
            case GGUF_TYPE_INT8:    gguf_set_val_i8(dst, key, gguf_get_val_i8(src, i)); break;
            case GGUF_TYPE_UINT16:  gguf_set_val_u16(dst, key, gguf_get_val_u16(src, i)); break;
            case GGUF_TYPE_INT16:   gguf_set_val_i16(dst, key, gguf_get_val_i16(src, i)); break;
            case GGUF_TYPE_UINT32:  gguf_set_val_u32(dst, key, gguf_get_val_u32(src, i)); break;
            case GGUF_TYPE_INT32:   gguf_set_val_i32(dst, key, gguf_get_val_i32(src, i)); break;
            case GGUF_TYPE_FLOAT32: gguf_set_val_f32(dst, key, gguf_get_val_f32(src, i)); break;
            case GGUF_TYPE_UINT64:  gguf_set_val_u64(dst, key, gguf_get_val_u64(src, i)); break;
            case GGUF_TYPE_INT64:   gguf_set_val_i64(dst, key, gguf_get_val_i64(src, i)); break;
            case GGUF_TYPE_FLOAT64: gguf_set_val_f64(dst, key, gguf_get_val_f64(src, i)); break;
            case GGUF_TYPE_BOOL:    gguf_set_val_bool(dst, key, gguf_get_val_bool(src, i)); break;
            case GGUF_TYPE_STRING:  gguf_set_val_str(dst, key, gguf_get_val_str(src, i)); break;
            case GGUF_TYPE_ARRAY: {
                enum gguf_type at = gguf_get_arr_type(src, i);
                size_t an = gguf_get_arr_n(src, i);
                if (at == GGUF_TYPE_STRING) {
                    const char **v = malloc((an ? an : 1) * sizeof *v);
                    if (!v) return hy_fail(err, errlen, "out of memory copying %s", key);
                    for (size_t j = 0; j < an; j++) v[j] = gguf_get_arr_str(src, i, j);
                    gguf_set_arr_str(dst, key, v, an);
                    free(v);
                } else if (at == GGUF_TYPE_ARRAY) {
                    return hy_fail(err, errlen, "%s: key %s is a nested array, not supported", path, key);
                } else {
                    gguf_set_arr_data(dst, key, at, gguf_get_arr_data(src, i), an);
                }
                break;
            }
            default:
                return hy_fail(err, errlen, "%s: key %s has unknown type %d", path, key, (int)kt);
        }
    }
    return 0;
}

typedef struct {
    mk_model *m;
    struct ggml_context *gg;
    struct gguf_context *gf;
    int cap;
} builder;

static int add(builder *b, const char *name, int n_dims, int64_t ne0, int64_t ne1, int64_t ne2,
               enum ggml_type type, mk_init init, float amp, int layer, char *err, size_t errlen) {
    mk_model *m = b->m;
    if (m->n_t == b->cap) {
        int cap = b->cap ? b->cap * 2 : 64;
        mk_tensor *t = realloc(m->t, (size_t)cap * sizeof *t);
        if (!t) return hy_fail(err, errlen, "out of memory");
        m->t = t;
        b->cap = cap;
    }
    mk_tensor *t = &m->t[m->n_t++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    t->ne[0] = ne0; t->ne[1] = ne1; t->ne[2] = ne2; t->ne[3] = 1;
    t->type = type;
    t->init = init;
    t->amp = amp;
    t->layer = layer;
    t->pool = -1;
    t->seed = mk_hash_str(m->o.seed, name);
    t->row_size = ggml_row_size(type, ne0);
    t->nrows = ne1 * ne2;
    t->rows_per_chunk = ne0 >= MK_CHUNK_ELEMS ? 1 : MK_CHUNK_ELEMS / ne0;
    t->n_chunks = (t->nrows + t->rows_per_chunk - 1) / t->rows_per_chunk;

    /* big random matrices of a block type come from a block pool (see mkmodel.h) */
    if (init == MK_INIT_UNIFORM && is_block_quant(type)) {
        int p;
        for (p = 0; p < m->n_pools; p++)
            if (m->pools[p].type == type && m->pools[p].amp == amp) break;
        if (p == m->n_pools) {
            mk_pool *np = realloc(m->pools, (size_t)(p + 1) * sizeof *np);
            if (!np) return hy_fail(err, errlen, "out of memory");
            m->pools = np;
            memset(&np[p], 0, sizeof np[p]);
            np[p].type = type;
            np[p].amp = amp;
            np[p].block_bytes = ggml_type_size(type);
            m->n_pools++;
        }
        t->pool = p;
    }

    int64_t ne[4] = { ne0, ne1, ne2, 1 };
    struct ggml_tensor *gt = ggml_new_tensor(b->gg, type, n_dims, ne);
    if (!gt) return hy_fail(err, errlen, "ggml context full");
    ggml_set_name(gt, name);
    gguf_add_tensor(b->gf, gt);
    t->nbytes = ggml_nbytes(gt);
    return 0;
}

void mk_model_free(mk_model *m) {
    if (!m) return;
    free(m->t);
    for (int i = 0; i < m->n_pools; i++) free(m->pools[i].data);
    free(m->pools);
    free(m->meta);
    free(m->mdir);
    free(m->hot);
    free(m->dirs);
    free(m->tok_class);
    memset(m, 0, sizeof *m);
}

/* zipf routing: a token's character class. Experts of real models specialise
 * more by token kind than by topic, and the classes make prose and code (or
 * another script) route differently. 0: lower-case word, 1: capitalised word,
 * 2: digits, punctuation, symbols, whitespace, 3: anything else (non-ASCII,
 * byte, control and unknown tokens). */
static uint8_t token_class(const char *s, int32_t type) {
    if (type == 2 || type == 3 || type == 5 || type == 6) return 3; /* llama_token_type */
    for (;;) { /* word-start markers: SentencePiece's U+2581, GPT-2 BPE's Ġ (space), Ċ (newline) */
        if (!strncmp(s, "\xe2\x96\x81", 3)) s += 3;
        else if (!strncmp(s, "\xc4\xa0", 2) || !strncmp(s, "\xc4\x8a", 2)) s += 2;
        else if (*s == ' ') s++;
        else break;
    }
    unsigned char c = (unsigned char)*s;
    if (c >= 'a' && c <= 'z') return 0;
    if (c >= 'A' && c <= 'Z') return 1;
    return c < 0x80 ? 2 : 3;
}

void mk_zipf_offsets(const mk_model *m, int il, int j, float *out, int *perm) {
    const int E = (int)m->o.experts;
    char key[64];
    snprintf(key, sizeof key, "#zipf-rank-%d-%d", il, j);
    uint64_t s = mk_hash_str(m->o.seed, key);
    for (int e = 0; e < E; e++) perm[e] = e;
    for (int e = E - 1; e > 0; e--) {
        int k = (int)(mk_rand(&s) % (uint64_t)(e + 1));
        int x = perm[e];
        perm[e] = perm[k];
        perm[k] = x;
    }
    double mean = 0;
    for (int r = 0; r < E; r++) mean += log(r + 1.0);
    mean /= E;
    /* perm[r] is the expert of rank r; centred so no direction shifts every logit */
    for (int r = 0; r < E; r++) out[perm[r]] = (float)(-m->zipf_s[j] * (log(r + 1.0) - mean));
}

/* zipf routing: orthonormal directions, their weights, the tokens' classes */
static int zipf_setup(mk_model *m, const struct gguf_context *voc, int64_t ktok, int64_t n_vocab,
                      char *err, size_t errlen) {
    const int64_t dim = m->o.dim;
    if (dim < 8 * MK_ZIPF_DIRS) return hy_fail(err, errlen, "--routing zipf needs --dim >= %d", 8 * MK_ZIPF_DIRS);
    m->dirs = malloc((size_t)MK_ZIPF_DIRS * (size_t)dim * sizeof *m->dirs);
    m->tok_class = malloc((size_t)n_vocab);
    double *v = malloc((size_t)dim * sizeof *v);
    if (!m->dirs || !m->tok_class || !v) {
        free(v);
        return hy_fail(err, errlen, "out of memory");
    }
    uint64_t s = mk_hash_str(m->o.seed, "#zipf-directions");
    for (int j = 0; j < MK_ZIPF_DIRS; j++) { /* Gram-Schmidt over random vectors */
        for (int64_t i = 0; i < dim; i++) v[i] = (double)(int32_t)(mk_rand(&s) >> 32) * 0x1p-31;
        for (int k = 0; k < j; k++) {
            const float *d = m->dirs + (size_t)k * (size_t)dim;
            double p = 0;
            for (int64_t i = 0; i < dim; i++) p += v[i] * d[i];
            for (int64_t i = 0; i < dim; i++) v[i] -= p * d[i];
        }
        double n2 = 0;
        for (int64_t i = 0; i < dim; i++) n2 += v[i] * v[i];
        double inv = 1.0 / sqrt(n2 > 0 ? n2 : 1);
        float *d = m->dirs + (size_t)j * (size_t)dim;
        for (int64_t i = 0; i < dim; i++) d[i] = (float)(v[i] * inv);
    }
    free(v);
    /* Embedding energy: half random, 0.2 global, 0.2 class, 0.1 hashed (rows
     * keep rms 1). The random half gives router logits noise of std ~0.7;
     * the offsets' slopes s are in logit units, tuned with test_mkmodel_skew
     * (128 experts, dim 256, seeds 1-7): at top-8 the top 10 % of the experts
     * take 0.72-0.85 of a prompt's selections per layer. Fewer experts per
     * token concentrate more for the same slopes (top-4: 0.83-0.95), so the
     * slopes scale with sqrt(top-k/8) (top-4: 0.74-0.94). */
    const float fd = (float)dim, ks = sqrtf((float)m->o.top_k / 8.0f);
    m->dir_amp[0] = sqrtf(0.2f * fd);
    m->zipf_s[0] = 0.7f * ks;
    for (int c = 0; c < MK_ZIPF_CLASSES; c++) {
        m->dir_amp[1 + c] = sqrtf(0.2f * fd);
        m->zipf_s[1 + c] = 1.0f * ks;
    }
    for (int h = 0; h < MK_ZIPF_HASHED; h++) {
        m->dir_amp[1 + MK_ZIPF_CLASSES + h] = sqrtf(0.1f * fd);
        m->zipf_s[1 + MK_ZIPF_CLASSES + h] = 0.35f * ks;
    }
    int64_t ktype = gguf_find_key(voc, "tokenizer.ggml.token_type");
    const int32_t *types = NULL;
    if (ktype >= 0 && gguf_get_kv_type(voc, ktype) == GGUF_TYPE_ARRAY &&
        gguf_get_arr_type(voc, ktype) == GGUF_TYPE_INT32 && (int64_t)gguf_get_arr_n(voc, ktype) == n_vocab)
        types = gguf_get_arr_data(voc, ktype);
    for (int64_t t = 0; t < n_vocab; t++)
        m->tok_class[t] = token_class(gguf_get_arr_str(voc, ktok, (size_t)t), types ? types[t] : 1);
    m->tok_hash_seed = mk_hash_str(m->o.seed, "#zipf-token");
    return 0;
}

int mk_layout(mk_model *m, const mk_opts *o, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    m->o = *o;
    const mk_arch arch = o->arch;
    const int64_t dim = o->dim, ff = o->ff, L = o->layers, E = o->experts;
    const int64_t hd = o->head_dim, qd = hd * o->heads, dkv = hd * o->kv_heads;
    const int64_t eff = o->expert_ff, sff = o->shared_ff;
    const enum ggml_type wt = o->type, et = o->expert_type;
    const char *an = mk_arch_name(arch);
    const bool gpt_oss = arch == MK_ARCH_GPT_OSS;
    int rc = -1;

    if (arch < 0 || arch >= MK_ARCH_COUNT) return hy_fail(err, errlen, "unknown architecture");
    if (arch == MK_ARCH_LLAMA && (hd * o->heads != dim || eff != ff))
        return hy_fail(err, errlen, "llama layout: head size must be dim/heads and expert FFN = ff");
    if (arch == MK_ARCH_QWEN2MOE && hd * o->heads != dim)
        return hy_fail(err, errlen, "qwen2moe layout: head size must be dim/heads");
    if (gpt_oss && eff != ff) return hy_fail(err, errlen, "gpt-oss layout: one FFN length (ff = expert ff)");
    if (arch != MK_ARCH_LLAMA && E < 2) return hy_fail(err, errlen, "%s is a MoE layout: needs experts", an);

    struct gguf_init_params vp = { .no_alloc = true, .ctx = NULL };
    struct gguf_context *voc = gguf_init_from_file(o->vocab, vp);
    if (!voc) return hy_fail(err, errlen, "cannot read vocab GGUF %s", o->vocab);
    int64_t ktok = gguf_find_key(voc, "tokenizer.ggml.tokens");
    if (ktok < 0 || gguf_get_kv_type(voc, ktok) != GGUF_TYPE_ARRAY ||
        gguf_get_arr_type(voc, ktok) != GGUF_TYPE_STRING || gguf_get_arr_n(voc, ktok) == 0) {
        gguf_free(voc);
        return hy_fail(err, errlen, "%s has no tokenizer.ggml.tokens string array", o->vocab);
    }
    const int64_t n_vocab = (int64_t)gguf_get_arr_n(voc, ktok);
    if (n_vocab > INT32_MAX) {
        gguf_free(voc);
        return hy_fail(err, errlen, "%s: vocabulary too large", o->vocab);
    }

    builder b = { .m = m };
    b.gf = gguf_init_empty();
    const int n_tensors = 3 + (int)L * (arch == MK_ARCH_LLAMA ? (E > 0 ? 10 : 9) : 32);
    struct ggml_init_params gp = {
        .mem_size = ggml_tensor_overhead() * (size_t)(n_tensors + 8),
        .mem_buffer = NULL,
        .no_alloc = true,
    };
    b.gg = ggml_init(gp);
    if (!b.gf || !b.gg) { hy_fail(err, errlen, "out of memory"); goto out; }

    struct gguf_context *g = b.gf;
    char name[96], key[96];
#define KEY(suffix) (snprintf(key, sizeof key, "%s." suffix, an), key)
    gguf_set_val_str(g, "general.architecture", an);
    if (arch == MK_ARCH_LLAMA)
        snprintf(name, sizeof name, "hypura-synthetic-%s%s", E > 0 ? "moe-" : "", ggml_type_name(wt));
    else
        snprintf(name, sizeof name, "hypura-synthetic-%s-%s%s%s", an, ggml_type_name(wt), et != wt ? "-experts-" : "",
                 et != wt ? ggml_type_name(et) : "");
    gguf_set_val_str(g, "general.name", name);
    gguf_set_val_u32(g, "general.file_type", et == GGML_TYPE_MXFP4 ? file_type_of(et) : file_type_of(wt));
    gguf_set_val_u32(g, KEY("context_length"), (uint32_t)o->ctx);
    gguf_set_val_u32(g, KEY("embedding_length"), (uint32_t)dim);
    gguf_set_val_u32(g, KEY("block_count"), (uint32_t)L);
    gguf_set_val_u32(g, KEY("feed_forward_length"), (uint32_t)ff);
    gguf_set_val_u32(g, KEY("attention.head_count"), (uint32_t)o->heads);
    gguf_set_val_u32(g, KEY("attention.head_count_kv"), (uint32_t)o->kv_heads);
    if (arch == MK_ARCH_LLAMA) {
        gguf_set_val_u32(g, KEY("rope.dimension_count"), (uint32_t)hd);
        gguf_set_val_f32(g, KEY("rope.freq_base"), 10000.0f);
        gguf_set_val_f32(g, KEY("attention.layer_norm_rms_epsilon"), 1e-5f);
        gguf_set_val_u32(g, KEY("vocab_size"), (uint32_t)n_vocab);
    } else {
        /* the values of the released models: Qwen3-30B-A3B / Qwen1.5-MoE, gpt-oss-20b */
        gguf_set_val_f32(g, KEY("rope.freq_base"), gpt_oss ? 150000.0f : 1000000.0f);
        gguf_set_val_f32(g, KEY("attention.layer_norm_rms_epsilon"), gpt_oss ? 1e-5f : 1e-6f);
        if (arch != MK_ARCH_QWEN2MOE) {
            gguf_set_val_u32(g, KEY("attention.key_length"), (uint32_t)hd);
            gguf_set_val_u32(g, KEY("attention.value_length"), (uint32_t)hd);
        }
        if (gpt_oss) {
            gguf_set_val_u32(g, KEY("attention.sliding_window"), (uint32_t)o->swa);
            gguf_set_val_str(g, KEY("rope.scaling.type"), "yarn");
            gguf_set_val_f32(g, KEY("rope.scaling.factor"), 32.0f);
            gguf_set_val_u32(g, KEY("rope.scaling.original_context_length"), 4096);
        }
    }
    if (E > 0) {
        gguf_set_val_u32(g, KEY("expert_count"), (uint32_t)E);
        gguf_set_val_u32(g, KEY("expert_used_count"), (uint32_t)o->top_k);
        if (arch != MK_ARCH_LLAMA) gguf_set_val_u32(g, KEY("expert_feed_forward_length"), (uint32_t)eff);
        if (arch == MK_ARCH_QWEN2MOE) gguf_set_val_u32(g, KEY("expert_shared_feed_forward_length"), (uint32_t)sff);
    }
#undef KEY
    if (copy_tokenizer(g, voc, o->vocab, err, errlen)) goto out;

    /* Scales. Uniform on [-a, a] has std a/sqrt(3). Matrices get std
     * 1/sqrt(fan_in) so activations keep unit scale; the two matrices that
     * write into the residual stream are further scaled by 1/sqrt(2L), so the
     * stream stays dominated by the embedding: finite at any depth, and the
     * shared embedding directions (routing) survive every layer. Biases are
     * small beside the values they shift. */
    const float s3 = sqrtf(3.0f);
    const float rs = (float)(o->layer_scale > 0 ? o->layer_scale : 1.0) / sqrtf(2.0f * (float)L);
    const float a_in = s3 / sqrtf((float)dim);
    const float a_out = s3 / sqrtf((float)qd) * rs;
    const float a_down = s3 / sqrtf((float)ff) * rs;
    const float a_edown = s3 / sqrtf((float)eff) * rs;
    const float a_sdown = s3 / sqrtf((float)sff) * rs;
    const float a_bias = 0.1f, a_rbias = 0.1f * rs;
    const bool zipf = E > 0 && o->routing == MK_ROUTING_ZIPF;
    const bool skewed = E > 0 && !zipf && o->skew > 0.0;
    /* embedding rows: rms 1; with skew, half the energy along mdir; zipf: see zipf_setup */
    const float a_embd = zipf ? s3 * sqrtf(0.5f) : skewed ? s3 / sqrtf(2.0f) : s3;
    m->embd_alpha = skewed ? sqrtf((float)dim / 2.0f) : 0.0f;
    /* A hot expert's router row gains boost * mdir, its logit boost * x.mdir,
     * about boost * 0.5..0.7 * sqrt(dim) for the normalised hidden state x;
     * the other experts' logits have std ~0.7. At skew 1 the first hot
     * expert gains ~2-3 std (the second 3/4 of that): measured with 8
     * experts, top-2, the hot pair takes 65-95 % of the selections per layer
     * (25 % uniform); skew 0 leaves every expert under 25 %. */
    m->boost = skewed ? (float)(o->skew * 3.0 / sqrt((double)dim)) : 0.0f;

    if (add(&b, "token_embd.weight", 2, dim, n_vocab, 1, wt, MK_INIT_EMBD, a_embd, -1, err, errlen)) goto out;
    for (int64_t il = 0; il < L; il++) {
        char tn[GGML_MAX_NAME];
        const int l = (int)il;
#define T(suffix) (snprintf(tn, sizeof tn, "blk.%d." suffix ".weight", l), tn)
#define B(suffix) (snprintf(tn, sizeof tn, "blk.%d." suffix ".bias", l), tn)
#define ADD(nm, nd, n0, n1, n2, ty, in, amp) \
        do { if (add(&b, nm, nd, n0, n1, n2, ty, in, amp, l, err, errlen)) goto out; } while (0)
        const bool qkv_bias = arch == MK_ARCH_QWEN2MOE || gpt_oss;
        ADD(T("attn_norm"), 1, dim, 1, 1, GGML_TYPE_F32, MK_INIT_ONES, 1);
        ADD(T("attn_q"), 2, dim, qd, 1, wt, MK_INIT_UNIFORM, a_in);
        if (qkv_bias) ADD(B("attn_q"), 1, qd, 1, 1, GGML_TYPE_F32, MK_INIT_UNIFORM, a_bias);
        ADD(T("attn_k"), 2, dim, dkv, 1, wt, MK_INIT_UNIFORM, a_in);
        if (qkv_bias) ADD(B("attn_k"), 1, dkv, 1, 1, GGML_TYPE_F32, MK_INIT_UNIFORM, a_bias);
        ADD(T("attn_v"), 2, dim, dkv, 1, wt, MK_INIT_UNIFORM, a_in);
        if (qkv_bias) ADD(B("attn_v"), 1, dkv, 1, 1, GGML_TYPE_F32, MK_INIT_UNIFORM, a_bias);
        ADD(T("attn_output"), 2, qd, dim, 1, wt, MK_INIT_UNIFORM, a_out);
        if (gpt_oss) {
            ADD(B("attn_output"), 1, dim, 1, 1, GGML_TYPE_F32, MK_INIT_UNIFORM, a_rbias);
            ADD(T("attn_sinks"), 1, o->heads, 1, 1, GGML_TYPE_F32, MK_INIT_UNIFORM, 1.0f);
        }
        if (arch == MK_ARCH_QWEN3MOE) {
            ADD(T("attn_q_norm"), 1, hd, 1, 1, GGML_TYPE_F32, MK_INIT_ONES, 1);
            ADD(T("attn_k_norm"), 1, hd, 1, 1, GGML_TYPE_F32, MK_INIT_ONES, 1);
        }
        ADD(gpt_oss ? T("post_attention_norm") : T("ffn_norm"), 1, dim, 1, 1, GGML_TYPE_F32, MK_INIT_ONES, 1);
        if (E == 0) {
            ADD(T("ffn_gate"), 2, dim, ff, 1, wt, MK_INIT_UNIFORM, a_in);
            ADD(T("ffn_up"), 2, dim, ff, 1, wt, MK_INIT_UNIFORM, a_in);
            ADD(T("ffn_down"), 2, ff, dim, 1, wt, MK_INIT_UNIFORM, a_down);
        } else {
            ADD(T("ffn_gate_inp"), 2, dim, E, 1, GGML_TYPE_F32, MK_INIT_ROUTER, a_in);
            if (gpt_oss) ADD(B("ffn_gate_inp"), 1, E, 1, 1, GGML_TYPE_F32, MK_INIT_UNIFORM, a_bias);
            ADD(T("ffn_gate_exps"), 3, dim, eff, E, et, MK_INIT_UNIFORM, a_in);
            if (gpt_oss) ADD(B("ffn_gate_exps"), 2, eff, E, 1, GGML_TYPE_F32, MK_INIT_UNIFORM, a_bias);
            ADD(T("ffn_up_exps"), 3, dim, eff, E, et, MK_INIT_UNIFORM, a_in);
            if (gpt_oss) ADD(B("ffn_up_exps"), 2, eff, E, 1, GGML_TYPE_F32, MK_INIT_UNIFORM, a_bias);
            ADD(T("ffn_down_exps"), 3, eff, dim, E, et, MK_INIT_UNIFORM, a_edown);
            if (gpt_oss) ADD(B("ffn_down_exps"), 2, dim, E, 1, GGML_TYPE_F32, MK_INIT_UNIFORM, a_rbias);
            if (arch == MK_ARCH_QWEN2MOE) {
                ADD(T("ffn_gate_inp_shexp"), 1, dim, 1, 1, GGML_TYPE_F32, MK_INIT_UNIFORM, a_in);
                ADD(T("ffn_gate_shexp"), 2, dim, sff, 1, wt, MK_INIT_UNIFORM, a_in);
                ADD(T("ffn_up_shexp"), 2, dim, sff, 1, wt, MK_INIT_UNIFORM, a_in);
                ADD(T("ffn_down_shexp"), 2, sff, dim, 1, wt, MK_INIT_UNIFORM, a_sdown);
            }
        }
#undef ADD
#undef B
#undef T
    }
    if (add(&b, "output_norm.weight", 1, dim, 1, 1, GGML_TYPE_F32, MK_INIT_ONES, 1, -1, err, errlen)) goto out;
    if (add(&b, "output.weight", 2, dim, n_vocab, 1, wt, MK_INIT_UNIFORM, a_in, -1, err, errlen)) goto out;

    /* offsets */
    m->alignment = gguf_get_alignment(g);
    m->meta_size = gguf_get_meta_size(g);
    m->meta = malloc(m->meta_size);
    if (!m->meta) { hy_fail(err, errlen, "out of memory"); goto out; }
    gguf_get_meta_data(g, m->meta);
    for (int i = 0; i < m->n_t; i++) {
        mk_tensor *t = &m->t[i];
        t->off = m->meta_size + gguf_get_tensor_offset(g, i);
        t->padded = hy_round_up(t->nbytes, m->alignment);
    }
    mk_tensor *last = &m->t[m->n_t - 1];
    m->total = last->off + last->padded;

    if (zipf && zipf_setup(m, voc, ktok, n_vocab, err, errlen)) goto out;
    /* the shared direction and each layer's hot experts */
    if (skewed) {
        m->mdir = malloc((size_t)dim * sizeof *m->mdir);
        if (!m->mdir) { hy_fail(err, errlen, "out of memory"); goto out; }
        uint64_t s = mk_hash_str(o->seed, "#skew-direction");
        double n2 = 0;
        for (int64_t j = 0; j < dim; j++) {
            m->mdir[j] = (float)(int32_t)(mk_rand(&s) >> 32) * 0x1p-31f;
            n2 += (double)m->mdir[j] * m->mdir[j];
        }
        float inv = (float)(1.0 / sqrt(n2 > 0 ? n2 : 1));
        for (int64_t j = 0; j < dim; j++) m->mdir[j] *= inv;
    }
    m->hot = malloc((size_t)(L > 0 ? L : 1) * sizeof *m->hot);
    if (!m->hot) { hy_fail(err, errlen, "out of memory"); goto out; }
    for (int64_t il = 0; il < L; il++) {
        m->hot[il][0] = m->hot[il][1] = -1;
        if (!skewed) continue;
        snprintf(key, sizeof key, "#hot-experts-%d", (int)il);
        uint64_t s = mk_hash_str(o->seed, key);
        m->hot[il][0] = (int)(mk_rand(&s) % (uint64_t)E);
        if (E >= 4) {
            int h;
            do { h = (int)(mk_rand(&s) % (uint64_t)E); } while (h == m->hot[il][0]);
            m->hot[il][1] = h;
        }
    }
    rc = 0;
out:
    if (b.gg) ggml_free(b.gg);
    if (b.gf) gguf_free(b.gf);
    gguf_free(voc);
    if (rc) mk_model_free(m);
    return rc;
}
