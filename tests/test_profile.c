/* profile tests.
 *   test_profile api WORKDIR          hy_profile_get/JSON round trip/cache reuse/corrupt and stale
 *                                     caches/no-space error/tmpfs without O_DIRECT
 *   test_profile cli HYPURA WORKDIR   `hypura profile --json` schema, cache reuse, corrupt cache,
 *                                     `hypura iobench --json`
 *   test_profile cgroup HYPURA WORKDIR  `hypura profile --json` inside a memory cgroup limited to
 *                                     1 GiB reports that limit (exit 77 = skipped: no group can be made)
 * Every run uses its own XDG_CACHE_HOME under WORKDIR. */
#include "profile/hy_profile.h"
#include "util/hy_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define GiB (1024ull * 1024 * 1024)

#include "test_check.h"


static void spit(const char *path, const char *s) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(s, f);
        fclose(f);
    }
}

static void rm_rf(const char *path) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd)) {}
}

static void set_cache(const char *work, const char *name, char *cache_json, size_t n) {
    char x[1024];
    snprintf(x, sizeof x, "%s/%s", work, name);
    rm_rf(x);
    hy_mkdirs(x);
    setenv("XDG_CACHE_HOME", x, 1);
    snprintf(cache_json, n, "%s/hypura/profile.json", x);
}

static void check_sane(const hy_profile *p, bool storage) {
    CHECK(p->cores_logical >= 1 && p->cores_physical >= 1 && p->cores_physical <= p->cores_logical, "cores %d/%d",
          p->cores_logical, p->cores_physical);
    CHECK(p->cpu_model[0], "no cpu model");
    CHECK(p->ram_total > 0 && p->ram_available > 0 && p->ram_available <= p->ram_total, "ram");
    CHECK(p->mem_budget_default > 0 && p->mem_budget_default < p->ram_total, "budget %llu",
          (unsigned long long)p->mem_budget_default);
    if (p->cgroup_limit) CHECK(p->mem_budget_default < p->cgroup_limit, "budget above the cgroup limit");
    CHECK(p->mem_bw_gbps > 0.1, "mem bw %.3f", p->mem_bw_gbps);
    /* the matvec rates: the common weight types measured, each a plausible rate */
    static const char *const common[] = {"f32", "f16", "q8_0", "q4_0", "q4_K", "q6_K", "mxfp4"};
    for (size_t i = 0; i < sizeof common / sizeof common[0]; i++) {
        int t = hy_matvec_type_of(common[i]);
        CHECK(t >= 0 && p->matvec_gbps[t] > 0.05 && p->matvec_gbps[t] < 1e4, "matvec %s: type %d, %.3f GB/s",
              common[i], t, t >= 0 ? p->matvec_gbps[t] : 0);
    }
    CHECK(p->created > 1.6e9 && p->elapsed_s > 0, "created %.0f elapsed %.3f", p->created, p->elapsed_s);
    if (storage) {
        CHECK(p->n_sweep == 9, "n_sweep %d", p->n_sweep);
        CHECK(p->seq_read_gbps > 0 && p->seq_read_qd1_gbps > 0 && p->rand4k_iops > 0, "storage figures %.3f %.3f %.0f",
              p->seq_read_gbps, p->seq_read_qd1_gbps, p->rand4k_iops);
        for (int i = 0; i < p->n_sweep; i++)
            CHECK(p->sweep[i].gbps > 0 && p->sweep[i].gbps <= p->seq_read_gbps, "sweep point %d", i);
        CHECK(p->storage_fs[0] && p->storage_path[0] == '/', "storage path/fs");
    }
}

static void round_trip(const hy_profile *p) {
    char *a = NULL, *b = NULL, err[HY_ERRLEN] = "";
    hy_profile q;
    CHECK(hy_profile_to_json(p, &a) == 0, "to_json");
    CHECK(a && hy_profile_from_json(a, &q, err, sizeof err) == 0, "from_json: %s", err);
    CHECK(hy_profile_to_json(&q, &b) == 0, "to_json 2");
    CHECK(a && b && !strcmp(a, b), "round trip differs:\n%s\n---\n%s", a, b);
    CHECK(!memcmp(q.matvec_gbps, p->matvec_gbps, sizeof q.matvec_gbps), "matvec rates differ after the round trip");
    CHECK(q.seq_read_gbps == p->seq_read_gbps && q.mem_bw_gbps == p->mem_bw_gbps && q.created == p->created &&
              q.ram_total == p->ram_total && q.n_sweep == p->n_sweep && !strcmp(q.simd, p->simd),
          "fields differ after the round trip");
    free(a);
    free(b);
}

