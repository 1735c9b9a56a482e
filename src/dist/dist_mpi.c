/*
 * The MPI runtime and the host backend (MPI on host memory).
 *
 * Joining: only when a launcher started the process (OMPI_COMM_WORLD_SIZE
 * from Open MPI's mpirun, PMIX_RANK from a PMIx launcher such as
 * srun --mpi=pmix, PMI_RANK / PMI_SIZE from a PMI-1/2 launcher); a plain
 * `grpo run` stays a single process and never initialises MPI (a singleton
 * MPI_Init costs half a second and may start a daemon). Threads: the
 * main thread alone makes MPI calls (MPI_THREAD_FUNNELED; reward workers
 * and OpenMP threads never do). Errors: MPI_ERRORS_RETURN on every
 * communicator, and every call checked by DIST_CHECK_MPI.
 *
 * Floating-point sums (DIST_SUM of F32 / F64) are added in rank order, not
 * by MPI_Allreduce, whose order is up to the library: the buffer is cut
 * into size blocks, rank b receives everybody's block b (MPI_Alltoallv),
 * adds the size contributions in rank order in double, and every rank
 * gets every reduced block (MPI_Allgatherv): the traffic of a ring
 * all-reduce, 2 (size - 1) / size of the buffer each way, and the same bits
 * on every rank and in every run. Large buffers go in segments of
 * SEGMENT elements, so the scratch stays bounded.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist_internal.h"

/* Check one MPI call (rc != MPI_SUCCESS): BASE_ERR_IO naming the call, the
 * rank and the communicator, with MPI's message. Used in functions whose
 * cleanup needs none (else DIST_TRY_MPI with a label). */
