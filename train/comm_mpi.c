/* The MPI communicator of train/comm.h (built with `make MPI=1` only): MPI_COMM_WORLD, errors
 * returned rather than fatal, so a failed collective becomes an error naming the operation. */
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/comm.h"

typedef struct mpi_impl {
    MPI_Comm comm;
    float *scratch; /* this rank's slice of a reduce-scatter (MPI forbids overlapping buffers) */
    size_t scratch_len;
    int *counts, *displs; /* per rank, for the v-collectives */
} mpi_impl;

static int mpi_fail(an_error *err, const char *op, size_t n, int code) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "MPI error %d", code);
    return an_fail(err, "MPI %s of %zu values failed: %s", op, n, msg);
}

/* MPI counts are int: long buffers go in pieces (a sum is elementwise, so pieces change nothing) */
#define PIECE ((size_t)1 << 30)

static int m_allreduce_f32(an_comm *c, float *buf, size_t n, an_error *err) {
    mpi_impl *m = c->impl;
    for (size_t off = 0; off < n; off += PIECE) {
        int cnt = (int)(n - off < PIECE ? n - off : PIECE);
        int rc = MPI_Allreduce(MPI_IN_PLACE, buf + off, cnt, MPI_FLOAT, MPI_SUM, m->comm);
        if (rc != MPI_SUCCESS) return mpi_fail(err, "all-reduce", n, rc);
    }
    return 0;
}

static int m_allreduce_f64(an_comm *c, double *buf, size_t n, an_error *err) {
    mpi_impl *m = c->impl;
    for (size_t off = 0; off < n; off += PIECE) {
        int cnt = (int)(n - off < PIECE ? n - off : PIECE);
        int rc = MPI_Allreduce(MPI_IN_PLACE, buf + off, cnt, MPI_DOUBLE, MPI_SUM, m->comm);
        if (rc != MPI_SUCCESS) return mpi_fail(err, "all-reduce", n, rc);
    }
    return 0;
}

/* counts and displacements of the slices; the v-collectives take int, so n must fit */
static int layout(an_comm *c, size_t n, const char *op, an_error *err) {
    mpi_impl *m = c->impl;
    if (n > (size_t)INT_MAX)
        return an_fail(err, "MPI %s of %zu values: more than %d values in one buffer is not supported yet", op, n,
                       INT_MAX);
    for (int r = 0; r < c->size; r++) {
        size_t lo, len;
        an_comm_slice(n, c->size, r, &lo, &len);
        m->counts[r] = (int)len;
        m->displs[r] = (int)lo;
    }
    return 0;
}

static int m_reduce_scatter_f32(an_comm *c, float *buf, size_t n, an_error *err) {
    mpi_impl *m = c->impl;
    if (layout(c, n, "reduce-scatter", err)) return -1;
    size_t lo, len;
    an_comm_slice(n, c->size, c->rank, &lo, &len);
    if (len > m->scratch_len) {
        float *s = realloc(m->scratch, len * sizeof *s);
        if (!s) return an_fail(err, "MPI reduce-scatter: out of memory for %zu values", len);
        m->scratch = s;
        m->scratch_len = len;
    }
    int rc = MPI_Reduce_scatter(buf, m->scratch, m->counts, MPI_FLOAT, MPI_SUM, m->comm);
    if (rc != MPI_SUCCESS) return mpi_fail(err, "reduce-scatter", n, rc);
    if (len) memcpy(buf + lo, m->scratch, len * sizeof *buf);
    return 0;
}

static int m_allgather_f32(an_comm *c, float *buf, size_t n, an_error *err) {
    mpi_impl *m = c->impl;
    if (layout(c, n, "all-gather", err)) return -1;
    int rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, m->counts, m->displs, MPI_FLOAT, m->comm);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(err, "all-gather", n, rc);
}

static int m_bcast_f32(an_comm *c, float *buf, size_t n, int root, an_error *err) {
    mpi_impl *m = c->impl;
    for (size_t off = 0; off < n; off += PIECE) {
        int cnt = (int)(n - off < PIECE ? n - off : PIECE);
        int rc = MPI_Bcast(buf + off, cnt, MPI_FLOAT, root, m->comm);
        if (rc != MPI_SUCCESS) return mpi_fail(err, "broadcast", n, rc);
    }
    return 0;
}

static int m_barrier(an_comm *c, an_error *err) {
    mpi_impl *m = c->impl;
    int rc = MPI_Barrier(m->comm);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(err, "barrier", 0, rc);
}

static void m_abort(an_comm *c, int code) {
    mpi_impl *m = c->impl;
    MPI_Abort(m->comm, code);
}

static void m_free(an_comm *c) {
    mpi_impl *m = c->impl;
    if (m) {
        free(m->scratch);
        free(m->counts);
        free(m->displs);
        free(m);
    }
    c->impl = NULL;
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
}

static const an_comm_vt mpi_vt = {"mpi",     m_allreduce_f32, m_allreduce_f64, m_reduce_scatter_f32, m_allgather_f32,
                                  m_bcast_f32, m_barrier,       m_abort,         m_free};

int an_comm_mpi_launched(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

int an_comm_mpi_init(an_comm *c, int *argc, char ***argv, an_error *err) {
    memset(c, 0, sizeof *c);
    int provided = 0;
    int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) return an_fail(err, "MPI_Init failed (error %d)", rc);
    mpi_impl *m = calloc(1, sizeof *m);
    if (!m) return an_fail(err, "MPI: out of memory");
    m->comm = MPI_COMM_WORLD;
    MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(m->comm, &c->rank);
    MPI_Comm_size(m->comm, &c->size);
    m->counts = calloc((size_t)c->size, sizeof *m->counts);
    m->displs = calloc((size_t)c->size, sizeof *m->displs);
    c->vt = &mpi_vt;
    c->impl = m;
    if (!m->counts || !m->displs) {
        an_comm_free(c);
        return an_fail(err, "MPI: out of memory");
    }
    return 0;
}
