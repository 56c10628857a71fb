#include "train/progress.h"

#include <math.h>
#include <string.h>
#include <unistd.h>

void an_progress_format_duration(char *buf, size_t size, double s) {
    if (!isfinite(s) || s < 0 || s > 1e9) {
        snprintf(buf, size, "--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t < 60) snprintf(buf, size, "%lds", t);
    else if (t < 3600) snprintf(buf, size, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, size, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
}

double an_progress_eta(double elapsed_s, long step, long total, long first_step) {
    long done = step - first_step;
    if (total <= 0 || done <= 0 || !(elapsed_s >= 0)) return -1;
    if (step >= total) return 0;
    return elapsed_s / (double)done * (double)(total - step);
}

int an_progress_format(char *buf, size_t size, const an_progress_info *p) {
    char steps[48], eta[24];
    if (p->total > 0) snprintf(steps, sizeof steps, "step %ld/%ld", p->step, p->total);
    else snprintf(steps, sizeof steps, "step %ld", p->step);
    an_progress_format_duration(eta, sizeof eta, p->eta_s);
    int n;
    if (p->total > 0)
        n = snprintf(buf, size, "%s | loss %.4f | lr %.1e | %.0f tok/s | ETA %s", steps, p->loss, p->lr, p->tokens_per_s, eta);
    else
        n = snprintf(buf, size, "%s | loss %.4f | lr %.1e | %.0f tok/s", steps, p->loss, p->lr, p->tokens_per_s);
    return n < 0 || (size_t)n >= size ? -1 : n;
}

void an_progress_init(an_progress *p, FILE *out, an_progress_mode mode, double every_s, long every_steps) {
    memset(p, 0, sizeof *p);
    p->out = out;
    p->tty = mode == AN_PROGRESS_TTY || (mode == AN_PROGRESS_AUTO && out && isatty(fileno(out)));
    p->every_s = every_s;
    p->every_steps = every_steps;
}

int an_progress_update(an_progress *p, const an_progress_info *info, double now_s) {
    if (!p->out) return 0;
    int last = info->total > 0 && info->step >= info->total;
    int due = !p->printed || last;
    if (!due) {
        int by_time = p->every_s > 0 && now_s - p->last_time >= p->every_s;
        int by_steps = p->every_steps > 0 && info->step - p->last_step >= p->every_steps;
        due = by_time || by_steps || (p->every_s <= 0 && p->every_steps <= 0);
    }
    if (!due) return 0;
    char line[256];
    int n = an_progress_format(line, sizeof line, info);
    if (n < 0) return 0;
    if (p->tty) {
        /* pad with spaces over what is left of a longer previous line */
        int pad = p->last_len > (size_t)n ? (int)(p->last_len - (size_t)n) : 0;
        fprintf(p->out, "\r%s%*s", line, pad, "");
        p->line_open = 1;
    } else {
        fprintf(p->out, "%s\n", line);
    }
    fflush(p->out);
    p->last_len = (size_t)n;
    p->last_time = now_s;
    p->last_step = info->step;
    p->printed = 1;
    return 1;
}

void an_progress_finish(an_progress *p) {
    if (p->out && p->tty && p->line_open) {
        fputc('\n', p->out);
        fflush(p->out);
    }
    p->line_open = 0;
}
