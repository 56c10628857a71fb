#include "train/loss_svg.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    if (!b->p) {
        if (!(b->p = malloc(4096))) {
            b->oom = 1;
            return;
        }
        b->cap = 4096;
    }
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->n) {
            b->n += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n + 1) * 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

static void sb_escaped(sbuf *b, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': sb_printf(b, "&amp;"); break;
        case '<': sb_printf(b, "&lt;"); break;
        case '>': sb_printf(b, "&gt;"); break;
        case '"': sb_printf(b, "&quot;"); break;
        default:
            if ((unsigned char)*s >= 0x20) sb_printf(b, "%c", *s); /* control characters are not XML */
        }
    }
}

static double nice_number(double x, int round_up) {
    double e = floor(log10(x)), f = x / pow(10, e), nf;
    /* a range like 2.37 - 2.31 comes out a hair above 0.06; the slack keeps its tick at 0.01 */
    const double slack = 1 + 1e-9;
    if (round_up) nf = f <= slack ? 1 : f <= 2 * slack ? 2 : f <= 5 * slack ? 5 : 10;
    else nf = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
    return nf * pow(10, e);
}

/* Beyond this a loss is drawn at the edge of the axis: it keeps every end, tick and pixel finite
 * (hi - lo and hi + a tick would overflow near DBL_MAX). */
#define AXIS_LIMIT 1e300

static double clamp_axis(double v) { return v > AXIS_LIMIT ? AXIS_LIMIT : v < -AXIS_LIMIT ? -AXIS_LIMIT : v; }

void an_svg_nice_axis(double lo, double hi, int max_ticks, double *axis_lo, double *axis_hi, double *tick) {
    if (max_ticks < 1) max_ticks = 1;
    /* a NaN end takes the other end; with no number at all, the unit axis */
    if (isnan(lo)) lo = hi;
    if (isnan(hi)) hi = lo;
    if (isnan(lo)) lo = hi = 0.5;
    lo = clamp_axis(lo);
    hi = clamp_axis(hi);
    if (lo > hi) {
        double x = lo;
        lo = hi;
        hi = x;
    }
    if (!(hi > lo)) {
        /* half a unit each way, or a millionth of the value where half a unit is lost in its rounding
         * (a constant 1e17 +- 0.5 is still 1e17: a zero range, whose tick would be 0 forever) */
        double w = fabs(lo) * 1e-6 > 0.5 ? fabs(lo) * 1e-6 : 0.5;
        lo -= w;
        hi += w;
    }
    /* the smallest 1-2-5 spacing that covers the range in at most max_ticks intervals */
    double t = nice_number((hi - lo) / max_ticks, 1);
    /* t at least doubles every two rounds and the range is finite, so this ends within a few dozen
     * rounds; the bound and the fallback keep that true even if rounding says otherwise */
    for (int round = 0; round < 200 && t > 0 && isfinite(t); round++) {
        /* the 1e-9 keeps 2.31 / 0.01 = 230.99999... from adding a tick */
        double a = floor(lo / t + 1e-9) * t, b = ceil(hi / t - 1e-9) * t;
        if ((b - a) / t <= max_ticks + 1e-9) {
            *axis_lo = a;
            *axis_hi = b;
            *tick = t;
            return;
        }
        t = nice_number(t * 1.01, 1);
    }
    *axis_lo = lo;
    *axis_hi = hi;
    *tick = (hi - lo) / max_ticks;
}

typedef struct frame {
    double x0, x1, y0, y1;
} frame;

/* A point far off the axis (a loss beyond AXIS_LIMIT) stays a short number a little outside the
 * picture, not a 300-digit coordinate. */
static double clamp_px(double v) { return v > 1e5 ? 1e5 : v < -1e5 ? -1e5 : v; }
static double px(const frame *f, double x) {
    return clamp_px(AN_SVG_LEFT + (x - f->x0) / (f->x1 - f->x0) * (AN_SVG_WIDTH - AN_SVG_LEFT - AN_SVG_RIGHT));
}
static double py(const frame *f, double y) {
    return clamp_px(AN_SVG_TOP + (f->y1 - y) / (f->y1 - f->y0) * (AN_SVG_HEIGHT - AN_SVG_TOP - AN_SVG_BOTTOM));
}

