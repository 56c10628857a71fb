/* Training checkpoints (see train/checkpoint.h). */
#include "train/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/file.h"

static const char ckpt_magic[8] = {'A', 'N', 'C', 'K', 'P', 'T', 0, 1};
#define CKPT_STATE_FIELDS 7

/* ---------- writing ---------- */

static int wr(an_ckpt_writer *w, const void *p, size_t n, an_error *err) {
    if (w->failed) return -1;
    size_t ok = n;
    if (w->byte_limit >= 0 && w->written + n > (uint64_t)w->byte_limit) {
        ok = w->written >= (uint64_t)w->byte_limit ? 0 : (size_t)((uint64_t)w->byte_limit - w->written);
        errno = ENOSPC;
    }
    if (ok && fwrite(p, 1, ok, w->f) != ok) ok = (size_t)-1;
    if (ok != n) {
        w->failed = 1;
        return an_fail(err, "%s: cannot write the checkpoint: %s%s", w->tmp, strerror(errno ? errno : EIO),
                       w->byte_limit >= 0 ? " (simulated by the test byte limit)" : "");
    }
    an_hasher_bytes(&w->hash, p, n);
    w->written += n;
    return 0;
}

static int wr_u64(an_ckpt_writer *w, uint64_t v, an_error *err) { return wr(w, &v, sizeof v, err); }
static int wr_u32(an_ckpt_writer *w, uint32_t v, an_error *err) { return wr(w, &v, sizeof v, err); }

int an_ckpt_write_begin(an_ckpt_writer *w, const char *path, const an_ckpt_state *st, int n_tensors,
                        const char *const *names, const uint64_t *numels, const uint32_t *parts, long long byte_limit,
                        an_error *err) {
    memset(w, 0, sizeof *w);
    w->byte_limit = byte_limit;
    if (snprintf(w->path, sizeof w->path, "%s", path) >= (int)sizeof w->path ||
        snprintf(w->tmp, sizeof w->tmp, "%s.tmp", path) >= (int)sizeof w->tmp)
        return an_fail(err, "%s: path too long", path);
    an_hasher_init(&w->hash);
    w->f = fopen(w->tmp, "wb");
    if (!w->f) return an_fail(err, "%s: cannot create the checkpoint: %s", w->tmp, strerror(errno));
    errno = 0;
    const uint64_t fields[CKPT_STATE_FIELDS] = {st->step, st->tokens, st->rng, st->cursor_epoch, st->cursor_next,
                                                st->cursor_offset, st->rng_aux};
    int rc = wr(w, ckpt_magic, sizeof ckpt_magic, err) || wr_u32(w, AN_CKPT_VERSION, err) ||
             wr_u32(w, 0x01020304u, err) || wr(w, fields, sizeof fields, err) || wr_u64(w, (uint64_t)n_tensors, err);
    for (int i = 0; i < n_tensors && !rc; i++) {
        size_t len = strlen(names[i]);
        if (len >= sizeof ((an_ckpt_tensor_info *)0)->name) {
            rc = an_fail(err, "%s: tensor name too long: %s", path, names[i]);
            break;
        }
        rc = wr_u32(w, (uint32_t)len, err) || wr(w, names[i], len, err) || wr_u64(w, numels[i], err) ||
             wr_u32(w, parts[i], err);
    }
    if (rc) {
        an_ckpt_write_abort(w);
        return -1;
    }
    return 0;
}

int an_ckpt_write_floats(an_ckpt_writer *w, const float *data, uint64_t numel, an_error *err) {
    if (wr(w, data, (size_t)numel * sizeof(float), err)) {
        an_ckpt_write_abort(w);
        return -1;
    }
    return 0;
}

int an_ckpt_write_commit(an_ckpt_writer *w, an_error *err) {
    if (!w->f) return an_fail(err, "%s: checkpoint writer is closed", w->path);
    uint64_t sum = an_hasher_final(&w->hash);
    if (wr_u64(w, sum, err)) {
        an_ckpt_write_abort(w);
        return -1;
    }
    if (fflush(w->f) || fsync(fileno(w->f))) {
        an_fail(err, "%s: cannot write the checkpoint: %s", w->tmp, strerror(errno));
        an_ckpt_write_abort(w);
        return -1;
    }
    int rc = fclose(w->f);
    w->f = NULL;
    if (rc) {
        an_fail(err, "%s: cannot write the checkpoint: %s", w->tmp, strerror(errno));
        remove(w->tmp);
        return -1;
    }
    if (rename(w->tmp, w->path)) {
        an_fail(err, "%s: cannot rename the checkpoint into place: %s", w->path, strerror(errno));
        remove(w->tmp);
        return -1;
    }
    return 0;
}

void an_ckpt_write_abort(an_ckpt_writer *w) {
    if (w->f) {
        fclose(w->f);
        w->f = NULL;
        remove(w->tmp);
    }
}

/* ---------- reading ---------- */

static int rd(const an_ckpt *c, size_t *pos, void *out, size_t n, an_error *err) {
    if (n > c->size - 8 - *pos) return an_fail(err, "%s: truncated checkpoint (header runs past the data)", c->path);
    memcpy(out, c->data + *pos, n);
    *pos += n;
    return 0;
}

