#ifndef AN_SCHEDULE_H
#define AN_SCHEDULE_H
/* Learning-rate schedules: a linear warmup, then constant, linear decay or cosine decay.
 *
 * The numbers are PyTorch's: the warmup is LinearLR(start_factor, end_factor=1, total_iters=warmup)
 * and the decay CosineAnnealingLR(T_max=total-warmup, eta_min=min_lr) (or LinearLR(1, min_lr_ratio,
 * total-warmup), or a constant), chained with SequentialLR(milestones=[warmup]) as XTuner's recipes
 * do. The closed forms below match those chained updates to rounding (tests/test_schedule.c checks
 * them against tests/ref/schedule_lr.json, recorded from torch.optim.lr_scheduler).
 *
 * A "tick" is one scheduler.step(). By default the schedule ticks once per optimizer step; with
 * schedule.per_micro_batch it ticks once per micro-batch, as mmengine does for XTuner
 * (convert_to_iter_based), so the warmup and decay are counted in micro-batches. */
#include "core/error.h"
#include "train/recipe.h"

typedef struct an_schedule {
    an_schedule_type type;
    double base_lr;
    double min_lr;       /* base_lr * min_lr_ratio */
    double start_factor; /* warmup starts at base_lr * start_factor */
    long warmup;         /* ticks */
    long total;          /* ticks */
    int ticks_per_step;  /* 1, or the accumulation count when ticking per micro-batch */
} an_schedule;

/* warmup_ticks is cut to total_ticks - 1 when longer (a short --steps run of a long-warmup recipe
 * keeps one tick of decay). Errors: total_ticks < 1, ticks_per_step < 1, base_lr <= 0, start_factor
 * outside (0, 1], min_lr_ratio outside [0, 1]. */
int an_schedule_init(an_schedule *s, an_schedule_type type, double base_lr, double start_factor, double min_lr_ratio,
                     long warmup_ticks, long total_ticks, int ticks_per_step, an_error *err);

/* From a recipe's optim.lr, schedule.* and optim.accumulation, for a run of total_steps optimizer
 * steps. The warmup is schedule.warmup_steps when > 0 (times the accumulation when ticking per
 * micro-batch), else floor(warmup_ratio * total ticks). */
int an_schedule_from_recipe(an_schedule *s, const an_recipe *r, long total_steps, an_error *err);

/* The learning rate after `tick` scheduler steps (tick 0 is the first). Past the end: min_lr
 * (constant: base_lr). */
double an_schedule_lr_at(const an_schedule *s, long tick);

/* The learning rate the optimizer uses at optimizer step `step` (0-based): the tick of its last
 * micro-batch, since mmengine steps the optimizer before the scheduler in that iteration. */
double an_schedule_lr(const an_schedule *s, long step);

#endif
