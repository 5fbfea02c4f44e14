/* mkmodel: synthetic GGUF models with random weights, for tests and
 * benchmarks, in the layouts of four llama.cpp architectures: `llama` (dense,
 * or Mixtral-style MoE; the default), and the fine-grained MoE layouts
 * `qwen3moe` (attention q/k norms, expert FFN length), `qwen2moe` (a shared
 * expert beside the routed ones) and `gpt-oss` (MXFP4 experts with per-expert
 * biases, attention biases and sinks, sliding-window metadata). Tensor names,
 * shapes and metadata keys are those the pinned llama.cpp's loader reads for
 * real files of each architecture.
 *
 * Invariants:
 *  - Same options => same bytes. Every tensor is cut into chunks of whole
 *    rows whose size depends only on the tensor's shape; each chunk draws from
 *    its own PRNG seeded from (seed, tensor name, chunk index), so any number
 *    of threads produces the same file.
 *  - Memory stays bounded whatever the model size: the header is built with
 *    gguf.h, tensor data is generated chunk by chunk and written with pwrite
 *    at its final offset.
 *  - The output appears only complete: data goes to OUT.tmp, which is renamed
 *    at the end and removed on any error.
 *  - Slow quantizers (K-quants) would dominate the run time, so the large
 *    weight matrices of a quantized type are assembled from a pool of blocks
 *    that ggml_quantize_chunk produced from uniform random values of the
 *    tensor's scale; the token embeddings (which carry the routing
 *    directions) are quantized row by row.
 *  - The llama layout with the options that existed before the others were
 *    added is byte-identical to what earlier versions wrote (a golden test).
 *
 * Routing (MoE): the router sees the token embedding through directions that
 * every embedding row shares, so routing is set by construction, not by luck:
 *  - skew (default): one direction; 1-2 hot experts per layer gain on it
 *    (--skew S scales the gain; 0 = near uniform);
 *  - zipf: expert popularity per layer follows a Zipf-like law (logit offset
 *    -s*ln(rank), so selection frequency falls roughly as a power of the
 *    rank) under a per-layer random permutation. Offsets add up over several
 *    directions: one global, one per character class of the token (lower-case
 *    word, capitalised word, digits/punctuation/code, other), and a few
 *    picked by a hash of the token id; each token's embedding carries the
 *    global direction, its class's and its hash's. So prose and code favour
 *    different hot sets, and any two prompts differ somewhat. Measured by
 *    test_mkmodel_skew. */
#ifndef HY_MKMODEL_H
#define HY_MKMODEL_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include <ggml.h>

typedef enum { MK_ARCH_LLAMA, MK_ARCH_QWEN3MOE, MK_ARCH_QWEN2MOE, MK_ARCH_GPT_OSS, MK_ARCH_COUNT } mk_arch;
typedef enum { MK_ROUTING_SKEW, MK_ROUTING_ZIPF } mk_routing;

/* llama.cpp's name of the architecture ("gpt-oss" for LLM_ARCH_OPENAI_MOE) */
const char *mk_arch_name(mk_arch a);
/* by that name; -1 if unknown */
int mk_arch_parse(const char *name);

/* zipf routing: directions beyond the global one */
#define MK_ZIPF_CLASSES 4
#define MK_ZIPF_HASHED 4
#define MK_ZIPF_DIRS (1 + MK_ZIPF_CLASSES + MK_ZIPF_HASHED)

typedef struct {
    const char *out;
    const char *vocab;
    mk_arch arch;
    int64_t dim, layers, ff, heads, kv_heads, experts, top_k, ctx;
    /* resolved by the caller before mk_layout (no zero defaults there) */
    int64_t head_dim;   /* attention.key_length; dim/heads for llama */
    int64_t expert_ff;  /* expert_feed_forward_length; == ff for llama */
    int64_t shared_ff;  /* qwen2moe: expert_shared_feed_forward_length */
    int64_t swa;        /* gpt-oss: attention.sliding_window */
    enum ggml_type type;        /* weight matrices */
    enum ggml_type expert_type; /* ffn_*_exps */
    uint64_t seed;
    mk_routing routing;
    double skew;
    double layer_scale; /* scale of the residual writes (attn_output, ffn_down); 1 = 1/sqrt(2L) each */
    uint64_t target_size; /* 0: use layers */
    int threads;
    bool quiet;
} mk_opts;

