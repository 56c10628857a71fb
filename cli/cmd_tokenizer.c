/* autoneg tokenizer train --data F... --vocab N --out DIR */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

int an_cmd_tokenizer(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_fail("tokenizer: not implemented yet");
}
