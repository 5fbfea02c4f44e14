#include "util/hy_tensor.h"

#include <stdlib.h>

const char *hy_tensor_host_data(const struct ggml_tensor *t, char **copy) {
    *copy = NULL;
    if (!t->data) return NULL;
    if (!t->buffer || ggml_backend_buffer_is_host(t->buffer)) return t->data;
    if (!(*copy = malloc(ggml_nbytes(t)))) return NULL;
    ggml_backend_tensor_get(t, *copy, 0, ggml_nbytes(t));
    return *copy;
}
