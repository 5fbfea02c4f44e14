/* test_coact: src/cache/hy_coact (co-activation statistics) on synthetic traces.
 *
 * usage: test_coact GROUP WORKDIR, GROUP one of
 *   record     frequencies, invalid ids, pairs/transitions only across consecutive calls of one ubatch
 *   predict    a planted transition pattern is predicted; frequency fallback; edge cases
 *   persist    save/load round trip is identical (dense and sparse layouts); merge; default path
 *   corrupt    truncated, bad JSON, wrong version/hash/shape, negative, inconsistent, huge: all rejected
 *   permute    a valid, deterministic permutation that puts a planted co-firing pair side by side
 *   large      1024 and 4096 experts stay within the memory budget and still work */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/hy_coact.h"
#include "util/hy_util.h"

#include "test_check.h"

static const char *work;

static uint64_t rng = 0x12345678;
static uint32_t rnd(uint32_t n) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

/* k distinct random experts of E into out */
static void pick(int32_t *out, int k, int E) {
    for (int j = 0; j < k; j++) {
        int32_t e;
        bool dup;
        do {
            e = (int32_t)rnd((uint32_t)E);
            dup = false;
            for (int i = 0; i < j; i++) dup |= out[i] == e;
        } while (dup);
        out[j] = e;
    }
}


static void spit(const char *path, const char *s, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(s, 1, n, f);
    fclose(f);
}

/* ---- record ---- */

static void test_record(void) {
    hy_coact *c = hy_coact_new(3, 8, 2, 1);
    CHECK(c, "new");
    CHECK(!hy_coact_new(0, 8, 2, 1) && !hy_coact_new(3, 0, 1, 1) && !hy_coact_new(3, 8, 9, 1) &&
              !hy_coact_new(3, 8, 0, 1) && !hy_coact_new(HY_COACT_MAX_LAYER + 1, 8, 2, 1) &&
              !hy_coact_new(1, HY_COACT_MAX_EXPERT + 1, 2, 1) && !hy_coact_new(4096, 4096, 2, 1),
          "out-of-range shapes are refused");
    /* 4 tokens through layers 0, 1, 2 */
    int32_t l0[] = {0, 1, 0, 2, 1, 0, 3, 3 /* repeat: invalid */};
    int32_t l1[] = {4, 5, 4, 5, 6, 4, 7, -1 /* invalid */};
    int32_t l2[] = {2, 8 /* invalid */, 2, 3, 2, 3, 1, 0};
    hy_coact_record(c, 0, l0, 2, 4);
    hy_coact_record(c, 1, l1, 2, 4);
    hy_coact_record(c, 2, l2, 2, 4);
    CHECK(hy_coact_tokens(c) == 4, "tokens %" PRIu64, hy_coact_tokens(c));
    for (int l = 0; l < 3; l++) {
        double s = 0;
        for (int e = 0; e < 8; e++) s += hy_coact_freq(c, l, e);
        CHECK(s > 0.999999 && s < 1.000001, "layer %d: frequencies sum to %f", l, s);
    }
    CHECK(hy_coact_freq(c, 0, 0) == 3.0 / 7.0, "freq(0,0) %f", hy_coact_freq(c, 0, 0));
    CHECK(hy_coact_freq(c, 0, 3) == 1.0 / 7.0, "a repeated id counts once");
    CHECK(hy_coact_freq(c, 1, 7) == 1.0 / 7.0, "freq(1,7)");
    CHECK(hy_coact_freq(c, 2, 2) == 3.0 / 7.0, "freq(2,2)");
    CHECK(hy_coact_freq(c, 9, 0) == 0 && hy_coact_freq(c, 0, 8) == 0 && hy_coact_freq(c, -1, 0) == 0,
          "out-of-range queries are 0");
    /* transitions 0 -> 1: token 0 {0,1}->{4,5}, token 1 {0,2}->{4,5}, token 2 {1,0}->{6,4}, token 3 {3}->{7} */
    int32_t q[] = {3}, out[8];
    int n = hy_coact_predict_next(c, 0, q, 1, out, 8);
    CHECK(n >= 1 && out[0] == 7, "after 3 at layer 0 comes 7 (n=%d, out[0]=%d)", n, n ? out[0] : -1);
    int32_t q0[] = {0};
    n = hy_coact_predict_next(c, 0, q0, 1, out, 2);
    CHECK(n == 2 && out[0] == 4 && out[1] == 5, "after 0: 4 (3 times), then 5 (2) (got %d: %d %d)", n, out[0], out[1]);

    /* a ubatch of another size, or a skipped layer, records no transitions */
    hy_coact *d = hy_coact_new(3, 8, 2, 1);
    int32_t a[] = {0, 1, 0, 1}, b1[] = {5, 6};
    hy_coact_record(d, 0, a, 2, 2);
    hy_coact_record(d, 1, b1, 2, 1); /* the last layer's output rows only: other n_tokens */
    n = hy_coact_predict_next(d, 0, q0, 1, out, 8);
    for (int i = 0; i < n; i++) CHECK(out[i] == 5 || out[i] == 6, "frequency fallback only");
    int32_t z = 0;
    CHECK(hy_coact_predict_next(d, 1, &z, 1, out, 8) == 0, "no data at layer 2: nothing predicted");
    hy_coact_record(d, 0, a, 2, 2);
    hy_coact_record(d, 2, a, 2, 2); /* layer 1 skipped */
    CHECK(hy_coact_predict_next(d, 1, &z, 1, out, 8) == 2, "layer 2's frequencies are the fallback");
    /* bad calls do not crash and do not count tokens */
    hy_coact_record(d, 5, a, 2, 2);
    hy_coact_record(d, -1, a, 2, 2);
    hy_coact_record(d, 0, NULL, 2, 2);
    hy_coact_record(d, 0, a, 0, 2);
    hy_coact_record(NULL, 0, a, 2, 2);
    CHECK(hy_coact_tokens(d) == 4, "tokens %" PRIu64, hy_coact_tokens(d));
    hy_coact_free(d);
    hy_coact_free(c);
    hy_coact_free(NULL);
}

