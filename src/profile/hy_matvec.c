/* hy_matvec: weight bytes per second of ggml's CPU matrix-vector product per type (hy_matvec.h). */
#include "profile/hy_matvec.h"

#include <stdlib.h>
#include <string.h>

#include "ggml-cpu.h"
#include "ggml.h"
#include "util/hy_util.h"

/* the weight types models ship in that ggml quantizes without an importance matrix */
static const enum ggml_type k_types[] = {
    GGML_TYPE_F32,  GGML_TYPE_F16,  GGML_TYPE_BF16, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1,   GGML_TYPE_Q5_0,
    GGML_TYPE_Q5_1, GGML_TYPE_Q8_0, GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K,   GGML_TYPE_Q5_K,
    GGML_TYPE_Q6_K, GGML_TYPE_IQ4_NL, GGML_TYPE_IQ4_XS, GGML_TYPE_MXFP4,
};

enum { ROW = 4096 }; /* a multiple of every block size above */

static void sort(double *t, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            double x = t[j];
            t[j] = t[j - 1];
            t[j - 1] = x;
        }
}

/* one type: seconds per product, the fastest of reps (0 on failure) */
static double time_type(enum ggml_type type, const float *row, int threads, size_t bytes, int reps, size_t *wbytes) {
    size_t rb = ggml_row_size(type, ROW);
    int64_t rows = (int64_t)(bytes / rb);
    if (rows < 64) rows = 64;
    /* the matrix, the vector, the product and the work buffer (the vector converted) */
    size_t need = (size_t)rows * rb + (size_t)rows * sizeof(float) + 4 * ROW * sizeof(float) + 16 * ggml_tensor_overhead() +
                  ggml_graph_overhead() + ((size_t)1 << 20);
    struct ggml_init_params ip = {.mem_size = need, .mem_buffer = NULL, .no_alloc = false};
    struct ggml_context *ctx = ggml_init(ip);
    if (!ctx) return 0;
    struct ggml_tensor *a = ggml_new_tensor_2d(ctx, type, ROW, rows);
    struct ggml_tensor *b = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, ROW, 1);
    double med = 0;
    if (a && b) {
        ggml_quantize_chunk(type, row, a->data, 0, 1, ROW, NULL);
        for (int64_t r = 1; r < rows; r++) memcpy((char *)a->data + (size_t)r * rb, a->data, rb);
        memcpy(b->data, row, ROW * sizeof(float));
        struct ggml_cgraph *gf = ggml_new_graph(ctx);
        ggml_build_forward_expand(gf, ggml_mul_mat(ctx, a, b));
        double t[16];
        int n = 0;
        if (reps > 16) reps = 16;
        if (ggml_graph_compute_with_ctx(ctx, gf, threads) == GGML_STATUS_SUCCESS) /* warm-up */
            for (int i = 0; i < reps; i++) {
                double t0 = hy_now();
                if (ggml_graph_compute_with_ctx(ctx, gf, threads) != GGML_STATUS_SUCCESS) break;
                t[n++] = hy_now() - t0;
            }
        if (n == reps && n > 0) { /* the best of them: a product slowed by something else says nothing of it */
            sort(t, n);
            med = t[0];
            *wbytes = (size_t)rows * rb;
        }
    }
    ggml_free(ctx);
    return med;
}

int hy_matvec_measure(int threads, size_t bytes, int reps, double gbps[HY_MATVEC_NTYPES]) {
    memset(gbps, 0, sizeof(double) * HY_MATVEC_NTYPES);
    if (threads < 1) threads = 1;
    if (reps < 1) reps = 1;
    float *row = malloc(ROW * sizeof(float));
    if (!row) return -1;
    uint32_t x = 0x9e3779b9u; /* xorshift: weights in [-1, 1) */
    for (int i = 0; i < ROW; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        row[i] = (float)((double)x / 2147483648.0 - 1.0);
    }
    ggml_cpu_init();
    int got = 0;
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++) {
        enum ggml_type ty = k_types[i];
        if ((int)ty >= HY_MATVEC_NTYPES || ggml_quantize_requires_imatrix(ty)) continue;
        size_t w = 0;
        double s = time_type(ty, row, threads, bytes, reps, &w);
        if (s > 0) {
            gbps[ty] = (double)w / s / 1e9;
            got++;
        }
    }
    free(row);
    return got;
}

const char *hy_matvec_type_name(int type) {
    if (type < 0 || type >= GGML_TYPE_COUNT || type >= HY_MATVEC_NTYPES) return NULL;
    if (ggml_type_size((enum ggml_type)type) == 0) return NULL;
    return ggml_type_name((enum ggml_type)type);
}

int hy_matvec_type_of(const char *name) {
    for (int t = 0; t < GGML_TYPE_COUNT && t < HY_MATVEC_NTYPES; t++) {
        const char *n = hy_matvec_type_name(t);
        if (n && !strcmp(n, name)) return t;
    }
    return -1;
}
