/* The NCCL communicator of train/comm.h (built with `make CUDA=1 MPI=1` only): GPU ranks, one GPU
 * each, set up through MPI.
 *
 * MPI starts the ranks and stays underneath: rank 0's ncclUniqueId reaches the others by MPI_Bcast,
 * each rank takes the GPU of its index among the ranks of its host (MPI_COMM_TYPE_SHARED) before the
 * CUDA backend opens, and the host-side collectives (the double all-reduces of token counts, loss
 * sums and norms, the barrier, abort) are the MPI communicator's. The float collectives, always over
 * the backend's device buffers (gradients, weights, AdamW moments), are NCCL's:
 *   - all-reduce and broadcast: ncclAllReduce / ncclBroadcast, in place;
 *   - reduce-scatter and all-gather of an_comm_slice's uneven slices (the first n % size ranks one
 *     value more; NCCL's own need equal ones): one ncclReduce (all-gather: ncclBroadcast) per slice,
 *     rooted at its owner, in one group, so NCCL runs them together.
 * Each collective waits for the device's queued work first (the gradients are computed on the
 * backend's stream) and for its own end after, so it is as synchronous as the MPI one. The wait polls
 * the stream and ncclCommGetAsyncError: with AN_MPI_TIMEOUT set, a collective still running after that
 * many seconds aborts the communicator and returns an error naming the rank, where a plain wait on a
 * peer that died would block for ever. */
#include <mpi.h>
#include <nccl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels/cuda/device.h"
#include "train/comm.h"

typedef struct nccl_impl {
    an_comm mpi; /* the MPI communicator underneath: host collectives, abort, MPI_Finalize */
    ncclComm_t nc;
    void *stream; /* a cudaStream_t of this rank's device (kernels/cuda/device.h) */
    double timeout; /* seconds; 0: wait for ever */
    int device;
} nccl_impl;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int nccl_fail(an_comm *c, an_error *err, const char *what, ncclResult_t r) {
    return an_fail(err, "NCCL %s (rank %d of %d): %s", what, c->rank, c->size, ncclGetErrorString(r));
}

/* The device's queued work done, so the buffers hold what the backend computed. */
static int before(an_comm *c, an_error *err, const char *what) {
    if (an_cuda_device_sync(err) == 0) return 0;
    return an_fail_prefix(err, "NCCL %s (rank %d): the device failed before it", what, c->rank);
}

/* Until the collective's stream is idle, an asynchronous NCCL error, or the timeout. */
static int wait_done(an_comm *c, an_error *err, const char *what) {
    nccl_impl *n = c->impl;
    double t0 = now_s();
    for (;;) {
        int done = an_cuda_stream_done(n->stream, err);
        if (done > 0) return 0;
        if (done < 0) return an_fail_prefix(err, "NCCL %s (rank %d)", what, c->rank);
        ncclResult_t async = ncclSuccess, asked = ncclCommGetAsyncError(n->nc, &async);
        if (asked != ncclSuccess) async = asked;
        if (async != ncclSuccess && async != ncclInProgress) {
            ncclCommAbort(n->nc);
            n->nc = NULL;
            return nccl_fail(c, err, what, async);
        }
        if (n->timeout > 0 && now_s() - t0 > n->timeout) {
            ncclCommAbort(n->nc);
            n->nc = NULL;
            return an_fail(err,
                           "NCCL %s (rank %d of %d): waited more than %g s for the other ranks (AN_MPI_TIMEOUT): one of "
                           "them has stopped or cannot be reached",
                           what, c->rank, c->size, n->timeout);
        }
        usleep(50);
    }
}

static int usable(an_comm *c, an_error *err, const char *what) {
    nccl_impl *n = c->impl;
    return n->nc ? 0 : an_fail(err, "NCCL %s (rank %d): the communicator was aborted after an earlier error", what, c->rank);
}

static int n_allreduce_f32(an_comm *c, float *buf, size_t count, an_error *err) {
    nccl_impl *n = c->impl;
    if (usable(c, err, "all-reduce") || before(c, err, "all-reduce")) return -1;
    ncclResult_t r = ncclAllReduce(buf, buf, count, ncclFloat32, ncclSum, n->nc, (cudaStream_t)n->stream);
    if (r != ncclSuccess) return nccl_fail(c, err, "all-reduce", r);
    return wait_done(c, err, "all-reduce");
}

/* Every slice of buf reduced onto its owner (reduce-scatter) or sent from it to all (all-gather). */
static int per_slice(an_comm *c, float *buf, size_t count, int gather, an_error *err) {
    nccl_impl *n = c->impl;
    const char *what = gather ? "all-gather" : "reduce-scatter";
    if (usable(c, err, what) || before(c, err, what)) return -1;
    ncclResult_t r = ncclGroupStart();
    for (int root = 0; root < c->size && r == ncclSuccess; root++) {
        size_t lo, len;
        an_comm_slice(count, c->size, root, &lo, &len);
        if (!len) continue;
        r = gather ? ncclBroadcast(buf + lo, buf + lo, len, ncclFloat32, root, n->nc, (cudaStream_t)n->stream)
                   : ncclReduce(buf + lo, buf + lo, len, ncclFloat32, ncclSum, root, n->nc, (cudaStream_t)n->stream);
    }
    ncclResult_t g = ncclGroupEnd();
    if (r != ncclSuccess || g != ncclSuccess) return nccl_fail(c, err, what, r != ncclSuccess ? r : g);
    return wait_done(c, err, what);
}

