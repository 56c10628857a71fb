/* Global gradient norm and clipping, as torch.nn.utils.clip_grad_norm_ does it: the 2-norm over all
 * buffers together, and a scale of max_norm / (norm + 1e-6) when that is below 1. */
#include <math.h>

#include "kernels/ops.h"

double an_clip_grad_norm(const an_ops *ops, float **grads, const size_t *sizes, int count, double max_norm) {
    double sum = 0.0;
    for (int i = 0; i < count; i++)
        if (grads[i] && sizes[i]) sum += ops->sum_squares(grads[i], sizes[i]);
    double norm = sqrt(sum);
    if (max_norm > 0.0) {
        double coef = max_norm / (norm + 1e-6);
        if (coef < 1.0)
            for (int i = 0; i < count; i++)
                if (grads[i] && sizes[i]) ops->scale(grads[i], (float)coef, sizes[i]);
    }
    return norm;
}
