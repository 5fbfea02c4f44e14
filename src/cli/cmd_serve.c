/* hypura serve: load a model once and answer Ollama's and OpenAI's HTTP APIs.
 * Diagnostics and one line per request go to stderr; "listening on URL" is
 * printed once the server answers. SIGINT/SIGTERM stop it cleanly (exit 0). */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_sched.h"
#include "engine/hy_session_rpc.h"
#include "server/hy_server.h"
#include "util/hy_util.h"

static void serve_usage(FILE *f) {
    fprintf(f,
            "usage: hypura serve MODEL.gguf [options]\n\n"
            "Serves the model over HTTP: Ollama's API (/api/generate, /api/chat, /api/tags, /api/show,\n"
            "/api/ps, /api/version) and OpenAI's (/v1/chat/completions, /v1/completions, /v1/models).\n"
            "Up to --parallel requests are generated together (one decode step for all of them, so\n"
            "a streamed model reads its weights once per step for every request); more wait in a\n"
            "queue, in arrival order.\n\n"
            "      --host HOST         address to bind (default 127.0.0.1: this machine only)\n"
            "      --port N            TCP port (default 8080; 0 = any free port, printed at start)\n"
            "      --name NAME         model name clients use (default: the file name without .gguf)\n"
            "  -c, --ctx N             the server's whole context, split among the --parallel sequences\n"
            "                          (default min(4096, model's)); a request's num_ctx is honoured up\n"
            "                          to its share\n"
            "      --parallel N        sequences generated at once, at most 64 (default: one per 512\n"
            "                          tokens of --ctx, at most 8; fewer when the memory budget cannot\n"
            "                          hold them)\n"
            "      --max-queue N       requests waiting at once before new ones get 503 (default 512)\n"
            "      --max-body BYTES    largest request body (default 1M; larger gets 413)\n"
            "      --max-tokens N      most tokens generated per request (default 4096; also capped by\n"
            "                          the room left in the context)\n"
            "  -t, --threads N         CPU threads (default: all cores)\n"
            "  -b, --batch N           prompt batch size (default 512)\n"
            "      --repack / --no-repack  CPU weight repacking (default: on when the model fits, off when it\n"
            "                          streams; --repack then repacks the weights kept resident: faster\n"
            "                          batched steps, but batched answers may differ from alone)\n"
            "      --no-prompt-cache   decode every prompt in full instead of reusing the previous\n"
            "                          request's shared prefix (slower; answers then never depend on\n"
            "                          what was asked before, bit for bit)\n"
            "  -q, --quiet             no per-request log lines\n"
            "      --draft MODEL       speculative decoding with this draft model (same vocabulary; env\n"
            "                          HYPURA_DRAFT), resident and charged to the memory budget; needs\n"
            "                          --parallel 1 (the default with --draft): each request runs alone,\n"
            "                          its drafted tokens verified in one pass, without the prompt cache\n"
            "      --draft-max N, --draft-fixed, --draft-accept P   as for hypura run\n"
            HY_SCHED_HELP
            "  -v, --verbose           show libllama's log\n"
            "  -h, --help              this help\n");
}

/* most sequences at once (libllama allows 256; past 62 generating sequences a
 * step is 64 rows or more, where ggml-cpu's attention kernel changes) */
#define HY_SERVE_MAX_PARALLEL 64
/* the automatic --parallel: one sequence per this many tokens of --ctx, at most 8 */
#define HY_SERVE_AUTO_SHARE 512
#define HY_SERVE_AUTO_MAX 8

/* Plan for the sequences: as asked (or one per HY_SERVE_AUTO_SHARE tokens of the
 * context, at most HY_SERVE_AUTO_MAX), fewer while the memory budget cannot hold
 * them (the plan charges compute for a batch of at least n_seq tokens), saying so.
 * Then load as hy_cli_session does. */
