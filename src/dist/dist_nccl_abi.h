/*
 * The interface between src/dist (dist_nccl.c, plain C, in every build) and
 * the NCCL code of the CUDA module (kernels/nccl.cu, compiled by nvcc into
 * grpo-cuda.so): a table of plain C functions the module exports as
 * cuda_dist_nccl(). Neither side's library headers cross it: src/dist never
 * includes nccl.h, the module never includes mpi.h (the unique id travels
 * as DIST_NCCL_ID_BYTES opaque bytes, broadcast over MPI by src/dist).
 *
 * Every function returns 0 on success; otherwise an NCCL or CUDA error code
 * and, in err [errn], "CALL: message" naming the failed call. Collectives
 * are enqueued on the stream the CUDA ops run on and waited for before they
 * return (polling ncclCommGetAsyncError, so a peer that died makes the call
 * fail instead of hanging: the communicator is then aborted).
 * dtype: dist_dtype values; op: dist_op values.
 */
#ifndef GRPO_DIST_NCCL_ABI_H
#define GRPO_DIST_NCCL_ABI_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DIST_NCCL_ABI_VERSION 1
#define DIST_NCCL_ID_BYTES 128 /* sizeof(ncclUniqueId) */

typedef struct {
    int abi_version; /* DIST_NCCL_ABI_VERSION */
    int (*get_unique_id)(unsigned char id[DIST_NCCL_ID_BYTES], char *err, size_t errn);
    int (*comm_init)(void **comm, const unsigned char id[DIST_NCCL_ID_BYTES], int nranks, int rank, char *err,
                     size_t errn);
    void (*comm_destroy)(void *comm);
    int (*all_reduce)(void *comm, void *buf, size_t count, int dtype, int op, char *err, size_t errn);
    int (*reduce_scatter)(void *comm, const void *send, void *recv, size_t recv_count, int dtype, int op, char *err,
                          size_t errn);
    /* counts [nranks]: recv = every rank's send [counts[r]] back to back */
    int (*all_gatherv)(void *comm, const void *send, void *recv, const size_t *counts, int dtype, char *err,
                       size_t errn);
    int (*broadcast)(void *comm, void *buf, size_t count, int dtype, int root, char *err, size_t errn);
    int (*all_to_allv)(void *comm, const void *send, const size_t *send_counts, void *recv, const size_t *recv_counts,
                       int dtype, char *err, size_t errn);
    int (*barrier)(void *comm, char *err, size_t errn);
} dist_nccl_abi;

/* Exported by grpo-cuda.so. */
const dist_nccl_abi *cuda_dist_nccl(void);

#ifdef __cplusplus
}
#endif

#endif
