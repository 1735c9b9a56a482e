/*
 * cli: the grpo program. One file per subcommand (cmd_NAME.c) defining
 * `int cli_cmd_NAME(int argc, char **argv)`; argv[0] is the subcommand name.
 * A subcommand returns the process exit status: 0 on success, 1 on bad
 * input (after printing a message naming the file, line or tensor), 2 on
 * bad usage.
 */
#ifndef GRPO_CLI_H
#define GRPO_CLI_H

#include <signal.h>

#define CLI_CMD(name) int cli_cmd_##name(int argc, char **argv)

CLI_CMD(info);
CLI_CMD(tokenize);
CLI_CMD(forward);
CLI_CMD(grad);
CLI_CMD(merge);
CLI_CMD(generate);
CLI_CMD(score);
CLI_CMD(run);
CLI_CMD(sample);
CLI_CMD(sft);
CLI_CMD(eval);
CLI_CMD(fetch);
CLI_CMD(plan);

/* Print "grpo NAME: message" to stderr; returns 2 (usage errors). */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* For the commands that run a recipe (run, sample, eval, sft): catch
 * SIGINT and SIGTERM (main.c). The first sets the flag returned (to the
 * signal number; run_opts.stop_signal: the run finishes its current step,
 * writes a checkpoint and stops; the command then exits 128 + N: 130 for
 * SIGINT, 143 for SIGTERM); a second exits at once with that status. A
 * signal ignored when grpo started (nohup, a background job) stays ignored. */
volatile sig_atomic_t *cli_catch_stop_signals(void);

#endif
