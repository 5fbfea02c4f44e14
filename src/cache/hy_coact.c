/* hy_coact: co-activation statistics. See hy_coact.h for the invariants.
 *
 * File format (version 1), one JSON object:
 *   {"format": "hypura-coact", "version": 1, "header_hash": "<16 hex digits>",
 *    "n_layer": L, "n_expert": E, "n_used": K,
 *    "layout": "dense" | "sparse", "row_capacity": C, "invalid": N,
 *    "layers": [ {"tokens": T, "selections": S, "freq": [E counts],
 *                 "pairs": "a b count a b count ...", "next": "a b count ..."}, ... L entries ]}
 * "pairs" and "next" are strings of space-separated decimal triples with
 * count >= 1 (zero entries are left out): a JSON array would cost jansson
 * ~40 bytes per number, hundreds of MiB for a large model's full matrices,
 * where a string costs its length. Dense layout: pairs are listed once with
 * a < b (they are symmetric); sparse layout: every row's kept entries,
 * a != b, at most C per row. "next" of layer l holds the transitions
 * l -> l+1; the last layer has none. The layout and capacity follow from
 * (L, E), so a file can only be loaded into the layout it was written from.
 *
 * The file is written directly (streamed with stdio, no JSON tree in memory)
 * and read with jansson. */
#include "cache/hy_coact.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/hy_util.h"

#define CMAX ((uint64_t)INT64_MAX)

static inline uint64_t sat_add(uint64_t a, uint64_t b) {
    uint64_t r;
    if (__builtin_add_overflow(a, b, &r) || r > CMAX) return CMAX;
    return r;
}
static inline uint64_t sat_mul(uint64_t a, uint64_t b) {
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r) || r > CMAX) return CMAX;
    return r;
}

/* An n_expert x n_expert count matrix per group (layer): dense, or rows of at
 * most `cap` (id, count) entries kept with Space-Saving. */
typedef struct {
    int groups;
    uint64_t *dense; /* groups * E * E */
    int32_t *ids;    /* groups * E * cap */
    uint64_t *cnt;   /* groups * E * cap */
    uint32_t *len;   /* groups * E */
} mat;

struct hy_coact {
    int L, E, n_used;
    uint64_t hash;
    bool dense;
    int cap;          /* row capacity: E when dense */
    uint64_t *freq;   /* L * E */
    uint64_t *tokens; /* L */
    uint64_t *sel;    /* L */
    uint64_t invalid;
    mat pairs, trans; /* trans has L-1 groups */
    /* the previous record() call, for transitions */
    int prev_layer, prev_ntok, prev_k;
    int32_t *prev, *cur;
    size_t prev_cap, cur_cap;
    uint32_t *mark; /* E: per-token dedupe stamps */
    uint32_t stamp;
};

/* ---- matrices ---- */

static int mat_init(mat *m, int groups, int E, bool dense, int cap) {
    memset(m, 0, sizeof *m);
    m->groups = groups;
    if (groups == 0) return 0;
    size_t rows = (size_t)groups * (size_t)E;
    if (dense) {
        m->dense = calloc(rows * (size_t)E, sizeof *m->dense);
        return m->dense ? 0 : -1;
    }
    m->ids = calloc(rows * (size_t)cap, sizeof *m->ids);
    m->cnt = calloc(rows * (size_t)cap, sizeof *m->cnt);
    m->len = calloc(rows, sizeof *m->len);
    return m->ids && m->cnt && m->len ? 0 : -1;
}

static void mat_free(mat *m) {
    free(m->dense);
    free(m->ids);
    free(m->cnt);
    free(m->len);
    memset(m, 0, sizeof *m);
}

static inline size_t row_index(const hy_coact *c, int g, int a) { return (size_t)g * (size_t)c->E + (size_t)a; }