int an_ckpt_read(an_ckpt *c, const char *path, an_error *err) {
    memset(c, 0, sizeof *c);
    snprintf(c->path, sizeof c->path, "%s", path);
    c->data = (unsigned char *)an_read_file(path, &c->size, err);
    if (!c->data) return -1;
    size_t pos = 0;
    uint32_t version = 0, order = 0;
    uint64_t fields[CKPT_STATE_FIELDS] = {0}, n = 0;
    char magic[8];
    if (c->size < sizeof magic + 8 + sizeof fields + 16) {
        an_fail(err, "%s: not a checkpoint (%zu bytes is too short)", path, c->size);
        goto fail;
    }
    if (rd(c, &pos, magic, 8, err)) goto fail;
    if (memcmp(magic, ckpt_magic, 8)) {
        an_fail(err, "%s: not an autoneg checkpoint (bad magic)", path);
        goto fail;
    }
    if (rd(c, &pos, &version, 4, err) || rd(c, &pos, &order, 4, err)) goto fail;
    if (version != AN_CKPT_VERSION || order != 0x01020304u) {
        an_fail(err, "%s: checkpoint version %u (byte order %08x) is not the supported version %u", path, version, order,
                AN_CKPT_VERSION);
        goto fail;
    }
    an_hasher h;
    an_hasher_init(&h);
    an_hasher_bytes(&h, c->data, c->size - 8);
    uint64_t sum;
    memcpy(&sum, c->data + c->size - 8, 8);
    if (sum != an_hasher_final(&h)) {
        an_fail(err, "%s: checkpoint checksum mismatch (the file is damaged)", path);
        goto fail;
    }
    if (rd(c, &pos, fields, sizeof fields, err) || rd(c, &pos, &n, 8, err)) goto fail;
    c->state = (an_ckpt_state){fields[0], fields[1], fields[2], fields[3], fields[4], fields[5], fields[6]};
    if (n > (c->size - pos) / 16) {
        an_fail(err, "%s: checkpoint announces %llu tensors, more than the file can hold", path, (unsigned long long)n);
        goto fail;
    }
    c->n_tensors = (int)n;
    c->tensors = calloc(n ? n : 1, sizeof *c->tensors);
    if (!c->tensors) {
        an_fail(err, "%s: out of memory", path);
        goto fail;
    }
    for (uint64_t i = 0; i < n; i++) {
        an_ckpt_tensor_info *t = &c->tensors[i];
        uint32_t len = 0;
        if (rd(c, &pos, &len, 4, err)) goto fail;
        if (len >= sizeof t->name) {
            an_fail(err, "%s: tensor %llu has a name of %u bytes", path, (unsigned long long)i, len);
            goto fail;
        }
        if (rd(c, &pos, t->name, len, err) || rd(c, &pos, &t->numel, 8, err) || rd(c, &pos, &t->parts, 4, err)) goto fail;
        t->name[len] = 0;
    }
    for (uint64_t i = 0; i < n; i++) {
        an_ckpt_tensor_info *t = &c->tensors[i];
        uint64_t avail = (uint64_t)(c->size - 8 - pos) / sizeof(float);
        if (t->parts > 16 || t->numel > avail || (uint64_t)t->parts * t->numel > avail) {
            an_fail(err, "%s: tensor %s (%llu x %u floats) runs past the end of the file", path, t->name,
                    (unsigned long long)t->numel, t->parts);
            goto fail;
        }
        t->offset = pos;
        pos += (size_t)(t->numel * t->parts * sizeof(float));
    }
    if (pos != c->size - 8) {
        an_fail(err, "%s: %zu bytes after the last tensor", path, c->size - 8 - pos);
        goto fail;
    }
    return 0;
fail:
    an_ckpt_free(c);
    return -1;
}

void an_ckpt_free(an_ckpt *c) {
    free(c->data);
    free(c->tensors);
    c->data = NULL;
    c->tensors = NULL;
    c->n_tensors = 0;
}

int an_ckpt_get(const an_ckpt *c, const char *name, uint32_t part, float *out, uint64_t numel, an_error *err) {
    for (int i = 0; i < c->n_tensors; i++) {
        const an_ckpt_tensor_info *t = &c->tensors[i];
        if (strcmp(t->name, name)) continue;
        if (t->numel != numel)
            return an_fail(err, "%s: tensor %s has %llu values, the model has %llu", c->path, name,
                           (unsigned long long)t->numel, (unsigned long long)numel);
        if (part >= t->parts)
            return an_fail(err, "%s: tensor %s has %u parts, part %u was asked for", c->path, name, t->parts, part);
        memcpy(out, c->data + t->offset + (size_t)part * numel * sizeof(float), (size_t)numel * sizeof(float));
        return 0;
    }
    return an_fail(err, "%s: tensor %s is missing", c->path, name);
}

/* ---------- the folder ---------- */

