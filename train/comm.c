/* The one-process communicator and the timed wrappers of train/comm.h. */
#include "train/comm.h"

#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- single: one process holds every gradient, so a sum over ranks is the buffer itself ---- */
static int s_f32(an_comm *c, float *b, size_t n, an_error *e) { (void)c, (void)b, (void)n, (void)e; return 0; }
static int s_f64(an_comm *c, double *b, size_t n, an_error *e) { (void)c, (void)b, (void)n, (void)e; return 0; }
static int s_bcast(an_comm *c, float *b, size_t n, int root, an_error *e) {
    (void)c, (void)b, (void)n, (void)root, (void)e;
    return 0;
}
static int s_barrier(an_comm *c, an_error *e) { (void)c, (void)e; return 0; }
static void s_abort(an_comm *c, int code) { (void)c, (void)code; }
static void s_free(an_comm *c) { (void)c; }

static const an_comm_vt single_vt = {"single", s_f32, s_f64, s_f32, s_f32, s_bcast, s_barrier, s_abort, s_free};

void an_comm_single(an_comm *c) {
    memset(c, 0, sizeof *c);
    c->vt = &single_vt;
    c->size = 1;
}

void an_comm_slice(size_t n, int size, int rank, size_t *lo, size_t *len) {
    size_t s = size > 0 ? (size_t)size : 1, r = (size_t)rank, q = n / s, extra = n % s;
    *len = q + (r < extra);
    *lo = r * q + (r < extra ? r : extra);
}

#define TIMED(c, bytes_, call)                                                                                          \
    do {                                                                                                               \
        if (!an_comm_active(c)) return 0;                                                                              \
        double t0_ = now();                                                                                            \
        int rc_ = (call);                                                                                              \
        (c)->seconds += now() - t0_;                                                                                   \
        (c)->bytes += (double)(bytes_);                                                                                \
        return rc_;                                                                                                    \
    } while (0)

int an_comm_allreduce_f32(an_comm *c, float *buf, size_t n, an_error *err) {
    TIMED(c, n * sizeof(float), c->vt->allreduce_f32(c, buf, n, err));
}
int an_comm_allreduce_f64(an_comm *c, double *buf, size_t n, an_error *err) {
    TIMED(c, n * sizeof(double), c->vt->allreduce_f64(c, buf, n, err));
}
int an_comm_reduce_scatter_f32(an_comm *c, float *buf, size_t n, an_error *err) {
    TIMED(c, n * sizeof(float), c->vt->reduce_scatter_f32(c, buf, n, err));
}
int an_comm_allgather_f32(an_comm *c, float *buf, size_t n, an_error *err) {
    TIMED(c, n * sizeof(float), c->vt->allgather_f32(c, buf, n, err));
}
int an_comm_bcast_f32(an_comm *c, float *buf, size_t n, int root, an_error *err) {
    TIMED(c, n * sizeof(float), c->vt->bcast_f32(c, buf, n, root, err));
}
int an_comm_barrier(an_comm *c, an_error *err) { TIMED(c, 0, c->vt->barrier(c, err)); }

void an_comm_abort(an_comm *c, int code) {
    if (c && c->vt) c->vt->abort(c, code);
}

void an_comm_free(an_comm *c) {
    if (c && c->vt) c->vt->free(c);
}