/* ---- api ---------------------------------------------------------------------- */

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (d) closedir(d);
    return n;
}

/* in a private mount namespace (vanishes with the child): a tmpfs too small for
 * the test file must give a clear error and leave nothing behind */
static void test_no_space(const char *work) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/smallfs", work);
    hy_mkdirs(dir);
    pid_t pid = fork();
    if (pid == 0) {
        if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
            mount("tmpfs", dir, "tmpfs", 0, "size=40m"))
            _exit(77);
        hy_profile p;
        memset(&p, 0, sizeof p);
        char err[HY_ERRLEN] = "";
        int rc = hy_profile_measure_storage(dir, true, &p, err, sizeof err);
        printf("no space: rc %d: %s\n", rc, err);
        int left = count_entries(dir);
        _exit(rc < 0 && strstr(err, "space") && left == 0 ? 0 : 1);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77) printf("no space: skipped (cannot mount a tmpfs here)\n");
    else CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "no-space test failed (status %d)", st);
    rmdir(dir);
}

/* ramfs refuses O_DIRECT (and O_TMPFILE, and reports no size): buffered figures,
 * storage_direct false, nothing left behind */
static void test_ramfs(const char *work) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/ramfs", work);
    hy_mkdirs(dir);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
            mount("ramfs", dir, "ramfs", 0, NULL))
            _exit(77);
        hy_profile p;
        memset(&p, 0, sizeof p);
        char err[HY_ERRLEN] = "";
        int rc = hy_profile_measure_storage(dir, true, &p, err, sizeof err);
        printf("ramfs: rc %d fs %s direct %d seq %.2f GB/s %s\n", rc, p.storage_fs, p.storage_direct,
               p.seq_read_gbps, err);
        fflush(stdout);
        _exit(rc == 0 && !p.storage_direct && !strcmp(p.storage_fs, "ramfs") && p.seq_read_gbps > 0 &&
                      count_entries(dir) == 0
                  ? 0
                  : 1);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77) printf("ramfs: skipped (cannot mount one here)\n");
    else CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "ramfs storage test failed (status %d)", st);
    rmdir(dir);
}

