/* hy_place: the overrides libllama receives must send every tensor to the
 * buffer type of the tier the plan chose. libllama takes the first pattern that
 * matches (std::regex_search); the patterns are plain EREs, so POSIX regexec
 * reproduces the lookup here. Plans: dense and MoE, with and without a GPU tier,
 * resident and streaming. */
#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/hy_place.h"
#include "plan/hy_plan.h"

#include "test_desc.h"

/* three distinct stand-ins: hy_place only stores the pointers */
static char fake[HY_TIER_COUNT][64];

static void check_place(const hy_model_desc *d, const hy_plan *pl, const char *what) {
    ggml_backend_buffer_type_t bt[HY_TIER_COUNT] = {(ggml_backend_buffer_type_t)fake[0], (ggml_backend_buffer_type_t)fake[1],
                                                 (ggml_backend_buffer_type_t)fake[2]};
    hy_place *place;
    char err[256];
    int rc = hy_place_make(d, pl, bt, &place, err, sizeof err);
    CHECK(rc == 0, "%s: %s", what, err);
    if (rc) return;
    const struct llama_model_tensor_buft_override *o = hy_place_overrides(place);
    CHECK(o != NULL, "%s: no overrides", what);
    int n = hy_place_n_patterns(place);
    CHECK(n < 3 * 8 + 8, "%s: %d patterns (one per tier and tensor kind expected)", what, n);
    regex_t *re = calloc((size_t)n, sizeof *re);
    for (int k = 0; k < n; k++) CHECK(regcomp(&re[k], o[k].pattern, REG_EXTENDED | REG_NOSUB) == 0, "%s", o[k].pattern);
    CHECK(o[n].pattern == NULL, "%s: not NULL-terminated", what);
    int counts[HY_TIER_COUNT] = {0};
    for (int64_t i = 0; i < d->n_tensors; i++) {
        int k = 0;
        while (k < n && regexec(&re[k], d->tensors[i].name, 0, NULL, 0) != 0) k++;
        CHECK(k < n, "%s: %s matches no pattern", what, d->tensors[i].name);
        if (k < n)
            CHECK(o[k].buft == bt[pl->tier[i]], "%s: %s goes to tier %ld, the plan says %s (pattern %s)", what,
                  d->tensors[i].name, (long)(((char *)o[k].buft - fake[0]) / 64),
                  hy_tier_name(pl->tier[i]), o[k].pattern);
        counts[pl->tier[i]]++;
    }
    for (int k = 0; k < n; k++) regfree(&re[k]);
    free(re);
    printf("ok %s: %d patterns; GPU %d, RAM %d, NVMe %d tensors\n", what, n, counts[0], counts[1], counts[2]);
    hy_place_free(place);
}

/* which weights libllama would repack, asked of ggml as its loader asks; and the
 * overrides those classes give (repacked, host, or no pattern: libllama's choice) */
