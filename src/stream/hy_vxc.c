/* hy_vxc: the expert cache in VRAM (see hy_vxc.h for the mechanism). */
#include "stream/hy_vxc.h"

#include <math.h>
#include <stdio.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>

#include "cache/hy_coact.h"
#include "cache/hy_xcache.h"
#include "ggml-backend-impl.h"
#include "util/hy_tensor.h"
#include "util/hy_util.h"

#define VX_MAX_KINDS HY_PLAN_MAX_XKINDS
#define VX_PAD ((uint64_t)1 << 20) /* zeroed tail per arena: kernels read rows padded to 512 elements */
#define VX_IDS_BYTES ((uint64_t)64 << 10)
#define VX_MAX_SWAPS (2 * VX_MAX_KINDS)

struct vxt {                     /* one served expert tensor */
    struct ggml_tensor *t;       /* set by init_tensor */
    const uint8_t *host;         /* its bytes in (pinned) host memory; NULL: read from the file */
    uint64_t file_off;           /* its offset in the model file */
    int64_t info;                /* index in the model description */
    int layer, kind;
};

struct vkind {
    char suffix[64];
    uint64_t stride;             /* bytes per expert slice */
    ggml_backend_buffer_t buf;   /* the device arena */
    uint8_t *base;
    struct ggml_tensor whole;    /* the arena as one I8 tensor: the target of the copies */
};

struct swap {
    struct ggml_tensor *node, *ids;  /* node whose src[2] was replaced, and the original */
    struct ggml_tensor *w;           /* tensor whose data was moved to W, or NULL */
    void *data;
};

struct hy_vxc {
    const hy_model_desc *d;
    ggml_backend_dev_t dev;
    ggml_backend_buffer_type_t dev_buft, host_real;
    struct ggml_backend_buffer_type host_buft;
    ggml_backend_t be;               /* our own stream for the copies */
    int n_expert, k;
    int n_kinds;
    struct vkind kinds[VX_MAX_KINDS];
    struct vxt *vt;
    int n_vt;
    int *win;                        /* per layer: its window index, or -1 */
    int **layer_vt;                  /* per layer: served tensors (indices into vt), -1 terminated */
    int n_win, slots, last_layer;
    uint64_t dev_bytes;
    /* slot state, per window */
    int *slot_of;                    /* [n_win * n_expert]: slot or -1 */
    int *expert_in;                  /* [n_win * slots]: expert or -1 */
    hy_xcache **xc;                  /* per window: keys are experts, one slot each */
    /* the slot ids the matmuls read */
    ggml_backend_buffer_t ids_buf;
    struct ggml_tensor ids_t;
    int32_t *ids_host;
    size_t ids_cap;                  /* int32 entries */
    /* this pass */
    int cur_layer;
    bool cur_w;                      /* the current layer is served from W */
    uint64_t pass_id, *seen;         /* seen[layer] == pass_id + 1: router done in this pass */
    int last_topk;
    struct swap sw[VX_MAX_SWAPS];
    int n_sw;
    uint64_t tick;
    hy_coact *coact;                 /* routing statistics, shared with the CPU expert cache's file */
    char coact_path[4096];
    int32_t *rec;                    /* the choice as [n_tok][k], for hy_coact_record */
    size_t rec_cap;
    /* the NVMe tier: a RAM expert cache of pinned slots over direct reads of the file */
    hy_io *io;
    uint64_t io_align, file_size;
    uint64_t ram_slot_bytes, kind_off[VX_MAX_KINDS]; /* a slot: each kind's region at kind_off */
    int n_ram;
    ggml_backend_buffer_t ram_buf;
    uint8_t *ram_base;
    hy_xcache *ram_xc;               /* keys layer * n_expert + expert */
    int *ram_slot_of, *ram_key_in;   /* [n_layer * n_expert], [n_ram] */
    int *ram_free, n_free;           /* free slots */
    int *held;                       /* keys pinned until the copies of this layer are synchronized */
    int n_held;
    hy_io_ticket **tk;               /* a chunk's reads */
    int *pend_e, *pend_s;            /* this layer's copies to make: expert, slot (-1: into W) */
    double *freq;                    /* routing shares from the statistics [n_layer * n_expert], or NULL */
    hy_vxc_stats st;
    bool failed;
    char error[HY_ERRLEN];
};

static void vfail(hy_vxc *v, const char *fmt, const char *a, const char *b) {
    if (v->failed) return;
    v->failed = true;
    snprintf(v->error, sizeof v->error, fmt, a, b);
}

/* "blk.12.ffn_up_exps.weight" -> "ffn_up_exps.weight" */
static const char *kind_suffix(const char *name) {
    if (strncmp(name, "blk.", 4)) return NULL;
    const char *p = name + 4;
    if (*p < '0' || *p > '9') return NULL;
    while (*p >= '0' && *p <= '9') p++;
    return *p == '.' ? p + 1 : NULL;
}

bool hy_vxc_serves(const hy_model_desc *d, const hy_plan *plan, int64_t i) {
    if (!plan || !plan->tier || i < 0 || i >= d->n_tensors || d->n_expert <= 1) return false;
    const hy_tensor_info *t = &d->tensors[i];
    return (plan->tier[i] == HY_TIER_RAM || plan->tier[i] == HY_TIER_NVME) && t->role == HY_ROLE_EXPERT && t->layer >= 0 && t->layer < d->n_layer &&
           t->n_experts == d->n_expert && t->expert_stride > 0 && kind_suffix(t->name);
}

/* the served layers and the bytes one expert of a layer takes across kinds; -1 when kinds disagree */
static int shape(const hy_model_desc *d, const hy_plan *plan, int *n_layers, uint64_t *per_expert, int *n_kinds,
                 struct vkind *kinds) {
    bool *lay = calloc((size_t)(d->n_layer > 0 ? d->n_layer : 1), sizeof *lay);
    if (!lay) return -1;
    int nk = 0;
    for (int64_t i = 0; i < d->n_tensors; i++) {
        if (!hy_vxc_serves(d, plan, i)) continue;
        const hy_tensor_info *t = &d->tensors[i];
        const char *suf = kind_suffix(t->name);
        int k = 0;
        while (k < nk && strcmp(kinds[k].suffix, suf)) k++;
        if (k == nk) {
            if (nk >= VX_MAX_KINDS || strlen(suf) >= sizeof kinds[0].suffix) {
                free(lay);
                return -1;
            }
            memset(&kinds[nk], 0, sizeof kinds[nk]);
            snprintf(kinds[nk].suffix, sizeof kinds[nk].suffix, "%s", suf);
            kinds[nk].stride = t->expert_stride;
            nk++;
        } else if (kinds[k].stride != t->expert_stride) {
            free(lay);
            return -1;
        }
        lay[t->layer] = true;
    }
    int nl = 0;
    for (int l = 0; l < d->n_layer; l++) nl += lay[l];
    free(lay);
    uint64_t pe = 0;
    for (int k = 0; k < nk; k++) pe += kinds[k].stride;
    *n_layers = nl;
    *per_expert = pe;
    *n_kinds = nk;
    return 0;
}

