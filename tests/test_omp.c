/* cli_omp's decisions: the spin count at start (hy_omp_spin_wanted) and, after the plan, whether
 * a streamed plan's threads wait passively (hy_omp_passive_wanted). */
#include "cli/cli_omp.h"

#include <string.h>

#include "test_check.h"

int main(void) {
    /* at start: long only with many idle cpus, short elsewhere, none when turned off */
    CHECK(!strcmp(hy_omp_spin_wanted(NULL, 16, 0.5), HY_OMP_SPIN_LONG), "16 idle cpus: long");
    CHECK(!strcmp(hy_omp_spin_wanted(NULL, 16, 8), HY_OMP_SPIN_SHORT), "16 busy cpus: short");
    CHECK(!strcmp(hy_omp_spin_wanted(NULL, 2, 0), HY_OMP_SPIN_SHORT), "2 cpus: short");
    CHECK(!strcmp(hy_omp_spin_wanted("1", 2, 5), HY_OMP_SPIN_LONG), "forced");
    CHECK(hy_omp_spin_wanted("0", 16, 0) == NULL, "off");

    const char *set = "2 cpus, load 0.10";
    /* hypura's short spin: kept for short waits on a quiet machine only */
    CHECK(!hy_omp_passive_wanted(set, HY_OMP_SPIN_SHORT, NULL, 0.0002, 2, 0.5), "short waits, quiet: spin");
    CHECK(hy_omp_passive_wanted(set, HY_OMP_SPIN_SHORT, NULL, 0.0002, 2, 1.5), "short waits, others running: passive");
    CHECK(hy_omp_passive_wanted(set, HY_OMP_SPIN_SHORT, NULL, 0.0002, 2, -1), "others unknown: passive");
    CHECK(hy_omp_passive_wanted(set, HY_OMP_SPIN_SHORT, NULL, 0.007, 2, 0.1), "long waits: passive");
    CHECK(hy_omp_passive_wanted(set, HY_OMP_SPIN_SHORT, NULL, HY_OMP_PASSIVE_STALL_S, 16, 0), "at the bound: passive");
    /* the long spin (spare cores) and the user's settings are kept */
    CHECK(!hy_omp_passive_wanted(set, HY_OMP_SPIN_LONG, NULL, 0.5, 16, 0), "long spin kept");
    CHECK(!hy_omp_passive_wanted(NULL, "7", NULL, 0.5, 2, 3), "user's GOMP_SPINCOUNT kept");
    CHECK(!hy_omp_passive_wanted(set, HY_OMP_SPIN_SHORT, "active", 0.5, 2, 3), "user's OMP_WAIT_POLICY kept");
    CHECK(!hy_omp_passive_wanted(NULL, NULL, "passive", 0.5, 2, 3), "already passive: once");
    /* nothing set (HYPURA_OMP_SPIN=0): streaming waits passively, as before */
    CHECK(hy_omp_passive_wanted(NULL, NULL, NULL, 0, 2, 0), "nothing set: passive");
    return check_done("omp");
}