static void mat_add(const hy_coact *c, mat *m, int g, int a, int b, uint64_t inc) {
    size_t r = row_index(c, g, a);
    if (m->dense) {
        uint64_t *p = &m->dense[r * (size_t)c->E + (size_t)b];
        *p = sat_add(*p, inc);
        return;
    }
    int32_t *ids = m->ids + r * (size_t)c->cap;
    uint64_t *cnt = m->cnt + r * (size_t)c->cap;
    uint32_t n = m->len[r];
    uint32_t imin = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (ids[i] == b) {
            cnt[i] = sat_add(cnt[i], inc);
            return;
        }
        if (cnt[i] < cnt[imin]) imin = i;
    }
    if (n < (uint32_t)c->cap) {
        ids[n] = b;
        cnt[n] = inc;
        m->len[r] = n + 1;
        return;
    }
    /* Space-Saving: the newcomer takes the smallest entry's place and count */
    ids[imin] = b;
    cnt[imin] = sat_add(cnt[imin], inc);
}

static uint64_t mat_get(const hy_coact *c, const mat *m, int g, int a, int b) {
    size_t r = row_index(c, g, a);
    if (m->dense) return m->dense[r * (size_t)c->E + (size_t)b];
    const int32_t *ids = m->ids + r * (size_t)c->cap;
    for (uint32_t i = 0; i < m->len[r]; i++)
        if (ids[i] == b) return m->cnt[r * (size_t)c->cap + i];
    return 0;
}

/* The non-zero entries of row (g, a) into ids/cnt (room for E); returns how many. */
static int mat_row(const hy_coact *c, const mat *m, int g, int a, int32_t *ids, uint64_t *cnt) {
    size_t r = row_index(c, g, a);
    int n = 0;
    if (m->dense) {
        const uint64_t *row = m->dense + r * (size_t)c->E;
        for (int b = 0; b < c->E; b++)
            if (row[b]) {
                ids[n] = b;
                cnt[n++] = row[b];
            }
        return n;
    }
    for (uint32_t i = 0; i < m->len[r]; i++) {
        ids[n] = m->ids[r * (size_t)c->cap + i];
        cnt[n++] = m->cnt[r * (size_t)c->cap + i];
    }
    return n;
}

/* ---- lifetime ---- */

static bool shape_ok(int n_layer, int n_expert, int n_used) {
    return n_layer >= 1 && n_layer <= HY_COACT_MAX_LAYER && n_expert >= 1 && n_expert <= HY_COACT_MAX_EXPERT &&
           (int64_t)n_layer * n_expert <= HY_COACT_MAX_ROWS && n_used >= 1 && n_used <= n_expert;
}

/* dense while both matrices fit the budget, else the largest row capacity that does */
static void choose_layout(int L, int E, bool *dense, int *cap) {
    uint64_t groups = 2 * (uint64_t)L - 1;
    if (groups * (uint64_t)E * (uint64_t)E * sizeof(uint64_t) <= HY_COACT_MATRIX_BUDGET) {
        *dense = true;
        *cap = E;
        return;
    }
    uint64_t per_entry = sizeof(int32_t) + sizeof(uint64_t);
    uint64_t c = HY_COACT_MATRIX_BUDGET / (groups * (uint64_t)E * per_entry);
    if (c < HY_COACT_MIN_ROW_CAPACITY) c = HY_COACT_MIN_ROW_CAPACITY;
    if (c > (uint64_t)E) c = (uint64_t)E;
    *dense = false;
    *cap = (int)c;
}

hy_coact *hy_coact_new(int n_layer, int n_expert, int n_used, uint64_t header_hash) {
    if (!shape_ok(n_layer, n_expert, n_used)) return NULL;
    hy_coact *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->L = n_layer;
    c->E = n_expert;
    c->n_used = n_used;
    c->hash = header_hash;
    c->prev_layer = -1;
    choose_layout(n_layer, n_expert, &c->dense, &c->cap);
    size_t le = (size_t)n_layer * (size_t)n_expert;
    c->freq = calloc(le, sizeof *c->freq);
    c->tokens = calloc((size_t)n_layer, sizeof *c->tokens);
    c->sel = calloc((size_t)n_layer, sizeof *c->sel);
    c->mark = calloc((size_t)n_expert, sizeof *c->mark);
    if (!c->freq || !c->tokens || !c->sel || !c->mark || mat_init(&c->pairs, n_layer, n_expert, c->dense, c->cap) ||
        mat_init(&c->trans, n_layer - 1, n_expert, c->dense, c->cap)) {
        hy_coact_free(c);
        return NULL;
    }
    return c;
}

