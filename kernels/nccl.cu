/*
 * NCCL, the device backend of src/dist: collectives on device memory, on
 * the stream the CUDA ops run on (cuda_stream), behind the table
 * src/dist/dist_nccl_abi.h describes (src/dist/dist_nccl.c loads it from
 * this module and broadcasts the unique id over MPI).
 *
 * Every NCCL and CUDA call is checked by NCCL_TRY / CUDA_TRY, which put
 * "CALL: message" in the caller's error buffer and return the code; the
 * caller (dist_nccl.c) adds the rank and the communicator.
 *
 * Waiting: each collective is waited for before it returns, by polling the
 * stream and ncclCommGetAsyncError every 100 us; an asynchronous error (a
 * peer that died, a network failure) aborts the communicator
 * (ncclCommAbort) and fails the call, so no rank hangs in a collective.
 * Communication is therefore not overlapped with compute (ZeRO stage 0
 * reduces the gradients once, after the backward pass).
 *
 * Not built for the CUDA emulator (tests/cuda): the emulator has no NCCL.
 * Compiled in CI (nvcc); run only where a GPU is at hand.
 */
#include "cuda_common.cuh"

#include <nccl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist_nccl_abi.h"

static_assert(sizeof(ncclUniqueId) == DIST_NCCL_ID_BYTES, "DIST_NCCL_ID_BYTES must be sizeof(ncclUniqueId)");

#define NCCL_TRY(comm, call)                                                                                           \
    do {                                                                                                               \
        ncclResult_t r_ = (call);                                                                                      \
        if (r_ != ncclSuccess) {                                                                                       \
            const char *last_ = (comm) ? ncclGetLastError((comm)) : ncclGetLastError(NULL);                           \
            snprintf(err, errn, "%s: NCCL error %d: %s%s%s", #call, (int)r_, ncclGetErrorString(r_),                   \
                     last_ && *last_ ? ": " : "", last_ ? last_ : "");                                                 \
            return (int)r_;                                                                                            \
        }                                                                                                              \
    } while (0)
#define CUDA_TRY(call)                                                                                                 \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess) {                                                                                       \
            snprintf(err, errn, "%s: CUDA error %d: %s", #call, (int)e_, cudaGetErrorString(e_));                      \
            return 1000 + (int)e_;                                                                                     \
        }                                                                                                              \
    } while (0)

typedef struct {
    ncclComm_t comm;
    int nranks, rank;
    int aborted;
    int32_t *one; /* device int of the barrier */
} nccl_handle;

extern "C" const struct ops *ops_cuda_module(void); /* cuda_backend.cu */

static ncclDataType_t nccl_type(int t) {
    switch (t) {
    case 0: return ncclUint8;   /* DIST_U8 */
    case 1: return ncclInt32;   /* DIST_I32 */
    case 2: return ncclInt64;   /* DIST_I64 */
    case 3: return ncclFloat32; /* DIST_F32 */
    default: return ncclFloat64; /* DIST_F64 */
    }
}

static size_t type_size(int t) { return t == 0 ? 1 : t == 1 || t == 3 ? 4 : 8; }

static ncclRedOp_t nccl_op(int op) { return op == 1 ? ncclMax : op == 2 ? ncclMin : ncclSum; }

/* Wait for the stream, watching the communicator's asynchronous errors. */
static int wait_stream(nccl_handle *h, const char *what, char *err, size_t errn) {
    for (;;) {
        cudaError_t q = cudaStreamQuery(cuda_stream);
        if (q == cudaSuccess) return 0;
        if (q != cudaErrorNotReady) {
            snprintf(err, errn, "%s: cudaStreamQuery(cuda_stream): CUDA error %d: %s", what, (int)q,
                     cudaGetErrorString(q));
            return 1000 + (int)q;
        }
        ncclResult_t a = ncclSuccess;
        ncclResult_t r = ncclCommGetAsyncError(h->comm, &a);
        if (r != ncclSuccess || a != ncclSuccess) {
            snprintf(err, errn, "%s: ncclCommGetAsyncError(comm, &async): %s (a peer failed or the network broke); "
                     "the communicator is aborted", what, ncclGetErrorString(r != ncclSuccess ? r : a));
            if (!h->aborted) ncclCommAbort(h->comm);
            h->aborted = 1;
            return (int)(r != ncclSuccess ? r : a);
        }
        usleep(100);
    }
}

static int get_unique_id(unsigned char id[DIST_NCCL_ID_BYTES], char *err, size_t errn) {
    ncclUniqueId u;
    NCCL_TRY((ncclComm_t)NULL, ncclGetUniqueId(&u));
    memcpy(id, &u, sizeof u);
    return 0;
}

