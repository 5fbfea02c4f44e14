/* hy_place: a plan's tiers as libllama's tensor_buft_overrides.
 *
 * Every tensor the plan put on the GPU goes to the GPU's buffer type, every
 * tensor on NVMe to the streaming buffer type, and everything else to the RAM
 * tier's buffer type (a catch-all last pattern; libllama takes the first
 * pattern that matches). Patterns are few: one per tier and tensor kind
 * ("ffn_up.weight"), alternating the layers, since libllama compiles every
 * pattern for every tensor. */
#ifndef HY_PLACE_H
#define HY_PLACE_H

#include <stddef.h>

#include "ggml-backend.h"
#include "gguf/hy_gguf.h"
#include "llama.h"
#include "plan/hy_plan.h"

typedef struct hy_place hy_place;

/* buft[tier]: the buffer type of each tier; NULL for a tier the plan does not
 * use (an error if it does). buft[HY_TIER_RAM] may be NULL only when no tensor
 * needs overriding (then no catch-all is added). */
int hy_place_make(const hy_model_desc *d, const hy_plan *plan, ggml_backend_buffer_type_t buft[HY_TIER_COUNT],
                  hy_place **out, char *err, size_t errlen);
/* NULL-terminated, owned by the placement (valid until hy_place_free). */
const struct llama_model_tensor_buft_override *hy_place_overrides(const hy_place *p);
int  hy_place_n_patterns(const hy_place *p);
void hy_place_free(hy_place *p);

/* The first GPU among ggml's devices, or NULL. */
ggml_backend_dev_t hy_place_gpu_device(void);

#endif
