/* ZeRO-1 and the all-reduce path of train/optim.h without MPI: N ranks are N OpenMP threads of this
 * process, each with its own weights, gradients and optimizer, joined by a communicator (train/comm.h)
 * whose collectives meet at OpenMP barriers and sum in rank order. Against them, one optimizer on one
 * process stepping with the summed gradients.
 *
 * Tensors of 7, 1, 12 and 5 values with alignment gaps in the gradient buffer (29 floats), so slices
 * of 2, 3 and 4 ranks cut tensors in the middle and are uneven. What must hold:
 *   - zero 0 and zero 1 on N ranks give the weights of one process bit for bit: the summed gradient
 *     is the same float sum in the same order (rank 0 + rank 1 + ...), given to the single process
 *     already summed, and AdamW is elementwise; the clip factor comes from the norm, whose sum of
 *     squares is taken in another order (slices, then their sum), and is compared within 1e-12
 *     relative (double sums of 29 squares), then rounded to float the same way;
 *   - each rank keeps 2 x its slice of moments under ZeRO-1 (the memory it saves);
 *   - the gathered moments (what a checkpoint writes) equal the single process's bit for bit;
 *   - a broadcast gives every rank rank 0's weights. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "tests/test.h"
#include "train/comm.h"
#include "train/optim.h"

enum { NT = 4, NF = 29, MAXR = 4, STEPS = 3 };
static const size_t sizes[NT] = {7, 1, 12, 5};
static const size_t offs[NT] = {0, 8, 12, 24}; /* gaps at 7, 9..11 and 29.. (24 + 5 = 29) */

/* ---- the threads' communicator ---- */
typedef struct shared {
    float f[MAXR][NF * 2];
    double d[MAXR][8];
    float out[NF * 2];
} shared;

static shared *sh_of(an_comm *c) { return c->impl; }

static int t_allreduce_f32(an_comm *c, float *buf, size_t n, an_error *e) {
    (void)e;
    shared *s = sh_of(c);
    memcpy(s->f[c->rank], buf, n * sizeof *buf);
#pragma omp barrier
    for (size_t i = 0; i < n; i++) {
        float sum = s->f[0][i];
        for (int r = 1; r < c->size; r++) sum += s->f[r][i];
        buf[i] = sum;
    }
#pragma omp barrier
    return 0;
}

static int t_allreduce_f64(an_comm *c, double *buf, size_t n, an_error *e) {
    (void)e;
    shared *s = sh_of(c);
    memcpy(s->d[c->rank], buf, n * sizeof *buf);
#pragma omp barrier
    for (size_t i = 0; i < n; i++) {
        double sum = s->d[0][i];
        for (int r = 1; r < c->size; r++) sum += s->d[r][i];
        buf[i] = sum;
    }
#pragma omp barrier
    return 0;
}

static int t_reduce_scatter_f32(an_comm *c, float *buf, size_t n, an_error *e) {
    (void)e;
    shared *s = sh_of(c);
    memcpy(s->f[c->rank], buf, n * sizeof *buf);
#pragma omp barrier
    size_t lo, len;
    an_comm_slice(n, c->size, c->rank, &lo, &len);
    for (size_t i = lo; i < lo + len; i++) {
        float sum = s->f[0][i];
        for (int r = 1; r < c->size; r++) sum += s->f[r][i];
        buf[i] = sum;
    }
#pragma omp barrier
    return 0;
}

static int t_allgather_f32(an_comm *c, float *buf, size_t n, an_error *e) {
    (void)e;
    shared *s = sh_of(c);
    size_t lo, len;
    an_comm_slice(n, c->size, c->rank, &lo, &len);
    memcpy(s->out + lo, buf + lo, len * sizeof *buf);
#pragma omp barrier
    memcpy(buf, s->out, n * sizeof *buf);
#pragma omp barrier
    return 0;
}

static int t_bcast_f32(an_comm *c, float *buf, size_t n, int root, an_error *e) {
    (void)e;
    shared *s = sh_of(c);
    if (c->rank == root) memcpy(s->out, buf, n * sizeof *buf);
#pragma omp barrier
    memcpy(buf, s->out, n * sizeof *buf);
#pragma omp barrier
    return 0;
}

static int t_barrier(an_comm *c, an_error *e) {
    (void)c, (void)e;
#pragma omp barrier
    return 0;
}
static void t_abort(an_comm *c, int code) { (void)c, (void)code; }
static void t_free(an_comm *c) { (void)c; }

