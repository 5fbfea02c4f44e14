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
/* After the plan. A streamed plan leaves the threads idle while reads are in flight, and a
 * spinning thread then takes a core that the process's own work and everything else on the
 * machine need. On the 2-core machine with other builds running (load 2-5):
 *  - the Mixtral-shaped MoE under a 1.5 GiB cap expert-streaming (7 ms of reads expected per
 *    piece of the graph): 1.76-1.99 tok/s with a passive wait, 1.46-1.56 with the short spin;
 *    streamed dense-style: 0.66 against 0.53-0.57, the short spin burning 27 s of CPU in 31 s;
 *  - a qwen3moe with 99 % cache hits (waits well under a millisecond): 16.2-17.3 tok/s passive,
 *    1.3-1.6 with the short spin at load 4-5 (the cores were oversubscribed), where on a quiet
 *    machine the short spin had been faster (above).
 *  - and on a quiet machine the other way: the same qwen3moe with kept statistics decoded at
 *    41.6-42.3 tok/s with the short spin against 18.9-21.2 passive (three pairs, load from the
 *    bench's own runs only).
 * So hypura's short spin is kept for a streamed plan where the plan expects less than
 * HY_OMP_PASSIVE_STALL_S of waiting per piece (a spin that long ends in sleep anyway) and fewer
 * other tasks are running than half the cpus (hy_omp_others_running); else the threads wait
 * passively. The long spin (spare
 * cores) is kept, and so is whatever the user set. Nothing set by either (HYPURA_OMP_SPIN=0):
 * passive, as libgomp's wait for streaming always was here. true: go passive. */
#define HY_OMP_PASSIVE_STALL_S 0.001
bool hy_omp_passive_wanted(const char *spin_set, const char *spincount, const char *wait_policy,
                           double stall_piece_s, long cpus, double others);
/* other tasks running now: /proc/loadavg's runnable count less this one, over 5 looks 10 ms apart
 * (the 1-minute load average lags, and counts this bench's own runs a moment ago); -1 unknown */
double hy_omp_others_running(void);
/* the 1-minute load average, -1 when unknown */
double hy_omp_loadavg(void);
/* What is in force, for the profile's printout. */
const char *hy_omp_spin_note(char *buf, size_t len);

#endif