void hy_coact_free(hy_coact *c) {
    if (!c) return;
    free(c->freq);
    free(c->tokens);
    free(c->sel);
    free(c->mark);
    free(c->prev);
    free(c->cur);
    mat_free(&c->pairs);
    mat_free(&c->trans);
    free(c);
}

/* ---- recording ---- */

static bool grow(int32_t **buf, size_t *cap, size_t n) {
    if (*cap >= n) return true;
    int32_t *p = realloc(*buf, n * sizeof *p);
    if (!p) return false;
    *buf = p;
    *cap = n;
    return true;
}

void hy_coact_record(hy_coact *c, int layer, const int32_t *ids, int k, int n_tokens) {
    if (!c) return;
    if (!ids || layer < 0 || layer >= c->L || k <= 0 || n_tokens <= 0) {
        if (ids && k > 0 && n_tokens > 0) c->invalid = sat_add(c->invalid, sat_mul((uint64_t)k, (uint64_t)n_tokens));
        c->prev_layer = -1;
        return;
    }
    size_t n = (size_t)k * (size_t)n_tokens;
    if (!grow(&c->cur, &c->cur_cap, n)) {
        c->prev_layer = -1; /* dropped: no memory */
        return;
    }
    const int E = c->E;
    uint64_t *fr = c->freq + (size_t)layer * (size_t)E;
    for (int t = 0; t < n_tokens; t++) {
        if (++c->stamp == 0) {
            memset(c->mark, 0, (size_t)E * sizeof *c->mark);
            c->stamp = 1;
        }
        const int32_t *in = ids + (size_t)t * (size_t)k;
        int32_t *out = c->cur + (size_t)t * (size_t)k;
        int nv = 0;
        for (int j = 0; j < k; j++) {
            int32_t e = in[j];
            if (e < 0 || e >= E || c->mark[e] == c->stamp) {
                c->invalid = sat_add(c->invalid, 1);
                continue;
            }
            c->mark[e] = c->stamp;
            out[nv++] = e;
            fr[e] = sat_add(fr[e], 1);
        }
        for (int j = nv; j < k; j++) out[j] = -1;
        c->sel[layer] = sat_add(c->sel[layer], (uint64_t)nv);
        c->tokens[layer] = sat_add(c->tokens[layer], 1);
        for (int i = 0; i < nv; i++)
            for (int j = i + 1; j < nv; j++) {
                mat_add(c, &c->pairs, layer, out[i], out[j], 1);
                mat_add(c, &c->pairs, layer, out[j], out[i], 1);
            }
    }
    if (layer > 0 && c->prev_layer == layer - 1 && c->prev_ntok == n_tokens) {
        for (int t = 0; t < n_tokens; t++) {
            const int32_t *pa = c->prev + (size_t)t * (size_t)c->prev_k;
            const int32_t *cb = c->cur + (size_t)t * (size_t)k;
            for (int i = 0; i < c->prev_k && pa[i] >= 0; i++)
                for (int j = 0; j < k && cb[j] >= 0; j++) mat_add(c, &c->trans, layer - 1, pa[i], cb[j], 1);
        }
    }
    int32_t *tb = c->prev;
    size_t tc = c->prev_cap;
    c->prev = c->cur;
    c->prev_cap = c->cur_cap;
    c->cur = tb;
    c->cur_cap = tc;
    c->prev_layer = layer;
    c->prev_ntok = n_tokens;
    c->prev_k = k;
}

/* ---- queries ---- */