static const an_comm_vt threads_vt = {"threads",  t_allreduce_f32, t_allreduce_f64, t_reduce_scatter_f32,
                                      t_allgather_f32, t_bcast_f32,  t_barrier,       t_abort, t_free};

/* ---- the model: 4 tensors in one gradient buffer ---- */
typedef struct rank_state {
    float *w[NT];
    float *grad; /* NF floats */
    an_optim opt;
    double norm[STEPS];
    size_t bytes;
    float *moments; /* gathered, 2 x NF */
} rank_state;

/* rank r's gradient of step s (rank -1: the sum over `size` ranks in rank order, as the collectives add) */
static float grad_of(int r, int s, size_t i) { return (float)sin(0.37 * (double)i + 1.3 * r + 0.71 * s) * (1.0f + (float)r); }

static void init_state(rank_state *st, const an_ops *ops, int decay_first) {
    memset(st, 0, sizeof *st);
    st->grad = ops->alloc(ops, NF * sizeof(float));
    an_optim_tensor t[NT];
    for (int k = 0; k < NT; k++) {
        st->w[k] = ops->alloc(ops, sizes[k] * sizeof(float));
        for (size_t i = 0; i < sizes[k]; i++) st->w[k][i] = 0.1f * (float)(k + 1) - 0.03f * (float)i;
        t[k] = (an_optim_tensor){st->w[k], st->grad + offs[k], sizes[k], k == 0 ? decay_first : k != 1};
    }
    an_error err;
    CHECK_MSG(an_optim_init(&st->opt, ops, t, NT, st->grad, NF, &err) == 0, "%s", err.msg);
}

static void free_state(rank_state *st, const an_ops *ops) {
    an_optim_free(&st->opt);
    for (int k = 0; k < NT; k++) ops->free(ops, st->w[k]);
    ops->free(ops, st->grad);
    free(st->moments);
}

static const an_adamw_config cfg = {1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, 2.0f}; /* norms ~3-9: clipping acts */

/* STEPS steps; rank < 0: one process given the gradients summed over `size` ranks */
static void run_steps(rank_state *st, int rank, int size) {
    an_error err;
    for (int s = 0; s < STEPS; s++) {
        an_optim_zero_grad(&st->opt);
        for (int k = 0; k < NT; k++)
            for (size_t i = 0; i < sizes[k]; i++) {
                size_t j = offs[k] + i;
                float g;
                if (rank >= 0)
                    g = grad_of(rank, s, j);
                else {
                    g = grad_of(0, s, j);
                    for (int r = 1; r < size; r++) g += grad_of(r, s, j);
                }
                st->grad[j] = g;
            }
        CHECK_MSG(an_optim_grad_norm_checked(&st->opt, &st->norm[s], &err) == 0, "%s", err.msg);
        CHECK_MSG(an_optim_apply_checked(&st->opt, &cfg, st->norm[s], &err) == 0, "%s", err.msg);
    }
    st->bytes = an_optim_bytes(&st->opt);
    float *m = an_optim_full_moments(&st->opt, 1, &err);
    CHECK_MSG(m != NULL, "%s", err.msg);
    st->moments = malloc(2 * NF * sizeof(float));
    if (m && st->moments) memcpy(st->moments, m, 2 * NF * sizeof(float));
    an_optim_full_moments_done(&st->opt, m, 0);
}

