/*
 * grpo sft --model DIR --in sft.jsonl --out CKPT_DIR [--epochs E] [--lr LR] ...
 *
 * Supervised fine-tuning as one command: a recipe with one `sft` stage
 * (src/train/stage_sft.c), then the newest checkpoint's model files
 * (model.safetensors, config.json, tokenizer files, generation_config.json
 * when present) are copied to CKPT_DIR, a Hugging Face-layout model that
 * `grpo sample/eval --model` and `transformers` load. Rows are those
 * `grpo sample` writes (train them with its --template), chat samples
 * ({"messages": [...]}) or prompt/completion (docs/recipes.md). The
 * run directory (metrics.jsonl, checkpoints with optimizer state) is
 * temporary unless --run-dir names one; with --run-dir, --resume continues
 * an interrupted run from its last checkpoint.
 * Exit status: 0 done; 1 bad input or a failed stage; 2 bad usage.
 */
#include "cli/cli.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "cli/recipe_cli.h"

static const char *USAGE =
    "usage: grpo sft --model DIR --in sft.jsonl --out CKPT_DIR [--epochs E] [--max-steps N]\n"
    "                [--lr LR] [--scheduler constant|constant_with_warmup|linear|cosine]\n"
    "                [--warmup-ratio R] [--weight-decay W] [--batch-size N] [--grad-accum N]\n"
    "                [--max-length N] [--no-packing] [--all-tokens] [--save-steps N]\n"
    "                [--template T] [--system TEXT] [--tokenizer DIR] [--seed S]\n"
    "                [--run-dir DIR [--overwrite | --resume [--allow-changes]]] [--device D] [--precision P]\n"
    "                [--set key=value ...] [--quiet]\n"
    "Trains on the rows grpo sample writes (give its --template), chat samples ({\"messages\": [...]},\n"
    "loss on assistant turns) or prompt/completion rows (loss on the completion), all rendered\n"
    "with --template; --all-tokens puts the loss on every token. Writes the final\n"
    "model (Hugging Face layout) to CKPT_DIR. Defaults are the sft stage's (docs/recipes.md):\n"
    "1 epoch, lr 2e-5 linear, batch 8, max length 1024, packing on.\n"
    "--template T: r1-zero (the default), chat, r1, raw, or text with {prompt} and {system}, read\n"
    "as a recipe's Lua string: '{prompt}\\n' ends in a newline, '\\\\' is one backslash.\n";

enum {
    OPT_EPOCHS = CLI_OPT_FIRST_OWN, OPT_MAX_STEPS, OPT_LR, OPT_SCHED, OPT_WARMUP, OPT_WD, OPT_BATCH, OPT_ACCUM,
    OPT_MAX_LEN, OPT_NO_PACKING, OPT_ALL_TOKENS, OPT_SAVE_STEPS,
};

/* RUN/checkpoints/step-N with the largest N that has trainer_state.json
 * (a complete checkpoint); malloc'd, NULL when none. */
static char *latest_checkpoint(const char *run) {
    char *dir = base_path_join(run, "checkpoints");
    DIR *d = opendir(dir);
    char *best = NULL;
    long long best_n = -1;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char *end;
        if (strncmp(e->d_name, "step-", 5)) continue;
        long long n = strtoll(e->d_name + 5, &end, 10);
        if (*end || end == e->d_name + 5 || n <= best_n) continue;
        char *p = base_path_join(dir, e->d_name), *ts = base_path_join(p, "trainer_state.json");
        if (base_file_exists(ts)) {
            free(best);
            best = p, p = NULL;
            best_n = n;
        }
        free(p), free(ts);
    }
    if (d) closedir(d);
    free(dir);
    return best;
}

static base_status export_model(const char *ckpt, const char *out) {
    base_status s = base_mkdir_p(out);
    const char *files[] = {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
                           "generation_config.json"};
    for (int i = 0; i < 5 && !s; i++) {
        char *from = base_path_join(ckpt, files[i]), *to = base_path_join(out, files[i]);
        if (base_file_exists(from)) s = cli_copy_file(from, to);
        else if (i < 3) s = base_err_set(BASE_ERR_IO, "%s: missing from the checkpoint", from);
        free(from), free(to);
    }
    return s;
}