/* ---- predict ---- */

/* a model of 4 layers x 16 experts, top-2: when layer l picks {2l, 2l+1}, layer l+1 picks {10, 11} */
static hy_coact *planted(int tokens, int ubatch) {
    const int L = 4, E = 16, K = 2;
    hy_coact *c = hy_coact_new(L, E, K, 0xabcdefull);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)ubatch * K * L);
    for (int done = 0; done < tokens; done += ubatch) {
        for (int t = 0; t < ubatch; t++) {
            bool planted_tok = rnd(3) == 0;
            for (int l = 0; l < L; l++) {
                int32_t *p = ids + ((size_t)l * ubatch + t) * K;
                if (planted_tok && l == 0) {
                    p[0] = 1;
                    p[1] = 0;
                } else if (planted_tok) {
                    p[0] = 10;
                    p[1] = 11;
                } else {
                    do pick(p, K, E);
                    while ((p[0] == 10 || p[1] == 10) && rnd(2)); /* 10/11 rarer among the random ones */
                }
            }
        }
        for (int l = 0; l < L; l++) hy_coact_record(c, l, ids + (size_t)l * ubatch * K, K, ubatch);
    }
    free(ids);
    return c;
}

static void test_predict(void) {
    hy_coact *c = planted(3000, 50);
    CHECK(hy_coact_tokens(c) == 3000, "tokens");
    int32_t q[] = {0, 1}, out[16];
    int n = hy_coact_predict_next(c, 0, q, 2, out, 2);
    CHECK(n == 2 && ((out[0] == 10 && out[1] == 11) || (out[0] == 11 && out[1] == 10)),
          "{0,1} at layer 0 predicts {10,11} (got %d: %d %d)", n, out[0], out[1]);
    int32_t q2[] = {11, 10};
    n = hy_coact_predict_next(c, 1, q2, 2, out, 2);
    CHECK(n == 2 && (out[0] == 10 || out[0] == 11) && (out[1] == 10 || out[1] == 11), "{10,11} -> {10,11}");
    int32_t q3[] = {10, 10, 99, -3}; /* repeats and junk ids are ignored */
    int32_t out2[16];
    int n2 = hy_coact_predict_next(c, 1, q3, 4, out2, 16);
    int32_t q4[] = {10};
    int32_t out3[16];
    int n3 = hy_coact_predict_next(c, 1, q4, 1, out3, 16);
    CHECK(n2 == n3 && !memcmp(out2, out3, sizeof(int32_t) * (size_t)n2), "repeats/junk ignored");
    CHECK(n3 == 16, "all 16 experts have evidence (%d)", n3);
    bool seen[16] = {0};
    for (int i = 0; i < n3; i++) {
        CHECK(out3[i] >= 0 && out3[i] < 16 && !seen[out3[i]], "distinct ids");
        if (out3[i] >= 0 && out3[i] < 16) seen[out3[i]] = true;
    }
    CHECK(hy_coact_predict_next(c, 3, q, 2, out, 2) == 0, "no layer after the last");
    CHECK(hy_coact_predict_next(c, 0, q, 2, out, 0) == 0, "m = 0");
    CHECK(hy_coact_predict_next(c, -1, q, 2, out, 2) == 0, "layer -1");
    /* no ids: frequency at layer+1 alone, most frequent first */
    n = hy_coact_predict_next(c, 0, NULL, 0, out, 3);
    CHECK(n == 3, "fallback by frequency gives 3");
    for (int i = 1; i < n; i++)
        CHECK(hy_coact_freq(c, 1, out[i - 1]) >= hy_coact_freq(c, 1, out[i]), "ordered by frequency");
    hy_coact_free(c);

    hy_coact *e = hy_coact_new(2, 4, 1, 0);
    CHECK(hy_coact_predict_next(e, 0, q, 2, out, 4) == 0, "empty statistics predict nothing");
    hy_coact_free(e);
}

