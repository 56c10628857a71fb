/* --device: every command that computes opens its backend here (kernels/backend.h). The backend stays
 * open until the process exits, which is when a command is done with its model. */
#include "cli/cli.h"
#include "kernels/backend.h"

const an_ops *cli_backend(const char *device) {
    an_error err;
    const an_ops *ops = an_backend_open(device ? device : "cpu", &err);
    if (!ops) cli_error(&err);
    return ops;
}