static int comm_init(void **out, const unsigned char id[DIST_NCCL_ID_BYTES], int nranks, int rank, char *err,
                     size_t errn) {
    /* the module's device and stream first (ops_cuda() made them) */
    if (!ops_cuda_module()) {
        snprintf(err, errn, "ops_cuda_module(): %s", base_err_msg());
        return 1;
    }
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    nccl_handle *h = (nccl_handle *)calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errn, "calloc(1, %zu): out of memory", sizeof *h);
        return 1;
    }
    h->nranks = nranks, h->rank = rank;
    ncclResult_t r = ncclCommInitRank(&h->comm, nranks, u, rank);
    if (r != ncclSuccess) {
        snprintf(err, errn, "ncclCommInitRank(&comm, %d, id, %d): NCCL error %d: %s: %s", nranks, rank, (int)r,
                 ncclGetErrorString(r), ncclGetLastError(NULL));
        free(h);
        return (int)r;
    }
    cudaError_t e = cudaMalloc((void **)&h->one, sizeof(int32_t));
    if (e != cudaSuccess) {
        snprintf(err, errn, "cudaMalloc(&one, 4): CUDA error %d: %s", (int)e, cudaGetErrorString(e));
        ncclCommDestroy(h->comm);
        free(h);
        return 1000 + (int)e;
    }
    *out = h;
    return 0;
}

static void comm_destroy(void *p) {
    nccl_handle *h = (nccl_handle *)p;
    if (!h) return;
    if (!h->aborted) ncclCommDestroy(h->comm); /* ncclCommAbort freed an aborted one */
    cudaFree(h->one);
    free(h);
}

static int all_reduce(void *p, void *buf, size_t count, int dtype, int op, char *err, size_t errn) {
    nccl_handle *h = (nccl_handle *)p;
    NCCL_TRY(h->comm, ncclAllReduce(buf, buf, count, nccl_type(dtype), nccl_op(op), h->comm, cuda_stream));
    return wait_stream(h, "ncclAllReduce", err, errn);
}

static int reduce_scatter(void *p, const void *send, void *recv, size_t n, int dtype, int op, char *err,
                          size_t errn) {
    nccl_handle *h = (nccl_handle *)p;
    NCCL_TRY(h->comm, ncclReduceScatter(send, recv, n, nccl_type(dtype), nccl_op(op), h->comm, cuda_stream));
    return wait_stream(h, "ncclReduceScatter", err, errn);
}

/* Uneven counts: one broadcast per rank into its slot (equal counts would
 * be ncclAllGather; the trainer's device buffers use equal counts). */
static int all_gatherv(void *p, const void *send, void *recv, const size_t *counts, int dtype, char *err,
                       size_t errn) {
    nccl_handle *h = (nccl_handle *)p;
    size_t es = type_size(dtype), off = 0;
    int equal = 1;
    for (int r = 1; r < h->nranks; r++) equal &= counts[r] == counts[0];
    if (equal) {
        NCCL_TRY(h->comm, ncclAllGather(send, recv, counts[0], nccl_type(dtype), h->comm, cuda_stream));
        return wait_stream(h, "ncclAllGather", err, errn);
    }
    NCCL_TRY(h->comm, ncclGroupStart());
    for (int r = 0; r < h->nranks; r++) {
        char *dst = (char *)recv + off * es;
        NCCL_TRY(h->comm, ncclBroadcast(r == h->rank ? send : dst, dst, counts[r], nccl_type(dtype), r, h->comm,
                                        cuda_stream));
        off += counts[r];
    }
    NCCL_TRY(h->comm, ncclGroupEnd());
    return wait_stream(h, "ncclBroadcast (all_gatherv)", err, errn);
}

static int broadcast(void *p, void *buf, size_t count, int dtype, int root, char *err, size_t errn) {
    nccl_handle *h = (nccl_handle *)p;
    NCCL_TRY(h->comm, ncclBroadcast(buf, buf, count, nccl_type(dtype), root, h->comm, cuda_stream));
    return wait_stream(h, "ncclBroadcast", err, errn);
}

static int all_to_allv(void *p, const void *send, const size_t *sc, void *recv, const size_t *rc, int dtype,
                       char *err, size_t errn) {
    nccl_handle *h = (nccl_handle *)p;
    size_t es = type_size(dtype), so = 0, ro = 0;
    NCCL_TRY(h->comm, ncclGroupStart());
    for (int r = 0; r < h->nranks; r++) {
        if (sc[r]) NCCL_TRY(h->comm, ncclSend((const char *)send + so * es, sc[r], nccl_type(dtype), r, h->comm,
                                              cuda_stream));
        if (rc[r]) NCCL_TRY(h->comm, ncclRecv((char *)recv + ro * es, rc[r], nccl_type(dtype), r, h->comm,
                                              cuda_stream));
        so += sc[r], ro += rc[r];
    }
    NCCL_TRY(h->comm, ncclGroupEnd());
    return wait_stream(h, "ncclSend/ncclRecv (all_to_allv)", err, errn);
}

/* A one-element all-reduce, waited for. */
static int barrier(void *p, char *err, size_t errn) {
    nccl_handle *h = (nccl_handle *)p;
    NCCL_TRY(h->comm, ncclAllReduce(h->one, h->one, 1, ncclInt32, ncclSum, h->comm, cuda_stream));
    return wait_stream(h, "ncclAllReduce (barrier)", err, errn);
}

static const dist_nccl_abi table = {DIST_NCCL_ABI_VERSION, get_unique_id, comm_init, comm_destroy, all_reduce,
                                    reduce_scatter,        all_gatherv,   broadcast, all_to_allv,  barrier};

extern "C" const dist_nccl_abi *cuda_dist_nccl(void) { return &table; }
