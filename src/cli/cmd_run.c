/* hypura run: generate from a prompt, or chat interactively with the model's
 * template. Text goes to stdout, statistics to stderr. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include <jansson.h>

#include "cli/cli_sched.h"
#include "engine/hy_engine.h"
#include "engine/hy_spec.h"
#include "stream/hy_vxc.h"
#include "util/hy_util.h"

static void run_usage(FILE *f) {
    fprintf(
        f,
        "usage: hypura run MODEL.gguf (--prompt TEXT | --interactive) [options]\n\n"
        "  -p, --prompt TEXT       prompt (raw text, no chat template)\n"
        "  -i, --interactive       chat on stdin/stdout with the model's chat template\n"
        "      --system TEXT       system prompt for --interactive\n"
        "  -n, --max-tokens N      tokens to generate (default 128; -1 = until end)\n"
        "      --temp T            temperature (default 0.8; 0 = greedy)\n"
        "      --top-k K           top-k (default 40; 0 = off)\n"
        "      --top-p P           top-p (default 0.95; 1 = off)\n"
        "      --seed N            sampling seed (default 12648430)\n"
        "  -c, --ctx N             context length (default min(4096, model's))\n"
        "  -t, --threads N         CPU threads (default: all cores)\n"
        "  -b, --batch N           prompt batch size (default 512)\n"
        "      --repack            let the CPU backend repack weights (llama.cpp's kernels; the default\n"
        "                          when the model is fully resident; a streamed run repacks only when\n"
        "                          asked, and only the weights it keeps resident)\n"
        "      --no-repack         plain kernels also when resident: a streamed run of the same file\n"
        "                          gives bit-identical logits to a resident run with --no-repack\n"
        "      --dump-logits FILE  write the float32 logits of every generated token to FILE\n"
        "      --draft MODEL       speculative decoding with this draft model (same vocabulary), kept\n"
        "                          resident and charged to the memory budget (env HYPURA_DRAFT)\n"
        "      --draft-max N       most tokens drafted per target pass (default 8; adapts down, and to\n"
        "                          none while drafting measures slower than plain decoding)\n"
        "      --draft-fixed       always draft --draft-max tokens (no adaptation, and the draft is used\n"
        "                          also where the plan predicts it does not pay)\n"
        "      --draft-accept P    the acceptance (0..1) the plan expects of the draft when deciding\n"
        "                          whether drafting pays (default 0.5 until measured; a run's stats\n"
        "                          print the measured one)\n"
        "      --plan              print the placement plan before running\n"
        "      --naive             no plan: libllama's defaults (mmap, repack), the baseline of bench\n" HY_SCHED_HELP
        "  -v, --verbose           show libllama's log\n"
        "  -h, --help              this help\n");
}

static bool print_piece(const char *piece, size_t len, void *ud) {
    (void)ud;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return true;
}

struct logit_dump {
    FILE *f;
    bool failed;
    hy_stream *live; /* --verbose on a streamed run: a line per token */
    hy_stream *stream; /* a streamed run: the stats when generation starts (gen0) */
    hy_session *ss;    /* ... and its prediction made again then */
    bool have_gen0;
    hy_stream_stats gen0;
    hy_stream_stats last;
    double t_last;
    int n;
};

static void dump_logits(const float *logits, int n_vocab, void *ud) {
    struct logit_dump *d = ud;
    if (d->stream && !d->have_gen0) { /* the first logits: the prompt is done, generation starts */
        hy_stream_get_stats(d->stream, &d->gen0);
        d->have_gen0 = true;
        if (d->ss) hy_session_predict_generation(d->ss);
    }
    if (d->live) {
        hy_stream_stats now;
        hy_stream_get_stats(d->live, &now);
        double t = hy_now();
        if (d->n > 0) {
            double dt = t - d->t_last;
            uint64_t db = now.bytes_read - d->last.bytes_read;
            fprintf(stderr, "[token %d] %.3f s, read %.1f MiB (%.2f GB/s), stall %.3f s, lookahead %d\n", d->n, dt,
                    db / 1048576.0, dt > 0 ? db / dt / 1e9 : 0.0, now.stall_s - d->last.stall_s, now.lookahead);
        }
        d->last = now;
        d->t_last = t;
        d->n++;
    }
    if (!d->f) return;
    if (fwrite(logits, sizeof(float), (size_t)n_vocab, d->f) != (size_t)n_vocab) d->failed = true;
}

