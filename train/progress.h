#ifndef AN_PROGRESS_H
#define AN_PROGRESS_H
/* The progress line of a training run:
 *   step 120/2000 | loss 2.3456 | lr 1.2e-04 | 1534 tok/s | ETA 3m12s
 * On a terminal it is redrawn in place with '\r'; into a file or pipe (a log) it is printed as plain
 * lines, at most every few seconds or steps, so logs stay short. All state lives in an_progress. */
#include <stddef.h>
#include <stdio.h>

typedef struct an_progress_info {
    long step;  /* steps done */
    long total; /* steps in the run; <= 0 when unknown (then no "/total" and no ETA) */
    double loss;
    double lr;
    double tokens_per_s;
    double eta_s; /* < 0 or not finite: unknown */
} an_progress_info;

/* Formats the line (no '\r', no '\n'); returns its length, or -1 when it does not fit. */
int an_progress_format(char *buf, size_t size, const an_progress_info *p);
/* "45s", "3m12s", "2h05m"; "--" when unknown. */
void an_progress_format_duration(char *buf, size_t size, double seconds);
/* Seconds left at the average pace so far; -1 when it cannot be known yet. */
double an_progress_eta(double elapsed_s, long step, long total, long first_step);

typedef enum an_progress_mode { AN_PROGRESS_AUTO, AN_PROGRESS_TTY, AN_PROGRESS_PLAIN } an_progress_mode;

typedef struct an_progress {
    FILE *out;
    int tty;            /* redraw in place */
    double every_s;     /* plain mode: at most one line per every_s seconds ... */
    long every_steps;   /* ... or per every_steps steps, whichever comes first */
    double last_time;
    long last_step;
    int printed;        /* a line has been written */
    int line_open;      /* tty mode: the cursor sits at the end of a redrawn line */
    size_t last_len;
} an_progress;

/* mode AUTO asks isatty(out). every_s / every_steps <= 0 disable that trigger (both disabled: every
 * update prints). The caller owns out. */
void an_progress_init(an_progress *p, FILE *out, an_progress_mode mode, double every_s, long every_steps);
/* Shows info if it is time to (always the first and the last step); now_s is the caller's clock.
 * Returns 1 when it wrote. */
int an_progress_update(an_progress *p, const an_progress_info *info, double now_s);
/* Ends a redrawn line with '\n' so later output starts on its own line. */
void an_progress_finish(an_progress *p);

#endif
