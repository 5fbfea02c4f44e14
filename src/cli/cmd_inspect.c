/* hypura inspect: what is in a GGUF file, from its header alone. */
#include "cli/cli.h"
#include "gguf/hy_gguf.h"
#include "util/hy_util.h"

#include <ggml.h>
#include <jansson.h>
#include <llama.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *model;
    bool json;
    bool tensors;
    /* HOOK(--plan): the planner (src/plan/) adds `bool plan;` here, parses the
     * flag in parse_args, and calls its plan function in hy_cmd_inspect where
     * marked below; nothing else in this file needs to change. */
} inspect_opts;

static void usage(FILE *f) {
    fprintf(f, "usage: hypura inspect MODEL.gguf [--json] [--tensors] [--plan [budget flags]]\n\n"
               "Reads the GGUF header only (no tensor data) and prints the architecture,\n"
               "parameter count, quantization mix, bytes per role and per layer,\n"
               "hyperparameters and, for mixture-of-experts models, the expert layout.\n\n"
               "  --json      one JSON object on stdout (always includes every tensor)\n"
               "  --tensors   also list every tensor: name, role, layer, type, shape,\n"
               "              size, offset, expert stride\n"
               "  --plan      the placement plan for this machine instead (see hypura estimate --help)\n"
               "  -h, --help  this help\n");
}

/* 0 ok, 1 help printed, 2 usage error (message printed) */
static int parse_args(int argc, char **argv, inspect_opts *o) {
    memset(o, 0, sizeof *o);
    bool no_more_opts = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!no_more_opts && a[0] == '-' && a[1]) {
            if (!strcmp(a, "--")) no_more_opts = true;
            else if (!strcmp(a, "--json")) o->json = true;
            else if (!strcmp(a, "--tensors")) o->tensors = true;
            else if (!strcmp(a, "-h") || !strcmp(a, "--help")) return 1;
            else {
                fprintf(stderr, "hypura inspect: unknown option '%s' (see hypura inspect --help)\n", a);
                return 2;
            }
        } else if (!o->model) {
            o->model = a;
        } else {
            fprintf(stderr, "hypura inspect: more than one model given ('%s', '%s')\n", o->model, a);
            return 2;
        }
    }
    if (!o->model) {
        fprintf(stderr, "hypura inspect: no model given (usage: hypura inspect MODEL.gguf [--json] [--tensors])\n");
        return 2;
    }
    return 0;
}

/* ---- helpers -------------------------------------------------------------- */

