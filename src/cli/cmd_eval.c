/*
 * grpo eval --model DIR --in test.jsonl --rewards SPEC [--n K] [--out summary.json] ...
 *
 * Evaluation as one command: a recipe with one `eval` stage
 * (src/train/stage_eval.c): K samples per prompt at the R1 paper's
 * settings (temperature 0.6, top-p 0.95 unless given), pass@1 = the mean
 * over prompts of the mean over K samples of the FIRST reward function's
 * score, and cons@K = majority vote of the extracted answers against the
 * `answer` column (when rows have one). Prints "pass@1 ... cons@K ..." and
 * writes the stage's JSON summary to --out, or to stdout when there is no
 * --out (the line then goes to stderr). The run directory (every sample in
 * eval.samples.jsonl) is temporary unless --run-dir names one.
 * Exit status: 0 done; 1 bad input or a failed stage; 2 bad usage.
 */
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>

#include "cli/recipe_cli.h"

static const char *USAGE =
    "usage: grpo eval --model DIR --in test.jsonl --rewards SPEC [--n K] [--out summary.json]\n"
    "                 [--answer-from boxed|answer_tag|last_number] [--temperature T] [--top-p P]\n"
    "                 [--top-k K] [--min-p P] [--max-new-tokens N] [--max-prompt-length N]\n"
    "                 [--stop STR ...] [--template T] [--system TEXT] [--prompt-column COL]\n"
    "                 [--tokenizer DIR] [--seed S] [--limit N] [--run-dir DIR [--overwrite]]\n"
    "                 [--device D] [--precision f32|bf16|fp8] [--set key=value ...] [--quiet]\n"
    "pass@1 over K samples per prompt (default K = 4, temperature 0.6, top-p 0.95: the R1\n"
    "paper's settings) with the FIRST reward of the spec as the accuracy, and cons@K (majority\n"
    "vote of the answers extracted with --answer-from, default boxed) against the rows'\n"
    "`answer` column. The JSON summary goes to --out, else to stdout.\n"
    "--template T: r1-zero (the default), chat, r1, raw, or text with {prompt} and {system}, read\n"
    "as a recipe's Lua string: '{prompt}\\n' ends in a newline, '\\\\' is one backslash.\n";

enum { OPT_ANSWER_FROM = CLI_OPT_FIRST_OWN };

int cli_cmd_eval(int argc, char **argv) {
    static struct option opts[] = {
        CLI_COMMON_OPTIONS,
        CLI_SAMPLING_OPTIONS,
        {"answer-from", required_argument, 0, OPT_ANSWER_FROM},
        {0, 0, 0, 0},
    };
    cli_common co;
    cli_common_init(&co, argc);
    int c, rc = 0;
    optind = 1;
    while (!rc && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = cli_common_opt(&co, "eval", c, optarg);
        if (r >= 0) {
            rc = r;
            continue;
        }
        switch (c) {
        case OPT_ANSWER_FROM: cli_flag_str(&co, "--answer-from", 1, "answer_from", optarg); break;
        case 'h': fputs(USAGE, stdout); rc = -1; break;
        default: fputs(USAGE, stderr); rc = 2; break;
        }
    }
    if (!rc && optind != argc) rc = cli_usage_error("eval", "unexpected argument '%s'", argv[optind]);
    if (!rc && (!co.model || !co.in || !co.rewards))
        rc = cli_usage_error("eval", "--model, --in and --rewards are required (--help)");
    if (rc) {
        cli_common_free(&co);
        return rc < 0 ? 0 : rc;
    }
    cli_run_dir rd;
    base_buf src = {0};
    if (cli_run_dir_open("eval", co.run_dir, &rd)) {
        fprintf(stderr, "grpo eval: %s\n", base_err_msg());
        rc = 1;
    } else if (cli_recipe_begin(&src, &co, &rd, NULL)) {
        fprintf(stderr, "grpo eval: --rewards: %s\n", base_err_msg());
        rc = 2;
    }
    if (!rc) {
        cli_recipe_stage(&src, &co, "eval", NULL);
        rc = cli_run_recipe_src("eval", src.data, &co, &rd);
    }
    cJSON *summary = NULL;
    if (!rc) {
        char *p = base_path_join(rd.path, "summary.json");
        if (base_json_parse_file(p, &summary)) {
            fprintf(stderr, "grpo eval: %s\n", base_err_msg());
            rc = 1;
        }
        free(p);
    }
    const cJSON *ev = summary ? cJSON_GetObjectItemCaseSensitive(summary, "eval") : NULL;
    if (!rc && !cJSON_IsObject(ev)) {
        fprintf(stderr, "grpo eval: %s/summary.json has no \"eval\" entry\n", rd.path);
        rc = 1;
    }
    if (!rc) {
        /* the human line: stdout when the JSON goes to a file */
        FILE *hf = co.out ? stdout : stderr;
        const cJSON *p1 = cJSON_GetObjectItemCaseSensitive(ev, "pass@1");
        if (cJSON_IsNumber(p1)) fprintf(hf, "pass@1 %.4f", p1->valuedouble);
        else fprintf(hf, "pass@1 null (no sample scored)");
        for (const cJSON *e = ev->child; e; e = e->next)
            if (!strncmp(e->string, "cons@", 5)) fprintf(hf, "  %s %.4f", e->string, e->valuedouble);
        fprintf(hf, "  (%g prompts x %g samples)\n", base_json_num(ev, "n_prompts", 0, NULL),
                base_json_num(ev, "num_generations", 0, NULL));
        char *text = base_json_print(ev, 1);
        if (co.out) {
            base_buf b = {0};
            base_buf_puts(&b, text);
            if (base_write_file_atomic(co.out, b.data, b.len)) {
                fprintf(stderr, "grpo eval: %s\n", base_err_msg());
                rc = 1;
            }
            base_buf_free(&b);
        } else {
            fputs(text, stdout);
        }
        free(text);
    }
    cJSON_Delete(summary);
    if (rd.path) cli_run_dir_close(&rd);
    base_buf_free(&src);
    cli_common_free(&co);
    return rc;
}
