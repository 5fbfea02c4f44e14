/* hypura estimate (and inspect --plan): the placement plan for this machine
 * and budgets, and its predicted speed, without loading a weight. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_sched.h"
#include "util/hy_util.h"

static void estimate_usage(FILE *f) {
    fprintf(f,
            "usage: hypura estimate MODEL.gguf [options]   (also: hypura inspect MODEL.gguf --plan)\n\n"
            "Prints the placement plan: every tensor's tier (GPU/RAM/NVMe), bytes per tier, the mode,\n"
            "pool and lookahead, bytes read from storage per token and the predicted tok/s from the\n"
            "machine profile. Reads only the header. A --gpu-budget is planned also where there is no\n"
            "GPU (what the plan would be on a machine with one).\n\n"
            "  --json                  the plan as JSON\n"
            "  --tensors               list every tensor's tier\n"
            "  -c, --ctx N             context the run will use (default min(4096, model's))\n"
            "  -b, --batch N           prompt batch (default 512)\n" HY_SCHED_HELP
            "  -h, --help              this help\n");
}

int hy_cmd_estimate(int argc, char **argv) {
    hy_session_params sp = hy_session_default_params();
    bool json = false, tensors = false;
    enum { O_JSON = 1000, O_TENSORS };
    static const struct option opts[] = {{"json", no_argument, 0, O_JSON},     {"tensors", no_argument, 0, O_TENSORS},
                                         {"ctx", required_argument, 0, 'c'},  {"batch", required_argument, 0, 'b'},
                                         HY_SCHED_LONG_OPTIONS,               {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "c:b:h", opts, NULL)) != -1) {
        switch (c) {
        case O_JSON: json = true; break;
        case O_TENSORS: tensors = true; break;
        case 'c':
        case 'b': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > (1 << 24)) {
                fprintf(stderr, "hypura estimate: invalid value '%s'\n", optarg);
                return 2;
            }
            if (c == 'c') sp.engine.n_ctx = (int)v;
            else sp.engine.n_batch = (int)v;
            break;
        }
        case 'h': estimate_usage(stdout); return 0;
        default: {
            int r = hy_cli_sched_opt("estimate", c, optarg, &sp);
            if (r <= 0) {
                if (r == 0) estimate_usage(stderr);
                return 2;
            }
        }
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "hypura estimate: expected exactly one MODEL argument (see --help)\n");
        return 2;
    }
    sp.model_path = argv[optind];
    sp.plan_only = true; /* a --gpu-budget plans a GPU tier also on a machine without one */
    char err[HY_ERRLEN];
    hy_session *s = NULL;
    if (hy_session_plan(&sp, &s, err, sizeof err)) {
        fprintf(stderr, "hypura estimate: %s\n", err);
        return 1;
    }
    if (json) {
        char *txt = hy_session_plan_json(s, tensors);
        if (txt) puts(txt);
        free(txt);
    } else {
        hy_session_print_plan(stdout, s, tensors);
    }
    hy_session_free(s);
    return 0;
}
