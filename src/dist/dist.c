/*
 * dist: the process state, argument checks and statistics of every
 * collective, and the self backend (one rank). The MPI runtime and host
 * backend are dist_mpi.c (dist_nompi.c without MPI); NCCL is dist_nccl.c
 * plus the CUDA module's kernels/nccl.cu. See dist.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist_internal.h"
#include "tensor/ops.h"

static struct {
    int ready;
    int rank, size, local_rank, local_size, launched;
    dist_comm *world;
    dist_comm *device; /* dist_comm_for's NCCL / device self communicator, made on first use */
    const struct ops *device_ops;
} P = {0, 0, 1, 0, 1, 0, NULL, NULL, NULL};

static const char *const coll_names[DIST_COLL_COUNT] = {"all_reduce", "reduce_scatter", "all_gather",
                                                       "broadcast",  "all_to_all",     "barrier"};

const char *dist_coll_name(dist_coll k) { return k >= 0 && k < DIST_COLL_COUNT ? coll_names[k] : "?"; }

size_t dist_dtype_size(dist_dtype t) {
    static const size_t sz[DIST_DTYPE_COUNT] = {1, 4, 8, 4, 8};
    return t >= 0 && t < DIST_DTYPE_COUNT ? sz[t] : 0;
}

/* ---- the self backend: one rank ---------------------------------------- */

static void self_copy(dist_comm *c, void *dst, const void *src, size_t bytes) {
    if (dst == src || bytes == 0) return;
    if (c->ops) c->ops->copy(dst, src, bytes);
    else memmove(dst, src, bytes);
}

static base_status self_allreduce(dist_comm *c, void *buf, size_t count, dist_dtype t, dist_op op) {
    (void)c, (void)buf, (void)count, (void)t, (void)op;
    return BASE_OK;
}

static base_status self_reduce_scatter(dist_comm *c, const void *send, void *recv, size_t n, dist_dtype t,
                                       dist_op op) {
    (void)op;
    self_copy(c, recv, send, n * dist_dtype_size(t));
    return BASE_OK;
}

static base_status self_allgatherv(dist_comm *c, const void *send, void *recv, const size_t *counts, dist_dtype t) {
    self_copy(c, recv, send, counts[0] * dist_dtype_size(t));
    return BASE_OK;
}

static base_status self_broadcast(dist_comm *c, void *buf, size_t count, dist_dtype t, int root) {
    (void)c, (void)buf, (void)count, (void)t, (void)root;
    return BASE_OK;
}

static base_status self_alltoallv(dist_comm *c, const void *send, const size_t *sc, void *recv, const size_t *rc,
                                  dist_dtype t) {
    (void)rc;
    self_copy(c, recv, send, sc[0] * dist_dtype_size(t));
    return BASE_OK;
}

static base_status self_barrier(dist_comm *c) {
    (void)c;
    return BASE_OK;
}

void dist_add_rows(const void *blocks, size_t n, int size, dist_dtype t, int accumulate, void *recv) {
    if (t == DIST_F32) {
        const float *r = blocks;
        float *o = recv;
        for (size_t i = 0; i < n; i++) {
            double acc = r[i];
            for (int k = 1; k < size; k++) acc += r[(size_t)k * n + i];
            o[i] = accumulate ? (float)((double)o[i] + acc) : (float)acc;
        }
    } else {
        const double *r = blocks;
        double *o = recv;
        for (size_t i = 0; i < n; i++) {
            double acc = r[i];
            for (int k = 1; k < size; k++) acc += r[(size_t)k * n + i];
            o[i] = accumulate ? o[i] + acc : acc;
        }
    }
}

/* One rank: recv (+)= send, now. On a device (c->ops) through the op
 * table: a copy, or axpy (f32 only). */
