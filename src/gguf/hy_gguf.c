#include "gguf/hy_gguf.h"

#include "util/hy_util.h"

#include <ggml.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* GGUF value types (gguf.h's enum gguf_type; repeated so the parser does not
 * depend on gguf.h, whose reader is the independent implementation the tests
 * compare against). */
enum { T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STRING, T_ARRAY, T_U64, T_I64, T_F64, T_COUNT };
static const uint8_t type_size[T_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
static const char *const type_names[T_COUNT] = {"u8",     "i8",    "u16", "i16", "u32", "i32", "f32",
                                                "bool",   "string", "array", "u64", "i64", "f64"};

#define GGUF_DEFAULT_ALIGN 32
#define MAX_NAME 63 /* GGML_MAX_NAME - 1 */
/* smallest encodings, to reject absurd counts up front */
#define MIN_KV_BYTES 14     /* key len 8 + key 1 + type 4 + value 1 */
#define MIN_TENSOR_BYTES 33 /* name len 8 + name 1 + n_dims 4 + ne 8 + type 4 + offset 8 */

/* ------------------------------------------------------------------------ */
/* roles and layers                                                          */

const char *hy_role_name(hy_role r) {
    static const char *const names[HY_ROLE_COUNT] = {"embedding", "norm",   "attention", "ffn",
                                                     "expert",    "router", "output",    "other"};
    return (unsigned)r < HY_ROLE_COUNT ? names[r] : "?";
}

/* N of a leading "blk.N.", -1 if none, -2 if N is out of range */
static int layer_of(const char *name) {
    if (strncmp(name, "blk.", 4) != 0) return -1;
    const char *p = name + 4;
    if (*p < '0' || *p > '9') return -1;
    long v = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (*p - '0');
        if (v >= HY_GGUF_MAX_LAYERS) {
            while (*p >= '0' && *p <= '9') p++;
            return *p == '.' ? -2 : -1;
        }
    }
    return *p == '.' ? (int)v : -1;
}

int hy_layer_of(const char *tensor_name) {
    if (!tensor_name) return -1;
    int l = layer_of(tensor_name);
    return l < 0 ? -1 : l;
}

static bool starts(const char *s, size_t n, const char *pfx) {
    size_t k = strlen(pfx);
    return n >= k && memcmp(s, pfx, k) == 0;
}
static bool ends(const char *s, size_t n, const char *sfx) {
    size_t k = strlen(sfx);
    return n >= k && memcmp(s + n - k, sfx, k) == 0;
}
static bool is(const char *s, size_t n, const char *w) { return n == strlen(w) && memcmp(s, w, n) == 0; }

/* *fused: 1 for "*_exps" (experts in the outer dim), 2 for split "ffn_up.3" */
static hy_role role_of(const char *name, int *fused) {
    *fused = 0;
    if (!name) return HY_ROLE_OTHER;
    /* the part after the last "blk.N." ("v.blk.0.attn_q" and "enc.blk.1.ffn_up" too) */
    const char *rest = name;
    bool in_blk = false;
    for (const char *p = name; (p = strstr(p, "blk.")) != NULL; p += 4) {
        if (p != name && p[-1] != '.') continue;
        const char *q = p + 4;
        if (*q < '0' || *q > '9') continue;
        while (*q >= '0' && *q <= '9') q++;
        if (*q == '.') {
            rest = q + 1;
            in_blk = true;
        }
    }
    size_t bl = strcspn(rest, ".");
    const char *sub = rest[bl] == '.' ? rest + bl + 1 : rest + bl;
    size_t sl = strcspn(sub, ".");

    if (strstr(rest, "norm")) return HY_ROLE_NORM;
    if (!in_blk) {
        if (is(rest, bl, "output")) return HY_ROLE_OUTPUT;
        if (strstr(rest, "embd") && (size_t)(strstr(rest, "embd") - rest) < bl) return HY_ROLE_EMBED;
        if (is(rest, bl, "token_types")) return HY_ROLE_EMBED;
    }
    if (is(rest, bl, "nextn")) { /* multi-token-prediction head inside a block */
        if (is(sub, sl, "embed_tokens")) return HY_ROLE_EMBED;
        if (is(sub, sl, "shared_head_head")) return HY_ROLE_OUTPUT;
        return HY_ROLE_OTHER;
    }
    if (starts(rest, bl, "attn_") || starts(rest, bl, "vis_attn_") || is(rest, bl, "indexer") ||
        starts(rest, bl, "time_mix_"))
        return HY_ROLE_ATTN;
    if (is(rest, bl, "ffn_gate_inp") || starts(rest, bl, "exp_probs_b") || is(rest, bl, "ffn_gate_tid2eid"))
        return HY_ROLE_ROUTER;
    if (ends(rest, bl, "_exps") || ends(rest, bl, "_chexps")) {
        *fused = 1;
        return HY_ROLE_EXPERT;
    }
    if ((is(rest, bl, "ffn_gate") || is(rest, bl, "ffn_up") || is(rest, bl, "ffn_down")) && sl > 0 &&
        strspn(sub, "0123456789") == sl) {
        *fused = 2;
        return HY_ROLE_EXPERT;
    }
    if (starts(rest, bl, "ffn_") || starts(rest, bl, "channel_mix_")) return HY_ROLE_FFN;
    return HY_ROLE_OTHER;
}

