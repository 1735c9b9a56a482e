/*
 * grpo sample --model DIR --in prompts.jsonl --rewards SPEC --out sft.jsonl
 *             [--n N] [--keep EXPR] [--filters a,b] [--max-per-prompt K] ...
 *
 * Rejection sampling (DeepSeek-R1 §2.3.3) as one command: builds a recipe
 * with one `sample` stage (src/train/stage_sample.c documents it) and runs
 * it. Writes the kept samples as SFT rows to --out and the per-prompt pass
 * rates beside it (OUT without ".jsonl" + ".pass_rates.jsonl"). The run
 * directory (metrics, every completion with its decision, summary.json) is
 * temporary unless --run-dir names one.
 * Exit status: 0 done; 1 bad input or a failed stage; 2 bad usage.
 */
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>

#include "cli/recipe_cli.h"

static const char *USAGE =
    "usage: grpo sample --model DIR --in prompts.jsonl --rewards SPEC --out sft.jsonl\n"
    "                   [--n N] [--keep EXPR] [--filters a,b] [--max-per-prompt K]\n"
    "                   [--lang L] [--min-lang-ratio R] [--max-paragraph-chars N]\n"
    "                   [--merge extra_sft.jsonl ...] [--temperature T] [--top-p P] [--top-k K]\n"
    "                   [--min-p P] [--max-new-tokens N] [--max-prompt-length N] [--stop STR ...]\n"
    "                   [--template T] [--system TEXT] [--prompt-column COL] [--tokenizer DIR]\n"
    "                   [--seed S] [--limit N] [--run-dir DIR [--overwrite]] [--device D]\n"
    "                   [--precision f32|bf16|fp8]\n"
    "                   [--set key=value ...] [--quiet]\n"
    "Samples N completions per prompt (default 4, temperature 0.6, top-p 0.95), scores them with\n"
    "the reward spec (NAME=PATH:WEIGHT{K=V;...}, comma-separated; bare names are built-in\n"
    "scripts), keeps those for which the Lua expression --keep is true (default 'reward > 0';\n"
    "globals: reward, rewards.NAME, sample, completion, finish_reason) and that pass the\n"
    "filters (mixed_language, long_paragraphs, code_blocks; on the reasoning), at most K per\n"
    "prompt (default 1; 0 = all), and writes them to --out as SFT rows {\"prompt\" (as the model\n"
    "saw it), \"completion\", \"prompt_template\", \"messages\" (chat form), ...row} (train them with\n"
    "the same --template), followed by the rows of the --merge files. Pass rates per prompt go to\n"
    "OUT.pass_rates.jsonl. The run directory is temporary unless --run-dir DIR keeps it.\n"
    "--set stages.sample.KEY=VALUE sets any other key of the sample stage (docs/recipes.md).\n"
    "--template T: r1-zero (the default), chat, r1, raw, or text with {prompt} and {system}, read\n"
    "as a recipe's Lua string: '{prompt}\\n' ends in a newline, '\\\\' is one backslash.\n";

enum { OPT_KEEP = CLI_OPT_FIRST_OWN, OPT_FILTERS, OPT_LANG, OPT_MIN_LANG, OPT_MAX_PARA, OPT_MAX_PER, OPT_MERGE };

/* OUT.jsonl -> OUT.pass_rates.jsonl (malloc'd) */
static char *pass_rates_path(const char *out) {
    size_t n = strlen(out);
    base_buf b = {0};
    if (n > 6 && !strcmp(out + n - 6, ".jsonl")) n -= 6;
    base_buf_append(&b, out, n);
    base_buf_puts(&b, ".pass_rates.jsonl");
    return b.data;
}

