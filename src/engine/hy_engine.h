/* hy_engine: the libllama glue. Loads a model with the placement the plan chose
 * (buffer-type overrides per tensor, an eval callback from the streaming layer),
 * tokenizes, applies the model's chat template, samples and generates.
 *
 * Invariants:
 *  - The engine never computes anything itself: every forward pass is
 *    llama_decode on the pinned libllama, so any mode (resident or streamed)
 *    runs the same kernels on the same data. Kernel choice (CPU weight
 *    repacking) is an explicit parameter, never implied by the mode.
 *  - hy_engine_generate runs one sequence (KV sequence 0); the KV cache keeps
 *    the tokens of the last generation and a new prompt that shares a prefix
 *    with them decodes only the rest (what interactive chat needs). Several
 *    sequences at once, as the server runs them, are hy_batch.h's, on an
 *    engine opened with n_seq_max > 1.
 *  - Errors are returned with a one-line reason; libllama's own error log line
 *    is captured into that reason rather than printed. */
#ifndef HY_ENGINE_H
#define HY_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ggml-backend.h"
#include "llama.h"

typedef struct hy_engine hy_engine;

typedef struct {
    const char *model_path;
    int  n_ctx;            /* 0 = min(4096, training context) */
    int  n_batch;          /* prompt batch (logical and physical), default 512 */
    int  n_threads;        /* 0 = number of cores */
    int  n_gpu_layers;     /* default 0 (-1 = all): libllama's "GPU layers" (K/V and default placement);
                              the plan's overrides place each weight */
    ggml_backend_dev_t gpu; /* the one GPU to use (split mode none), or NULL for none: no device is
                              given to libllama, so nothing (compute buffers, big-batch offload) uses a GPU */
    bool all_devices;      /* with gpu NULL: libllama's own device choice (every GPU), as --naive runs */
    const ggml_backend_dev_t *devices; /* with gpu NULL: these devices (NULL-terminated; remote tiers), split by
                              layer as tensor_split says over the last n_gpu_layers layers */
    const float *tensor_split;
    bool no_host;          /* CPU weights not in the GPU's pinned host buffers (llama.cpp's --no-host), so
                              that they can be repacked; ops on them then stay on the CPU for big batches */
    bool no_op_offload;    /* keep ops on weights in host memory on the CPU, also for big batches
                              (streamed weights must never be copied before they are read) */
    bool repack;           /* let the CPU backend repack weights (llama.cpp's extra buffer types):
                              other kernels, so other low bits of the logits */
    bool use_mmap;         /* load through the loader's mapping (the streaming buffer types rely on
                              it, see hy_stream.h); false: read into anonymous memory */
    bool progress;         /* draw a load progress bar on stderr when it is a terminal */
    bool verbose;          /* pass libllama's log through */
    bool lazy_load;        /* mmap load without prefetching the file (streamed models; see hy_loadguard.h) */
    int  n_seq_max;        /* sequences the context decodes together (<= 1: one, as `run`); more: one
                              KV cache of n_ctx cells shared by all of them (libllama's kv_unified), so
                              a batch of several sequences is one ubatch, one pass over the weights
                              (hy_batch.h) */
    const struct llama_model_tensor_buft_override *overrides;   /* NULL-terminated, or NULL */
    ggml_backend_sched_eval_callback cb_eval;
    void *cb_eval_user_data;
    ggml_abort_callback abort_cb;    /* returning true aborts the decode (an I/O error upstream) */
    void *abort_cb_data;
    /* called once the model and its context exist, before the load time is taken:
     * buffer types that fill tensors asynchronously finish (or fail the load) here */
    int (*loaded)(void *ud, char *err, size_t errlen);
    void *loaded_ud;
    /* called once the model is loaded, before its context (and so its scheduler) exists:
     * where weights may still be moved to other buffers (the VRAM expert cache) */
    int (*model_loaded)(void *ud, char *err, size_t errlen);
    void *model_loaded_ud;
} hy_engine_params;

hy_engine_params hy_engine_default_params(void);

typedef struct {
    float    temp;         /* <= 0: greedy */
    int      top_k;        /* 0 = off */
    float    top_p;        /* 1 = off */
    uint32_t seed;
    int      n_predict;    /* tokens to generate; < 0 = until end of generation or context */
} hy_sample_params;

hy_sample_params hy_sample_default_params(void);

typedef struct {
    int    n_prompt;        /* prompt tokens */
    int    n_prompt_eval;   /* of those, decoded now (the rest came from the cache) */
    int    n_gen;           /* generated tokens */
    double t_prompt_s, t_gen_s;
    const char *stop_reason; /* "stop" (end-of-generation token), "length", "cancelled", "context" */
} hy_gen_stats;

/* Called for each generated piece of text; return false to stop generating. */
typedef bool (*hy_piece_cb)(const char *piece, size_t len, void *user_data);
/* Called with the logits the sampler used for each generated token. */
typedef void (*hy_logits_cb)(const float *logits, int n_vocab, void *user_data);

int  hy_engine_open(const hy_engine_params *p, hy_engine **out, char *err, size_t errlen);
void hy_engine_free(hy_engine *e);

double hy_engine_load_seconds(const hy_engine *e);
int    hy_engine_n_ctx(const hy_engine *e);
int    hy_engine_n_vocab(const hy_engine *e);
struct llama_model   *hy_engine_model(hy_engine *e);
struct llama_context *hy_engine_context(hy_engine *e);

/* Tokenize text (adding BOS as the model wants when add_special). *out is malloc'd. */
int hy_engine_tokenize(hy_engine *e, const char *text, bool add_special, int32_t **out, int *n_out,
                       char *err, size_t errlen);

/* Format a conversation with the model's chat template (the GGUF's
 * tokenizer.chat_template, or chatml when the model has none).
 * roles[i]/contents[i]; *out is malloc'd. */
int hy_engine_format_chat(hy_engine *e, const char *const *roles, const char *const *contents, int n,
                          bool add_assistant, char **out, char *err, size_t errlen);

/* Generate from raw prompt text (no template applied). */
int hy_engine_generate(hy_engine *e, const char *prompt, const hy_sample_params *sp, hy_piece_cb on_piece,
                       void *piece_ud, hy_logits_cb on_logits, void *logits_ud, hy_gen_stats *stats,
                       char *err, size_t errlen);

/* The sampler chain hy_engine_generate uses for these parameters (greedy at temp <= 0),
 * for callers that sample themselves (hy_batch.c); free with llama_sampler_free. */
struct llama_sampler *hy_engine_make_sampler(const hy_sample_params *sp);

/* Length of the longest prefix of s[0..n) that ends on a UTF-8 character boundary:
 * the part of a token's bytes that can be handed out as text now. */
size_t hy_utf8_complete_prefix(const char *s, size_t n);

/* libllama's last error line since the previous call ("no reason given by
 * libllama" when none), e.g. after a failed llama_decode. */
void hy_engine_last_error(char *buf, size_t len);

/* Forget the cached tokens (the next generate decodes its whole prompt). */
void hy_engine_reset(hy_engine *e);

/* One throwaway decode (BOS), then a clean cache — what llama.cpp's tools do
 * before timing: first-touch page faults and thread start-up are paid here.
 * Worth it only when the model is resident (a streamed warm-up reads it all). */
int hy_engine_warmup(hy_engine *e, char *err, size_t errlen);

#endif
