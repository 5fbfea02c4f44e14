#include "engine/hy_rpc.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/tcp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <jansson.h>

#include "ggml-alloc.h"
#include "ggml-cpu.h"
#include "ggml.h"
#include "util/hy_util.h"

/* ggml-rpc's wire protocol at the pinned version (ggml-rpc.h: 7.0.0): the one
 * exchange this file makes itself, the HELLO, to find out whether a port is a
 * server of this version before libggml (which aborts on failure) connects */
#define RPC_CMD_HELLO_ID 14
#define RPC_CAPS_BYTES 24
#define RPC_PROTO_MAJOR 7

static bool addr_private(uint32_t a, bool *loopback) {
    *loopback = (a >> 24) == 127;
    return *loopback || (a >> 24) == 10 || (a >> 20) == ((172u << 4) | 1) || (a >> 16) == ((192u << 8) | 168) ||
           (a >> 16) == ((169u << 8) | 254);
}

static int parse_one(const char *s, size_t len, hy_rpc_endpoint *e, char *err, size_t errlen) {
    memset(e, 0, sizeof *e);
    char buf[256];
    if (len == 0 || len >= sizeof buf) return hy_fail(err, errlen, "bad RPC endpoint '%.*s': want HOST:PORT", (int)len, s);
    memcpy(buf, s, len);
    buf[len] = 0;
    char *at = strchr(buf, '@');
    if (at) {
        *at = 0;
        if (!hy_parse_bytes(at + 1, &e->budget) || e->budget == 0)
            return hy_fail(err, errlen, "bad RPC endpoint '%s': '%s' after @ is not a size (e.g. 1.5G)", buf, at + 1);
    }
    snprintf(e->endpoint, sizeof e->endpoint, "%s", buf);
    char *colon = strrchr(buf, ':');
    if (!colon || colon == buf || !colon[1])
        return hy_fail(err, errlen, "bad RPC endpoint '%s': want HOST:PORT (e.g. 192.168.1.20:50052)", e->endpoint);
    *colon = 0;
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno || *end || port < 1 || port > 65535)
        return hy_fail(err, errlen, "bad RPC endpoint '%s': the port must be 1-65535", e->endpoint);
    if (strlen(buf) >= sizeof e->host) return hy_fail(err, errlen, "bad RPC endpoint '%s': host name too long", e->endpoint);
    snprintf(e->host, sizeof e->host, "%s", buf);
    e->port = (int)port;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(e->host, NULL, &hints, &res);
    if (rc || !res)
        return hy_fail(err, errlen, "RPC endpoint '%s': cannot resolve '%s' to an IPv4 address: %s", e->endpoint, e->host,
                       gai_strerror(rc));
    struct sockaddr_in *sin = (struct sockaddr_in *)res->ai_addr;
    inet_ntop(AF_INET, &sin->sin_addr, e->addr, sizeof e->addr);
    e->private_net = addr_private(ntohl(sin->sin_addr.s_addr), &e->loopback);
    freeaddrinfo(res);
    return 0;
}

int hy_rpc_parse(const char *list, hy_rpc *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!list || !*list) return hy_fail(err, errlen, "no RPC endpoint given");
    const char *p = list;
    while (1) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (out->n == HY_RPC_MAX_ENDPOINTS) return hy_fail(err, errlen, "at most %d RPC endpoints", HY_RPC_MAX_ENDPOINTS);
        if (parse_one(p, len, &out->ep[out->n], err, errlen)) return -1;
        for (int i = 0; i < out->n; i++)
            if (!strcmp(out->ep[i].addr, out->ep[out->n].addr) && out->ep[i].port == out->ep[out->n].port)
                return hy_fail(err, errlen, "RPC endpoint '%s' is given twice", out->ep[out->n].endpoint);
        hy_rpc_endpoint *e = &out->ep[out->n++];
        if (!e->private_net)
            fprintf(stderr,
                    "hypura: warning: RPC endpoint %s (%s) is not on loopback or a private network. ggml's RPC protocol "
                    "has no authentication and no encryption: whoever reaches that port can read the weights and "
                    "run computations on it; keep it behind a firewall or a VPN.\n",
                    e->endpoint, e->addr);
        if (!c) break;
        p = c + 1;
    }
    return 0;
}

static double now_s(void) { return hy_now(); }

