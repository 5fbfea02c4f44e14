/* hy_place: the overrides libllama receives must send every tensor to the
 * buffer type of the tier the plan chose. libllama takes the first pattern that
 * matches (std::regex_search); the patterns are plain EREs, so POSIX regexec
 * reproduces the lookup here. Plans: dense and MoE, with and without a GPU tier,
 * resident and streaming. */
#include <regex.h>
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

int main(void) {
    char err[512];
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
