/* The sampler on distributions worked out by hand (softmax of small logit vectors, to 6 digits with a
 * calculator), seed determinism, and draw frequencies.
 *
 * logits [1, 2, 3, 0]: exp = 2.718282, 7.389056, 20.085537, 1 (sum 31.192875), so
 * p = 0.087144, 0.236883, 0.643914, 0.032059. Tolerance 1e-6: probabilities are computed in double
 * from float logits that are exact small integers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "infer/sampler.h"
#include "tests/test.h"

static const float L4[4] = {1, 2, 3, 0};

static an_sampler_params params(float temp, int top_k, float top_p, float min_p, float rep) {
    return (an_sampler_params){temp, top_k, top_p, min_p, rep};
}

static void check_dist(an_sampler *s, an_sampler_params p, const float *logits, const int32_t *hist, size_t nh,
                       const double *want, int kept) {
    double got[4];
    an_error e;
    CHECK_MSG(an_sampler_check(&p, &e) == 0, "%s", e.msg);
    int n = an_sampler_distribution(s, &p, logits, hist, nh, got);
    CHECK_MSG(n == kept, "kept %d tokens, expected %d", n, kept);
    for (int i = 0; i < 4; i++) CHECK_NEAR(got[i], want[i], 1e-6);
}

static void test_filters_on_hand_computed_distributions(void) {
    an_error e;
    an_sampler *s = an_sampler_create(4, &e);
    /* no filter: the softmax */
    check_dist(s, params(1, 0, 1, 0, 1), L4, NULL, 0, (double[]){0.087144, 0.236883, 0.643914, 0.032059}, 4);
    /* top-k 2: ids 2 and 1, renormalised: e^3/(e^3+e^2) = 0.731059 */
    check_dist(s, params(1, 2, 1, 0, 1), L4, NULL, 0, (double[]){0, 0.268941, 0.731059, 0}, 2);
    /* top-p 0.7: 0.643914 < 0.7, so id 1 is needed too (mass 0.880797 >= 0.7) */
    check_dist(s, params(1, 0, 0.7f, 0, 1), L4, NULL, 0, (double[]){0, 0.268941, 0.731059, 0}, 2);
    /* top-p 0.6: the first token alone reaches it */
    check_dist(s, params(1, 0, 0.6f, 0, 1), L4, NULL, 0, (double[]){0, 0, 1, 0}, 1);
    /* top-p 0.9: three tokens (0.880797 < 0.9): e^(1,2,3) / 30.192875 */
    check_dist(s, params(1, 0, 0.9f, 0, 1), L4, NULL, 0, (double[]){0.090031, 0.244728, 0.665241, 0}, 3);
    /* min-p 0.2: threshold 0.128783 keeps ids 2 and 1; min-p 0.1: 0.064391 keeps id 0 too */
    check_dist(s, params(1, 0, 1, 0.2f, 1), L4, NULL, 0, (double[]){0, 0.268941, 0.731059, 0}, 2);
    check_dist(s, params(1, 0, 1, 0.1f, 1), L4, NULL, 0, (double[]){0.090031, 0.244728, 0.665241, 0}, 3);
    /* temperature 2: softmax of [0.5, 1, 1.5, 0] */
    check_dist(s, params(2, 0, 1, 0, 1), L4, NULL, 0, (double[]){0.167405, 0.276004, 0.455054, 0.101536}, 4);
    /* repetition penalty 2 on ids 2 and 3 (id 2 twice: penalised once): [1, 2, 3/2, -1*2] */
    const float L4n[4] = {1, 2, 3, -1};
    const int32_t hist[3] = {2, 3, 2};
    check_dist(s, params(1, 0, 1, 0, 2), L4n, hist, 3, (double[]){0.184611, 0.501825, 0.304372, 0.009191}, 4);
    /* greedy sees the penalty too: argmax moves from id 2 to id 1 */
    check_dist(s, params(0, 0, 1, 0, 2), L4n, hist, 3, (double[]){0, 1, 0, 0}, 1);
    /* temperature 0 = argmax, lowest id on a tie, whatever the filters */
    const float tie[4] = {3, 1, 3, 2};
    check_dist(s, params(0, 0, 1, 0, 1), tie, NULL, 0, (double[]){1, 0, 0, 0}, 1);
    an_rng r;
    an_rng_seed(&r, 1);
    CHECK(an_sampler_sample(s, &(an_sampler_params){0, 3, 0.5f, 0.1f, 1}, tie, NULL, 0, &r) == 0);
    an_sampler_free(s);
}

/* Logits that are not numbers. All NaN (a broken model) or scaled past the float range (--temperature
 * 1e-45 makes 3 / 1e-45 = inf, and inf - inf = NaN in the softmax) leave no token to draw: the sampler
 * says so with -1 and an empty distribution, under every filter. Before, min-p kept 0 candidates and
 * the draw read cand[-1] (a heap overflow under make asan); without filters it returned a garbage id.
 * A NaN among numbers is a token that is never drawn: the rest is the softmax of the numbers. */
