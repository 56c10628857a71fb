#ifndef AN_TXT_FIXTURE_H
#define AN_TXT_FIXTURE_H
/* Text fixtures written by tests/ref/make_*_fixture*.py: one record per line, "name count v1 v2 ...",
 * and comment lines starting with '#'. */
#include <stddef.h>

/* The values of record `name` in the file at path (malloc'd, count in *n); NULL if the file or the
 * record is absent or malformed. */
double *txt_fixture(const char *path, const char *name, size_t *n);

#endif
