/* Ops of every backend present against what PyTorch computes: tests/ref/ops_torch.txt, made by
 * tests/ref/make_ops_fixtures.py (AdamW steps, RoPE at long positions, GELU, SiLU, cross-entropy). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "tests/op_harness.h"
#include "tests/test.h"
#include "tests/txt_fixture.h"

static const an_ops *g_ops; /* the backend under test */

static float *dev_f(const float *host, size_t n) { return oh_upload(g_ops, host, n * sizeof(float)); }
static int32_t *dev_i(const int32_t *host, size_t n) { return oh_upload(g_ops, host, n * sizeof(int32_t)); }
static float *host_f(const float *dev, size_t n) { return oh_download(g_ops, dev, n * sizeof(float)); }
static void dfree(void *p) { g_ops->free(g_ops, p); }

/* ---------- against PyTorch (tests/ref/ops_torch.txt, made by tests/ref/make_ops_fixtures.py) ---------- */

#define FIXTURE "tests/ref/ops_torch.txt"

/* the values of the record `name` (malloc'd, count in *n); NULL if absent */
static double *fixture(const char *name, size_t *n) { return txt_fixture(FIXTURE, name, n); }

static float *to_float(const double *x, size_t n) {
    float *f = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) f[i] = (float)x[i];
    return f;
}

static void test_adamw_matches_torch(void) {
    size_t n = 0, k = 0;
    double *hp = fixture("adamw_hparams", &k), *p0 = fixture("adamw_p0", &n);
    CHECK_MSG(hp && p0 && k == 5, "%s: adamw records missing", FIXTURE);
    if (!hp || !p0) return;
    float *d_p = dev_f(NULL, n), *d_m = dev_f(NULL, n), *d_v = dev_f(NULL, n), *d_g = dev_f(NULL, n);
    float *pf = to_float(p0, n);
    g_ops->upload(g_ops, d_p, pf, n * sizeof(float));
    for (int step = 1; step <= 5; step++) {
        char name[32];
        snprintf(name, sizeof name, "adamw_g%d", step);
        size_t ng = 0;
        double *g = fixture(name, &ng);
        CHECK(g && ng == n);
        if (!g) return;
        float *gf = to_float(g, n);
        g_ops->upload(g_ops, d_g, gf, n * sizeof(float));
        oh_adamw_one(g_ops, d_p, d_g, 1.0f, d_m, d_v, n, (float)hp[0], (float)hp[1], (float)hp[2], (float)hp[3],
                            (float)hp[4], step);
        free(g), free(gf);
    }
    const char *names[3] = {"adamw_p5", "adamw_m5", "adamw_v5"};
    float *devs[3] = {d_p, d_m, d_v};
    for (int r = 0; r < 3; r++) {
        size_t nr = 0;
        double *ref = fixture(names[r], &nr);
        float *got = host_f(devs[r], n);
        /* the same float32 operations in the same order as torch: agreement to a few ulp, so 1e-6
         * relative per element (gradients span 1e-6..1, so m and v span many magnitudes) */
        double worst = 0;
        for (size_t i = 0; ref && i < n; i++) {
            double e = fabs(got[i] - ref[i]) / test_nan_max(fabs(ref[i]), 1e-30);
            worst = test_nan_max(worst, e);
        }
        CHECK_MSG(ref && nr == n && worst < 1e-6, "%s vs torch: %.3g", names[r], worst);
        free(ref), free(got);
    }
    free(hp), free(p0), free(pf);
    dfree(d_p), dfree(d_m), dfree(d_v), dfree(d_g);
}

static void check_rope_vs_torch(const char *tag, float theta, int interleaved) {
    char name[64];
    size_t np = 0, nx = 0, no = 0;
    snprintf(name, sizeof name, "%s_pos", tag);
    double *pos = fixture(name, &np);
    snprintf(name, sizeof name, "%s_x", tag);
    double *x = fixture(name, &nx);
    snprintf(name, sizeof name, "%s_out", tag);
    double *out = fixture(name, &no);
    CHECK_MSG(pos && x && out && nx == no && nx == np * 2 * 64, "%s: %s records missing", FIXTURE, tag);
    if (!pos || !x || !out) return;
    int N = (int)np, nh = 2, hd = 64;
    int32_t *p = malloc(np * sizeof(int32_t));
    for (size_t i = 0; i < np; i++) p[i] = (int32_t)pos[i];
    float *xf = to_float(x, nx), *d_x = dev_f(xf, nx);
    int32_t *d_pos = dev_i(p, np);
    /* a table of the first 2048 positions: the rest are computed on the spot, so both paths meet torch */
    enum { TABLE_POS = 2048 };
    float *d_cs = dev_f(NULL, (size_t)TABLE_POS * hd);
    g_ops->rope_table(g_ops, d_cs, TABLE_POS, hd, theta);
    an_rope rope = {.theta = theta, .interleaved = interleaved, .cos_sin = d_cs, .n_pos = TABLE_POS};
    g_ops->rope_forward(g_ops, d_x, d_pos, N, nh, hd, rope);
    float *got = host_f(d_x, nx);
    /* positions up to 4095: PyTorch rounds the angle to float32 and so do we, then cos/sin agree to
     * ~1 ulp; the products and sum add ~2 ulp of values ~3 */
    double e = 0;
    for (size_t i = 0; i < nx; i++) e = test_nan_max(e, fabs(got[i] - out[i]));
    CHECK_MSG(e < 2e-6, "%s forward vs torch: max abs err %.3g", tag, e);
    free(pos), free(x), free(out), free(p), free(xf), free(got);
    dfree(d_x), dfree(d_pos), dfree(d_cs);
}