hy_role hy_role_of(const char *tensor_name) {
    int fused;
    return role_of(tensor_name, &fused);
}

const hy_tensor_info *hy_model_find(const hy_model_desc *d, const char *name) {
    if (!d || !name || !d->tensors) return NULL;
    for (int64_t i = 0; i < d->n_tensors; i++)
        if (strcmp(d->tensors[i].name, name) == 0) return &d->tensors[i];
    return NULL;
}

void hy_model_desc_free(hy_model_desc *d) {
    if (!d) return;
    free(d->tensors);
    free(d->bytes_by_layer);
    free(d);
}

/* ------------------------------------------------------------------------ */
/* the cursor                                                                */

typedef struct {
    const uint8_t *buf;
    uint64_t len;   /* bytes available in buf */
    uint64_t fsize; /* size of the whole file */
    uint64_t pos;
    uint64_t need;  /* on HY_GGUF_EMORE: bytes needed at least */
    int rc;
    char *err;
    size_t errlen;
    char what[200]; /* the element being read, for truncation messages */
} cur_t;

__attribute__((format(printf, 3, 4))) static int fail(cur_t *c, int rc, const char *fmt, ...) {
    if (c->err && c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, c->errlen, fmt, ap);
        va_end(ap);
    }
    c->rc = rc;
    return -1;
}

