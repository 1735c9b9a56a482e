/*
 * Helpers shared by the commands that run one pipeline stage (sample, eval,
 * sft): each builds a recipe in memory (Lua source) from its options and
 * runs it with run_recipe, so a command and a recipe stage are one code
 * path. Private to src/cli/cmd_{sample,eval,sft}.c.
 *
 * The recipe text is built in a base_buf with the cli_lua_* appenders
 * (values quoted for Lua). An option that sets a checked recipe key (a
 * number, a choice) becomes an override of that key instead (cli_flag_*),
 * so the recipe's validation checks it as it checks a recipe value, and
 * its error names the option: "grpo eval: --top-p 2: must be in (0, 1]".
 */
#ifndef GRPO_CLI_RECIPE_CLI_H
#define GRPO_CLI_RECIPE_CLI_H

#include <getopt.h>

#include "base/base.h"
#include "recipe/recipe.h"
#include "train/run.h"

/* Append s as a Lua string literal (any bytes; escapes as needed). */
void cli_lua_str(base_buf *b, const char *s);
/* Append `key = "val",\n`. */
void cli_lua_kv_str(base_buf *b, const char *key, const char *val);
/* Append `rewards = {{script = ..., weight = ..., name = ..., params = {...}}, ...},\n`
 * from a reward spec in the text form of reward.h (NAME=PATH:WEIGHT{K=V;...}).
 * Parse errors: message set, BASE_ERR_PARSE. */
base_status cli_lua_rewards(base_buf *b, const char *spec);

/* The run directory of a command: `run_dir` when given (kept; relative to
 * the current directory), else a fresh directory under $TMPDIR (or /tmp)
 * named grpo-CMD-XXXXXX, removed by cli_run_dir_close unless its
 * reward_errors.log has lines (then it is kept, and a message says where). */
typedef struct {
    char *output_dir; /* the recipe's output_dir */
    char *name;       /* the recipe's name */
    char *path;       /* output_dir/name */
    char *tmp;        /* the temporary directory to remove, or NULL */
    char cmd[16];     /* the command, for messages */
} cli_run_dir;

base_status cli_run_dir_open(const char *cmd, const char *run_dir, cli_run_dir *rd);
void cli_run_dir_close(cli_run_dir *rd);

/* ---- options shared by the commands ------------------------------------- */

/* getopt_long values of the shared options (beyond any character). */
enum {
    CLI_OPT_MODEL = 1000, CLI_OPT_TOKENIZER, CLI_OPT_IN, CLI_OPT_PROMPT_COLUMN, CLI_OPT_TEMPLATE,
    CLI_OPT_SYSTEM, CLI_OPT_SEED, CLI_OPT_RUN_DIR, CLI_OPT_OVERWRITE, CLI_OPT_RESUME, CLI_OPT_DEVICE,
    CLI_OPT_QUIET, CLI_OPT_SET, CLI_OPT_THREADS, CLI_OPT_OUT, CLI_OPT_PRECISION, CLI_OPT_ALLOW_CHANGES,
    /* sampling (sample, eval) */
    CLI_OPT_N, CLI_OPT_TEMPERATURE, CLI_OPT_TOP_P, CLI_OPT_TOP_K, CLI_OPT_MIN_P, CLI_OPT_MAX_NEW,
    CLI_OPT_MAX_PROMPT, CLI_OPT_STOP, CLI_OPT_LIMIT, CLI_OPT_REWARDS,
    CLI_OPT_FIRST_OWN = 1100, /* a command's own options start here */
};

#define CLI_COMMON_OPTIONS                                                                                  \
    {"model", required_argument, 0, CLI_OPT_MODEL}, {"tokenizer", required_argument, 0, CLI_OPT_TOKENIZER}, \
    {"in", required_argument, 0, CLI_OPT_IN}, {"prompt-column", required_argument, 0, CLI_OPT_PROMPT_COLUMN}, \
    {"template", required_argument, 0, CLI_OPT_TEMPLATE}, {"system", required_argument, 0, CLI_OPT_SYSTEM},  \
    {"seed", required_argument, 0, CLI_OPT_SEED}, {"run-dir", required_argument, 0, CLI_OPT_RUN_DIR},       \
    {"overwrite", no_argument, 0, CLI_OPT_OVERWRITE}, {"resume", no_argument, 0, CLI_OPT_RESUME},          \
    {"device", required_argument, 0, CLI_OPT_DEVICE}, {"quiet", no_argument, 0, CLI_OPT_QUIET},           \
    {"precision", required_argument, 0, CLI_OPT_PRECISION},                                               \
    {"allow-changes", no_argument, 0, CLI_OPT_ALLOW_CHANGES},                                             \
    {"set", required_argument, 0, CLI_OPT_SET}, {"threads", required_argument, 0, CLI_OPT_THREADS},         \
    {"out", required_argument, 0, CLI_OPT_OUT}, {"help", no_argument, 0, 'h'}