static int cmd_api(const char *work) {
    char cache[1100], err[HY_ERRLEN] = "";
    set_cache(work, "xdg-api", cache, sizeof cache);
    hy_profile_params pp = hy_profile_default_params();
    pp.quick = true;
    pp.refresh = true;
    hy_profile p, q;

    double t0 = hy_now();
    CHECK(hy_profile_get(&pp, &p, err, sizeof err) == 0, "get: %s", err);
    double t_measure = hy_now() - t0;
    printf("measured in %.2f s: %d cores, %.1f GB/s memcpy, seq %.2f GB/s, qd1 %.2f GB/s, %.0f IOPS, fs %s direct %d\n",
           t_measure, p.cores_logical, p.mem_bw_gbps, p.seq_read_gbps, p.seq_read_qd1_gbps, p.rand4k_iops,
           p.storage_fs, p.storage_direct);
    check_sane(&p, true);
    CHECK(!p.from_cache && p.quick, "from_cache %d quick %d", p.from_cache, p.quick);
    round_trip(&p);
    struct stat st;
    CHECK(stat(cache, &st) == 0, "no cache file %s", cache);

    /* reused: faster, flagged, same measurement */
    pp.refresh = false;
    t0 = hy_now();
    CHECK(hy_profile_get(&pp, &q, err, sizeof err) == 0, "get 2: %s", err);
    double t_cached = hy_now() - t0;
    printf("cached in %.3f s\n", t_cached);
    CHECK(q.from_cache, "second call did not use the cache");
    CHECK(t_cached < t_measure / 2, "cached %.3f s vs measured %.3f s", t_cached, t_measure);
    CHECK(q.created == p.created && q.seq_read_gbps == p.seq_read_gbps, "cache content differs");
    round_trip(&q);

    /* a full profile does not reuse a quick one */
    hy_profile_params full = pp;
    full.quick = false;
    full.storage = false;
    CHECK(hy_profile_get(&full, &q, err, sizeof err) == 0 && !q.from_cache, "quick cache reused for a full profile");
    check_sane(&q, false);

    /* corrupt cache: ignored (with a warning on stderr) and rewritten */
    spit(cache, "{\"version\": 1, \"cpu_model\": tru");
    CHECK(hy_profile_get(&pp, &q, err, sizeof err) == 0 && !q.from_cache, "corrupt cache: %s", err);
    char *js = slurp(cache, NULL);
    hy_profile r;
    CHECK(js && hy_profile_from_json(js, &r, err, sizeof err) == 0, "cache not rewritten: %s", err);
    free(js);
    CHECK(hy_profile_get(&pp, &q, err, sizeof err) == 0 && q.from_cache, "rewritten cache not used");

    /* stale cache, other machine signature: measured again */
    hy_profile s = q;
    s.from_cache = false;
    s.created -= 8 * 86400;
    char *sj = NULL;
    hy_profile_to_json(&s, &sj);
    spit(cache, sj);
    free(sj);
    CHECK(hy_profile_get(&pp, &q, err, sizeof err) == 0 && !q.from_cache, "8-day-old cache reused");
    s = q;
    snprintf(s.cpu_model, sizeof s.cpu_model, "Some Other CPU");
    hy_profile_to_json(&s, &sj);
    spit(cache, sj);
    free(sj);
    CHECK(hy_profile_get(&pp, &q, err, sizeof err) == 0 && !q.from_cache, "another machine's cache reused");

    /* from_json refuses missing keys and junk */
    CHECK(hy_profile_from_json("{\"version\": 3}", &r, err, sizeof err) < 0 && strstr(err, "cpu_model"),
          "missing key: %s", err);
    CHECK(hy_profile_from_json("{\"version\": 2}", &r, err, sizeof err) < 0 && strstr(err, "version 2"),
          "an older version accepted: %s", err);
    {
        /* a matvec rate for a type that does not exist, or not a positive number: refused */
        hy_profile z = p;
        char *zj = NULL;
        hy_profile_to_json(&z, &zj);
        json_t *o = zj ? json_loads(zj, 0, NULL) : NULL;
        CHECK(o != NULL, "profile JSON");
        const char *bad[][2] = {{"q9_Z", "1.0"}, {"q4_K", "-3"}, {"q4_K", "\"fast\""}};
        for (size_t i = 0; o && i < 3; i++) {
            json_t *c = json_deep_copy(o);
            json_object_set_new(json_object_get(c, "matvec_gbps"), bad[i][0], json_loads(bad[i][1], JSON_DECODE_ANY, NULL));
            char *cj = json_dumps(c, 0);
            CHECK(cj && hy_profile_from_json(cj, &r, err, sizeof err) < 0 && strstr(err, "matvec_gbps"),
                  "matvec %s = %s accepted: %s", bad[i][0], bad[i][1], err);
            free(cj);
            json_decref(c);
        }
        json_decref(o);
        free(zj);
    }
    CHECK(hy_profile_from_json("[1,2]", &r, err, sizeof err) < 0, "array accepted");
    CHECK(hy_profile_from_json("", &r, err, sizeof err) < 0, "empty accepted");

    /* tmpfs: no O_DIRECT, buffered figures */
    struct stat shm;
    if (stat("/dev/shm", &shm) == 0) {
        hy_profile t;
        memset(&t, 0, sizeof t);
        int rc = hy_profile_measure_storage("/dev/shm", true, &t, err, sizeof err);
        printf("/dev/shm: rc %d fs %s direct %d seq %.2f GB/s %s\n", rc, t.storage_fs, t.storage_direct,
               t.seq_read_gbps, rc ? err : "");
        CHECK(rc == 0 && !strcmp(t.storage_fs, "tmpfs") && t.seq_read_gbps > 0, "tmpfs: %s", err);
    }
    test_ramfs(work);
    test_no_space(work);
    char x[1024];
    snprintf(x, sizeof x, "%s/xdg-api", work);
    rm_rf(x);
    return failures ? 1 : 0;
}