/* wait until fd is ready for ev, up to the deadline: 1 ready, 0 timed out, -1 error */
static int wait_fd(int fd, short ev, double deadline) {
    for (;;) {
        double left = deadline - now_s();
        if (left <= 0) return 0;
        struct pollfd pfd = {.fd = fd, .events = ev};
        int r = poll(&pfd, 1, (int)(left * 1000) + 1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) return 0;
        return 1;
    }
}

static int io_all(int fd, void *buf, size_t n, bool send_, double deadline, const char **why) {
    size_t done = 0;
    while (done < n) {
        int w = wait_fd(fd, send_ ? POLLOUT : POLLIN, deadline);
        if (w == 0) {
            *why = "timed out";
            return -1;
        }
        if (w < 0) {
            *why = strerror(errno);
            return -1;
        }
        ssize_t r = send_ ? send(fd, (char *)buf + done, n - done, MSG_NOSIGNAL) : recv(fd, (char *)buf + done, n - done, 0);
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (r <= 0) {
            *why = r == 0 ? "connection closed" : strerror(errno);
            return -1;
        }
        done += (size_t)r;
    }
    return 0;
}

int hy_rpc_probe(const hy_rpc_endpoint *e, double timeout_s, char *err, size_t errlen) {
    double deadline = now_s() + timeout_s;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return hy_fail(err, errlen, "RPC endpoint %s: socket: %s", e->endpoint, strerror(errno));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)e->port)};
    inet_pton(AF_INET, e->addr, &sa.sin_addr);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    if (rc < 0 && errno != EINPROGRESS) {
        int en = errno;
        close(fd);
        return hy_fail(err, errlen, "RPC endpoint %s (%s): cannot connect: %s%s", e->endpoint, e->addr, strerror(en),
                       en == ECONNREFUSED ? " (is ggml-rpc-server running there, on that port?)" : "");
    }
    if (rc < 0) {
        int w = wait_fd(fd, POLLOUT, deadline);
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (w > 0) getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (w <= 0 || soerr) {
            close(fd);
            if (w == 0)
                return hy_fail(err, errlen, "RPC endpoint %s (%s): no connection within %.0f s", e->endpoint, e->addr,
                               timeout_s);
            return hy_fail(err, errlen, "RPC endpoint %s (%s): cannot connect: %s%s", e->endpoint, e->addr,
                           strerror(soerr ? soerr : errno),
                           soerr == ECONNREFUSED ? " (is ggml-rpc-server running there, on that port?)" : "");
        }
    }
    /* HELLO: | cmd (1) | size (8) | caps (24) |  ->  | size (8) | major minor patch pad caps(24) | */
    uint8_t req[1 + 8 + RPC_CAPS_BYTES] = {0};
    req[0] = RPC_CMD_HELLO_ID;
    uint64_t sz = RPC_CAPS_BYTES;
    memcpy(req + 1, &sz, 8);
    const char *why = NULL;
    uint64_t rsz = 0;
    uint8_t rsp[4 + RPC_CAPS_BYTES];
    if (io_all(fd, req, sizeof req, true, deadline, &why) || io_all(fd, &rsz, 8, false, deadline, &why)) {
        close(fd);
        if (!strcmp(why, "timed out"))
            return hy_fail(err, errlen,
                           "RPC endpoint %s (%s): no answer to the RPC handshake within %.0f s (busy with another "
                           "client — ggml-rpc-server serves one at a time — stopped, or not an RPC server)",
                           e->endpoint, e->addr, timeout_s);
        return hy_fail(err, errlen, "RPC endpoint %s (%s): the RPC handshake failed (%s): not a ggml-rpc-server?",
                       e->endpoint, e->addr, why);
    }
    if (rsz != sizeof rsp || io_all(fd, rsp, sizeof rsp, false, deadline, &why)) {
        close(fd);
        return hy_fail(err, errlen, "RPC endpoint %s (%s): not a ggml-rpc-server of this version (bad handshake answer)",
                       e->endpoint, e->addr);
    }
    close(fd);
    if (rsp[0] != RPC_PROTO_MAJOR)
        return hy_fail(err, errlen, "RPC endpoint %s (%s): the server speaks RPC protocol %d.%d.%d, this build %d.x: use "
                                    "a ggml-rpc-server of the same llama.cpp version",
                       e->endpoint, e->addr, rsp[0], rsp[1], rsp[2], RPC_PROTO_MAJOR);
    return 0;
}

typedef ggml_backend_reg_t (*add_server_fn)(const char *endpoint);

