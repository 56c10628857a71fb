#include "core/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* What an empty file maps to: a real address, so a reader's data + size stays defined C (pointer
 * arithmetic on NULL is undefined even with 0; the fuzzer found one such reader). */
static const unsigned char empty_file[1];

int an_map_file(an_mapped_file *m, const char *path, an_error *err) {
    m->data = NULL;
    m->size = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return an_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return an_fail(err, "%s: cannot stat: %s", path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return an_fail(err, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        m->data = empty_file;
        return 0;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return an_fail(err, "%s: cannot map: %s", path, strerror(errno));
    m->data = p;
    m->size = (size_t)st.st_size;
    return 0;
}

void an_unmap_file(an_mapped_file *m) {
    if (m->data && m->data != empty_file) munmap((void *)m->data, m->size);
    m->data = NULL;
    m->size = 0;
}

char *an_read_file(const char *path, size_t *size_out, an_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        an_fail(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf) break;
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        cap *= 2;
        char *nb = realloc(buf, cap + 1);
        if (!nb) {
            free(buf);
            buf = NULL;
        } else {
            buf = nb;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf) {
        an_fail(err, "%s: out of memory", path);
        return NULL;
    }
    if (bad) {
        free(buf);
        an_fail(err, "%s: read error", path);
        return NULL;
    }
    buf[n] = 0;
    if (size_out) *size_out = n;
    return buf;
}

int an_write_file_atomic(const char *path, const void *data, size_t size, an_error *err) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return an_fail(err, "%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return an_fail(err, "%s: cannot create: %s", tmp, strerror(errno));
    size_t w = size ? fwrite(data, 1, size, f) : 0;
    int ok = w == size && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int saved = errno;
    if (fclose(f) != 0) ok = 0;
    if (!ok) {
        unlink(tmp);
        return an_fail(err, "%s: write failed: %s", path, strerror(saved ? saved : EIO));
    }
    if (rename(tmp, path) != 0) {
        saved = errno;
        unlink(tmp);
        return an_fail(err, "%s: cannot rename into place: %s", path, strerror(saved));
    }
    return 0;
}

int an_path_join(char *out, size_t outsz, const char *dir, const char *name) {
    size_t n = strlen(dir);
    int r = (n && dir[n - 1] == '/') ? snprintf(out, outsz, "%s%s", dir, name) : snprintf(out, outsz, "%s/%s", dir, name);
    return (r < 0 || (size_t)r >= outsz) ? -1 : 0;
}

int an_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int an_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}