/* ---- cli ---------------------------------------------------------------------- */

/* runs argv with stdout and stderr captured; returns the exit status, or -1 */
static int run(char *const argv[], char **out, char **errout, double *secs) {
    char o[] = "/tmp/hypura-test-out-XXXXXX", e[] = "/tmp/hypura-test-err-XXXXXX";
    int fo = mkstemp(o), fe = mkstemp(e);
    if (fo < 0 || fe < 0) return -1;
    double t0 = hy_now();
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fo, 1);
        dup2(fe, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    if (secs) *secs = hy_now() - t0;
    close(fo);
    close(fe);
    *out = slurp(o, NULL);
    if (errout) *errout = slurp(e, NULL);
    unlink(o);
    unlink(e);
    if (!*out) *out = strdup("");
    if (errout && !*errout) *errout = strdup("");
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const char *const KEYS[] = {"version", "cpu_model", "cores_logical", "cores_physical", "simd", "ram_total",
                                   "ram_available", "cgroup_limit", "cgroup_usage", "mem_budget_default",
                                   "mem_bw_gbps", "piece_s", "matvec_gbps", "storage_path", "storage_fs", "storage_direct", "seq_read_gbps",
                                   "seq_read_qd1_gbps", "rand4k_iops", "sweep", "gpu", "created", "elapsed_s",
                                   "quick", "from_cache"};

static void check_schema(const char *js, hy_profile *p) {
    json_error_t je;
    json_t *o = json_loads(js, 0, &je);
    CHECK(json_is_object(o), "stdout is not a JSON object: %s\n%s", je.text, js);
    if (!o) return;
    for (size_t i = 0; i < sizeof KEYS / sizeof KEYS[0]; i++)
        CHECK(json_object_get(o, KEYS[i]) != NULL, "key %s missing", KEYS[i]);
    CHECK(json_object_size(o) == sizeof KEYS / sizeof KEYS[0], "%zu keys", json_object_size(o));
    json_t *sw = json_object_get(o, "sweep");
    for (size_t i = 0; i < json_array_size(sw); i++) {
        json_t *pt = json_array_get(sw, i);
        CHECK(json_is_integer(json_object_get(pt, "block")) && json_is_integer(json_object_get(pt, "qd")) &&
                  json_is_number(json_object_get(pt, "gbps")),
              "sweep point %zu", i);
    }
    CHECK(json_is_array(json_object_get(o, "gpu")), "gpu is not an array");
    json_decref(o);
    char err[HY_ERRLEN] = "";
    CHECK(hy_profile_from_json(js, p, err, sizeof err) == 0, "from_json: %s", err);
}

static int cmd_cli(const char *bin, const char *work) {
    char cache[1100];
    set_cache(work, "xdg-cli", cache, sizeof cache);
    char *out, *errs;
    double t1, t2;
    hy_profile p, q;

    char *a1[] = {(char *)bin, "profile", "--json", "--refresh", "--quick", NULL};
    int rc = run(a1, &out, &errs, &t1);
    printf("profile --json --refresh --quick: rc %d in %.2f s\n%s", rc, t1, errs);
    CHECK(rc == 0, "rc %d", rc);
    memset(&p, 0, sizeof p);
    check_schema(out, &p);
    check_sane(&p, true);
    CHECK(!p.from_cache, "measured run says from_cache");
    CHECK(strstr(errs, "measured") != NULL, "stderr does not say it measured: %s", errs);
    free(out);
    free(errs);

    char *a2[] = {(char *)bin, "profile", "--json", "--quick", NULL};
    rc = run(a2, &out, &errs, &t2);
    printf("profile --json --quick (cached): rc %d in %.3f s\n%s", rc, t2, errs);
    CHECK(rc == 0, "rc %d", rc);
    memset(&q, 0, sizeof q);
    check_schema(out, &q);
    CHECK(q.from_cache && strstr(errs, "from cache"), "second call did not say it used the cache: %s", errs);
    CHECK(t2 < t1 / 2, "cached call %.3f s, measuring call %.3f s", t2, t1);
    CHECK(q.created == p.created && q.seq_read_gbps == p.seq_read_gbps, "cache content differs");
    free(out);
    free(errs);

    char *a3[] = {(char *)bin, "profile", "--quick", NULL};
    rc = run(a3, &out, &errs, NULL);
    CHECK(rc == 0 && strstr(out, "from cache") && strstr(out, "GB/s") && strstr(out, "cores"),
          "human output:\n%s", out);
    free(out);
    free(errs);

    spit(cache, "this is not JSON {");
    rc = run(a2, &out, &errs, NULL);
    printf("corrupt cache: rc %d\n%s", rc, errs);
    CHECK(rc == 0 && strstr(errs, "warning") && strstr(errs, "ignoring"), "no warning for a corrupt cache: %s", errs);
    memset(&q, 0, sizeof q);
    check_schema(out, &q);
    CHECK(!q.from_cache, "corrupt cache used");
    free(out);
    free(errs);
    char *js = slurp(cache, NULL);
    char err[HY_ERRLEN];
    CHECK(js && hy_profile_from_json(js, &q, err, sizeof err) == 0, "cache not rebuilt");
    free(js);

    char *a4[] = {(char *)bin, "profile", "--help", NULL};
    rc = run(a4, &out, &errs, NULL);
    CHECK(rc == 0 && strstr(out, "--refresh"), "--help");
    free(out);
    free(errs);
    char *a5[] = {(char *)bin, "profile", "--bogus", NULL};
    rc = run(a5, &out, &errs, NULL);
    CHECK(rc == 2, "unknown flag: rc %d", rc);
    free(out);
    free(errs);

    char *a6[] = {(char *)bin, "iobench", (char *)work, "--json", "--quick", NULL};
    rc = run(a6, &out, &errs, &t1);
    printf("iobench --json --quick: rc %d in %.2f s\n%s%s", rc, t1, out, errs);
    json_error_t je;
    json_t *o = json_loads(out, 0, &je);
    CHECK(rc == 0 && json_is_object(o), "iobench JSON: %s", je.text);
    CHECK(json_array_size(json_object_get(o, "sweep")) == 9, "iobench sweep");
    CHECK(json_number_value(json_object_get(o, "seq_read_gbps")) > 0 &&
              json_number_value(json_object_get(o, "rand4k_iops")) > 0,
          "iobench figures");
    json_decref(o);
    free(out);
    free(errs);
    char *a7[] = {(char *)bin, "iobench", (char *)work, "--quick", NULL};
    rc = run(a7, &out, &errs, NULL);
    CHECK(rc == 0 && strstr(out, "block") && strstr(out, "IOPS"), "iobench table:\n%s", out);
    free(out);
    free(errs);
    char *a8[] = {(char *)bin, "iobench", "/nonexistent/dir", "--quick", NULL};
    rc = run(a8, &out, &errs, NULL);
    CHECK(rc == 1 && strstr(errs, "/nonexistent/dir"), "iobench on a missing dir: rc %d %s", rc, errs);
    free(out);
    free(errs);

    char x[1024];
    snprintf(x, sizeof x, "%s/xdg-cli", work);
    rm_rf(x);
    return failures ? 1 : 0;
}

/* ---- cgroup ------------------------------------------------------------------- */

static bool write_str(const char *path, const char *s) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = write(fd, s, strlen(s)) == (ssize_t)strlen(s);
    return close(fd) == 0 && ok;
}

