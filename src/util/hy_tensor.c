#include "util/hy_tensor.h"

#include <stdlib.h>
#include <string.h>

const char *hy_tensor_host_data(const struct ggml_tensor *t, char **copy) {
    *copy = NULL;
    if (!t->data) return NULL;
    if (!t->buffer || ggml_backend_buffer_is_host(t->buffer)) return t->data;
    if (!(*copy = malloc(ggml_nbytes(t)))) return NULL;
    ggml_backend_tensor_get(t, *copy, 0, ggml_nbytes(t));
    return *copy;
}

void hy_tensor_host_memset(ggml_backend_buffer_t b, struct ggml_tensor *t, uint8_t v, size_t off, size_t n) {
    (void)b;
    memset((uint8_t *)t->data + off, v, n);
}

void hy_tensor_host_set(ggml_backend_buffer_t b, struct ggml_tensor *t, const void *data, size_t off, size_t n) {
    (void)b;
    memcpy((uint8_t *)t->data + off, data, n);
}

void hy_tensor_host_get(ggml_backend_buffer_t b, const struct ggml_tensor *t, void *data, size_t off, size_t n) {
    (void)b;
    memcpy(data, (const uint8_t *)t->data + off, n);
}
