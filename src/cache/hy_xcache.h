/* hy_xcache: which expert slices stay resident between tokens — a pure policy
 * over keys (one per layer x expert), their sizes and a byte capacity. It does
 * no I/O and touches no memory: the streaming layer asks it for victims and
 * releases their pages itself, so the policy can be tested and compared on
 * traces alone.
 *
 * Policies:
 *  - HY_XC_LRU: evict the least recently used slice.
 *  - HY_XC_LFU (default): evict the slice with the lowest exponentially
 *    decayed use count (half-life in ticks, a tick being a token), ties to the
 *    least recently used. Real MoE routers are skewed: a few experts per layer
 *    take most tokens. LRU lets one burst of cold experts flush the hot ones;
 *    the decayed count keeps them, while the decay still lets the set follow a
 *    change of topic. Speculatively prefetched slices enter with no count, so a
 *    wrong guess is the first thing evicted.
 *
 * Invariants: used <= capacity after make_room succeeds; pinned slices (needed
 * by the layer being computed) are never chosen; every victim returned is no
 * longer resident. */
#ifndef HY_XCACHE_H
#define HY_XCACHE_H

#include <stdbool.h>
#include <stdint.h>

typedef enum { HY_XC_LFU = 0, HY_XC_LRU = 1 } hy_xc_policy;

typedef struct hy_xcache hy_xcache;

typedef struct {
    uint64_t hits, misses, evictions, prefetches, prefetch_hits;
    uint64_t prefetch_wasted; /* prefetched slices evicted before any use: bytes read for nothing */
    uint64_t used, capacity;
} hy_xcache_stats;

hy_xcache *hy_xcache_new(int n_keys, const uint64_t *sizes, uint64_t capacity, hy_xc_policy policy,
                         double half_life_ticks);
void hy_xcache_free(hy_xcache *c);

bool hy_xcache_resident(const hy_xcache *c, int key);
/* A use of key at tick; counts a hit or a miss (prefetched slices count as prefetch hits). */
bool hy_xcache_access(hy_xcache *c, int key, uint64_t tick);
/* Start the score of key at `count` uses (warm start from persisted statistics). */
void hy_xcache_seed(hy_xcache *c, int key, double count, uint64_t tick);
/* Choose victims (resident, unpinned, lowest score) until `need` more bytes fit.
 * Writes up to max victims (already evicted) and returns how many; *fits says
 * whether the bytes now fit (false: nothing evictable left, or max reached). */
int  hy_xcache_make_room(hy_xcache *c, uint64_t need, int *victims, int max, bool *fits);
/* Would key fit after evicting only slices scoring below `score_floor`? (for prefetch) */
bool hy_xcache_can_take(const hy_xcache *c, int key, double score_floor, uint64_t tick);
void hy_xcache_insert(hy_xcache *c, int key, bool prefetched, uint64_t tick);
void hy_xcache_remove(hy_xcache *c, int key);
void hy_xcache_pin(hy_xcache *c, int key, bool pinned);
double hy_xcache_score(const hy_xcache *c, int key, uint64_t tick);
uint64_t hy_xcache_size(const hy_xcache *c, int key); /* the bytes key is charged */
void hy_xcache_get_stats(const hy_xcache *c, hy_xcache_stats *s);
const char *hy_xcache_policy_name(hy_xc_policy p);

#endif
