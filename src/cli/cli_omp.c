/* OpenMP's waiting threads (cli_omp.h). */
#include "cli/cli_omp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *hy_omp_spin_wanted(const char *setting, long cpus, double loadavg) {
    if (setting && *setting) return strcmp(setting, "0") ? HY_OMP_SPIN_LONG : NULL;
    return cpus >= HY_OMP_SPIN_MIN_CPUS && loadavg >= 0 && loadavg < (double)cpus / 4 ? HY_OMP_SPIN_LONG
                                                                                      : HY_OMP_SPIN_SHORT;
}

void hy_omp_spin_setup(char **argv) {
    if (getenv("HYPURA_OMP_SPIN_SET") || getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    double la = hy_omp_loadavg();
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    const char *count = hy_omp_spin_wanted(getenv("HYPURA_OMP_SPIN"), cpus, la);
    if (!count) return;
    char why[96];
    snprintf(why, sizeof why, "%ld cpus, load %.2f", cpus, la);
    /* libgomp read its settings when it was loaded, before main: start again with them set */
    if (setenv("GOMP_SPINCOUNT", count, 1) || setenv("HYPURA_OMP_SPIN_SET", why, 1)) return;
    execv("/proc/self/exe", argv);
    unsetenv("GOMP_SPINCOUNT"); /* exec failed: go on as we are */
    unsetenv("HYPURA_OMP_SPIN_SET");
}

bool hy_omp_passive_wanted(const char *spin_set, const char *spincount, const char *wait_policy,
                           double stall_piece_s, long cpus, double others) {
    if (wait_policy) return false;                   /* the user's, or already switched */
    if (spincount && !spin_set) return false;        /* the user's spin count (libgomp takes it over a policy) */
    if (spincount && strcmp(spincount, HY_OMP_SPIN_SHORT)) return false; /* hypura's long spin: spare cores */
    bool quiet = others >= 0 && cpus > 0 && others < (double)cpus / 2;
    if (spincount && stall_piece_s < HY_OMP_PASSIVE_STALL_S && quiet) return false; /* short waits, free cores */
    return true;
}

/* /proc/loadavg: the 1-minute load average and the tasks runnable now (this one included);
 * false when it cannot be read */
static bool read_loadavg(double *load1, int *running) {
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f) return false;
    double b, c;
    int total = 0;
    bool ok = fscanf(f, "%lf %lf %lf %d/%d", load1, &b, &c, running, &total) == 5;
    fclose(f);
    return ok;
}

double hy_omp_others_running(void) {
    double sum = 0, la;
    int n = 0, run;
    for (int i = 0; i < 5; i++) {
        if (i) usleep(10000);
        if (read_loadavg(&la, &run) && run >= 1) sum += run - 1, n++;
    }
    return n ? sum / n : -1;
}

double hy_omp_loadavg(void) {
    double la;
    int run;
    return read_loadavg(&la, &run) ? la : -1;
}

const char *hy_omp_spin_note(char *buf, size_t len) {
    const char *set = getenv("HYPURA_OMP_SPIN_SET"), *sc = getenv("GOMP_SPINCOUNT"), *wp = getenv("OMP_WAIT_POLICY");
    if (set && sc) snprintf(buf, len, "threads spin %s times before sleeping (set by hypura: %s)", sc, set);
    else if (set && wp) snprintf(buf, len, "threads sleep while they wait (OMP_WAIT_POLICY=%s set by hypura: %s)", wp, set);
    else if (sc || wp)
        snprintf(buf, len, "as given: GOMP_SPINCOUNT=%s OMP_WAIT_POLICY=%s", sc ? sc : "-", wp ? wp : "-");
    else snprintf(buf, len, "libgomp's default (HYPURA_OMP_SPIN=0)");
    return buf;
}
