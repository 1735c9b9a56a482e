/*
 * The NCCL backend's host side: the table of the CUDA module's NCCL code
 * (kernels/nccl.cu, through src/dist/dist_nccl_abi.h), its communicator made
 * from a unique id that rank 0 draws and broadcasts over the host (MPI)
 * communicator, and every call's error named with the rank and the
 * communicator. Plain C in every build: without CUDA the table is absent
 * and dist_nccl_new says so.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist_internal.h"
#include "dist_nccl_abi.h"
#include "tensor/ops.h"

typedef struct {
    const dist_nccl_abi *abi;
    void *comm;
    const struct ops *ops; /* the device's op table: scratch and the rank-ordered sums */
} nccl_impl;

/* Check one call of the module's table: BASE_ERR_IO naming the call (the
 * module's message), the rank and the communicator. */
#define DIST_CHECK_NCCL(c, call)                                                                                \
    do {                                                                                                        \
        char err_[1024] = "";                                                                                   \
        int r_ = (call);                                                                                        \
        if (r_ != 0)                                                                                            \
            return base_err_set(BASE_ERR_IO, "%s:%d: %s failed on rank %d of communicator '%s' (%d ranks): %s", \
                                __FILE__, __LINE__, #call, (c)->rank, (c)->name, (c)->size, err_);              \
    } while (0)
#define IMPL(c) ((nccl_impl *)(c)->impl)
#define ERR err_, sizeof err_

static base_status n_allreduce(dist_comm *c, void *buf, size_t n, dist_dtype t, dist_op op) {
    DIST_CHECK_NCCL(c, IMPL(c)->abi->all_reduce(IMPL(c)->comm, buf, n, (int)t, (int)op, ERR));
    return BASE_OK;
}

static base_status n_reduce_scatter(dist_comm *c, const void *send, void *recv, size_t n, dist_dtype t, dist_op op) {
    DIST_CHECK_NCCL(c, IMPL(c)->abi->reduce_scatter(IMPL(c)->comm, send, recv, n, (int)t, (int)op, ERR));
    return BASE_OK;
}

static base_status n_allgatherv(dist_comm *c, const void *send, void *recv, const size_t *counts, dist_dtype t) {
    DIST_CHECK_NCCL(c, IMPL(c)->abi->all_gatherv(IMPL(c)->comm, send, recv, counts, (int)t, ERR));
    return BASE_OK;
}

static base_status n_broadcast(dist_comm *c, void *buf, size_t n, dist_dtype t, int root) {
    DIST_CHECK_NCCL(c, IMPL(c)->abi->broadcast(IMPL(c)->comm, buf, n, (int)t, root, ERR));
    return BASE_OK;
}

static base_status n_alltoallv(dist_comm *c, const void *send, const size_t *sc, void *recv, const size_t *rc,
                               dist_dtype t) {
    DIST_CHECK_NCCL(c, IMPL(c)->abi->all_to_allv(IMPL(c)->comm, send, sc, recv, rc, (int)t, ERR));
    return BASE_OK;
}

static base_status n_barrier(dist_comm *c) {
    DIST_CHECK_NCCL(c, IMPL(c)->abi->barrier(IMPL(c)->comm, ERR));
    return BASE_OK;
}

/* dist_ireduce_scatterv on NCCL, from the module's all-to-all (the ABI has
 * no reduce with counts): in steps of `chunk` elements of every rank's
 * block, each step packing this rank's pieces back to back (send scratch),
 * exchanging them (waited for by the module like every collective) and
 * adding the size pieces received into recv in rank order with the op
 * table's axpy (f32 sums here, not double as on the host). chunk =
 * ceil(largest block / size), so the two scratch buffers hold about one
 * block each, not size blocks. Completes before it returns (*req NULL). */
static base_status n_ireduce_scatterv(dist_comm *c, const void *send, void *recv, const size_t *counts, dist_dtype t,
                                      int accumulate, dist_request **req) {
    *req = NULL;
    if (t != DIST_F32)
        return base_err_set(BASE_ERR_UNSUPPORTED, "dist reduce_scatter on '%s' (NCCL): sums of f32 only", c->name);
    const struct ops *o = IMPL(c)->ops;
    int W = c->size;
    size_t maxc = 0, mine = counts[c->rank];
    for (int r = 0; r < W; r++) maxc = counts[r] > maxc ? counts[r] : maxc;
    if (maxc == 0) return BASE_OK;
    size_t chunk = (maxc + (size_t)W - 1) / (size_t)W, *v = base_xmalloc(3 * (size_t)W * sizeof *v);
    size_t *off = v, *sc = v + W, *rc = v + 2 * W;
    off[0] = 0;
    for (int r = 1; r < W; r++) off[r] = off[r - 1] + counts[r - 1];
    float *sbuf = o->alloc(chunk * (size_t)W * sizeof(float)), *rbuf = o->alloc(chunk * (size_t)W * sizeof(float));
    base_status s = BASE_OK;
    for (size_t k0 = 0; k0 < maxc && !s; k0 += chunk) {
        size_t so = 0, got = mine > k0 ? (mine - k0 < chunk ? mine - k0 : chunk) : 0;
        for (int r = 0; r < W; r++) { /* this rank's piece for r, packed */
            sc[r] = counts[r] > k0 ? (counts[r] - k0 < chunk ? counts[r] - k0 : chunk) : 0;
            rc[r] = got;
            if (sc[r]) o->copy(sbuf + so, (const float *)send + off[r] + k0, sc[r] * sizeof(float));
            so += sc[r];
        }
        char err_[1024] = "";
        if (IMPL(c)->abi->all_to_allv(IMPL(c)->comm, sbuf, sc, rbuf, rc, (int)t, ERR) != 0) {
            s = base_err_set(BASE_ERR_IO, "%s:%d: all_to_allv of a reduce_scatter failed on rank %d of communicator "
                             "'%s' (%d ranks): %s", __FILE__, __LINE__, c->rank, c->name, c->size, err_);
            break;
        }
        if (!got) continue;
        int64_t shape[1] = {(int64_t)got};
        float *dst = (float *)recv + k0;
        tensor y = tensor_make(dst, TENSOR_F32, o->device, 1, shape);
        for (int r = 0; r < W; r++) {
            tensor x = tensor_make(rbuf + (size_t)r * got, TENSOR_F32, o->device, 1, shape);
            if (r == 0 && !accumulate) o->copy(dst, x.data, got * sizeof(float));
            else o->axpy(&y, &x, 1.0f);
        }
    }
    o->free(sbuf), o->free(rbuf);
    free(v);
    return s;
}

static base_status n_wait(dist_request *req) {
    (void)req; /* never made: n_ireduce_scatterv completes before it returns */
    return BASE_OK;
}

static void n_destroy(dist_comm *c) {
    nccl_impl *m = IMPL(c);
    if (m) m->abi->comm_destroy(m->comm);
    free(m);
    c->impl = NULL;
}

static const dist_backend nccl_backend = {"nccl",      n_allreduce, n_reduce_scatter,   n_allgatherv,
                                          n_broadcast, n_alltoallv, n_barrier,          n_ireduce_scatterv,
                                          n_wait,      n_destroy};

/* The unique id: drawn on rank 0 (its error travels with it, so every rank
 * fails together rather than waiting) and broadcast over host. */
static base_status unique_id(dist_comm *host, dist_comm *c, const dist_nccl_abi *abi,
                             unsigned char id[DIST_NCCL_ID_BYTES]) {
    unsigned char msg[DIST_NCCL_ID_BYTES + 512];
    memset(msg, 0, sizeof msg);
    if (host->rank == 0) {
        char err[512] = "";
        if (abi->get_unique_id(msg, err, sizeof err) != 0) {
            msg[DIST_NCCL_ID_BYTES] = 1;
            snprintf((char *)msg + DIST_NCCL_ID_BYTES + 1, 511, "%s", err);
        }
    }
    base_status s = dist_broadcast(host, msg, sizeof msg, DIST_U8, 0);
    if (s) return s;
    if (msg[DIST_NCCL_ID_BYTES])
        return base_err_set(BASE_ERR_IO, "communicator '%s': rank 0 could not draw the NCCL unique id: %s", c->name,
                            (const char *)msg + DIST_NCCL_ID_BYTES + 1);
    memcpy(id, msg, DIST_NCCL_ID_BYTES);
    return BASE_OK;
}

base_status dist_nccl_new(const struct ops *ops, dist_comm *host, const char *name, dist_comm **out) {
    *out = NULL;
    if (ops->device != TENSOR_CUDA)
        return base_err_set(BASE_ERR_UNSUPPORTED, "NCCL communicator '%s': the '%s' backend is not a GPU", name,
                            ops->name);
    const dist_nccl_abi *(*entry)(void) = (const dist_nccl_abi *(*)(void))ops_cuda_module_symbol("cuda_dist_nccl");
    /* every rank goes on to the broadcast, so a rank without the module
     * fails with the others instead of leaving them waiting */
    const dist_nccl_abi *abi = entry ? entry() : NULL;
    char why[600] = "";
    if (!entry) snprintf(why, sizeof why, "%s", base_err_msg());
    else if (abi->abi_version != DIST_NCCL_ABI_VERSION)
        snprintf(why, sizeof why, "the CUDA module's NCCL table is version %d, this program's %d (rebuild both)",
                 abi->abi_version, DIST_NCCL_ABI_VERSION), abi = NULL;
    int bad = abi == NULL;
    base_status s = dist_allreduce(host, &bad, 1, DIST_I32, DIST_MAX);
    if (s) return s;
    if (bad)
        return base_err_set(BASE_ERR_UNSUPPORTED, "NCCL communicator '%s' on rank %d: %s", name, host->rank,
                            why[0] ? why : "another rank has no NCCL (its message names it)");
    dist_comm *c = base_xcalloc(1, sizeof *c);
    c->be = &nccl_backend;
    snprintf(c->name, sizeof c->name, "%s", name);
    c->rank = host->rank, c->size = host->size;
    unsigned char id[DIST_NCCL_ID_BYTES];
    s = unique_id(host, c, abi, id);
    nccl_impl *m = NULL;
    if (!s) {
        m = base_xcalloc(1, sizeof *m);
        m->abi = abi;
        m->ops = ops;
        char err[1024] = "";
        if (abi->comm_init(&m->comm, id, c->size, c->rank, err, sizeof err) != 0)
            s = base_err_set(BASE_ERR_IO, "%s:%d: ncclCommInitRank failed on rank %d of communicator '%s' (%d ranks): %s",
                             __FILE__, __LINE__, c->rank, c->name, c->size, err);
    }
    if (s) {
        free(m);
        free(c);
        return s;
    }
    c->impl = m;
    *out = c;
    return BASE_OK;
}