static const char *ftype_name(int ft) {
    static const char *const names[] = {
        [LLAMA_FTYPE_ALL_F32] = "F32",          [LLAMA_FTYPE_MOSTLY_F16] = "F16",
        [LLAMA_FTYPE_MOSTLY_Q4_0] = "Q4_0",     [LLAMA_FTYPE_MOSTLY_Q4_1] = "Q4_1",
        [LLAMA_FTYPE_MOSTLY_Q8_0] = "Q8_0",     [LLAMA_FTYPE_MOSTLY_Q5_0] = "Q5_0",
        [LLAMA_FTYPE_MOSTLY_Q5_1] = "Q5_1",     [LLAMA_FTYPE_MOSTLY_Q2_K] = "Q2_K",
        [LLAMA_FTYPE_MOSTLY_Q3_K_S] = "Q3_K_S", [LLAMA_FTYPE_MOSTLY_Q3_K_M] = "Q3_K_M",
        [LLAMA_FTYPE_MOSTLY_Q3_K_L] = "Q3_K_L", [LLAMA_FTYPE_MOSTLY_Q4_K_S] = "Q4_K_S",
        [LLAMA_FTYPE_MOSTLY_Q4_K_M] = "Q4_K_M", [LLAMA_FTYPE_MOSTLY_Q5_K_S] = "Q5_K_S",
        [LLAMA_FTYPE_MOSTLY_Q5_K_M] = "Q5_K_M", [LLAMA_FTYPE_MOSTLY_Q6_K] = "Q6_K",
        [LLAMA_FTYPE_MOSTLY_IQ2_XXS] = "IQ2_XXS", [LLAMA_FTYPE_MOSTLY_IQ2_XS] = "IQ2_XS",
        [LLAMA_FTYPE_MOSTLY_Q2_K_S] = "Q2_K_S", [LLAMA_FTYPE_MOSTLY_IQ3_XS] = "IQ3_XS",
        [LLAMA_FTYPE_MOSTLY_IQ3_XXS] = "IQ3_XXS", [LLAMA_FTYPE_MOSTLY_IQ1_S] = "IQ1_S",
        [LLAMA_FTYPE_MOSTLY_IQ4_NL] = "IQ4_NL", [LLAMA_FTYPE_MOSTLY_IQ3_S] = "IQ3_S",
        [LLAMA_FTYPE_MOSTLY_IQ3_M] = "IQ3_M",   [LLAMA_FTYPE_MOSTLY_IQ2_S] = "IQ2_S",
        [LLAMA_FTYPE_MOSTLY_IQ2_M] = "IQ2_M",   [LLAMA_FTYPE_MOSTLY_IQ4_XS] = "IQ4_XS",
        [LLAMA_FTYPE_MOSTLY_IQ1_M] = "IQ1_M",   [LLAMA_FTYPE_MOSTLY_BF16] = "BF16",
        [LLAMA_FTYPE_MOSTLY_TQ1_0] = "TQ1_0",   [LLAMA_FTYPE_MOSTLY_TQ2_0] = "TQ2_0",
        [LLAMA_FTYPE_MOSTLY_MXFP4_MOE] = "MXFP4_MOE", [LLAMA_FTYPE_MOSTLY_NVFP4] = "NVFP4",
        [LLAMA_FTYPE_MOSTLY_Q1_0] = "Q1_0",     [LLAMA_FTYPE_MOSTLY_Q2_0] = "Q2_0",
    };
    int base = ft & ~LLAMA_FTYPE_GUESSED;
    if (ft < 0 || base >= (int)(sizeof names / sizeof names[0]) || !names[base]) return NULL;
    return names[base];
}

static const char *fmt_count(uint64_t n, char *buf, size_t len) {
    if (n >= 1000000000ULL) snprintf(buf, len, "%.2f B", n / 1e9);
    else if (n >= 1000000ULL) snprintf(buf, len, "%.1f M", n / 1e6);
    else if (n >= 1000ULL) snprintf(buf, len, "%.1f K", n / 1e3);
    else snprintf(buf, len, "%" PRIu64, n);
    return buf;
}

static const char *fmt_shape(const hy_tensor_info *t, char *buf, size_t len) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, len - o, "[");
    for (int d = 0; d < t->n_dims && o < len; d++)
        o += (size_t)snprintf(buf + o, len - o, "%s%" PRId64, d ? ", " : "", t->ne[d]);
    if (o < len) snprintf(buf + o, len - o, "]");
    return buf;
}

static double pct(uint64_t part, uint64_t whole) { return whole ? 100.0 * (double)part / (double)whole : 0.0; }

/* bytes in the file that are not valid UTF-8 (hostile names) must not break the JSON */
static json_t *jstr(const char *s) {
    json_t *j = json_string(s);
    if (j) return j;
    /* keep valid UTF-8 sequences, replace every other byte with '?' */
    char buf[4200];
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p && o + 5 < sizeof buf) {
        int n = *p < 0x80 ? 1 : (*p & 0xE0) == 0xC0 ? 2 : (*p & 0xF0) == 0xE0 ? 3 : (*p & 0xF8) == 0xF0 ? 4 : 0;
        bool ok = n > 0;
        for (int i = 1; ok && i < n; i++) ok = (p[i] & 0xC0) == 0x80;
        if (ok) {
            memcpy(buf + o, p, (size_t)n);
            o += (size_t)n;
            p += n;
        } else {
            buf[o++] = '?';
            p++;
        }
    }
    buf[o] = 0;
    j = json_string(buf); /* still NULL for overlong forms or surrogates: give up on those bytes */
    if (j) return j;
    for (size_t i = 0; i < o; i++)
        if ((unsigned char)buf[i] >= 0x80) buf[i] = '?';
    return json_string(buf);
}

static int set(json_t *obj, const char *key, json_t *val) { return json_object_set_new(obj, key, val); }
static json_t *jint(uint64_t v) { return json_integer((json_int_t)v); }

