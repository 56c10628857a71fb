/* Float32 weights in 32-row panels (AN_F32_X32: kernels/f32x32.h, kernels/cpu_f32x32.c), the layout a
 * GGUF model's float32 matrices are kept in on the CPU:
 *  - rows in and out of the panels unchanged, bit for bit;
 *  - the forward (both linear modes), the input gradient and the lookup through the CPU op table,
 *    against double-precision products of the same values, within the bound below;
 *  - the forward's row n the same bits alone, inside any batch, and for 1 or 2 threads;
 *  - a GGUF model loaded as generate loads it keeps its float32 matrices so, and gives the logits of
 *    the same file read as plain float32 (tests/test_gguf_model.c checks them against transformers).
 *
 * Bound: a float32 sum of C products (and the bias) in any order is within (C + 1) u sum |terms| of the
 * exact sum, u = 2^-24 (Higham, Accuracy and Stability, 3.1); 1.01 x that, and a floor of 1e-30 for
 * sums of zeros. The products here are exact in double. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "kernels/cpu.h"
#include "kernels/f32x32.h"
#include "model/model.h"
#include "tests/test.h"

#define U32 0x1p-24

typedef struct panel_weight {
    float *rows;  /* [OC, C], row-major */
    float *x32;   /* the same in panels */
    an_weight w;  /* of x32 */
} panel_weight;

static panel_weight make(int OC, int C, uint64_t seed) {
    an_rng r;
    an_rng_seed(&r, seed);
    panel_weight p;
    p.rows = malloc(sizeof(float) * (size_t)OC * C + 4);
    p.x32 = malloc(sizeof(float) * (size_t)OC * C + 4);
    for (size_t i = 0; i < (size_t)OC * C; i++) p.rows[i] = an_rng_normal(&r);
    for (int o = 0; o < OC; o++) an_f32x32_put_row(p.x32, C, o, p.rows + (size_t)o * C);
    p.w = (an_weight){AN_F32_X32, OC, C, p.x32};
    return p;
}

static void drop(panel_weight *p) { free(p->rows), free(p->x32); }

static float *randv(size_t n, uint64_t seed) {
    an_rng r;
    an_rng_seed(&r, seed);
    float *v = malloc(sizeof(float) * n + 4);
    for (size_t i = 0; i < n; i++) v[i] = an_rng_normal(&r);
    return v;
}

/* max over outputs of |got - exact| / bound, bound = 1.01 (K + 1) u (|bias| + sum |products|) */
static double worst_vs_exact(const float *got, const float *a, const float *b, const float *bias, int N, int K, int OC,
                             size_t a_row, size_t a_k, size_t b_col, size_t b_k) {
    double worst = 0;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = bias ? bias[o] : 0.0, mag = bias ? fabs(bias[o]) : 0.0;
            for (int k = 0; k < K; k++) {
                double t = (double)a[n * a_row + k * a_k] * (double)b[o * b_col + k * b_k];
                s += t, mag += fabs(t);
            }
            double bound = 1.01 * (K + 1) * U32 * mag + 1e-30;
            worst = test_nan_max(worst, fabs((double)got[(size_t)n * OC + o] - s) / bound);
        }
    return worst;
}

static void test_rows_round_trip(void) {
    panel_weight p = make(64, 37, 1);
    float row[37];
    int same = 1;
    for (int o = 0; o < 64; o++) {
        an_f32x32_row(p.x32, 37, o, row);
        same &= memcmp(row, p.rows + (size_t)o * 37, sizeof row) == 0;
    }
    CHECK_MSG(same, "a row read out of the panels differs from the row put in");
    /* the layout kernels/f32x32.h states: x32[(p * cols + k) * 32 + j] = w[32p + j][k] */
    CHECK(p.x32[(1 * 37 + 5) * 32 + 7] == p.rows[(32 + 7) * 37 + 5]);
    drop(&p);
}

/* through the op table, every row count across the tile heights (12 rows with AVX-512, 3 without) and
 * column counts across the 256-column blocks, with and without a bias, in both modes */