static base_status self_ireduce_scatterv(dist_comm *c, const void *send, void *recv, const size_t *counts,
                                         dist_dtype t, int accumulate, dist_request **req) {
    *req = NULL;
    size_t n = counts[0];
    if (n == 0) return BASE_OK;
    if (!c->ops) {
        dist_add_rows(send, n, 1, t, accumulate, recv);
        return BASE_OK;
    }
    if (!accumulate) {
        self_copy(c, recv, send, n * dist_dtype_size(t));
        return BASE_OK;
    }
    if (t != DIST_F32)
        return base_err_set(BASE_ERR_UNSUPPORTED, "dist reduce_scatter on '%s': device sums of f32 only", c->name);
    int64_t shape[1] = {(int64_t)n};
    tensor y = tensor_make(recv, TENSOR_F32, c->ops->device, 1, shape);
    tensor x = tensor_make((void *)send, TENSOR_F32, c->ops->device, 1, shape);
    c->ops->axpy(&y, &x, 1.0f);
    return BASE_OK;
}

static base_status self_wait(dist_request *req) {
    (void)req; /* never made: every self operation completes at once */
    return BASE_OK;
}

static void self_destroy(dist_comm *c) { (void)c; }

const dist_backend dist_self_backend = {"self",         self_allreduce, self_reduce_scatter, self_allgatherv,
                                        self_broadcast, self_alltoallv, self_barrier,        self_ireduce_scatterv,
                                        self_wait,      self_destroy};

/* ---- the process ---------------------------------------------------------- */

base_status dist_init(int *argc, char ***argv) {
    if (P.ready) return BASE_OK;
    dist_comm *w = NULL;
    base_status s = dist_rt_init(argc, argv, &P.rank, &P.size, &P.local_rank, &P.local_size, &P.launched, &w);
    if (s) return s;
    P.world = w;
    P.ready = 1;
    /* the CUDA module picks device GRPO_LOCAL_RANK (kernels/cuda_backend.cu) */
    char lr[16];
    snprintf(lr, sizeof lr, "%d", P.local_rank);
    if (setenv("GRPO_LOCAL_RANK", lr, 1) != 0)
        return base_err_set(BASE_ERR_IO, "setenv(GRPO_LOCAL_RANK): %s", base_strerror_now());
    return BASE_OK;
}

/* A world of one, for programs that never call dist_init (tests, the
 * single-process commands). */
static void ensure_ready(void) {
    static dist_comm self;
    if (P.ready) return;
    memset(&self, 0, sizeof self);
    self.be = &dist_self_backend;
    snprintf(self.name, sizeof self.name, "world");
    self.rank = 0, self.size = 1;
    P.world = &self;
    P.ready = 1;
}

void dist_finalize(void) {
    if (!P.ready) return;
    if (P.device && P.device != P.world) {
        P.device->be->destroy(P.device);
        free(P.device);
    }
    P.device = NULL;
    if (P.launched) dist_rt_finalize();
    P.launched = 0;
}

int dist_launched(void) { return P.launched; }
int dist_rank(void) { return P.rank; }
int dist_world_size(void) { return P.size; }
int dist_local_rank(void) { return P.local_rank; }
int dist_local_size(void) { return P.local_size; }
const char *dist_runtime_name(void) { return P.launched ? dist_rt_name() : "none"; }

static int agreed_failure;
void dist_note_agreed_failure(void) { agreed_failure = 1; }
int dist_failure_agreed(void) { return agreed_failure; }

BASE_NORETURN void dist_abort(int code) {
    fflush(stdout);
    fflush(stderr);
    if (P.launched && P.size > 1) dist_rt_abort(code);
    exit(code);
}

dist_comm *dist_world(void) {
    ensure_ready();
    return P.world;
}

base_status dist_comm_for(const struct ops *ops, dist_comm **out) {
    ensure_ready();
    *out = NULL;
    if (!ops || ops->device == TENSOR_CPU) {
        *out = P.world;
        return BASE_OK;
    }
    if (P.device) {
        if (P.device_ops != ops)
            return base_err_set(BASE_ERR_UNSUPPORTED, "dist: one device backend per process (already '%s')",
                                P.device->name);
        *out = P.device;
        return BASE_OK;
    }
    const char *force = getenv("GRPO_DIST_NCCL");
    if (P.size > 1 || (force && !strcmp(force, "1"))) {
        base_status s = dist_nccl_new(ops, P.world, "world/nccl", &P.device);
        if (s) return base_err_wrap(s, "rank %d of %d: the device communicator", P.rank, P.size);
    } else { /* one rank, no library: copies through the op table */
        dist_comm *c = base_xcalloc(1, sizeof *c);
        c->be = &dist_self_backend;
        snprintf(c->name, sizeof c->name, "world/device");
        c->rank = 0, c->size = 1;
        c->ops = ops;
        P.device = c;
    }
    P.device_ops = ops;
    *out = P.device;
    return BASE_OK;
}