typedef struct {
    uint64_t bytes;
    int64_t n;
} tally;

typedef struct {
    tally total;
    uint64_t role[HY_ROLE_COUNT];
} layer_tally;

typedef struct {
    int64_t total_tensors;
    uint64_t total_bytes;
    tally by_type[GGML_TYPE_COUNT];
    tally by_role[HY_ROLE_COUNT];
    layer_tally *by_layer; /* n_layer */
} summary;

static int summarize(const hy_model_desc *d, summary *s) {
    memset(s, 0, sizeof *s);
    if (d->n_layer > 0) {
        s->by_layer = calloc((size_t)d->n_layer, sizeof *s->by_layer);
        if (!s->by_layer) return -1;
    }
    for (int64_t i = 0; i < d->n_tensors; i++) {
        const hy_tensor_info *t = &d->tensors[i];
        s->total_tensors++;
        s->total_bytes += t->size;
        if (t->type >= 0 && t->type < GGML_TYPE_COUNT) {
            s->by_type[t->type].n++;
            s->by_type[t->type].bytes += t->size;
        }
        s->by_role[t->role].n++;
        s->by_role[t->role].bytes += t->size;
        if (t->layer >= 0 && t->layer < d->n_layer) {
            s->by_layer[t->layer].total.n++;
            s->by_layer[t->layer].total.bytes += t->size;
            s->by_layer[t->layer].role[t->role] += t->size;
        }
    }
    return 0;
}

/* types in order of bytes, largest first */
static int order_types(const summary *s, int *order) {
    int n = 0;
    for (int t = 0; t < GGML_TYPE_COUNT; t++)
        if (s->by_type[t].n) order[n++] = t;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && s->by_type[order[j]].bytes > s->by_type[order[j - 1]].bytes; j--) {
            int x = order[j];
            order[j] = order[j - 1];
            order[j - 1] = x;
        }
    return n;
}

/* "blk.7.ffn_up_exps.weight" → "ffn_up_exps.weight" */
static const char *after_layer(const char *name) {
    if (strncmp(name, "blk.", 4) != 0) return name;
    const char *p = name + 4;
    while (*p >= '0' && *p <= '9') p++;
    return *p == '.' ? p + 1 : name;
}

/* ---- human output ----------------------------------------------------------- */

typedef struct {
    const char *suffix;
    int type, n_experts;
    uint64_t stride;
    int first, last; /* current layer run */
    char layers[160];
} expert_group;

static void group_flush_run(expert_group *g) {
    size_t o = strlen(g->layers);
    if (o + 16 >= sizeof g->layers) {
        if (!strstr(g->layers, "...")) snprintf(g->layers + o, sizeof g->layers - o, ",...");
        return;
    }
    if (g->first == g->last) snprintf(g->layers + o, sizeof g->layers - o, "%s%d", o ? "," : "", g->first);
    else snprintf(g->layers + o, sizeof g->layers - o, "%s%d-%d", o ? "," : "", g->first, g->last);
}

static void print_experts(const hy_model_desc *d) {
    expert_group *g = NULL;
    size_t ng = 0;
    for (int64_t i = 0; i < d->n_tensors; i++) {
        const hy_tensor_info *t = &d->tensors[i];
        if (t->role != HY_ROLE_EXPERT) continue;
        const char *sfx = after_layer(t->name);
        size_t k;
        for (k = 0; k < ng; k++)
            if (!strcmp(g[k].suffix, sfx) && g[k].type == t->type && g[k].n_experts == t->n_experts &&
                g[k].stride == t->expert_stride)
                break;
        if (k == ng) {
            expert_group *ngp = realloc(g, (ng + 1) * sizeof *g);
            if (!ngp) break;
            g = ngp;
            memset(&g[ng], 0, sizeof g[ng]);
            g[ng].suffix = sfx;
            g[ng].type = t->type;
            g[ng].n_experts = t->n_experts;
            g[ng].stride = t->expert_stride;
            g[ng].first = g[ng].last = t->layer;
            ng++;
            continue;
        }
        if (t->layer == g[k].last + 1) {
            g[k].last = t->layer;
        } else {
            group_flush_run(&g[k]);
            g[k].first = g[k].last = t->layer;
        }
    }
    printf("\nexpert tensors (slice = one expert's bytes)\n");
    printf("  %-28s %-8s %8s %12s  %s\n", "tensor", "type", "experts", "slice", "layers");
    for (size_t k = 0; k < ng; k++) {
        char b[32];
        group_flush_run(&g[k]);
        printf("  %-28s %-8s %8d %12s  %s\n", g[k].suffix, ggml_type_name((enum ggml_type)g[k].type), g[k].n_experts,
               hy_fmt_bytes(g[k].stride, b, sizeof b), g[k].layers);
    }
    free(g);
}