static void test_forward_against_exact(void) {
    const an_ops *o = an_ops_cpu();
    static const int Ns[] = {1, 2, 5, 13, 30}, Cs[] = {1, 37, 300, 600}, OCs[] = {32, 96};
    double worst = 0;
    int mode_bits_differ = 0;
    for (size_t a = 0; a < sizeof OCs / sizeof *OCs; a++)
        for (size_t c = 0; c < sizeof Cs / sizeof *Cs; c++) {
            int OC = OCs[a], C = Cs[c];
            panel_weight p = make(OC, C, 10 + a * 7 + c);
            float *bias = randv((size_t)OC, 99);
            for (size_t b = 0; b < sizeof Ns / sizeof *Ns; b++) {
                int N = Ns[b];
                float *x = randv((size_t)N * C, 5 + b), *y = malloc(sizeof(float) * (size_t)N * OC),
                      *y2 = malloc(sizeof(float) * (size_t)N * OC);
                size_t wb = o->linear_work_bytes(o, &p.w, N);
                void *work = malloc(wb + 1);
                for (int with_bias = 0; with_bias < 2; with_bias++) {
                    const float *bb = with_bias ? bias : NULL;
                    o->linear_forward(o, y, x, &p.w, bb, N, work, wb, AN_LINEAR_EXACT);
                    worst = test_nan_max(worst, worst_vs_exact(y, x, p.rows, bb, N, C, OC, (size_t)C, 1, (size_t)C, 1));
                    o->linear_forward(o, y2, x, &p.w, bb, N, work, wb, AN_LINEAR_INFER);
                    mode_bits_differ += memcmp(y, y2, sizeof(float) * (size_t)N * OC) != 0;
                }
                free(x), free(y), free(y2), free(work);
            }
            free(bias);
            drop(&p);
        }
    CHECK_MSG(worst <= 1.0, "forward: %.3g of the bound off the exact product", worst);
    CHECK_MSG(mode_bits_differ == 0, "forward: %d cases differ between the exact and the inference mode", mode_bits_differ);
}

/* each output row the same bits computed alone, inside a batch of 29 (tiles of every height), and on
 * one thread or two */
static void test_forward_same_bits(void) {
    enum { N = 29, C = 300, OC = 256 }; /* 256 x 300 products: above the size that wakes the threads */
    panel_weight p = make(OC, C, 3);
    float *x = randv((size_t)N * C, 4), *bias = randv(OC, 6);
    float *batch = malloc(sizeof(float) * N * OC), *one = malloc(sizeof(float) * OC),
          *serial = malloc(sizeof(float) * N * OC);
    int saved = omp_get_max_threads();
    omp_set_num_threads(2);
    an_f32x32_forward(batch, x, p.x32, bias, N, C, OC);
    int differ = 0;
    for (int n = 0; n < N; n++) {
        an_f32x32_forward(one, x + (size_t)n * C, p.x32, bias, 1, C, OC);
        differ += memcmp(one, batch + (size_t)n * OC, sizeof(float) * OC) != 0;
    }
    omp_set_num_threads(1);
    an_f32x32_forward(serial, x, p.x32, bias, N, C, OC);
    omp_set_num_threads(saved);
    CHECK_MSG(differ == 0, "%d of %d rows differ alone and in the batch", differ, N);
    CHECK_MSG(memcmp(serial, batch, sizeof(float) * N * OC) == 0, "one thread and two give different bits");
    free(x), free(bias), free(batch), free(one), free(serial);
    drop(&p);
}

/* A prompt's product shares its panels out (each thread its own run, then others' leftovers, column
 * block by column block): with 3 column blocks, 13 panels and teams of 2 and 3 threads (3 is more
 * than this machine's cores: runs are left half done, so panels are taken from others), every run
 * gives the bits of one thread. A panel done twice or skipped, or a block begun before the previous
 * one ended, would change them. (Larger teams make clang's OpenMP runtime keep thread records that
 * LeakSanitizer reports at exit.) */
static void test_forward_shared_panels_any_team(void) {
    enum { N = 40, C = 700, OC = 13 * 32 };
    panel_weight p = make(OC, C, 12);
    float *x = randv((size_t)N * C, 13), *bias = randv(OC, 14);
    float *want = malloc(sizeof(float) * N * OC), *got = malloc(sizeof(float) * N * OC);
    int saved = omp_get_max_threads(), teams[] = {2, 3}, differ = 0;
    omp_set_num_threads(1);
    an_f32x32_forward(want, x, p.x32, bias, N, C, OC);
    for (int i = 0; i < 2; i++)
        for (int rep = 0; rep < 10; rep++) {
            omp_set_num_threads(teams[i]);
            memset(got, 0xff, sizeof(float) * N * OC); /* NaN: an output never written shows */
            an_f32x32_forward(got, x, p.x32, bias, N, C, OC);
            differ += memcmp(got, want, sizeof(float) * N * OC) != 0;
        }
    omp_set_num_threads(saved);
    CHECK_MSG(differ == 0, "%d of 20 shared runs differ from one thread", differ);
    free(x), free(bias), free(want), free(got);
    drop(&p);
}

