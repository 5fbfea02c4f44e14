/* hy_calib: how fast decoding really computes here, kept from earlier runs.
 *
 * The plan predicts a token's compute time from the bytes it reads over the
 * profile's memcpy bandwidth (hy_plan_predict). What a decode reaches differs by
 * machine and model: the kernels of a weight type, the graph's hundreds of small
 * nodes and their thread barriers, memcpy's own run-to-run spread (12.9 to 20
 * GB/s between two profiles of this 2-core machine; on the H200 machine's 16
 * threads a resident MoE decoded at about half the speed memcpy predicted). A run measures its
 * compute time per token (generation time less the stalls waiting for storage)
 * and hy_calib keeps the ratio of that to the raw prediction, per model and
 * thread count and for the machine as a whole, in hy_cache_dir()/calibration.json
 * (the cache is the machine's, like profile.json). The next plan of that model
 * multiplies its compute time by the model's ratio, or by the machine's when the
 * model has none: compute_scale in hy_plan_params.
 *
 * Each new ratio moves the kept one halfway (in log space), so the figure
 * follows a machine that changes and one odd run moves it by at most sqrt(r).
 * Ratios outside [1/20, 20] are not kept (a suspended process, a broken clock).
 * An entry's key is the model's id (hy_model_desc.model_id), the thread count, the GPU budget
 * in whole GiB (the GPU's share of the work changes what a token's compute is)
 * and the plan's mode (a streamed pass is cut into pieces at the nodes the eval
 * callback serves: on the H200 machine's 16 threads expert-streaming a
 * qwen3moe with 99 % cache hits computed 2.6x its raw prediction, resident
 * 0.8x); the machine's figure is kept per thread count, GPU budget and mode.
 * A file that cannot be read is ignored, and rewritten by the next record. */
#ifndef HY_CALIB_H
#define HY_CALIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    double scale;   /* what to multiply the predicted compute time with (1: nothing kept) */
    int runs;       /* runs behind it */
    bool per_model; /* this model's own (else the machine's, or nothing) */
} hy_calib;

/* The ratio kept for this model (its model_id) at this thread count and GPU budget, else the
 * machine's; scale 1 and runs 0 when there is none. Path NULL: the default file. */
hy_calib hy_calib_get(const char *path, uint64_t model_hash, int threads, uint64_t gpu_budget, const char *mode);
/* The same for n modes at once, the file read once. */
void hy_calib_get_modes(const char *path, uint64_t model_hash, int threads, uint64_t gpu_budget,
                        const char *const modes[], int n, hy_calib out[]);
/* Runs whose raw prediction is below this many seconds of compute per token
 * (tiny models, where fixed per-token costs dominate) are kept for their model
 * only, not for the machine's figure that other models fall back on. */
#define HY_CALIB_MACHINE_MIN_S 0.002
/* Keeps measured / predicted compute seconds per token of one run (predicted:
 * the raw figure, before any scale). 0, or < 0 with err (the ratio out of
 * range, the file not writable). Two runs recording at once may lose one. */
int hy_calib_record(const char *path, uint64_t model_hash, int threads, uint64_t gpu_budget, const char *mode,
                    double measured_s, double predicted_s, char *err, size_t errlen);
/* Storage, the same way for the machine: what a run's reads reached (bytes read over the time
 * reads were in flight) against the profile's sequential figure, per mode (whole groups are read
 * in large requests, expert slices in small ones). The profile measures the disk once, and
 * a disk's speed moves: this machine's profile said 1.58 GB/s where the streamed dense-style runs
 * of a bench read at 1.94-2.19 GB/s, and `hypura iobench` gave 1.15 and 1.60 minutes apart.
 * The plan multiplies the profile's figure by the kept ratio (read_scale in hy_plan_params).
 * Runs that read less than HY_CALIB_READ_MIN_BYTES while generating are not kept. */
#define HY_CALIB_READ_MIN_BYTES ((uint64_t)256 << 20)
/* The "mode" under which expert-streaming keeps the share of its read time that decode waited for
 * (stalls over the time reads were in flight, floored at 0.05), per model like compute: pre-gating
 * reads a layer's experts while the one before computes, so a token waits for only part of its
 * reads (gpt-oss under 0.55x: a second run predicted at every read waited for ran 1.31x faster). */
#define HY_CALIB_IO_WAIT "expert-streaming/io-wait"
void hy_calib_get_read_modes(const char *path, const char *const modes[], int n, hy_calib out[]);
int hy_calib_record_read(const char *path, const char *mode, uint64_t bytes, double busy_s, double profile_gbps,
                         char *err, size_t errlen);
/* hy_cache_dir()/calibration.json; 0 or < 0. */
int hy_calib_default_path(char *buf, size_t len);

#endif
