/* The divergence guard (see train/guard.h). */
#include "train/guard.h"

#include <math.h>

void an_guard_init(an_guard *g, double wnorm) {
    g->wnorm = wnorm;
    g->zero_run = 0;
    g->zero_from = 0;
    g->level = 0;
    g->seen = 0;
    g->spike_run = 0;
    g->spike_from = 0;
    g->bad_update = 0;
}

/* The loss-spike rule (guard.h): the level learns only from steps that are not spikes. */
static an_guard_verdict loss_spike(an_guard *g, long step, double loss) {
    if (g->seen >= AN_GUARD_SPIKE_WARMUP && loss > AN_GUARD_SPIKE * g->level) {
        if (g->spike_run++ == 0) g->spike_from = step;
        if (g->spike_run >= AN_GUARD_SPIKE_STEPS) {
            g->bad_update = g->spike_from - 1;
            return AN_GUARD_SPIKED;
        }
        return AN_GUARD_OK;
    }
    g->spike_run = 0;
    g->seen++;
    if (g->seen <= AN_GUARD_SPIKE_WARMUP)
        g->level += (loss - g->level) / (double)g->seen; /* the running mean of the first steps */
    else
        g->level = AN_GUARD_SPIKE_DECAY * g->level + (1 - AN_GUARD_SPIKE_DECAY) * loss;
    return AN_GUARD_OK;
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
    return loss_spike(g, step, loss);
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
     * zero gradients or a loss spike from s, update s - 1 is blamed */
    long safe = step - 1;
    if (g->zero_run > 0 && g->zero_from - 2 < safe) safe = g->zero_from - 2;
    if (g->spike_run > 0 && g->spike_from - 2 < safe) safe = g->spike_from - 2;
    return safe;
}
