/* hypura iobench: the storage read sweep alone (block size x queue depth,
 * O_DIRECT through hy_io, 4K random IOPS) on a directory's filesystem; no cache */
#include "cli/cli.h"
#include "profile/hy_profile.h"
#include "util/hy_util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: hypura iobench [PATH] [--json] [--quick]\n"
            "  Measures read bandwidth of PATH's filesystem (default: the cache dir) with a\n"
            "  temporary file (1 GiB, 64 MiB with --quick; never left behind): O_DIRECT\n"
            "  sequential reads for 128 KiB / 1 MiB / 4 MiB requests at queue depth 1 / 4 / 16,\n"
            "  and 4 KiB random reads at queue depth 32.\n");
}

int hy_cmd_iobench(int argc, char **argv) {
    const char *path = NULL;
    bool json = false, quick = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) json = true;
        else if (!strcmp(argv[i], "--quick")) quick = true;
        else if (argv[i][0] == '-' || path) {
            fprintf(stderr, "hypura iobench: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else path = argv[i];
    }
    hy_profile p;
    memset(&p, 0, sizeof p);
    char err[HY_ERRLEN];
    double t0 = hy_now();
    if (hy_profile_measure_storage(path, quick, &p, err, sizeof err)) {
        fprintf(stderr, "hypura iobench: %s\n", err);
        return 1;
    }
    double dt = hy_now() - t0;

    if (json) {
        json_t *o = json_object(), *sw = json_array();
        for (int i = 0; i < p.n_sweep; i++)
            json_array_append_new(sw, json_pack("{s:I, s:i, s:f}", "block", (json_int_t)p.sweep[i].block, "qd",
                                                p.sweep[i].qd, "gbps", p.sweep[i].gbps));
        json_object_set_new(o, "storage_path", json_string(p.storage_path));
        json_object_set_new(o, "storage_fs", json_string(p.storage_fs));
        json_object_set_new(o, "storage_direct", json_boolean(p.storage_direct));
        json_object_set_new(o, "sweep", sw);
        json_object_set_new(o, "seq_read_gbps", json_real(p.seq_read_gbps));
        json_object_set_new(o, "seq_read_qd1_gbps", json_real(p.seq_read_qd1_gbps));
        json_object_set_new(o, "rand4k_iops", json_real(p.rand4k_iops));
        json_object_set_new(o, "quick", json_boolean(quick));
        json_object_set_new(o, "elapsed_s", json_real(dt));
        char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        json_decref(o);
        if (!s) return 1;
        printf("%s\n", s);
        free(s);
        return 0;
    }

    printf("storage  %s (%s, %s)%s\n", p.storage_path, p.storage_fs,
           p.storage_direct ? "O_DIRECT" : "no O_DIRECT: buffered reads after dropping the cache",
           quick ? " [quick]" : "");
    /* the sweep as a table: rows = block size, columns = queue depth */
    size_t blocks[32];
    int qds[32], nb = 0, nq = 0;
    for (int i = 0; i < p.n_sweep; i++) {
        bool seen = false;
        for (int j = 0; j < nb; j++) seen |= blocks[j] == p.sweep[i].block;
        if (!seen) blocks[nb++] = p.sweep[i].block;
        seen = false;
        for (int j = 0; j < nq; j++) seen |= qds[j] == p.sweep[i].qd;
        if (!seen) qds[nq++] = p.sweep[i].qd;
    }
    printf("\nsequential read, GB/s\n%12s", "block \\ qd");
    for (int q = 0; q < nq; q++) printf("%8d", qds[q]);
    printf("\n");
    for (int b = 0; b < nb; b++) {
        char s[32];
        printf("%12s", hy_fmt_bytes(blocks[b], s, sizeof s));
        for (int q = 0; q < nq; q++) {
            double g = -1;
            for (int i = 0; i < p.n_sweep; i++)
                if (p.sweep[i].block == blocks[b] && p.sweep[i].qd == qds[q]) g = p.sweep[i].gbps;
            if (g < 0) printf("%8s", "-");
            else printf("%8.2f", g);
        }
        printf("\n");
    }
    printf("\nbest sequential      %.2f GB/s\n", p.seq_read_gbps);
    printf("queue depth 1, 1 MiB %.2f GB/s\n", p.seq_read_qd1_gbps);
    printf("4K random, qd 32     %.0f IOPS (%.0f MB/s)\n", p.rand4k_iops, p.rand4k_iops * 4096 / 1e6);
    printf("took %.1f s\n", dt);
    return 0;
}
