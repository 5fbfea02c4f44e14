/* mk_draft: an early-exit draft of an existing model. The draft is the target's
 * own file cut after its first N blocks: every metadata key (tokenizer
 * included) with <arch>.block_count set to N, and every tensor that belongs to
 * no block or to a block below N (embeddings, output norm and head, blocks
 * 0..N-1), bytes copied unchanged. Its logits are then the target's residual
 * stream after N blocks read through the target's own head: a draft that
 * agrees with the target as much as its first blocks decide, with the same
 * vocabulary by construction. Deterministic: same target and N, same bytes. */
#include "mkmodel.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "util/hy_util.h"

/* block index of a tensor name "blk.N....", -1 for tensors outside blocks */
static int64_t block_of(const char *name) {
    if (strncmp(name, "blk.", 4) != 0) return -1;
    char *end;
    errno = 0;
    long long b = strtoll(name + 4, &end, 10);
    if (errno || end == name + 4 || *end != '.' || b < 0) return -1;
    return b;
}

static int copy_range(int in, int out, uint64_t src, uint64_t dst, uint64_t n, char *buf, size_t cap) {
    while (n > 0) {
        size_t m = n < cap ? (size_t)n : cap;
        ssize_t r = pread(in, buf, m, (off_t)src);
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            return -1;
        }
        for (ssize_t w = 0; w < r;) {
            ssize_t k = pwrite(out, buf + w, (size_t)(r - w), (off_t)(dst + (uint64_t)w));
            if (k <= 0) {
                if (k < 0 && errno == EINTR) continue;
                return -1;
            }
            w += k;
        }
        src += (uint64_t)r;
        dst += (uint64_t)r;
        n -= (uint64_t)r;
    }
    return 0;
}

int mk_draft_of(const char *target, int64_t layers, const char *out, bool quiet, char *err, size_t errlen) {
    struct ggml_context *meta = NULL;
    struct gguf_init_params ip = {.no_alloc = true, .ctx = &meta};
    struct gguf_context *src = gguf_init_from_file(target, ip);
    if (!src) return hy_fail(err, errlen, "cannot read %s as GGUF", target);
    int rc = -1, in = -1, fd = -1;
    char *buf = NULL;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    struct gguf_context *dst = gguf_init_empty();
    int64_t ka = gguf_find_key(src, "general.architecture");
    if (ka < 0 || gguf_get_kv_type(src, ka) != GGUF_TYPE_STRING) {
        hy_fail(err, errlen, "%s has no general.architecture", target);
        goto done;
    }
    char key[256];
    snprintf(key, sizeof key, "%s.block_count", gguf_get_val_str(src, ka));
    int64_t kb = gguf_find_key(src, key);
    if (kb < 0 || gguf_get_kv_type(src, kb) != GGUF_TYPE_UINT32) {
        hy_fail(err, errlen, "%s has no %s", target, key);
        goto done;
    }
    uint32_t n_block = gguf_get_val_u32(src, kb);
    if (layers < 1 || layers > (int64_t)n_block) {
        hy_fail(err, errlen, "--layers %" PRId64 " for a draft of a %u-block model: give 1..%u", layers, n_block, n_block);
        goto done;
    }
    gguf_set_kv(dst, src);
    gguf_set_val_u32(dst, key, (uint32_t)layers);
    char name[512];
    snprintf(name, sizeof name, "early-exit draft (%" PRId64 " of %u blocks)", layers, n_block);
    gguf_set_val_str(dst, "general.name", name);
    int64_t nt = gguf_get_n_tensors(src);
    for (int64_t i = 0; i < nt; i++) {
        const char *tn = gguf_get_tensor_name(src, i);
        if (block_of(tn) >= layers) continue;
        struct ggml_tensor *t = ggml_get_tensor(meta, tn);
        if (!t) {
            hy_fail(err, errlen, "tensor %s missing from %s's metadata", tn, target);
            goto done;
        }
        gguf_add_tensor(dst, t);
    }
    size_t msz = gguf_get_meta_size(dst);
    buf = malloc(msz > ((size_t)4 << 20) ? msz : ((size_t)4 << 20));
    if (!buf) {
        hy_fail(err, errlen, "out of memory");
        goto done;
    }
    in = open(target, O_RDONLY | O_CLOEXEC);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (in < 0 || fd < 0) {
        hy_fail(err, errlen, "cannot open %s: %s", in < 0 ? target : tmp, strerror(errno));
        goto done;
    }
    gguf_get_meta_data(dst, buf);
    if (pwrite(fd, buf, msz, 0) != (ssize_t)msz) {
        hy_fail(err, errlen, "write %s: %s", tmp, strerror(errno));
        goto done;
    }
    uint64_t total = msz, sdata = gguf_get_data_offset(src);
    int64_t nd = gguf_get_n_tensors(dst);
    for (int64_t i = 0; i < nd; i++) {
        const char *tn = gguf_get_tensor_name(dst, i);
        int64_t si = gguf_find_tensor(src, tn);
        uint64_t n = gguf_get_tensor_size(dst, i);
        uint64_t doff = msz + gguf_get_tensor_offset(dst, i);
        if (copy_range(in, fd, sdata + gguf_get_tensor_offset(src, si), doff, n, buf, (size_t)4 << 20)) {
            hy_fail(err, errlen, "copying %s: %s", tn, errno ? strerror(errno) : "short read");
            goto done;
        }
        if (doff + n > total) total = doff + n;
    }
    /* the data section ends aligned, as gguf's own writer pads it */
    size_t al = gguf_get_alignment(dst);
    total = (total + al - 1) / al * al;
    if (ftruncate(fd, (off_t)total) != 0 || fsync(fd) != 0) {
        hy_fail(err, errlen, "write %s: %s", tmp, strerror(errno));
        goto done;
    }
    if (close(fd) != 0) {
        fd = -1;
        hy_fail(err, errlen, "write %s: %s", tmp, strerror(errno));
        goto done;
    }
    fd = -1;
    if (rename(tmp, out) != 0) {
        hy_fail(err, errlen, "rename %s -> %s: %s", tmp, out, strerror(errno));
        goto done;
    }
    char sz[32];
    if (!quiet)
        fprintf(stderr, "mkmodel: %s: early-exit draft of %s, %" PRId64 " of %u blocks, %" PRId64 " of %" PRId64 " tensors\n",
                out, target, layers, n_block, nd, nt);
    printf("%s %" PRIu64 " bytes (%s)\n", out, total, hy_fmt_bytes(total, sz, sizeof sz));
    rc = 0;
done:
    if (fd >= 0) close(fd);
    if (rc) unlink(tmp);
    if (in >= 0) close(in);
    free(buf);
    gguf_free(dst);
    gguf_free(src);
    if (meta) ggml_free(meta);
    return rc;
}
