/* Shared by the planner and placement unit tests: a CHECK that counts failures
 * and goes on, and a helper to append tensors to a synthetic model description. */
#ifndef TEST_DESC_H
#define TEST_DESC_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/hy_gguf.h"

#include "test_check.h"

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

/* A llama-shaped description: per layer attention 4 x attn, FFN 3 x ffn. */
static inline hy_model_desc *make_desc(int n_layer, uint64_t attn, uint64_t ffn, int n_expert) {
    hy_model_desc *d = calloc(1, sizeof *d);
    d->tensors = calloc((size_t)(n_layer * 12 + 3), sizeof *d->tensors);
    d->n_layer = n_layer;
    d->n_embd = 1024;
    d->n_ff = 2816;
    d->n_head = 8;
    d->n_head_kv = 4;
    d->n_vocab = 32000;
    d->n_expert = n_expert;
    d->n_expert_used = n_expert ? 2 : 0;
    add(d, "token_embd.weight", -1, HY_ROLE_EMBED, 30 * MIB);
    char nm[96];
    for (int l = 0; l < n_layer; l++) {
        static const char *an[] = {"attn_q", "attn_k", "attn_v", "attn_output"};
        snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", l);
        add(d, nm, l, HY_ROLE_NORM, 4096);
        for (int i = 0; i < 4; i++) {
            snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, an[i]);
            add(d, nm, l, HY_ROLE_ATTN, attn / 4);
        }
        snprintf(nm, sizeof nm, "blk.%d.ffn_norm.weight", l);
        add(d, nm, l, HY_ROLE_NORM, 4096);
        static const char *fn[] = {"ffn_gate", "ffn_up", "ffn_down"};
        if (n_expert) {
            snprintf(nm, sizeof nm, "blk.%d.ffn_gate_inp.weight", l);
            add(d, nm, l, HY_ROLE_ROUTER, 32768);
        }
        for (int i = 0; i < 3; i++) {
            snprintf(nm, sizeof nm, n_expert ? "blk.%d.%s_exps.weight" : "blk.%d.%s.weight", l, fn[i]);
            add(d, nm, l, n_expert ? HY_ROLE_EXPERT : HY_ROLE_FFN, ffn / 3);
            if (n_expert) { /* as the reader sets them: the outermost dimension is the expert's */
                d->tensors[d->n_tensors - 1].n_experts = n_expert;
                d->tensors[d->n_tensors - 1].expert_stride = ffn / 3 / (uint64_t)n_expert;
            }
        }
    }
    add(d, "output_norm.weight", -1, HY_ROLE_NORM, 4096);
    add(d, "output.weight", -1, HY_ROLE_OUTPUT, 30 * MIB);
    return d;
}

static inline void free_desc(hy_model_desc *d) {
    free(d->tensors);
    free(d);
}

#endif
