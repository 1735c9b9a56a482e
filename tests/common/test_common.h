/*
 * Helpers shared by the tests: where the fixtures are, temporary
 * directories, random tensors, and float comparison with a message.
 */
#ifndef GRPO_TEST_COMMON_H
#define GRPO_TEST_COMMON_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* $SHARED_DIR/rel (default ../shared); malloc'd. */
char *test_shared_path(const char *rel);
/* $GRPO_SRC/rel (the source tree); malloc'd. */
char *test_src_path(const char *rel);
/* A fresh empty temporary directory; malloc'd. Removed by test_rmdir. */
char *test_tmpdir(void);
void test_rmdir(const char *dir); /* rm -r */
/* Write a file (dies on failure). */
void test_write_file(const char *path, const void *data, size_t n);
/* Copy $SHARED_DIR/rel to dst (dies on failure). */
void test_copy_shared(const char *rel, const char *dst);
/* A tiny DeepSeek-V3 config.json text (free it): `over`'s keys (may be "")
 * first, so they replace the defaults (a cJSON lookup takes the first of
 * duplicate keys), then vocab 61, hidden 32, 3 layers (the first dense), 8
 * routed experts and 1 shared, 3 per token from 2 of 4 groups, MLA ranks
 * kv 16 / q 24; no rope_scaling, no MTP layer. */
char *test_tiny_config(const char *over);
/* dir (created) holding the shared hf-tiny-v3-a fixture (config.json and
 * model.safetensors), plus a byte-level tokenizer when tokenizer != 0. */
void test_tiny_model(const char *dir, int tokenizer);
/* test_tiny_model with routed experts 0 and 1 (group 0) favoured by
 * `boost` in every MoE layer's e_score_correction_bias: a deliberately
 * unbalanced router (with 0.3 they take every token: load max/mean 4). */
void test_tiny_model_unbalanced(const char *dir, int tokenizer, float boost);
/* dir (created) holding what the run tests train on: model/ (test_tiny_model
 * with its tokenizer), data.jsonl (24 addition prompts "What is a + b?" with
 * ids 0..23 and answers) and vary.lua (a reward that varies between the
 * samples of a group, so every GRPO step has non-zero advantages and the
 * weights really move). */
void test_run_fixture(const char *dir);
/* A run's metrics.jsonl at `path` as one canonical string: every line
 * re-printed without its wall-clock fields (step_time, time/rollout,
 * time/reward, time/train, tokens_per_s), so two runs that computed the same
 * thing compare equal; malloc'd. Fails the test on a missing file or a line
 * that is not JSON. */
char *test_metrics_canon(const char *path);
/* Write text into dir/rel (dies on failure). */
void test_write_text(const char *dir, const char *rel, const char *text);
/* Entries in dir other than . and ..; -1 when it cannot be opened. */
int test_count_entries(const char *dir);
/* What a model computes for one fixed input: full-forward logits [2 x 46 x V]
 * of two packed sequences, the training forward's log-probs [46], and the
 * logits of a prefill of 6 tokens then 15 decode steps [16 x V]; on any
 * backend (downloaded). test_model_outputs_free releases them. */
typedef struct model model;
typedef struct {
    float *full, *logp, *dec;
    int64_t nfull, nlogp, ndec;
} test_model_outputs;
void test_model_outputs_run(model *m, test_model_outputs *o);
void test_model_outputs_free(test_model_outputs *o);
/* A copy of `inner`'s op table whose alloc and free count the live and
 * peak bytes of device allocations (one set of counters per process; at
 * most 4096 live allocations); register it with ops_register to run on it.
 * test_counting_reset_peak sets the peak to the live bytes. */
struct ops;
const struct ops *test_counting_ops(const struct ops *inner, const char *name);
size_t test_counting_live(void);
size_t test_counting_peak(void);
void test_counting_reset_peak(void);
/* Uniform floats in [-scale, scale) from a seed. */
void test_rand_f32(float *x, int64_t n, uint64_t seed, float scale);
/* max |a-b| and the relative L2 norm ||a-b|| / ||b||. */
double test_max_abs_diff(const float *a, const float *b, int64_t n);
double test_rel_l2(const float *a, const float *b, int64_t n);
/* Run the grpo program with a shell command line suffix; returns the exit
 * status; stdout+stderr captured into *out (malloc'd) when out != NULL. */
int test_run_grpo(const char *args, char **out);

#endif