double hy_coact_freq(const hy_coact *c, int layer, int expert) {
    if (!c || layer < 0 || layer >= c->L || expert < 0 || expert >= c->E || c->sel[layer] == 0) return 0.0;
    return (double)c->freq[(size_t)layer * (size_t)c->E + (size_t)expert] / (double)c->sel[layer];
}

uint64_t hy_coact_tokens(const hy_coact *c) { return c ? c->tokens[0] : 0; }

int hy_coact_predict_next(const hy_coact *c, int layer, const int32_t *ids, int k, int32_t *out, int m) {
    if (!c || !out || m <= 0 || layer < 0 || layer >= c->L - 1 || (k > 0 && !ids)) return 0;
    const int E = c->E;
    /* score[b] = sum over the given experts a of next[layer][a][b]; UINT64_MAX marks "already chosen" */
    uint64_t stack_score[1024];
    int32_t stack_rid[1024];
    uint64_t stack_rcnt[1024];
    uint64_t *score = stack_score, *rcnt = stack_rcnt;
    int32_t *rid = stack_rid;
    void *heap = NULL;
    if (E > 1024) {
        heap = malloc((size_t)E * (2 * sizeof(uint64_t) + sizeof(int32_t)));
        if (!heap) return 0;
        score = heap;
        rcnt = score + E;
        rid = (int32_t *)(rcnt + E);
    }
    memset(score, 0, (size_t)E * sizeof *score);
    for (int i = 0; i < k; i++) {
        int32_t a = ids[i];
        if (a < 0 || a >= E) continue;
        bool dup = false;
        for (int j = 0; j < i && !dup; j++) dup = ids[j] == a;
        if (dup) continue;
        int n = mat_row(c, &c->trans, layer, a, rid, rcnt);
        for (int j = 0; j < n; j++) score[rid[j]] = sat_add(score[rid[j]], rcnt[j]);
    }
    const uint64_t *fr = c->freq + (size_t)(layer + 1) * (size_t)E;
    int got = 0;
    while (got < m) {
        int best = -1;
        for (int b = 0; b < E; b++) {
            if (score[b] == UINT64_MAX || (score[b] == 0 && fr[b] == 0)) continue;
            if (best < 0 || score[b] > score[best] || (score[b] == score[best] && fr[b] > fr[best])) best = b;
        }
        if (best < 0) break;
        out[got++] = best;
        score[best] = UINT64_MAX;
    }
    free(heap);
    return got;
}

int hy_coact_permutation(const hy_coact *c, int layer, int32_t *perm) {
    if (!c || !perm || layer < 0 || layer >= c->L) return -1;
    const int E = c->E;
    bool *placed = calloc((size_t)E, sizeof *placed);
    int32_t *rid = malloc((size_t)E * sizeof *rid);
    uint64_t *rcnt = malloc((size_t)E * sizeof *rcnt);
    if (!placed || !rid || !rcnt) {
        free(placed);
        free(rid);
        free(rcnt);
        return -1;
    }
    const uint64_t *fr = c->freq + (size_t)layer * (size_t)E;
    int last = -1;
    for (int pos = 0; pos < E; pos++) {
        int best = -1;
        uint64_t best_cnt = 0;
        if (last >= 0) {
            int n = mat_row(c, &c->pairs, layer, last, rid, rcnt);
            for (int j = 0; j < n; j++) {
                int b = rid[j];
                if (placed[b] || rcnt[j] == 0) continue;
                if (best < 0 || rcnt[j] > best_cnt ||
                    (rcnt[j] == best_cnt && (fr[b] > fr[best] || (fr[b] == fr[best] && b < best)))) {
                    best = b;
                    best_cnt = rcnt[j];
                }
            }
        }
        if (best < 0)
            for (int b = 0; b < E; b++)
                if (!placed[b] && (best < 0 || fr[b] > fr[best])) best = b;
        perm[pos] = best;
        placed[best] = true;
        last = best;
    }
    free(placed);
    free(rid);
    free(rcnt);
    return 0;
}

