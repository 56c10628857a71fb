/* The optimizer of train/optim.h, the one `autoneg train`, an_train_step and the LoRA trainer all step
 * through, against PyTorch: tests/ref/optim_torch.txt, made by tests/ref/make_optim_fixture.py with
 * torch.optim.AdamW over two parameter groups (matrices with weight decay 0.1, vectors without) and
 * torch.nn.utils.clip_grad_norm_(1.0) before each of 6 steps, 4 of which clip. Here the same tensors
 * are an_params of 2 and 1 dimensions in one gradient buffer with zero gaps, as a model's or an
 * adapter's are, and go through the calls the trainer makes each step: an_optim_zero_grad, the
 * gradients written (backward's part), an_optim_grad_norm, an_optim_apply. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "tests/op_harness.h"
#include "tests/test.h"
#include "tests/txt_fixture.h"
#include "train/optim.h"

#define FIXTURE "tests/ref/optim_torch.txt"

enum { NT = 4, GAP = 16 };
static const char *const names[NT] = {"w", "b", "e", "n"}; /* [4, 6], [6], [5, 3], [7] */

static double *rec(const char *what, const char *name, size_t *n) {
    char key[64];
    snprintf(key, sizeof key, name ? "%s_%s" : "%s", what, name);
    size_t got = 0;
    double *v = txt_fixture(FIXTURE, key, &got);
    CHECK_MSG(v != NULL, "%s: record %s missing", FIXTURE, key);
    if (n) *n = got;
    return v;
}

/* Elements of the float32 result outside |got - ref| <= rtol |ref| + atol (NaN counts as outside);
 * *worst receives the largest |got - ref| / (|ref| + atol / rtol) among the finite ones, for the log. */
static size_t outside(const float *got, const double *ref, size_t n, double rtol, double atol, double *worst) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= rtol * fabs(ref[i]) + atol)) bad++;
        double e = d / (fabs(ref[i]) + atol / rtol);
        if (e > *worst) *worst = e;
    }
    return bad;
}

static void upload_record(const an_ops *ops, float *dev, const double *v, size_t n) {
    float *f = malloc(n * sizeof *f);
    for (size_t i = 0; i < n; i++) f[i] = (float)v[i]; /* the fixture's values are float32 numbers */
    ops->upload(ops, dev, f, n * sizeof *f);
    free(f);
}