/* What generation alone cost a streamed run (the prompt's reads and stalls taken off): the
 * prediction is of generation, so this is what it is compared with. false: nothing to show. */
static bool gen_phase(const struct logit_dump *d, hy_stream_stats *g) {
    if (!d->stream || !d->have_gen0) return false;
    hy_stream_get_stats(d->stream, g);
    g->bytes_read -= d->gen0.bytes_read;
    g->io_busy_s -= d->gen0.io_busy_s;
    g->stall_s -= d->gen0.stall_s;
    g->cb_s -= d->gen0.cb_s;
    g->cb_pieces -= d->gen0.cb_pieces;
    g->passes -= d->gen0.passes;
    g->x_hits -= d->gen0.x_hits;
    g->x_misses -= d->gen0.x_misses;
    g->x_prefetches -= d->gen0.x_prefetches;
    g->x_prefetch_hits -= d->gen0.x_prefetch_hits;
    g->x_prefetch_wasted -= d->gen0.x_prefetch_wasted;
    return true;
}

static void print_gen_phase(const hy_stream_stats *g, const hy_gen_stats *st) {
    if (st->n_gen <= 0) return;
    double n = st->n_gen;
    fprintf(stderr,
            "[hypura] generation alone: %.1f MiB read per token, stalls %.3f s of %.3f s per token, eval callback "
            "%.3f s besides them in %.0f pieces of the graph per token",
            g->bytes_read / n / 1048576.0, g->stall_s / n, st->t_gen_s / n, (g->cb_s - g->stall_s) / n,
            g->cb_pieces / n);
    uint64_t acc = g->x_hits + g->x_misses;
    if (g->experts && acc)
        fprintf(stderr, "; expert cache hits %.1f%% (%llu of them prefetched), %llu misses", 100.0 * g->x_hits / acc,
                (unsigned long long)g->x_prefetch_hits, (unsigned long long)g->x_misses);
    fputc('\n', stderr);
}

/* Measured against predicted compute time per token, kept for the next plans (hy_calib.h):
 * generation time less the stalls waiting for storage, over at least 8 tokens. */
static void calibrate(const hy_session *ss, const hy_gen_stats *st, const hy_stream_stats *gen) {
    const hy_plan *pl = &ss->plan;
    if (st->n_gen < 8 || st->t_gen_s <= 0 || pl->pred_compute_s <= 0 || ss->pred_none || getenv("HYPURA_NO_CALIBRATION"))
        return;
    double measured = (st->t_gen_s - (gen ? gen->stall_s : 0)) / st->n_gen;
    double raw = pl->pred_compute_s / pl->pred_compute_scale;
    char err[HY_ERRLEN];
    if (measured <= 0 || hy_calib_record(NULL, ss->desc->model_id, ss->n_threads, ss->plan_params.gpu_budget,
                                         hy_mode_name(pl->mode), measured, raw, err, sizeof err)) {
        if (measured > 0) fprintf(stderr, "hypura: warning: compute calibration not kept: %s\n", err);
    } else {
        fprintf(stderr,
                "[hypura] compute: %.4f s per token measured (generation less stalls), %.4f predicted from memory "
                "bandwidth alone (x%.2f); kept for the next plans of this model\n",
                measured, raw, measured / raw);
    }
    /* expert-streaming: the share of the reads' time that decode waited for */
    if (gen && pl->mode == HY_MODE_EXPERT && gen->io_busy_s > 0.05) {
        double share = gen->stall_s / gen->io_busy_s;
        if (share < 0.05) share = 0.05;
        if (share > 1) share = 1;
        if (hy_calib_record(NULL, ss->desc->model_id, ss->n_threads, ss->plan_params.gpu_budget, HY_CALIB_IO_WAIT,
                            share, 1.0, err, sizeof err) == 0)
            fprintf(stderr, "[hypura] reads: decode waited %.0f%% of the %.3f s per token they were in flight; kept "
                            "for the next plans of this model\n",
                    100 * share, gen->io_busy_s / st->n_gen);
    }
    /* storage: what the generation's reads reached while in flight, against the profile's figure */
    double prof = ss->plan_params.seq_read_gbps;
    if (!gen || pl->pred_read_assumed || gen->bytes_read < HY_CALIB_READ_MIN_BYTES || !(gen->io_busy_s > 0)) return;
    if (hy_calib_record_read(NULL, hy_mode_name(pl->mode), gen->bytes_read, gen->io_busy_s, prof, err, sizeof err)) {
        fprintf(stderr, "hypura: warning: storage calibration not kept: %s\n", err);
        return;
    }
    fprintf(stderr, "[hypura] storage: %.2f GB/s while reads were in flight, the profile's %.2f (x%.2f); kept for the "
                    "next %s plans here\n",
            gen->bytes_read / gen->io_busy_s / 1e9, prof, gen->bytes_read / gen->io_busy_s / 1e9 / prof,
            hy_mode_name(pl->mode));
}