int hy_coact_merge(hy_coact *a, const hy_coact *b) {
    if (!a || !b || a->L != b->L || a->E != b->E) return -1;
    const int L = a->L, E = a->E;
    size_t le = (size_t)L * (size_t)E;
    for (size_t i = 0; i < le; i++) a->freq[i] = sat_add(a->freq[i], b->freq[i]);
    for (int l = 0; l < L; l++) {
        a->tokens[l] = sat_add(a->tokens[l], b->tokens[l]);
        a->sel[l] = sat_add(a->sel[l], b->sel[l]);
    }
    a->invalid = sat_add(a->invalid, b->invalid);
    const mat *src[2] = {&b->pairs, &b->trans};
    mat *dst[2] = {&a->pairs, &a->trans};
    for (int w = 0; w < 2; w++) {
        if (dst[w]->dense) {
            size_t n = (size_t)dst[w]->groups * (size_t)E * (size_t)E;
            for (size_t i = 0; i < n; i++) dst[w]->dense[i] = sat_add(dst[w]->dense[i], src[w]->dense[i]);
            continue;
        }
        for (int g = 0; g < dst[w]->groups; g++)
            for (int x = 0; x < E; x++) {
                size_t r = row_index(b, g, x);
                uint32_t n = src[w]->len[r]; /* a snapshot: merging a into itself only updates counts */
                for (uint32_t i = 0; i < n; i++)
                    mat_add(a, dst[w], g, x, src[w]->ids[r * (size_t)b->cap + i], src[w]->cnt[r * (size_t)b->cap + i]);
            }
    }
    return 0;
}

/* ---- persistence ---- */

int hy_coact_default_path(uint64_t header_hash, char *buf, size_t len) {
    char dir[4096];
    if (hy_data_dir(dir, sizeof dir)) return -1;
    size_t dl = strlen(dir);
    if (dl + sizeof "/coact" > sizeof dir) return -1;
    memcpy(dir + dl, "/coact", sizeof "/coact");
    if (hy_mkdirs(dir)) return -1;
    int n = snprintf(buf, len, "%s/%016" PRIx64 ".json", dir, header_hash);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

static void write_triples(FILE *f, const hy_coact *c, const mat *m, int g, bool upper_only, int32_t *rid,
                          uint64_t *rcnt) {
    bool first = true;
    for (int a = 0; a < c->E; a++) {
        int n = mat_row(c, m, g, a, rid, rcnt);
        for (int j = 0; j < n; j++) {
            if (upper_only && rid[j] <= a) continue;
            fprintf(f, "%s%d %d %" PRIu64, first ? "" : " ", a, rid[j], rcnt[j]);
            first = false;
        }
    }
}

int hy_coact_save(const hy_coact *c, const char *path, char *err, size_t errlen) {
    if (!c || !path) return hy_fail(err, errlen, "no statistics or no path");
    char tmp[4200];
    int tn = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (tn < 0 || (size_t)tn >= sizeof tmp) return hy_fail(err, errlen, "%s: path too long", path);
    int32_t *rid = malloc((size_t)c->E * sizeof *rid);
    uint64_t *rcnt = malloc((size_t)c->E * sizeof *rcnt);
    if (!rid || !rcnt) {
        free(rid);
        free(rcnt);
        return hy_fail(err, errlen, "out of memory");
    }
    unlink(tmp); /* a stale one from a crashed run of the same pid; never follow a link there */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        int e = errno;
        if (fd >= 0) close(fd);
        free(rid);
        free(rcnt);
        return hy_fail(err, errlen, "cannot write %s: %s", tmp, strerror(e));
    }
    fprintf(f,
            "{\"format\":\"hypura-coact\",\"version\":%d,\"header_hash\":\"%016" PRIx64 "\",\"n_layer\":%d,"
            "\"n_expert\":%d,\"n_used\":%d,\"layout\":\"%s\",\"row_capacity\":%d,\"invalid\":%" PRIu64
            ",\n\"layers\":[",
            HY_COACT_VERSION, c->hash, c->L, c->E, c->n_used, c->dense ? "dense" : "sparse", c->cap, c->invalid);
    for (int l = 0; l < c->L; l++) {
        fprintf(f, "%s\n{\"tokens\":%" PRIu64 ",\"selections\":%" PRIu64 ",\"freq\":[", l ? "," : "", c->tokens[l],
                c->sel[l]);
        for (int e = 0; e < c->E; e++)
            fprintf(f, "%s%" PRIu64, e ? "," : "", c->freq[(size_t)l * (size_t)c->E + (size_t)e]);
        fputs("],\n \"pairs\":\"", f);
        write_triples(f, c, &c->pairs, l, c->dense, rid, rcnt);
        fputs("\"", f);
        if (l < c->L - 1) {
            fputs(",\n \"next\":\"", f);
            write_triples(f, c, &c->trans, l, false, rid, rcnt);
            fputs("\"", f);
        }
        fputs("}", f);
    }
    fputs("]}\n", f);
    free(rid);
    free(rcnt);
    int werr = ferror(f) ? (errno ? errno : EIO) : 0;
    if (fflush(f) != 0 && !werr) werr = errno;
    if (!werr && fsync(fileno(f)) != 0) werr = errno;
    if (fclose(f) != 0 && !werr) werr = errno;
    if (werr) {
        unlink(tmp);
        return hy_fail(err, errlen, "writing %s failed: %s", tmp, strerror(werr));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return hy_fail(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(e));
    }
    return 0;
}