/* the registries and buffer types libggml made for each server: ggml-rpc keeps them in
 * static maps that are destroyed at exit before LeakSanitizer looks, so they are kept
 * reachable here */
static ggml_backend_reg_t g_server_regs[HY_RPC_MAX_ENDPOINTS * 4];
static ggml_backend_buffer_type_t g_server_bufts[HY_RPC_MAX_ENDPOINTS * 4];
static int g_n_server_regs;

bool hy_rpc_available(void) {
    ggml_backend_reg_t reg = ggml_backend_reg_by_name("RPC");
    return reg && ggml_backend_reg_get_proc_address(reg, "ggml_backend_rpc_add_server");
}

int hy_rpc_connect(hy_rpc *r, double timeout_s, bool keep_going, char *err, size_t errlen) {
    ggml_backend_reg_t reg = ggml_backend_reg_by_name("RPC");
    add_server_fn add = reg ? (add_server_fn)ggml_backend_reg_get_proc_address(reg, "ggml_backend_rpc_add_server") : NULL;
    if (!add)
        return hy_fail(err, errlen, "--rpc: this build of llama.cpp (libggml) has no RPC backend; build it with "
                                    "-DGGML_RPC=ON (scripts/setup.sh does)");
    /* ggml-rpc writes to its sockets without MSG_NOSIGNAL: a server that died would end this
     * process with SIGPIPE before its failure can be reported; the write fails with EPIPE instead */
    signal(SIGPIPE, SIG_IGN);
    int kept = 0;
    for (int i = 0; i < r->n; i++) {
        hy_rpc_endpoint *e = &r->ep[i];
        char why[HY_ERRLEN];
        if (hy_rpc_probe(e, timeout_s, why, sizeof why)) {
            if (!keep_going) return hy_fail(err, errlen, "%s", why);
            fprintf(stderr, "hypura: %s; going on without it\n", why);
            continue;
        }
        /* libggml connects by the string: give it the resolved address, which it can parse without a lookup */
        char ep[96];
        snprintf(ep, sizeof ep, "%s:%d", e->addr, e->port);
        ggml_backend_reg_t sreg = add(ep);
        if (!sreg || ggml_backend_reg_dev_count(sreg) == 0) {
            if (!keep_going) return hy_fail(err, errlen, "RPC endpoint %s: the server offers no device", e->endpoint);
            fprintf(stderr, "hypura: RPC endpoint %s offers no device; going on without it\n", e->endpoint);
            continue;
        }
        e->dev = ggml_backend_reg_dev_get(sreg, 0);
        if (g_n_server_regs < (int)(sizeof g_server_regs / sizeof g_server_regs[0])) {
            g_server_bufts[g_n_server_regs] = ggml_backend_dev_buffer_type(e->dev);
            g_server_regs[g_n_server_regs++] = sreg;
        }
        snprintf(e->dev_name, sizeof e->dev_name, "%s", ggml_backend_dev_name(e->dev));
        ggml_backend_dev_memory(e->dev, &e->mem_free, &e->mem_total);
        if (!e->budget) {
            uint64_t head = (uint64_t)256 << 20;
            if (e->mem_total / 20 > head) head = e->mem_total / 20;
            e->budget = e->mem_free > head ? e->mem_free - head : 0;
        }
        r->ep[kept++] = *e;
    }
    r->n = kept;
    /* from here on libggml talks to the servers: a lost or silent one is named, not a hang */
    if (kept) hy_rpc_guard_start(r, hy_rpc_timeout_s(), keep_going);
    return 0;
}