int an_ckpt_path(char *out, size_t size, const char *run_dir, long step) {
    int n = snprintf(out, size, "%s/checkpoints/step-%08ld.ckpt", run_dir, step);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* Step of a name "step-NNNNNNNN.ckpt", or -1. */
static long step_of(const char *name) {
    size_t n = strlen(name);
    if (n < 11 || strncmp(name, "step-", 5) || strcmp(name + n - 5, ".ckpt")) return -1;
    long v = 0;
    for (size_t i = 5; i < n - 5; i++) {
        if (name[i] < '0' || name[i] > '9' || v > 100000000000L) return -1;
        v = v * 10 + (name[i] - '0');
    }
    return v;
}

static int cmp_long_desc(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x < y) - (x > y);
}

/* Steps of the checkpoints in run_dir/checkpoints, newest first (malloc'd; *n may be 0). */
static int list_steps(const char *run_dir, long **steps, size_t *n, an_error *err) {
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/checkpoints", run_dir);
    *steps = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : an_fail(err, "%s: cannot list checkpoints: %s", dir, strerror(errno));
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        long s = step_of(e->d_name);
        if (s < 0) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            long *t = realloc(*steps, cap * sizeof *t);
            if (!t) {
                closedir(d);
                free(*steps);
                *steps = NULL;
                return an_fail(err, "%s: out of memory", dir);
            }
            *steps = t;
        }
        (*steps)[(*n)++] = s;
    }
    closedir(d);
    if (*n) qsort(*steps, *n, sizeof **steps, cmp_long_desc);
    return 0;
}

int an_ckpt_latest(const char *run_dir, char *out, size_t size, an_error *err) {
    long *steps;
    size_t n;
    if (list_steps(run_dir, &steps, &n, err)) return -1;
    int found = n > 0;
    if (found && an_ckpt_path(out, size, run_dir, steps[0])) found = an_fail(err, "%s: path too long", run_dir);
    free(steps);
    return found;
}

int an_ckpt_prune(const char *run_dir, int keep, long protect, an_error *err) {
    long *steps;
    size_t n;
    if (list_steps(run_dir, &steps, &n, err)) return -1;
    int rc = 0, seen = 0;
    for (size_t i = 0; i < n; i++) {
        /* newest first, so the first at or before `protect` is the newest such */
        int guarded = protect >= 0 && !seen && steps[i] <= protect;
        seen |= guarded;
        if (keep <= 0 || i < (size_t)keep || guarded) continue;
        char p[1200];
        if (an_ckpt_path(p, sizeof p, run_dir, steps[i]) == 0 && remove(p) && errno != ENOENT)
            rc = an_fail(err, "%s: cannot delete an old checkpoint: %s", p, strerror(errno));
    }
    free(steps);
    return rc;
}

int an_ckpt_older(const char *ckpt, char *out, size_t size, an_error *err) {
    const char *base = strrchr(ckpt, '/');
    long step = step_of(base ? base + 1 : ckpt);
    static const char sub[] = "/checkpoints/";
    size_t len = strlen(ckpt), blen = base ? strlen(base + 1) : len;
    /* only a checkpoint in its run folder's checkpoints/ has siblings to fall back to */
    if (step < 0 || !base || len < blen + sizeof sub - 1 || strncmp(base + 1 - (sizeof sub - 1), sub, sizeof sub - 1))
        return 0;
    char run_dir[1100];
    size_t dlen = len - blen - (sizeof sub - 1);
    if (dlen >= sizeof run_dir) return an_fail(err, "%s: path too long", ckpt);
    memcpy(run_dir, ckpt, dlen);
    run_dir[dlen] = 0;
    long *steps;
    size_t n;
    if (list_steps(run_dir, &steps, &n, err)) return -1;
    int found = 0;
    for (size_t i = 0; i < n && !found; i++) /* newest first */
        if (steps[i] < step) {
            found = 1;
            if (an_ckpt_path(out, size, run_dir, steps[i])) found = an_fail(err, "%s: path too long", run_dir);
        }
    free(steps);
    return found;
}

int an_ckpt_at_or_before(const char *run_dir, long step, char *out, size_t size, an_error *err) {
    long *steps;
    size_t n;
    if (list_steps(run_dir, &steps, &n, err)) return -1;
    int found = 0;
    for (size_t i = 0; i < n && !found; i++)
        if (steps[i] <= step) {
            found = 1;
            if (an_ckpt_path(out, size, run_dir, steps[i])) found = an_fail(err, "%s: path too long", run_dir);
        }
    free(steps);
    return found;
}

int an_ckpt_set_aside_after(const char *run_dir, long step, int *count, an_error *err) {
    long *steps;
    size_t n;
    *count = 0;
    if (list_steps(run_dir, &steps, &n, err)) return -1;
    int rc = 0;
    for (size_t i = 0; i < n && !rc && steps[i] > step; i++) {
        char p[1200], q[1300];
        if (an_ckpt_path(p, sizeof p, run_dir, steps[i])) {
            rc = an_fail(err, "%s: path too long", run_dir);
            break;
        }
        snprintf(q, sizeof q, "%s.diverged", p);
        if (rename(p, q)) rc = an_fail(err, "%s: cannot rename to %s: %s", p, q, strerror(errno));
        else (*count)++;
    }
    free(steps);
    return rc;
}