int dist_comm_rank(const dist_comm *c) { return c->rank; }
int dist_comm_size(const dist_comm *c) { return c->size; }
const char *dist_comm_name(const dist_comm *c) { return c->name; }
const char *dist_comm_backend(const dist_comm *c) { return c->be->name; }
void dist_comm_stats(const dist_comm *c, dist_stats *out) { *out = c->stats; }

/* ---- collectives: argument checks, statistics, dispatch -------------------- */

static base_status check_args(const dist_comm *c, const char *what, dist_dtype t, int op) {
    if (!c) return base_err_set(BASE_ERR_INVALID, "dist %s: no communicator", what);
    if (t < 0 || t >= DIST_DTYPE_COUNT)
        return base_err_set(BASE_ERR_INVALID, "dist %s on '%s': dtype %d is not a dist_dtype", what, c->name, (int)t);
    if (op < 0 || op > DIST_MIN)
        return base_err_set(BASE_ERR_INVALID, "dist %s on '%s': op %d is not a dist_op", what, c->name, op);
    return BASE_OK;
}

static void count(dist_comm *c, dist_coll k, size_t elems, dist_dtype t) {
    c->stats.calls[k]++;
    c->stats.bytes[k] += (uint64_t)elems * dist_dtype_size(t);
}

base_status dist_allreduce(dist_comm *c, void *buf, size_t n, dist_dtype t, dist_op op) {
    base_status s = check_args(c, "all_reduce", t, (int)op);
    if (s) return s;
    count(c, DIST_ALLREDUCE, n, t);
    return c->size == 1 || n == 0 ? BASE_OK : c->be->allreduce(c, buf, n, t, op);
}

base_status dist_reduce_scatter(dist_comm *c, const void *send, void *recv, size_t n, dist_dtype t, dist_op op) {
    base_status s = check_args(c, "reduce_scatter", t, (int)op);
    if (s) return s;
    count(c, DIST_REDUCE_SCATTER, n * (size_t)c->size, t);
    return c->be->reduce_scatter(c, send, recv, n, t, op);
}

base_status dist_allgather(dist_comm *c, const void *send, void *recv, size_t n, dist_dtype t) {
    base_status s = check_args(c, "all_gather", t, 0);
    if (s) return s;
    size_t stack[16], *counts = c->size <= 16 ? stack : base_xmalloc((size_t)c->size * sizeof *counts);
    for (int r = 0; r < c->size; r++) counts[r] = n;
    count(c, DIST_ALLGATHER, n, t);
    s = c->be->allgatherv(c, send, recv, counts, t);
    if (counts != stack) free(counts);
    return s;
}

base_status dist_allgatherv(dist_comm *c, const void *send, void *recv, const size_t *counts, dist_dtype t) {
    base_status s = check_args(c, "all_gather", t, 0);
    if (s) return s;
    count(c, DIST_ALLGATHER, counts[c->rank], t);
    return c->be->allgatherv(c, send, recv, counts, t);
}

base_status dist_broadcast(dist_comm *c, void *buf, size_t n, dist_dtype t, int root) {
    base_status s = check_args(c, "broadcast", t, 0);
    if (s) return s;
    if (root < 0 || root >= c->size)
        return base_err_set(BASE_ERR_INVALID, "dist broadcast on '%s': root %d outside the %d ranks", c->name, root,
                            c->size);
    count(c, DIST_BROADCAST, n, t);
    return c->size == 1 ? BASE_OK : c->be->broadcast(c, buf, n, t, root);
}