/* ---------------------------------------------------------------- measuring */

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* seconds per Q8_0 matrix-vector product of `rows` x 4096 on backend be (median of 5) */
static double matvec_s(ggml_backend_t be, ggml_backend_buffer_type_t buft, int rows, uint64_t *wbytes) {
    struct ggml_init_params ip = {.mem_size = ggml_tensor_overhead() * 8 + ggml_graph_overhead(), .no_alloc = true};
    struct ggml_context *ctx = ggml_init(ip);
    if (!ctx) return 0;
    struct ggml_tensor *w = ggml_new_tensor_2d(ctx, GGML_TYPE_Q8_0, 4096, rows);
    struct ggml_tensor *x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, 4096, 1);
    struct ggml_tensor *y = ggml_mul_mat(ctx, w, x);
    struct ggml_cgraph *gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, y);
    double t = 0;
    ggml_backend_buffer_t wb = ggml_backend_alloc_ctx_tensors_from_buft(ctx, buft);
    if (wb) {
        ggml_backend_buffer_clear(wb, 0); /* zeros: a valid Q8_0 block (scale 0) */
        *wbytes = ggml_nbytes(w);
        double s[5];
        int ok = 1;
        for (int i = 0; i < 6 && ok; i++) {
            double t0 = now_s();
            ok = ggml_backend_graph_compute(be, gf) == GGML_STATUS_SUCCESS;
            ggml_backend_synchronize(be);
            /* a remote launch is one-way: reading a result back waits for the product (and a round trip) */
            float y0;
            if (ok) ggml_backend_tensor_get(y, &y0, 0, sizeof y0);
            if (i) s[i - 1] = now_s() - t0; /* the first is a warm-up */
        }
        if (ok) {
            qsort(s, 5, sizeof s[0], cmp_d);
            t = s[2];
        }
        ggml_backend_buffer_free(wb);
    }
    ggml_free(ctx);
    return t;
}

int hy_rpc_measure(hy_rpc *r, int n_threads, char *err, size_t errlen) {
    const int rows = 49152; /* 204 MiB of Q8_0: larger than any CPU cache (this VM reports a 32 MiB L3) */
    uint64_t wbytes = 0;
    ggml_backend_t cpu = ggml_backend_cpu_init();
    if (cpu) {
        if (n_threads > 0) ggml_backend_cpu_set_n_threads(cpu, n_threads);
        double t = matvec_s(cpu, ggml_backend_cpu_buffer_type(), rows, &wbytes);
        r->local_matvec_gbps = t > 0 ? (double)wbytes / t / 1e9 : 0;
        ggml_backend_free(cpu);
    }
    for (int i = 0; i < r->n; i++) {
        hy_rpc_endpoint *e = &r->ep[i];
        /* round trip: a device-memory query is one request and one answer */
        double s[15];
        for (int k = 0; k < 15; k++) {
            size_t f, tt;
            double t0 = now_s();
            ggml_backend_dev_memory(e->dev, &f, &tt);
            s[k] = now_s() - t0;
        }
        qsort(s, 15, sizeof s[0], cmp_d);
        e->rtt_s = s[7];
        /* upload: 4 x 8 MiB (below ggml-rpc's 10 MiB hash-first threshold), closed by a read back */
        ggml_backend_buffer_type_t buft = ggml_backend_dev_buffer_type(e->dev);
        const size_t chunk = (size_t)8 << 20;
        ggml_backend_buffer_t b = ggml_backend_buft_alloc_buffer(buft, chunk);
        char *src = malloc(chunk);
        if (b && src) {
            memset(src, 0x5a, chunk);
            struct ggml_init_params ip = {.mem_size = ggml_tensor_overhead() * 2, .no_alloc = true};
            struct ggml_context *ctx = ggml_init(ip);
            struct ggml_tensor *t = ctx ? ggml_new_tensor_1d(ctx, GGML_TYPE_I8, (int64_t)chunk) : NULL;
            if (t && ggml_backend_tensor_alloc(b, t, ggml_backend_buffer_get_base(b)) == GGML_STATUS_SUCCESS) {
                char one;
                double t0 = now_s();
                for (int k = 0; k < 4; k++) ggml_backend_tensor_set(t, src, 0, chunk);
                ggml_backend_tensor_get(t, &one, 0, 1);
                double dt = now_s() - t0 - e->rtt_s;
                e->up_gbps = dt > 0 ? 4.0 * (double)chunk / dt / 1e9 : 0;
            }
            if (ctx) ggml_free(ctx);
        }
        free(src);
        if (b) ggml_backend_buffer_free(b);
        ggml_backend_t be = ggml_backend_dev_init(e->dev, NULL);
        if (be) {
            double t = matvec_s(be, buft, rows, &wbytes);
            t -= e->rtt_s; /* the answer's round trip is the link's, counted there */
            e->matvec_gbps = t > 0 ? (double)wbytes / t / 1e9 : 0;
            ggml_backend_free(be);
        }
        if (!e->matvec_gbps) return hy_fail(err, errlen, "RPC endpoint %s: could not time a product on it", e->endpoint);
    }
    return 0;
}

