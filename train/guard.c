/* The divergence guard (see train/guard.h). */
#include "train/guard.h"

#include <math.h>

void an_guard_init(an_guard *g, double wnorm) {
    g->wnorm = wnorm;
    g->zero_run = 0;
    g->zero_from = 0;
    g->bad_update = 0;
}

an_guard_verdict an_guard_before_update(an_guard *g, long step, double loss, double grad_norm) {
    if (!isfinite(loss) || !isfinite(grad_norm)) {
        g->bad_update = step - 1;
        return AN_GUARD_NONFINITE;
    }
    if (grad_norm == 0.0) {
        if (g->zero_run++ == 0) g->zero_from = step;
        if (g->zero_run >= AN_GUARD_ZERO_STEPS) {
            g->bad_update = g->zero_from - 1;
            return AN_GUARD_DEAD;
        }
    } else {
        g->zero_run = 0;
    }
    return AN_GUARD_OK;
}

an_guard_verdict an_guard_after_update(an_guard *g, long step, double wnorm) {
    double before = g->wnorm;
    g->wnorm = wnorm;
    if (!isfinite(wnorm) || (before > 0 && wnorm > AN_GUARD_JUMP * before)) {
        g->bad_update = step;
        return AN_GUARD_EXPLODED;
    }
    return AN_GUARD_OK;
}

long an_guard_safe_step(const an_guard *g, long step) {
    /* a non-finite loss at step + 1 blames update `step`, so its checkpoint is not safe; in a run of
     * zero gradients from s, update s - 1 is blamed */
    return g->zero_run > 0 ? g->zero_from - 2 : step - 1;
}
