/* Global gradient norm and clipping, as torch.nn.utils.clip_grad_norm_ does it: the 2-norm over all
 * buffers together, and a factor of max_norm / (norm + 1e-6) when that is below 1. The factor is not
 * applied here: AdamW multiplies each gradient by it as it reads it, the same float product that
 * torch's in-place multiply stores, without a read and write of every gradient in between. */
#include <math.h>

#include "kernels/ops.h"

double an_grad_norm(const an_ops *ops, float **grads, const size_t *sizes, int count) {
    double sum = 0.0;
    for (int i = 0; i < count; i++)
        if (grads[i] && sizes[i]) sum += ops->sum_squares(ops, grads[i], sizes[i]);
    return sqrt(sum);
}

float an_clip_coef(double norm, double max_norm) {
    if (max_norm <= 0.0) return 1.0f;
    double coef = max_norm / (norm + 1e-6);
    return coef < 1.0 ? (float)coef : 1.0f;
}
