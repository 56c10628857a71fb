#ifndef AN_FILE_H
#define AN_FILE_H
/* Whole-file reads and read-only memory maps, with errors that name the file. */
#include <stddef.h>
#include "core/error.h"

typedef struct an_mapped_file {
    const unsigned char *data;
    size_t size;
} an_mapped_file;

/* Maps path read-only. An empty file maps to size 0 and a data pointer that must not be read (but
 * may be offset by 0, so data + size is defined). */
int an_map_file(an_mapped_file *m, const char *path, an_error *err);
void an_unmap_file(an_mapped_file *m);

/* Reads a whole file into a malloc'd, NUL-terminated buffer. */
char *an_read_file(const char *path, size_t *size_out, an_error *err);

/* Writes data to path through path.tmp + fsync + rename, so a crash never leaves half a file. */
int an_write_file_atomic(const char *path, const void *data, size_t size, an_error *err);

/* Joins dir and name into out (size outsz); returns -1 when it does not fit. */
int an_path_join(char *out, size_t outsz, const char *dir, const char *name);
int an_file_exists(const char *path);
int an_is_dir(const char *path);

#endif