hy_rpc_link hy_rpc_link_of(const hy_rpc *r) {
    hy_rpc_link l = {.rtt_s = 0, .gbps = 0, .assumed = false};
    for (int i = 0; i < r->n; i++) {
        if (r->ep[i].rtt_s > l.rtt_s) l.rtt_s = r->ep[i].rtt_s;
        if (r->ep[i].up_gbps > 0 && (l.gbps == 0 || r->ep[i].up_gbps < l.gbps)) l.gbps = r->ep[i].up_gbps;
    }
    if (l.gbps == 0) l.gbps = 1.0;
    return l;
}

/* ---------------------------------------------------------------- faults */

static struct {
    hy_rpc r;
    bool active, reexec;
    double timeout_s;
    pthread_t watchdog;
    bool watchdog_on;
    volatile int stop;
    volatile int stalled; /* index + 1 of the endpoint cut off for stalling */
    double stalled_for;
    /* the sockets last seen connected to each endpoint: a connection the server reset no longer
     * has a peer address to match, but its descriptor is still open when ggml aborts */
    volatile int known_fd[HY_RPC_MAX_ENDPOINTS][4];
} G;

/* sockets of this process connected to endpoint e */
static int endpoint_fds(const hy_rpc_endpoint *e, int *fds, int max) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return 0;
    int n = 0;
    struct dirent *de;
    struct in_addr want;
    inet_pton(AF_INET, e->addr, &want);
    while ((de = readdir(d)) && n < max) {
        int fd = atoi(de->d_name);
        if (fd <= 2 || fd == dirfd(d)) continue;
        struct sockaddr_in sa;
        socklen_t sl = sizeof sa;
        if (getpeername(fd, (struct sockaddr *)&sa, &sl) || sa.sin_family != AF_INET) continue;
        if (sa.sin_addr.s_addr == want.s_addr && ntohs(sa.sin_port) == e->port) fds[n++] = fd;
    }
    closedir(d);
    return n;
}

static void set_cloexec_all(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        int fd = atoi(de->d_name);
        if (fd <= 2 || fd == dirfd(d)) continue;
        int fl = fcntl(fd, F_GETFD);
        if (fl >= 0) fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
    }
    closedir(d);
}

static void lost(int idx, const char *what) {
    const hy_rpc_endpoint *e = idx >= 0 ? &G.r.ep[idx] : NULL;
    if (e)
        fprintf(stderr, "\nhypura: lost the RPC server at %s: %s\n", e->endpoint, what);
    else
        fprintf(stderr, "\nhypura: lost an RPC server (%s)\n", what);
    fflush(stderr);
    if (G.reexec) {
        /* serve: start again without the lost device, and keep answering */
        char list[1024] = "";
        const char *prev = getenv("HYPURA_RPC_LOST");
        snprintf(list, sizeof list, "%s%s%s", prev && *prev ? prev : "", prev && *prev ? "," : "",
                 e ? e->endpoint : "?");
        setenv("HYPURA_RPC_LOST", list, 1);
        FILE *f = fopen("/proc/self/cmdline", "rb");
        static char buf[1 << 16];
        size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        if (f) fclose(f);
        if (n > 0 && n < sizeof buf - 1) {
            buf[n] = 0;
            char *args[1024];
            int k = 0;
            for (size_t i = 0; i < n && k < 1023; i += strlen(buf + i) + 1) args[k++] = buf + i;
            args[k] = NULL;
            fprintf(stderr, "hypura: restarting without %s\n", e ? e->endpoint : "it");
            fflush(stderr);
            set_cloexec_all();
            execv("/proc/self/exe", args);
        }
    }
    _exit(HY_RPC_EXIT_LOST);
}

/* which endpoint failed: the one the watchdog cut off, else one whose connection the
 * server closed (CLOSE_WAIT) or that refuses new connections */
static void remember_fds(void) {
    for (int i = 0; i < G.r.n; i++) {
        int fds[4];
        int n = endpoint_fds(&G.r.ep[i], fds, 4);
        if (n == 0) continue; /* none matches now (a reset one has no peer): keep the last seen */
        for (int k = 0; k < 4; k++) G.known_fd[i][k] = k < n ? fds[k] : -1;
    }
}