/* what the whole run's and generation's stream figures share, as JSON */
static json_t *stream_json(const hy_stream_stats *x) {
    json_t *t = json_object();
    json_object_set_new(t, "bytes_read", json_integer((json_int_t)x->bytes_read));
    json_object_set_new(t, "io_busy_s", json_real(x->io_busy_s));
    json_object_set_new(t, "stall_s", json_real(x->stall_s));
    json_object_set_new(t, "passes", json_integer((json_int_t)x->passes));
    if (x->experts) {
        json_object_set_new(t, "expert_hits", json_integer((json_int_t)x->x_hits));
        json_object_set_new(t, "expert_misses", json_integer((json_int_t)x->x_misses));
        json_object_set_new(t, "expert_prefetches", json_integer((json_int_t)x->x_prefetches));
        json_object_set_new(t, "expert_prefetch_hits", json_integer((json_int_t)x->x_prefetch_hits));
        json_object_set_new(t, "expert_prefetch_wasted", json_integer((json_int_t)x->x_prefetch_wasted));
    }
    return t;
}

/* the figures of a run for scripts: what print_stats and the session print, as JSON */
static int write_stats_json(const char *path, const hy_session *ss, const hy_gen_stats *st, double load_s,
                            const hy_spec_stats *sx, const hy_stream_stats *gen) {
    json_t *o = json_object();
    if (sx) json_object_set_new(o, "speculative", hy_spec_stats_json(sx, ss));
    else if (ss && ss->draft_why[0]) { /* the plan turned drafting off: the decision */
        json_t *d = json_object();
        json_object_set_new(d, "plan", json_string(ss->draft_why));
        json_object_set_new(d, "off_by_plan", json_true());
        json_object_set_new(o, "speculative", d);
    }
    json_object_set_new(o, "load_s", json_real(load_s));
    json_object_set_new(o, "prompt_tokens", json_integer(st->n_prompt_eval));
    json_object_set_new(o, "prompt_s", json_real(st->t_prompt_s));
    json_object_set_new(o, "prompt_tps", json_real(st->t_prompt_s > 0 ? st->n_prompt_eval / st->t_prompt_s : 0));
    json_object_set_new(o, "gen_tokens", json_integer(st->n_gen));
    json_object_set_new(o, "gen_s", json_real(st->t_gen_s));
    json_object_set_new(o, "gen_tps", json_real(st->t_gen_s > 0 ? st->n_gen / st->t_gen_s : 0));
    json_object_set_new(o, "stop", json_string(st->stop_reason));
    json_object_set_new(o, "peak_rss", json_integer((json_int_t)hy_peak_rss()));
    json_object_set_new(o, "cgroup_peak", json_integer((json_int_t)hy_cgroup_peak()));
    if (ss) {
        json_object_set_new(o, "mode", json_string(hy_mode_name(ss->plan.mode)));
        json_object_set_new(o, "memory_budget", json_integer((json_int_t)ss->plan_params.mem_budget));
        json_object_set_new(o, "load_read_bytes", json_integer((json_int_t)ss->load_read_bytes));
        /* where the resident weights came from, and who repacked them */
        json_object_set_new(o, "load_cached_bytes", json_integer((json_int_t)ss->load_cached_bytes));
        json_object_set_new(o, "load_direct_bytes", json_integer((json_int_t)ss->load_direct_bytes));
        json_object_set_new(o, "repack", json_string(!ss->stream                        ? "libllama"
                                                     : hy_stream_repack_buft(ss->stream) ? "hypura"
                                                                                         : "off"));
        json_object_set_new(o, "plan_io_bytes_per_token", json_integer((json_int_t)ss->plan.io_bytes_per_token));
        if (ss->vxc) { /* the VRAM expert cache (--gpu-xcache) */
            hy_vxc_stats v;
            hy_vxc_get_stats(ss->vxc, &v);
            json_t *x = json_object();
            json_object_set_new(x, "layers", json_integer(v.layers));
            json_object_set_new(x, "slots_per_layer", json_integer(v.slots));
            json_object_set_new(x, "device_bytes", json_integer((json_int_t)v.device_bytes));
            json_object_set_new(x, "hits", json_integer((json_int_t)v.hits));
            json_object_set_new(x, "misses", json_integer((json_int_t)v.misses));
            json_object_set_new(x, "h2d_bytes", json_integer((json_int_t)v.h2d_bytes));
            json_object_set_new(x, "tokens", json_integer((json_int_t)v.tokens));
            json_object_set_new(x, "slot_passes", json_integer((json_int_t)v.slot_passes));
            json_object_set_new(x, "batched_passes", json_integer((json_int_t)v.w_passes));
            json_object_set_new(x, "preload_vram", json_integer(v.preload_vram));
            json_object_set_new(x, "preload_s", json_real(v.preload_s));
            if (v.nvme) { /* the NVMe tier under it: the RAM expert cache and the reads */
                json_object_set_new(x, "preload_ram", json_integer(v.preload_ram));
                json_object_set_new(x, "preload_bytes", json_integer((json_int_t)v.preload_bytes));
                json_object_set_new(x, "ram_slots", json_integer(v.ram_slots));
                json_object_set_new(x, "ram_bytes", json_integer((json_int_t)v.ram_bytes));
                json_object_set_new(x, "ram_hits", json_integer((json_int_t)v.ram_hits));
                json_object_set_new(x, "ram_misses", json_integer((json_int_t)v.ram_misses));
                json_object_set_new(x, "nvme_bytes", json_integer((json_int_t)v.nvme_bytes));
                json_object_set_new(x, "nvme_wait_s", json_real(v.nvme_wait_s));
            }
            json_object_set_new(o, "vram_xcache", x);
        }
        /* predicted next to measured: gen_tps against predicted_tok_s */
        json_object_set_new(o, "predicted_tok_s", json_real(ss->plan.pred_tok_s));
        json_object_set_new(o, "prediction", hy_session_prediction_json(ss));
    }
    if (ss && ss->stream) {
        hy_stream_stats x;
        hy_stream_get_stats(ss->stream, &x);
        json_t *t = stream_json(&x);
        json_object_set_new(t, "lookahead", json_integer(x.lookahead));
        json_object_set_new(t, "io_backend", json_string(x.io_backend ? x.io_backend : ""));
        if (x.experts) {
            json_object_set_new(t, "expert_evictions", json_integer((json_int_t)x.x_evictions));
            json_object_set_new(t, "expert_prefetch_off", json_boolean(x.x_prefetch_off));
            json_object_set_new(t, "expert_slots", json_integer(x.x_slots));
            json_object_set_new(t, "expert_whole_bytes", json_integer((json_int_t)x.x_whole_bytes));
            json_object_set_new(t, "expert_routed_bytes", json_integer((json_int_t)x.x_routed_bytes));
            json_object_set_new(t, "expert_cache_capacity", json_integer((json_int_t)x.x_cache_capacity));
        }
        json_object_set_new(o, "stream", t);
    }
    if (gen) { /* generation alone (gen_phase) */
        json_t *t = stream_json(gen);
        json_object_set_new(t, "callback_s", json_real(gen->cb_s));
        json_object_set_new(t, "graph_pieces", json_integer((json_int_t)gen->cb_pieces));
        json_object_set_new(o, "generation", t);
    }
    int rc = json_dump_file(o, path, JSON_INDENT(1));
    json_decref(o);
    return rc;
}

