/* hy_calib: measured against predicted compute time, kept per model and thread
 * count and for the machine; moved halfway (log space) per run; out-of-range
 * ratios refused; tiny models kept for themselves only; an unreadable file
 * ignored and replaced. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "profile/hy_calib.h"
#include "test_check.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_calib DIR\n");
        return 2;
    }
    char path[4096], err[256];
    snprintf(path, sizeof path, "%s/calibration-%d.json", argv[1], (int)getpid());
    unlink(path);
    const uint64_t A = 0x1111, B = 0x2222;

    hy_calib c = hy_calib_get(path, A, 2, 0, "x");
    CHECK(c.scale == 1 && c.runs == 0 && !c.per_model, "no file: scale %g runs %d", c.scale, c.runs);

    CHECK(hy_calib_record(path, A, 2, 0, "x", 0.030, 0.020, err, sizeof err) == 0, "%s", err);
    c = hy_calib_get(path, A, 2, 0, "x");
    CHECK(c.per_model && c.runs == 1 && fabs(c.scale - 1.5) < 1e-9, "first run: %g (%d)", c.scale, c.runs);
    /* the next run moves it halfway in log space: sqrt(1.5 * 0.75) */
    CHECK(hy_calib_record(path, A, 2, 0, "x", 0.015, 0.020, err, sizeof err) == 0, "%s", err);
    c = hy_calib_get(path, A, 2, 0, "x");
    CHECK(c.runs == 2 && fabs(c.scale - sqrt(1.5 * 0.75)) < 1e-9, "second run: %g", c.scale);

    /* another model, another thread count: the machine's figure, not model A's */
    c = hy_calib_get(path, B, 2, 0, "x");
    CHECK(!c.per_model && c.runs == 2 && fabs(c.scale - sqrt(1.5 * 0.75)) < 1e-9, "machine: %g (%d)", c.scale,
          c.runs);
    c = hy_calib_get(path, A, 4, 0, "x");
    CHECK(!c.per_model, "threads are part of the key");
    c = hy_calib_get(path, A, 2, (uint64_t)4 << 30, "x");
    CHECK(!c.per_model && c.runs == 0, "so is the GPU budget, also for the machine's figure");
    c = hy_calib_get(path, A, 2, 0, "y");
    CHECK(!c.per_model && c.runs == 0, "and the mode");
    CHECK(hy_calib_record(path, B, 2, (uint64_t)4 << 30, "x", 0.010, 0.020, err, sizeof err) == 0, "%s", err);
    c = hy_calib_get(path, A, 2, (uint64_t)4 << 30, "x");
    CHECK(!c.per_model && c.runs == 1 && fabs(c.scale - 0.5) < 1e-9, "machine at 4 GiB: %g", c.scale);
    c = hy_calib_get(path, 0x4444, 2, 0, "x");
    CHECK(c.runs == 2 && fabs(c.scale - sqrt(1.5 * 0.75)) < 1e-9, "machine without a GPU unchanged: %g", c.scale);

    /* a tiny model is kept for itself, not for the machine */
    CHECK(hy_calib_record(path, B, 2, 0, "x", 0.005, 0.0005, err, sizeof err) == 0, "%s", err);
    c = hy_calib_get(path, B, 2, 0, "x");
    CHECK(c.per_model && fabs(c.scale - 10) < 1e-9, "tiny model: %g", c.scale);
    c = hy_calib_get(path, 0x3333, 2, 0, "x");
    CHECK(c.runs == 2 && fabs(c.scale - sqrt(1.5 * 0.75)) < 1e-9, "machine unchanged by the tiny model: %g",
          c.scale);

    /* absurd ratios are refused and change nothing */
    CHECK(hy_calib_record(path, A, 2, 0, "x", 10.0, 0.020, err, sizeof err) < 0 && strstr(err, "not kept"), "500x: %s", err);
    CHECK(hy_calib_record(path, A, 2, 0, "x", 0.001, 0.0, err, sizeof err) < 0, "no prediction");
    CHECK(hy_calib_record(path, A, 2, 0, "x", NAN, 0.02, err, sizeof err) < 0, "NaN");
    c = hy_calib_get(path, A, 2, 0, "x");
    CHECK(c.runs == 2, "refused records leave it: %d", c.runs);

    /* garbage in the file: ignored (scale 1), and the next record writes a good one */
    FILE *f = fopen(path, "w");
    fputs("{\"version\": 2, \"models\": {\"0000000000001111/t2/gpu0G/x\": {\"scale\": -4, \"runs\": 3}}, \"machine\": 7}", f);
    fclose(f);
    c = hy_calib_get(path, A, 2, 0, "x");
    CHECK(c.scale == 1 && c.runs == 0, "bad entries ignored: %g %d", c.scale, c.runs);
    /* a good entry of version 1 (ratios against another prediction): not used */
    f = fopen(path, "w");
    fputs("{\"version\": 1, \"models\": {\"0000000000001111/t2/gpu0G/x\": {\"scale\": 1.5, \"runs\": 3}}}", f);
    fclose(f);
    c = hy_calib_get(path, A, 2, 0, "x");
    CHECK(c.scale == 1 && c.runs == 0, "an older version's entry used: %g %d", c.scale, c.runs);
    f = fopen(path, "w");
    fputs("not json", f);
    fclose(f);
    c = hy_calib_get(path, A, 2, 0, "x");
    CHECK(c.scale == 1 && c.runs == 0, "unreadable file ignored");
    CHECK(hy_calib_record(path, A, 2, 0, "x", 0.02, 0.01, err, sizeof err) == 0, "%s", err);
    c = hy_calib_get(path, A, 2, 0, "x");
    CHECK(c.per_model && c.runs == 1 && fabs(c.scale - 2) < 1e-9, "rewritten: %g", c.scale);
    /* storage: bytes over busy time against the profile's figure, per mode, for the machine; kept
     * beside the compute ratios without touching them */
    const char *modes[2] = {"x", "y"};
    hy_calib r[2];
    hy_calib_get_read_modes(path, modes, 2, r);
    CHECK(r[0].scale == 1 && r[0].runs == 0 && r[1].runs == 0, "no storage figure yet");
    uint64_t G = 1000000000ull;
    CHECK(hy_calib_record_read(path, "x", 3 * G, 1.0, 2.0, err, sizeof err) == 0, "%s", err);
    hy_calib_get_read_modes(path, modes, 2, r);
    CHECK(r[0].runs == 1 && fabs(r[0].scale - 1.5) < 1e-9 && r[1].runs == 0, "3 GB/s against 2: %g (%d), y %d",
          r[0].scale, r[0].runs, r[1].runs);
    CHECK(hy_calib_record_read(path, "x", 1 * G, 1.0, 2.0, err, sizeof err) == 0, "%s", err);
    hy_calib_get_read_modes(path, modes, 2, r);
    CHECK(r[0].runs == 2 && fabs(r[0].scale - sqrt(1.5 * 0.5)) < 1e-9, "moved halfway: %g", r[0].scale);
    c = hy_calib_get(path, A, 2, 0, "x");
    CHECK(c.per_model && c.runs == 1 && fabs(c.scale - 2) < 1e-9, "compute untouched: %g", c.scale);
    CHECK(hy_calib_record_read(path, "x", HY_CALIB_READ_MIN_BYTES - 1, 0.1, 2.0, err, sizeof err) < 0, "too little read");
    CHECK(hy_calib_record_read(path, "x", 3 * G, 0, 2.0, err, sizeof err) < 0, "no busy time");
    CHECK(hy_calib_record_read(path, "x", 3 * G, 1.0, 0, err, sizeof err) < 0, "no profile figure");
    CHECK(hy_calib_record_read(path, "x", 100 * G, 1.0, 2.0, err, sizeof err) < 0 && strstr(err, "not kept"),
          "50x: %s", err);
    hy_calib_get_read_modes(path, modes, 2, r);
    CHECK(r[0].runs == 2, "refused records leave it: %d", r[0].runs);
    /* a directory that cannot be written: an error naming the file */
    CHECK(hy_calib_record("/proc/hypura-no/calibration.json", A, 2, 0, "x", 0.02, 0.01, err, sizeof err) < 0 &&
              strstr(err, "/proc/hypura-no/calibration.json"),
          "unwritable: %s", err);
    unlink(path);
    return check_done("calib");
}