/* our own cgroup directory of a hierarchy (v1 memory, or v2), under its usual mount */
static bool own_group(bool v2, char *out, size_t n) {
    FILE *f = fopen("/proc/self/cgroup", "r");
    char line[2048];
    bool found = false;
    while (!found && f && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c2 = 0;
        if (v2 ? (line[0] == '0' && c1 == line + 1 && !c1[1]) : strstr(c1 + 1, "memory") != NULL) {
            struct stat st;
            const char *mnts[] = {v2 ? "/sys/fs/cgroup/unified" : "/sys/fs/cgroup/memory", "/sys/fs/cgroup"};
            for (int i = 0; i < 2 && !found; i++) {
                char probe[1024];
                snprintf(probe, sizeof probe, "%s/%s", mnts[i], v2 ? "cgroup.controllers" : "memory.limit_in_bytes");
                if (stat(probe, &st)) continue;
                snprintf(out, n, "%s%s", mnts[i], strcmp(c2 + 1, "/") ? c2 + 1 : "");
                found = true;
            }
        }
    }
    if (f) fclose(f);
    return found;
}

/* a child group with a 1 GiB limit; false (nothing left) if none can be made */
static bool make_group(char *dir, size_t n, bool *v2) {
    char base[1024], lim[1200];
    for (int ver = 0; ver < 2; ver++) {
        *v2 = ver == 1;
        if (!own_group(*v2, base, sizeof base)) continue;
        snprintf(dir, n, "%s/hypura-test-%d", base, (int)getpid());
        if (mkdir(dir, 0755) && errno != EEXIST) {
            printf("cgroup %s: cannot create %s: %s\n", *v2 ? "v2" : "v1", dir, strerror(errno));
            continue;
        }
        snprintf(lim, sizeof lim, "%s/%s", dir, *v2 ? "memory.max" : "memory.limit_in_bytes");
        if (write_str(lim, "1073741824")) return true;
        printf("cgroup %s: cannot set %s: %s\n", *v2 ? "v2" : "v1", lim, strerror(errno));
        rmdir(dir);
    }
    return false;
}

