/* The negative control of the leak tests (tests/scripts/leak_control.sh): a program
 * built like hypura (ASan+UBSan) that, as asked, exits cleanly, leaks one allocation,
 * overflows a signed int (UBSan), or ends through _exit() (skipping the exit-time leak
 * check). The checks must pass the first and fail the others, else they could not fail
 * at all. scripts/test-sanitize.sh also uses it to check that reports are collected. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *volatile keep; /* so the compiler keeps the allocation */

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    char *p = malloc(4096);
    if (!p) return 1;
    memset(p, 1, 4096);
    keep = p;
    if (!strcmp(mode, "leak")) {
        keep = NULL; /* the last pointer to it is gone */
        return 0;
    }
    free(p);
    keep = NULL;
    if (!strcmp(mode, "noexit")) _exit(0);
    if (!strcmp(mode, "ubsan")) {
        volatile int big = 0x7fffffff; /* volatile: the overflow happens at run time */
        int r = big + argc;            /* signed overflow: UBSan reports it */
        return r == 0;
    }
    if (strcmp(mode, "clean")) {
        fprintf(stderr, "usage: leak_control clean|leak|ubsan|noexit\n");
        return 2;
    }
    return 0;
}
