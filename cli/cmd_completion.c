/* autoneg completion bash: a bash completion script made from the same option tables that give each
 * command's --help and screen its argv (cli/help.h), so completion offers exactly what the parsers take.
 *
 *   source <(autoneg completion bash)      or save it in ~/.local/share/bash-completion/completions/autoneg */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/help.h"

const cli_entry cli_entries[] = {
    {"train", NULL, &cli_help_train},
    {"generate", NULL, &cli_help_generate},
    {"serve", NULL, &cli_help_serve},
    {"eval", NULL, &cli_help_eval},
    {"perplexity", NULL, &cli_help_perplexity},
    {"merge", NULL, &cli_help_merge},
    {"quantize", NULL, &cli_help_quantize},
    {"export", NULL, &cli_help_export},
    {"tokenize", NULL, &cli_help_tokenize},
    {"tokenizer", "train", &cli_help_tokenizer_train},
    {"data", "stats", &cli_help_data_stats},
    {"data", "clean", &cli_help_data_clean},
    {"data", "split", &cli_help_data_split},
    {"tags", "step", &cli_help_tags_step},
    {"tags", "aspect", &cli_help_tags_aspect},
    {"tags", "norm", &cli_help_tags_norm},
    {"bench", "train", &cli_help_bench_train},
    {"bench", "generate", &cli_help_bench_generate},
    {"bench", "memory", &cli_help_bench_memory},
    {"bench", "nf4", &cli_help_bench_nf4},
    {"bench", "engine", &cli_help_bench_engine},
    {"gguf", "info", &cli_help_gguf_info},
    {"version", NULL, &cli_help_version},
    {"completion", "bash", NULL},
    {"help", "man", NULL},
};
const size_t cli_n_entries = sizeof cli_entries / sizeof cli_entries[0];

static void put_names(const cli_opt *o) {
    for (; o && o->name; o++) printf(" %s", o->name);
}

/* Whether an option's value is one of a few words ("full|lora|qlora"): placeholders are upper case
 * ("DIR|auto") and files have a dot ("NAME|config.json"), and those complete as file names. */
static int is_choice(const char *arg) {
    if (!arg || !strchr(arg, '|')) return 0;
    for (const char *c = arg; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '|' || *c == '_')) return 0;
    return 1;
}

/* An option whose value is one of a few words completes to those words. */
static void put_choices(const cli_opt *o) {
    for (; o && o->name; o++) {
        if (!is_choice(o->arg)) continue;
        printf("            %s) COMPREPLY=($(compgen -W \"", o->name);
        for (const char *c = o->arg; *c; c++) putchar(*c == '|' ? ' ' : *c);
        printf("\" -- \"$cur\")); return ;;\n");
    }
}

static const cli_help completion_help = {
    "completion bash",
    "Prints a bash completion script for autoneg, made from each command's option table. Load it with\n"
    "source <(autoneg completion bash), or save it as ~/.local/share/bash-completion/completions/autoneg.",
    NULL, NULL, NULL,
    "completion bash > ~/.local/share/bash-completion/completions/autoneg",
};

int an_cmd_completion(int argc, char **argv) {
    int rc;
    if (cli_help_check(&completion_help, argc, argv, 1, &rc)) return rc;
    if (argc != 2 || strcmp(argv[1], "bash")) return cli_help_fail(&completion_help, "completion: only 'bash' is written");
    printf("# bash completion for autoneg, from `autoneg completion bash`\n"
           "_autoneg() {\n"
           "    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}\n"
           "    COMPREPLY=()\n"
           "    if [ \"$COMP_CWORD\" -eq 1 ]; then\n"
           "        COMPREPLY=($(compgen -W \"--help --version");
    for (size_t i = 0; i < cli_n_entries; i++)
        if (i == 0 || strcmp(cli_entries[i].cmd, cli_entries[i - 1].cmd)) printf(" %s", cli_entries[i].cmd);
    printf("\" -- \"$cur\"))\n        return\n    fi\n"
           "    local key=${COMP_WORDS[1]}\n"
           "    case \"$key\" in\n");
    /* groups: the second word is the subcommand */
    for (size_t i = 0; i < cli_n_entries; i++) {
        if (!cli_entries[i].sub || (i > 0 && !strcmp(cli_entries[i].cmd, cli_entries[i - 1].cmd))) continue;
        printf("        %s)\n            if [ \"$COMP_CWORD\" -eq 2 ]; then COMPREPLY=($(compgen -W \"--help", cli_entries[i].cmd);
        for (size_t j = i; j < cli_n_entries && !strcmp(cli_entries[j].cmd, cli_entries[i].cmd); j++) printf(" %s", cli_entries[j].sub);
        printf("\" -- \"$cur\")); return; fi\n            key=\"$key ${COMP_WORDS[2]}\" ;;\n");
    }
    printf("    esac\n    case \"$key\" in\n");
    for (size_t i = 0; i < cli_n_entries; i++) {
        const cli_help *h = cli_entries[i].h;
        if (!h) continue;
        printf("        \"%s%s%s\")\n", cli_entries[i].cmd, cli_entries[i].sub ? " " : "", cli_entries[i].sub ? cli_entries[i].sub : "");
        printf("            case \"$prev\" in\n");
        put_choices(h->opts);
        put_choices(h->more);
        printf("            esac\n");
        printf("            [[ \"$cur\" == -* ]] && COMPREPLY=($(compgen -W \"--help");
        put_names(h->opts);
        put_names(h->more);
        printf("\" -- \"$cur\")) ;;\n");
    }
    printf("    esac\n"
           "}\n"
           "# nothing offered: bash completes file names, which most values are\n"
           "complete -o default -F _autoneg autoneg\n");
    return fflush(stdout) ? cli_fail("completion: cannot write output") : 0;
}