static void print_spec_stats(const hy_spec_stats *x) {
    fprintf(stderr,
            "[hypura] speculative: drafted %llu, accepted %llu (%.1f%%), %.2f tokens per target pass over %llu passes "
            "(%llu without a draft), draft %.2f s, verify %.2f s, k %d at the end\n",
            (unsigned long long)x->drafted, (unsigned long long)x->accepted,
            x->drafted ? 100.0 * x->accepted / x->drafted : 0.0, x->passes ? (double)x->pass_tokens / x->passes : 0.0,
            (unsigned long long)x->passes, (unsigned long long)x->plain_passes, x->t_draft_s, x->t_verify_s, x->k_last);
    uint64_t nv = x->passes - x->plain_passes, np = x->plain_passes;
    if (x->x_layers && (nv || np)) {
        fprintf(stderr, "[hypura] speculative, experts: per layer and pass");
        if (np)
            fprintf(stderr, " %.2f routed in a plain pass (predicted %.2f), %.1f MiB read", (double)x->x_union_plain / np / x->x_layers,
                    x->x_union_pred_plain, x->x_read_plain / (double)np / 1048576.0);
        if (nv)
            fprintf(stderr, "%s %.2f routed in a pass of %.2f tokens (predicted %.2f), %.1f MiB read", np ? ";" : "",
                    (double)x->x_union_verify / nv / x->x_layers, (double)x->verify_tokens / nv, x->x_union_pred_verify,
                    x->x_read_verify / (double)nv / 1048576.0);
        fputc('\n', stderr);
    }
    if (x->decision[0]) fprintf(stderr, "[hypura] speculative: drafting turned off %d time(s), last %s\n", x->n_off, x->decision);
}

