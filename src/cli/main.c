#include "cli/cli.h"
#include "cli/cli_omp.h"

#include <stdio.h>

#include <string.h>

struct command {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
};

static const struct command commands[] = {
    {"profile", hy_cmd_profile, "profile this machine (CPU, RAM limits, storage, GPU); cached"},
    {"iobench", hy_cmd_iobench, "measure storage read bandwidth of a path (O_DIRECT sweep)"},
    {"inspect", hy_cmd_inspect, "read a GGUF header: tensors, roles, sizes"},
    {"estimate", hy_cmd_estimate, "the placement plan and predicted speed for this machine and budgets"},
    {"run", hy_cmd_run, "generate text from a model (prompt or interactive)"},
    {"serve", hy_cmd_serve, "serve a model over HTTP: Ollama and OpenAI APIs"},
    {"bench", hy_cmd_bench, "A/B: hypura's plan against libllama's defaults, optionally under a memory cap"},
    {"optimize", hy_cmd_optimize, "new GGUF with MoE experts stored in co-activation order (same logits)"},
};

static void usage(FILE *f) {
    fprintf(f,
            "hypura - run language models larger than memory, tier by tier (GPU, RAM, NVMe)\n\n"
            "usage: hypura COMMAND [ARGS]   (hypura COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("hypura 0.1.0\n");
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) {
            hy_omp_spin_setup(argv); /* may start this process again (cli_omp.h) */
            return commands[i].fn(argc - 1, argv + 1);
        }
    fprintf(stderr, "hypura: unknown command '%s' (see hypura --help)\n", argv[1]);
    return 2;
}
