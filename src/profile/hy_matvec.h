/* hy_matvec: how fast this machine's CPU multiplies weights of each type by one
 * vector, the operation a decoded token spends its time in.
 *
 * Memory bandwidth alone (memcpy) overstates it wherever the kernels are bound
 * by arithmetic rather than by memory: on 2 cores a Q4_K matrix is multiplied
 * at about half the memcpy rate, on 16 cores near it. For each weight type
 * ggml can quantize without an importance matrix, a matrix of `bytes` (larger
 * than the caches) is built from one quantized row repeated and multiplied by
 * one F32 vector on `threads` threads through ggml's CPU backend: weight bytes
 * per second, the fastest of `reps` after a warm-up (a machine shared with other
 * work, or a virtual machine's first touches of memory, slowed single products
 * by up to 5x on the H200 machine). */
#ifndef HY_MATVEC_H
#define HY_MATVEC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* slots indexed by enum ggml_type (GGML_TYPE_COUNT is below this) */
#define HY_MATVEC_NTYPES 64

/* Fills gbps[type] (GB/s of weights; 0 = not measured) for every weight type it
 * can time. Returns how many were measured, or -1 when nothing could be
 * allocated. */
int hy_matvec_measure(int threads, size_t bytes, int reps, double gbps[HY_MATVEC_NTYPES]);

/* ggml's name of a type ("q4_K"), NULL for an index that names none; and back (-1: unknown) */
const char *hy_matvec_type_name(int type);
int hy_matvec_type_of(const char *name);

#ifdef __cplusplus
}
#endif

#endif
