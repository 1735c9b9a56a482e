/*
 * dist: the processes of a run and the collectives between them.
 *
 * A multi-process run is an MPI job, one process (rank) per GPU:
 *
 *   mpirun -np 8 grpo run RECIPE.lua          srun --mpi=pmix grpo run RECIPE.lua
 *
 * dist_init joins the job when a launcher started the process (Open MPI's
 * mpirun, a PMIx or PMI launcher such as srun) and otherwise stays a single
 * process of world size 1 without touching MPI; a build without MPI is
 * always world size 1. Rank, world size and local rank (the rank among the
 * processes of one node: it picks the GPU) come from the MPI runtime.
 *
 * A communicator (dist_comm) runs the collectives the trainer needs on one
 * of two backends behind this one interface:
 *   host  MPI on host memory: the CPU backend's buffers and every host-side
 *         exchange (metrics, rollout results); what CI runs
 *   nccl  NCCL on device memory, on the CUDA stream the ops run on (the
 *         module grpo-cuda.so; its unique id is broadcast over MPI)
 * dist_comm_for(ops) gives the communicator for buffers on an op table's
 * device. The trainer layer includes this header only, never mpi.h or
 * nccl.h.
 *
 * Every collective is called by every rank of the communicator in the same
 * order with the same counts (the caller's contract, as in MPI). Each
 * library call is checked (DIST_CHECK_MPI, the NCCL module's checks): a
 * failure returns BASE_ERR_IO naming the call, the rank and the
 * communicator, and the caller ends the job with dist_abort, so no rank
 * waits forever for one that failed.
 *
 * Results are the same on every rank, bit for bit: the host backend adds
 * floating-point values (DIST_SUM of DIST_F32 / DIST_F64) in rank order
 * (rank 0 + rank 1 + ..., in double), so a sum does not depend on the
 * order messages arrive in or on the algorithm MPI picks: a run on N ranks
 * is reproducible bit for bit. NCCL's ring reduction also gives every rank
 * the same values. Integer sums, MIN and MAX are exact.
 */
#ifndef GRPO_DIST_DIST_H
#define GRPO_DIST_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

