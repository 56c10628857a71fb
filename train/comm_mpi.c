/* The MPI communicator of train/comm.h (built with `make MPI=1` only): MPI_COMM_WORLD, errors
 * returned rather than fatal, so a failed collective becomes an error naming the operation. */
#include <limits.h>
#include <mpi.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "train/comm.h"

typedef struct mpi_impl {
    MPI_Comm comm;
    /* the watchdog (timeout > 0): MPI offers no timeout on a collective, so a thread of our own ends
     * this process when one has waited longer than that for the other ranks (a rank stopped, or a
     * network that no longer carries its messages); mpirun then ends the job */
    double timeout;
    int rank;
    atomic_llong since_ms;   /* when the collective in progress began (0: none) */
    atomic_int op;           /* which one (index into op_names) */
    atomic_int stop;
    pthread_t thread;
    int have_thread;
    float *scratch; /* this rank's slice of a reduce-scatter (MPI forbids overlapping buffers) */
    size_t scratch_len;
    int *counts, *displs; /* per rank, for the v-collectives */
} mpi_impl;

static const char *const op_names[] = {"all-reduce", "reduce-scatter", "all-gather", "broadcast", "barrier"};

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void enter(mpi_impl *m, int op) {
    atomic_store(&m->op, op);
    atomic_store(&m->since_ms, now_ms());
}

static void leave(mpi_impl *m) { atomic_store(&m->since_ms, 0); }

static void *watchdog(void *arg) {
    mpi_impl *m = arg;
    while (!atomic_load(&m->stop)) {
        long long since = atomic_load(&m->since_ms);
        if (since && (double)(now_ms() - since) > m->timeout * 1000) {
            /* stderr is unbuffered; _exit: the main thread is inside MPI and must not run exit handlers */
            fprintf(stderr,
                    "autoneg: rank %d: the %s has waited more than %g s for the other ranks (AN_MPI_TIMEOUT): one of "
                    "them has stopped or cannot be reached; ending the job\n",
                    m->rank, op_names[atomic_load(&m->op)], m->timeout);
            _exit(3);
        }
        usleep(200000);
    }
    return NULL;
}

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
        enter(m, 0);
        int rc = MPI_Allreduce(MPI_IN_PLACE, buf + off, cnt, MPI_FLOAT, MPI_SUM, m->comm);
        leave(m);
        if (rc != MPI_SUCCESS) return mpi_fail(err, "all-reduce", n, rc);
    }
    return 0;
}

static int m_allreduce_f64(an_comm *c, double *buf, size_t n, an_error *err) {
    mpi_impl *m = c->impl;
    for (size_t off = 0; off < n; off += PIECE) {
        int cnt = (int)(n - off < PIECE ? n - off : PIECE);
        enter(m, 0);
        int rc = MPI_Allreduce(MPI_IN_PLACE, buf + off, cnt, MPI_DOUBLE, MPI_SUM, m->comm);
        leave(m);
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
    enter(m, 1);
    int rc = MPI_Reduce_scatter(buf, m->scratch, m->counts, MPI_FLOAT, MPI_SUM, m->comm);
    leave(m);
    if (rc != MPI_SUCCESS) return mpi_fail(err, "reduce-scatter", n, rc);
    if (len) memcpy(buf + lo, m->scratch, len * sizeof *buf);
    return 0;
}

static int m_allgather_f32(an_comm *c, float *buf, size_t n, an_error *err) {
    mpi_impl *m = c->impl;
    if (layout(c, n, "all-gather", err)) return -1;
    enter(m, 2);
    int rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, m->counts, m->displs, MPI_FLOAT, m->comm);
    leave(m);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(err, "all-gather", n, rc);
}

static int m_bcast_f32(an_comm *c, float *buf, size_t n, int root, an_error *err) {
    mpi_impl *m = c->impl;
    for (size_t off = 0; off < n; off += PIECE) {
        int cnt = (int)(n - off < PIECE ? n - off : PIECE);
        enter(m, 3);
        int rc = MPI_Bcast(buf + off, cnt, MPI_FLOAT, root, m->comm);
        leave(m);
        if (rc != MPI_SUCCESS) return mpi_fail(err, "broadcast", n, rc);
    }
    return 0;
}

static int m_barrier(an_comm *c, an_error *err) {
    mpi_impl *m = c->impl;
    enter(m, 4);
    int rc = MPI_Barrier(m->comm);
    leave(m);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(err, "barrier", 0, rc);
}

static void m_abort(an_comm *c, int code) {
    mpi_impl *m = c->impl;
    MPI_Abort(m->comm, code);
}

static void m_free(an_comm *c) {
    mpi_impl *m = c->impl;
    if (m && m->have_thread) {
        atomic_store(&m->stop, 1);
        pthread_join(m->thread, NULL);
    }
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

int an_comm_mpi_init(an_comm *c, int *argc, char ***argv, double timeout_s, an_error *err) {
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
    m->rank = c->rank;
    m->timeout = timeout_s;
    if (timeout_s > 0) {
        if (pthread_create(&m->thread, NULL, watchdog, m)) {
            an_comm_free(c);
            return an_fail(err, "MPI: cannot start the collective watchdog thread");
        }
        m->have_thread = 1;
    }
    return 0;
}