static void print_human(const hy_model_desc *d, const summary *s, const inspect_opts *o) {
    char b1[32], b2[32], b3[32], b4[32], b5[32];
    const char *ft = ftype_name(d->file_type);
    printf("%s\n", d->path);
    printf("  architecture   %s\n", d->arch[0] ? d->arch : "(none)");
    if (d->name[0]) printf("  name           %s\n", d->name);
    printf("  parameters     %s (%" PRIu64 ")\n", fmt_count(d->n_params, b1, sizeof b1), d->n_params);
    printf("  file size      %s (%" PRIu64 " bytes)\n", hy_fmt_bytes(d->file_size, b1, sizeof b1), d->file_size);
    printf("  tensor data    %s in %" PRId64 " tensors\n", hy_fmt_bytes(s->total_bytes, b1, sizeof b1), d->n_tensors);
    if (d->file_type >= 0)
        printf("  file type      %s (%d)%s\n", ft ? ft : "unknown", d->file_type,
               (d->file_type & LLAMA_FTYPE_GUESSED) ? " guessed" : "");
    printf("  GGUF           version %" PRIu32 ", %" PRId64 " key-value pairs, alignment %" PRIu64
           ", data at offset %" PRIu64 "\n",
           d->version, d->n_kv, d->alignment, d->data_offset);
    printf("  header hash    %016" PRIx64 "  model id %016" PRIx64 " (keys its statistics and calibration)\n",
           d->header_hash, d->model_id);

    printf("\nhyperparameters\n");
    printf("  layers %d  embedding %d  feed-forward %d  heads %d  kv-heads %d  vocab %d  context %d\n", d->n_layer,
           d->n_embd, d->n_ff, d->n_head, d->n_head_kv, d->n_vocab, d->n_ctx_train);
    bool moe = d->n_expert > 0 || s->by_role[HY_ROLE_EXPERT].n > 0;
    if (moe) printf("  experts %d, used per token (top-k) %d\n", d->n_expert, d->n_expert_used);

    if (d->n_tensors == 0) {
        printf("\nno tensors (vocabulary-only file?)\n");
        return;
    }

    int order[GGML_TYPE_COUNT];
    int nt = order_types(s, order);
    printf("\nquantization mix\n  %-10s %8s %12s %7s\n", "type", "tensors", "bytes", "share");
    for (int i = 0; i < nt; i++) {
        const tally *t = &s->by_type[order[i]];
        printf("  %-10s %8" PRId64 " %12s %6.1f%%\n", ggml_type_name((enum ggml_type)order[i]), t->n,
               hy_fmt_bytes(t->bytes, b1, sizeof b1), pct(t->bytes, s->total_bytes));
    }

    printf("\nby role\n  %-10s %8s %12s %7s\n", "role", "tensors", "bytes", "share");
    for (int r = 0; r < HY_ROLE_COUNT; r++) {
        if (!s->by_role[r].n) continue;
        printf("  %-10s %8" PRId64 " %12s %6.1f%%\n", hy_role_name((hy_role)r), s->by_role[r].n,
               hy_fmt_bytes(s->by_role[r].bytes, b1, sizeof b1), pct(s->by_role[r].bytes, s->total_bytes));
    }

    if (d->n_layer > 0) {
        printf("\nby layer\n  %-5s %8s %12s %12s %12s %12s %12s\n", "layer", "tensors", "bytes", "attention", "ffn",
               "expert", "other");
        for (int l = 0; l < d->n_layer; l++) {
            const layer_tally *lt = &s->by_layer[l];
            uint64_t other = lt->total.bytes - lt->role[HY_ROLE_ATTN] - lt->role[HY_ROLE_FFN] - lt->role[HY_ROLE_EXPERT];
            printf("  %-5d %8" PRId64 " %12s %12s %12s %12s %12s\n", l, lt->total.n,
                   hy_fmt_bytes(lt->total.bytes, b1, sizeof b1), hy_fmt_bytes(lt->role[HY_ROLE_ATTN], b2, sizeof b2),
                   hy_fmt_bytes(lt->role[HY_ROLE_FFN], b3, sizeof b3),
                   hy_fmt_bytes(lt->role[HY_ROLE_EXPERT], b4, sizeof b4), hy_fmt_bytes(other, b5, sizeof b5));
        }
        uint64_t outside = s->total_bytes;
        for (int l = 0; l < d->n_layer; l++) outside -= s->by_layer[l].total.bytes;
        printf("  outside layers: %s\n", hy_fmt_bytes(outside, b1, sizeof b1));
    }

    if (s->by_role[HY_ROLE_EXPERT].n) print_experts(d);

    if (o->tensors) {
        printf("\ntensors\n  %-40s %-9s %5s %-8s %-24s %12s %14s %12s\n", "name", "role", "layer", "type", "shape",
               "size", "offset", "expert slice");
        for (int64_t i = 0; i < d->n_tensors; i++) {
            const hy_tensor_info *t = &d->tensors[i];
            char shape[96];
            printf("  %-40s %-9s %5d %-8s %-24s %12s %14" PRIu64 " %12s\n", t->name, hy_role_name(t->role), t->layer,
                   ggml_type_name((enum ggml_type)t->type), fmt_shape(t, shape, sizeof shape),
                   hy_fmt_bytes(t->size, b1, sizeof b1), t->offset,
                   t->expert_stride ? hy_fmt_bytes(t->expert_stride, b2, sizeof b2) : "-");
        }
    }
}

