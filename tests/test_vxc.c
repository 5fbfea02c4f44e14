/* The VRAM expert cache's pure sizing and prediction (hy_vxc.h, hy_plan_vxc_predict): which
 * tensors it serves (RAM- and NVMe-tier experts), its bytes for a slot count and back, the RAM
 * expert cache's slots under it, the expected hit rate, and the speed prediction and judgement. */
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
    /* the NVMe tier (expert-streaming): served too; a RAM slot holds every kind with room for
     * a page-aligned read */
    for (int64_t i = 0; i < d->n_tensors; i++)
        if (p.tier[i] == HY_TIER_RAM) p.tier[i] = HY_TIER_NVME;
    served = 0;
    for (int64_t i = 0; i < d->n_tensors; i++) served += hy_vxc_serves(d, &p, i);
    CHECK(served == 12, "NVMe-tier experts served: %d", served);
    CHECK(hy_vxc_ram_slot_bytes(d, &p, 4096) == 3 * (4 * MIB + 4096), "RAM slot bytes %llu",
          (unsigned long long)hy_vxc_ram_slot_bytes(d, &p, 4096));
    CHECK(hy_vxc_ram_slots_for(d, &p, 10 * (4 * MIB + 4096) * 3, 4096) == 10, "10 RAM slots");
    CHECK(hy_vxc_ram_slots_for(d, &p, (uint64_t)1 << 40, 4096) == L * E, "RAM slots capped at every expert");
    CHECK(hy_vxc_ram_slots_for(d, &p, 100, 4096) == 0, "100 bytes hold no RAM slot");
    /* the prediction: the trial's time less the CPU's charge for the routed experts, plus copies
     * of the misses, GPU reads and one sync per layer; pays when that beats the CPU */
    hy_plan tr = p;
    tr.mode = HY_MODE_RESIDENT;
    tr.pred_tok_s = 10;          /* 100 ms per token */
    tr.pred_mem_gbps = 10;       /* 1 GB of routed experts: 100 ms on the CPU */
    tr.pred_compute_scale = 1;
    tr.pred_compute_s = 0.1;
    tr.pred_gpu_s = 0;
    hy_plan_params pp = hy_plan_default_params();
    pp.piece_s = 1e-5;
    hy_plan_vxc_pred xp;
    CHECK(hy_plan_vxc_predict(&tr, &pp, 1000000000ull, 0.5, 10, 2, &xp) == 0, "predicts");
    CHECK(fabs(xp.cpu_saved_s - 0.1) < 1e-9 && fabs(xp.rest_s) < 1e-9, "the CPU's charge: %f", xp.cpu_saved_s);
    CHECK(fabs(xp.pcie_bytes - 5e8) < 1 && fabs(xp.pcie_s - 5e8 / (HY_PLAN_ASSUMED_PCIE_GBPS * 1e9)) < 1e-12, "PCIe");
    CHECK(fabs(xp.sync_s - 1e-4) < 1e-12, "one sync per layer");
    double t = xp.pcie_s + xp.gpu_s + xp.sync_s;
    CHECK(fabs(xp.tok_s - 1 / t) < 1e-6, "tok/s %f", xp.tok_s);
    CHECK(xp.pays && fabs(xp.cpu_alt_s - (0.1 + 20 * HY_PLAN_CPU_EXPERT_OP_S)) < 1e-12, "pays against a slow CPU");
    tr.pred_mem_gbps = 1000; /* a CPU as fast as the GPU's copies: copying half of it does not pay */
    CHECK(hy_plan_vxc_predict(&tr, &pp, 1000000000ull, 0.5, 10, 2, &xp) == 0 && !xp.pays, "does not pay");
    CHECK(hy_plan_vxc_judge(&xp, &tr, &tr, NULL) == HY_VXC_NO_PAY, "auto: not where it does not pay");
    CHECK(hy_plan_vxc_predict(&tr, &pp, 1000000000ull, 1.0, 10, 2, &xp) == 0 && xp.pcie_bytes == 0, "all hit: no copies");
    /* auto over NVMe: paying per layer is not enough where the trial waits longer for storage than
     * the plan without the cache (its whole expert layers on the GPU keep those experts off it) */
    tr.pred_mem_gbps = 10;
    CHECK(hy_plan_vxc_predict(&tr, &pp, 1000000000ull, 0.5, 10, 2, &xp) == 0 && xp.pays, "pays again");
    hy_plan without = tr;
    double gain = xp.cpu_alt_s - (xp.pcie_s + xp.gpu_s + xp.sync_s), extra = -1;
    tr.pred_io_wait_s = without.pred_io_wait_s + 3 * gain;
    CHECK(hy_plan_vxc_judge(&xp, &tr, &without, &extra) == HY_VXC_USE && extra == 0, "RAM-resident trial: no storage");
    tr.mode = without.mode = HY_MODE_EXPERT;
    CHECK(hy_plan_vxc_judge(&xp, &tr, &without, &extra) == HY_VXC_NVME_SLOWER && fabs(extra - 3 * gain) < 1e-12,
          "over NVMe: the wait it adds outweighs what it saves (%f)", extra);
    tr.pred_io_wait_s = without.pred_io_wait_s + 0.9 * HY_PLAN_VXC_NVME_DOUBT * gain;
    CHECK(hy_plan_vxc_judge(&xp, &tr, &without, &extra) == HY_VXC_USE, "over NVMe: used within the doubt about the reads");
    tr.pred_io_wait_s = without.pred_io_wait_s;
    CHECK(hy_plan_vxc_judge(&xp, &tr, &without, &extra) == HY_VXC_USE && extra == 0, "over NVMe: no more waiting");
    tr.mode = HY_MODE_RESIDENT;
    tr.pred_tok_s = 0;
    CHECK(hy_plan_vxc_predict(&tr, &pp, 1000000000ull, 0.5, 10, 2, &xp) < 0, "no prediction without the plan's");
    /* nothing left in RAM: nothing to serve */
    for (int64_t i = 0; i < d->n_tensors; i++) p.tier[i] = HY_TIER_GPU;
    CHECK(hy_vxc_bytes_for(d, &p, 2) == 0 && hy_vxc_slots_for(d, &p, (uint64_t)1 << 40) == 0, "all on the GPU");
    free(f);
    free(p.tier);
    free_desc(d);
    return check_done("test_vxc");
}