#define DIST_CHECK_MPI(comm, call)                                                                              \
    do {                                                                                                        \
        int rc_ = (call);                                                                                       \
        if (rc_ != MPI_SUCCESS) return mpi_fail((comm), __FILE__, __LINE__, #call, rc_);                        \
    } while (0)
#define DIST_TRY_MPI(comm, call, st, label)                                                                     \
    do {                                                                                                        \
        int rc_ = (call);                                                                                       \
        if (rc_ != MPI_SUCCESS) {                                                                               \
            (st) = mpi_fail((comm), __FILE__, __LINE__, #call, rc_);                                            \
            goto label;                                                                                         \
        }                                                                                                       \
    } while (0)

/* Elements per segment of a rank-ordered sum (and of the size scratch
 * blocks it receives): 4M, 32 MiB of doubles at most. */
#define SEGMENT ((size_t)1 << 22)

static int rt_rank = 0, rt_size = 1;

static base_status mpi_fail(const dist_comm *c, const char *file, int line, const char *call, int rc) {
    char msg[MPI_MAX_ERROR_STRING + 1] = "";
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS || len <= 0) snprintf(msg, sizeof msg, "MPI error %d", rc);
    return base_err_set(BASE_ERR_IO, "%s:%d: %s failed on rank %d of communicator '%s' (%d ranks): %s", file, line,
                        call, c ? c->rank : rt_rank, c ? c->name : "MPI_COMM_WORLD", c ? c->size : rt_size, msg);
}

static MPI_Comm comm_of(const dist_comm *c) { return *(const MPI_Comm *)c->impl; }

static MPI_Datatype mpi_type(dist_dtype t) {
    switch (t) {
    case DIST_U8: return MPI_UINT8_T;
    case DIST_I32: return MPI_INT32_T;
    case DIST_I64: return MPI_INT64_T;
    case DIST_F32: return MPI_FLOAT;
    case DIST_F64: return MPI_DOUBLE;
    default: return MPI_DATATYPE_NULL;
    }
}

static MPI_Op mpi_op(dist_op op) { return op == DIST_MAX ? MPI_MAX : op == DIST_MIN ? MPI_MIN : MPI_SUM; }

/* MPI counts are int: larger transfers go in pieces (the callers' buffers
 * are far below this; the check keeps a silent truncation impossible). */
static base_status check_count(const dist_comm *c, const char *what, size_t n) {
    if (n > (size_t)(1 << 30))
        return base_err_set(BASE_ERR_UNSUPPORTED,
                            "dist %s on '%s' (rank %d): %zu elements in one call; at most 2^30 per call", what,
                            c->name, c->rank, n);
    return BASE_OK;
}

/* Block b of n elements over size ranks: [lo, hi). */
static size_t block_lo(size_t n, int b, int size) { return n * (size_t)b / (size_t)size; }

/* The size contributions of a block (recv: size rows of `len` elements, in
 * rank order) added in rank order, in double, into out [len]. */
static void add_in_rank_order(const void *recv, size_t len, int size, dist_dtype t, void *out) {
    if (t == DIST_F32) {
        const float *r = recv;
        float *o = out;
        for (size_t i = 0; i < len; i++) {
            double acc = r[i];
            for (int k = 1; k < size; k++) acc += r[(size_t)k * len + i];
            o[i] = (float)acc;
        }
    } else {
        const double *r = recv;
        double *o = out;
        for (size_t i = 0; i < len; i++) {
            double acc = r[i];
            for (int k = 1; k < size; k++) acc += r[(size_t)k * len + i];
            o[i] = acc;
        }
    }
}

/* Rank-ordered sum of one segment seg [n] in place: every rank ends with
 * the same bits. scratch: size * ceil(n / size) + 1 elements. */
static base_status ordered_sum_segment(dist_comm *c, void *seg, size_t n, dist_dtype t, void *scratch, int *sc,
                                       int *sd, int *rc, int *rd) {
    int size = c->size, me = c->rank;
    size_t es = dist_dtype_size(t);
    size_t my_lo = block_lo(n, me, size), my_len = block_lo(n, me + 1, size) - my_lo;
    for (int b = 0; b < size; b++) {
        size_t lo = block_lo(n, b, size), len = block_lo(n, b + 1, size) - lo;
        sc[b] = (int)len, sd[b] = (int)lo;        /* my block b goes to rank b */
        rc[b] = (int)my_len, rd[b] = (int)((size_t)b * my_len); /* rank b's copy of my block */
    }
    MPI_Datatype dt = mpi_type(t);
    DIST_CHECK_MPI(c, MPI_Alltoallv(seg, sc, sd, dt, scratch, rc, rd, dt, comm_of(c)));
    add_in_rank_order(scratch, my_len, size, t, (char *)seg + my_lo * es);
    for (int b = 0; b < size; b++) rc[b] = sc[b], rd[b] = sd[b];
    DIST_CHECK_MPI(c, MPI_Allgatherv(MPI_IN_PLACE, 0, dt, seg, rc, rd, dt, comm_of(c)));
    return BASE_OK;
}

static base_status ordered_sum(dist_comm *c, void *buf, size_t n, dist_dtype t) {
    int size = c->size;
    size_t es = dist_dtype_size(t);
    size_t seg = n < SEGMENT ? n : SEGMENT;
    void *scratch = base_xmalloc(((size_t)size * (seg / (size_t)size + 1) + 1) * es);
    int *ints = base_xmalloc(4 * (size_t)size * sizeof(int));
    base_status s = BASE_OK;
    for (size_t off = 0; off < n && !s; off += seg) {
        size_t len = n - off < seg ? n - off : seg;
        s = ordered_sum_segment(c, (char *)buf + off * es, len, t, scratch, ints, ints + size, ints + 2 * size,
                                ints + 3 * size);
    }
    free(scratch), free(ints);
    return s;
}

/* ---- the host backend ------------------------------------------------------ */

static base_status mpi_allreduce(dist_comm *c, void *buf, size_t n, dist_dtype t, dist_op op) {
    base_status s = check_count(c, "all_reduce", n);
    if (s) return s;
    if (op == DIST_SUM && (t == DIST_F32 || t == DIST_F64)) return ordered_sum(c, buf, n, t);
    DIST_CHECK_MPI(c, MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, mpi_type(t), mpi_op(op), comm_of(c)));
    return BASE_OK;
}

static base_status mpi_reduce_scatter(dist_comm *c, const void *send, void *recv, size_t n, dist_dtype t,
                                      dist_op op) {
    base_status s = check_count(c, "reduce_scatter", n * (size_t)c->size);
    if (s) return s;
    size_t es = dist_dtype_size(t);
    if (op == DIST_SUM && (t == DIST_F32 || t == DIST_F64)) {
        /* rank-ordered: the blocks of send are exactly the result blocks */
        void *tmp = base_xmalloc((size_t)c->size * n * es + 1);
        int *sc = base_xmalloc(4 * (size_t)c->size * sizeof(int)), *sd = sc + c->size, *rc = sd + c->size,
            *rd = rc + c->size;
        for (int b = 0; b < c->size; b++) sc[b] = (int)n, sd[b] = (int)((size_t)b * n), rc[b] = (int)n,
                                           rd[b] = (int)((size_t)b * n);
        int rc_ = MPI_Alltoallv(send, sc, sd, mpi_type(t), tmp, rc, rd, mpi_type(t), comm_of(c));
        if (rc_ == MPI_SUCCESS) add_in_rank_order(tmp, n, c->size, t, recv);
        else s = mpi_fail(c, __FILE__, __LINE__, "MPI_Alltoallv(send, sc, sd, type, tmp, rc, rd, type, comm)", rc_);
        free(tmp), free(sc);
        return s;
    }
    DIST_CHECK_MPI(c, MPI_Reduce_scatter_block(send, recv, (int)n, mpi_type(t), mpi_op(op), comm_of(c)));
    return BASE_OK;
}

