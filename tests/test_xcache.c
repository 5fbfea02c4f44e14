/* Expert-cache policy on synthetic routing traces: invariants, and the decayed
 * LFU beating plain LRU on skewed routing (and not losing badly on uniform). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <stdlib.h>

#include "cache/hy_policy.h"
#include "cache/hy_xcache.h"

#include "test_check.h"

static uint64_t rng = 88172645463325252ull;
static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (rng >> 11) * (1.0 / 9007199254740992.0);
}

enum { L = 8, E = 8, K = 2 };

/* top-K choice per layer: with skew, experts 0 and 1 (hot) take `hot` of the
 * probability mass; bursts of uniform routing every 50 tokens (topic change) */
static void route(double hot, int tok, int *ids) {
    bool burst = (tok / 10) % 5 == 4;
    int a, b;
    do {
        double r = urand();
        if (!burst && r < hot) a = (int)(urand() * 2);
        else a = (int)(urand() * E);
        r = urand();
        if (!burst && r < hot) b = (int)(urand() * 2);
        else b = (int)(urand() * E);
    } while (a == b);
    ids[0] = a, ids[1] = b;
}

static double run(hy_xc_policy pol, double hot, int tokens, uint64_t *max_used) {
    uint64_t sizes[L * E];
    for (int i = 0; i < L * E; i++) sizes[i] = 100;
    hy_xcache *c = hy_xcache_new(L * E, sizes, 100 * L * 3, pol, 32); /* 3 of 8 experts per layer fit */
    rng = 88172645463325252ull;
    *max_used = 0;
    for (int t = 0; t < tokens; t++) {
        for (int l = 0; l < L; l++) {
            int ids[K];
            route(hot, t, ids);
            for (int j = 0; j < K; j++) hy_xcache_pin(c, l * E + ids[j], true);
            for (int j = 0; j < K; j++) {
                int key = l * E + ids[j];
                if (!hy_xcache_access(c, key, (uint64_t)t)) {
                    int v[64];
                    bool fits;
                    int n = hy_xcache_make_room(c, sizes[key], v, 64, &fits);
                    CHECK(fits, "no room at token %d", t);
                    for (int i = 0; i < n; i++) CHECK(v[i] != l * E + ids[0] && v[i] != l * E + ids[1], "evicted a pinned slice");
                    hy_xcache_insert(c, key, false, (uint64_t)t);
                }
            }
            hy_xcache_stats st;
            hy_xcache_get_stats(c, &st);
            if (st.used > *max_used) *max_used = st.used;
            for (int j = 0; j < K; j++) hy_xcache_pin(c, l * E + ids[j], false);
        }
    }
    hy_xcache_stats st;
    hy_xcache_get_stats(c, &st);
    hy_xcache_free(c);
    return (double)st.hits / (double)(st.hits + st.misses);
}