static void test_adamw_two_groups_with_clipping_matches_torch(void) {
    const an_ops *ops = an_ops_cpu();
    an_error err;
    size_t nh = 0;
    double *hp = rec("hparams", NULL, &nh);
    if (!hp || nh != 7) {
        free(hp);
        CHECK_MSG(0, "%s: hparams", FIXTURE);
        return;
    }
    int steps = (int)hp[6];
    an_param params[NT];
    an_param *list[NT];
    size_t off[NT], total = 0;
    memset(params, 0, sizeof params);
    for (int k = 0; k < NT; k++) {
        size_t nd = 0;
        double *shape = rec("shape", names[k], &nd);
        if (!shape || nd < 1 || nd > 2) {
            free(shape), free(hp);
            return;
        }
        an_param *p = &params[k];
        snprintf(p->name, sizeof p->name, "%s", names[k]);
        p->ndim = (int)nd;
        p->numel = 1;
        for (size_t d = 0; d < nd; d++) p->shape[d] = (int64_t)shape[d], p->numel *= (size_t)shape[d];
        p->trainable = 1;
        off[k] = total;
        total += (p->numel + GAP - 1) / GAP * GAP; /* aligned slots with zero gaps, as model/ lays them out */
        list[k] = p;
        free(shape);
    }
    float *pmem = ops->alloc(ops, total * sizeof(float)), *gmem = ops->alloc(ops, total * sizeof(float));
    for (int k = 0; k < NT; k++) {
        params[k].data = pmem + off[k];
        params[k].grad = gmem + off[k];
        size_t n = 0;
        double *p0 = rec("p0", names[k], &n);
        CHECK(p0 && n == params[k].numel);
        if (p0 && n == params[k].numel) upload_record(ops, params[k].data, p0, n);
        free(p0);
    }
    an_optim opt;
    int rc = an_optim_init_params(&opt, ops, list, NT, gmem, total, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc) {
        ops->free(ops, pmem), ops->free(ops, gmem), free(hp);
        return;
    }
    an_adamw_config c = {(float)hp[0], (float)hp[1], (float)hp[2], (float)hp[3], (float)hp[4], (float)hp[5]};
    double *norms = rec("norms", NULL, NULL);
    float *host = malloc(total * sizeof *host);
    /* Tolerances. The C side runs AdamW in float32, the reference in float64 on the same float32
     * inputs. Per step a weight takes ~10 roundings of 2^-24 (clip factor, g * factor, the lerp of m,
     * v, sqrt, the division, the bias-corrected step, the decay product, the subtraction), so after
     * 6 steps its error is a few 1e-7 of |w| plus as much of the updates (lr 1e-2): 2e-6 |w| + 1e-7.
     * m and v carry the rounding of the gradients they average (4 roundings a step): 2e-6 relative,
     * plus 1e-6 of the tensor's largest |m| (|v|) for entries that cancel to near zero (an m of 1e-4
     * summed from gradient terms of 1e-2 with changing signs keeps their absolute rounding). A bug is ~1e-3: decaying a vector moves it by lr * wd = 1e-3 of
     * itself per step; a bias correction one step off changes the first update by 1.9x. */
    const double w_rtol = 2e-6, w_atol = 1e-7, mv_rtol = 2e-6;
    double worst_w = 0, worst_m = 0, worst_v = 0, worst_norm = 0;
    for (int s = 1; s <= steps && norms; s++) {
        an_optim_zero_grad(&opt);
        for (int k = 0; k < NT; k++) {
            char what[16];
            snprintf(what, sizeof what, "g%d", s);
            size_t n = 0;
            double *g = rec(what, names[k], &n);
            if (g && n == params[k].numel) upload_record(ops, params[k].grad, g, n);
            free(g);
        }
        double norm = an_optim_grad_norm(&opt);
        /* a double sum of the squares of float32 numbers against torch's float64: rounding only */
        double ne = fabs(norm - norms[s - 1]) / norms[s - 1];
        CHECK_MSG(ne <= 1e-12, "step %d: norm %.17g, torch %.17g", s, norm, norms[s - 1]);
        if (ne > worst_norm) worst_norm = ne;
        an_optim_apply(&opt, &c, norm);
        for (int k = 0; k < NT; k++) {
            char what[16];
            snprintf(what, sizeof what, "p%d", s);
            size_t n = 0;
            double *ref = rec(what, names[k], &n);
            ops->download(ops, host, params[k].data, params[k].numel * sizeof(float));
            double worst = 0;
            size_t bad = ref && n == params[k].numel ? outside(host, ref, n, w_rtol, w_atol, &worst) : n + 1;
            CHECK_MSG(bad == 0, "step %d: %zu of %zu values of %s (%d-D) differ from torch (worst %.3g)", s, bad,
                      params[k].numel, names[k], params[k].ndim, worst);
            worst_w = fmax(worst_w, worst);
            free(ref);
        }
    }
    CHECK(opt.step == steps);
    for (int k = 0; k < NT; k++) {
        float *dm, *dv;
        an_optim_moments(&opt, k, &dm, &dv);
        const char *what[2] = {"m", "v"};
        float *dev[2] = {dm, dv};
        double *worst[2] = {&worst_m, &worst_v};
        for (int j = 0; j < 2; j++) {
            size_t n = 0;
            double *ref = rec(what[j], names[k], &n), top = 0;
            for (size_t i = 0; ref && i < n; i++) top = fmax(top, fabs(ref[i])); /* the reference has no NaN */
            ops->download(ops, host, dev[j], params[k].numel * sizeof(float));
            double w = 0;
            size_t bad = ref && n == params[k].numel ? outside(host, ref, n, mv_rtol, 1e-6 * top, &w) : n + 1;
            CHECK_MSG(bad == 0, "%s of %s: %zu of %zu values differ from torch (worst %.3g)", what[j], names[k], bad,
                      params[k].numel, w);
            *worst[j] = fmax(*worst[j], w);
            free(ref);
        }
    }
    /* the gaps between the tensors stay zero: the next norm is still every tensor's */
    ops->download(ops, host, gmem, total * sizeof(float));
    size_t dirty = 0;
    for (int k = 0; k < NT; k++)
        for (size_t i = off[k] + params[k].numel; i < (k + 1 < NT ? off[k + 1] : total); i++) dirty += host[i] != 0;
    CHECK(dirty == 0);
    printf("  %d steps vs torch: norm rel err %.2g, weights %.2g, m %.2g, v %.2g (of |ref| + floor)\n", steps,
           worst_norm, worst_w, worst_m, worst_v);
    free(host), free(norms), free(hp);
    an_optim_free(&opt);
    ops->free(ops, pmem), ops->free(ops, gmem);
}

/* The rule the header states: matrices decay, vectors do not. */
static void test_decay_rule(void) {
    CHECK(an_optim_decays(2) == 1);
    CHECK(an_optim_decays(1) == 0);
    an_param bias = {.name = "model.layers.0.self_attn.q_proj.bias", .ndim = 1, .numel = 4};
    an_param lora_a = {.name = "model.layers.0.self_attn.q_proj.lora_A.weight", .ndim = 2, .numel = 8};
    CHECK(an_optim_tensor_of(&bias).decay == 0);
    CHECK(an_optim_tensor_of(&lora_a).decay == 1);
}

