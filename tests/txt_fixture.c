/* Reading text fixtures (see tests/txt_fixture.h). */
#include "tests/txt_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

double *txt_fixture(const char *path, const char *name, size_t *n) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char key[128];
    double *vals = NULL;
    while (fscanf(f, "%127s", key) == 1) {
        if (key[0] == '#') { /* comment line */
            int c;
            while ((c = fgetc(f)) != '\n' && c != EOF) {
            }
            continue;
        }
        size_t count;
        if (fscanf(f, "%zu", &count) != 1) break;
        int want = strcmp(key, name) == 0;
        if (want) vals = malloc((count ? count : 1) * sizeof(double));
        for (size_t i = 0; i < count; i++) {
            double x;
            if (fscanf(f, "%lf", &x) != 1) {
                free(vals);
                fclose(f);
                return NULL;
            }
            if (want) vals[i] = x;
        }
        if (want) {
            *n = count;
            break;
        }
    }
    fclose(f);
    return vals;
}
