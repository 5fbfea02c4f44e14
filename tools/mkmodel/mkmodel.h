/* mkmodel: synthetic GGUF models with random weights in llama.cpp's `llama`
 * layout (dense, or Mixtral-style MoE), for tests and benchmarks.
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
 *    tensor's scale; the token embeddings (which carry the routing-skew
 *    direction) are quantized row by row. */
#ifndef HY_MKMODEL_H
#define HY_MKMODEL_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include <ggml.h>

typedef struct {
    const char *out;
    const char *vocab;
    int64_t dim, layers, ff, heads, kv_heads, experts, top_k, ctx;
    enum ggml_type type;
    uint64_t seed;
    double skew;
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

/* layout: tensors, metadata (with the vocab's tokenizer), offsets; 0 or -1 + err */
int mk_layout(mk_model *m, const mk_opts *o, char *err, size_t errlen);
void mk_model_free(mk_model *m);

/* generate and write everything into the open fd (path: for messages); 0 or -1 + err */
int mk_write(mk_model *m, int fd, const char *path, char *err, size_t errlen);

#endif