static base_status mpi_allgatherv(dist_comm *c, const void *send, void *recv, const size_t *counts, dist_dtype t) {
    int *cnt = base_xmalloc(2 * (size_t)c->size * sizeof(int)), *displ = cnt + c->size;
    size_t total = 0;
    base_status s = BASE_OK;
    for (int r = 0; r < c->size; r++) {
        cnt[r] = (int)counts[r];
        displ[r] = (int)total;
        total += counts[r];
    }
    s = check_count(c, "all_gather", total);
    if (!s)
        DIST_TRY_MPI(c, MPI_Allgatherv(send, cnt[c->rank], mpi_type(t), recv, cnt, displ, mpi_type(t), comm_of(c)), s,
                     done);
done:
    free(cnt);
    return s;
}

static base_status mpi_broadcast(dist_comm *c, void *buf, size_t n, dist_dtype t, int root) {
    base_status s = check_count(c, "broadcast", n);
    if (s) return s;
    DIST_CHECK_MPI(c, MPI_Bcast(buf, (int)n, mpi_type(t), root, comm_of(c)));
    return BASE_OK;
}

static base_status mpi_alltoallv(dist_comm *c, const void *send, const size_t *send_counts, void *recv,
                                 const size_t *recv_counts, dist_dtype t) {
    int *v = base_xmalloc(4 * (size_t)c->size * sizeof(int)), *sc = v, *sd = v + c->size, *rc = sd + c->size,
        *rd = rc + c->size;
    size_t so = 0, ro = 0;
    for (int r = 0; r < c->size; r++) {
        sc[r] = (int)send_counts[r], sd[r] = (int)so, so += send_counts[r];
        rc[r] = (int)recv_counts[r], rd[r] = (int)ro, ro += recv_counts[r];
    }
    base_status s = check_count(c, "all_to_all", so > ro ? so : ro);
    if (!s)
        DIST_TRY_MPI(c, MPI_Alltoallv(send, sc, sd, mpi_type(t), recv, rc, rd, mpi_type(t), comm_of(c)), s, done);
done:
    free(v);
    return s;
}

static base_status mpi_barrier(dist_comm *c) {
    DIST_CHECK_MPI(c, MPI_Barrier(comm_of(c)));
    return BASE_OK;
}

/* dist_ireduce_scatterv in flight: MPI_Ialltoallv of the blocks, every
 * rank's block for this one landing in scratch [size][mine]; the wait adds
 * them in rank order into recv. The count and displacement arrays stay
 * alive until the completion (MPI's rule for non-blocking collectives). */
typedef struct {
    MPI_Request mreq;
    void *scratch, *recv;
    size_t mine;
    dist_dtype t;
    int accumulate;
    int *ints; /* sc, sd, rc, rd [size] each */
} mpi_rs_req;

static base_status mpi_ireduce_scatterv(dist_comm *c, const void *send, void *recv, const size_t *counts,
                                        dist_dtype t, int accumulate, dist_request **req) {
    *req = NULL;
    int size = c->size;
    size_t total = 0, mine = counts[c->rank], es = dist_dtype_size(t);
    for (int r = 0; r < size; r++) total += counts[r];
    base_status s = check_count(c, "reduce_scatter", total > mine * (size_t)size ? total : mine * (size_t)size);
    if (s) return s;
    mpi_rs_req *q = base_xcalloc(1, sizeof *q);
    q->ints = base_xmalloc(4 * (size_t)size * sizeof(int));
    q->scratch = base_xmalloc(mine * (size_t)size * es + 1);
    q->recv = recv, q->mine = mine, q->t = t, q->accumulate = accumulate;
    int *sc = q->ints, *sd = sc + size, *rc = sd + size, *rd = rc + size;
    size_t off = 0;
    for (int r = 0; r < size; r++) {
        sc[r] = (int)counts[r], sd[r] = (int)off, off += counts[r];
        rc[r] = (int)mine, rd[r] = (int)((size_t)r * mine);
    }
    int rc_ = MPI_Ialltoallv(send, sc, sd, mpi_type(t), q->scratch, rc, rd, mpi_type(t), comm_of(c), &q->mreq);
    if (rc_ != MPI_SUCCESS) {
        free(q->scratch), free(q->ints), free(q);
        return mpi_fail(c, __FILE__, __LINE__, "MPI_Ialltoallv(send, sc, sd, type, scratch, rc, rd, type, comm, &req)",
                        rc_);
    }
    dist_request *d = base_xcalloc(1, sizeof *d);
    d->c = c, d->impl = q;
    *req = d;
    return BASE_OK;
}