/* ---- JSON output ------------------------------------------------------------ */

static json_t *tensor_json(const hy_tensor_info *t) {
    json_t *o = json_object(), *shape = json_array();
    set(o, "name", jstr(t->name));
    set(o, "role", json_string(hy_role_name(t->role)));
    set(o, "layer", json_integer(t->layer));
    set(o, "type", json_string(ggml_type_name((enum ggml_type)t->type)));
    set(o, "type_id", json_integer(t->type));
    for (int d = 0; d < t->n_dims; d++) json_array_append_new(shape, json_integer(t->ne[d]));
    set(o, "shape", shape);
    set(o, "size", jint(t->size));
    set(o, "offset", jint(t->offset));
    set(o, "n_experts", json_integer(t->n_experts));
    set(o, "expert_stride", jint(t->expert_stride));
    return o;
}

static json_t *build_json(const hy_model_desc *d, const summary *s) {
    json_t *root = json_object();
    char hash[24];
    snprintf(hash, sizeof hash, "%016" PRIx64, d->header_hash);
    const char *ft = ftype_name(d->file_type);

    set(root, "path", jstr(d->path));
    set(root, "architecture", jstr(d->arch));
    set(root, "name", jstr(d->name));
    set(root, "gguf_version", json_integer(d->version));
    set(root, "file_size", jint(d->file_size));
    set(root, "data_offset", jint(d->data_offset));
    set(root, "alignment", jint(d->alignment));
    set(root, "header_hash", json_string(hash));
    char id[24];
    snprintf(id, sizeof id, "%016" PRIx64, d->model_id);
    set(root, "model_id", json_string(id));
    set(root, "file_type", json_integer(d->file_type));
    set(root, "file_type_name", ft ? json_string(ft) : json_null());
    set(root, "n_params", jint(d->n_params));
    set(root, "n_tensors", json_integer(d->n_tensors));
    set(root, "n_kv", json_integer(d->n_kv));
    set(root, "tensor_bytes", jint(s->total_bytes));

    json_t *hp = json_object();
    set(hp, "n_layer", json_integer(d->n_layer));
    set(hp, "n_embd", json_integer(d->n_embd));
    set(hp, "n_ff", json_integer(d->n_ff));
    set(hp, "n_head", json_integer(d->n_head));
    set(hp, "n_head_kv", json_integer(d->n_head_kv));
    set(hp, "n_expert", json_integer(d->n_expert));
    set(hp, "n_expert_used", json_integer(d->n_expert_used));
    set(hp, "n_vocab", json_integer(d->n_vocab));
    set(hp, "n_ctx_train", json_integer(d->n_ctx_train));
    set(root, "hparams", hp);
    set(root, "moe", json_boolean(d->n_expert > 0 || s->by_role[HY_ROLE_EXPERT].n > 0));

    json_t *mix = json_array();
    int order[GGML_TYPE_COUNT];
    int nt = order_types(s, order);
    for (int i = 0; i < nt; i++) {
        json_t *e = json_object();
        set(e, "type", json_string(ggml_type_name((enum ggml_type)order[i])));
        set(e, "type_id", json_integer(order[i]));
        set(e, "n_tensors", json_integer(s->by_type[order[i]].n));
        set(e, "bytes", jint(s->by_type[order[i]].bytes));
        json_array_append_new(mix, e);
    }
    set(root, "quant_mix", mix);

    json_t *roles = json_object();
    for (int r = 0; r < HY_ROLE_COUNT; r++) {
        json_t *e = json_object();
        set(e, "n_tensors", json_integer(s->by_role[r].n));
        set(e, "bytes", jint(d->bytes_by_role[r]));
        set(roles, hy_role_name((hy_role)r), e);
    }
    set(root, "roles", roles);

    json_t *layers = json_array();
    for (int l = 0; l < d->n_layer; l++) {
        json_t *e = json_object(), *br = json_object();
        set(e, "layer", json_integer(l));
        set(e, "n_tensors", json_integer(s->by_layer[l].total.n));
        set(e, "bytes", jint(d->bytes_by_layer[l]));
        for (int r = 0; r < HY_ROLE_COUNT; r++)
            if (s->by_layer[l].role[r]) set(br, hy_role_name((hy_role)r), jint(s->by_layer[l].role[r]));
        set(e, "by_role", br);
        json_array_append_new(layers, e);
    }
    set(root, "layers", layers);

    json_t *tensors = json_array();
    for (int64_t i = 0; i < d->n_tensors; i++) json_array_append_new(tensors, tensor_json(&d->tensors[i]));
    set(root, "tensors", tensors);
    return root;
}