static void check_ranks(int size, int zero) {
    const an_ops *ops = an_ops_cpu();
    rank_state one, ranks[MAXR];
    init_state(&one, ops, 1);
    run_steps(&one, -1, size);
    shared *sh = calloc(1, sizeof *sh);
    an_comm comms[MAXR];
    int threads = 0;
#pragma omp parallel num_threads(size)
    {
        int r = omp_get_thread_num();
        if (r == 0) threads = omp_get_num_threads();
        an_comm *c = &comms[r];
        memset(c, 0, sizeof *c);
        c->vt = &threads_vt;
        c->rank = r;
        c->size = size;
        c->impl = sh;
        init_state(&ranks[r], ops, 1);
        /* rank 1 and up start from other weights: the broadcast must replace them with rank 0's */
        if (r > 0)
            for (size_t i = 0; i < sizes[0]; i++) ranks[r].w[0][i] = 42.0f;
        an_error err;
        int rc = an_optim_distribute(&ranks[r].opt, c, zero, &err);
        if (!rc) rc = an_optim_broadcast_params(&ranks[r].opt, 0, &err);
        if (rc) {
#pragma omp critical
            CHECK_MSG(0, "rank %d: %s", r, err.msg);
        }
        run_steps(&ranks[r], r, size);
    }
    /* the region must have had `size` threads, else the collectives met nobody */
    CHECK_MSG(threads == size, "OpenMP gave %d threads for %d ranks", threads, size);
    for (int r = 0; r < size; r++) {
        rank_state *st = &ranks[r];
        CHECK_MSG(st->opt.sharded == (zero && size > 1), "rank %d of %d, zero %d: sharded %d", r, size, zero, st->opt.sharded);
        size_t lo, len;
        an_comm_slice(NF, size, r, &lo, &len);
        size_t want = 2 * (zero ? len : NF) * sizeof(float);
        CHECK_MSG(st->bytes == want, "rank %d of %d, zero %d: %zu bytes of moments, expected %zu", r, size, zero, st->bytes, want);
        for (int s = 0; s < STEPS; s++)
            CHECK_MSG(fabs(st->norm[s] - one.norm[s]) <= 1e-12 * one.norm[s], "rank %d of %d, step %d: norm %.17g, one process %.17g",
                      r, size, s, st->norm[s], one.norm[s]);
        for (int k = 0; k < NT; k++)
            CHECK_MSG(memcmp(st->w[k], one.w[k], sizes[k] * sizeof(float)) == 0,
                      "rank %d of %d, zero %d: tensor %d differs from one process (first value %.9g against %.9g)", r, size,
                      zero, k, st->w[k][0], one.w[k][0]);
        if (st->moments && one.moments)
            for (int k = 0; k < NT; k++) {
                size_t o = offs[k];
                CHECK_MSG(memcmp(st->moments + o, one.moments + o, sizes[k] * sizeof(float)) == 0 &&
                              memcmp(st->moments + NF + o, one.moments + NF + o, sizes[k] * sizeof(float)) == 0,
                          "rank %d of %d, zero %d: gathered moments of tensor %d differ", r, size, zero, k);
            }
        free_state(st, ops);
    }
    free_state(&one, ops);
    free(sh);
}

static void test_slices(void) {
    size_t lo, len;
    /* 29 values over 3 ranks: 10, 10, 9 */
    an_comm_slice(29, 3, 0, &lo, &len);
    CHECK(lo == 0 && len == 10);
    an_comm_slice(29, 3, 1, &lo, &len);
    CHECK(lo == 10 && len == 10);
    an_comm_slice(29, 3, 2, &lo, &len);
    CHECK(lo == 20 && len == 9);
    /* fewer values than ranks: the last ranks hold none */
    an_comm_slice(2, 4, 3, &lo, &len);
    CHECK(lo == 2 && len == 0);
    an_comm_slice(7, 1, 0, &lo, &len);
    CHECK(lo == 0 && len == 7);
}

static void test_allreduce_2_ranks(void) { check_ranks(2, 0); }
static void test_zero1_2_ranks(void) { check_ranks(2, 1); }
static void test_zero1_3_ranks(void) { check_ranks(3, 1); }
static void test_zero1_4_ranks(void) { check_ranks(4, 1); }

/* the single communicator: collectives change nothing and cost nothing */
static void test_single(void) {
    an_comm c;
    an_comm_single(&c);
    float v[3] = {1, 2, 3};
    double d = 5;
    an_error err;
    CHECK(an_comm_allreduce_f32(&c, v, 3, &err) == 0 && an_comm_reduce_scatter_f32(&c, v, 3, &err) == 0 &&
          an_comm_allgather_f32(&c, v, 3, &err) == 0 && an_comm_allreduce_f64(&c, &d, 1, &err) == 0 &&
          an_comm_bcast_f32(&c, v, 3, 0, &err) == 0 && an_comm_barrier(&c, &err) == 0);
    CHECK(v[0] == 1 && v[1] == 2 && v[2] == 3 && d == 5 && c.rank == 0 && c.size == 1 && c.seconds == 0);
}

int main(void) {
    omp_set_dynamic(0); /* the ranks need exactly the threads asked for */
    RUN(test_slices);
    RUN(test_single);
    RUN(test_allreduce_2_ranks);
    RUN(test_zero1_2_ranks);
    RUN(test_zero1_3_ranks);
    RUN(test_zero1_4_ranks);
    return test_finish();
}
