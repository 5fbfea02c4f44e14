/* The VRAM expert cache's pure sizing and prediction (hy_vxc.h): which tensors it
 * serves, its bytes for a slot count and back, and the expected hit rate. */
#include <math.h>

#include "stream/hy_vxc.h"

#include "test_desc.h"

int main(void) {
    const int L = 6, E = 8;
    hy_model_desc *d = make_desc(L, 8 * MIB, 96 * MIB, E); /* expert slices of 4 MiB per tensor */
    d->n_expert_used = 2;
    hy_plan p = {0};
    p.n_tensors = (int)d->n_tensors;
    p.tier = calloc((size_t)d->n_tensors, sizeof *p.tier);
    for (int64_t i = 0; i < d->n_tensors; i++)
        p.tier[i] = d->tensors[i].role == HY_ROLE_EXPERT && d->tensors[i].layer >= 4 ? HY_TIER_GPU
                    : d->tensors[i].role == HY_ROLE_EXPERT                           ? HY_TIER_RAM
                                                                                      : HY_TIER_GPU;
    int served = 0;
    for (int64_t i = 0; i < d->n_tensors; i++) {
        bool s = hy_vxc_serves(d, &p, i);
        served += s;
        CHECK(s == (d->tensors[i].role == HY_ROLE_EXPERT && d->tensors[i].layer < 4), "serves %s", d->tensors[i].name);
    }
    CHECK(served == 12, "serves %d tensors, not the 4 RAM layers' 3", served);
    /* bytes and slots are each other's inverse, capped at n_expert */
    uint64_t prev = 0;
    for (int s = 0; s <= E; s++) {
        uint64_t b = hy_vxc_bytes_for(d, &p, s);
        CHECK(b > prev, "bytes grow with slots (%d: %llu)", s, (unsigned long long)b);
        CHECK(hy_vxc_slots_for(d, &p, b) == s, "slots_for(bytes_for(%d)) = %d", s, hy_vxc_slots_for(d, &p, b));
        if (s > 0) CHECK(hy_vxc_slots_for(d, &p, b - 1) == s - 1, "one byte less holds one slot less (%d)", s);
        prev = b;
    }
    /* a slot per layer costs one expert of every kind in each served layer */
    CHECK(hy_vxc_bytes_for(d, &p, 2) - hy_vxc_bytes_for(d, &p, 1) == 4 * 3 * 4 * MIB, "a slot per layer: 48 MiB");
    CHECK(hy_vxc_slots_for(d, &p, (uint64_t)1 << 40) == E, "capped at n_expert");
    CHECK(hy_vxc_slots_for(d, &p, 1) == 0, "a byte holds nothing");
    /* expected hit rate: measured shares, else the prior */
    uint64_t routed = 0;
    double *f = calloc((size_t)L * E, sizeof *f);
    for (int l = 0; l < L; l++)
        for (int e = 0; e < E; e++) f[l * E + e] = 1.0 / E;
    double h = hy_vxc_expected_hit(d, &p, 3, f, &routed);
    CHECK(fabs(h - 3.0 / E) < 1e-9, "uniform routing: %f", h);
    CHECK(routed == (uint64_t)4 * 2 * 3 * 4 * MIB, "routed per token %llu", (unsigned long long)routed);
    for (int l = 0; l < L; l++)
        for (int e = 0; e < E; e++) f[l * E + e] = e == 5 || e == 6 ? 0.5 : 0;
    CHECK(fabs(hy_vxc_expected_hit(d, &p, 2, f, &routed) - 1.0) < 1e-9, "two hot experts, two slots: all hit");
    CHECK(fabs(hy_vxc_expected_hit(d, &p, 1, f, &routed) - 0.5) < 1e-9, "two hot experts, one slot: half");
    double pr = hy_vxc_expected_hit(d, &p, 3, NULL, &routed);
    CHECK(pr > 3.0 / E && pr < 1, "prior: skewed, %f", pr);
    CHECK(hy_vxc_expected_hit(d, &p, E, NULL, &routed) > 0.999, "every expert cached: all hit");
    /* nothing left in RAM: nothing to serve */
    for (int64_t i = 0; i < d->n_tensors; i++) p.tier[i] = HY_TIER_GPU;
    CHECK(hy_vxc_bytes_for(d, &p, 2) == 0 && hy_vxc_slots_for(d, &p, (uint64_t)1 << 40) == 0, "all on the GPU");
    free(f);
    free(p.tier);
    free_desc(d);
    return check_done("test_vxc");
}
