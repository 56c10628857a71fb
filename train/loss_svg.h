#ifndef AN_LOSS_SVG_H
#define AN_LOSS_SVG_H
/* The loss curve of a run as one self-contained SVG (no scripts, no external fonts or styles):
 * training loss (blue) and evaluation loss (orange, with dots) against the step, with axes, ticks,
 * tick labels, axis titles, a title and a legend. */
#include <stddef.h>
#include "core/error.h"
#include "train/metrics.h"

/* Geometry, in SVG user units; the plot area is the box inside the margins. */
#define AN_SVG_WIDTH 720
#define AN_SVG_HEIGHT 420
#define AN_SVG_LEFT 70
#define AN_SVG_RIGHT 20
#define AN_SVG_TOP 40
#define AN_SVG_BOTTOM 50
/* More training points than this are averaged in equal runs of consecutive points. */
#define AN_SVG_MAX_POINTS 2000

/* A "nice" axis covering [lo, hi]: ends and tick spacing on 1, 2 or 5 times a power of ten, with at
 * most max_ticks intervals. lo == hi gets a unit-wide range around the value
 * (a millionth of it each way when that is wider); a NaN end takes the other end, and no number
 * at all the axis [0, 1]; ends beyond +-1e300 are clamped there. It always returns, with finite ends
 * and a positive tick. */
void an_svg_nice_axis(double lo, double hi, int max_ticks, double *axis_lo, double *axis_hi, double *tick);

/* The SVG text (malloc'd). Needs at least one finite loss; title may be NULL. */
char *an_loss_svg_render(const an_metrics_series *s, const char *title, an_error *err);
/* Renders and writes atomically to path. */
int an_loss_svg_write(const char *path, const an_metrics_series *s, const char *title, an_error *err);

#endif