static uint64_t bytes_for(int n_layers, uint64_t per_expert, int n_kinds, int n_expert, int slots) {
    if (n_layers == 0) return 0;
    return ((uint64_t)n_layers * (uint64_t)slots + (uint64_t)n_expert) * per_expert + (uint64_t)n_kinds * VX_PAD +
           VX_IDS_BYTES;
}

uint64_t hy_vxc_bytes_for(const hy_model_desc *d, const hy_plan *plan, int slots) {
    struct vkind kinds[VX_MAX_KINDS];
    int nl, nk;
    uint64_t pe;
    if (shape(d, plan, &nl, &pe, &nk, kinds)) return 0;
    return bytes_for(nl, pe, nk, d->n_expert, slots);
}

int hy_vxc_slots_for(const hy_model_desc *d, const hy_plan *plan, uint64_t bytes) {
    struct vkind kinds[VX_MAX_KINDS];
    int nl, nk;
    uint64_t pe;
    if (shape(d, plan, &nl, &pe, &nk, kinds) || nl == 0 || pe == 0) return 0;
    uint64_t fixed = bytes_for(nl, pe, nk, d->n_expert, 0);
    if (bytes < fixed) return 0;
    uint64_t s = (bytes - fixed) / ((uint64_t)nl * pe);
    return s > (uint64_t)d->n_expert ? d->n_expert : (int)s;
}

/* a kind's region in a RAM slot: a slice starts anywhere in a page, so its aligned read covers at
 * most one page more than its bytes rounded up */
static uint64_t ram_region(uint64_t stride, uint64_t align) { return hy_round_up(stride, align) + align; }

uint64_t hy_vxc_ram_slot_bytes(const hy_model_desc *d, const hy_plan *plan, uint64_t align) {
    struct vkind kinds[VX_MAX_KINDS];
    int nl, nk;
    uint64_t pe, b = 0;
    if (align == 0) align = 1;
    if (shape(d, plan, &nl, &pe, &nk, kinds) || nl == 0) return 0;
    for (int k = 0; k < nk; k++) b += ram_region(kinds[k].stride, align);
    return b;
}

int hy_vxc_ram_slots_for(const hy_model_desc *d, const hy_plan *plan, uint64_t ram_bytes, uint64_t align) {
    uint64_t b = hy_vxc_ram_slot_bytes(d, plan, align);
    if (b == 0) return 0;
    uint64_t n = ram_bytes / b, max = (uint64_t)d->n_layer * (uint64_t)d->n_expert;
    return (int)(n > max ? max : n);
}

static int cmp_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

double hy_vxc_expected_hit(const hy_model_desc *d, const hy_plan *plan, int slots, const double *freq,
                           uint64_t *routed) {
    struct vkind kinds[VX_MAX_KINDS];
    int nl, nk;
    uint64_t pe;
    *routed = 0;
    if (shape(d, plan, &nl, &pe, &nk, kinds) || nl == 0 || d->n_expert <= 1) return 0;
    *routed = (uint64_t)nl * (uint64_t)d->n_expert_used * pe;
    int E = d->n_expert;
    double *sh = malloc(sizeof *sh * (size_t)E);
    if (!sh) return 0;
    double prior_all = 0, prior_top = 0;
    for (int r = 1; r <= E; r++) {
        double w = pow((double)r, -HY_PLAN_ROUTING_PRIOR);
        prior_all += w;
        if (r <= slots) prior_top += w;
    }
    double sum = 0;
    int n = 0;
    for (int l = 0; l < d->n_layer; l++) {
        bool served = false;
        for (int64_t i = 0; i < d->n_tensors && !served; i++) served = d->tensors[i].layer == l && hy_vxc_serves(d, plan, i);
        if (!served) continue;
        double tot = 0;
        for (int e = 0; e < E; e++) tot += sh[e] = freq ? freq[(size_t)l * E + e] : 0;
        double hit = prior_top / prior_all;
        if (tot > 0) {
            qsort(sh, (size_t)E, sizeof *sh, cmp_desc);
            double top = 0;
            for (int e = 0; e < slots && e < E; e++) top += sh[e];
            hit = top / tot;
        }
        sum += hit;
        n++;
    }
    free(sh);
    return n ? sum / n : 0;
}

/* ------------------------------------------------ the host buffer type */

struct hbuf {
    hy_vxc *v;
    ggml_backend_buffer_t real;  /* the served tensors' bytes; NULL with the NVMe tier */
    uint8_t *map, *base;         /* the NVMe tier: address space only (PROT_NONE: a stray touch faults) */
    size_t map_len;
};

static void hbuf_free(ggml_backend_buffer_t b) {
    struct hbuf *h = b->context;
    if (h->real) ggml_backend_buffer_free(h->real);
    if (h->map) munmap(h->map, h->map_len);
    free(h);
}

static void *hbuf_base(ggml_backend_buffer_t b) {
    struct hbuf *h = b->context;
    return h->real ? ggml_backend_buffer_get_base(h->real) : h->base;
}

static enum ggml_status hbuf_init_tensor(ggml_backend_buffer_t b, struct ggml_tensor *t) {
    struct hbuf *h = b->context;
    hy_vxc *v = h->v;
    if (t->view_src) return GGML_STATUS_SUCCESS;
    for (int i = 0; i < v->n_vt; i++) {
        struct vxt *x = &v->vt[i];
        if (strcmp(v->d->tensors[x->info].name, t->name)) continue;
        if (x->t || (uint64_t)ggml_nbytes(t) != v->d->tensors[x->info].size ||
            (uint64_t)t->nb[ggml_n_dims(t) - 1] != v->kinds[x->kind].stride ||
            t->ne[ggml_n_dims(t) - 1] != v->n_expert) {
            vfail(v, "VRAM expert cache: tensor '%s' %s", t->name, x->t ? "placed twice" : "has another shape than the file says");
            return GGML_STATUS_FAILED;
        }
        x->t = t;
        x->host = h->real ? t->data : NULL;
        return GGML_STATUS_SUCCESS;
    }
    vfail(v, "VRAM expert cache: unexpected tensor '%s'%s", t->name, "");
    return GGML_STATUS_FAILED;
}

static void hbuf_clear(ggml_backend_buffer_t b, uint8_t val) {
    struct hbuf *h = b->context;
    if (h->real) ggml_backend_buffer_clear(h->real, val);
}

/* the NVMe tier: the loader's bytes (a pointer into its mapping) are not kept, so
 * loading reads none of them; the tensors are read per slice when routed */
