#ifndef AN_GUARD_H
#define AN_GUARD_H
/* The divergence guard: the rules that stop a run that diverges or dies, and which update the trouble
 * began with, so the stop can name a checkpoint from before it. docs/training.md states them for users.
 *
 * Step k (1-based) computes its loss and gradient on the weights of update k-1, then applies update k.
 *   - non-finite: the loss or the gradient norm of step k is NaN or infinite. The weights of update
 *     k-1 are already bad, so the trouble began with update k-1.
 *   - explosion: update k makes the global L2 norm of the trained weights more than AN_GUARD_JUMP
 *     times what it was (or not finite). AdamW moves each weight by about lr per step, so a tenfold
 *     growth in one step means lr is of the order of the weights themselves: no sane rate does that
 *     (a healthy step changes the norm by well under 1%), while lr 1e30 or a LoRA at 1e6 does it on
 *     the first step, before the loss shows anything. The trouble began with update k.
 *   - dead: the gradient norm is exactly 0 for AN_GUARD_ZERO_STEPS steps in a row (from step s): a
 *     real loss on real data never has an exactly zero gradient, so the weights went somewhere the
 *     loss is flat (saturated softmax, dead activations) and the run only burns time. Ten steps rule
 *     out a lone zero from an all-masked window yet stop long before a run of hundreds of steps ends.
 *     The trouble began with update s-1.
 *   - loss spike: after AN_GUARD_SPIKE_WARMUP steps, the loss of step s is more than AN_GUARD_SPIKE
 *     times its recent level (an exponential average, decay AN_GUARD_SPIKE_DECAY, of the steps that
 *     were not spikes; the first AN_GUARD_SPIKE_WARMUP steps seed it with their mean). One spike that
 *     comes back down is noise (a hard batch) and no reason to stop, but while it lasts the checkpoint
 *     from before it is kept (an_guard_safe_step). A spike that stays AN_GUARD_SPIKE_STEPS steps in a
 *     row is a run that left the basin it was in (a rate too high to explode the weights, yet too high
 *     to train): it stops, and the trouble began with update s-1. Twice the level is far outside a
 *     healthy run's step-to-step noise once the level is averaged over tens of steps, and twenty steps
 *     of it cannot be one unlucky batch; the level is frozen during a spike so that a run that settles
 *     at the higher loss is still caught. */

#define AN_GUARD_JUMP 10.0
#define AN_GUARD_ZERO_STEPS 10
#define AN_GUARD_SPIKE 2.0
#define AN_GUARD_SPIKE_WARMUP 10
#define AN_GUARD_SPIKE_DECAY 0.9
#define AN_GUARD_SPIKE_STEPS 20

typedef enum { AN_GUARD_OK, AN_GUARD_NONFINITE, AN_GUARD_EXPLODED, AN_GUARD_DEAD, AN_GUARD_SPIKED } an_guard_verdict;

typedef struct an_guard {
    double wnorm;    /* the trained weights' norm after the last update (0: unknown) */
    long zero_run;   /* steps in a row with a gradient norm of exactly 0 */
    long zero_from;  /* the first of them */
    double level;    /* the recent loss level (mean, then exponential average, of non-spike steps) */
    long seen;       /* steps that fed the level */
    long spike_run;  /* steps in a row above AN_GUARD_SPIKE * level */
    long spike_from; /* the first of them */
    long bad_update; /* on a stop: the update the trouble began with (0: the starting weights) */
} an_guard;

/* wnorm: the trained weights' norm at the start (or the resume). */
void an_guard_init(an_guard *g, double wnorm);
/* Before update `step` is applied: its loss and gradient norm. */
an_guard_verdict an_guard_before_update(an_guard *g, long step, double loss, double grad_norm);
/* After update `step`: the weights' new norm. */
an_guard_verdict an_guard_after_update(an_guard *g, long step, double wnorm);
/* The newest step whose checkpoint is sure to predate any trouble seen so far (step - 1 while all is
 * well; during a run of zero gradients or a loss spike, the step before it began): checkpoint.keep must not delete
 * the newest checkpoint at or before it. */
long an_guard_safe_step(const an_guard *g, long step);

#endif