/* Intervals between ticks; an_svg_nice_axis allows at most 8, so more (or a NaN) means a broken axis
 * and draws no ticks rather than loop for long. */
static long tick_count(double a, double b, double t) {
    double n = (b - a) / t;
    return n >= 0 && n <= 64 ? lround(n) : -1;
}

/* Tick labels without float noise: as many decimals as the tick spacing needs. */
static void tick_label(char *out, size_t size, double v, double tick) {
    int dec = tick >= 1 ? 0 : (int)ceil(-log10(tick) - 1e-9);
    if (fabs(v) < tick * 1e-6) v = 0;
    if (fabs(v) >= 1e6 || (v != 0 && fabs(v) < 1e-4)) snprintf(out, size, "%.3g", v);
    else snprintf(out, size, "%.*f", dec, v);
}

/* One polyline per run of finite values; a NaN (a diverged step) breaks the line. */
static void polylines(sbuf *b, const frame *f, const long *steps, const double *vals, size_t n, const char *cls,
                      const char *color) {
    size_t stride = (n + AN_SVG_MAX_POINTS - 1) / AN_SVG_MAX_POINTS;
    if (stride < 1) stride = 1;
    int open = 0;
    for (size_t i = 0; i < n; i += stride) {
        size_t end = i + stride < n ? i + stride : n;
        double sx = 0, sy = 0, cnt = (double)(end - i);
        int finite = 1;
        for (size_t j = i; j < end; j++) { /* the mean as a sum of v / cnt: two 1e308 do not overflow */
            sx += (double)steps[j] / cnt;
            sy += vals[j] / cnt;
            if (!isfinite(vals[j])) finite = 0;
        }
        if (!finite) {
            if (open) sb_printf(b, "\"/>\n");
            open = 0;
            continue;
        }
        double x = sx, y = sy;
        if (!open) sb_printf(b, "<polyline class=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", cls, color);
        else sb_printf(b, " ");
        sb_printf(b, "%.2f,%.2f", px(f, x), py(f, y));
        open = 1;
    }
    if (open) sb_printf(b, "\"/>\n");
}

