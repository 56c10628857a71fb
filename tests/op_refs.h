#ifndef AN_OP_REFS_H
#define AN_OP_REFS_H
/* Double-precision references of the ops, shared by tests/test_ops.c (the detailed op tests) and
 * tests/test_backend_ops.c (every op on every backend). Each forward has the oh_forward_fn shape
 * (tests/op_harness.h): it reads its inputs through a context, so oh_fd_check can perturb them and
 * take central differences for the backward. */
#include <stddef.h>
#include <stdint.h>

/* out[N, OC] = inp[N, C] w[OC, C]^T + bias (bias may be NULL) */
typedef struct oh_mm_ctx {
    const double *inp, *w, *bias;
    int N, C, OC;
} oh_mm_ctx;
void oh_ref_matmul(void *ctx, double *out);

/* out[N, C] = table[ids[n], :] */
typedef struct oh_emb_ctx {
    const int32_t *ids;
    const double *table;
    int N, C;
} oh_emb_ctx;
void oh_ref_embedding(void *ctx, double *out);

/* layernorm (rms 0: mean removed, bias b) or rmsnorm (rms 1, b NULL) over the last dim C */
typedef struct oh_norm_ctx {
    const double *inp, *w, *b;
    int N, C, rms;
    double eps;
} oh_norm_ctx;
void oh_ref_norm(void *ctx, double *out);

/* rope of x[N, nh, hd] at positions pos[N]: angle = pos * theta^(-2i/hd), in exact arithmetic;
 * interleaved pairs (2i, 2i+1), else rotate-half pairs (i, i + hd/2) */
typedef struct oh_rope_ctx {
    const double *x;
    const int32_t *pos;
    int N, nh, hd, interleaved;
    double theta;
} oh_rope_ctx;
void oh_ref_rope(void *ctx, double *out);

/* causal grouped-query attention with per-token segment starts (kernels/ops.h layout) */
typedef struct oh_attn_ctx {
    const double *q, *k, *v;
    const int32_t *seg;
    int B, T, nh, nkv, hd;
} oh_attn_ctx;
/* softmax over keys seg[t]..t of q.k / sqrt(hd), the whole row at once; lse (may be NULL) [B, nh, T] */
void oh_ref_attention_lse(oh_attn_ctx *c, double *out, double *lse);
void oh_ref_attention(void *ctx, double *out);

/* kind 0: gelu(a) (tanh approximation); kind 1: silu(a) * b */
typedef struct oh_pw_ctx {
    const double *a, *b;
    size_t n;
    int kind;
} oh_pw_ctx;
void oh_ref_pointwise(void *ctx, double *out);

/* One torch.optim.AdamW step (single-tensor path) in double, in place on p, m, v: weight decay, lerp,
 * addcmul, addcdiv. The hyperparameters are the decimals as typed (0.999, not 0.999f), as Python
 * passes them. */
void oh_ref_adamw(double *p, const double *g, double *m, double *v, size_t n, double lr, double b1, double b2,
                  double eps, double wd, int step);

#endif