static void hbuf_set_ignore(ggml_backend_buffer_t b, struct ggml_tensor *t, const void *data, size_t off, size_t n) {
    (void)b, (void)t, (void)data, (void)off, (void)n;
}

static void hbuf_memset_ignore(ggml_backend_buffer_t b, struct ggml_tensor *t, uint8_t val, size_t off, size_t n) {
    (void)b, (void)t, (void)val, (void)off, (void)n;
}

static void hbuf_get_none(ggml_backend_buffer_t b, const struct ggml_tensor *t, void *data, size_t off, size_t n) {
    struct hbuf *h = b->context;
    memset(data, 0, n);
    (void)off;
    vfail(h->v, "VRAM expert cache: tensor '%s' was read back from the host, where it %s", t->name, "is not loaded");
}

static const char *hbuft_name(ggml_backend_buffer_type_t bt) {
    (void)bt;
    return "HYPURA_VXC_HOST";
}

static ggml_backend_buffer_t hbuft_alloc(ggml_backend_buffer_type_t bt, size_t size) {
    hy_vxc *v = bt->context;
    struct hbuf *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->v = v;
    if (v->io) {
        size_t al = ggml_backend_buft_get_alignment(v->host_real);
        if (al < 4096) al = 4096;
        h->map_len = (size ? size : 1) + al;
        h->map = mmap(NULL, h->map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (h->map == MAP_FAILED) {
            free(h);
            return NULL;
        }
        h->base = (uint8_t *)(((uintptr_t)h->map + al - 1) & ~(uintptr_t)(al - 1));
    } else {
        h->real = ggml_backend_buft_alloc_buffer(v->host_real, size);
        if (!h->real) {
            free(h);
            return NULL;
        }
    }
    struct ggml_backend_buffer_i iface = {
        .free_buffer = hbuf_free,
        .get_base = hbuf_base,
        .init_tensor = hbuf_init_tensor,
        .memset_tensor = hy_tensor_host_memset,
        .set_tensor = v->io ? hbuf_set_ignore : hy_tensor_host_set,
        .get_tensor = v->io ? hbuf_get_none : hy_tensor_host_get,
        .clear = hbuf_clear,
    };
    if (v->io) iface.memset_tensor = hbuf_memset_ignore;
    return ggml_backend_buffer_init(bt, iface, h, size);
}

static size_t hbuft_alignment(ggml_backend_buffer_type_t bt) {
    return ggml_backend_buft_get_alignment(((hy_vxc *)bt->context)->host_real);
}

static bool hbuft_is_host(ggml_backend_buffer_type_t bt) {
    (void)bt;
    return true;
}

/* the NVMe tier: the reader, the RAM cache's pinned slots and its policy */
static int setup_nvme(hy_vxc *v, const hy_vxc_params *p, char *err, size_t errlen) {
    const hy_model_desc *d = v->d;
    v->io = hy_io_open(p->model_path, &p->io, err, errlen);
    if (!v->io) return -1;
    v->io_align = hy_io_alignment(v->io);
    if (v->io_align == 0) v->io_align = 1;
    v->file_size = hy_io_file_size(v->io);
    uint64_t off = 0;
    for (int k = 0; k < v->n_kinds; k++) {
        v->kind_off[k] = off;
        off += ram_region(v->kinds[k].stride, v->io_align);
    }
    v->ram_slot_bytes = off;
    v->n_ram = hy_vxc_ram_slots_for(d, p->plan, p->ram_bytes, v->io_align);
    if (v->n_ram < 1) {
        char a[32], b[32];
        return hy_fail(err, errlen, "the RAM expert cache under the VRAM cache: %s holds no expert (one takes %s)",
                       hy_fmt_bytes(p->ram_bytes, a, sizeof a), hy_fmt_bytes(off, b, sizeof b));
    }
    uint64_t size = (uint64_t)v->n_ram * v->ram_slot_bytes + v->io_align;
    v->ram_buf = ggml_backend_buft_alloc_buffer(v->host_real, size);
    if (!v->ram_buf) {
        char a[32];
        return hy_fail(err, errlen, "cannot allocate %s of pinned memory for the RAM expert cache", hy_fmt_bytes(size, a, sizeof a));
    }
    uintptr_t b0 = (uintptr_t)ggml_backend_buffer_get_base(v->ram_buf);
    v->ram_base = (uint8_t *)((b0 + v->io_align - 1) / v->io_align * v->io_align);
    int nk = d->n_layer * v->n_expert;
    uint64_t *sizes = malloc(sizeof *sizes * (size_t)nk);
    v->ram_slot_of = malloc(sizeof(int) * (size_t)nk);
    v->ram_key_in = malloc(sizeof(int) * (size_t)v->n_ram);
    v->ram_free = malloc(sizeof(int) * (size_t)v->n_ram);
    v->held = malloc(sizeof(int) * (size_t)v->n_expert);
    v->tk = calloc((size_t)v->n_expert * (size_t)v->n_kinds, sizeof *v->tk);
    if (!sizes || !v->ram_slot_of || !v->ram_key_in || !v->ram_free || !v->held || !v->tk) {
        free(sizes);
        return hy_fail(err, errlen, "out of memory");
    }
    for (int i = 0; i < nk; i++) sizes[i] = 1, v->ram_slot_of[i] = -1;
    for (int i = 0; i < v->n_ram; i++) v->ram_key_in[i] = -1, v->ram_free[i] = v->n_ram - 1 - i;
    v->n_free = v->n_ram;
    v->ram_xc = hy_xcache_new(nk, sizes, (uint64_t)v->n_ram, (hy_xc_policy)p->policy, 64);
    free(sizes);
    if (!v->ram_xc) return hy_fail(err, errlen, "out of memory");
    if (p->freq && p->freq_tokens > 0) {
        double w = p->freq_tokens > 64 ? 64 : (double)p->freq_tokens;
        for (int l = 0; l < d->n_layer; l++)
            if (v->win[l] >= 0)
                for (int e = 0; e < v->n_expert; e++)
                    hy_xcache_seed(v->ram_xc, l * v->n_expert + e, w * p->freq[(size_t)l * v->n_expert + e], 0);
    }
    v->st.nvme = true;
    v->st.ram_slots = v->n_ram;
    v->st.ram_bytes = size;
    v->st.io_backend = hy_io_backend_name(v->io);
    v->st.direct = hy_io_is_direct(v->io);
    return 0;
}

/* ------------------------------------------------ create, attach, free */

int hy_vxc_create(const hy_vxc_params *p, hy_vxc **out, char *err, size_t errlen) {
    *out = NULL;
    const hy_model_desc *d = p->desc;
    if (!p->dev) return hy_fail(err, errlen, "the VRAM expert cache needs a device");
    if (d->n_expert <= 1 || d->n_expert_used < 1) return hy_fail(err, errlen, "the VRAM expert cache is for MoE models");
    hy_vxc *v = calloc(1, sizeof *v);
    if (!v) return hy_fail(err, errlen, "out of memory");
    v->d = d;
    v->dev = p->dev;
    v->n_expert = d->n_expert;
    v->k = d->n_expert_used;
    v->last_topk = -1;
    v->cur_layer = -1;
    uint64_t pe;
    int nl;
    if (shape(d, p->plan, &nl, &pe, &v->n_kinds, v->kinds)) {
        hy_vxc_free(v);
        return hy_fail(err, errlen, "the VRAM expert cache: the model's expert tensors of one kind differ in shape");
    }
    if (nl == 0) {
        hy_vxc_free(v);
        return hy_fail(err, errlen, "--gpu-xcache: no expert layer is left outside the GPU tier to cache");
    }
    v->slots = hy_vxc_slots_for(d, p->plan, p->bytes);
    if (v->slots < v->k) {
        char a[32], b[32];
        hy_fail(err, errlen, "--gpu-xcache %s holds fewer than %d experts per layer over %d layers; at least %s", hy_fmt_bytes(p->bytes, a, sizeof a),
                v->k, nl, hy_fmt_bytes(bytes_for(nl, pe, v->n_kinds, d->n_expert, v->k), b, sizeof b));
        hy_vxc_free(v);
        return -1;
    }
    v->dev_bytes = bytes_for(nl, pe, v->n_kinds, d->n_expert, v->slots);
    v->dev_buft = ggml_backend_dev_buffer_type(p->dev);
    v->host_real = ggml_backend_dev_host_buffer_type(p->dev);
    if (!v->host_real) v->host_real = ggml_backend_cpu_buffer_type();
    v->host_buft.iface = (struct ggml_backend_buffer_type_i){
        .get_name = hbuft_name,
        .alloc_buffer = hbuft_alloc,
        .get_alignment = hbuft_alignment,
        .is_host = hbuft_is_host,
    };
    v->host_buft.device = NULL;
    v->host_buft.context = v;

    int L = d->n_layer;
    v->win = malloc(sizeof(int) * (size_t)L);
    v->layer_vt = calloc((size_t)L, sizeof *v->layer_vt);
    v->seen = calloc((size_t)L, sizeof *v->seen);
    v->vt = calloc((size_t)d->n_tensors + 1, sizeof *v->vt);
    if (!v->win || !v->layer_vt || !v->seen || !v->vt) goto oom;
    for (int l = 0; l < L; l++) v->win[l] = -1;
    v->last_layer = -1;
    for (int64_t i = 0; i < d->n_tensors; i++) {
        if (!hy_vxc_serves(d, p->plan, i)) continue;
        const hy_tensor_info *t = &d->tensors[i];
        struct vxt *x = &v->vt[v->n_vt];
        x->info = i;
        x->file_off = t->offset;
        x->layer = t->layer;
        x->kind = 0;
        while (strcmp(v->kinds[x->kind].suffix, kind_suffix(t->name))) x->kind++;
        if (v->win[t->layer] < 0) v->win[t->layer] = v->n_win++;
        if (t->layer > v->last_layer) v->last_layer = t->layer;
        if (!v->layer_vt[t->layer]) {
            v->layer_vt[t->layer] = malloc(sizeof(int) * (VX_MAX_KINDS + 1));
            if (!v->layer_vt[t->layer]) goto oom;
            v->layer_vt[t->layer][0] = -1;
        }
        int n = 0;
        while (v->layer_vt[t->layer][n] >= 0) n++;
        if (n >= VX_MAX_KINDS) {
            hy_vxc_free(v);
            return hy_fail(err, errlen, "layer %d has more than %d expert tensors", t->layer, VX_MAX_KINDS);
        }
        v->layer_vt[t->layer][n] = v->n_vt;
        v->layer_vt[t->layer][n + 1] = -1;
        v->n_vt++;
    }
    /* the windows are numbered in layer order (the arena's layout) */
    v->n_win = 0;
    for (int l = 0; l < L; l++)
        if (v->win[l] >= 0) v->win[l] = v->n_win++;
    v->slot_of = malloc(sizeof(int) * (size_t)v->n_win * (size_t)v->n_expert);
    v->expert_in = malloc(sizeof(int) * (size_t)v->n_win * (size_t)v->slots);
    v->xc = calloc((size_t)v->n_win, sizeof *v->xc);
    uint64_t *sizes = malloc(sizeof *sizes * (size_t)v->n_expert);
    if (!v->slot_of || !v->expert_in || !v->xc || !sizes) {
        free(sizes);
        goto oom;
    }
    for (int i = 0; i < v->n_win * v->n_expert; i++) v->slot_of[i] = -1;
    for (int i = 0; i < v->n_win * v->slots; i++) v->expert_in[i] = -1;
    for (int e = 0; e < v->n_expert; e++) sizes[e] = 1;
    bool use_freq = p->freq && p->freq_tokens > 0;
    double w = p->freq_tokens > 64 ? 64 : (double)p->freq_tokens; /* as the CPU cache: a half-life's weight at most */
    for (int l = 0; l < L; l++) {
        int wi = v->win[l];
        if (wi < 0) continue;
        v->xc[wi] = hy_xcache_new(v->n_expert, sizes, (uint64_t)v->slots, (hy_xc_policy)p->policy, 64);
        if (!v->xc[wi]) {
            free(sizes);
            goto oom;
        }
        for (int e = 0; e < v->n_expert && use_freq; e++)
            hy_xcache_seed(v->xc[wi], e, w * p->freq[(size_t)l * v->n_expert + e], 0);
    }
    free(sizes);
    if (use_freq) { /* kept for filling the caches ahead at attach (preload) */
        v->freq = malloc(sizeof *v->freq * (size_t)L * (size_t)v->n_expert);
        if (!v->freq) goto oom;
        memcpy(v->freq, p->freq, sizeof *v->freq * (size_t)L * (size_t)v->n_expert);
    }
    v->pend_e = malloc(sizeof(int) * (size_t)v->n_expert);
    v->pend_s = malloc(sizeof(int) * (size_t)v->n_expert);
    if (!v->pend_e || !v->pend_s) goto oom;
    if (p->model_path && setup_nvme(v, p, err, errlen)) {
        hy_vxc_free(v);
        return -1;
    }
    if (p->persist_stats && hy_coact_default_path(d->model_id, v->coact_path, sizeof v->coact_path) == 0) {
        v->coact = hy_coact_new(d->n_layer, d->n_expert, d->n_expert_used, d->model_id);
        hy_coact *old = NULL;
        char why[HY_ERRLEN];
        FILE *fo = v->coact ? fopen(v->coact_path, "r") : NULL;
        if (fo) {
            fclose(fo);
            /* what earlier runs kept is saved again with this run's counts added */
            if (hy_coact_load(v->coact_path, d->model_id, d->n_layer, d->n_expert, &old, why, sizeof why) == 0) {
                hy_coact_merge(v->coact, old);
                hy_coact_free(old);
            } else {
                fprintf(stderr, "hypura: warning: ignoring co-activation statistics %s: %s\n", v->coact_path, why);
            }
        }
    }
    v->st.layers = v->n_win;
    v->st.slots = v->slots;
    v->st.device_bytes = v->dev_bytes;
    *out = v;
    return 0;
oom:
    hy_vxc_free(v);
    return hy_fail(err, errlen, "out of memory");
}

ggml_backend_buffer_type_t hy_vxc_host_buft(hy_vxc *v) { return &v->host_buft; }

static uint64_t window_off(const hy_vxc *v, int layer, int kind) {
    return (uint64_t)v->win[layer] * (uint64_t)v->slots * v->kinds[kind].stride;
}

static uint64_t w_off(const hy_vxc *v, int kind) {
    return (uint64_t)v->n_win * (uint64_t)v->slots * v->kinds[kind].stride;
}

static int preload(hy_vxc *v, char *err, size_t errlen);

int hy_vxc_attach(hy_vxc *v, char *err, size_t errlen) {
    if (v->failed) return hy_fail(err, errlen, "%s", v->error);
    for (int i = 0; i < v->n_vt; i++)
        if (!v->vt[i].t)
            return hy_fail(err, errlen, "tensor '%s' was planned for the VRAM expert cache but libllama did not place it there",
                           v->d->tensors[v->vt[i].info].name);
    for (int k = 0; k < v->n_kinds; k++) {
        struct vkind *kd = &v->kinds[k];
        uint64_t size = ((uint64_t)v->n_win * (uint64_t)v->slots + (uint64_t)v->n_expert) * kd->stride + VX_PAD;
        kd->buf = ggml_backend_buft_alloc_buffer(v->dev_buft, size);
        if (!kd->buf) {
            char a[32];
            return hy_fail(err, errlen, "cannot allocate %s on %s for the VRAM expert cache", hy_fmt_bytes(size, a, sizeof a),
                           ggml_backend_dev_name(v->dev));
        }
        ggml_backend_buffer_set_usage(kd->buf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
        ggml_backend_buffer_clear(kd->buf, 0); /* padding and unfilled slots read as zeros, never NaN */
        kd->base = ggml_backend_buffer_get_base(kd->buf);
        memset(&kd->whole, 0, sizeof kd->whole);
        kd->whole.type = GGML_TYPE_I8;
        kd->whole.buffer = kd->buf;
        kd->whole.data = kd->base;
        kd->whole.ne[0] = (int64_t)size;
        kd->whole.ne[1] = kd->whole.ne[2] = kd->whole.ne[3] = 1;
        kd->whole.nb[0] = 1;
        for (int j = 1; j < GGML_MAX_DIMS; j++) kd->whole.nb[j] = (size_t)size;
        snprintf(kd->whole.name, sizeof kd->whole.name, "hypura-vxc-%d", k);
    }
    v->ids_cap = (size_t)v->k * HY_VXC_SLOT_TOKENS;
    v->ids_host = malloc(sizeof(int32_t) * v->ids_cap);
    v->ids_buf = ggml_backend_buft_alloc_buffer(v->dev_buft, VX_IDS_BYTES);
    v->be = ggml_backend_dev_init(v->dev, NULL);
    if (!v->ids_host || !v->ids_buf || !v->be)
        return hy_fail(err, errlen, "cannot set up the VRAM expert cache on %s", ggml_backend_dev_name(v->dev));
    /* the matmuls follow their weights to the device (ggml_backend_sched) */
    for (int i = 0; i < v->n_vt; i++) {
        struct vxt *x = &v->vt[i];
        struct vkind *kd = &v->kinds[x->kind];
        x->t->buffer = kd->buf;
        x->t->data = kd->base + window_off(v, x->layer, x->kind);
    }
    return v->freq ? preload(v, err, errlen) : 0;
}

void hy_vxc_free(hy_vxc *v) {
    if (!v) return;
    if (v->coact && v->st.tokens > 0) {
        char err[HY_ERRLEN];
        if (hy_coact_save(v->coact, v->coact_path, err, sizeof err))
            fprintf(stderr, "hypura: warning: could not save co-activation statistics: %s\n", err);
    }
    hy_coact_free(v->coact);
    free(v->rec);
    if (v->be) ggml_backend_synchronize(v->be); /* no copy out of the RAM slots in flight */
    if (v->io) hy_io_close(v->io);
    if (v->ram_buf) ggml_backend_buffer_free(v->ram_buf);
    hy_xcache_free(v->ram_xc);
    free(v->ram_slot_of);
    free(v->ram_key_in);
    free(v->ram_free);
    free(v->held);
    free(v->tk);
    free(v->pend_e);
    free(v->pend_s);
    free(v->freq);
    if (v->be) ggml_backend_free(v->be);
    if (v->ids_buf) ggml_backend_buffer_free(v->ids_buf);
    for (int k = 0; k < v->n_kinds; k++)
        if (v->kinds[k].buf) ggml_backend_buffer_free(v->kinds[k].buf);
    if (v->xc)
        for (int i = 0; i < v->n_win; i++) hy_xcache_free(v->xc[i]);
    if (v->layer_vt)
        for (int l = 0; l < v->d->n_layer; l++) free(v->layer_vt[l]);
    free(v->layer_vt);
    free(v->xc);
    free(v->slot_of);
    free(v->expert_in);
    free(v->win);
    free(v->seen);
    free(v->vt);
    free(v->ids_host);
    free(v);
}

/* ------------------------------------------------ the pass */

static struct vxt *served(hy_vxc *v, const struct ggml_tensor *t) {
    if (!t) return NULL;
    const struct ggml_tensor *b = t->view_src ? t->view_src : t;
    /* served tensors live in our arenas: cheap test first */
    bool ours = false;
    for (int k = 0; k < v->n_kinds && !ours; k++) ours = b->buffer && b->buffer == v->kinds[k].buf;
    if (!ours) return NULL;
    for (int i = 0; i < v->n_vt; i++)
        if (v->vt[i].t == b) return &v->vt[i];
    return NULL;
}

static void restore_all(hy_vxc *v) {
    for (int i = v->n_sw - 1; i >= 0; i--) {
        struct swap *s = &v->sw[i];
        if (s->ids) s->node->src[2] = s->ids;
        if (s->w) s->w->data = s->data;
    }
    v->n_sw = 0;
}

static uint64_t dst_of(const hy_vxc *v, const struct vxt *x, int layer, int e, int s) {
    uint64_t stride = v->kinds[x->kind].stride;
    return s < 0 ? w_off(v, x->kind) + (uint64_t)e * stride : window_off(v, layer, x->kind) + (uint64_t)s * stride;
}

static void copy_from(hy_vxc *v, const struct vxt *x, const uint8_t *src, uint64_t dst_off) {
    const struct vkind *kd = &v->kinds[x->kind];
    ggml_backend_tensor_set_async(v->be, (struct ggml_tensor *)&kd->whole, src, (size_t)dst_off, (size_t)kd->stride);
    v->st.h2d_bytes += kd->stride;
}

/* expert e of x in the served tensor's own (pinned) host memory: the tier without NVMe */
static const uint8_t *host_src(const hy_vxc *v, const struct vxt *x, int e) {
    return x->host + (uint64_t)e * v->kinds[x->kind].stride;
}

/* expert e of x in its RAM slot: the slot's region for x's kind holds the page-aligned read */
static const uint8_t *ram_src(const hy_vxc *v, const struct vxt *x, int slot, int e) {
    uint64_t off = x->file_off + (uint64_t)e * v->kinds[x->kind].stride;
    return v->ram_base + (uint64_t)slot * v->ram_slot_bytes + v->kind_off[x->kind] + off % v->io_align;
}

static void hold(hy_vxc *v, int key) {
    hy_xcache_pin(v->ram_xc, key, true);
    v->held[v->n_held++] = key;
}

/* after a synchronize: no copy reads a RAM slot any more */
static void unhold_all(hy_vxc *v) {
    for (int i = 0; i < v->n_held; i++) hy_xcache_pin(v->ram_xc, v->held[i], false);
    v->n_held = 0;
}

/* a RAM slot for key: the policy's victim's, freed (its copies have landed: held keys are never victims) */
static int ram_take(hy_vxc *v, int key) {
    int victims[8];
    bool fits = false;
    int nv = hy_xcache_make_room(v->ram_xc, 1, victims, 8, &fits);
    for (int i = 0; i < nv; i++) {
        int s = v->ram_slot_of[victims[i]];
        v->ram_slot_of[victims[i]] = -1;
        if (s >= 0) v->ram_key_in[s] = -1, v->ram_free[v->n_free++] = s;
    }
    if (!fits || v->n_free == 0) return -1;
    int s = v->ram_free[--v->n_free];
    hy_xcache_insert(v->ram_xc, key, false, v->tick);
    v->ram_slot_of[key] = s;
    v->ram_key_in[s] = key;
    return s;
}

/* a read of expert e of x, page-aligned, into its kind's region of RAM slot rs */
static hy_io_ticket *read_slice(hy_vxc *v, const struct vxt *x, int e, int rs, char *why, size_t whylen) {
    uint64_t off = x->file_off + (uint64_t)e * v->kinds[x->kind].stride;
    uint64_t a0 = off - off % v->io_align, end = hy_round_up(off + v->kinds[x->kind].stride, v->io_align);
    if (end > v->file_size) end = v->file_size; /* a read may end at EOF unaligned (hy_io.h) */
    uint8_t *dst = v->ram_base + (uint64_t)rs * v->ram_slot_bytes + v->kind_off[x->kind];
    hy_io_ticket *t = hy_io_read_async(v->io, dst, a0, end - a0, why, whylen);
    if (t) v->st.nvme_bytes += end - a0;
    return t;
}

/* The copies of this layer's pending experts (pend_e, to the window slot pend_s or W when -1):
 * from the served tensors' own host memory, or with the NVMe tier from the RAM cache, the
 * misses read from the file first (a chunk of reads in flight at once, as many as free or
 * evictable RAM slots allow). */
static void deliver(hy_vxc *v, int layer, int n) {
    const int *lv = v->layer_vt[layer];
    if (!v->io) {
        for (int i = 0; i < n; i++)
            for (const int *pi = lv; *pi >= 0; pi++) {
                const struct vxt *x = &v->vt[*pi];
                copy_from(v, x, host_src(v, x, v->pend_e[i]), dst_of(v, x, layer, v->pend_e[i], v->pend_s[i]));
            }
        return;
    }
    int E = v->n_expert, n_miss = 0;
    for (int i = 0; i < n; i++) { /* RAM hits: their copies start at once */
        int e = v->pend_e[i], key = layer * E + e, rs = v->ram_slot_of[key];
        hy_xcache_access(v->ram_xc, key, v->tick);
        if (rs < 0) {
            v->pend_e[n_miss] = e, v->pend_s[n_miss++] = v->pend_s[i];
            continue;
        }
        v->st.ram_hits++;
        hold(v, key);
        for (const int *pi = lv; *pi >= 0; pi++)
            copy_from(v, &v->vt[*pi], ram_src(v, &v->vt[*pi], rs, e), dst_of(v, &v->vt[*pi], layer, e, v->pend_s[i]));
    }
    char why[HY_ERRLEN];
    int i = 0;
    while (i < n_miss && !v->failed) {
        int c = 0, nt = 0;
        bool bad = false;
        for (; i + c < n_miss; c++) {
            int e = v->pend_e[i + c], key = layer * E + e;
            int rs = ram_take(v, key);
            if (rs < 0) break;
            hold(v, key);
            v->st.ram_misses++;
            for (const int *pi = lv; *pi >= 0; pi++) {
                v->tk[nt] = read_slice(v, &v->vt[*pi], e, rs, why, sizeof why);
                if (!v->tk[nt]) {
                    if (!bad) vfail(v, "VRAM expert cache: reading an expert: %s%s", why, "");
                    bad = true;
                    continue;
                }
                nt++;
            }
        }
        if (c == 0) {
            /* every RAM slot is the source of a copy in flight: let those land, then reuse them */
            if (v->n_held == 0) {
                vfail(v, "VRAM expert cache: the RAM expert cache has no slot to read into%s%s", "", "");
                break;
            }
            ggml_backend_synchronize(v->be);
            unhold_all(v);
            continue;
        }
        double t0 = hy_now();
        for (int j = 0; j < nt; j++)
            if (hy_io_wait(v->io, v->tk[j], why, sizeof why) && !bad) {
                vfail(v, "VRAM expert cache: reading an expert: %s%s", why, "");
                bad = true;
            }
        v->st.nvme_wait_s += hy_now() - t0;
        if (bad) {
            /* what the failed reads left in their slots is not an expert: forget them */
            for (int j = 0; j < c; j++) {
                int key = layer * E + v->pend_e[i + j], rs = v->ram_slot_of[key];
                hy_xcache_pin(v->ram_xc, key, false);
                hy_xcache_remove(v->ram_xc, key);
                v->ram_slot_of[key] = -1;
                if (rs >= 0) v->ram_key_in[rs] = -1, v->ram_free[v->n_free++] = rs;
            }
            break;
        }
        for (int j = 0; j < c; j++) {
            int e = v->pend_e[i + j], rs = v->ram_slot_of[layer * E + e];
            for (const int *pi = lv; *pi >= 0; pi++)
                copy_from(v, &v->vt[*pi], ram_src(v, &v->vt[*pi], rs, e), dst_of(v, &v->vt[*pi], layer, e, v->pend_s[i + j]));
        }
        i += c;
    }
}

/* keys (layer * E + expert) by their share in freq, largest first */
static int cmp_key_desc(const void *a, const void *b, void *freq) {
    const double *f = freq;
    double x = f[*(const int *)a], y = f[*(const int *)b];
    return x < y ? 1 : x > y ? -1 : *(const int *)a - *(const int *)b;
}

/* Filling the caches ahead from the routing statistics, at attach: a seeded score orders evictions
 * but fills no slot, so each run would start with every expert a miss. The RAM expert cache gets
 * the experts with the largest shares over all served layers (as many as it holds; read with every
 * request of a batch in flight), then each layer's window its hottest experts of those in RAM (the
 * tier under it). The policies' scores are the seeded ones either way. */
static int preload(hy_vxc *v, char *err, size_t errlen) {
    const int L = v->d->n_layer, E = v->n_expert;
    double t0 = hy_now();
    int *keys = malloc(sizeof(int) * (size_t)L * (size_t)E);
    if (!keys) return hy_fail(err, errlen, "out of memory");
    if (v->io) {
        int n = 0;
        for (int l = 0; l < L; l++)
            if (v->win[l] >= 0)
                for (int e = 0; e < E; e++)
                    if (v->freq[(size_t)l * E + e] > 0) keys[n++] = l * E + e;
        qsort_r(keys, (size_t)n, sizeof *keys, cmp_key_desc, v->freq); /* keys index freq directly */
        if (n > v->n_ram) n = v->n_ram;
        const int batch = 64;
        hy_io_ticket **tk = calloc((size_t)batch * (size_t)v->n_kinds, sizeof *tk);
        if (!tk) {
            free(keys);
            return hy_fail(err, errlen, "out of memory");
        }
        char why[HY_ERRLEN] = "";
        int rc = 0;
        for (int i = 0; i < n && !rc; i += batch) {
            int nt = 0;
            for (int j = i; j < n && j < i + batch && !rc; j++) {
                int key = keys[j], l = key / E, e = key % E, rs = ram_take(v, key);
                if (rs < 0) break;
                for (const int *pi = v->layer_vt[l]; *pi >= 0 && !rc; pi++) {
                    tk[nt] = read_slice(v, &v->vt[*pi], e, rs, why, sizeof why);
                    if (tk[nt]) nt++;
                    else rc = -1;
                }
                v->st.preload_ram++;
            }
            for (int j = 0; j < nt; j++) {
                char w2[HY_ERRLEN];
                if (hy_io_wait(v->io, tk[j], w2, sizeof w2) && !rc) {
                    rc = -1;
                    snprintf(why, sizeof why, "%s", w2);
                }
            }
        }
        free(tk);
        v->st.preload_bytes = v->st.nvme_bytes;
        v->st.nvme_bytes = 0; /* the passes' reads are counted from here */
        if (rc) {
            free(keys);
            return hy_fail(err, errlen, "VRAM expert cache: filling the RAM expert cache ahead: %s", why);
        }
    }
    for (int l = 0; l < L; l++) {
        int wi = v->win[l], n = 0;
        if (wi < 0) continue;
        for (int e = 0; e < E; e++)
            if (v->freq[(size_t)l * E + e] > 0 && (!v->io || v->ram_slot_of[l * E + e] >= 0)) keys[n++] = l * E + e;
        qsort_r(keys, (size_t)n, sizeof *keys, cmp_key_desc, v->freq);
        if (n > v->slots) n = v->slots;
        int *slot_of = v->slot_of + (size_t)wi * E, *expert_in = v->expert_in + (size_t)wi * v->slots;
        for (int s = 0; s < n; s++) {
            int e = keys[s] % E;
            hy_xcache_insert(v->xc[wi], e, false, 0);
            slot_of[e] = s;
            expert_in[s] = e;
            for (const int *pi = v->layer_vt[l]; *pi >= 0; pi++) {
                const struct vxt *x = &v->vt[*pi];
                const uint8_t *src = v->io ? ram_src(v, x, v->ram_slot_of[l * E + e], e)
                                           : host_src(v, x, e);
                copy_from(v, x, src, window_off(v, l, x->kind) + (uint64_t)s * v->kinds[x->kind].stride);
            }
            v->st.preload_vram++;
        }
    }
    ggml_backend_synchronize(v->be);
    v->st.h2d_bytes = 0; /* the passes' copies are counted from here */
    v->st.preload_s = hy_now() - t0;
    free(keys);
    return 0;
}

static void on_router(hy_vxc *v, struct ggml_tensor *t, int layer) {
    if (t->type != GGML_TYPE_I32 || !t->data) {
        vfail(v, "VRAM expert cache: the router's choice %s %s", t->name, "is not readable");
        return;
    }
    int k = (int)t->ne[0], n_tok = (int)t->ne[1];
    char *copy;
    const char *base = hy_tensor_host_data(t, &copy);
    if (!base) {
        vfail(v, "VRAM expert cache: %s%s", "out of memory", "");
        return;
    }
    if (layer <= v->last_topk) v->pass_id++;
    v->last_topk = layer;
    v->seen[layer] = v->pass_id + 1;
    v->cur_layer = layer;
    int wi = v->win[layer];
    bool *want = calloc((size_t)v->n_expert, sizeof *want);
    if (!want) {
        free(copy);
        vfail(v, "VRAM expert cache: %s%s", "out of memory", "");
        return;
    }
    int n_union = 0;
    bool bad = false;
    for (int j = 0; j < n_tok; j++) {
        const int32_t *row = (const int32_t *)(base + (size_t)j * t->nb[1]);
        for (int i = 0; i < k; i++) {
            int32_t e = row[i];
            if (e < 0 || e >= v->n_expert) bad = true;
            else if (!want[e]) want[e] = true, n_union++;
        }
    }
    if (bad) {
        free(copy);
        free(want);
        vfail(v, "VRAM expert cache: layer %s's router chose an expert out of range%s", t->name, "");
        return;
    }
    if (wi == 0) v->st.tokens += (uint64_t)n_tok, v->tick += (uint64_t)n_tok; /* once per pass: the first window */
    if (v->coact) {
        size_t need = (size_t)k * (size_t)n_tok;
        if (need > v->rec_cap) {
            int32_t *nr = realloc(v->rec, need * sizeof *nr);
            if (nr) v->rec = nr, v->rec_cap = need;
        }
        if (need <= v->rec_cap) {
            for (int j = 0; j < n_tok; j++)
                memcpy(v->rec + (size_t)j * k, base + (size_t)j * t->nb[1], sizeof(int32_t) * (size_t)k);
            hy_coact_record(v->coact, layer, v->rec, k, n_tok);
        }
    }
    v->cur_w = n_tok > HY_VXC_SLOT_TOKENS || n_union > v->slots || (size_t)k * (size_t)n_tok > v->ids_cap;
    if (v->cur_w) {
        /* a batch: the routed experts whole into W, at their own index */
        v->st.w_passes++;
        int n = 0;
        for (int e = 0; e < v->n_expert; e++)
            if (want[e]) v->pend_e[n] = e, v->pend_s[n++] = -1;
        deliver(v, layer, n);
    } else {
        v->st.slot_passes++;
        hy_xcache *xc = v->xc[wi];
        int *slot_of = v->slot_of + (size_t)wi * v->n_expert;
        int *expert_in = v->expert_in + (size_t)wi * v->slots;
        int n_pend = 0;
        for (int e = 0; e < v->n_expert; e++)
            if (want[e]) {
                if (hy_xcache_access(xc, e, v->tick)) v->st.hits++;
                else v->st.misses++;
                hy_xcache_pin(xc, e, true);
            }
        for (int e = 0; e < v->n_expert && !v->failed; e++) {
            if (!want[e] || slot_of[e] >= 0) continue;
            int victims[64];
            bool fits = false;
            int nv = hy_xcache_make_room(xc, 1, victims, 64, &fits);
            for (int i = 0; i < nv; i++) {
                int s = slot_of[victims[i]];
                slot_of[victims[i]] = -1;
                if (s >= 0) expert_in[s] = -1;
            }
            int s = 0;
            while (s < v->slots && expert_in[s] >= 0) s++;
            if (!fits || s >= v->slots) {
                vfail(v, "VRAM expert cache: no free slot in layer %s's window%s", t->name, "");
                break;
            }
            hy_xcache_insert(xc, e, false, v->tick);
            slot_of[e] = s;
            expert_in[s] = e;
            v->pend_e[n_pend] = e;
            v->pend_s[n_pend++] = s;
        }
        if (!v->failed) deliver(v, layer, n_pend);
        for (int e = 0; e < v->n_expert; e++)
            if (want[e]) hy_xcache_pin(xc, e, false);
        /* the choices in slots, where the matmuls will read them */
        for (int j = 0; j < n_tok && !v->failed; j++) {
            const int32_t *row = (const int32_t *)(base + (size_t)j * t->nb[1]);
            for (int i = 0; i < k; i++) v->ids_host[j * k + i] = slot_of[row[i]];
        }
        struct ggml_tensor *x = &v->ids_t;
        memset(x, 0, sizeof *x);
        x->type = GGML_TYPE_I32;
        x->buffer = v->ids_buf;
        x->data = ggml_backend_buffer_get_base(v->ids_buf);
        x->ne[0] = k, x->ne[1] = n_tok, x->ne[2] = 1, x->ne[3] = 1;
        x->nb[0] = sizeof(int32_t);
        for (int dd = 1; dd < GGML_MAX_DIMS; dd++) x->nb[dd] = x->nb[dd - 1] * (size_t)x->ne[dd - 1];
        snprintf(x->name, sizeof x->name, "hypura-vxc-slots-%d", layer);
        if (!v->failed) ggml_backend_tensor_set_async(v->be, x, v->ids_host, 0, sizeof(int32_t) * (size_t)k * (size_t)n_tok);
    }
    /* every copy has landed before the layer's matmuls are launched */
    ggml_backend_synchronize(v->be);
    unhold_all(v);
    free(copy);
    free(want);
}

static void swap_in(hy_vxc *v, struct ggml_tensor *node, struct vxt *x) {
    if (v->n_sw >= VX_MAX_SWAPS) {
        vfail(v, "VRAM expert cache: %s: more expert ops in one layer than expected%s", node->name, "");
        return;
    }
    struct swap *s = &v->sw[v->n_sw++];
    s->node = node;
    s->ids = NULL;
    s->w = NULL;
    if (v->cur_w) {
        if (x->t->data != v->kinds[x->kind].base + w_off(v, x->kind)) {
            s->w = x->t;
            s->data = x->t->data;
            x->t->data = v->kinds[x->kind].base + w_off(v, x->kind);
        }
        return;
    }
    struct ggml_tensor *ids = node->src[2];
    if (!ids || ids->ne[0] != v->ids_t.ne[0] || ids->ne[1] != v->ids_t.ne[1]) {
        vfail(v, "VRAM expert cache: %s: its ids are not the router's choice%s", node->name, "");
        return;
    }
    s->ids = ids;
    node->src[2] = &v->ids_t;
}

bool hy_vxc_eval_cb(struct ggml_tensor *t, bool ask, void *user_data) {
    hy_vxc *v = user_data;
    if (v->failed) return ask ? true : false;
    const char *p = strstr(t->name, "ffn_moe_topk-");
    if (p) {
        int layer = atoi(p + strlen("ffn_moe_topk-"));
        if (layer < 0 || layer >= v->d->n_layer || v->win[layer] < 0) return ask ? false : true;
        if (ask) return true;
        restore_all(v); /* the previous layer's expert ops have computed */
        on_router(v, t, layer);
        return true;
    }
    if (!ask) {
        if (v->n_sw && t == v->sw[v->n_sw - 1].node) restore_all(v);
        return true;
    }
    for (int i = 0; i < GGML_MAX_SRC; i++) {
        struct vxt *x = served(v, t->src[i]);
        if (!x) continue;
        const char *name = v->d->tensors[x->info].name;
        if (v->seen[x->layer] != v->pass_id + 1 || v->cur_layer != x->layer) {
            vfail(v, "VRAM expert cache: '%s' is read (by %s) before its layer's router ran", name, ggml_op_name(t->op));
            return true;
        }
        if (t->src[i]->view_src || !((t->op == GGML_OP_MUL_MAT_ID && i == 0) || (t->op == GGML_OP_ADD_ID && i == 1))) {
            vfail(v, "VRAM expert cache: '%s' is read by a %s node, which the cache does not serve", name, ggml_op_name(t->op));
            return true;
        }
        swap_in(v, t, x);
        /* a later router puts the swaps back; after the last cached layer's last expert op,
         * stop there to do it (one cut: every op of the layer would cut fusions too) */
        if (x->layer < v->last_layer) return false;
        int n = 0;
        while (v->layer_vt[x->layer][n] >= 0) n++;
        return v->n_sw >= n;
    }
    return false;
}

bool hy_vxc_abort_cb(void *user_data) { return ((hy_vxc *)user_data)->failed; }

const char *hy_vxc_error(const hy_vxc *v) { return v && v->failed ? v->error : NULL; }

void hy_vxc_settle(hy_vxc *v) {
    if (!v) return;
    restore_all(v);
    v->failed = false;
    v->error[0] = 0;
}

void hy_vxc_get_stats(const hy_vxc *v, hy_vxc_stats *st) { *st = v->st; }