int cli_cmd_sft(int argc, char **argv) {
    static struct option opts[] = {
        CLI_COMMON_OPTIONS,
        {"epochs", required_argument, 0, OPT_EPOCHS},
        {"max-steps", required_argument, 0, OPT_MAX_STEPS},
        {"lr", required_argument, 0, OPT_LR},
        {"scheduler", required_argument, 0, OPT_SCHED},
        {"warmup-ratio", required_argument, 0, OPT_WARMUP},
        {"weight-decay", required_argument, 0, OPT_WD},
        {"batch-size", required_argument, 0, OPT_BATCH},
        {"grad-accum", required_argument, 0, OPT_ACCUM},
        {"max-length", required_argument, 0, OPT_MAX_LEN},
        {"no-packing", no_argument, 0, OPT_NO_PACKING},
        {"all-tokens", no_argument, 0, OPT_ALL_TOKENS},
        {"save-steps", required_argument, 0, OPT_SAVE_STEPS},
        {0, 0, 0, 0},
    };
    cli_common co;
    cli_common_init(&co, argc);
    int c, rc = 0;
    base_buf *st = &co.stage;
    optind = 1;
    while (!rc && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = cli_common_opt(&co, "sft", c, optarg);
        if (r >= 0) {
            rc = r;
            continue;
        }
        switch (c) {
        case OPT_EPOCHS: rc = cli_flag_num(&co, "sft", "--epochs", 1, "num_train_epochs", optarg, 0); break;
        case OPT_MAX_STEPS: rc = cli_flag_num(&co, "sft", "--max-steps", 1, "max_steps", optarg, 1); break;
        case OPT_LR: rc = cli_flag_num(&co, "sft", "--lr", 1, "learning_rate", optarg, 0); break;
        case OPT_SCHED: cli_flag_str(&co, "--scheduler", 1, "lr_scheduler_type", optarg); break;
        case OPT_WARMUP: rc = cli_flag_num(&co, "sft", "--warmup-ratio", 1, "warmup_ratio", optarg, 0); break;
        case OPT_WD: rc = cli_flag_num(&co, "sft", "--weight-decay", 1, "weight_decay", optarg, 0); break;
        case OPT_BATCH:
            rc = cli_flag_num(&co, "sft", "--batch-size", 1, "per_device_train_batch_size", optarg, 1);
            break;
        case OPT_ACCUM:
            rc = cli_flag_num(&co, "sft", "--grad-accum", 1, "gradient_accumulation_steps", optarg, 1);
            break;
        case OPT_MAX_LEN: rc = cli_flag_num(&co, "sft", "--max-length", 1, "max_length", optarg, 1); break;
        case OPT_NO_PACKING: base_buf_puts(st, "packing = false,\n"); break;
        case OPT_ALL_TOKENS: base_buf_puts(st, "assistant_only_loss = false,\n"); break;
        case OPT_SAVE_STEPS: rc = cli_flag_num(&co, "sft", "--save-steps", 1, "save_steps", optarg, 1); break;
        case 'h': fputs(USAGE, stdout); rc = -1; break;
        default: fputs(USAGE, stderr); rc = 2; break;
        }
    }
    if (!rc && optind != argc) rc = cli_usage_error("sft", "unexpected argument '%s'", argv[optind]);
    if (!rc && (!co.model || !co.in || !co.out))
        rc = cli_usage_error("sft", "--model, --in and --out are required (--help)");
    if (!rc && co.ro.resume && co.ro.overwrite) rc = cli_usage_error("sft", "--resume and --overwrite exclude each other");
    if (!rc && co.ro.resume && !co.run_dir) rc = cli_usage_error("sft", "--resume needs --run-dir");
    if (!rc && co.ro.allow_changes && !co.ro.resume) rc = cli_usage_error("sft", "--allow-changes goes with --resume");
    if (rc) {
        cli_common_free(&co);
        return rc < 0 ? 0 : rc;
    }
    cli_run_dir rd;
    base_buf src = {0};
    if (cli_run_dir_open("sft", co.run_dir, &rd)) {
        fprintf(stderr, "grpo sft: %s\n", base_err_msg());
        rc = 1;
    } else {
        cli_recipe_begin(&src, &co, &rd, NULL); /* no rewards: cannot fail */
        cli_recipe_stage(&src, &co, "sft", NULL);
        rc = cli_run_recipe_src("sft", src.data, &co, &rd);
    }
    if (!rc) {
        char *ck = latest_checkpoint(rd.path);
        if (!ck) {
            fprintf(stderr, "grpo sft: %s/checkpoints: no complete checkpoint to export\n", rd.path);
            rc = 1;
        } else if (export_model(ck, co.out)) {
            fprintf(stderr, "grpo sft: %s\n", base_err_msg());
            rc = 1;
        } else if (!co.ro.quiet) { /* a temporary run directory is gone when this is read */
            if (rd.tmp) fprintf(stderr, "grpo sft: wrote the model to %s\n", co.out);
            else fprintf(stderr, "grpo sft: wrote the model to %s (from %s)\n", co.out, ck);
        }
        free(ck);
    }
    if (rd.path) cli_run_dir_close(&rd);
    base_buf_free(&src);
    cli_common_free(&co);
    return rc;
}