char *an_loss_svg_render(const an_metrics_series *s, const char *title, an_error *err) {
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (int k = 0; k < 2; k++) {
        const long *st = k ? s->eval_step : s->train_step;
        const double *v = k ? s->eval_loss : s->train_loss;
        size_t n = k ? s->n_eval : s->n_train;
        for (size_t i = 0; i < n; i++) {
            if (!isfinite(v[i])) continue;
            if ((double)st[i] < xmin) xmin = (double)st[i];
            if ((double)st[i] > xmax) xmax = (double)st[i];
            if (v[i] < ymin) ymin = v[i];
            if (v[i] > ymax) ymax = v[i];
        }
    }
    if (!(xmin <= xmax)) {
        an_fail(err, "loss curve: no finite loss to plot");
        return NULL;
    }
    frame f;
    double xt, yt;
    an_svg_nice_axis(xmin, xmax, 8, &f.x0, &f.x1, &xt);
    an_svg_nice_axis(ymin, ymax, 6, &f.y0, &f.y1, &yt);
    if (xt < 1) { /* steps are whole numbers: no ticks at half steps */
        xt = 1;
        f.x0 = floor(xmin);
        f.x1 = ceil(xmax) > f.x0 ? ceil(xmax) : f.x0 + 1;
    }

    sbuf b = {0};
    const int W = AN_SVG_WIDTH, H = AN_SVG_HEIGHT, L = AN_SVG_LEFT, R = W - AN_SVG_RIGHT, T = AN_SVG_TOP,
              B = H - AN_SVG_BOTTOM;
    sb_printf(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    sb_printf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                  "font-family=\"sans-serif\" font-size=\"12\">\n", W, H, W, H);
    sb_printf(&b, "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    sb_printf(&b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-size=\"14\">", W / 2, T - 16);
    sb_escaped(&b, title && *title ? title : "loss");
    sb_printf(&b, "</text>\n");
    /* grid, ticks and labels */
    sb_printf(&b, "<g class=\"x-ticks\" stroke=\"#ddd\">\n");
    for (long k = 0, nk = tick_count(f.x0, f.x1, xt); k <= nk; k++) {
        double v = f.x0 + (double)k * xt; /* not v += xt: that drifts */
        char lab[32];
        tick_label(lab, sizeof lab, v, xt);
        double x = px(&f, v);
        sb_printf(&b, "<line x1=\"%.2f\" y1=\"%d\" x2=\"%.2f\" y2=\"%d\"/>", x, T, x, B + 5);
        sb_printf(&b, "<text x=\"%.2f\" y=\"%d\" text-anchor=\"middle\" stroke=\"none\" fill=\"black\">%s</text>\n", x, B + 18, lab);
    }
    sb_printf(&b, "</g>\n<g class=\"y-ticks\" stroke=\"#ddd\">\n");
    for (long k = 0, nk = tick_count(f.y0, f.y1, yt); k <= nk; k++) {
        double v = f.y0 + (double)k * yt;
        char lab[32];
        tick_label(lab, sizeof lab, v, yt);
        double y = py(&f, v);
        sb_printf(&b, "<line x1=\"%d\" y1=\"%.2f\" x2=\"%d\" y2=\"%.2f\"/>", L - 5, y, R, y);
        sb_printf(&b, "<text x=\"%d\" y=\"%.2f\" text-anchor=\"end\" stroke=\"none\" fill=\"black\">%s</text>\n", L - 8, y + 4, lab);
    }
    sb_printf(&b, "</g>\n");
    sb_printf(&b, "<rect class=\"axes\" x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"black\"/>\n", L, T,
              R - L, B - T);
    sb_printf(&b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">step</text>\n", (L + R) / 2, H - 10);
    sb_printf(&b, "<text x=\"16\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 16 %d)\">loss</text>\n", (T + B) / 2,
              (T + B) / 2);
    /* curves */
    polylines(&b, &f, s->train_step, s->train_loss, s->n_train, "train", "#1f77b4");
    if (s->n_eval) {
        polylines(&b, &f, s->eval_step, s->eval_loss, s->n_eval, "eval", "#ff7f0e");
        for (size_t i = 0; i < s->n_eval; i++)
            if (isfinite(s->eval_loss[i]))
                sb_printf(&b, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3\" fill=\"#ff7f0e\"/>\n", px(&f, (double)s->eval_step[i]),
                          py(&f, s->eval_loss[i]));
    }
    /* legend */
    sb_printf(&b, "<g class=\"legend\">\n");
    sb_printf(&b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#1f77b4\" stroke-width=\"2\"/>"
                  "<text x=\"%d\" y=\"%d\">train loss</text>\n", R - 150, T + 16, R - 130, T + 16, R - 125, T + 20);
    if (s->n_eval)
        sb_printf(&b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#ff7f0e\" stroke-width=\"2\"/>"
                      "<text x=\"%d\" y=\"%d\">eval loss</text>\n", R - 150, T + 34, R - 130, T + 34, R - 125, T + 38);
    sb_printf(&b, "</g>\n</svg>\n");
    if (b.oom) {
        free(b.p);
        an_fail(err, "loss curve: out of memory");
        return NULL;
    }
    return b.p;
}

int an_loss_svg_write(const char *path, const an_metrics_series *s, const char *title, an_error *err) {
    char *svg = an_loss_svg_render(s, title, err);
    if (!svg) return an_fail_prefix(err, "%s", path);
    int rc = an_write_file_atomic(path, svg, strlen(svg), err);
    free(svg);
    return rc;
}