static int cmd_cgroup(const char *bin, const char *work) {
    if (geteuid() != 0) {
        printf("SKIP: not root, cannot create a memory cgroup\n");
        return 77;
    }
    char dir[1100];
    bool v2 = false;
    if (!make_group(dir, sizeof dir, &v2)) {
        printf("SKIP: no memory cgroup can be made here (v1 /sys/fs/cgroup/memory or v2 with memory enabled)\n");
        return 77;
    }
    printf("cgroup %s group %s limited to 1 GiB\n", v2 ? "v2" : "v1", dir);
    char cache[1100];
    set_cache(work, "xdg-cgroup", cache, sizeof cache);
    char script[1400];
    snprintf(script, sizeof script, "echo $$ > '%s/cgroup.procs' && exec \"$0\" profile --json --quick", dir);
    char *argv[] = {"/bin/sh", "-c", script, (char *)bin, NULL};
    char *out, *errs;
    int rc = run(argv, &out, &errs, NULL);
    printf("rc %d\n%s", rc, errs);
    CHECK(rc == 0, "hypura profile in the cgroup: rc %d", rc);
    hy_profile p;
    memset(&p, 0, sizeof p);
    check_schema(out, &p);
    printf("cgroup_limit %llu, cgroup_usage %llu, mem_budget_default %llu\n", (unsigned long long)p.cgroup_limit,
           (unsigned long long)p.cgroup_usage, (unsigned long long)p.mem_budget_default);
    CHECK(p.cgroup_limit == GiB, "cgroup_limit %llu, expected 1 GiB", (unsigned long long)p.cgroup_limit);
    CHECK(p.mem_budget_default > 0 && p.mem_budget_default < GiB, "budget %llu", (unsigned long long)p.mem_budget_default);
    free(out);
    free(errs);
    /* the group is empty once the child has exited; the kernel may need a moment */
    int r = -1;
    for (int i = 0; i < 50 && (r = rmdir(dir)) != 0; i++) usleep(100000);
    CHECK(r == 0, "cannot remove %s: %s", dir, strerror(errno));
    char x[1024];
    snprintf(x, sizeof x, "%s/xdg-cgroup", work);
    rm_rf(x);
    return failures ? 1 : 0;
}

int main(int argc, char **argv) {
    int rc = 2;
    /* XDG_CACHE_HOME must be absolute (relative ones are ignored by the spec) */
    static char work[4096];
    if (argc >= 3 && realpath(argv[argc - 1], work)) argv[argc - 1] = work;
    if (argc == 3 && !strcmp(argv[1], "api")) rc = cmd_api(argv[2]);
    else if (argc == 4 && !strcmp(argv[1], "cli")) rc = cmd_cli(argv[2], argv[3]);
    else if (argc == 4 && !strcmp(argv[1], "cgroup")) rc = cmd_cgroup(argv[2], argv[3]);
    else fprintf(stderr, "usage: test_profile api WORKDIR | cli HYPURA WORKDIR | cgroup HYPURA WORKDIR\n");
    if (rc == 0) printf("PASS\n");
    return rc;
}