/* ---- persist ---- */

static void roundtrip(hy_coact *c, uint64_t hash, int L, int E, const char *tag) {
    char p1[1024], p2[1024], err[HY_ERRLEN];
    snprintf(p1, sizeof p1, "%s/rt-%s-1.json", work, tag);
    snprintf(p2, sizeof p2, "%s/rt-%s-2.json", work, tag);
    CHECK(hy_coact_save(c, p1, err, sizeof err) == 0, "%s: save: %s", tag, err);
    hy_coact *r = NULL;
    CHECK(hy_coact_load(p1, hash, L, E, &r, err, sizeof err) == 0 && r, "%s: load: %s", tag, err);
    if (!r) return;
    CHECK(hy_coact_save(r, p2, err, sizeof err) == 0, "%s: save again: %s", tag, err);
    size_t n1, n2;
    char *a = slurp(p1, &n1), *b = slurp(p2, &n2);
    CHECK(a && b && n1 == n2 && !memcmp(a, b, n1), "%s: the reloaded statistics save to the same bytes", tag);
    free(a);
    free(b);
    CHECK(hy_coact_tokens(r) == hy_coact_tokens(c), "%s: tokens", tag);
    for (int l = 0; l < L; l++)
        for (int e = 0; e < E; e++)
            CHECK(hy_coact_freq(r, l, e) == hy_coact_freq(c, l, e), "%s: freq %d %d", tag, l, e);
    int32_t q[2] = {0, 1}, o1[64], o2[64];
    for (int l = 0; l + 1 < L; l++) {
        int m = E < 64 ? E : 64;
        int n1p = hy_coact_predict_next(c, l, q, 2, o1, m), n2p = hy_coact_predict_next(r, l, q, 2, o2, m);
        CHECK(n1p == n2p && !memcmp(o1, o2, sizeof(int32_t) * (size_t)n1p), "%s: predictions at layer %d", tag, l);
    }
    int32_t *pa = malloc(sizeof(int32_t) * (size_t)E), *pb = malloc(sizeof(int32_t) * (size_t)E);
    for (int l = 0; l < L; l++) {
        hy_coact_permutation(c, l, pa);
        hy_coact_permutation(r, l, pb);
        CHECK(!memcmp(pa, pb, sizeof(int32_t) * (size_t)E), "%s: permutation at layer %d", tag, l);
    }
    free(pa);
    free(pb);
    struct stat st;
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p1, (long)getpid());
    CHECK(stat(tmp, &st) != 0, "%s: no temporary file left", tag);
    hy_coact_free(r);
}