static void test_no_finite_logit(void) {
    an_error e;
    an_sampler *s = an_sampler_create(4, &e);
    const float nan4[4] = {NAN, NAN, NAN, NAN};
    const an_sampler_params ps[] = {params(1, 0, 1, 0.1f, 1), params(1, 0, 1, 0, 1), params(1, 2, 0.9f, 0, 1),
                                    params(0, 0, 1, 0, 1), params(0.7f, 0, 1, 0, 1.3f)};
    for (size_t k = 0; k < sizeof ps / sizeof *ps; k++) {
        an_rng r;
        an_rng_seed(&r, 3);
        int32_t id = an_sampler_sample(s, &ps[k], nan4, NULL, 0, &r);
        CHECK_MSG(id == -1, "params %zu: all-NaN logits drew id %d", k, id);
        double got[4] = {9, 9, 9, 9};
        int n = an_sampler_distribution(s, &ps[k], nan4, NULL, 0, got);
        CHECK_MSG(n == 0, "params %zu: %d tokens kept", k, n);
        double worst = 0;
        for (int i = 0; i < 4; i++) worst = test_nan_max(worst, fabs(got[i]));
        CHECK_MSG(worst <= 0, "params %zu: probability %g left", k, worst);
    }
    /* temperature 1e-45 (a subnormal float > 0, so --temperature accepts it) on ordinary logits */
    an_sampler_params tiny = params(1e-45f, 0, 1, 0, 1);
    CHECK(an_sampler_check(&tiny, &e) == 0);
    an_rng r;
    an_rng_seed(&r, 4);
    CHECK(an_sampler_sample(s, &tiny, L4, NULL, 0, &r) == -1);
    tiny.min_p = 0.05f;
    CHECK(an_sampler_sample(s, &tiny, L4, NULL, 0, &r) == -1);
    /* one NaN among numbers: softmax of [1, 2] on ids 1 and 2; greedy takes id 2. Without filters all
     * 4 count as kept, the NaN ones with probability 0 (as a -inf logit always was) */
    const float part[4] = {NAN, 1, 2, NAN};
    check_dist(s, params(1, 0, 1, 0, 1), part, NULL, 0, (double[]){0, 0.268941, 0.731059, 0}, 4);
    check_dist(s, params(1, 0, 1, 0.1f, 1), part, NULL, 0, (double[]){0, 0.268941, 0.731059, 0}, 2);
    check_dist(s, params(0, 0, 1, 0, 1), part, NULL, 0, (double[]){0, 0, 1, 0}, 1);
    an_sampler_free(s);
}

/* Draws follow the distribution: 20000 draws with top-k 2 give id 2 with frequency 0.731059 within
 * 5 standard deviations (sqrt(p(1-p)/n) = 0.0031), and never a filtered id. */
static void test_draw_frequencies(void) {
    an_error e;
    an_sampler *s = an_sampler_create(4, &e);
    an_rng r;
    an_rng_seed(&r, 99);
    int count[4] = {0};
    an_sampler_params p = params(1, 2, 1, 0, 1);
    for (int i = 0; i < 20000; i++) count[an_sampler_sample(s, &p, L4, NULL, 0, &r)]++;
    CHECK(count[0] == 0 && count[3] == 0);
    CHECK_NEAR(count[2] / 20000.0, 0.731059, 5 * 0.0031);
    an_sampler_free(s);
}

/* The same seed gives the same tokens; another seed other tokens. */
static void test_seed_determinism(void) {
    an_error e;
    int V = 50;
    an_sampler *s = an_sampler_create(V, &e);
    float logits[50];
    for (int i = 0; i < V; i++) logits[i] = (float)((i * 37) % 11) * 0.3f;
    an_sampler_params p = params(1.3f, 0, 0.95f, 0.01f, 1.1f);
    int32_t a[64], b[64], c[64];
    for (int run = 0; run < 3; run++) {
        an_rng r;
        an_rng_seed(&r, run == 2 ? 6 : 5);
        int32_t *out = run == 0 ? a : run == 1 ? b : c;
        for (int i = 0; i < 64; i++) out[i] = an_sampler_sample(s, &p, logits, out, (size_t)i, &r);
    }
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);
    an_sampler_free(s);
}

static void test_bad_values(void) {
    an_error e;
    an_sampler_params p = params(1, 0, 1, 0, 1);
    CHECK(an_sampler_check(&p, &e) == 0);
    p.top_p = 0;
    CHECK(an_sampler_check(&p, &e) == -1);
    CHECK_CONTAINS(e.msg, "--top-p 0: must be in (0, 1]");
    p.top_p = 1.01f;
    CHECK(an_sampler_check(&p, &e) == -1);
    p = params(-0.1f, 0, 1, 0, 1);
    CHECK(an_sampler_check(&p, &e) == -1);
    CHECK_CONTAINS(e.msg, "--temperature");
    p = params(NAN, 0, 1, 0, 1);
    CHECK(an_sampler_check(&p, &e) == -1);
    p = params(1, -1, 1, 0, 1);
    CHECK(an_sampler_check(&p, &e) == -1);
    CHECK_CONTAINS(e.msg, "--top-k -1");
    p = params(1, 0, 1, 1.5f, 1);
    CHECK(an_sampler_check(&p, &e) == -1);
    CHECK_CONTAINS(e.msg, "--min-p");
    p = params(1, 0, 1, 0, 0);
    CHECK(an_sampler_check(&p, &e) == -1);
    CHECK_CONTAINS(e.msg, "--repeat-penalty 0");
}

int main(void) {
    RUN(test_filters_on_hand_computed_distributions);
    RUN(test_no_finite_logit);
    RUN(test_draw_frequencies);
    RUN(test_seed_determinism);
    RUN(test_bad_values);
    return test_finish();
}
