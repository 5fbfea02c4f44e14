/* hy_tensor: reading a graph tensor's bytes from the host, wherever its buffer
 * lives (the router choices that expert-streaming, optimize's calibration and
 * the tests read come from the GPU when the router runs there). */
#ifndef HY_TENSOR_H
#define HY_TENSOR_H

#include "ggml-backend.h"

/* t->data when t's buffer is host memory; else a malloc'd copy read back from the
 * device, stored in *copy for the caller to free. NULL when t has no data or
 * out of memory. *copy is NULL unless a copy was made. */
const char *hy_tensor_host_data(const struct ggml_tensor *t, char **copy);

/* The bytes of a tensor whose buffer is plain host memory, as a ggml buffer's
 * memset_tensor / set_tensor / get_tensor (for hypura's own host buffer types) */
void hy_tensor_host_memset(ggml_backend_buffer_t b, struct ggml_tensor *t, uint8_t v, size_t off, size_t n);
void hy_tensor_host_set(ggml_backend_buffer_t b, struct ggml_tensor *t, const void *data, size_t off, size_t n);
void hy_tensor_host_get(ggml_backend_buffer_t b, const struct ggml_tensor *t, void *data, size_t off, size_t n);

#endif