static void check_repack_classes(void) {
    hy_model_desc d = {0};
    hy_tensor_info t[9];
    memset(t, 0, sizeof t);
    d.tensors = t;
    d.n_expert = 8;
    d.n_expert_used = 2;
    struct {
        const char *name;
        enum ggml_type type;
        int64_t ne0, ne1, ne2;
        int want;
    } c[] = {
        {"token_embd.weight", GGML_TYPE_Q4_K, 512, 1024, 1, HY_PLACE_LIBLLAMA},     /* GET_ROWS, or a tied head */
        {"blk.0.attn_norm.weight", GGML_TYPE_F32, 512, 1, 1, HY_PLACE_HOST},        /* 1D */
        {"blk.0.attn_q.weight", GGML_TYPE_Q4_K, 512, 512, 1, HY_PLACE_REPACK},      /* MUL_MAT */
        {"blk.0.attn_k.weight", GGML_TYPE_Q4_K, 512, 12, 1, HY_PLACE_HOST},         /* rows not a multiple of 8 */
        {"blk.0.ffn_gate_inp.weight", GGML_TYPE_F32, 512, 8, 1, HY_PLACE_HOST},     /* F32: no repacked kernel */
        {"blk.0.ffn_up_exps.weight", GGML_TYPE_Q4_K, 512, 256, 8, HY_PLACE_REPACK}, /* MUL_MAT_ID */
        {"blk.0.time_mix_key.weight", GGML_TYPE_Q4_K, 512, 512, 1, HY_PLACE_LIBLLAMA}, /* an op not known here */
        {"output.weight", GGML_TYPE_Q4_0, 512, 1024, 1, HY_PLACE_REPACK},
        {"blk.0.ffn_down.weight", GGML_TYPE_F16, 512, 512, 1, HY_PLACE_HOST},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        hy_tensor_info *x = &t[d.n_tensors++];
        snprintf(x->name, sizeof x->name, "%s", c[i].name);
        x->type = c[i].type;
        x->ne[0] = c[i].ne0, x->ne[1] = c[i].ne1, x->ne[2] = c[i].ne2, x->ne[3] = 1;
        x->n_dims = c[i].ne2 > 1 ? 3 : c[i].ne1 > 1 ? 2 : 1;
        x->layer = strncmp(c[i].name, "blk.", 4) ? -1 : 0;
    }
    signed char cls[16];
    ggml_backend_buffer_type_t rb;
    ggml_backend_load_all();
    if (hy_place_repack_classes(&d, cls, &rb)) {
        printf("skip repack classes: this CPU backend has no CPU_REPACK buffer type (or tries others first)\n");
        return;
    }
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
        CHECK(cls[i] == c[i].want, "%s: class %d, want %d", c[i].name, cls[i], c[i].want);
    /* the overrides: repacked tensors to one type, host ones to the other, libllama's ones unmatched */
    char host[8], repack[8];
    hy_place *place;
    char err[256];
    int rc = hy_place_make_classes(&d, cls, (ggml_backend_buffer_type_t)host, (ggml_backend_buffer_type_t)repack,
                                   NULL, &place, err, sizeof err);
    CHECK(rc == 0, "classes: %s", err);
    if (rc) return;
    const struct llama_model_tensor_buft_override *o = hy_place_overrides(place);
    int n = hy_place_n_patterns(place);
    for (int64_t i = 0; i < d.n_tensors; i++) {
        int k = 0;
        regex_t re;
        for (; k < n; k++) {
            CHECK(regcomp(&re, o[k].pattern, REG_EXTENDED | REG_NOSUB) == 0, "%s", o[k].pattern);
            bool m = regexec(&re, t[i].name, 0, NULL, 0) == 0;
            regfree(&re);
            if (m) break;
        }
        void *want = cls[i] == HY_PLACE_REPACK ? (void *)repack : cls[i] == HY_PLACE_HOST ? (void *)host : NULL;
        CHECK((k < n ? (void *)o[k].buft : NULL) == want, "%s: placed by pattern %s, class %d", t[i].name,
              k < n ? o[k].pattern : "(none)", cls[i]);
    }
    printf("ok repack classes: %d patterns for %lld tensors\n", n, (long long)d.n_tensors);
    hy_place_free(place);
}

int main(void) {
    char err[512];
    check_repack_classes();
    for (int moe = 0; moe <= 1; moe++) {
        hy_model_desc *d = make_desc(12, 8 * MIB, moe ? 96 * MIB : 24 * MIB, moe ? 8 : 0);
        uint64_t total = 0;
        for (int64_t i = 0; i < d->n_tensors; i++) total += d->tensors[i].size;
        const uint64_t gpus[] = {0, 200 * MIB, 400 * MIB};
        for (int g = 0; g < 3; g++)
            for (int streamed = 0; streamed <= 1; streamed++) {
                hy_plan_params pp = hy_plan_default_params();
                pp.n_ctx = 256;
                pp.gpu_budget = gpus[g];
                pp.mem_budget = !streamed ? 64ull << 30 : total * 3 / 5 + (gpus[g] ? HY_PLAN_GPU_HOST_OVERHEAD : 0);
                hy_plan pl;
                int rc = hy_plan_make(d, &pp, &pl, err, sizeof err);
                CHECK(rc == 0, "%s", err);
                if (rc) continue;
                char what[96];
                snprintf(what, sizeof what, "%s gpu=%lluM %s", moe ? "moe" : "dense",
                         (unsigned long long)(gpus[g] / MIB), hy_mode_name(pl.mode));
                check_place(d, &pl, what);
                hy_plan_free(&pl);
            }
        free_desc(d);
    }
    return check_done("place");
}
