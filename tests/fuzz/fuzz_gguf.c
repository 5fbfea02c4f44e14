/* libFuzzer target: the GGUF header reader as `hypura inspect` uses it.
 *
 * Each input is a whole file. Besides "no crash, no leak, no UB" it checks the
 * invariants hy_gguf.h promises for a successful read, that parsing a prefix
 * either asks for more (HY_GGUF_EMORE) or gives the same answer, and then runs
 * the inspect command itself (src/cli/cmd_inspect.c: hy_gguf_read on the file,
 * the per-type/role/layer summary, the expert table, human output with
 * --tensors and JSON output) on every input the reader accepts; it must
 * succeed on those. Output goes to /dev/null.
 *
 * Built by tests/fuzz/build.sh (clang, -fsanitize=fuzzer,address,undefined)
 * and by CMake with tests/fuzz/driver.c, which replays tests/fuzz/corpus/gguf
 * and tests/fuzz/regress/gguf (fuzz_regress_gguf). */
#include "gguf/hy_gguf.h"

#include "cli/cli.h"

#include <ggml.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_assert.h"

static void check(const hy_model_desc *d, size_t size) {
    ASSERT(d->file_size == size);
    ASSERT(d->data_offset <= size);
    ASSERT(d->alignment && !(d->alignment & (d->alignment - 1)));
    ASSERT(d->n_layer == 0 || d->bytes_by_layer);
    ASSERT(d->n_tensors == 0 || d->tensors);
    ASSERT(memchr(d->arch, 0, sizeof d->arch) && memchr(d->name, 0, sizeof d->name));
    uint64_t total = 0, roles = 0, layers = 0, in_layers = 0;
    for (int64_t i = 0; i < d->n_tensors; i++) {
        const hy_tensor_info *t = &d->tensors[i];
        size_t nl = strnlen(t->name, sizeof t->name);
        ASSERT(nl >= 1 && nl <= 63);
        ASSERT(t->type >= 0 && t->type < GGML_TYPE_COUNT && ggml_blck_size(t->type) > 0 && ggml_type_size(t->type) > 0);
        ASSERT(t->n_dims >= 1 && t->n_dims <= 4);
        uint64_t nel = 1;
        for (int k = 0; k < 4; k++) {
            ASSERT(t->ne[k] >= 1 && (k < t->n_dims || t->ne[k] == 1));
            nel *= (uint64_t)t->ne[k];
        }
        ASSERT(t->ne[0] % ggml_blck_size(t->type) == 0);
        ASSERT(t->size == nel / (uint64_t)ggml_blck_size(t->type) * ggml_type_size(t->type));
        ASSERT(t->offset >= d->data_offset && (t->offset - d->data_offset) % d->alignment == 0);
        ASSERT(t->offset + t->size >= t->offset && t->offset + t->size <= size);
        ASSERT(t->layer >= -1 && t->layer < d->n_layer);
        ASSERT((unsigned)t->role < HY_ROLE_COUNT && hy_role_of(t->name) == t->role);
        ASSERT(t->n_experts >= 0);
        if (t->n_experts) ASSERT(t->role == HY_ROLE_EXPERT && (uint64_t)t->n_experts * t->expert_stride == t->size);
        else ASSERT(t->expert_stride == 0);
        ASSERT(hy_model_find(d, t->name) == t); /* names are unique */
        total += t->size;
        if (t->layer >= 0) in_layers += t->size;
    }
    for (int r = 0; r < HY_ROLE_COUNT; r++) roles += d->bytes_by_role[r];
    for (int l = 0; l < d->n_layer; l++) layers += d->bytes_by_layer[l];
    ASSERT(roles == total && layers == in_layers && total <= size);
}

/* inspect --plan hands over to estimate, which profiles the machine: never asked for here */
int hy_cmd_estimate(int argc, char **argv) {
    (void)argc, (void)argv;
    abort();
}

/* the input as a file inspect can open by name; stdout to /dev/null */
static int g_fd = -1;
static char g_path[64];

static void setup(void) {
    if (g_fd >= 0) return;
    g_fd = memfd_create("fuzz_gguf", 0);
    ASSERT(g_fd >= 0);
    snprintf(g_path, sizeof g_path, "/proc/self/fd/%d", g_fd);
    fflush(stdout);
    int null = open("/dev/null", O_WRONLY);
    ASSERT(null >= 0 && dup2(null, STDOUT_FILENO) >= 0);
    close(null);
}

static void inspect(const uint8_t *data, size_t size) {
    setup();
    ASSERT(ftruncate(g_fd, 0) == 0);
    for (size_t o = 0; o < size;) {
        ssize_t w = pwrite(g_fd, data + o, size - o, (off_t)o);
        ASSERT(w > 0);
        o += (size_t)w;
    }
    char *human[] = {"inspect", g_path, "--tensors", NULL};
    char *json[] = {"inspect", "--json", g_path, NULL};
    ASSERT(hy_cmd_inspect(3, human) == 0);
    ASSERT(hy_cmd_inspect(3, json) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[512];
    hy_model_desc *d = NULL, *p = NULL;
    err[0] = 0;
    int rc = hy_gguf_parse_buffer(data, size, size, &d, err, sizeof err);
    ASSERT(rc != HY_GGUF_EMORE);
    if (rc == 0) {
        ASSERT(d);
        check(d, size);
    } else {
        ASSERT(!d && err[0] && !strchr(err, '\n'));
    }

    /* a prefix of the same file: more is needed, or the very same header */
    size_t half = size / 2;
    err[0] = 0;
    int rc2 = hy_gguf_parse_buffer(data, half, size, &p, err, sizeof err);
    if (rc2 == 0) {
        ASSERT(rc == 0 && p->header_hash == d->header_hash && p->n_tensors == d->n_tensors &&
               p->data_offset == d->data_offset);
        for (int64_t i = 0; i < p->n_tensors; i++) ASSERT(!memcmp(&p->tensors[i], &d->tensors[i], sizeof *p->tensors));
    } else {
        ASSERT(!p && err[0]);
        if (rc == 0) ASSERT(rc2 == HY_GGUF_EMORE && d->data_offset > half);
    }
    hy_model_desc_free(p);
    hy_model_desc_free(d);
    if (rc == 0) inspect(data, size);
    return 0;
}
