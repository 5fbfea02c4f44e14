/* hy_plan_rpc: remote tiers on paper. Checks the invariants of hy_plan_rpc.h on
 * synthetic models: budgets, the layout (the last layers, contiguous, devices in
 * order), the choice by prediction (a device that does not pay gets nothing,
 * one that lets a model run that cannot run here is used), the prediction's
 * parts, the expansion to the whole model, the hand-set split and the links. */
#include "plan/hy_plan_rpc.h"

#include "test_desc.h"

static void check_layout(const hy_model_desc *d, const hy_rpc_plan *rp, const hy_rpc_dev_figures *dev, int n_dev,
                         const hy_plan_params *pp) {
    int total = 0, next = rp->n_local_layers;
    /* blocks tile [n_local, n_layer) with no gap, in some device order */
    for (int round = 0; round < n_dev; round++)
        for (int i = 0; i < n_dev; i++)
            if (rp->layers[i] > 0 && rp->first_layer[i] == next) next += rp->layers[i];
    for (int i = 0; i < n_dev; i++) {
        total += rp->layers[i];
        if (rp->layers[i] == 0) continue;
        CHECK(rp->weight_bytes[i] + rp->kv_bytes[i] + rp->compute_bytes[i] <= dev[i].budget,
              "device %d over its budget: %llu > %llu", i,
              (unsigned long long)(rp->weight_bytes[i] + rp->kv_bytes[i] + rp->compute_bytes[i]),
              (unsigned long long)dev[i].budget);
        uint64_t rd, held;
        hy_plan_rpc_layer_bytes(d, rp->first_layer[i], rp->layers[i], &rd, &held);
        CHECK(rd == rp->read_bytes[i] && held == rp->weight_bytes[i], "device %d bytes", i);
    }
    CHECK(next == d->n_layer, "remote blocks end at %d, not at the last layer %d", next, d->n_layer);
    CHECK(total + rp->n_local_layers == d->n_layer, "%d remote + %d local != %d", total, rp->n_local_layers, d->n_layer);
    CHECK(rp->n_local_layers >= 1, "a layer stays local");
    double t = rp->pred_local_s + rp->pred_remote_s + rp->pred_link_s;
    CHECK(t > 0 && rp->pred_tok_s > 0.999 / t && rp->pred_tok_s < 1.001 / t, "tok/s %.3f is not 1/(sum of parts) %.3f",
          rp->pred_tok_s, 1 / t);
    (void)pp;
}