/* a count: a JSON integer >= 0 */
static bool get_count(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v)) return false;
    json_int_t x = json_integer_value(v);
    if (x < 0) return false;
    *out = (uint64_t)x;
    return true;
}

/* The next space-separated decimal count of [*p, end): 1 and advances, 0 at the end, -1 on anything else
 * (a sign, another character, a value over INT64_MAX). */
static int parse_count(const char **p, const char *end, uint64_t *out) {
    const char *s = *p;
    while (s < end && *s == ' ') s++;
    if (s == end) {
        *p = s;
        return 0;
    }
    if (*s < '0' || *s > '9') return -1;
    uint64_t v = 0;
    while (s < end && *s >= '0' && *s <= '9') {
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (CMAX - d) / 10) return -1;
        v = v * 10 + d;
        s++;
    }
    if (s < end && *s != ' ') return -1;
    *p = s;
    *out = v;
    return 1;
}

static bool get_int_field(const json_t *o, const char *key, int64_t lo, int64_t hi, int64_t *out) {
    const json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) return false;
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) return false;
    *out = x;
    return true;
}

#define BAD(...)                                                                                                       \
    do {                                                                                                               \
        char why_[HY_ERRLEN];                                                                                          \
        snprintf(why_, sizeof why_, __VA_ARGS__);                                                                      \
        hy_fail(err, errlen, "%s: %s", path, why_);                                                                    \
        goto fail;                                                                                                     \
    } while (0)

