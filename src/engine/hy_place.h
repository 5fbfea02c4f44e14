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
/* Full-resident with libllama's repacked kernels and no GPU: which buffer type
 * each tensor needs for the result to be llama.cpp's own, bit for bit.
 *   HY_PLACE_REPACK   libllama would repack it (CPU_REPACK): its loader asks the
 *                     CPU device whether the repacking buffer type supports the
 *                     op the weight feeds (llama-model-loader.cpp,
 *                     weight_buft_supported); the same question is asked here,
 *                     with the op of the weights hypura knows: MUL_MAT for
 *                     projections, output and routers, MUL_MAT_ID for experts.
 *   HY_PLACE_HOST     never repacked (no op it could feed is): host memory.
 *   HY_PLACE_LIBLLAMA repackable, but fed to an op hypura does not know
 *                     (token_embd: GET_ROWS, or a tied output head's MUL_MAT):
 *                     no pattern, libllama chooses.
 * Returns 0 with cls[n_tensors] filled and *repack_buft = ggml's CPU_REPACK type;
 * 1 when this cannot be said (no CPU_REPACK, or other extra or accelerator buffer
 * types that libllama would try first): then placement is left to libllama. */
enum { HY_PLACE_REPACK = HY_TIER_COUNT, HY_PLACE_HOST, HY_PLACE_LIBLLAMA };
int hy_place_repack_classes(const hy_model_desc *d, signed char *cls, ggml_backend_buffer_type_t *repack_buft);
/* Overrides from such classes: HY_PLACE_REPACK tensors to repack_buft, HY_PLACE_HOST
 * ones to host_buft (a catch-all when no tensor is left to libllama), and tensors
 * classed HY_TIER_NVME (a streamed plan with its resident weights repacked) to
 * nvme_buft, which may be NULL when no tensor is. */
int hy_place_make_classes(const hy_model_desc *d, const signed char *cls, ggml_backend_buffer_type_t host_buft,
                          ggml_backend_buffer_type_t repack_buft, ggml_backend_buffer_type_t nvme_buft, hy_place **out,
                          char *err, size_t errlen);
/* NULL-terminated, owned by the placement (valid until hy_place_free). */
const struct llama_model_tensor_buft_override *hy_place_overrides(const hy_place *p);
int  hy_place_n_patterns(const hy_place *p);
void hy_place_free(hy_place *p);

/* The first GPU among ggml's devices, or NULL. */
ggml_backend_dev_t hy_place_gpu_device(void);

#endif