static int n_reduce_scatter_f32(an_comm *c, float *buf, size_t count, an_error *err) {
    return per_slice(c, buf, count, 0, err);
}

static int n_allgather_f32(an_comm *c, float *buf, size_t count, an_error *err) { return per_slice(c, buf, count, 1, err); }

static int n_bcast_f32(an_comm *c, float *buf, size_t count, int root, an_error *err) {
    nccl_impl *n = c->impl;
    if (usable(c, err, "broadcast") || before(c, err, "broadcast")) return -1;
    ncclResult_t r = ncclBroadcast(buf, buf, count, ncclFloat32, root, n->nc, (cudaStream_t)n->stream);
    if (r != ncclSuccess) return nccl_fail(c, err, "broadcast", r);
    return wait_done(c, err, "broadcast");
}

/* host values and the barrier: MPI's */
static int n_allreduce_f64(an_comm *c, double *buf, size_t count, an_error *err) {
    nccl_impl *n = c->impl;
    return n->mpi.vt->allreduce_f64(&n->mpi, buf, count, err);
}

static int n_barrier(an_comm *c, an_error *err) {
    nccl_impl *n = c->impl;
    return n->mpi.vt->barrier(&n->mpi, err);
}

static void n_abort(an_comm *c, int code) {
    nccl_impl *n = c->impl;
    if (n->nc) ncclCommAbort(n->nc);
    n->nc = NULL;
    n->mpi.vt->abort(&n->mpi, code);
}

static void n_free(an_comm *c) {
    nccl_impl *n = c->impl;
    if (!n) return;
    if (n->nc) ncclCommDestroy(n->nc);
    an_cuda_stream_destroy(n->stream);
    an_comm_free(&n->mpi); /* MPI_Finalize, last */
    free(n);
    c->impl = NULL;
}

static const an_comm_vt nccl_vt = {"nccl",      n_allreduce_f32, n_allreduce_f64, n_reduce_scatter_f32, n_allgather_f32,
                                   n_bcast_f32, n_barrier,       n_abort,         n_free};

/* This rank's index among the ranks of its host, and their number. */
static int local_rank(int *rank, int *size) {
    MPI_Comm local;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local) != MPI_SUCCESS) return -1;
    MPI_Comm_rank(local, rank);
    MPI_Comm_size(local, size);
    MPI_Comm_free(&local);
    return 0;
}

int an_comm_nccl_init(an_comm *c, double timeout_s, an_error *err) {
    if (!c->vt || strcmp(c->vt->name, "mpi") != 0)
        return an_fail(err, "NCCL: the communicator is set up on top of MPI's (an_comm_mpi_init first)");
    nccl_impl *n = calloc(1, sizeof *n);
    if (!n) return an_fail(err, "NCCL: out of memory");
    n->mpi = *c; /* the MPI communicator moves inside; c becomes the NCCL one */
    n->timeout = timeout_s;
    c->vt = &nccl_vt;
    c->impl = n;
    int lr, ls, devices = an_cuda_device_count();
    if (local_rank(&lr, &ls)) return an_fail(err, "NCCL (rank %d): MPI cannot tell the ranks of this host", c->rank);
    if (devices < ls)
        return an_fail(err,
                       "NCCL (rank %d): %d ranks on this host and %d CUDA devices: a GPU rank needs a GPU of its own "
                       "(start at most one rank per GPU)",
                       c->rank, ls, devices);
    n->device = lr;
    /* before the backend opens: it takes the current device (kernels/cuda/backend.cu) */
    if (an_cuda_select_device(n->device, err) || !(n->stream = an_cuda_stream_create(err)))
        return an_fail_prefix(err, "NCCL (rank %d)", c->rank);
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    ncclResult_t r = c->rank == 0 ? ncclGetUniqueId(&id) : ncclSuccess;
    /* every rank takes part in the broadcast, even when rank 0 failed (it sends zeros; all then fail) */
    int mrc = MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (r != ncclSuccess) return nccl_fail(c, err, "unique id", r);
    if (mrc != MPI_SUCCESS) return an_fail(err, "NCCL (rank %d): MPI_Bcast of the unique id failed", c->rank);
    if ((r = ncclCommInitRank(&n->nc, c->size, id, c->rank)) != ncclSuccess) {
        n->nc = NULL;
        return nccl_fail(c, err, "communicator", r);
    }
    return 0;
}
