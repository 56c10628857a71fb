#include "train/schedule.h"

#include <math.h>

int an_schedule_init(an_schedule *s, an_schedule_type type, double base_lr, double start_factor, double min_lr_ratio,
                     long warmup_ticks, long total_ticks, int ticks_per_step, an_error *err) {
    if (total_ticks < 1) return an_fail(err, "schedule: a run of %ld steps has nothing to schedule", total_ticks);
    if (ticks_per_step < 1) return an_fail(err, "schedule: %d ticks per step", ticks_per_step);
    if (!(base_lr > 0) || !isfinite(base_lr)) return an_fail(err, "schedule: learning rate must be > 0, found %g", base_lr);
    if (!(start_factor > 0 && start_factor <= 1))
        return an_fail(err, "schedule: warmup_start_factor must be in (0, 1], found %g", start_factor);
    if (!(min_lr_ratio >= 0 && min_lr_ratio <= 1))
        return an_fail(err, "schedule: min_lr_ratio must be in [0, 1], found %g", min_lr_ratio);
    if (warmup_ticks < 0) warmup_ticks = 0;
    if (warmup_ticks > total_ticks - 1) warmup_ticks = total_ticks - 1;
    s->type = type;
    s->base_lr = base_lr;
    s->min_lr = base_lr * min_lr_ratio;
    s->start_factor = start_factor;
    s->warmup = warmup_ticks;
    s->total = total_ticks;
    s->ticks_per_step = ticks_per_step;
    return 0;
}

int an_schedule_from_recipe(an_schedule *s, const an_recipe *r, long total_steps, an_error *err) {
    int per = r->schedule.per_micro_batch ? r->optim.accumulation : 1;
    long ticks = total_steps * per;
    long warmup = r->schedule.warmup_steps > 0 ? (long)r->schedule.warmup_steps * per
                                               /* the small epsilon keeps 0.03 * 100 at 3, not 2.9999... */
                                               : (long)floor(r->schedule.warmup_ratio * (double)ticks + 1e-9);
    return an_schedule_init(s, r->schedule.type, r->optim.lr, r->schedule.warmup_start_factor, r->schedule.min_lr_ratio,
                            warmup, ticks, per, err);
}

double an_schedule_lr_at(const an_schedule *s, long t) {
    if (t < 0) t = 0;
    if (t < s->warmup) /* LinearLR: factor goes from start_factor to 1 over `warmup` ticks */
        return s->base_lr * (s->start_factor + (1.0 - s->start_factor) * (double)t / (double)s->warmup);
    if (s->type == AN_SCHED_CONSTANT) return s->base_lr;
    if (t >= s->total) return s->min_lr;
    double u = (double)(t - s->warmup), span = (double)(s->total - s->warmup);
    if (s->type == AN_SCHED_LINEAR) /* LinearLR(1, min_lr_ratio, span) */
        return s->base_lr * (1.0 + (s->min_lr / s->base_lr - 1.0) * u / span);
    /* CosineAnnealingLR(T_max = span, eta_min = min_lr) */
    return s->min_lr + (s->base_lr - s->min_lr) * (1.0 + cos(M_PI * u / span)) / 2.0;
}

double an_schedule_lr(const an_schedule *s, long step) {
    if (step < 0) step = 0;
    return an_schedule_lr_at(s, step * s->ticks_per_step + s->ticks_per_step - 1);
}