int main(void) {
    uint64_t mu;
    double lfu_skew = run(HY_XC_LFU, 0.8, 2000, &mu);
    CHECK(mu <= 100 * L * 3, "capacity exceeded: %llu", (unsigned long long)mu);
    double lru_skew = run(HY_XC_LRU, 0.8, 2000, &mu);
    double lfu_uni = run(HY_XC_LFU, 0.0, 2000, &mu);
    double lru_uni = run(HY_XC_LRU, 0.0, 2000, &mu);
    printf("hit rate, skewed routing: LFU %.3f  LRU %.3f\n", lfu_skew, lru_skew);
    printf("hit rate, uniform routing: LFU %.3f  LRU %.3f (capacity 3/8 of the experts)\n", lfu_uni, lru_uni);
    CHECK(lfu_skew > lru_skew + 0.03, "LFU %.3f does not beat LRU %.3f on skewed routing", lfu_skew, lru_skew);
    CHECK(lfu_uni > lru_uni - 0.05, "LFU %.3f far below LRU %.3f on uniform routing", lfu_uni, lru_uni);

    /* prefetched slices are evicted before used ones, and a prefetch hit counts */
    uint64_t sizes[4] = {10, 10, 10, 10};
    hy_xcache *c = hy_xcache_new(4, sizes, 20, HY_XC_LFU, 16);
    hy_xcache_access(c, 0, 1);
    hy_xcache_insert(c, 0, false, 1);
    hy_xcache_insert(c, 1, true, 1);
    int v[4];
    bool fits;
    CHECK(hy_xcache_make_room(c, 10, v, 4, &fits) == 1 && v[0] == 1 && fits, "the unused prefetch goes first");
    hy_xcache_insert(c, 2, true, 2);
    CHECK(hy_xcache_access(c, 2, 3), "prefetched slice is a hit");
    hy_xcache_stats st;
    hy_xcache_get_stats(c, &st);
    CHECK(st.prefetch_hits == 1 && st.prefetches == 2 && st.evictions == 1, "stats %llu %llu %llu",
          (unsigned long long)st.prefetch_hits, (unsigned long long)st.prefetches, (unsigned long long)st.evictions);
    hy_xcache_pin(c, 0, true);
    hy_xcache_pin(c, 2, true);
    CHECK(hy_xcache_make_room(c, 10, v, 4, &fits) == 0 && !fits, "everything pinned: no room, no eviction");
    CHECK(hy_xcache_resident(c, 0) && hy_xcache_resident(c, 2), "pinned slices stay");
    CHECK(st.prefetch_wasted == 1, "the evicted unused prefetch counts as wasted: %llu",
          (unsigned long long)st.prefetch_wasted);
    hy_xcache_free(c);

    /* the automatic policy: the default until a record can tell, then the one that hit more;
     * a record survives a save and load, and another model's record reads as empty */
    char why[256];
    hy_policy_record r = {0};
    CHECK(hy_policy_choose(&r, why, sizeof why) == HY_XC_LFU && strstr(why, "default"), "empty record: %s", why);
    r.accesses = HY_POLICY_MIN_ACCESSES - 1, r.hits[HY_XC_LFU] = 10, r.hits[HY_XC_LRU] = 900;
    CHECK(hy_policy_choose(&r, why, sizeof why) == HY_XC_LFU && strstr(why, "too few"), "few accesses: %s", why);
    r.accesses = 10000, r.hits[HY_XC_LFU] = 6000, r.hits[HY_XC_LRU] = 7000;
    CHECK(hy_policy_choose(&r, why, sizeof why) == HY_XC_LRU && strstr(why, "70.0%"), "LRU measured better: %s", why);
    r.hits[HY_XC_LFU] = 7001;
    CHECK(hy_policy_choose(&r, why, sizeof why) == HY_XC_LFU, "LFU measured better: %s", why);
    char path[] = "/tmp/hy_policy_testXXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "temp file");
    if (fd >= 0) {
        close(fd);
        char e[256];
        hy_policy_record back;
        CHECK(hy_policy_save(path, 0x1234, &r, e, sizeof e) == 0, "save: %s", e);
        CHECK(hy_policy_load(path, 0x1234, &back) == 0 && back.accesses == r.accesses &&
                  back.hits[0] == r.hits[0] && back.hits[1] == r.hits[1],
              "the record comes back");
        CHECK(hy_policy_load(path, 0x9999, &back) != 0 && back.accesses == 0, "another model's record is empty");
        FILE *f = fopen(path, "w");
        if (f) {
            fputs("{\"header_hash\": \"0000000000001234\", \"accesses\": 5, \"lfu_hits\": 9, \"lru_hits\": 1}", f);
            fclose(f);
        }
        CHECK(hy_policy_load(path, 0x1234, &back) != 0, "more hits than accesses is malformed");
        unlink(path);
    }
    if (failures) return 1;
    printf("xcache: all checks passed\n");
    return 0;
}
