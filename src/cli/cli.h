/*
 * cli: the grpo program. One file per subcommand (cmd_NAME.c) defining
 * `int cli_cmd_NAME(int argc, char **argv)`; argv[0] is the subcommand name.
 * A subcommand returns the process exit status: 0 on success, 1 on bad
 * input (after printing a message naming the file, line or tensor), 2 on
 * bad usage.
 */
#ifndef GRPO_CLI_H
#define GRPO_CLI_H

#define CLI_CMD(name) int cli_cmd_##name(int argc, char **argv)

CLI_CMD(info);
CLI_CMD(tokenize);
CLI_CMD(forward);
CLI_CMD(grad);
CLI_CMD(generate);
CLI_CMD(score);
CLI_CMD(run);
CLI_CMD(sample);
CLI_CMD(sft);
CLI_CMD(eval);
CLI_CMD(fetch);

/* Print "grpo NAME: message" to stderr; returns 2 (usage errors). */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