int hy_coact_load(const char *path, uint64_t header_hash, int n_layer, int n_expert, hy_coact **out, char *err,
                  size_t errlen) {
    *out = NULL;
    json_t *root = NULL;
    hy_coact *c = NULL;
    uint64_t *rowsum = NULL;
    if (!path) return hy_fail(err, errlen, "no path");
    if (!shape_ok(n_layer, n_expert, 1))
        return hy_fail(err, errlen, "%s: unsupported shape %d layers x %d experts", path, n_layer, n_expert);
    struct stat st;
    if (stat(path, &st) != 0) return hy_fail(err, errlen, "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return hy_fail(err, errlen, "%s: not a regular file", path);
    if ((uint64_t)st.st_size > HY_COACT_MAX_FILE)
        return hy_fail(err, errlen, "%s: file too large (%lld bytes, at most %llu)", path, (long long)st.st_size,
                       (unsigned long long)HY_COACT_MAX_FILE);
    json_error_t je;
    root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) BAD("invalid JSON (line %d: %s)", je.line, je.text);
    if (!json_is_object(root)) BAD("not a JSON object");
    const char *fmt = json_string_value(json_object_get(root, "format"));
    if (!fmt || strcmp(fmt, "hypura-coact") != 0) BAD("not a hypura co-activation file (format)");
    int64_t ver, L, E, K;
    if (!get_int_field(root, "version", INT32_MIN, INT32_MAX, &ver)) BAD("no integer version");
    if (ver != HY_COACT_VERSION)
        BAD("unsupported version %lld (this build reads %d)", (long long)ver, HY_COACT_VERSION);
    const char *hs = json_string_value(json_object_get(root, "header_hash"));
    if (!hs || strlen(hs) != 16 || strspn(hs, "0123456789abcdefABCDEF") != 16) BAD("header_hash is not 16 hex digits");
    uint64_t h = strtoull(hs, NULL, 16);
    if (h != header_hash)
        BAD("statistics of another model (header hash %016" PRIx64 ", expected %016" PRIx64 ")", h, header_hash);
    if (!get_int_field(root, "n_layer", 1, HY_COACT_MAX_LAYER, &L) || L != n_layer)
        BAD("n_layer does not match the model's %d", n_layer);
    if (!get_int_field(root, "n_expert", 1, HY_COACT_MAX_EXPERT, &E) || E != n_expert)
        BAD("n_expert does not match the model's %d", n_expert);
    if (!get_int_field(root, "n_used", 1, E, &K)) BAD("n_used missing or outside 1..%lld", (long long)E);
    c = hy_coact_new(n_layer, n_expert, (int)K, header_hash);
    if (!c) BAD("out of memory");
    const char *layout = json_string_value(json_object_get(root, "layout"));
    int64_t cap;
    if (!layout || strcmp(layout, c->dense ? "dense" : "sparse") != 0 ||
        !get_int_field(root, "row_capacity", 1, E, &cap) || cap != c->cap)
        BAD("layout/row_capacity differ from this build's (%s, %d)", c->dense ? "dense" : "sparse", c->cap);
    if (!get_count(json_object_get(root, "invalid"), &c->invalid)) BAD("invalid: not a count");
    const json_t *layers = json_object_get(root, "layers");
    if (!json_is_array(layers) || json_array_size(layers) != (size_t)L)
        BAD("layers is not an array of %lld entries", (long long)L);

    /* pass 1: tokens, selections, frequencies */
    for (int l = 0; l < L; l++) {
        const json_t *lo = json_array_get(layers, (size_t)l);
        if (!json_is_object(lo)) BAD("layer %d is not an object", l);
        if (!get_count(json_object_get(lo, "tokens"), &c->tokens[l])) BAD("layer %d: tokens is not a count", l);
        if (!get_count(json_object_get(lo, "selections"), &c->sel[l])) BAD("layer %d: selections is not a count", l);
        const json_t *fa = json_object_get(lo, "freq");
        if (!json_is_array(fa) || json_array_size(fa) != (size_t)E)
            BAD("layer %d: freq is not an array of %lld counts", l, (long long)E);
        uint64_t sum = 0;
        for (int e = 0; e < E; e++) {
            uint64_t v;
            if (!get_count(json_array_get(fa, (size_t)e), &v)) BAD("layer %d: freq[%d] is not a count", l, e);
            if (v > c->tokens[l])
                BAD("layer %d: expert %d selected %" PRIu64 " times in %" PRIu64 " tokens", l, e, v, c->tokens[l]);
            c->freq[(size_t)l * (size_t)E + (size_t)e] = v;
            sum = sat_add(sum, v);
        }
        if (sum != c->sel[l]) BAD("layer %d: frequencies sum to %" PRIu64 ", selections %" PRIu64, l, sum, c->sel[l]);
    }
    /* pass 2: pairs and transitions */
    rowsum = calloc((size_t)E, sizeof *rowsum);
    if (!rowsum) BAD("out of memory");
    for (int l = 0; l < L; l++) {
        const json_t *lo = json_array_get(layers, (size_t)l);
        for (int w = 0; w < 2; w++) {
            const char *key = w == 0 ? "pairs" : "next";
            mat *m = w == 0 ? &c->pairs : &c->trans;
            const json_t *arr = json_object_get(lo, key);
            if (w == 1 && l == L - 1) {
                if (arr && !(json_is_string(arr) && json_string_length(arr) == 0))
                    BAD("last layer %d has transitions", l);
                continue;
            }
            if (!json_is_string(arr)) BAD("layer %d: %s is not a string of triples", l, key);
            /* no row can hold more than cap (dense: E) partners */
            uint64_t max_entries = (uint64_t)E * (uint64_t)c->cap;
            if (w == 0 && c->dense) max_entries = (uint64_t)E * (uint64_t)(E - 1) / 2;
            /* a triple is at most 3 x 19 digits + 3 spaces: longer strings are refused unread */
            if (json_string_length(arr) > (max_entries + 1) * 64)
                BAD("layer %d: %s is too long for at most %" PRIu64 " triples", l, key, max_entries);
            const char *sp = json_string_value(arr), *end = sp + json_string_length(arr);
            const uint64_t *fa = c->freq + (size_t)l * (size_t)E;
            const uint64_t *fb = w == 0 ? fa : c->freq + (size_t)(l + 1) * (size_t)E;
            memset(rowsum, 0, (size_t)E * sizeof *rowsum);
            for (uint64_t i = 0;; i++) {
                uint64_t a, b, v;
                int got = parse_count(&sp, end, &a);
                if (got == 0) break; /* end of the string */
                if (got < 0 || parse_count(&sp, end, &b) <= 0 || parse_count(&sp, end, &v) <= 0)
                    BAD("layer %d: %s[%" PRIu64 "]: not three counts", l, key, i);
                if (i >= max_entries) BAD("layer %d: %s has more than %" PRIu64 " triples", l, key, max_entries);
                if (a >= (uint64_t)E || b >= (uint64_t)E)
                    BAD("layer %d: %s[%" PRIu64 "]: expert out of range [0, %lld)", l, key, i, (long long)E);
                if (v == 0) BAD("layer %d: %s[%" PRIu64 "]: zero count", l, key, i);
                if (w == 0 && (c->dense ? a >= b : a == b))
                    BAD("layer %d: pairs[%" PRIu64 "]: bad pair %d,%d", l, i, (int)a, (int)b);
                if (mat_get(c, m, l, (int)a, (int)b) != 0) BAD("layer %d: %s[%" PRIu64 "]: duplicate entry", l, key, i);
                if (!m->dense && m->len[row_index(c, l, (int)a)] >= (uint32_t)c->cap)
                    BAD("layer %d: %s: row %d has more than %d entries", l, key, (int)a, c->cap);
                if (c->dense && (v > fa[a] || v > fb[b]))
                    BAD("layer %d: %s[%" PRIu64 "]: count %" PRIu64 " exceeds the experts' frequencies", l, key, i, v);
                mat_add(c, m, l, (int)a, (int)b, v);
                rowsum[a] = sat_add(rowsum[a], v);
                if (w == 0 && c->dense) {
                    mat_add(c, m, l, (int)b, (int)a, v);
                    rowsum[b] = sat_add(rowsum[b], v);
                }
            }
            uint64_t per = w == 0 ? (uint64_t)(E - 1) : (uint64_t)E;
            for (int a = 0; a < E; a++)
                if (rowsum[a] > sat_mul(fa[a], per))
                    BAD("layer %d: %s of expert %d sum to %" PRIu64 ", more than its %" PRIu64 " selections allow", l,
                        key, a, rowsum[a], fa[a]);
        }
    }
    free(rowsum);
    json_decref(root);
    *out = c;
    return 0;
fail:
    free(rowsum);
    json_decref(root);
    hy_coact_free(c);
    return -1;
}
