/* cli_omp: how ggml's CPU threads wait between pieces of a graph.
 *
 * ggml's CPU threads are OpenMP's (libgomp). A streamed pass is computed in
 * pieces (the eval callback acts between them); with libgomp's default the
 * threads slept between pieces, and on the H200 machine's 16 idle cores
 * expert-streaming a qwen3moe decoded at 39-43 tok/s, as with no spinning at all
 * (GOMP_SPINCOUNT=0: 40-42), against 69-77 with GOMP_SPINCOUNT=3000000 (resident
 * runs: +11 % with OMP_WAIT_POLICY=active). On this repository's 2-core machine
 * under load the same setting made tokens 10-40x slower: a spinning thread takes
 * the core the others need. libgomp reads its settings when it is loaded, before
 * main, so hypura sets GOMP_SPINCOUNT and executes itself again, only where it
 * pays: at least HY_OMP_SPIN_MIN_CPUS cpus and a load average below a quarter of
 * them when it starts, and never over the user's OMP_WAIT_POLICY or
 * GOMP_SPINCOUNT. HYPURA_OMP_SPIN=1 forces it, 0 turns it off.
 *
 * Everywhere else hypura sets a short spin (HY_OMP_SPIN_SHORT iterations, well
 * under a millisecond): libgomp's own default there is its throttled count
 * (about a thousand: the process manages more threads than there are cpus), so
 * the threads slept between every two pieces and had to be woken. On the 2-core
 * machine, qwen3moe expert-streaming under a 2 GiB budget: 0.035-0.041 s per
 * token with the default, 0.022-0.030 with 10000-100000 spins, 0.047 with
 * 3000000; with two CPU hogs beside it 0.088-0.166 (default) against
 * 0.076-0.151 (short): a short spin gives its core back before it is missed. */
#ifndef HY_CLI_OMP_H
#define HY_CLI_OMP_H

#include <stdbool.h>
#include <stddef.h>

#define HY_OMP_SPIN_MIN_CPUS 8

#define HY_OMP_SPIN_LONG "3000000"
#define HY_OMP_SPIN_SHORT "30000"

/* the decision: HYPURA_OMP_SPIN's value (NULL: automatic), cpus online, 1-minute load; the
 * GOMP_SPINCOUNT to set (HY_OMP_SPIN_LONG or HY_OMP_SPIN_SHORT), NULL for none (HYPURA_OMP_SPIN=0) */
const char *hy_omp_spin_wanted(const char *setting, long cpus, double loadavg);
/* Sets GOMP_SPINCOUNT and executes /proc/self/exe again with argv (unless turned off
 * or set by the user; once: HYPURA_OMP_SPIN_SET marks the second start); returns when not, or when
 * the exec fails. */
void hy_omp_spin_setup(char **argv);
/* What is in force, for the profile's printout. */
const char *hy_omp_spin_note(char *buf, size_t len);

#endif