base_status dist_alltoallv(dist_comm *c, const void *send, const size_t *send_counts, void *recv,
                           const size_t *recv_counts, dist_dtype t) {
    base_status s = check_args(c, "all_to_all", t, 0);
    if (s) return s;
    size_t n = 0;
    for (int r = 0; r < c->size; r++) n += send_counts[r];
    count(c, DIST_ALLTOALL, n, t);
    return c->be->alltoallv(c, send, send_counts, recv, recv_counts, t);
}

base_status dist_barrier(dist_comm *c) {
    base_status s = check_args(c, "barrier", DIST_U8, 0);
    if (s) return s;
    c->stats.calls[DIST_BARRIER]++;
    return c->size == 1 ? BASE_OK : c->be->barrier(c);
}

/* ---- communicators made by the caller --------------------------------------- */

base_status dist_comm_split(dist_comm *parent, int color, int key, const char *name, dist_comm **out) {
    ensure_ready();
    *out = NULL;
    if (!parent) return base_err_set(BASE_ERR_INVALID, "dist split '%s': no parent communicator", name);
    if (color < 0)
        return base_err_set(BASE_ERR_INVALID, "dist split '%s' of '%s' (rank %d): color %d is negative", name,
                            parent->name, parent->rank, color);
    if (parent->ops || (parent->be != &dist_self_backend && strcmp(parent->be->name, "mpi") != 0))
        return base_err_set(BASE_ERR_INVALID,
                            "dist split '%s': '%s' is a device communicator; split its host communicator and "
                            "make the device one with dist_comm_device",
                            name, parent->name);
    dist_comm *c = base_xcalloc(1, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    if (parent->be == &dist_self_backend) { /* one rank: a group of one */
        c->be = &dist_self_backend;
        c->rank = 0, c->size = 1;
    } else {
        base_status s = dist_rt_split(parent, color, key, c);
        if (s) {
            free(c);
            return base_err_wrap(s, "splitting '%s' into '%s' (color %d)", parent->name, name, color);
        }
    }
    *out = c;
    return BASE_OK;
}

base_status dist_comm_device(const struct ops *ops, dist_comm *host, const char *name, dist_comm **out) {
    ensure_ready();
    *out = NULL;
    if (!ops || ops->device == TENSOR_CPU) {
        *out = host;
        return BASE_OK;
    }
    const char *force = getenv("GRPO_DIST_NCCL");
    if (host->size > 1 || (force && !strcmp(force, "1"))) {
        base_status s = dist_nccl_new(ops, host, name, out);
        return s ? base_err_wrap(s, "rank %d of '%s': its device communicator", host->rank, host->name) : BASE_OK;
    }
    dist_comm *c = base_xcalloc(1, sizeof *c);
    c->be = &dist_self_backend;
    snprintf(c->name, sizeof c->name, "%s", name);
    c->rank = 0, c->size = 1;
    c->ops = ops;
    *out = c;
    return BASE_OK;
}

void dist_comm_free(dist_comm *c) {
    if (!c || c == P.world || c == P.device) return;
    c->be->destroy(c);
    free(c);
}

base_status dist_ireduce_scatterv(dist_comm *c, const void *send, void *recv, const size_t *counts, dist_dtype t,
                                  int accumulate, dist_request **req) {
    *req = NULL;
    base_status s = check_args(c, "reduce_scatter", t, DIST_SUM);
    if (s) return s;
    if (t != DIST_F32 && t != DIST_F64)
        return base_err_set(BASE_ERR_INVALID, "dist reduce_scatter on '%s': a sum of f32 or f64, not dtype %d",
                            c->name, (int)t);
    size_t n = 0;
    for (int r = 0; r < c->size; r++) n += counts[r];
    count(c, DIST_REDUCE_SCATTER, n, t);
    s = c->be->ireduce_scatterv(c, send, recv, counts, t, accumulate != 0, req);
    if (*req) (*req)->c = c;
    return s;
}

base_status dist_wait(dist_request *req) {
    if (!req) return BASE_OK;
    return req->c->be->wait(req);
}
