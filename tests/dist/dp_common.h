/* Shared by tests/dist/test_dp.c, test_zero.c, test_ep_dp.c and test_ep_run.c (dp_common.c). */
#ifndef GRPO_TESTS_DIST_DP_COMMON_H
#define GRPO_TESTS_DIST_DP_COMMON_H

#include "common/test_common.h"

#include <sys/types.h>

#include "base/base.h"

/* Agreement with world size 1 of the losses, gradient norms and weights:
 * |a - b| <= TOL * max(1, |b|). Measured: 1.3e-6 relative on the gradient
 * norm, 1e-7 on the losses (float partial sums added in another grouping). */
#define TOL 1e-4

extern char *DIR_;   /* temp: model/, data.jsonl, vary.lua, flaky.lua, r.lua, runs/ */
extern char *RECIPE; /* DIR_/r.lua */
/* The --set of ZeRO stage s for both training stages (none for 0). */
extern const char *const ZERO[4][5];

char *path_of(const char *rel);
char *read_rel(const char *rel);
int exists_rel(const char *rel);
void write_rel(const char *rel, const char *text);
int setup(void **state);
int teardown(void **state);
pid_t spawn(int np, const char *name, const char *env, const char *const *args);
int wait_exit(pid_t pid);
int run_np(int np, const char *name, const char *env, const char *const *args);
char *err_of(const char *name);
void expect_ok(int rc, const char *name);
double now_s(void);
void wait_metrics(pid_t pid, const char *name, const char *needle);
void wait_exists(pid_t pid, const char *rel);
char *lines_with(const char *rel, const char *needle);
void same_file(const char *a, const char *b);
/* runs/a/rel and runs/b/rel have the same text. */
void same_run_file(const char *a, const char *b, const char *rel);
int close_enough(double a, double b, double tol);
void metrics_within(const char *a, const char *b, double tol);
void metrics_close(const char *a, const char *b);
double weights_within(const char *a, const char *b, double tol);
void weights_close(const char *a, const char *b);
void same_bytes(const char *a, const char *b);
/* The largest relative difference |u - v| / max(1, |v|) over the tensors
 * of safetensors files a and b (under DIR_), which hold the same tensors
 * (in the same order where ordered); *experts, when not NULL, counts the
 * routed experts' tensors. */
double largest_rel_diff(const char *a, const char *b, int ordered, int *experts);
/* Runs a and b's GRPO step-3 checkpoint (with the reference) and SFT
 * step-6 checkpoint byte for byte. */
void same_checkpoints(const char *a, const char *b);
/* weights_within of runs a and b's step-6 model.safetensors. */
double step6_weights_within(const char *a, const char *b, double tol);
/* DIR_/out: r.lua with its SFT stage replaced by stages (kept before them
 * where keep_sft); returns its path (to free). */
char *recipe_sft_to(const char *out, const char *stages, int keep_sft);
int tb_files(const char *name);
/* Run y before its first update against references: its sample rows and
 * eval samples byte for byte those of run rows_ref, its GRPO step-1
 * completions those of run ref (what: the reference, in the message). */
void same_before_update(const char *y, const char *rows_ref, const char *ref, const char *what);
/* Runs a and b's step-6 checkpoints byte for byte: the weights and the
 * optimizer shards of np ranks. */
void same_step6(const char *a, const char *b, int np);
/* stop_resume(name, np1, z1, np2, z2) within tol of the same resume at
 * ZeRO 0 (run ref, made when absent) in its step-6 weights, and its
 * optimizer shards those of np2 ranks at stage z2. */
void resume_within_zero0(const char *name, const char *ref, int np1, int z1, int np2, int z2, double tol);
void with_zero(const char **out, const char *const *args, int zero);
void ensure_run(int np, const char *name, const char *const *args, int zero);
void stop_resume(const char *name, int np1, int z1, int np2, int z2);
void check_shards_at(const char *rel, int w, int stage);
void check_shards(const char *rel, int w);
/* Run NAME's summary.json (*doc, to cJSON_Delete) and its GRPO stage
 * (returned), whose memory_plan_ranks (*plans) and memory_peak_allocated
 * (*peaks) are arrays of np ranks. */
const cJSON *grpo_summary(const char *name, int np, cJSON **doc, const cJSON **plans, const cJSON **peaks);
void plan_equals_peak(const char *name, int np, int zero);
/* Run the tests of `all` named by argv (all without) with setup/teardown. */
int dp_run(const char *group, const struct CMUnitTest *all, size_t n_all, int argc, char **argv);

#endif