/* dinp += dout @ W (onto a non-zero dinp) and the lookup, through the op table */
static void test_backward_input_and_lookup(void) {
    const an_ops *o = an_ops_cpu();
    enum { N = 7, C = 45, OC = 64 };
    panel_weight p = make(OC, C, 8);
    float *dout = randv((size_t)N * OC, 9), *dinp = randv((size_t)N * C, 11), *start = malloc(sizeof(float) * N * C);
    memcpy(start, dinp, sizeof(float) * N * C);
    size_t wb = o->linear_work_bytes(o, &p.w, N);
    void *work = malloc(wb + 1);
    o->linear_backward_input(o, dinp, dout, &p.w, N, work, wb);
    /* the start value stands in for the bias: dinp[n, c] = start + sum_o dout[n, o] W[o, c] */
    double worst = 0;
    for (int n = 0; n < N; n++) {
        float got[C];
        float ref_bias[C];
        for (int c = 0; c < C; c++) got[c] = dinp[(size_t)n * C + c], ref_bias[c] = start[(size_t)n * C + c];
        /* products dout[n, o] * W[o, c]: a = dout row n (stride 1 in o), b = column c of W (stride C in o) */
        double w1 = 0;
        for (int c = 0; c < C; c++) {
            double s = ref_bias[c], mag = fabs(ref_bias[c]);
            for (int k = 0; k < OC; k++) {
                double t = (double)dout[(size_t)n * OC + k] * (double)p.rows[(size_t)k * C + c];
                s += t, mag += fabs(t);
            }
            w1 = test_nan_max(w1, fabs(got[c] - s) / (1.01 * (OC + 1) * U32 * mag + 1e-30));
        }
        worst = test_nan_max(worst, w1);
    }
    CHECK_MSG(worst <= 1.0, "backward_input: %.3g of the bound off the exact product", worst);
    int32_t ids[] = {0, 63, 31, 32, 5};
    float *emb = malloc(sizeof(float) * 5 * C);
    o->embedding_lookup(o, emb, ids, &p.w, 5);
    int same = 1;
    for (int i = 0; i < 5; i++) same &= memcmp(emb + (size_t)i * C, p.rows + (size_t)ids[i] * C, sizeof(float) * C) == 0;
    CHECK_MSG(same, "embedding lookup: rows differ from the table's");
    free(dout), free(dinp), free(start), free(work), free(emb);
    drop(&p);
}

/* The qwen2 fixture (float32 GGUF; dim 32, 2 x 8 key/value rows, ffn 48, vocabulary 64): kept, the
 * matrices of whole 32-row panels become AN_F32_X32 and the others stay float32; the logits of every
 * position against the same file read as plain float32, within the bound of a sum of dim or ffn
 * products (1e-5 of the largest |logit| covers 49 terms a layer over 2 layers by far). */
static void test_model_keeps_panels(void) {
    an_error e;
    const char *path = "tests/ref/gguf_model/qwen2.gguf";
    an_model *kept = an_model_load(path, an_ops_cpu(), &e);
    CHECK_MSG(kept, "%s", e.msg);
    an_model *plain = an_model_load_gguf(path, an_ops_cpu(), AN_GGUF_DEQUANTIZE, &e);
    CHECK_MSG(plain, "%s", e.msg);
    if (!kept || !plain) {
        an_model_free(kept), an_model_free(plain);
        return;
    }
    const an_layer *L = &kept->layers[0];
    CHECK(L->wq->dtype == AN_F32_X32 && L->w_down->dtype == AN_F32_X32 && kept->tok_emb->dtype == AN_F32_X32);
    CHECK(L->wk->dtype == AN_F32 && L->w_up->dtype == AN_F32); /* 16 and 48 rows */
    CHECK(plain->layers[0].wq->dtype == AN_F32);
    enum { T = 9 };
    int32_t ids[T] = {1, 5, 9, 20, 33, 2, 63, 7, 40};
    int V = kept->cfg.vocab_size;
    float *a = malloc(sizeof(float) * T * V), *b = malloc(sizeof(float) * T * V);
    an_batch batch = {ids, NULL, NULL, NULL, 1, T};
    int ok = an_model_plan(kept, 1, T, &e) == 0 && an_model_forward(kept, &batch, 0, 1.0f, NULL, a, &e) == 0 &&
             an_model_plan(plain, 1, T, &e) == 0 && an_model_forward(plain, &batch, 0, 1.0f, NULL, b, &e) == 0;
    CHECK_MSG(ok, "%s", e.msg);
    if (ok) {
        double big = 0, diff = 0;
        for (int i = 0; i < T * V; i++) big = test_nan_max(big, fabs(b[i])), diff = test_nan_max(diff, fabs(a[i] - b[i]));
        CHECK_MSG(diff <= 1e-5 * big, "kept panels: logits %.3g off plain float32 (largest |logit| %.3g)", diff, big);
    }
    free(a), free(b);
    an_model_free(kept), an_model_free(plain);
}

int main(void) {
    RUN(test_rows_round_trip);
    RUN(test_forward_against_exact);
    RUN(test_forward_same_bits);
    RUN(test_forward_shared_panels_any_team);
    RUN(test_backward_input_and_lookup);
    RUN(test_model_keeps_panels);
    return test_finish();
}
