#include "cache/hy_xcache.h"

#include <math.h>
#include <stdlib.h>

struct slot {
    uint64_t size;
    double count;        /* decayed uses, as of tick `at` */
    uint64_t at, last;
    bool resident, pinned, prefetched;
};

struct hy_xcache {
    int n;
    struct slot *s;
    hy_xc_policy policy;
    double decay_per_tick; /* ln 2 / half-life */
    hy_xcache_stats st;
};

hy_xcache *hy_xcache_new(int n_keys, const uint64_t *sizes, uint64_t capacity, hy_xc_policy policy,
                         double half_life_ticks) {
    if (n_keys <= 0) return NULL;
    hy_xcache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->s = calloc((size_t)n_keys, sizeof *c->s);
    if (!c->s) {
        free(c);
        return NULL;
    }
    c->n = n_keys;
    for (int i = 0; i < n_keys; i++) c->s[i].size = sizes[i];
    c->policy = policy;
    c->decay_per_tick = half_life_ticks > 0 ? log(2.0) / half_life_ticks : 0;
    c->st.capacity = capacity;
    return c;
}

void hy_xcache_free(hy_xcache *c) {
    if (!c) return;
    free(c->s);
    free(c);
}

const char *hy_xcache_policy_name(hy_xc_policy p) { return p == HY_XC_LRU ? "LRU" : "LFU (decayed)"; }

static bool valid(const hy_xcache *c, int key) { return c && key >= 0 && key < c->n; }

double hy_xcache_score(const hy_xcache *c, int key, uint64_t tick) {
    if (!valid(c, key)) return 0;
    const struct slot *s = &c->s[key];
    if (c->policy == HY_XC_LRU) return (double)s->last;
    double dt = tick > s->at ? (double)(tick - s->at) : 0;
    return s->count * exp(-c->decay_per_tick * dt);
}

bool hy_xcache_resident(const hy_xcache *c, int key) { return valid(c, key) && c->s[key].resident; }


bool hy_xcache_access(hy_xcache *c, int key, uint64_t tick) {
    if (!valid(c, key)) return false;
    struct slot *s = &c->s[key];
    bool hit = s->resident;
    if (hit) {
        c->st.hits++;
        if (s->prefetched) c->st.prefetch_hits++;
    } else {
        c->st.misses++;
    }
    s->prefetched = false;
    if (c->policy == HY_XC_LFU) {
        s->count = hy_xcache_score(c, key, tick) + 1.0;
        s->at = tick;
    }
    s->last = tick + 1; /* +1: 0 means never used */
    return hit;
}

void hy_xcache_seed(hy_xcache *c, int key, double count, uint64_t tick) {
    if (!valid(c, key) || count < 0 || c->policy != HY_XC_LFU) return;
    c->s[key].count = hy_xcache_score(c, key, tick) + count;
    c->s[key].at = tick;
}

/* lower is evicted first; LFU ties go to the least recently used */
static bool worse(const hy_xcache *c, int a, int b, uint64_t tick) {
    double sa = hy_xcache_score(c, a, tick), sb = hy_xcache_score(c, b, tick);
    if (sa != sb) return sa < sb;
    return c->s[a].last < c->s[b].last;
}

static uint64_t now_tick(const hy_xcache *c) {
    uint64_t t = 0;
    for (int i = 0; i < c->n; i++) {
        if (c->s[i].at > t) t = c->s[i].at;
        if (c->s[i].last > t) t = c->s[i].last;
    }
    return t;
}

int hy_xcache_make_room(hy_xcache *c, uint64_t need, int *victims, int max, bool *fits) {
    *fits = false;
    if (!c) return 0;
    int nv = 0;
    uint64_t tick = now_tick(c);
    while (c->st.used + need > c->st.capacity) {
        int v = -1;
        for (int i = 0; i < c->n; i++) {
            const struct slot *s = &c->s[i];
            if (!s->resident || s->pinned) continue;
            if (v < 0 || worse(c, i, v, tick)) v = i;
        }
        if (v < 0 || nv >= max) return nv;
        if (c->s[v].prefetched) c->st.prefetch_wasted++;
        hy_xcache_remove(c, v);
        c->st.evictions++;
        victims[nv++] = v;
    }
    *fits = true;
    return nv;
}

bool hy_xcache_can_take(const hy_xcache *c, int key, double score_floor, uint64_t tick) {
    if (!valid(c, key) || c->s[key].resident) return false;
    uint64_t free_bytes = c->st.capacity > c->st.used ? c->st.capacity - c->st.used : 0;
    for (int i = 0; i < c->n && free_bytes < c->s[key].size; i++) {
        const struct slot *s = &c->s[i];
        if (s->resident && !s->pinned && hy_xcache_score(c, i, tick) < score_floor) free_bytes += s->size;
    }
    return free_bytes >= c->s[key].size;
}

void hy_xcache_insert(hy_xcache *c, int key, bool prefetched, uint64_t tick) {
    if (!valid(c, key) || c->s[key].resident) return;
    struct slot *s = &c->s[key];
    s->resident = true;
    s->prefetched = prefetched;
    if (prefetched) c->st.prefetches++;
    if (s->last == 0) s->last = tick;
    c->st.used += s->size;
}

void hy_xcache_remove(hy_xcache *c, int key) {
    if (!valid(c, key) || !c->s[key].resident) return;
    c->s[key].resident = false;
    c->s[key].pinned = false;
    c->s[key].prefetched = false;
    c->st.used -= c->s[key].size;
}

void hy_xcache_pin(hy_xcache *c, int key, bool pinned) {
    if (valid(c, key)) c->s[key].pinned = pinned;
}

uint64_t hy_xcache_size(const hy_xcache *c, int key) { return valid(c, key) ? c->s[key].size : 0; }

void hy_xcache_get_stats(const hy_xcache *c, hy_xcache_stats *s) { *s = c->st; }