#define CLI_SAMPLING_OPTIONS                                                                                \
    {"n", required_argument, 0, CLI_OPT_N}, {"temperature", required_argument, 0, CLI_OPT_TEMPERATURE},     \
    {"top-p", required_argument, 0, CLI_OPT_TOP_P}, {"top-k", required_argument, 0, CLI_OPT_TOP_K},         \
    {"min-p", required_argument, 0, CLI_OPT_MIN_P}, {"max-new-tokens", required_argument, 0, CLI_OPT_MAX_NEW}, \
    {"max-prompt-length", required_argument, 0, CLI_OPT_MAX_PROMPT},                                         \
    {"stop", required_argument, 0, CLI_OPT_STOP}, {"limit", required_argument, 0, CLI_OPT_LIMIT},           \
    {"rewards", required_argument, 0, CLI_OPT_REWARDS}

/* What the shared options collected. `top` holds the recipe's top-level
 * entries (Lua text), `stage` the stage's; `sets` the overrides: the
 * options' (cli_flag_*) first, then --set's, so --set wins; the rest is for
 * the command. */
typedef struct {
    base_buf top, stage;
    const char *model, *in, *prompt_column, *run_dir, *out, *rewards;
    recipe_set *sets;  /* [argc] */
    int nsets;
    const char **user_sets; /* [argc] --set values, appended to sets by cli_run_recipe_src */
    int n_user_sets;
    char **owned;      /* [argc] the strings sets point to */
    int n_owned;
    run_opts ro;
    base_buf stops; /* Lua list items of --stop */
} cli_common;

/* Option `opt` with argument `arg` sets the stage key `key` (stage: 1) or
 * the top-level key (stage: 0): a number (integer: 1 for integer keys;
 * returns 2 after "grpo CMD: OPT: 'arg' is not a number|an integer"), a
 * string, or a comma-separated list of strings. Return 0 when recorded. */
int cli_flag_num(cli_common *co, const char *cmd, const char *opt, int stage, const char *key, const char *arg,
                 int integer);
void cli_flag_str(cli_common *co, const char *opt, int stage, const char *key, const char *arg);
void cli_flag_list(cli_common *co, const char *opt, int stage, const char *key, const char *csv);

void cli_common_init(cli_common *co, int argc);
void cli_common_free(cli_common *co);
/* Handle option c (getopt_long's value) with argument arg. Returns -1 when
 * c is not a shared option, 0 when handled, 2 on a bad value (printed). */
int cli_common_opt(cli_common *co, const char *cmd, int c, const char *arg);
/* Start the recipe text: "return {", name/output_dir of rd, the top-level
 * entries, the `input` dataset (with the prompt column when given) plus
 * extra_datasets (Lua text, may be NULL), and the rewards of --rewards
 * (a spec parse error is returned). The caller may add more top-level
 * entries, then calls cli_recipe_stage. */
base_status cli_recipe_begin(base_buf *b, const cli_common *co, const cli_run_dir *rd, const char *extra_datasets);
/* Append the one stage (type, name = type, dataset "input", the collected
 * stage entries plus `extra` Lua text) and close the recipe. */
void cli_recipe_stage(base_buf *b, const cli_common *co, const char *type, const char *extra);


/* Load the recipe source (chunk name "(grpo CMD)", paths relative to the
 * current directory) with the options' and --set's overrides, and run it
 * in rd (the command prints the results; a temporary rd is named nowhere).
 * SIGINT / SIGTERM stop it after the current step (cli.h).
 * Prints "grpo CMD: message" on failure. Returns 0; 2 when the recipe does
 * not load (everything in it came from the command line: bad usage); 1
 * when the run fails; 128 + N when signal N stopped it. */
int cli_run_recipe_src(const char *cmd, const char *src, cli_common *co, const cli_run_dir *rd);

/* Copy a file (streamed; written to DST.tmp-PID, synced, renamed). */
base_status cli_copy_file(const char *src, const char *dst);

#endif