static hy_session *serve_session(hy_session_params *sess, int *parallel) {
    char err[HY_ERRLEN], first[HY_ERRLEN] = "";
    hy_session *s = NULL;
    sess->n_seq = 1;
    if (hy_session_plan(sess, &s, err, sizeof err)) {
        fprintf(stderr, "hypura serve: %s\n", err);
        return NULL;
    }
    int total = s->plan_params.n_ctx;
    /* a model that fits with one sequence is not made to stream for more */
    bool resident1 = s->plan.mode == HY_MODE_RESIDENT;
    int want = *parallel;
    if (want <= 0) {
        want = total / HY_SERVE_AUTO_SHARE;
        if (want > HY_SERVE_AUTO_MAX) want = HY_SERVE_AUTO_MAX;
        if (want < 1) want = 1;
    }
    int n = want;
    if (n > total / 2) n = total / 2 > 0 ? total / 2 : 1; /* at least two tokens each */
    for (; n > 1; n--) {
        hy_session_free(s);
        s = NULL;
        sess->n_seq = n;
        if (hy_session_plan(sess, &s, err, sizeof err) == 0) {
            if (!resident1 || s->plan.mode == HY_MODE_RESIDENT) break;
            char a[32], b[32];
            snprintf(err, sizeof err, "the model fits with one sequence, but %d would need %s and the budget is %s", n,
                     hy_fmt_bytes(s->plan.budget_used, a, sizeof a), hy_fmt_bytes(s->plan_params.mem_budget, b, sizeof b));
            /* with n sequences the plan streams; a plan that never will is needed */
            char why[HY_ERRLEN];
            snprintf(why, sizeof why, "%s", err);
            if (!first[0]) snprintf(first, sizeof first, "%s", why);
            continue;
        }
        if (!first[0]) snprintf(first, sizeof first, "%s", err);
    }
    if (n <= 1) { /* the plan of one sequence was made first */
        if (s) hy_session_free(s);
        sess->n_seq = 1;
        if (hy_session_plan(sess, &s, err, sizeof err)) {
            fprintf(stderr, "hypura serve: %s\n", err);
            return NULL;
        }
        n = 1;
    }
    hy_cli_omp_for_plan(&s->plan); /* may start this process again (cli_omp.h) */
    if (n < want) {
        if (first[0])
            fprintf(stderr, "hypura serve: the memory budget cannot hold %d sequences (%s); serving %d at once\n",
                    want, first, n);
        else
            fprintf(stderr, "hypura serve: a context of %d tokens holds %d sequences at most; serving %d at once\n",
                    total, n, n);
    }
    hy_session_print_plan(stderr, s, false);
    hy_cli_print_omp(&s->plan);
    if (hy_session_load(s, sess, err, sizeof err)) {
        fprintf(stderr, "hypura serve: %s\n", err);
        hy_session_free(s);
        return NULL;
    }
    *parallel = n;
    return s;
}