static void test_persist(void) {
    hy_coact *c = planted(2000, 40);
    roundtrip(c, 0xabcdefull, 4, 16, "dense");
    /* merge: counts add, shares stay */
    char p[1024], err[HY_ERRLEN];
    snprintf(p, sizeof p, "%s/rt-dense-1.json", work);
    hy_coact *r = NULL;
    hy_coact_load(p, 0xabcdefull, 4, 16, &r, err, sizeof err);
    CHECK(r && hy_coact_merge(r, c) == 0, "merge");
    CHECK(r && hy_coact_tokens(r) == 4000, "merged tokens");
    for (int e = 0; r && e < 16; e++) CHECK(hy_coact_freq(r, 2, e) == hy_coact_freq(c, 2, e), "merged shares");
    hy_coact *other = hy_coact_new(4, 8, 2, 0);
    CHECK(hy_coact_merge(r, other) != 0, "merge of another shape refused");
    CHECK(r && hy_coact_merge(r, r) == 0 && hy_coact_tokens(r) == 8000, "merge into itself doubles");
    roundtrip(r, 0xabcdefull, 4, 16, "merged");
    hy_coact_free(other);
    hy_coact_free(r);
    hy_coact_free(c);
    /* an empty one */
    hy_coact *e = hy_coact_new(1, 2, 1, 7);
    roundtrip(e, 7, 1, 2, "empty");
    hy_coact_free(e);
    /* the default path: $XDG_DATA_HOME/hypura/coact/<16 hex>.json, directory made */
    char dd[1024], path[2048], want[2048];
    snprintf(dd, sizeof dd, "%s/xdg-data", work);
    setenv("XDG_DATA_HOME", dd, 1);
    CHECK(hy_coact_default_path(0x00ab00cd00ef0012ull, path, sizeof path) == 0, "default path");
    snprintf(want, sizeof want, "%s/hypura/coact/00ab00cd00ef0012.json", dd);
    CHECK(!strcmp(path, want), "default path %s, want %s", path, want);
    struct stat st;
    snprintf(want, sizeof want, "%s/hypura/coact", dd);
    CHECK(stat(want, &st) == 0 && S_ISDIR(st.st_mode), "directory made");
    char small[8];
    CHECK(hy_coact_default_path(1, small, sizeof small) != 0, "too small a buffer");
    /* save into a missing directory fails cleanly */
    hy_coact *s = hy_coact_new(1, 2, 1, 7);
    snprintf(path, sizeof path, "%s/no/such/dir/x.json", work);
    err[0] = 0;
    CHECK(hy_coact_save(s, path, err, sizeof err) != 0 && err[0], "save into a missing directory: %s", err);
    hy_coact_free(s);
}

/* ---- corrupt ---- */

static int n_cases;
static void reject(const char *name, const char *text, size_t len, uint64_t hash, int L, int E, const char *expect) {
    char p[1024], err[HY_ERRLEN] = "";
    snprintf(p, sizeof p, "%s/bad-%s.json", work, name);
    if (text) spit(p, text, len);
    hy_coact *c = (hy_coact *)1;
    int rc = hy_coact_load(p, hash, L, E, &c, err, sizeof err);
    CHECK(rc != 0 && c == NULL, "%s: accepted", name);
    CHECK(err[0] && !strchr(err, '\n'), "%s: no one-line message", name);
    CHECK(!expect || strstr(err, expect), "%s: message '%s' lacks '%s'", name, err, expect);
    printf("  rejected %-16s %s\n", name, err);
    n_cases++;
    if (c && c != (hy_coact *)1) hy_coact_free(c);
}