/* ---- the command ------------------------------------------------------------ */

int hy_cmd_inspect(int argc, char **argv) {
    /* --plan: the placement for this machine, which is what estimate prints */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--plan")) {
            char **av = malloc(sizeof(char *) * (size_t)(argc + 1));
            if (!av) return 1;
            int n = 0;
            av[n++] = "estimate";
            for (int j = 1; j < argc; j++)
                if (j != i) av[n++] = argv[j];
            av[n] = NULL;
            int rc = hy_cmd_estimate(n, av);
            free(av);
            return rc;
        }
    inspect_opts o;
    int pr = parse_args(argc, argv, &o);
    if (pr == 1) {
        usage(stdout);
        return 0;
    }
    if (pr) return 2;

    char err[HY_ERRLEN];
    hy_model_desc *d = NULL;
    if (hy_gguf_read(o.model, &d, err, sizeof err) != 0) {
        fprintf(stderr, "hypura inspect: %s\n", err[0] ? err : "cannot read the model");
        return 1;
    }
    summary s;
    if (summarize(d, &s) != 0) {
        fprintf(stderr, "hypura inspect: out of memory\n");
        hy_model_desc_free(d);
        return 1;
    }

    /* HOOK(--plan): here, with o.plan set, profile the machine, compute the
     * placement from `d`, and print it after the model (human) or add it as
     * root["plan"] (JSON) before dumping. */

    int rc = 0;
    if (o.json) {
        json_t *root = build_json(d, &s);
        if (!root || json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0) {
            fprintf(stderr, "hypura inspect: cannot write JSON\n");
            rc = 1;
        } else {
            fputc('\n', stdout);
        }
        json_decref(root);
    } else {
        print_human(d, &s, &o);
    }
    if (fflush(stdout) != 0 && !rc) {
        fprintf(stderr, "hypura inspect: cannot write output\n");
        rc = 1;
    }
    free(s.by_layer);
    hy_model_desc_free(d);
    return rc;
}
