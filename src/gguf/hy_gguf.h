/* hy_gguf: a hardened reader of GGUF headers, and tensor roles.
 *
 * Job: turn a GGUF file's header (magic, version, key-value pairs, tensor
 * infos) into a hy_model_desc: the architecture and hyperparameters, and for
 * every tensor its type, shape, absolute file offset, size in bytes, layer and
 * role. Everything downstream (planner, streaming engine, server) works from
 * this description and never re-parses the file.
 *
 * Invariants of a hy_model_desc returned with 0:
 *  - it was read from the header only: tensor data is never mapped or read,
 *    and the file is never written;
 *  - every tensor has a valid, non-deprecated ggml type; 1..4 dims, each > 0;
 *    ne[d] == 1 for d >= n_dims; ne[0] a multiple of the type's block size;
 *    size == ggml_nbytes of that shape (no overflow);
 *  - offset is absolute, >= data_offset, (offset - data_offset) is a multiple
 *    of alignment, and offset + size <= file_size;
 *  - no two tensors overlap and no two share a name; names are 1..63 bytes,
 *    without NUL;
 *  - expert tensors (fused "*_exps"/"*_chexps") have the experts in their
 *    outermost dimension: n_experts = ne[n_dims-1] (ne[2] for the 3-D
 *    weights, ne[1] for 2-D expert biases) and expert_stride = the byte
 *    stride of that dimension, so expert e's slice is
 *    [offset + e*expert_stride, offset + (e+1)*expert_stride). Old-style
 *    split expert tensors ("ffn_gate.3") have n_experts 1, stride = size.
 *    Every other tensor has n_experts 0, expert_stride 0;
 *  - n_layer is <arch>.block_count, raised if needed so that every "blk.N."
 *    tensor has N < n_layer; bytes_by_layer has n_layer entries (NULL when
 *    n_layer is 0); layer -1 tensors are counted in no layer;
 *  - sum(bytes_by_role) == total tensor bytes; header_hash is FNV-1a-64 over
 *    the file bytes [0, data_offset).
 * Hyperparameters absent from the file are 0 (file_type: -1). Integer-array
 * hyperparameters (per-layer head counts, FFN sizes) report their maximum.
 *
 * Errors: functions return < 0 and write one line (no newline) into err. The
 * reader checks every count, length, dimension, type and offset taken from
 * the file against the file size and for overflow before using it, so that
 * no input makes it crash, hang or allocate much more than the header's size.
 * Nothing here exits or aborts. */
#ifndef HY_GGUF_H
#define HY_GGUF_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    HY_ROLE_EMBED,
    HY_ROLE_NORM,
    HY_ROLE_ATTN,
    HY_ROLE_FFN,
    HY_ROLE_EXPERT,
    HY_ROLE_ROUTER,
    HY_ROLE_OUTPUT,
    HY_ROLE_OTHER,
    HY_ROLE_COUNT
} hy_role;

typedef struct {
    char     name[96];      /* ggml limits names to 63 bytes; longer ones are rejected */
    int      type;          /* enum ggml_type */
    int      n_dims;
    int64_t  ne[4];
    uint64_t offset;        /* absolute file offset of the data */
    uint64_t size;          /* bytes */
    int      layer;         /* blk.N → N, else -1 */
    hy_role  role;
    int      n_experts;     /* expert tensors: ne[n_dims-1] (ne[2] for weights); else 0 */
    uint64_t expert_stride; /* expert tensors: bytes per expert slice (nb[n_dims-1]); else 0 */
} hy_tensor_info;

typedef struct {
    char     path[4096];
    char     arch[64];
    char     name[256];     /* general.name, control characters replaced by '?' */
    uint32_t version;
    uint64_t file_size, data_offset, alignment;
    int      n_layer, n_embd, n_ff, n_head, n_head_kv, n_expert, n_expert_used, n_vocab, n_ctx_train, file_type;
    int64_t  n_tensors, n_kv;
    uint64_t n_params;
    hy_tensor_info *tensors;   /* n_tensors entries, in file order */
    uint64_t bytes_by_role[HY_ROLE_COUNT];
    uint64_t *bytes_by_layer;  /* n_layer entries; tensors with layer < 0 not included */
    uint64_t header_hash;      /* 64-bit FNV-1a over the header bytes [0, data_offset) */
    uint64_t model_id;         /* keys per-model statistics and calibration: header_hash mixed with samples
                                * of the tensor data (hy_gguf_read), so two files whose headers agree but
                                * whose weights differ (one architecture and metadata, other weights) are
                                * two models; = header_hash where only the header was given (parse_buffer) */
} hy_model_desc;

/* return codes (all < 0) */
#define HY_GGUF_EINVAL (-1) /* not a GGUF file, corrupt or unsupported header */
#define HY_GGUF_EIO    (-2) /* open/stat/read failed */
#define HY_GGUF_EMORE  (-3) /* parse_buffer: the header extends past the bytes given */
#define HY_GGUF_ENOMEM (-4)

/* Largest header hy_gguf_read will read into memory. Real headers are a few
 * MiB (a 256k-token vocabulary is ~6 MiB). */
#define HY_GGUF_MAX_HEADER ((uint64_t)256 << 20)
/* Arrays of arrays may nest this deep (ggml's own reader allows none). */
#define HY_GGUF_MAX_ARRAY_DEPTH 4
/* Largest accepted block index N in "blk.N." and <arch>.block_count. */
#define HY_GGUF_MAX_LAYERS 65536

/* Reads and validates the header of the file at `path`. On success *out is a
 * new description (free with hy_model_desc_free). Messages start with the path. */
int hy_gguf_read(const char *path, hy_model_desc **out, char *err, size_t errlen);

/* Parses a header from buf[0, len), a prefix of a file of file_size bytes
 * (len > file_size is treated as len == file_size). Returns HY_GGUF_EMORE with
 * a "header larger than N bytes read" message when the header runs past len
 * but not past file_size. out->path is empty. Safe on any input. */
int hy_gguf_parse_buffer(const uint8_t *buf, size_t len, uint64_t file_size, hy_model_desc **out, char *err,
                         size_t errlen);

/* Frees d, d->tensors and d->bytes_by_layer (each may be NULL). */
void hy_model_desc_free(hy_model_desc *d);

/* "embedding","norm","attention","ffn","expert","router","output","other"; "?" if out of range */
const char *hy_role_name(hy_role r);

/* Role of a tensor from its llama.cpp name ("blk.3.ffn_up_exps.weight" → HY_ROLE_EXPERT). */
hy_role hy_role_of(const char *tensor_name);

/* Layer N of a "blk.N." name, else -1 (also for N > HY_GGUF_MAX_LAYERS). */
int hy_layer_of(const char *tensor_name);

/* Tensor by exact name, or NULL. Linear in n_tensors. */
const hy_tensor_info *hy_model_find(const hy_model_desc *d, const char *name);

#endif