/* the valid file with `from` replaced by `to` (first occurrence) */
static void reject_edit(const char *name, const char *good, const char *from, const char *to, const char *expect) {
    const char *at = strstr(good, from);
    CHECK(at, "%s: '%s' not in the file", name, from);
    if (!at) return;
    size_t n = strlen(good), fl = strlen(from), tl = strlen(to);
    char *s = malloc(n - fl + tl + 1);
    memcpy(s, good, (size_t)(at - good));
    memcpy(s + (at - good), to, tl);
    memcpy(s + (at - good) + tl, at + fl, n - (size_t)(at - good) - fl + 1);
    reject(name, s, strlen(s), 0x1234, 2, 4, expect);
    free(s);
}

static void test_corrupt(void) {
    /* a small, known file: 2 layers x 4 experts, top-2, 3 tokens */
    hy_coact *c = hy_coact_new(2, 4, 2, 0x1234);
    int32_t l0[] = {0, 1, 0, 2, 3, 1}, l1[] = {2, 3, 2, 3, 0, 1};
    hy_coact_record(c, 0, l0, 2, 3);
    hy_coact_record(c, 1, l1, 2, 3);
    char p[1024], err[HY_ERRLEN];
    snprintf(p, sizeof p, "%s/good.json", work);
    CHECK(hy_coact_save(c, p, err, sizeof err) == 0, "save: %s", err);
    hy_coact_free(c);
    size_t n;
    char *good = slurp(p, &n);
    CHECK(good != NULL, "read back");
    if (!good) return;
    printf("the valid file:\n%s", good);
    hy_coact *ok = NULL;
    CHECK(hy_coact_load(p, 0x1234, 2, 4, &ok, err, sizeof err) == 0, "the valid file loads: %s", err);
    hy_coact_free(ok);

    reject("missing", NULL, 0, 0x1234, 2, 4, "No such file");
    reject("empty", "", 0, 0x1234, 2, 4, "invalid JSON");
    for (size_t cut = 1; cut < n - 1; cut += n / 7) {
        char name[32];
        snprintf(name, sizeof name, "truncated-%zu", cut);
        reject(name, good, cut, 0x1234, 2, 4, NULL);
    }
    reject("bad-json", "{\"format\": \"hypura-coact\", \"version\": 1,,}", 43, 0x1234, 2, 4, "invalid JSON");
    reject("not-object", "[1,2,3]", 7, 0x1234, 2, 4, "object");
    reject("binary", "\x00\x01\x02garbage", 10, 0x1234, 2, 4, "invalid JSON");
    reject_edit("format", good, "hypura-coact", "something-else", "format");
    reject_edit("version", good, "\"version\":1", "\"version\":2", "version 2");
    reject_edit("version-str", good, "\"version\":1", "\"version\":\"1\"", "version");
    reject_edit("hash", good, "0000000000001234", "0000000000001235", "another model");
    reject_edit("hash-short", good, "0000000000001234", "1234", "16 hex");
    reject_edit("hash-junk", good, "0000000000001234", "00000000000012zz", "16 hex");
    reject_edit("n_layer", good, "\"n_layer\":2", "\"n_layer\":3", "n_layer");
    reject_edit("n_expert", good, "\"n_expert\":4", "\"n_expert\":5", "n_expert");
    reject_edit("n_used", good, "\"n_used\":2", "\"n_used\":9", "n_used");
    reject_edit("layout", good, "\"dense\"", "\"sparse\"", "layout");
    reject_edit("freq-short", good, "\"freq\":[2,2,1,1]", "\"freq\":[2,2,1]", "freq");
    reject_edit("freq-long", good, "\"freq\":[2,2,1,1]", "\"freq\":[2,2,1,1,0]", "freq");
    reject_edit("negative", good, "\"freq\":[2,2,1,1]", "\"freq\":[2,2,-1,3]", "not a count");
    reject_edit("negative-tokens", good, "\"tokens\":3", "\"tokens\":-3", "tokens");
    reject_edit("float", good, "\"freq\":[2,2,1,1]", "\"freq\":[2,2,1.0,1]", "not a count");
    reject_edit("freq>tokens", good, "\"freq\":[2,2,1,1]", "\"freq\":[4,0,1,1]", "tokens");
    reject_edit("sum!=sel", good, "\"freq\":[2,2,1,1]", "\"freq\":[2,2,1,0]", "sum");
    reject_edit("pair>freq", good, "\"pairs\":\"0 1 1 ", "\"pairs\":\"0 1 3 ", "exceeds");
    reject_edit("pair-order", good, "\"pairs\":\"0 1 1 ", "\"pairs\":\"1 0 1 ", "bad pair");
    reject_edit("pair-self", good, "\"pairs\":\"0 1 1 ", "\"pairs\":\"1 1 1 ", "bad pair");
    reject_edit("pair-range", good, "\"pairs\":\"0 1 1 ", "\"pairs\":\"0 7 1 ", "out of range");
    reject_edit("pair-zero", good, "\"pairs\":\"0 1 1 ", "\"pairs\":\"0 1 0 ", "zero");
    reject_edit("pair-dup", good, "\"pairs\":\"0 1 1 ", "\"pairs\":\"0 1 1 0 1 1 ", "duplicate");
    reject_edit("pair-arity", good, "\"pairs\":\"0 1 1 0 2 1 1 3 1\"", "\"pairs\":\"0 1 1 0 2 1 1 3\"",
                "not three counts");
    {
        /* 4 experts have at most 6 pairs: a string of 100000 triples is refused unread */
        size_t cap = 600000 + 32;
        char *big = malloc(cap);
        size_t k = (size_t)snprintf(big, cap, "\"pairs\":\"");
        for (int i = 0; i < 100000; i++) memcpy(big + k, "0 1 1 ", 6), k += 6;
        big[k] = 0;
        reject_edit("pair-huge", good, "\"pairs\":\"", big, "too long for at most 6");
        free(big);
    }
    reject_edit("pair-many", good, "\"pairs\":\"0 1 1 0 2 1 1 3 1\"",
                "\"pairs\":\"0 1 1 0 2 1 1 3 1 0 3 1 1 2 1 2 3 1 0 1 1\"", "more than 6 triples");
    reject_edit("next>freq", good, "\"next\":\"0 2 2 ", "\"next\":\"0 2 9 ", "exceeds");
    reject_edit("next-negative", good, "\"next\":\"0 2 2 ", "\"next\":\"0 -2 2 ", "not three counts");
    reject_edit("next-junk", good, "\"next\":\"0 2 2 ", "\"next\":\"0 2x 2 ", "not three counts");
    reject_edit("next-overflow", good, "\"next\":\"0 2 2 ", "\"next\":\"0 2 99999999999999999999 ", "not three counts");
    reject_edit("next-array", good, "\"next\":\"0 2 2 ", "\"next\":[0,2,2],\"x\":\"", "not a string");
    reject_edit("pairs-missing", good, "\"pairs\"", "\"pairz\"", "pairs is not");
    reject_edit("last-next", good, "\"}]}", "\",\"next\":\"0 1 1\"}]}", "last layer");
    reject_edit("layers-missing", good, "\"layers\"", "\"layerz\"", "layers");
    reject_edit("dup-key", good, "\"n_layer\":2", "\"n_layer\":2,\"n_layer\":2", "invalid JSON");
    /* huge declared shapes and arrays: refused by their bounds, without allocating for them */
    reject_edit("huge-n_expert", good, "\"n_expert\":4", "\"n_expert\":1000000000", "n_expert");
    {
        /* a layers array of 200000 entries */
        size_t cap = 200000 * 3 + 256;
        char *s = malloc(cap);
        int k = snprintf(s, cap,
                         "{\"format\":\"hypura-coact\",\"version\":1,\"header_hash\":\"0000000000001234\","
                         "\"n_layer\":2,\"n_expert\":4,\"n_used\":2,\"layout\":\"dense\",\"row_capacity\":4,"
                         "\"invalid\":0,\"layers\":[");
        for (int i = 0; i < 200000; i++) s[k++] = '0', s[k++] = ',';
        k--;
        k += snprintf(s + k, cap - (size_t)k, "]}");
        reject("huge-layers", s, (size_t)k, 0x1234, 2, 4, "layers");
        free(s);
    }
    /* a file over the size cap is refused before parsing (sparse file: no disk used) */
    {
        char big[1024];
        snprintf(big, sizeof big, "%s/bad-huge-file.json", work);
        FILE *f = fopen(big, "wb");
        if (f) {
            fputc('{', f);
            fclose(f);
            CHECK(truncate(big, (off_t)HY_COACT_MAX_FILE + 1) == 0, "truncate");
            reject("huge-file", NULL, 0, 0x1234, 2, 4, "too large");
            unlink(big);
        }
    }
    /* the caller's shape must be one we support */
    reject("caller-shape", good, n, 0x1234, 0, 4, "shape");
    /* a directory */
    {
        char dir[1024], e2[HY_ERRLEN];
        snprintf(dir, sizeof dir, "%s/adir.json", work);
        mkdir(dir, 0755);
        hy_coact *x = NULL;
        CHECK(hy_coact_load(dir, 0x1234, 2, 4, &x, e2, sizeof e2) != 0 && !x, "a directory is refused");
    }
    printf("%d corrupt files rejected\n", n_cases);
    free(good);
}

