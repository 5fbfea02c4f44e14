/* Shared by the planner and placement unit tests: a CHECK that counts failures
 * and goes on, and a helper to append tensors to a synthetic model description. */
#ifndef TEST_DESC_H
#define TEST_DESC_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "gguf/hy_gguf.h"

static int failures;
#define CHECK(c, ...)                                                                                          \
    do {                                                                                                       \
        if (!(c)) {                                                                                            \
            failures++;                                                                                        \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #c);                                       \
            fprintf(stderr, __VA_ARGS__);                                                                      \
            fputc('\n', stderr);                                                                               \
        }                                                                                                      \
    } while (0)

#define MIB ((uint64_t)1 << 20)

/* appends a tensor (d->tensors must have room) at a made-up, increasing offset */
static inline void add(hy_model_desc *d, const char *name, int layer, hy_role role, uint64_t size) {
    hy_tensor_info *t = &d->tensors[d->n_tensors++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->layer = layer;
    t->role = role;
    t->size = size;
    t->offset = 4096 * (uint64_t)d->n_tensors;
}

#endif
