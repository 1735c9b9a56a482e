/*
 * grpo run RECIPE.lua [--set key.path=value ...] [--resume [--allow-changes] | --resume-from-last-good | --overwrite]
 *                     [--device cpu|cuda|auto] [--quiet] [--max-total-steps N]
 *
 * Runs every stage of a Lua recipe (see src/train/run.h and docs/recipes.md).
 * Exit status: 0 done; 1 bad input or a failed stage (the message names the
 * stage, file and line); 2 bad usage; 128 + N stopped by signal N (130
 * SIGINT, 143 SIGTERM, 138 SIGUSR1) after the current step and its
 * checkpoint. Under mpirun / srun every rank runs it (docs/distributed.md).
 */
#include "cli/cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "recipe/recipe.h"
#include "train/run.h"

static const char *USAGE =
    "usage: grpo run RECIPE.lua [--set key.path=value ...] [--resume | --resume-from-last-good | --overwrite]\n"
    "                [--allow-changes] [--device cpu|cuda|auto] [--precision f32|bf16|fp8] [--quiet]\n"
    "                [--max-total-steps N]\n"
    "  --set a.b=v        override any recipe value (stages by name or 1-based index:\n"
    "                     --set stages.grpo.beta=0.01); repeatable\n"
    "  --resume           continue the run from its last checkpoint (bit-exact); the\n"
    "                     recipe must not change what the run trains (the changes are\n"
    "                     listed against the run's config.resolved.lua)\n"
    "  --allow-changes    with --resume: accept such changes (the earlier config is kept\n"
    "                     in config.history/)\n"
    "  --resume-from-last-good\n"
    "                     --resume from the newest checkpoint that verifies; newer\n"
    "                     corrupt ones are renamed checkpoints/corrupt-step-N\n"
    "  --overwrite        replace an existing run directory (one grpo created: it\n"
    "                     holds a .grpo-run marker)\n"
    "  --device D         backend (default: the recipe's, auto = cuda when usable)\n"
    "  --precision P      f32, bf16 or fp8 (default: the recipe's `precision`; training in bf16 needs\n"
    "                     cuda; fp8 only for runs that train nothing: sample and eval stages)\n"
    "  --max-total-steps  stop (with a checkpoint) after N training steps of the run\n"
    "Ctrl-C (SIGINT), SIGTERM or SIGUSR1: finish the current step, write a checkpoint,\n"
    "exit 130 (143, 138); a second one exits at once. --resume continues.\n"
    "Several processes: mpirun -np N grpo run RECIPE.lua (one per GPU; batch sizes are\n"
    "global); kill -USR1 <mpirun's pid> stops every rank at the same step.\n";

int cli_cmd_run(int argc, char **argv) {
    static struct option opts[] = {
        {"set", required_argument, 0, 's'},    {"resume", no_argument, 0, 'r'},
        {"overwrite", no_argument, 0, 'o'},    {"device", required_argument, 0, 'd'},
        {"quiet", no_argument, 0, 'q'},        {"max-total-steps", required_argument, 0, 'm'},
        {"precision", required_argument, 0, 'p'},
        {"resume-from-last-good", no_argument, 0, 'g'},
        {"allow-changes", no_argument, 0, 'a'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0},
    };
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    int nsets = 0, c;
    run_opts ro = {0};
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's': sets[nsets++] = optarg; break;
        case 'r': ro.resume = 1; break;
        case 'g': ro.resume = ro.resume_last_good = 1; break;
        case 'o': ro.overwrite = 1; break;
        case 'a': ro.allow_changes = 1; break;
        case 'd': ro.device = optarg; break;
        case 'p': ro.precision = optarg; break;
        case 'q': ro.quiet = 1; break;
        case 'm': {
            char *end;
            long long v = strtoll(optarg, &end, 10);
            if (!*optarg || *end || v < 0) {
                free(sets);
                return cli_usage_error("run", "--max-total-steps %s: must be an integer >= 0 (0: no limit)", optarg);
            }
            ro.max_total_steps = v;
            break;
        }
        case 'h': fputs(USAGE, stdout); free(sets); return 0;
        default: fputs(USAGE, stderr); free(sets); return 2;
        }
    }
    if (optind != argc - 1 || (ro.resume && ro.overwrite)) {
        fputs(USAGE, stderr);
        free(sets);
        return 2;
    }
    if (ro.allow_changes && !ro.resume) {
        free(sets);
        return cli_usage_error("run", "--allow-changes goes with --resume (a new run takes the recipe as it is)");
    }
    recipe *rc;
    if (recipe_load(argv[optind], sets, nsets, &rc)) {
        fprintf(stderr, "grpo run: %s\n", base_err_msg());
        free(sets);
        return 1;
    }
    free(sets);
    int rcode = 0;
    ro.stop_signal = cli_catch_stop_signals();
    base_status s = run_recipe(rc, &ro);
    if (s) {
        fprintf(stderr, "%s run: %s\n", base_log_tag(), base_err_msg());
        rcode = s == BASE_ERR_INTERRUPTED && *ro.stop_signal ? 128 + *ro.stop_signal : 1;
    }
    recipe_free(rc);
    return rcode;
}