/* ---- permute ---- */

static bool is_perm(const int32_t *p, int E) {
    bool *seen = calloc((size_t)E, 1);
    bool ok = true;
    for (int i = 0; i < E && ok; i++) {
        ok = p[i] >= 0 && p[i] < E && !seen[p[i]];
        if (ok) seen[p[i]] = true;
    }
    free(seen);
    return ok;
}

static int pos_of(const int32_t *p, int E, int e) {
    for (int i = 0; i < E; i++)
        if (p[i] == e) return i;
    return -1;
}

static void test_permute(void) {
    const int E = 32, K = 4;
    hy_coact *c = hy_coact_new(2, E, K, 5);
    int32_t perm[32], perm2[32];
    CHECK(hy_coact_permutation(c, 0, perm) == 0 && is_perm(perm, E), "empty: a permutation");
    for (int i = 0; i < E; i++) CHECK(perm[i] == i, "empty: the identity");
    /* experts 9 and 23 always fire together (when they fire); 17 and 3 too; the rest random */
    int32_t ids[K * 64];
    for (int round = 0; round < 50; round++) {
        for (int t = 0; t < 64; t++) {
            int32_t *p = ids + t * K;
            /* K distinct experts outside the planted ones, then maybe a planted pair on top */
            static const int32_t others[28] = {0,  1,  2,  4,  5,  6,  7,  8,  10, 11, 12, 13, 14, 15,
                                               16, 18, 19, 20, 21, 22, 24, 25, 26, 27, 28, 29, 30, 31};
            pick(p, K, 28);
            for (int j = 0; j < K; j++) p[j] = others[p[j]];
            int r = (int)rnd(4);
            if (r == 0) {
                p[0] = 9;
                p[1] = 23;
            } else if (r == 1) {
                p[2] = 17;
                p[3] = 3;
            }
        }
        hy_coact_record(c, 0, ids, K, 64);
    }
    CHECK(hy_coact_permutation(c, 0, perm) == 0 && is_perm(perm, E), "a permutation");
    CHECK(hy_coact_permutation(c, 0, perm2) == 0 && !memcmp(perm, perm2, sizeof perm), "deterministic");
    int a = pos_of(perm, E, 9), b = pos_of(perm, E, 23), x = pos_of(perm, E, 17), y = pos_of(perm, E, 3);
    CHECK(abs(a - b) == 1, "9 and 23 adjacent (positions %d, %d)", a, b);
    CHECK(abs(x - y) == 1, "17 and 3 adjacent (positions %d, %d)", x, y);
    printf("order:");
    for (int i = 0; i < E; i++) printf(" %d", perm[i]);
    printf("\n");
    CHECK(hy_coact_permutation(c, 1, perm) == 0 && is_perm(perm, E), "layer without data");
    CHECK(hy_coact_permutation(c, 2, perm) != 0 && hy_coact_permutation(c, -1, perm) != 0 &&
              hy_coact_permutation(NULL, 0, perm) != 0 && hy_coact_permutation(c, 0, NULL) != 0,
          "bad arguments");
    hy_coact_free(c);
}