int hy_cmd_serve(int argc, char **argv) {
    hy_session_params sess = hy_session_default_params();
    hy_engine_params ep = hy_engine_default_params();
    hy_server_params sp = hy_server_default_params();
    sp.parallel = 0; /* automatic unless --parallel */
    ep.progress = true;
    enum { O_HOST = 1000, O_PORT, O_NAME, O_PARALLEL, O_MAXBODY, O_MAXTOK, O_MAXQ, O_NOREPACK, O_REPACK, O_NOCACHE };
    static const struct option opts[] = {
        {"host", required_argument, 0, O_HOST},        {"port", required_argument, 0, O_PORT},
        {"name", required_argument, 0, O_NAME},        {"ctx", required_argument, 0, 'c'},
        {"parallel", required_argument, 0, O_PARALLEL}, {"max-body", required_argument, 0, O_MAXBODY},
        {"max-tokens", required_argument, 0, O_MAXTOK}, {"max-queue", required_argument, 0, O_MAXQ},
        {"threads", required_argument, 0, 't'},        {"batch", required_argument, 0, 'b'},
        {"no-repack", no_argument, 0, O_NOREPACK},     {"repack", no_argument, 0, O_REPACK},
        {"no-prompt-cache", no_argument, 0, O_NOCACHE}, {"quiet", no_argument, 0, 'q'},                {"verbose", no_argument, 0, 'v'},
        HY_DRAFT_LONG_OPTIONS,
        HY_SCHED_LONG_OPTIONS,                         {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *draft_path = getenv("HYPURA_DRAFT");
    hy_spec_params xp = hy_spec_default_params();
    optind = 1;
    int c, li;
    while ((li = -1, c = getopt_long(argc, argv, "c:t:b:qvh", opts, &li)) != -1) {
        bool ok = true;
        switch (c) {
        case O_HOST: sp.host = optarg; break;
        case O_PORT: ok = hy_cli_parse_int(optarg, 0, 65535, &sp.port); break;
        case O_NAME:
            sp.model_name = optarg;
            ok = *optarg && strlen(optarg) < 200 && !strpbrk(optarg, " \t\r\n\"'\\");
            break;
        case O_PARALLEL: ok = hy_cli_parse_int(optarg, 1, HY_SERVE_MAX_PARALLEL, &sp.parallel); break;
        case O_MAXBODY: {
            uint64_t v;
            ok = hy_parse_bytes(optarg, &v) && v > 0 && v <= (1ull << 32);
            sp.max_body = (size_t)v;
            break;
        }
        case O_MAXTOK: ok = hy_cli_parse_int(optarg, 1, 1 << 24, &sp.max_tokens); break;
        case O_MAXQ: ok = hy_cli_parse_int(optarg, 1, 1 << 20, &sp.max_queue); break;
        case 'c': ok = hy_cli_parse_int(optarg, 0, 1 << 24, &ep.n_ctx); break;
        case 't': ok = hy_cli_parse_int(optarg, 1, 4096, &ep.n_threads); break;
        case 'b': ok = hy_cli_parse_int(optarg, 1, 1 << 16, &ep.n_batch); break;
        case O_NOREPACK: sess.repack = 0; break;
        case O_REPACK: sess.repack = 1; break;
        case O_NOCACHE: sp.prompt_cache = false; break;
        case 'q': sp.log_requests = false; break;
        case 'v': ep.verbose = true; break;
        case 'h': serve_usage(stdout); return 0;
        default: {
            int r = hy_cli_draft_opt(c, optarg, &draft_path, &xp, &sess);
            if (r != 0) {
                ok = r > 0;
                break;
            }
            r = hy_cli_sched_opt("serve", c, optarg, &sess);
            if (r < 0) return 2;
            if (r == 0) {
                serve_usage(stderr);
                return 2;
            }
        }
        }
        if (!ok) {
            if (li >= 0) fprintf(stderr, "hypura serve: invalid value '%s' for --%s\n", optarg, opts[li].name);
            else fprintf(stderr, "hypura serve: invalid value '%s' for -%c\n", optarg, c);
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "hypura serve: expected exactly one MODEL argument (see hypura serve --help)\n");
        return 2;
    }
    sess.model_path = argv[optind];
    sess.engine = ep;
    if (draft_path && !*draft_path) draft_path = NULL;
    if (draft_path) {
        /* drafting verifies one sequence's tokens per pass; several sequences already share each
         * pass by batching: the two are not combined (yet) */
        if (sp.parallel > 1) {
            fprintf(stderr, "hypura serve: --draft needs --parallel 1 (each request then runs alone with its draft); "
                            "%d asked\n", sp.parallel);
            return 2;
        }
        sp.parallel = 1;
        sess.draft_path = draft_path;
        sess.draft_always = !xp.adaptive;
        sess.draft_max = xp.draft_max;
    }

    char err[HY_ERRLEN];
    /* Signals are taken by sigwait below: block them before any thread exists
     * (the session's I/O threads, the server's) so that none of them gets one.
     * A signal that comes while the model loads waits and stops the server at once. */
    sigset_t stop_set;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGINT);
    sigaddset(&stop_set, SIGTERM);
    sigaddset(&stop_set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stop_set, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* remote tiers: a lost server re-executes serve without it (hy_rpc.h); the passive wait
     * (and any re-execution) comes before the first connection */
    sess.rpc_keep_going = true;
    if (hy_session_rpc_list(&sess)) hy_cli_reexec_passive();
    hy_session *ss = serve_session(&sess, &sp.parallel);
    if (!ss) return 1;
    hy_session *dss = NULL;
    if (draft_path && ss->draft_off) {
        fprintf(stderr, "hypura serve: %s\n", ss->draft_why); /* the plan's decision: no draft */
        if (hy_spec_check_vocab_file(hy_engine_model(ss->engine), draft_path, err, sizeof err)) {
            fprintf(stderr, "hypura serve: %s\n", err);
            hy_session_free(ss);
            return 1;
        }
    } else if (draft_path) {
        if (hy_spec_open_draft(draft_path, ss->plan_params.n_ctx, ep.n_threads, ep.verbose, &dss, err, sizeof err) ||
            hy_spec_check_vocab(hy_engine_model(ss->engine), hy_engine_model(dss->engine), err, sizeof err) ||
            hy_engine_warmup(dss->engine, err, sizeof err)) {
            fprintf(stderr, "hypura serve: %s\n", err);
            hy_session_free(dss);
            hy_session_free(ss);
            return 1;
        }
        sp.draft = dss->engine;
        sp.spec = xp;
    }
    hy_server *srv = NULL;
    if (hy_server_start(&sp, ss, &srv, err, sizeof err)) {
        fprintf(stderr, "hypura serve: %s\n", err);
        hy_session_free(dss);
        hy_session_free(ss);
        return 1;
    }
    fprintf(stderr, "hypura serve: model '%s' (context %d tokens, load %.2f s)\n", hy_server_model_name(srv),
            hy_engine_n_ctx(ss->engine), hy_engine_load_seconds(ss->engine));
    fprintf(stderr, "hypura serve: %d sequence%s at once, %d tokens of context each; more requests queue\n",
            sp.parallel, sp.parallel == 1 ? "" : "s", hy_engine_n_ctx(ss->engine) / sp.parallel);
    fprintf(stderr, "listening on http://%s:%d\n", hy_server_url_host(srv), hy_server_port(srv));
    fflush(stderr);

    int sig = 0;
    while (sigwait(&stop_set, &sig) != 0) {
    }
    fprintf(stderr, "hypura serve: %s: shutting down\n", strsignal(sig));
    double t0 = hy_now();
    hy_server_stop(srv);
    hy_session_free(dss);
    hy_session_free(ss);
    fprintf(stderr, "hypura serve: stopped in %.2f s\n", hy_now() - t0);
    return 0;
}