static int find_failed(const char **what) {
    if (G.stalled) {
        *what = "no answer to a request (stalled); cut off by the timeout (HYPURA_RPC_TIMEOUT)";
        return G.stalled - 1;
    }
    for (int i = 0; i < G.r.n; i++)
        for (int k = 0; k < 4; k++) {
            int fd = G.known_fd[i][k];
            struct tcp_info ti;
            socklen_t sl = sizeof ti;
            if (fd > 2 && !getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &sl) && ti.tcpi_state != 1 /* TCP_ESTABLISHED */) {
                *what = "the server closed or reset the connection (it died or was stopped)";
                return i;
            }
        }
    for (int i = 0; i < G.r.n; i++) {
        int fds[8];
        int n = endpoint_fds(&G.r.ep[i], fds, 8);
        for (int k = 0; k < n; k++) {
            struct tcp_info ti;
            socklen_t sl = sizeof ti;
            if (!getsockopt(fds[k], IPPROTO_TCP, TCP_INFO, &ti, &sl) && ti.tcpi_state != 1 /* TCP_ESTABLISHED */) {
                *what = "the server closed the connection (it died or was stopped)";
                return i;
            }
        }
    }
    /* a server killed a moment ago may still be closing its listening socket: ask a few times */
    for (int tries = 0; tries < 10; tries++) {
        for (int i = 0; i < G.r.n; i++) {
            char why[HY_ERRLEN];
            if (hy_rpc_probe(&G.r.ep[i], 0.2, why, sizeof why) && strstr(why, "cannot connect")) {
                *what = "the connection failed and the server no longer accepts connections";
                return i;
            }
        }
        usleep(100 * 1000);
    }
    *what = "the connection failed";
    return -1;
}

static void on_ggml_abort(const char *msg) {
    if (!G.active) {
        fprintf(stderr, "%s\n", msg);
        return; /* ggml aborts */
    }
    const char *what = NULL;
    int idx = find_failed(&what);
    if (idx < 0 && !strstr(msg, "RPC")) {
        fprintf(stderr, "%s\n", msg);
        return; /* not ours */
    }
    char full[512];
    snprintf(full, sizeof full, "%s (ggml: %s)", what, msg);
    size_t l = strlen(full);
    while (l && (full[l - 1] == '\n' || full[l - 1] == ')')) l--; /* ggml's message ends with a newline */
    snprintf(full + l, sizeof full - l, ")");
    lost(idx, full);
}

/* whether some thread of this process is blocked on fd: reading (ggml-rpc waits for an answer
 * there) or writing (a server that stopped reading fills the socket's buffers); between
 * requests its thread waits on a queue instead */
static bool thread_reading(int fd) {
    DIR *d = opendir("/proc/self/task");
    if (!d) return false;
    bool found = false;
    struct dirent *de;
    while (!found && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/self/task/%s/syscall", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        if (fgets(line, sizeof line, f)) {
            long nr = -1;
            unsigned long arg0 = 0;
            if (sscanf(line, "%ld 0x%lx", &nr, &arg0) == 2 && (nr == SYS_recvfrom || nr == SYS_read || nr == SYS_sendto || nr == SYS_write) &&
                (long)arg0 == fd) found = true;
        }
        fclose(f);
    }
    closedir(d);
    return found;
}

static void *watchdog_main(void *arg) {
    (void)arg;
    struct {
        uint64_t rx, acked;
        double t_block; /* since when a thread waits on it with nothing received or acknowledged; 0: not waiting */
        int fd;
    } st[HY_RPC_MAX_ENDPOINTS][4];
    memset(st, 0, sizeof st);
    while (!G.stop) {
        usleep(200 * 1000);
        remember_fds();
        double t = now_s();
        for (int i = 0; i < G.r.n; i++) {
            int fds[4];
            int n = endpoint_fds(&G.r.ep[i], fds, 4);
            for (int k = 0; k < n; k++) {
                struct tcp_info ti;
                socklen_t sl = sizeof ti;
                memset(&ti, 0, sizeof ti);
                if (getsockopt(fds[k], IPPROTO_TCP, TCP_INFO, &ti, &sl)) continue;
                bool reading = thread_reading(fds[k]);
                /* the server closed the connection (it died or was stopped) while nothing waits on it:
                 * handled now (serve restarts without it before the next request needs it), not when
                 * the next request fails on it. 8: TCP_CLOSE_WAIT */
                if (ti.tcpi_state == 8 && !reading) {
                    G.stalled = 0;
                    lost(i, "the server closed the connection (it died or was stopped) while idle");
                }
                if (st[i][k].fd != fds[k] || ti.tcpi_bytes_received != st[i][k].rx ||
                    ti.tcpi_bytes_acked != st[i][k].acked || !reading) {
                    st[i][k].fd = fds[k];
                    st[i][k].rx = ti.tcpi_bytes_received;
                    st[i][k].acked = ti.tcpi_bytes_acked;
                    st[i][k].t_block = reading ? t : 0;
                    continue;
                }
                if (st[i][k].t_block == 0) st[i][k].t_block = t;
                /* waiting on the server, and no byte moved either way for the timeout */
                if (t - st[i][k].t_block > G.timeout_s) {
                    G.stalled_for = t - st[i][k].t_block;
                    G.stalled = i + 1;
                    fprintf(stderr, "\nhypura: the RPC server at %s has not answered for %.0f s\n", G.r.ep[i].endpoint,
                            G.stalled_for);
                    for (int j = 0; j < n; j++) shutdown(fds[j], SHUT_RDWR); /* the reader sees the end: ggml aborts */
                    return NULL;
                }
            }
        }
    }
    return NULL;
}