/* ---- large ---- */

static void test_large(void) {
    /* 1024 experts x 64 layers: past the dense budget, bounded rows */
    const int L = 64, E = 1024, K = 8;
    hy_coact *c = hy_coact_new(L, E, K, 42);
    CHECK(c, "1024 experts x 64 layers");
    if (!c) return;
    int32_t ids[K * 16];
    for (int round = 0; round < 20; round++)
        for (int l = 0; l < L; l++) {
            for (int t = 0; t < 16; t++) {
                pick(ids + t * K, K, E);
                if (t % 2 == 0) { /* planted: 5 at layer l, 700 at l+1 */
                    bool has5 = false, has700 = false;
                    for (int j = 0; j < K; j++) has5 |= ids[t * K + j] == 5, has700 |= ids[t * K + j] == 700;
                    if (!has5 && !has700) {
                        ids[t * K] = 5;
                        ids[t * K + 1] = 700;
                    }
                }
            }
            hy_coact_record(c, l, ids, K, 16);
        }
    int32_t q = 5, out[8];
    int n = hy_coact_predict_next(c, 10, &q, 1, out, 2);
    CHECK(n == 2 && (out[0] == 700 || out[0] == 5), "planted transition survives in bounded rows (%d: %d)", n, out[0]);
    int32_t *perm = malloc(sizeof(int32_t) * E);
    CHECK(hy_coact_permutation(c, 3, perm) == 0 && is_perm(perm, E), "a permutation of 1024");
    CHECK(abs(pos_of(perm, E, 5) - pos_of(perm, E, 700)) == 1, "5 and 700 adjacent");
    free(perm);
    roundtrip(c, 42, L, E, "sparse");
    char p[1024];
    snprintf(p, sizeof p, "%s/rt-sparse-1.json", work);
    char *s = slurp(p, NULL);
    CHECK(s && strstr(s, "\"layout\":\"sparse\""), "sparse layout");
    free(s);
    hy_coact_free(c);
    /* the largest accepted shape */
    hy_coact *big = hy_coact_new(HY_COACT_MAX_ROWS / HY_COACT_MAX_EXPERT, HY_COACT_MAX_EXPERT, 8, 1);
    CHECK(big, "the largest shape");
    hy_coact_free(big);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s record|predict|persist|corrupt|permute|large WORKDIR\n", argv[0]);
        return 2;
    }
    work = argv[2];
    hy_mkdirs(work);
    const char *g = argv[1];
    if (!strcmp(g, "record"))
        test_record();
    else if (!strcmp(g, "predict"))
        test_predict();
    else if (!strcmp(g, "persist"))
        test_persist();
    else if (!strcmp(g, "corrupt"))
        test_corrupt();
    else if (!strcmp(g, "permute"))
        test_permute();
    else if (!strcmp(g, "large"))
        test_large();
    else {
        fprintf(stderr, "unknown group %s\n", g);
        return 2;
    }
    printf(failures ? "FAIL (%d)\n" : "PASS\n", failures);
    return failures ? 1 : 0;
}
