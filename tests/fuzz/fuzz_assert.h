/* The harnesses' invariant check: a failed one aborts, which libFuzzer (and the
 * replay driver) report as a crash with the failing condition and line. */
#ifndef FUZZ_ASSERT_H
#define FUZZ_ASSERT_H

#include <stdio.h>
#include <stdlib.h>

#define ASSERT(c)                                                                                                      \
    do {                                                                                                               \
        if (!(c)) {                                                                                                    \
            fprintf(stderr, "invariant failed: %s (line %d)\n", #c, __LINE__);                                         \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

#endif