#ifdef __cplusplus
extern "C" {
#endif

struct ops;

typedef enum { DIST_U8 = 0, DIST_I32, DIST_I64, DIST_F32, DIST_F64, DIST_DTYPE_COUNT } dist_dtype;
typedef enum { DIST_SUM = 0, DIST_MAX, DIST_MIN } dist_op;

/* The collectives, for the statistics (dist_stats). */
typedef enum {
    DIST_ALLREDUCE = 0,
    DIST_REDUCE_SCATTER,
    DIST_ALLGATHER,
    DIST_BROADCAST,
    DIST_ALLTOALL,
    DIST_BARRIER,
    DIST_COLL_COUNT
} dist_coll;

typedef struct dist_comm dist_comm;
/* A non-blocking collective in flight (dist_ireduce_scatterv), completed
 * by dist_wait. */
typedef struct dist_request dist_request;

/* ---- the process --------------------------------------------------------- */

/* Join the MPI job when a launcher started this process (it set Open MPI's
 * OMPI_COMM_WORLD_SIZE, PMIX_RANK or PMI_RANK), else world size 1 without
 * MPI. Sets MPI's error handler to return errors (checked by every call).
 * Exports GRPO_LOCAL_RANK, which the CUDA module reads to pick its GPU.
 * Call once, before any other dist_ call and before the CUDA backend is
 * initialised. Errors (BASE_ERR_IO): MPI_Init failed, or the build has no
 * MPI while a launcher started several processes. */
base_status dist_init(int *argc, char ***argv);
/* Leave the job (MPI_Finalize) after the last collective; a no-op without
 * MPI. Every rank calls it. */
void dist_finalize(void);
/* 1 when this process is one rank of an MPI job (even of world size 1). */
int dist_launched(void);
int dist_rank(void);        /* 0 .. world size - 1 */
int dist_world_size(void);  /* 1 without a launcher */
int dist_local_rank(void);  /* rank among the processes of this node */
int dist_local_size(void);  /* processes of this node */
/* "mpi" (Open MPI, ...) or "none" (world size 1 without MPI). */
const char *dist_runtime_name(void);

/* End every rank of the job now (MPI_Abort on the world; exit(code)
 * without MPI). Every other rank exits non-zero; mpirun names this one.
 * stderr has the reason already (the caller prints it first). */
BASE_NORETURN void dist_abort(int code);
/* A failure every rank learned of through a collective (the trainer's
 * agreement on a failed step): the ranks then leave in step, each with a
 * non-zero status and MPI_Finalize, with no dist_abort (whose SIGTERM /
 * SIGKILL to the others would cut their messages short). Once noted it
 * stays noted. */
void dist_note_agreed_failure(void);
int dist_failure_agreed(void);

/* ---- communicators ------------------------------------------------------ */

/* The host communicator over every rank (never NULL after dist_init). */
dist_comm *dist_world(void);
/* The communicator for buffers on the device of `ops`: the world host
 * communicator for the CPU backend; for a device backend an NCCL
 * communicator over every rank (the unique id broadcast over the world),
 * made on first use and kept, or at world size 1 a communicator that
 * needs no library (GRPO_DIST_NCCL=1 makes it NCCL even then: the NCCL
 * path on one GPU). Errors: NCCL cannot be loaded or initialised (named).
 * Owned by dist (freed by dist_finalize). */
base_status dist_comm_for(const struct ops *ops, dist_comm **out);

/* Split `parent` (a host communicator: the world or one made here) into
 * groups: the ranks passing the same color form one new communicator,
 * ordered by key (ties: their rank in parent), named `name` ("ep",
 * "expert_dp"). A collective: every rank of parent calls it, in the same
 * order. The caller owns *out (dist_comm_free). Expert parallelism's
 * groups (docs/distributed.md): the EP group of rank r, color r / EP; its
 * expert-data-parallel group, color r % EP. Errors: BASE_ERR_INVALID for a
 * negative color, a parent on a device (split the host communicator and
 * make its device twin with dist_comm_device); BASE_ERR_IO from MPI, named. */
base_status dist_comm_split(dist_comm *parent, int color, int key, const char *name, dist_comm **out);
/* The device twin of a host communicator made by dist_comm_split, for
 * buffers on the device of `ops`: the host communicator itself for the CPU
 * backend, an NCCL communicator over its ranks (the unique id broadcast
 * over `host`) on a GPU, or at size 1 a communicator that needs no library.
 * The caller owns *out (dist_comm_free; when it is `host` itself, free it
 * once). Errors: NCCL cannot be loaded or initialised (named). */
base_status dist_comm_device(const struct ops *ops, dist_comm *host, const char *name, dist_comm **out);
/* Free a communicator from dist_comm_split or dist_comm_device (NULL: nothing);
 * never the world or dist_comm_for's. */
void dist_comm_free(dist_comm *c);

int dist_comm_rank(const dist_comm *c);
int dist_comm_size(const dist_comm *c);
const char *dist_comm_name(const dist_comm *c);    /* "world", "world/nccl" */
const char *dist_comm_backend(const dist_comm *c); /* "mpi", "nccl", "self" */
size_t dist_dtype_size(dist_dtype t);

/* Calls and payload bytes (what this rank passed in: count x dtype size)
 * per collective since the communicator was made. */
typedef struct {
    uint64_t calls[DIST_COLL_COUNT];
    uint64_t bytes[DIST_COLL_COUNT];
} dist_stats;
void dist_comm_stats(const dist_comm *c, dist_stats *out);
const char *dist_coll_name(dist_coll k); /* "all_reduce", ... */

/* ---- collectives ---------------------------------------------------------- */
/* Buffers are on the communicator's device; counts are elements of the
 * dtype. Every call returns BASE_OK or BASE_ERR_IO naming the call, the
 * rank and the communicator (BASE_ERR_INVALID for a bad argument: a dtype
 * or op out of range, a root outside the communicator). */

/* buf [count] = op over the ranks of buf [count], in place. */
base_status dist_allreduce(dist_comm *c, void *buf, size_t count, dist_dtype t, dist_op op);
/* recv [recv_count] = op over the ranks of send [rank * recv_count, +recv_count);
 * send has size * recv_count elements. */
base_status dist_reduce_scatter(dist_comm *c, const void *send, void *recv, size_t recv_count, dist_dtype t,
                                dist_op op);
/* recv [size * count] = every rank's send [count], in rank order. */
base_status dist_allgather(dist_comm *c, const void *send, void *recv, size_t count, dist_dtype t);
/* recv = every rank's send [counts[r]], in rank order (counts [size], the
 * same on every rank; counts[rank] is this rank's send count). */
base_status dist_allgatherv(dist_comm *c, const void *send, void *recv, const size_t *counts, dist_dtype t);
/* buf [count] = root's buf [count]. */
base_status dist_broadcast(dist_comm *c, void *buf, size_t count, dist_dtype t, int root);
/* All-to-all with counts: this rank sends send_counts[r] elements to rank
 * r (send holds them back to back in rank order) and receives
 * recv_counts[r] from rank r (recv back to back in rank order).
 * send_counts[r] on this rank equals recv_counts[this rank] on rank r. */
base_status dist_alltoallv(dist_comm *c, const void *send, const size_t *send_counts, void *recv,
                           const size_t *recv_counts, dist_dtype t);
base_status dist_barrier(dist_comm *c);

/* Non-blocking reduce-scatter with counts, a sum of DIST_F32 or DIST_F64
 * (ZeRO 2's gradient windows): send holds counts[r] elements for rank r,
 * back to back in rank order (counts [size], the same on every rank); recv
 * [counts[rank]] receives the sum over the ranks of their blocks for this
 * rank, added in rank order in double (the same bits on every rank and
 * run), written (accumulate 0) or added to recv's values (accumulate 1:
 * recv + (rank-ordered sum), rounded once). *req is the operation in
 * flight: send and recv stay untouched until dist_wait(*req) returns. The
 * host backend posts MPI_Ialltoallv and adds at the wait (MPI progresses it
 * inside MPI calls); NCCL runs it on the stream at once (the wait only
 * frees the request); one rank adds at once. Every rank posts the same
 * requests in the same order. */
base_status dist_ireduce_scatterv(dist_comm *c, const void *send, void *recv, const size_t *counts, dist_dtype t,
                                  int accumulate, dist_request **req);
/* Complete a request (NULL: nothing) and free it; the error of the
 * operation, named. The request is freed on error too. */
base_status dist_wait(dist_request *req);

#ifdef __cplusplus
}
#endif

#endif