static void test_rope_matches_torch_at_long_positions(void) {
    check_rope_vs_torch("rope_hf_10000", 10000.0f, 0);
    check_rope_vs_torch("rope_hf_500000", 500000.0f, 0);
    check_rope_vs_torch("rope_meta_10000", 10000.0f, 1);
}

static void test_gelu_silu_ce_match_torch(void) {
    size_t n = 0, m = 0, s = 0;
    double *x = fixture("gelu_x", &n), *g = fixture("gelu_out", &m), *si = fixture("silu_out", &s);
    CHECK_MSG(x && g && si && n == m && n == s, "%s: gelu records missing", FIXTURE);
    if (!x || !g || !si) return;
    float *xf = to_float(x, n), *d_x = dev_f(xf, n), *d_o = dev_f(NULL, n), *ones = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) ones[i] = 1.0f;
    float *d_one = dev_f(ones, n);
    g_ops->gelu_forward(g_ops, d_o, d_x, n);
    float *got = host_f(d_o, n);
    /* |x| <= 10: a few ulp of the value; torch's tanh form flushes the far negative tail to -0 where
     * ours gives ~1e-37, hence the absolute part */
    double e = 0;
    for (size_t i = 0; i < n; i++) e = test_nan_max(e, fabs(got[i] - g[i]) / test_nan_max(fabs(g[i]), 1.0));
    CHECK_MSG(e < 1e-6, "gelu vs torch %.3g", e);
    free(got);
    g_ops->swiglu_forward(g_ops, d_o, d_x, d_one, n); /* silu(x) * 1 */
    got = host_f(d_o, n);
    e = 0;
    for (size_t i = 0; i < n; i++) e = test_nan_max(e, fabs(got[i] - si[i]) / test_nan_max(fabs(si[i]), 1e-3));
    CHECK_MSG(e < 1e-6, "silu vs torch %.3g", e);
    free(got), free(x), free(g), free(si), free(xf), free(ones);
    dfree(d_x), dfree(d_o), dfree(d_one);

    size_t nl = 0, nt = 0, nv = 0;
    double *lg = fixture("ce_logits", &nl), *tg = fixture("ce_targets", &nt), *ls = fixture("ce_losses", &nv);
    CHECK_MSG(lg && tg && ls && nt == nv && nl % nt == 0, "%s: ce records missing", FIXTURE);
    if (!lg || !tg || !ls) return;
    int N = (int)nt, V = (int)(nl / nt);
    int32_t *t = malloc(nt * sizeof(int32_t));
    for (size_t i = 0; i < nt; i++) t[i] = (int32_t)tg[i];
    float *lf = to_float(lg, nl), *d_l = dev_f(lf, nl), *d_loss = dev_f(NULL, N), *d_lse = dev_f(NULL, N);
    int32_t *d_t = dev_i(t, nt);
    g_ops->cross_entropy_forward(g_ops, d_loss, d_lse, d_l, d_t, N, V);
    float *loss = host_f(d_loss, N);
    e = 0;
    for (int i = 0; i < N; i++) e = test_nan_max(e, fabs(loss[i] - ls[i]) / test_nan_max(fabs(ls[i]), 1.0));
    CHECK_MSG(e < 1e-6, "cross-entropy vs torch %.3g", e); /* losses ~10: float rounding of lse */
    free(lg), free(tg), free(ls), free(t), free(lf), free(loss);
    dfree(d_l), dfree(d_loss), dfree(d_lse), dfree(d_t);
}

int main(void) {
    /* every backend present; a CUDA build adds its table here */
    const an_ops *backends[] = {an_ops_cpu()};
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++) {
        g_ops = backends[i];
        fprintf(stderr, "backend: %s\n", g_ops->name);
        RUN(test_adamw_matches_torch);
        RUN(test_rope_matches_torch_at_long_positions);
        RUN(test_gelu_silu_ce_match_torch);
    }
    return test_finish();
}