/* printable copy of n bytes for messages: control bytes → '?', long → "..." */
static const char *san(const uint8_t *p, uint64_t n, char *out, size_t outlen) {
    size_t o = 0;
    for (uint64_t i = 0; i < n && o + 1 < outlen; i++) {
        if (o + 4 >= outlen && i + 1 < n) {
            while (o > 0 && ((uint8_t)out[o - 1] & 0xC0) == 0x80) o--; /* whole UTF-8 sequences only */
            if (o > 0 && (uint8_t)out[o - 1] >= 0xC0) o--;
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        uint8_t ch = p[i];
        out[o++] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    out[o] = 0;
    return out;
}

/* the next n bytes must exist in the file (else a hard error) and in the buffer (else EMORE) */
static int need(cur_t *c, uint64_t n) {
    uint64_t end;
    if (!hy_add_u64(c->pos, n, &end) || end > c->fsize)
        return fail(c, HY_GGUF_EINVAL, "truncated header: %s ends past end of file (size %" PRIu64 ")", c->what,
                    c->fsize);
    if (end > c->len) {
        c->need = end;
        return fail(c, HY_GGUF_EMORE, "header larger than %" PRIu64 " bytes read (%s ends at byte %" PRIu64 ")",
                    c->len, c->what, end);
    }
    return 0;
}

static int rd(cur_t *c, void *dst, size_t n) {
    if (need(c, n)) return -1;
    memcpy(dst, c->buf + c->pos, n);
    c->pos += n;
    return 0;
}
static int rd_u32(cur_t *c, uint32_t *v) { return rd(c, v, 4); }
static int rd_i32(cur_t *c, int32_t *v) { return rd(c, v, 4); }
static int rd_u64(cur_t *c, uint64_t *v) { return rd(c, v, 8); }
static int rd_i64(cur_t *c, int64_t *v) { return rd(c, v, 8); }

/* a GGUF string: u64 length + bytes; *off = offset of the bytes in buf */
static int rd_str(cur_t *c, uint64_t *off, uint64_t *n) {
    if (rd_u64(c, n) || need(c, *n)) return -1;
    *off = c->pos;
    c->pos += *n;
    return 0;
}

static uint64_t remaining(const cur_t *c) { return c->fsize - c->pos; }

static uint64_t fnv1a_more(uint64_t h, const uint8_t *p, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static uint64_t fnv1a(const uint8_t *p, uint64_t n) { return fnv1a_more(0xcbf29ce484222325ULL, p, n); }

/* ------------------------------------------------------------------------ */
/* key-value pairs                                                           */

typedef struct {
    uint64_t key_off, key_len;
    int32_t type, arr_type; /* arr_type only for arrays */
    uint64_t n;             /* array length */
    uint64_t val_off;       /* first byte of the value (arrays: of the first element) */
} kvrec;

static int skip_value(cur_t *c, int32_t type, int depth, const char *key);

static int check_type(cur_t *c, int32_t t, const char *key) {
    if (t < 0 || t >= T_COUNT) return fail(c, HY_GGUF_EINVAL, "key '%s' has unknown value type %" PRId32, key, t);
    return 0;
}

/* skips n elements of type t at the cursor */
static int skip_array(cur_t *c, int32_t t, uint64_t n, int depth, const char *key) {
    if (type_size[t]) {
        uint64_t bytes;
        if (!hy_mul_u64(n, type_size[t], &bytes) || bytes > remaining(c))
            return fail(c, HY_GGUF_EINVAL,
                        "truncated or corrupt header: key '%s' has an array of %" PRIu64 " %s values, more than the file holds (size %" PRIu64 ")", key, n,
                        type_names[t], c->fsize);
        if (need(c, bytes)) return -1;
        c->pos += bytes;
        return 0;
    }
    /* strings take at least 8 bytes, arrays 12: reject impossible counts before looping */
    uint64_t min = t == T_STRING ? 8 : 12, bytes;
    if (!hy_mul_u64(n, min, &bytes) || bytes > remaining(c))
        return fail(c, HY_GGUF_EINVAL,
                    "truncated or corrupt header: key '%s' has an array of %" PRIu64 " %s values, more than the file holds (size %" PRIu64 ")", key, n,
                    type_names[t], c->fsize);
    for (uint64_t i = 0; i < n; i++)
        if (skip_value(c, t, depth, key)) return -1;
    return 0;
}

static int skip_value(cur_t *c, int32_t type, int depth, const char *key) {
    if (type == T_STRING) {
        uint64_t off, n;
        return rd_str(c, &off, &n);
    }
    if (type == T_ARRAY) {
        if (depth >= HY_GGUF_MAX_ARRAY_DEPTH)
            return fail(c, HY_GGUF_EINVAL, "key '%s': arrays nested deeper than %d levels", key,
                        HY_GGUF_MAX_ARRAY_DEPTH);
        int32_t at;
        uint64_t n;
        if (rd_i32(c, &at) || check_type(c, at, key) || rd_u64(c, &n)) return -1;
        return skip_array(c, at, n, depth + 1, key);
    }
    if (need(c, type_size[type])) return -1;
    c->pos += type_size[type];
    return 0;
}

static bool is_int_type(int32_t t) {
    return t == T_U8 || t == T_I8 || t == T_U16 || t == T_I16 || t == T_U32 || t == T_I32 || t == T_U64 || t == T_I64;
}

/* integer at p of GGUF type t into *v; false for non-integer types */
static bool int_at(const uint8_t *p, int32_t t, int64_t *v, bool *neg_or_huge) {
    *neg_or_huge = false;
    switch (t) {
    case T_U8: *v = p[0]; return true;
    case T_I8: *v = (int8_t)p[0]; return true;
    case T_U16: { uint16_t x; memcpy(&x, p, 2); *v = x; return true; }
    case T_I16: { int16_t x; memcpy(&x, p, 2); *v = x; return true; }
    case T_U32: { uint32_t x; memcpy(&x, p, 4); *v = x; return true; }
    case T_I32: { int32_t x; memcpy(&x, p, 4); *v = x; return true; }
    case T_U64: {
        uint64_t x;
        memcpy(&x, p, 8);
        if (x > (uint64_t)INT64_MAX) { *neg_or_huge = true; *v = INT64_MAX; }
        else *v = (int64_t)x;
        return true;
    }
    case T_I64: { int64_t x; memcpy(&x, p, 8); *v = x; return true; }
    default: return false;
    }
}

static const char *kv_key(const cur_t *c, const kvrec *r, char *out, size_t outlen) {
    return san(c->buf + r->key_off, r->key_len, out, outlen);
}

/* an integer hyperparameter in [0, max]; integer arrays give their maximum */
static int kv_int(cur_t *c, const kvrec *r, int64_t max, int *out) {
    char k[128];
    int32_t t = r->type == T_ARRAY ? r->arr_type : r->type;
    int64_t best = 0, v = 0;
    bool huge;
    if (!is_int_type(t))
        return fail(c, HY_GGUF_EINVAL, "key '%s' has type %s%s, expected an integer", kv_key(c, r, k, sizeof k),
                    r->type == T_ARRAY ? "array of " : "", type_names[t]);
    uint64_t n = r->type == T_ARRAY ? r->n : 1;
    for (uint64_t i = 0; i < n; i++) {
        int_at(c->buf + r->val_off + i * type_size[t], t, &v, &huge);
        if (huge || v < 0 || v > max)
            return fail(c, HY_GGUF_EINVAL, "key '%s' has value %s%" PRId64 " out of range [0, %" PRId64 "]",
                        kv_key(c, r, k, sizeof k), huge ? ">" : "", v, max);
        if (v > best) best = v;
    }
    *out = (int)best;
    return 0;
}

static int cmp_kv(const void *a, const void *b, void *ctx) {
    const kvrec *x = a, *y = b;
    const uint8_t *buf = ctx;
    uint64_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int r = memcmp(buf + x->key_off, buf + y->key_off, n);
    if (r) return r;
    return x->key_len < y->key_len ? -1 : x->key_len > y->key_len;
}

/* ------------------------------------------------------------------------ */
/* tensors                                                                   */

static int cmp_name(const void *a, const void *b, void *ctx) {
    const hy_tensor_info *t = ctx;
    return strcmp(t[*(const uint32_t *)a].name, t[*(const uint32_t *)b].name);
}
static int cmp_off(const void *a, const void *b, void *ctx) {
    const hy_tensor_info *t = ctx;
    uint64_t x = t[*(const uint32_t *)a].offset, y = t[*(const uint32_t *)b].offset;
    return x < y ? -1 : x > y;
}

static int read_tensor(cur_t *c, hy_tensor_info *ti, int64_t i, int64_t n_tensors, uint64_t *rel) {
    char nm[128];
    uint64_t off, len;
    snprintf(c->what, sizeof c->what, "tensor info %" PRId64 " of %" PRId64, i, n_tensors);
    if (rd_str(c, &off, &len)) return -1;
    const uint8_t *p = c->buf + off;
    if (len == 0) return fail(c, HY_GGUF_EINVAL, "tensor %" PRId64 " has an empty name", i);
    if (len > MAX_NAME)
        return fail(c, HY_GGUF_EINVAL, "tensor %" PRId64 " has a name of %" PRIu64 " bytes ('%s'), longer than %d", i,
                    len, san(p, len, nm, 64), MAX_NAME);
    if (memchr(p, 0, len))
        return fail(c, HY_GGUF_EINVAL, "tensor %" PRId64 " has a NUL byte in its name ('%s')", i, san(p, len, nm, sizeof nm));
    memcpy(ti->name, p, len);
    ti->name[len] = 0;
    san(p, len, nm, sizeof nm);
    snprintf(c->what, sizeof c->what, "tensor info %" PRId64 " of %" PRId64 " ('%s')", i, n_tensors, nm);

    uint32_t n_dims;
    if (rd_u32(c, &n_dims)) return -1;
    if (n_dims < 1 || n_dims > 4)
        return fail(c, HY_GGUF_EINVAL, "tensor '%s' has %" PRIu32 " dimensions (must be 1 to 4)", nm, n_dims);
    ti->n_dims = (int)n_dims;
    for (int d = 0; d < 4; d++) ti->ne[d] = 1;
    int64_t nel = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (rd_i64(c, &ti->ne[d])) return -1;
        if (ti->ne[d] <= 0)
            return fail(c, HY_GGUF_EINVAL, "tensor '%s' has invalid size %" PRId64 " in dimension %" PRIu32, nm,
                        ti->ne[d], d);
        if (__builtin_mul_overflow(nel, ti->ne[d], &nel))
            return fail(c, HY_GGUF_EINVAL, "tensor '%s' has too many elements (shape overflows)", nm);
    }
    int32_t type;
    if (rd_i32(c, &type)) return -1;
    if (type < 0 || type >= GGML_TYPE_COUNT)
        return fail(c, HY_GGUF_EINVAL, "tensor '%s' has unknown type %" PRId32, nm, type);
    int64_t blck = ggml_blck_size((enum ggml_type)type);
    size_t tsz = ggml_type_size((enum ggml_type)type);
    if (blck <= 0 || tsz == 0)
        return fail(c, HY_GGUF_EINVAL, "tensor '%s' has removed or deprecated type %" PRId32, nm, type);
    ti->type = type;
    if (ti->ne[0] % blck != 0)
        return fail(c, HY_GGUF_EINVAL, "tensor '%s' has rows of %" PRId64 " elements, not a multiple of block size %" PRId64 " of type %s",
                    nm, ti->ne[0], blck, ggml_type_name((enum ggml_type)type));
    uint64_t nb[4];
    nb[0] = tsz;
    if (!hy_mul_u64((uint64_t)(ti->ne[0] / blck), tsz, &nb[1]) || !hy_mul_u64(nb[1], (uint64_t)ti->ne[1], &nb[2]) ||
        !hy_mul_u64(nb[2], (uint64_t)ti->ne[2], &nb[3]) || !hy_mul_u64(nb[3], (uint64_t)ti->ne[3], &ti->size) ||
        ti->size > (uint64_t)INT64_MAX)
        return fail(c, HY_GGUF_EINVAL, "tensor '%s' is too large (size in bytes overflows)", nm);
    if (rd_u64(c, rel)) return -1;

    int l = layer_of(ti->name);
    if (l == -2)
        return fail(c, HY_GGUF_EINVAL, "tensor '%s' has a layer index of %d or more", nm, HY_GGUF_MAX_LAYERS);
    ti->layer = l;
    int fused;
    ti->role = role_of(ti->name, &fused);
    ti->n_experts = 0;
    ti->expert_stride = 0;
    if (fused == 1 && n_dims >= 2) {
        int64_t ne_out = ti->ne[n_dims - 1];
        if (ne_out > INT_MAX)
            return fail(c, HY_GGUF_EINVAL, "tensor '%s' has %" PRId64 " experts", nm, ne_out);
        ti->n_experts = (int)ne_out;
        ti->expert_stride = nb[n_dims - 1];
    } else if (fused == 2) {
        ti->n_experts = 1;
        ti->expert_stride = ti->size;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* the parser                                                                */

static int parse(cur_t *c, hy_model_desc **out) {
    hy_model_desc *d = NULL;
    kvrec *kv = NULL;
    uint32_t *idx = NULL;
    char k[128];

    *out = NULL;
    if (c->fsize == 0) return fail(c, HY_GGUF_EINVAL, "empty file (0 bytes)");
    if (c->len > c->fsize) c->len = c->fsize;

    snprintf(c->what, sizeof c->what, "the magic");
    if (c->fsize < 4) {
        if (c->len < c->fsize) return need(c, c->fsize);
        if (memcmp(c->buf, "GGUF", c->fsize) != 0) return fail(c, HY_GGUF_EINVAL, "not a GGUF file (bad magic)");
    }
    if (need(c, 4)) return -1;
    if (memcmp(c->buf, "GGUF", 4) != 0) return fail(c, HY_GGUF_EINVAL, "not a GGUF file (bad magic)");
    c->pos = 4;

    snprintf(c->what, sizeof c->what, "the fixed header");
    uint32_t version;
    int64_t n_tensors, n_kv;
    if (rd_u32(c, &version)) return -1;
    if ((version & 0xFFFF) == 0 && version != 0)
        return fail(c, HY_GGUF_EINVAL, "unsupported GGUF version %" PRIu32 " (a big-endian file?)", version);
    if (version < 2 || version > 3) return fail(c, HY_GGUF_EINVAL, "unsupported GGUF version %" PRIu32, version);
    if (rd_i64(c, &n_tensors) || rd_i64(c, &n_kv)) return -1;
    uint64_t rem = remaining(c), t1, t2;
    if (n_tensors < 0 || !hy_mul_u64((uint64_t)n_tensors, MIN_TENSOR_BYTES, &t1) || t1 > rem)
        return fail(c, HY_GGUF_EINVAL, "truncated or corrupt header: %" PRId64 " tensors cannot fit in a file of %" PRIu64 " bytes",
                    n_tensors, c->fsize);
    if (n_kv < 0 || !hy_mul_u64((uint64_t)n_kv, MIN_KV_BYTES, &t2) || !hy_add_u64(t1, t2, &t2) || t2 > rem)
        return fail(c, HY_GGUF_EINVAL,
                    "truncated or corrupt header: %" PRId64 " key-value pairs cannot fit in a file of %" PRIu64 " bytes",
                    n_kv, c->fsize);

    d = calloc(1, sizeof *d);
    if (!d) return fail(c, HY_GGUF_ENOMEM, "out of memory");
    d->version = version;
    d->file_size = c->fsize;
    d->n_tensors = n_tensors;
    d->n_kv = n_kv;
    d->file_type = -1;
    d->alignment = GGUF_DEFAULT_ALIGN;

    /* pass 1: walk every key-value pair, remember where each one is */
    size_t kv_cap = 0;
    for (int64_t i = 0; i < n_kv; i++) {
        /* grow as pairs are parsed, so memory follows the bytes actually present */
        if ((size_t)i == kv_cap) {
            size_t ncap = kv_cap ? kv_cap * 2 : 64;
            kvrec *nk = realloc(kv, ncap * sizeof *nk);
            if (!nk) {
                fail(c, HY_GGUF_ENOMEM, "out of memory");
                goto bad;
            }
            kv = nk;
            kv_cap = ncap;
        }
        kvrec *r = &kv[i];
        memset(r, 0, sizeof *r);
        snprintf(c->what, sizeof c->what, "key-value pair %" PRId64 " of %" PRId64, i, n_kv);
        if (rd_str(c, &r->key_off, &r->key_len)) goto bad;
        if (r->key_len == 0) {
            fail(c, HY_GGUF_EINVAL, "key-value pair %" PRId64 " has an empty key", i);
            goto bad;
        }
        kv_key(c, r, k, sizeof k);
        snprintf(c->what, sizeof c->what, "key-value pair %" PRId64 " of %" PRId64 " ('%s')", i, n_kv, k);
        if (rd_i32(c, &r->type) || check_type(c, r->type, k)) goto bad;
        r->n = 1;
        if (r->type == T_ARRAY) {
            if (rd_i32(c, &r->arr_type) || check_type(c, r->arr_type, k) || rd_u64(c, &r->n)) goto bad;
            r->val_off = c->pos;
            if (skip_array(c, r->arr_type, r->n, 1, k)) goto bad;
        } else {
            r->val_off = c->pos;
            if (skip_value(c, r->type, 0, k)) goto bad;
        }
    }
    if (n_kv > 1) {
        kvrec *sorted = malloc((size_t)n_kv * sizeof *sorted);
        if (!sorted) {
            fail(c, HY_GGUF_ENOMEM, "out of memory");
            goto bad;
        }
        memcpy(sorted, kv, (size_t)n_kv * sizeof *sorted);
        qsort_r(sorted, (size_t)n_kv, sizeof *sorted, cmp_kv, (void *)c->buf);
        for (int64_t i = 1; i < n_kv; i++)
            if (cmp_kv(&sorted[i - 1], &sorted[i], (void *)c->buf) == 0) {
                fail(c, HY_GGUF_EINVAL, "duplicate key '%s'", kv_key(c, &sorted[i], k, sizeof k));
                free(sorted);
                goto bad;
            }
        free(sorted);
    }

    /* general.* first: the architecture names the other keys */
    int block_count = 0;
    for (int64_t i = 0; i < n_kv; i++) {
        kvrec *r = &kv[i];
        const char *key = (const char *)c->buf + r->key_off;
#define KEY_IS(s) (r->key_len == sizeof(s) - 1 && memcmp(key, s, sizeof(s) - 1) == 0)
        if (KEY_IS("general.architecture")) {
            uint64_t so, sl;
            if (r->type != T_STRING) {
                fail(c, HY_GGUF_EINVAL, "key 'general.architecture' has type %s, expected string", type_names[r->type]);
                goto bad;
            }
            memcpy(&sl, c->buf + r->val_off, 8);
            so = r->val_off + 8;
            if (sl == 0 || sl >= sizeof d->arch || memchr(c->buf + so, 0, sl)) {
                fail(c, HY_GGUF_EINVAL, "general.architecture '%s' is %s", san(c->buf + so, sl, k, 64),
                     sl == 0 ? "empty" : sl >= sizeof d->arch ? "longer than 63 bytes" : "has a NUL byte");
                goto bad;
            }
            memcpy(d->arch, c->buf + so, sl);
            d->arch[sl] = 0;
        } else if (KEY_IS("general.name") && r->type == T_STRING) {
            uint64_t sl;
            memcpy(&sl, c->buf + r->val_off, 8);
            san(c->buf + r->val_off + 8, sl, d->name, sizeof d->name);
        } else if (KEY_IS("general.alignment")) {
            uint32_t a;
            if (r->type != T_U32) {
                fail(c, HY_GGUF_EINVAL, "key 'general.alignment' has type %s, expected u32", type_names[r->type]);
                goto bad;
            }
            memcpy(&a, c->buf + r->val_off, 4);
            if (a == 0 || (a & (a - 1)) != 0) {
                fail(c, HY_GGUF_EINVAL, "general.alignment %" PRIu32 " is not a power of 2", a);
                goto bad;
            }
            d->alignment = a;
        } else if (KEY_IS("general.file_type")) {
            if (kv_int(c, r, INT_MAX, &d->file_type)) goto bad;
        } else if (KEY_IS("tokenizer.ggml.tokens")) {
            if (r->type != T_ARRAY) {
                fail(c, HY_GGUF_EINVAL, "key 'tokenizer.ggml.tokens' has type %s, expected array", type_names[r->type]);
                goto bad;
            }
            if (r->n > INT_MAX) {
                fail(c, HY_GGUF_EINVAL, "tokenizer.ggml.tokens has %" PRIu64 " entries", r->n);
                goto bad;
            }
            d->n_vocab = (int)r->n;
        }
#undef KEY_IS
    }

    /* pass 2: "<arch>.<suffix>" hyperparameters */
    if (d->arch[0]) {
        static const struct {
            const char *suffix;
            size_t field;
            int64_t max;
        } hp[] = {
            {"block_count", offsetof(hy_model_desc, n_layer), HY_GGUF_MAX_LAYERS},
            {"embedding_length", offsetof(hy_model_desc, n_embd), INT_MAX},
            {"feed_forward_length", offsetof(hy_model_desc, n_ff), INT_MAX},
            {"attention.head_count", offsetof(hy_model_desc, n_head), INT_MAX},
            {"attention.head_count_kv", offsetof(hy_model_desc, n_head_kv), INT_MAX},
            {"expert_count", offsetof(hy_model_desc, n_expert), INT_MAX},
            {"expert_used_count", offsetof(hy_model_desc, n_expert_used), INT_MAX},
            {"context_length", offsetof(hy_model_desc, n_ctx_train), INT_MAX},
            {"vocab_size", 0, INT_MAX},
        };
        size_t al = strlen(d->arch);
        int vocab_size = 0;
        for (int64_t i = 0; i < n_kv; i++) {
            kvrec *r = &kv[i];
            const char *key = (const char *)c->buf + r->key_off;
            if (r->key_len <= al + 1 || memcmp(key, d->arch, al) != 0 || key[al] != '.') continue;
            for (size_t j = 0; j < sizeof hp / sizeof hp[0]; j++) {
                size_t sl = strlen(hp[j].suffix);
                if (r->key_len != al + 1 + sl || memcmp(key + al + 1, hp[j].suffix, sl) != 0) continue;
                int *dst = hp[j].field ? (int *)((char *)d + hp[j].field) : &vocab_size;
                if (kv_int(c, r, hp[j].max, dst)) goto bad;
            }
        }
        block_count = d->n_layer;
        if (d->n_vocab == 0) d->n_vocab = vocab_size;
    }

    /* tensor infos */
    size_t cap = (size_t)(n_tensors < 1024 ? n_tensors : 1024);
    if (n_tensors > 0) {
        d->tensors = malloc(cap * sizeof *d->tensors);
        if (!d->tensors) {
            fail(c, HY_GGUF_ENOMEM, "out of memory");
            goto bad;
        }
    }
    int max_layer = -1;
    for (int64_t i = 0; i < n_tensors; i++) {
        /* grow as entries are parsed, so memory follows the bytes actually present */
        if ((size_t)i == cap) {
            size_t ncap = cap * 2;
            hy_tensor_info *nt = realloc(d->tensors, ncap * sizeof *nt);
            if (!nt) {
                fail(c, HY_GGUF_ENOMEM, "out of memory");
                goto bad;
            }
            d->tensors = nt;
            cap = ncap;
        }
        hy_tensor_info *ti = &d->tensors[i];
        memset(ti, 0, sizeof *ti);
        uint64_t r = 0;
        if (read_tensor(c, ti, i, n_tensors, &r)) goto bad;
        ti->offset = r; /* relative for now */
        if (ti->layer > max_layer) max_layer = ti->layer;
    }

    /* the data section starts at the next multiple of the alignment */
    uint64_t hdr_end = c->pos, data_off = hdr_end;
    if (n_tensors > 0) {
        if (!hy_add_u64(hdr_end, d->alignment - 1, &data_off)) data_off = UINT64_MAX;
        else data_off = data_off / d->alignment * d->alignment;
        if (data_off > c->fsize) {
            fail(c, HY_GGUF_EINVAL,
                 "truncated file: tensor data section (at %" PRIu64 ") starts past end of file (size %" PRIu64 ")",
                 data_off, c->fsize);
            goto bad;
        }
    }
    snprintf(c->what, sizeof c->what, "the padding before tensor data");
    if (need(c, data_off - hdr_end)) goto bad;
    d->data_offset = data_off;

    for (int64_t i = 0; i < n_tensors; i++) {
        hy_tensor_info *ti = &d->tensors[i];
        char nm[128];
        uint64_t abs, end;
        san((const uint8_t *)ti->name, strlen(ti->name), nm, sizeof nm);
        if (ti->offset % d->alignment != 0) {
            fail(c, HY_GGUF_EINVAL, "tensor '%s' has data offset %" PRIu64 ", not a multiple of the alignment %" PRIu64,
                 nm, ti->offset, d->alignment);
            goto bad;
        }
        if (!hy_add_u64(data_off, ti->offset, &abs) || !hy_add_u64(abs, ti->size, &end) || end > c->fsize) {
            fail(c, HY_GGUF_EINVAL,
                 "tensor data of '%s' lies past end of file (offset %" PRIu64 " + %" PRIu64 " bytes, file size %" PRIu64 ")",
                 nm, ti->offset, ti->size, c->fsize);
            goto bad;
        }
        ti->offset = abs;
    }

    if (n_tensors > 1) {
        if ((uint64_t)n_tensors > UINT32_MAX) {
            fail(c, HY_GGUF_EINVAL, "too many tensors (%" PRId64 ")", n_tensors);
            goto bad;
        }
        idx = malloc((size_t)n_tensors * sizeof *idx);
        if (!idx) {
            fail(c, HY_GGUF_ENOMEM, "out of memory");
            goto bad;
        }
        for (int64_t i = 0; i < n_tensors; i++) idx[i] = (uint32_t)i;
        qsort_r(idx, (size_t)n_tensors, sizeof *idx, cmp_name, d->tensors);
        for (int64_t i = 1; i < n_tensors; i++)
            if (strcmp(d->tensors[idx[i - 1]].name, d->tensors[idx[i]].name) == 0) {
                char nm[128];
                const char *s = d->tensors[idx[i]].name;
                fail(c, HY_GGUF_EINVAL, "duplicate tensor name '%s'", san((const uint8_t *)s, strlen(s), nm, sizeof nm));
                goto bad;
            }
        qsort_r(idx, (size_t)n_tensors, sizeof *idx, cmp_off, d->tensors);
        for (int64_t i = 1; i < n_tensors; i++) {
            const hy_tensor_info *a = &d->tensors[idx[i - 1]], *b = &d->tensors[idx[i]];
            if (a->offset + a->size > b->offset) {
                char na[128], nb[128];
                fail(c, HY_GGUF_EINVAL, "tensors '%s' and '%s' overlap in the file",
                     san((const uint8_t *)a->name, strlen(a->name), na, sizeof na),
                     san((const uint8_t *)b->name, strlen(b->name), nb, sizeof nb));
                goto bad;
            }
        }
        free(idx);
        idx = NULL;
    }

    /* totals */
    d->n_layer = block_count > max_layer + 1 ? block_count : max_layer + 1;
    if (d->n_layer > 0) {
        d->bytes_by_layer = calloc((size_t)d->n_layer, sizeof *d->bytes_by_layer);
        if (!d->bytes_by_layer) {
            fail(c, HY_GGUF_ENOMEM, "out of memory");
            goto bad;
        }
    }
    for (int64_t i = 0; i < n_tensors; i++) {
        const hy_tensor_info *ti = &d->tensors[i];
        uint64_t nel = 1;
        for (int j = 0; j < 4; j++) nel *= (uint64_t)ti->ne[j]; /* checked in read_tensor */
        /* tensors do not overlap and lie within the file: byte sums cannot overflow */
        d->bytes_by_role[ti->role] += ti->size;
        if (ti->layer >= 0) d->bytes_by_layer[ti->layer] += ti->size;
        if (!hy_add_u64(d->n_params, nel, &d->n_params)) {
            fail(c, HY_GGUF_EINVAL, "parameter count overflows");
            goto bad;
        }
    }
    d->header_hash = fnv1a(c->buf, data_off);
    d->model_id = d->header_hash;

    free(kv);
    *out = d;
    c->rc = 0;
    return 0;

bad:
    free(idx);
    free(kv);
    hy_model_desc_free(d);
    return -1;
}

int hy_gguf_parse_buffer(const uint8_t *buf, size_t len, uint64_t file_size, hy_model_desc **out, char *err,
                         size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!out) return hy_fail(err, errlen, "no output");
    *out = NULL;
    if (!buf && len) return hy_fail(err, errlen, "no buffer");
    cur_t c = {.buf = buf, .len = len, .fsize = file_size, .err = err, .errlen = errlen};
    if (parse(&c, out) == 0) return 0;
    return c.rc ? c.rc : HY_GGUF_EINVAL;
}

/* ------------------------------------------------------------------------ */
/* from a path                                                               */

static int read_upto(int fd, uint8_t *buf, uint64_t from, uint64_t to, const char *path, char *err, size_t errlen) {
    while (from < to) {
        size_t chunk = (size_t)(to - from < (64u << 20) ? to - from : (64u << 20));
        ssize_t n = pread(fd, buf + from, chunk, (off_t)from);
        if (n < 0) {
            if (errno == EINTR) continue;
            return hy_fail(err, errlen, "%s: read failed: %s", path, strerror(errno));
        }
        if (n == 0) return hy_fail(err, errlen, "%s: file shrank while being read", path);
        from += (uint64_t)n;
    }
    return 0;
}

/* model_id: the header hash mixed with HY_GGUF_ID_SAMPLES windows of HY_GGUF_ID_WINDOW bytes spread
 * evenly over the tensor data (a few small reads, whatever the file's size) */
#define HY_GGUF_ID_SAMPLES 16
#define HY_GGUF_ID_WINDOW  256
static int sample_data(int fd, hy_model_desc *d, const char *path, char *err, size_t errlen) {
    uint64_t lo = d->data_offset, hi = d->file_size;
    if (hi <= lo) return 0; /* no tensor data: the header is the model */
    uint64_t span = hi - lo, h = d->header_hash;
    uint8_t win[HY_GGUF_ID_WINDOW];
    for (int i = 0; i < HY_GGUF_ID_SAMPLES; i++) {
        uint64_t at = lo + (uint64_t)((unsigned __int128)span * (unsigned)i / HY_GGUF_ID_SAMPLES);
        size_t n = hi - at < sizeof win ? (size_t)(hi - at) : sizeof win, got = 0;
        while (got < n && got < sizeof win) {
            size_t want = n - got < sizeof win - got ? n - got : sizeof win - got;
            ssize_t r = pread(fd, win + got, want, (off_t)(at + got));
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) return hy_fail(err, errlen, "%s: read failed: %s", path, strerror(errno));
            if (r == 0) return hy_fail(err, errlen, "%s: file shrank while being read", path);
            got += (size_t)r;
        }
        h = fnv1a_more(h, win, n);
    }
    d->model_id = h;
    return 0;
}

int hy_gguf_read(const char *path, hy_model_desc **out, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!out) return hy_fail(err, errlen, "no output");
    *out = NULL;
    if (!path || !*path) return hy_fail(err, errlen, "no model path given"), HY_GGUF_EIO;

    /* O_NONBLOCK: opening a FIFO must not wait for a writer */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return hy_fail(err, errlen, "%s: %s", path, strerror(errno)), HY_GGUF_EIO;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        hy_fail(err, errlen, "%s: %s", path, strerror(errno));
        close(fd);
        return HY_GGUF_EIO;
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return hy_fail(err, errlen, "%s: is a directory", path), HY_GGUF_EIO;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return hy_fail(err, errlen, "%s: not a regular file", path), HY_GGUF_EIO;
    }
    uint64_t fsize = (uint64_t)st.st_size;
    uint64_t len = fsize < (2u << 20) ? fsize : (2u << 20);
    uint8_t *buf = NULL;
    uint64_t have = 0;
    char msg[HY_ERRLEN];
    int rc;
    for (;;) {
        uint8_t *nb = realloc(buf, len ? (size_t)len : 1);
        if (!nb) {
            rc = HY_GGUF_ENOMEM;
            hy_fail(msg, sizeof msg, "out of memory reading a %" PRIu64 "-byte header", len);
            break;
        }
        buf = nb;
        if (read_upto(fd, buf, have, len, path, err, errlen)) {
            free(buf);
            close(fd);
            return HY_GGUF_EIO;
        }
        have = len;
        cur_t c = {.buf = buf, .len = len, .fsize = fsize, .err = msg, .errlen = sizeof msg};
        msg[0] = 0;
        if (parse(&c, out) == 0) {
            rc = 0;
            break;
        }
        rc = c.rc ? c.rc : HY_GGUF_EINVAL;
        if (rc != HY_GGUF_EMORE) break;
        uint64_t want = c.need > len * 2 ? c.need : len * 2;
        if (want > fsize) want = fsize;
        if (c.need > HY_GGUF_MAX_HEADER) {
            rc = HY_GGUF_EINVAL;
            hy_fail(msg, sizeof msg, "header larger than %" PRIu64 " MiB (needs at least %" PRIu64 " bytes)",
                    HY_GGUF_MAX_HEADER >> 20, c.need);
            break;
        }
        if (want > HY_GGUF_MAX_HEADER) want = HY_GGUF_MAX_HEADER;
        if (want <= len) { /* cannot happen: parse asks for more only below fsize */
            rc = HY_GGUF_EINVAL;
            break;
        }
        len = want;
    }
    free(buf);
    if (rc == 0 && sample_data(fd, *out, path, err, errlen)) {
        hy_model_desc_free(*out);
        *out = NULL;
        close(fd);
        return HY_GGUF_EIO;
    }
    close(fd);
    if (rc == 0) {
        snprintf((*out)->path, sizeof (*out)->path, "%s", path);
        return 0;
    }
    hy_fail(err, errlen, "%s: %s", path, msg[0] ? msg : "invalid GGUF header");
    return rc;
}
