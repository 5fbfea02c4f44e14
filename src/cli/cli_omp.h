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
 * GOMP_SPINCOUNT. HYPURA_OMP_SPIN=1 forces it, 0 turns it off. */
#ifndef HY_CLI_OMP_H
#define HY_CLI_OMP_H

#include <stdbool.h>
#include <stddef.h>

#define HY_OMP_SPIN_MIN_CPUS 8

/* the decision: HYPURA_OMP_SPIN's value (NULL: automatic), cpus online, 1-minute load */
bool hy_omp_spin_wanted(const char *setting, long cpus, double loadavg);
/* Sets GOMP_SPINCOUNT and executes /proc/self/exe again with argv when wanted
 * (once: HYPURA_OMP_SPIN_SET marks the second start); returns when not, or when
 * the exec fails. */
void hy_omp_spin_setup(char **argv);
/* What is in force, for the profile's printout. */
const char *hy_omp_spin_note(char *buf, size_t len);

#endif