int cli_cmd_sample(int argc, char **argv) {
    static struct option opts[] = {
        CLI_COMMON_OPTIONS,
        CLI_SAMPLING_OPTIONS,
        {"keep", required_argument, 0, OPT_KEEP},
        {"filters", required_argument, 0, OPT_FILTERS},
        {"lang", required_argument, 0, OPT_LANG},
        {"min-lang-ratio", required_argument, 0, OPT_MIN_LANG},
        {"max-paragraph-chars", required_argument, 0, OPT_MAX_PARA},
        {"max-per-prompt", required_argument, 0, OPT_MAX_PER},
        {"merge", required_argument, 0, OPT_MERGE},
        {0, 0, 0, 0},
    };
    cli_common co;
    cli_common_init(&co, argc);
    base_buf merges = {0}, merge_names = {0};
    int n_merge = 0, c, rc = 0;
    optind = 1;
    while (!rc && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = cli_common_opt(&co, "sample", c, optarg);
        if (r >= 0) {
            rc = r;
            continue;
        }
        switch (c) {
        case OPT_KEEP: cli_lua_kv_str(&co.stage, "keep", optarg); break;
        case OPT_FILTERS: cli_flag_list(&co, "--filters", 1, "filters", optarg); break;
        case OPT_LANG: cli_flag_str(&co, "--lang", 1, "lang", optarg); break;
        case OPT_MIN_LANG: rc = cli_flag_num(&co, "sample", "--min-lang-ratio", 1, "min_lang_ratio", optarg, 0); break;
        case OPT_MAX_PARA:
            rc = cli_flag_num(&co, "sample", "--max-paragraph-chars", 1, "max_paragraph_chars", optarg, 1);
            break;
        case OPT_MAX_PER: rc = cli_flag_num(&co, "sample", "--max-per-prompt", 1, "max_per_prompt", optarg, 1); break;
        case OPT_MERGE:
            base_buf_printf(&merges, "  merge_%d = { path = ", ++n_merge);
            cli_lua_str(&merges, optarg);
            base_buf_puts(&merges, " },\n");
            base_buf_printf(&merge_names, "\"merge_%d\", ", n_merge);
            break;
        case 'h': fputs(USAGE, stdout); rc = -1; break;
        default: fputs(USAGE, stderr); rc = 2; break;
        }
    }
    if (!rc && optind != argc) rc = cli_usage_error("sample", "unexpected argument '%s'", argv[optind]);
    if (!rc && (!co.model || !co.in || !co.rewards || !co.out))
        rc = cli_usage_error("sample", "--model, --in, --rewards and --out are required (--help)");
    if (rc) {
        cli_common_free(&co);
        base_buf_free(&merges), base_buf_free(&merge_names);
        return rc < 0 ? 0 : rc;
    }
    cli_run_dir rd;
    base_buf src = {0};
    if (cli_run_dir_open("sample", co.run_dir, &rd)) {
        fprintf(stderr, "grpo sample: %s\n", base_err_msg());
        rc = 1;
    } else if (cli_recipe_begin(&src, &co, &rd, merges.data)) {
        fprintf(stderr, "grpo sample: --rewards: %s\n", base_err_msg());
        rc = 2;
    }
    if (!rc) {
        base_buf extra = {0};
        cli_lua_kv_str(&extra, "output", co.out);
        if (n_merge) base_buf_printf(&extra, "merge_datasets = { %s},\n", merge_names.data);
        cli_recipe_stage(&src, &co, "sample", extra.data);
        base_buf_free(&extra);
        rc = cli_run_recipe_src("sample", src.data, &co, &rd);
    }
    if (!rc) { /* the pass rates beside the output */
        char *from = base_path_join(rd.path, "sample.pass_rates.jsonl"), *to = pass_rates_path(co.out);
        if (cli_copy_file(from, to)) {
            fprintf(stderr, "grpo sample: %s\n", base_err_msg());
            rc = 1;
        } else if (!co.ro.quiet) {
            fprintf(stderr, "grpo sample: wrote %s and %s\n", co.out, to);
        }
        free(from), free(to);
    }
    if (rd.path) cli_run_dir_close(&rd);
    base_buf_free(&src), base_buf_free(&merges), base_buf_free(&merge_names);
    cli_common_free(&co);
    return rc;
}