/* A tensor whose gradient is not in the optimizer's gradient buffer is refused, by name: its moments
 * would fall outside the moment buffer. */
static void test_gradient_outside_buffer_refused(void) {
    float data[8], grads[24]; /* the optimizer's buffer is grads[0 .. 8) */
    an_param a = {.name = "a", .ndim = 2, .numel = 4, .data = data, .grad = grads};
    an_param b = {.name = "b.weight", .ndim = 1, .numel = 4, .data = data + 4, .grad = grads + 16};
    an_param c = {.name = "c.weight", .ndim = 1, .numel = 6, .data = data + 4, .grad = grads + 4};
    an_param *ab[2] = {&a, &b}, *ac[2] = {&a, &c};
    an_optim opt;
    an_error err;
    CHECK(an_optim_init_params(&opt, an_ops_cpu(), ab, 2, grads, 8, &err) != 0);
    CHECK_CONTAINS(err.msg, "b.weight");
    CHECK(an_optim_init_params(&opt, an_ops_cpu(), ac, 2, grads, 8, &err) != 0); /* runs past the end */
    CHECK_CONTAINS(err.msg, "c.weight");
}
/* A step is one call of adamw_update (a device's one launch) over a list of parts in which tensors
 * that follow one another in both buffers with the same decay are one part, and the weights come out
 * bit for bit as one call per tensor gives them: A and B follow each other (decay), C does not decay,
 * D's weights are not right after C's, E follows D. One call of three parts a step. */
static long g_adamw_calls;
static int g_adamw_parts;
static void counted_adamw(const an_ops *o, const an_adamw_part *parts, int n_parts, size_t span, const float *grad,
                          float grad_scale, float *m, float *v, float lr, float beta1, float beta2, float eps,
                          float weight_decay, int step) {
    g_adamw_calls++;
    g_adamw_parts = n_parts;
    an_ops_cpu()->adamw_update(o, parts, n_parts, span, grad, grad_scale, m, v, lr, beta1, beta2, eps, weight_decay,
                               step);
}

static void test_adjacent_tensors_update_in_one_call(void) {
    enum { NP = 40, NG = 36, NTS = 5 };
    static const int poff[NTS] = {0, 8, 16, 24, 32}, goff[NTS] = {0, 8, 16, 20, 28}, numel[NTS] = {8, 8, 4, 8, 8};
    static const int decay[NTS] = {1, 1, 0, 0, 0};
    float w[NP], ref[NP], g[NG], m[NG], v[NG];
    for (int i = 0; i < NP; i++) w[i] = ref[i] = 0.05f * (float)(i % 11) - 0.2f;
    for (int i = 0; i < NG; i++) g[i] = 0.03f * (float)(i % 7) - 0.1f, m[i] = v[i] = 0.0f;
    an_ops counting = *an_ops_cpu();
    counting.adamw_update = counted_adamw;
    an_optim_tensor t[NTS];
    for (int k = 0; k < NTS; k++) t[k] = (an_optim_tensor){w + poff[k], g + goff[k], (size_t)numel[k], decay[k]};
    an_optim o;
    an_error err;
    CHECK_MSG(an_optim_init(&o, &counting, t, NTS, g, NG, &err) == 0, "%s", err.msg);
    an_adamw_config c = {1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, 0.0f};
    const an_ops *cpu = an_ops_cpu();
    for (int step = 1; step <= 2; step++) {
        g_adamw_calls = 0;
        an_optim_apply(&o, &c, 0.0);
        CHECK_MSG(g_adamw_calls == 1 && g_adamw_parts == 3, "step %d: %ld calls of adamw_update (%d parts), want 1 (3)",
                  step, g_adamw_calls, g_adamw_parts);
        for (int k = 0; k < NTS; k++) /* the reference: one call per tensor, its own moments */
            oh_adamw_one(cpu, ref + poff[k], g + goff[k], 1.0f, m + goff[k], v + goff[k], (size_t)numel[k], c.lr, c.beta1,
                         c.beta2, c.eps, decay[k] ? c.weight_decay : 0.0f, step);
    }
    CHECK_MSG(memcmp(w, ref, sizeof w) == 0, "the weights differ from one update per tensor");
    an_optim_free(&o);
}

int main(void) {
    RUN(test_adamw_two_groups_with_clipping_matches_torch);
    RUN(test_decay_rule);
    RUN(test_gradient_outside_buffer_refused);
    RUN(test_adjacent_tensors_update_in_one_call);
    return test_finish();
}
