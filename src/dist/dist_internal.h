/*
 * Private to src/dist: the backend table each communicator dispatches to,
 * and the runtime (MPI, or the single process of a build without it).
 * dist.c checks arguments and counts statistics; a backend only moves data.
 */
#ifndef GRPO_DIST_INTERNAL_H
#define GRPO_DIST_INTERNAL_H

#include "dist/dist.h"

typedef struct {
    const char *name; /* "mpi", "nccl", "self" */
    base_status (*allreduce)(dist_comm *c, void *buf, size_t count, dist_dtype t, dist_op op);
    base_status (*reduce_scatter)(dist_comm *c, const void *send, void *recv, size_t recv_count, dist_dtype t,
                                  dist_op op);
    base_status (*allgatherv)(dist_comm *c, const void *send, void *recv, const size_t *counts, dist_dtype t);
    base_status (*broadcast)(dist_comm *c, void *buf, size_t count, dist_dtype t, int root);
    base_status (*alltoallv)(dist_comm *c, const void *send, const size_t *send_counts, void *recv,
                             const size_t *recv_counts, dist_dtype t);
    base_status (*barrier)(dist_comm *c);
    /* dist_ireduce_scatterv (F32 / F64 sums; counts checked by dist.c):
     * *req NULL when it completed at once */
    base_status (*ireduce_scatterv)(dist_comm *c, const void *send, void *recv, const size_t *counts, dist_dtype t,
                                    int accumulate, dist_request **req);
    base_status (*wait)(dist_request *req); /* completes and frees a request of this backend */
    void (*destroy)(dist_comm *c); /* frees impl */
} dist_backend;

struct dist_comm {
    const dist_backend *be;
    char name[48];
    int rank, size;
    void *impl;               /* the backend's (MPI_Comm *, the NCCL module's handle) */
    const struct ops *ops;    /* self backend on a device: copies go through it; else NULL */
    dist_stats stats;
};

/* A request in flight: its communicator, and the backend's own data. */
struct dist_request {
    dist_comm *c;
    void *impl;
};

/* recv [n] = (accumulate ? recv + : ) the size rows of blocks [size][n]
 * added in rank order in double (the host backends' sum). */
void dist_add_rows(const void *blocks, size_t n, int size, dist_dtype t, int accumulate, void *recv);

/* ---- the runtime (dist_mpi.c, or dist_nompi.c in a build without MPI) ---- */

/* Join the job when launched (dist_init's contract); fills rank, size,
 * local rank and local size, and *world (a communicator over every rank:
 * the MPI backend, or the self backend when not launched). */
base_status dist_rt_init(int *argc, char ***argv, int *rank, int *size, int *local_rank, int *local_size,
                         int *launched, dist_comm **world);
void dist_rt_finalize(void);
BASE_NORETURN void dist_rt_abort(int code);
const char *dist_rt_name(void);

/* MPI_Comm_split of a host (MPI) communicator: fills the new
 * communicator's impl, backend, rank and size (dist_mpi.c; without MPI
 * BASE_ERR_UNSUPPORTED, never reached: every communicator is a self one). */
base_status dist_rt_split(dist_comm *parent, int color, int key, dist_comm *out);

/* The self backend (one rank; dist.c): copies send to recv. */
extern const dist_backend dist_self_backend;

/* An NCCL communicator over the ranks of `host` (dist_nccl.c): the module's
 * unique id made on rank 0 and broadcast over host. */
base_status dist_nccl_new(const struct ops *ops, dist_comm *host, const char *name, dist_comm **out);

#endif
