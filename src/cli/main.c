/*
 * grpo: the command-line entry point. Dispatches to one subcommand per
 * file (see cli.h).
 */
#include "cli/cli.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"
#include "dist/dist.h"

#define GRPO_VERSION "0.1.0"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *synopsis;
} commands[] = {
    {"info", cli_cmd_info, "info MODEL_DIR                      architecture, parameters, tensors"},
    {"tokenize", cli_cmd_tokenize, "tokenize --tokenizer DIR --in texts.jsonl [--out ids.jsonl]"},
    {"forward", cli_cmd_forward, "forward --model DIR --in ids.jsonl --out logits.safetensors"},
    {"grad", cli_cmd_grad, "grad --model DIR --in ids.jsonl --out grads.safetensors"},
    {"merge", cli_cmd_merge, "merge --model BASE --adapter LORA_DIR --out DIR   LoRA adapter into its base"},
    {"generate", cli_cmd_generate, "generate --model DIR --in prompts.jsonl [--n G] [--greedy] ..."},
    {"score", cli_cmd_score, "score --rewards SPEC --in samples.jsonl --out scored.jsonl"},
    {"run", cli_cmd_run, "run RECIPE.lua [--set key=value ...] [--resume]"},
    {"plan", cli_cmd_plan, "plan --model DIR --gpus N [--zero 0|1] [--recipe R.lua]   memory per rank, communication"},
    {"sample", cli_cmd_sample, "sample --model DIR --in prompts.jsonl --n N --rewards SPEC ..."},
    {"sft", cli_cmd_sft, "sft --model DIR --in sft.jsonl ..."},
    {"eval", cli_cmd_eval, "eval --model DIR --in test.jsonl --rewards SPEC --n K"},
    {"fetch", cli_cmd_fetch, "fetch REPO_ID [--out DIR] [--revision R] [--include GLOB] ..."},
};

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "grpo %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 2;
}

/* ---- stop signals (cli.h) ------------------------------------------------ */

static volatile sig_atomic_t stop_signal;

/* Async-signal-safe: a flag, write(2) and _exit(2) only. */
static void on_stop_signal(int sig) {
    if (stop_signal) {
        static const char now[] = "\ngrpo: second stop signal: exiting now (the last complete checkpoint stays)\n";
        ssize_t w = write(STDERR_FILENO, now, sizeof now - 1);
        (void)w;
        _exit(128 + sig);
    }
    stop_signal = sig;
    static const char first[] = "\ngrpo: stop signal: stopping when the current step is done (a training step then "
                                "writes a checkpoint); send it again to exit at once\n";
    ssize_t w = write(STDERR_FILENO, first, sizeof first - 1);
    (void)w;
}

volatile sig_atomic_t *cli_catch_stop_signals(void) {
    /* SIGUSR1 too: mpirun forwards it to every rank (kill -USR1 MPIRUN_PID),
     * while it turns SIGINT / SIGTERM into a SIGKILL a second later */
    const int sigs[] = {SIGINT, SIGTERM, SIGUSR1};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction sa, old;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_stop_signal;
        sa.sa_flags = SA_RESTART; /* reads and writes carry on */
        sigemptyset(&sa.sa_mask);
        sigaddset(&sa.sa_mask, SIGINT); /* one handler at a time */
        sigaddset(&sa.sa_mask, SIGTERM);
        sigaddset(&sa.sa_mask, SIGUSR1);
        if (sigaction(sigs[i], NULL, &old) != 0 || (old.sa_handler != SIG_IGN && sigaction(sigs[i], &sa, NULL) != 0))
            base_warn("sigaction(%s): %s: that signal stops grpo at once, without a checkpoint",
                      sigs[i] == SIGINT ? "SIGINT" : sigs[i] == SIGTERM ? "SIGTERM" : "SIGUSR1", base_strerror_now());
    }
    return &stop_signal;
}

static void usage(FILE *f) {
    fprintf(f, "grpo %s: GRPO post-training for DeepSeek-V3-architecture models\n\nusage:\n",
            GRPO_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  grpo %s\n", commands[i].synopsis);
    fprintf(f, "\n'grpo COMMAND --help' describes a command.\n");
}

/* OpenMP threads spin-wait between parallel regions by default (libgomp's
 * OMP_WAIT_POLICY active). grpo's CPU work is many short regions next to
 * other threads (reward workers, the tokenizer pool) and often a shared
 * machine: a spinning thread then takes the core the serial work needs
 * (seen here: 36 s against 0.6 s for the same run). libgomp reads the
 * policy when it loads, before main, so grpo re-executes itself once with
 * OMP_WAIT_POLICY=passive unless the user chose a policy. */
static void omp_passive(char **argv) {
    if (getenv("OMP_WAIT_POLICY")) return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
    execv("/proc/self/exe", argv);
    /* exec failed (no /proc): carry on with the default policy */
}

/* A command as one rank of an MPI job (mpirun, srun; docs/distributed.md),
 * or as the only process. Every rank runs the command; rank 0 shows
 * progress and writes the run. A rank whose command fails alone ends the
 * whole job (dist_abort: mpirun then names it), so no rank waits for it in
 * a collective; a failure the ranks agreed on (a failed step: every rank
 * names the rank that failed) and a stop signal (exit 128 + N) end every
 * rank in step, through MPI_Finalize. */
static int run_command(size_t i, int argc, char **argv) {
    if (dist_init(&argc, &argv)) {
        fprintf(stderr, "grpo: %s\n", base_err_msg());
        return 1;
    }
    if (dist_world_size() > 1) {
        char tag[48];
        snprintf(tag, sizeof tag, "grpo[rank %d]", dist_rank());
        base_log_set_tag(tag);
        /* the ranks do the same things: rank 0 tells them; the others warn */
        if (dist_rank() != 0 && !getenv("GRPO_LOG")) base_log_set_level(BASE_LOG_WARN);
    }
    int rc = commands[i].fn(argc - 1, argv + 1);
    fflush(stdout);
    if (rc != 0 && rc < 128 && dist_world_size() > 1 && !dist_failure_agreed()) {
        fprintf(stderr, "%s: failed (exit %d): ending every rank of the job\n", base_log_tag(), rc);
        dist_abort(rc);
    }
    dist_finalize();
    return rc;
}

int main(int argc, char **argv) {
    omp_passive(argv);
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("grpo %s\n", GRPO_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name)) continue;
        return run_command(i, argc, argv);
    }
    fprintf(stderr, "grpo: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
