/* hy_policy: which expert-cache eviction policy a model's routing favours,
 * from measurement. While expert-streaming runs with one policy, a shadow
 * cache of the same capacity (hy_xcache, no I/O) replays the same routed
 * accesses under the other policy; the run adds both policies' hits to a small
 * record kept next to the model's co-activation statistics
 * ($XDG_DATA_HOME/hypura/coact/<model id>.policy.json). The next run with
 * the automatic policy takes the one that hit more, once the record holds
 * enough accesses to tell; until then decayed LFU, which favours skewed
 * routing, the common case.
 *
 * Invariants: hits of either policy <= accesses; a record that is missing,
 * foreign (another model's hash) or malformed reads as empty, never as an
 * error that stops a run; saving writes a temporary file and renames it. */
#ifndef HY_POLICY_H
#define HY_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "cache/hy_xcache.h"

typedef struct {
    uint64_t accesses;   /* routed accesses replayed under both policies */
    uint64_t hits[2];    /* indexed by hy_xc_policy: HY_XC_LFU, HY_XC_LRU */
} hy_policy_record;

/* accesses before a record decides (below this the default stands) */
#define HY_POLICY_MIN_ACCESSES 2000

/* the record's path for a model, next to hy_coact_default_path's; 0 or -1 */
int hy_policy_path(uint64_t header_hash, char *buf, size_t len);
/* 0 and *r filled, or -1 (missing, foreign or malformed: *r zeroed) */
int hy_policy_load(const char *path, uint64_t header_hash, hy_policy_record *r);
int hy_policy_save(const char *path, uint64_t header_hash, const hy_policy_record *r, char *err, size_t errlen);
/* the policy the record favours (LFU while it cannot tell); why says so in words */
hy_xc_policy hy_policy_choose(const hy_policy_record *r, char *why, size_t len);

#endif