static void print_stats(const hy_gen_stats *st, double load_s) {
    double pps = st->t_prompt_s > 0 ? st->n_prompt_eval / st->t_prompt_s : 0;
    double gps = st->t_gen_s > 0 ? st->n_gen / st->t_gen_s : 0;
    fprintf(stderr, "\n[hypura] ");
    if (load_s >= 0) fprintf(stderr, "load %.2f s | ", load_s);
    fprintf(stderr, "prompt %d tokens, %.2f tok/s | generation %d tokens, %.2f tok/s | stop: %s\n", st->n_prompt_eval,
            pps, st->n_gen, gps, st->stop_reason);
}

static bool tee_piece(const char *p, size_t l, void *ud) {
    fwrite(p, 1, l, (FILE *)ud);
    return print_piece(p, l, NULL);
}

static int interactive(hy_engine *e, hy_engine *draft, const hy_spec_params *xp, const hy_sample_params *sp,
                       const char *system) {
    enum { MAX_TURNS = 512 };
    const char *roles[MAX_TURNS];
    char *contents[MAX_TURNS];
    int n = 0;
    char err[HY_ERRLEN];
    if (system) {
        roles[n] = "system";
        contents[n++] = strdup(system);
    }
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    for (;;) {
        if (n + 2 > MAX_TURNS) {
            fprintf(stderr, "hypura run: conversation too long (%d messages)\n", MAX_TURNS);
            break;
        }
        fprintf(stderr, "> ");
        fflush(stderr);
        ssize_t r = getline(&line, &cap, stdin);
        if (r < 0) break;
        while (r > 0 && (line[r - 1] == '\n' || line[r - 1] == '\r')) line[--r] = 0;
        if (r == 0) continue;
        if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) break;
        roles[n] = "user";
        contents[n++] = strdup(line);
        char *prompt = NULL;
        if (hy_engine_format_chat(e, roles, (const char *const *)contents, n, true, &prompt, err, sizeof err)) {
            fprintf(stderr, "hypura run: %s\n", err);
            rc = 1;
            break;
        }
        /* the reply is printed and kept for the history */
        char *reply = NULL;
        size_t reply_len = 0;
        hy_gen_stats st;
        bool ok = true;
        FILE *mem = open_memstream(&reply, &reply_len);
        if (!mem) {
            free(prompt);
            rc = 1;
            break;
        }
        hy_spec_stats xs;
        int gr = draft ? hy_spec_generate(e, draft, prompt, sp, xp, tee_piece, mem, NULL, NULL, &st, &xs, err, sizeof err)
                       : hy_engine_generate(e, prompt, sp, tee_piece, mem, NULL, NULL, &st, err, sizeof err);
        fclose(mem);
        free(prompt);
        if (gr) {
            fprintf(stderr, "\nhypura run: %s\n", err);
            ok = false;
        }
        fputc('\n', stdout);
        print_stats(&st, -1);
        if (draft && !gr) print_spec_stats(&xs);
        roles[n] = "assistant";
        contents[n++] = reply ? reply : strdup("");
        if (!ok) {
            rc = 1;
            break;
        }
    }
    free(line);
    for (int i = 0; i < n; i++) free(contents[i]);
    return rc;
}