typedef enum { MK_INIT_ONES, MK_INIT_UNIFORM, MK_INIT_EMBD, MK_INIT_ROUTER } mk_init;

typedef struct {
    char name[GGML_MAX_NAME];
    int n_dims;
    int64_t ne[4];
    enum ggml_type type;
    mk_init init;
    float amp;          /* uniform values in [-amp, amp] */
    int layer;          /* for the router's hot experts */
    int pool;           /* index into the block pools, or -1: generate rows */
    uint64_t seed;      /* from (seed, name) */
    uint64_t off;       /* absolute offset of the data in the file */
    uint64_t nbytes;    /* unpadded */
    uint64_t padded;
    size_t row_size;
    int64_t nrows, rows_per_chunk, n_chunks;
} mk_tensor;

typedef struct {
    enum ggml_type type;
    float amp;
    size_t block_bytes;
    int64_t n_blocks;
    uint8_t *data;
} mk_pool;

/* everything the writer needs; built by mk_layout() */
typedef struct {
    mk_opts o;
    mk_tensor *t;
    int n_t;
    mk_pool *pools;
    int n_pools;
    size_t alignment;
    size_t meta_size;
    void *meta;         /* header + KV + tensor infos + padding */
    uint64_t total;     /* file size */
    float *mdir;        /* shared embedding direction (unit), or NULL */
    int (*hot)[2];      /* per layer: the router's hot experts (-1: none) */
    float boost;        /* added along mdir to a hot expert's router row */
    float embd_alpha;   /* weight of mdir in every token embedding */
    /* zipf routing (NULL otherwise) */
    float *dirs;        /* MK_ZIPF_DIRS x dim, orthonormal: global, classes, hashed */
    float dir_amp[MK_ZIPF_DIRS]; /* embedding amplitude along each direction */
    float zipf_s[MK_ZIPF_DIRS];  /* logit offset of rank r along it: -s*ln(r) */
    uint8_t *tok_class; /* per token: its character class */
    uint64_t tok_hash_seed;
} mk_model;


/* PRNG: splitmix64 to seed, wyrand to draw */
static inline uint64_t mk_splitmix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}
static inline uint64_t mk_rand(uint64_t *s) {
    *s += 0xa0761d6478bd642full;
    __uint128_t m = (__uint128_t)*s * (*s ^ 0xe7037ed1a0b428dbull);
    return (uint64_t)(m >> 64) ^ (uint64_t)m;
}
uint64_t mk_hash_str(uint64_t seed, const char *s);

/* zipf routing: which hashed direction a token carries */
static inline int mk_tok_hashed(const mk_model *m, int64_t tok) {
    return (int)(mk_splitmix(m->tok_hash_seed ^ (uint64_t)tok) % MK_ZIPF_HASHED);
}
/* zipf routing: logit offsets of layer il's experts along direction j
 * (E floats: -s*ln(rank), centred; ranks a per-(layer, direction) random
 * permutation); perm: E ints of scratch */
void mk_zipf_offsets(const mk_model *m, int il, int j, float *out, int *perm);

/* layout: tensors, metadata (with the vocab's tokenizer), offsets; 0 or -1 + err */
int mk_layout(mk_model *m, const mk_opts *o, char *err, size_t errlen);
void mk_model_free(mk_model *m);

/* generate and write everything into the open fd (path: for messages); 0 or -1 + err */
int mk_write(mk_model *m, int fd, const char *path, char *err, size_t errlen);

/* An early-exit draft of the model at target: its metadata and vocabulary, embeddings,
 * output norm and head, and its first `layers` blocks, bytes unchanged (mk_draft.c). */
int mk_draft_of(const char *target, int64_t layers, const char *out, bool quiet, char *err, size_t errlen);

#endif