int main(void) {
    char err[512];
    /* dense: 16 layers of 8 MiB attention + 24 MiB FFN, ~572 MiB */
    hy_model_desc *d = make_desc(16, 8 * MIB, 24 * MIB, 0);
    hy_plan_params pp = hy_plan_default_params();
    pp.n_ctx = 256;
    pp.seq_read_gbps = 2.0;
    pp.mem_bw_gbps = 20.0;
    pp.mem_budget = 64ull << 30;
    hy_rpc_link lan;
    CHECK(hy_rpc_link_parse("10gbe", &lan) == 1 && lan.assumed && lan.gbps > 1 && lan.rtt_s > 0, "10gbe");
    hy_rpc_link l1, l25, custom;
    CHECK(hy_rpc_link_parse("1gbe", &l1) == 1 && hy_rpc_link_parse("25gbe", &l25) == 1, "named links");
    CHECK(l1.gbps < lan.gbps && lan.gbps < l25.gbps && l1.rtt_s >= lan.rtt_s, "links ordered");
    CHECK(hy_rpc_link_parse("200,0.5", &custom) == 1 && custom.rtt_s > 199e-6 && custom.rtt_s < 201e-6 &&
              custom.gbps == 0.5,
          "RTT_US,GBPS");
    CHECK(hy_rpc_link_parse("fast", &custom) == 0 && hy_rpc_link_parse("1,0", &custom) == 0 &&
              hy_rpc_link_parse("1,2,3", &custom) == 0,
          "bad links refused");

    /* the local description: layers cut, everything outside the layers kept */
    hy_model_desc *ld = hy_plan_rpc_local_desc(d, 5);
    CHECK(ld && ld->n_layer == 5, "local desc layers");
    int64_t want = 3 + 5 * 9; /* embeddings, output norm, head; 9 tensors a dense layer */
    CHECK(ld && ld->n_tensors == want, "local desc has %lld tensors, want %lld", ld ? (long long)ld->n_tensors : -1LL,
          (long long)want);
    for (int64_t i = 0; ld && i < ld->n_tensors; i++) CHECK(ld->tensors[i].layer < 5, "tensor of layer %d kept", ld->tensors[i].layer);
    uint64_t l4 = 0;
    for (int64_t i = 0; i < d->n_tensors; i++) l4 += d->tensors[i].layer == 4 ? d->tensors[i].size : 0;
    CHECK(ld && ld->bytes_by_layer[4] == l4, "bytes by layer");
    hy_model_desc_free(ld);

    /* it fits here: a device as fast as this machine, behind a link, does not pay */
    hy_rpc_dev_figures dev[2] = {{.budget = 4ull << 30, .compute_gbps = 20.0}, {.budget = 4ull << 30, .compute_gbps = 20.0}};
    hy_rpc_plan rp;
    hy_plan local, whole;
    CHECK(hy_plan_rpc_make(d, &pp, dev, 2, &lan, NULL, &rp, &local, err, sizeof err) == 0, "%s", err);
    CHECK(rp.layers[0] == 0 && rp.layers[1] == 0 && rp.n_local_layers == 16, "an equal device behind a link got layers: %d %d",
          rp.layers[0], rp.layers[1]);
    CHECK(rp.pred_tok_s_local_only > 0 && rp.pred_tok_s == rp.pred_tok_s_local_only, "local only");
    CHECK(local.mode == HY_MODE_RESIDENT, "resident");
    hy_plan_free(&local);

    /* a budget that makes this machine stream: remote RAM beats storage at 2 GB/s */
    pp.mem_budget = 300ull << 20;
    CHECK(hy_plan_rpc_make(d, &pp, dev, 2, &lan, NULL, &rp, &local, err, sizeof err) == 0, "%s", err);
    int remote = d->n_layer - rp.n_local_layers;
    CHECK(remote > 0, "no layer went remote though this machine streams: %s", rp.why);
    CHECK(rp.pred_tok_s > rp.pred_tok_s_local_only, "the split predicts %.2f, not more than alone %.2f", rp.pred_tok_s,
          rp.pred_tok_s_local_only);
    check_layout(d, &rp, dev, 2, &pp);
    CHECK(local.budget_used <= pp.mem_budget, "local over budget");
    CHECK(rp.n_segments == (rp.layers[0] > 0) + (rp.layers[1] > 0), "segments");
    CHECK(rp.link_bytes_per_boundary >= 2 * 4 * (uint64_t)d->n_embd, "the hidden state crosses both ways");
    /* expand: remote tensors are RAM with no group; local ones as the local plan has them */
    CHECK(hy_plan_rpc_expand(d, &rp, &local, &whole) == 0, "expand");
    int li = 0;
    for (int64_t i = 0; i < d->n_tensors; i++) {
        if (d->tensors[i].layer >= rp.n_local_layers) {
            CHECK(whole.tier[i] == HY_TIER_RAM && whole.group[i] == -1, "remote tensor %s", d->tensors[i].name);
        } else {
            CHECK(whole.tier[i] == local.tier[li] && whole.group[i] == local.group[li], "local tensor %s", d->tensors[i].name);
            li++;
        }
    }
    CHECK(whole.n_tensors == d->n_tensors && whole.pred_tok_s == rp.pred_tok_s, "whole plan");
    hy_plan_free(&whole);
    hy_plan_free(&local);

    /* a slower link predicts less (same split forced), a faster one more */
    int force[2] = {3, 2};
    hy_rpc_plan r1, r25;
    CHECK(hy_plan_rpc_make(d, &pp, dev, 2, &l1, force, &r1, &local, err, sizeof err) == 0, "%s", err);
    hy_plan_free(&local);
    CHECK(hy_plan_rpc_make(d, &pp, dev, 2, &l25, force, &r25, &local, err, sizeof err) == 0, "%s", err);
    hy_plan_free(&local);
    CHECK(r1.pred_link_s > r25.pred_link_s && r1.pred_tok_s < r25.pred_tok_s, "1 GbE %.2f tok/s, 25 GbE %.2f", r1.pred_tok_s,
          r25.pred_tok_s);
    /* the hand-set split: device 0 first in the model, then device 1, then the end */
    CHECK(r1.layers[0] == 3 && r1.layers[1] == 2 && r1.first_layer[0] == 11 && r1.first_layer[1] == 14 &&
              r1.n_local_layers == 11,
          "forced 3,2: first %d %d local %d", r1.first_layer[0], r1.first_layer[1], r1.n_local_layers);
    check_layout(d, &r1, dev, 2, &pp);
    int too_many[2] = {10, 6};
    CHECK(hy_plan_rpc_make(d, &pp, dev, 2, &lan, too_many, &rp, &local, err, sizeof err) < 0, "16 remote layers of 16");
    dev[0].budget = 40 * MIB;
    CHECK(hy_plan_rpc_make(d, &pp, dev, 2, &lan, force, &rp, &local, err, sizeof err) < 0 && strstr(err, "cannot hold"),
          "a forced split over a device's budget: %s", err);

    /* a small device takes what fits and no more */
    dev[0].budget = 120 * MIB;
    CHECK(hy_plan_rpc_make(d, &pp, dev, 2, &lan, NULL, &rp, &local, err, sizeof err) == 0, "%s", err);
    check_layout(d, &rp, dev, 2, &pp);
    hy_plan_free(&local);

    /* a slow device (a tenth of this machine) does not pay while this machine fits the model */
    pp.mem_budget = 64ull << 30;
    dev[0] = (hy_rpc_dev_figures){.budget = 4ull << 30, .compute_gbps = 2.0};
    dev[1] = dev[0];
    CHECK(hy_plan_rpc_make(d, &pp, dev, 2, &lan, NULL, &rp, &local, err, sizeof err) == 0, "%s", err);
    CHECK(rp.layers[0] == 0 && rp.layers[1] == 0, "a slow device got layers");
    hy_plan_free(&local);

    /* below this machine's minimum: the remote device makes it run */
    pp.mem_budget = 230ull << 20;
    hy_plan alone;
    CHECK(hy_plan_make(d, &pp, &alone, err, sizeof err) < 0, "230 MiB should not be enough alone");
    hy_plan_free(&alone);
    dev[0].compute_gbps = 20.0;
    dev[1].compute_gbps = 20.0;
    CHECK(hy_plan_rpc_make(d, &pp, dev, 2, &lan, NULL, &rp, &local, err, sizeof err) == 0, "%s", err);
    CHECK(rp.pred_tok_s_local_only == 0 && d->n_layer - rp.n_local_layers > 0, "needs the remote device: %s", rp.why);
    check_layout(d, &rp, dev, 2, &pp);
    CHECK(local.budget_used <= pp.mem_budget, "local over budget");
    hy_plan_free(&local);
    /* two small devices that only together leave this machine little enough */
    dev[0].budget = dev[1].budget = 280 * MIB;
    CHECK(hy_plan_rpc_make(d, &pp, dev, 2, &lan, NULL, &rp, &local, err, sizeof err) == 0, "%s", err);
    CHECK(rp.layers[0] > 0 && rp.layers[1] > 0, "both devices needed: %d %d (%s)", rp.layers[0], rp.layers[1], rp.why);
    check_layout(d, &rp, dev, 2, &pp);
    hy_plan_free(&local);
    dev[0].budget = dev[1].budget = 4ull << 30;
    /* no device can help: the error names the local minimum */
    pp.mem_budget = 20ull << 20;
    CHECK(hy_plan_rpc_make(d, &pp, dev, 2, &lan, NULL, &rp, &local, err, sizeof err) < 0 && strstr(err, "minimum"),
          "refusal: %s", err);

    /* MoE: a remote device reads only the routed experts per token */
    hy_model_desc *m = make_desc(8, 8 * MIB, 96 * MIB, 8);
    uint64_t rd, held;
    hy_plan_rpc_layer_bytes(m, 7, 1, &rd, &held);
    uint64_t dense_part = 8 * MIB + 2 * 4096 + 32768;
    CHECK(rd == dense_part + 96 * MIB * 2 / 8, "MoE layer reads %llu", (unsigned long long)rd);
    CHECK(held >= 8 * MIB + 96 * MIB, "MoE layer holds every expert");
    pp.mem_budget = 400ull << 20;
    dev[0].budget = dev[1].budget = 2ull << 30;
    CHECK(hy_plan_rpc_make(m, &pp, dev, 2, &lan, NULL, &rp, &local, err, sizeof err) == 0, "%s", err);
    check_layout(m, &rp, dev, 2, &pp);
    hy_plan_free(&local);
    /* measured routing reaches the local plan (its layers' rows): with a skewed one the local
     * part predicts the same hit rate as a plan of the local layers alone would */
    double *freq = calloc(8 * 8, sizeof *freq);
    for (int l = 0; l < 8; l++) freq[l * 8 + 0] = 0.6, freq[l * 8 + 1] = 0.4;
    pp.expert_freq = freq;
    pp.expert_freq_n = 8 * 8;
    pp.mem_budget = 400ull << 20;
    int f2[2] = {2, 0};
    CHECK(hy_plan_rpc_make(m, &pp, dev, 2, &lan, f2, &rp, &local, err, sizeof err) == 0, "%s", err);
    CHECK(local.mode == HY_MODE_EXPERT && local.pred_hit_measured, "the local plan did not use the measured routing (%s, %d)",
          hy_mode_name(local.mode), local.pred_hit_measured);
    hy_plan_free(&local);
    free(freq);
    pp.expert_freq = NULL;
    pp.expert_freq_n = 0;
    free_desc(m);
    free_desc(d);
    return check_done("plan_rpc_unit");
}