void hy_rpc_guard_start(const hy_rpc *r, double timeout_s, bool reexec) {
    if (G.active) return; /* once per process: the endpoints do not change */
    G.r = *r;
    G.reexec = reexec;
    G.timeout_s = timeout_s;
    G.active = true;
    G.stop = 0;
    memset((void *)G.known_fd, 0xff, sizeof G.known_fd); /* -1: none yet */
    remember_fds();
    ggml_set_abort_callback(on_ggml_abort);
    if (timeout_s > 0 && !G.watchdog_on) G.watchdog_on = pthread_create(&G.watchdog, NULL, watchdog_main, NULL) == 0;
}

void hy_rpc_guard_stop(void) {
    G.stop = 1;
    if (G.watchdog_on) pthread_join(G.watchdog, NULL);
    G.watchdog_on = false;
    G.active = false;
}

double hy_rpc_timeout_s(void) {
    const char *v = getenv("HYPURA_RPC_TIMEOUT");
    if (v && *v) {
        char *end;
        double t = strtod(v, &end);
        if (!*end && t >= 0) return t;
        fprintf(stderr, "hypura: ignoring HYPURA_RPC_TIMEOUT='%s' (not a number of seconds)\n", v);
    }
    return HY_RPC_DEFAULT_TIMEOUT_S;
}

const char *hy_rpc_lost_endpoints(void) {
    const char *v = getenv("HYPURA_RPC_LOST");
    return v && *v ? v : NULL;
}

/* ---------------------------------------------------------------- reporting */

void hy_rpc_print(FILE *f, const hy_rpc *r) {
    char a[32], b[32];
    for (int i = 0; i < r->n; i++) {
        const hy_rpc_endpoint *e = &r->ep[i];
        fprintf(f, "remote   %s (%s, %s%s): %s total, %s free\n", e->endpoint, e->dev_name, e->addr,
                e->loopback ? ", loopback" : e->private_net ? ", private network" : ", PUBLIC network: no authentication",
                hy_fmt_bytes(e->mem_total, a, sizeof a), hy_fmt_bytes(e->mem_free, b, sizeof b));
        fprintf(f, "         link: round trip %.3f ms, upload %.2f GB/s; Q8_0 product %.1f GB/s there (%.1f on this CPU)\n",
                e->rtt_s * 1e3, e->up_gbps, e->matvec_gbps, r->local_matvec_gbps);
    }
}

json_t *hy_rpc_json(const hy_rpc *r) {
    json_t *arr = json_array();
    for (int i = 0; i < r->n; i++) {
        const hy_rpc_endpoint *e = &r->ep[i];
        json_t *o = json_object();
        json_object_set_new(o, "endpoint", json_string(e->endpoint));
        json_object_set_new(o, "address", json_string(e->addr));
        json_object_set_new(o, "network", json_string(e->loopback ? "loopback" : e->private_net ? "private" : "public"));
        json_object_set_new(o, "device", json_string(e->dev_name));
        json_object_set_new(o, "mem_total", json_integer((json_int_t)e->mem_total));
        json_object_set_new(o, "mem_free", json_integer((json_int_t)e->mem_free));
        json_object_set_new(o, "rtt_s", json_real(e->rtt_s));
        json_object_set_new(o, "upload_gbps", json_real(e->up_gbps));
        json_object_set_new(o, "matvec_gbps", json_real(e->matvec_gbps));
        json_object_set_new(o, "local_matvec_gbps", json_real(r->local_matvec_gbps));
        json_array_append_new(arr, o);
    }
    return arr;
}
