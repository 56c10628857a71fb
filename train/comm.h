#ifndef AN_TRAIN_COMM_H
#define AN_TRAIN_COMM_H
/* The communicator of data-parallel training: the ranks of one job and the collectives they meet in.
 *
 * An an_comm is a rank, a size and a table of collectives. Two implementations:
 *   - single (train/comm.c, always built): one process, size 1; every collective is a no-op;
 *   - MPI (train/comm_mpi.c, built with `make MPI=1`): MPI_COMM_WORLD, for CPU ranks;
 *   - NCCL (train/comm_nccl.c, built with `make CUDA=1 MPI=1`): GPU ranks, one GPU each, set up
 *     through MPI, whose communicator it keeps for the host-side collectives.
 * Nothing above this header names MPI or NCCL.
 *
 * The float collectives' buffers are the backend's memory (the optimizer's gradient buffer, the
 * weights, the moments): host memory for MPI, device memory for NCCL. The double all-reduce takes
 * host values (token counts, loss sums, norms) in both.
 *
 * Slices: reduce-scatter and all-gather split a buffer of n values into size contiguous slices,
 * rank r holding [lo, lo + len) of an_comm_slice (the first n % size ranks one value more). Both
 * work in place on the whole buffer: after a reduce-scatter, this rank's slice of buf holds the sum
 * over ranks (the rest of buf is left as it was); an all-gather fills every slice of buf from the
 * rank that holds it.
 *
 * Errors: every collective returns 0, or -1 with err naming the operation and the library's message.
 * A rank that dies is the launcher's business (mpirun ends the whole job; docs/distributed.md); one
 * that hangs, the MPI communicator's watchdog's (an_comm_mpi_init). */
#include <stddef.h>

#include "core/error.h"

typedef struct an_comm an_comm;

typedef struct an_comm_vt {
    const char *name; /* "single", "mpi" */
    int (*allreduce_f32)(an_comm *c, float *buf, size_t n, an_error *err);
    int (*allreduce_f64)(an_comm *c, double *buf, size_t n, an_error *err);
    int (*reduce_scatter_f32)(an_comm *c, float *buf, size_t n, an_error *err);
    int (*allgather_f32)(an_comm *c, float *buf, size_t n, an_error *err);
    int (*bcast_f32)(an_comm *c, float *buf, size_t n, int root, an_error *err);
    int (*barrier)(an_comm *c, an_error *err);
    /* Ends every rank of the job with this exit code (after an error on one rank: the others
     * would wait for it in their next collective). The single communicator returns. */
    void (*abort)(an_comm *c, int code);
    void (*free)(an_comm *c);
} an_comm_vt;

struct an_comm {
    const an_comm_vt *vt;
    int rank, size;
    void *impl;
    double seconds;     /* time spent inside collectives so far (for the benchmark) */
    double bytes;       /* bytes this rank handed to collectives so far */
    int alone;          /* one rank whose collectives still go through the library (AN_COMM_ONE_RANK) */
};

/* 1 when the collectives do something: several ranks, or one rank that times the library's path
 * (an NCCL communicator of one GPU: AN_COMM_ONE_RANK=1 under mpirun -np 1, docs/distributed.md).
 * With one rank the sums are the buffers themselves either way. */
static inline int an_comm_active(const an_comm *c) { return c && (c->size > 1 || c->alone); }

/* The one-process communicator (nothing to free). */
void an_comm_single(an_comm *c);

/* Rank r's slice of n values among size ranks: [*lo, *lo + *len). */
void an_comm_slice(size_t n, int size, int rank, size_t *lo, size_t *len);

/* The collectives, timed into c->seconds (c NULL: the single communicator's no-ops). */
int an_comm_allreduce_f32(an_comm *c, float *buf, size_t n, an_error *err);
int an_comm_allreduce_f64(an_comm *c, double *buf, size_t n, an_error *err);
int an_comm_reduce_scatter_f32(an_comm *c, float *buf, size_t n, an_error *err);
int an_comm_allgather_f32(an_comm *c, float *buf, size_t n, an_error *err);
int an_comm_bcast_f32(an_comm *c, float *buf, size_t n, int root, an_error *err);
int an_comm_barrier(an_comm *c, an_error *err);
void an_comm_abort(an_comm *c, int code);
void an_comm_free(an_comm *c);

#ifdef AN_MPI
/* 1 when this process was started by an MPI launcher (mpirun, srun with PMI/PMIx), which sets its
 * rank in the environment; 0 for a plain `autoneg train`, which then needs no MPI at all. */
int an_comm_mpi_launched(void);
/* MPI_Init_thread (funneled: only the main thread calls MPI) and MPI_COMM_WORLD with errors
 * returned, not fatal. timeout_s > 0: a watchdog thread ends this process (exit status 3, a line
 * naming the rank and the collective) when one collective has waited longer than that, since MPI
 * has no timeouts of its own; mpirun then ends the job. an_comm_free calls MPI_Finalize. */
int an_comm_mpi_init(an_comm *c, int *argc, char ***argv, double timeout_s, an_error *err);
#ifdef AN_CUDA
/* Turns the MPI communicator c into an NCCL one for GPU ranks: each rank takes the GPU of its index
 * among its host's ranks (call it before the CUDA backend opens, which uses that device), rank 0's
 * NCCL id goes to all by MPI, and the float collectives then run on device buffers. timeout_s > 0:
 * a collective that waits longer aborts the communicator and fails (NCCL has no timeout either). On
 * an error c stays freeable with an_comm_free and abortable with an_comm_abort. */
int an_comm_nccl_init(an_comm *c, double timeout_s, an_error *err);
#endif
#endif

#endif