static base_status mpi_wait(dist_request *req) {
    mpi_rs_req *q = req->impl;
    dist_comm *c = req->c;
    base_status s = BASE_OK;
    int rc_ = MPI_Wait(&q->mreq, MPI_STATUS_IGNORE);
    if (rc_ == MPI_SUCCESS) dist_add_rows(q->scratch, q->mine, c->size, q->t, q->accumulate, q->recv);
    else s = mpi_fail(c, __FILE__, __LINE__, "MPI_Wait(&req, MPI_STATUS_IGNORE) of a reduce_scatter", rc_);
    free(q->scratch), free(q->ints), free(q), free(req);
    return s;
}

static void mpi_destroy(dist_comm *c) {
    MPI_Comm *m = c->impl;
    if (m && *m != MPI_COMM_WORLD && *m != MPI_COMM_NULL) MPI_Comm_free(m);
    free(m);
    c->impl = NULL;
}

static const dist_backend mpi_backend = {"mpi",         mpi_allreduce, mpi_reduce_scatter, mpi_allgatherv,
                                         mpi_broadcast, mpi_alltoallv, mpi_barrier,        mpi_ireduce_scatterv,
                                         mpi_wait,      mpi_destroy};

/* ---- the runtime -------------------------------------------------------------- */

static int rt_launched;
static dist_comm *rt_world;

static int launched_by_env(void) {
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

base_status dist_rt_init(int *argc, char ***argv, int *rank, int *size, int *local_rank, int *local_size,
                         int *launched, dist_comm **world) {
    dist_comm *w = base_xcalloc(1, sizeof *w);
    snprintf(w->name, sizeof w->name, "world");
    *rank = 0, *size = 1, *local_rank = 0, *local_size = 1, *launched = 0;
    if (!launched_by_env()) { /* a plain process: world size 1, no MPI */
        w->be = &dist_self_backend;
        w->rank = 0, w->size = 1;
        rt_world = w;
        *world = w;
        return BASE_OK;
    }
    int provided = 0;
    int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) {
        free(w);
        return mpi_fail(NULL, __FILE__, __LINE__, "MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided)", rc);
    }
    rt_launched = 1;
    *launched = 1;
    base_status s = BASE_OK;
    /* errors come back to the caller, which names them and aborts the job */
    DIST_TRY_MPI(NULL, MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), s, fail);
    DIST_TRY_MPI(NULL, MPI_Comm_rank(MPI_COMM_WORLD, &rt_rank), s, fail);
    DIST_TRY_MPI(NULL, MPI_Comm_size(MPI_COMM_WORLD, &rt_size), s, fail);
    MPI_Comm *m = base_xmalloc(sizeof *m);
    *m = MPI_COMM_WORLD;
    w->impl = m;
    w->be = &mpi_backend;
    w->rank = rt_rank, w->size = rt_size;
    /* the ranks of this node: MPI-3's shared-memory split (mpirun and srun) */
    MPI_Comm node = MPI_COMM_NULL;
    DIST_TRY_MPI(w, MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rt_rank, MPI_INFO_NULL, &node), s,
                 fail);
    DIST_TRY_MPI(w, MPI_Comm_rank(node, local_rank), s, fail);
    DIST_TRY_MPI(w, MPI_Comm_size(node, local_size), s, fail);
    MPI_Comm_free(&node);
    *rank = rt_rank, *size = rt_size;
    rt_world = w;
    *world = w;
    return BASE_OK;
fail:
    free(w->impl);
    free(w);
    return s;
}

void dist_rt_finalize(void) {
    if (!rt_launched) return;
    if (rt_world) {
        free(rt_world->impl);
        free(rt_world);
        rt_world = NULL;
    }
    MPI_Finalize();
    rt_launched = 0;
}

BASE_NORETURN void dist_rt_abort(int code) {
    MPI_Abort(MPI_COMM_WORLD, code);
    exit(code); /* MPI_Abort does not return; if it did, this rank still ends */
}

const char *dist_rt_name(void) { return "mpi"; }

base_status dist_rt_split(dist_comm *parent, int color, int key, dist_comm *out) {
    MPI_Comm *m = base_xmalloc(sizeof *m);
    *m = MPI_COMM_NULL;
    base_status s = BASE_OK;
    DIST_TRY_MPI(parent, MPI_Comm_split(comm_of(parent), color, key, m), s, fail);
    DIST_TRY_MPI(parent, MPI_Comm_set_errhandler(*m, MPI_ERRORS_RETURN), s, fail);
    DIST_TRY_MPI(parent, MPI_Comm_rank(*m, &out->rank), s, fail);
    DIST_TRY_MPI(parent, MPI_Comm_size(*m, &out->size), s, fail);
    out->impl = m;
    out->be = &mpi_backend;
    return BASE_OK;
fail:
    if (*m != MPI_COMM_NULL) MPI_Comm_free(m);
    free(m);
    return s;
}