int hy_cmd_run(int argc, char **argv) {
    hy_session_params sess = hy_session_default_params();
    hy_engine_params ep = hy_engine_default_params();
    hy_sample_params sp = hy_sample_default_params();
    bool show_plan = false, naive = false;
    const char *stats_json = NULL;
    bool warmup = true;
    ep.progress = true;
    const char *prompt = NULL, *system = NULL, *dump_path = NULL;
    bool inter = false;
    const char *draft_path = getenv("HYPURA_DRAFT");
    hy_spec_params xp = hy_spec_default_params();
    enum { O_TEMP = 1000, O_TOPK, O_TOPP, O_SEED, O_SYSTEM, O_NOREPACK, O_REPACK, O_DUMP, O_PLAN, O_NAIVE, O_STATS_JSON, O_NO_WARMUP };
    static const struct option opts[] = {{"prompt", required_argument, 0, 'p'},
                                         {"interactive", no_argument, 0, 'i'},
                                         {"max-tokens", required_argument, 0, 'n'},
                                         {"temp", required_argument, 0, O_TEMP},
                                         {"top-k", required_argument, 0, O_TOPK},
                                         {"top-p", required_argument, 0, O_TOPP},
                                         {"seed", required_argument, 0, O_SEED},
                                         {"ctx", required_argument, 0, 'c'},
                                         {"threads", required_argument, 0, 't'},
                                         {"batch", required_argument, 0, 'b'},
                                         {"system", required_argument, 0, O_SYSTEM},
                                         {"no-repack", no_argument, 0, O_NOREPACK},
                                         {"repack", no_argument, 0, O_REPACK},
                                         {"dump-logits", required_argument, 0, O_DUMP},
                                         {"verbose", no_argument, 0, 'v'},
                                         {"plan", no_argument, 0, O_PLAN},
                                         {"naive", no_argument, 0, O_NAIVE},
                                         {"stats-json", required_argument, 0, O_STATS_JSON},
                                         {"no-warmup", no_argument, 0, O_NO_WARMUP},
                                         HY_DRAFT_LONG_OPTIONS,
                                         HY_SCHED_LONG_OPTIONS,
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    optind = 1;
    int c, seed;
    int li;
    while ((li = -1, c = getopt_long(argc, argv, "p:in:c:t:b:vh", opts, &li)) != -1) {
        bool ok = true;
        switch (c) {
        case 'p': prompt = optarg; break;
        case 'i': inter = true; break;
        case 'n': ok = hy_cli_parse_int(optarg, -1, 1 << 24, &sp.n_predict); break;
        case O_TEMP: ok = hy_cli_parse_float(optarg, 0, 100, &sp.temp); break;
        case O_TOPK: ok = hy_cli_parse_int(optarg, 0, 1 << 20, &sp.top_k); break;
        case O_TOPP: ok = hy_cli_parse_float(optarg, 0, 1, &sp.top_p); break;
        case O_SEED:
            ok = hy_cli_parse_int(optarg, 0, 0x7fffffff, &seed);
            sp.seed = (uint32_t)seed;
            break;
        case 'c': ok = hy_cli_parse_int(optarg, 0, 1 << 24, &ep.n_ctx); break;
        case 't': ok = hy_cli_parse_int(optarg, 1, 4096, &ep.n_threads); break;
        case 'b': ok = hy_cli_parse_int(optarg, 1, 1 << 16, &ep.n_batch); break;
        case O_SYSTEM: system = optarg; break;
        case O_NOREPACK: sess.repack = 0; break;
        case O_REPACK: sess.repack = 1; break;
        case O_DUMP: dump_path = optarg; break;
        case 'v': ep.verbose = true; break;
        case O_PLAN: show_plan = true; break;
        case O_NAIVE: naive = true; break;
        case O_STATS_JSON: stats_json = optarg; break;
        case O_NO_WARMUP: warmup = false; break;
        case 'h': run_usage(stdout); return 0;
        default: {
            int r = hy_cli_draft_opt(c, optarg, &draft_path, &xp, &sess);
            if (r != 0) {
                ok = r > 0;
                break;
            }
            r = hy_cli_sched_opt("run", c, optarg, &sess);
            if (r < 0) return 2;
            if (r == 0) {
                run_usage(stderr);
                return 2;
            }
        }
        }
        if (!ok) {
            if (li >= 0) fprintf(stderr, "hypura run: invalid value '%s' for --%s\n", optarg, opts[li].name);
            else fprintf(stderr, "hypura run: invalid value '%s' for -%c\n", optarg, c);
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "hypura run: expected exactly one MODEL argument (see hypura run --help)\n");
        return 2;
    }
    if (!prompt == !inter) {
        fprintf(stderr, "hypura run: give either --prompt TEXT or --interactive\n");
        return 2;
    }
    sess.model_path = argv[optind];
    sess.engine = ep;
    if (draft_path && !*draft_path) draft_path = NULL;
    if (draft_path && naive) {
        fprintf(stderr, "hypura run: --draft needs the plan (it charges the draft to the budget); not with --naive\n");
        return 2;
    }
    sess.draft_path = draft_path;
    sess.draft_always = !xp.adaptive;
    sess.draft_max = xp.draft_max;

    char err[HY_ERRLEN];
    hy_session *ss = NULL;
    if (naive) {
        ss = calloc(1, sizeof *ss);
        ep.model_path = sess.model_path;
        ep.repack = true;
        ep.use_mmap = true;
        ep.all_devices = true;
        if (!ss || hy_engine_open(&ep, &ss->engine, err, sizeof err)) {
            fprintf(stderr, "hypura run: %s\n", ss ? err : "out of memory");
            free(ss);
            return 1;
        }
    } else if (!(ss = hy_cli_session("run", &sess, show_plan))) {
        return 1;
    }
    hy_engine *e = ss->engine;
    if (warmup && (naive || !ss->stream || ss->plan.mode == HY_MODE_RESIDENT) && hy_engine_warmup(e, err, sizeof err)) {
        fprintf(stderr, "hypura run: %s\n", err);
        hy_session_free(ss);
        return 1;
    }
    hy_session *dss = NULL;
    hy_engine *draft = NULL;
    if (draft_path && !naive) {
        /* the plan's decision (hy_session.c decide_draft); the plan printout has it where it is printed */
        if (!show_plan && ss->plan.mode == HY_MODE_RESIDENT) fprintf(stderr, "[hypura] speculative: %s\n", ss->draft_why);
        if (ss->draft_off) {
            if (hy_spec_check_vocab_file(hy_engine_model(e), draft_path, err, sizeof err)) {
                fprintf(stderr, "hypura run: %s\n", err);
                hy_session_free(ss);
                return 1;
            }
            draft_path = NULL;
        }
        xp.session = ss;
    }
    if (draft_path) {
        int dr = hy_spec_open_draft(draft_path, ss->plan_params.n_ctx, ep.n_threads,
                                    ep.verbose, &dss, err, sizeof err);
        if (!dr) draft = dss->engine;
        if (dr ||
            hy_spec_check_vocab(hy_engine_model(e), hy_engine_model(draft), err, sizeof err) ||
            (warmup && hy_engine_warmup(draft, err, sizeof err))) {
            fprintf(stderr, "hypura run: %s\n", err);
            hy_session_free(dss);
            hy_session_free(ss);
            return 1;
        }
    }
    int rc = 0;
    if (inter) {
        rc = interactive(e, draft, &xp, &sp, system);
    } else {
        struct logit_dump dump = {0};
        if (dump_path && !(dump.f = fopen(dump_path, "wb"))) {
            fprintf(stderr, "hypura run: cannot write %s: %s\n", dump_path, strerror(errno));
            hy_session_free(ss);
            return 1;
        }
        hy_gen_stats st;
        if (ep.verbose && !naive && ss->stream) dump.live = ss->stream;
        if (!naive && ss->stream) dump.stream = ss->stream, dump.ss = ss;
        hy_spec_stats xs;
        int gr = draft ? hy_spec_generate(e, draft, prompt, &sp, &xp, print_piece, NULL,
                                          dump.f || dump.stream ? dump_logits : NULL, &dump, &st, &xs, err, sizeof err)
                       : hy_engine_generate(e, prompt, &sp, print_piece, NULL, dump.f || dump.stream ? dump_logits : NULL,
                                            &dump, &st, err, sizeof err);
        const char *vwhy = ss ? hy_vxc_error(ss->vxc) : NULL;
        if (vwhy) { /* the cache's error is the cause of a failed decode too (an expert's read failed) */
            snprintf(err, sizeof err, "%s", vwhy);
            gr = -1;
        }
        if (gr) {
            const char *why = hy_stream_error(ss->stream);
            fprintf(stderr, "hypura run: %s\n", why ? why : err);
            rc = 1;
        } else {
            fputc('\n', stdout);
            print_stats(&st, hy_engine_load_seconds(e));
            if (draft) print_spec_stats(&xs);
            hy_stream_stats gen;
            bool have_gen = gen_phase(&dump, &gen);
            if (!naive) {
                if (have_gen) print_gen_phase(&gen, &st);
                if (!draft && !ss->vxc) calibrate(ss, &st, have_gen ? &gen : NULL); /* the plan does not model it */
                hy_session_print_predicted(stderr, ss, st.t_gen_s > 0 ? st.n_gen / st.t_gen_s : 0);
                hy_session_print_stats(stderr, ss, st.t_prompt_s + st.t_gen_s);
            }
            if (stats_json && write_stats_json(stats_json, naive ? NULL : ss, &st, hy_engine_load_seconds(e),
                                           draft ? &xs : NULL, have_gen ? &gen : NULL)) {
                fprintf(stderr, "hypura run: cannot write %s\n", stats_json);
                rc = 1;
            }
        }
        if (dump.f && (fclose(dump.f) != 0 || dump.failed)) {
            fprintf(stderr, "hypura run: writing %s failed\n", dump_path);
            rc = 1;
        }
    }
    hy_session_free(dss);
    hy_session_free(ss);
    return rc;
}
