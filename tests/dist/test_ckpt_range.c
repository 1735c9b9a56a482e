/*
 * ZeRO 3 checkpoint weights from ranges (src/train/ckpt_shard.c) as MPI
 * ranks (mpirun -np 1, 2, 4) and as one process: each rank holds the
 * run_split range [lo, hi) of a flat f32 arena laid out like the
 * hf-tiny-v3-a model's but with gaps between the tensors (filled with
 * values that must never reach a file) and writes its part of the
 * consolidated files:
 *   - model.safetensors (one file), Hugging Face shards (a third of the
 *     model per shard) and a "ref" stem: every file byte for byte what one
 *     process writes for the whole model (run_ckpt_write_weights), with
 *     each rank's host peak within its 4 KiB buffer;
 *   - every file read back into the ranges of 1, 2 and 4 ranks
 *     (run_ckpt_read_range) equals the arena's ranges bit for bit (the
 *     gaps untouched);
 *   - a rank with a bad range, and rank 0 unable to create the files:
 *     every rank fails, the failing rank's message says why, the others
 *     name it, and no file (final or temporary) is left.
 * The ranks share DIR_ (made by rank 0, its path broadcast): the shared
 * filesystem the write assumes.
 */
#include "common/test_common.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "io/st.h"
#include "recipe/recipe.h"
#include "train/run_internal.h"

static int R, W;
static char DIR_[1024];
static model *M;
static model_param *P; /* the model's table with gaps: offset_i + GAP * (i + 1) */
static int NP;
static float *ARENA; /* [NUMEL]: the tensors' values at P's offsets, gap values between */
static int64_t NUMEL;
#define GAP 5

static run_ctx ctx(void) {
    run_ctx c;
    memset(&c, 0, sizeof c);
    c.rank = R, c.world = W, c.host = dist_world();
    return c;
}

static char *sub(const char *rel) {
    base_buf b = {0};
    base_buf_printf(&b, "%s/%s", DIR_, rel);
    return b.data;
}

static int setup(void **state) {
    (void)state;
    if (R == 0) {
        char *t = test_tmpdir();
        snprintf(DIR_, sizeof DIR_, "%s", t);
        free(t);
        char *m = sub("model");
        test_tiny_model(m, 0);
        free(m);
        const char *dirs[] = {"one", "one-ref", "sharded", "ref", "fail1", "fail2", "whole", "whole-sharded"};
        for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
            char *p = sub(dirs[i]);
            if (base_mkdir_p(p)) base_die("%s", base_err_msg());
            free(p);
        }
    }
    if (dist_broadcast(dist_world(), DIR_, sizeof DIR_, DIST_U8, 0)) base_die("%s", base_err_msg());
    char *m = sub("model");
    model_load_opts o = {0};
    if (model_load(m, ops_cpu(), &o, &M)) base_die("%s", base_err_msg());
    free(m);
    NP = model_nparams(M);
    P = malloc((size_t)NP * sizeof *P);
    for (int i = 0; i < NP; i++) {
        P[i] = *model_param_at(M, i);
        P[i].offset += (int64_t)GAP * (i + 1);
    }
    NUMEL = model_numel(M) + (int64_t)GAP * (NP + 1);
    ARENA = malloc((size_t)NUMEL * sizeof(float));
    for (int64_t e = 0; e < NUMEL; e++) ARENA[e] = 1e6f + (float)e; /* gaps */
    for (int i = 0; i < NP; i++)
        model_weights_range_to_host(M, model_param_at(M, i)->offset, P[i].numel, ARENA + P[i].offset);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    dist_barrier(dist_world());
    if (R == 0) test_rmdir(DIR_);
    free(P), free(ARENA);
    model_free(M);
    return 0;
}

static size_t total_bytes(void) {
    size_t n = 0;
    for (int i = 0; i < NP; i++) n += (size_t)P[i].numel * sizeof(float);
    return n;
}

/* This rank's range of the gapped arena as a shard (host memory, or the
 * CPU op table's memory), written collectively into DIR_/rel. */
static base_status write_ranges(const char *rel, const char *stem, uint64_t shard_bytes, int on_ops, size_t *peak) {
    int64_t lo, hi;
    run_split(NUMEL, R, W, &lo, &hi);
    const struct ops *o = ops_cpu();
    float *shard = on_ops ? o->alloc((size_t)(hi - lo + 1) * sizeof(float)) : malloc((size_t)(hi - lo + 1) * sizeof(float));
    if (on_ops) o->upload(shard, ARENA + lo, (size_t)(hi - lo) * sizeof(float));
    else memcpy(shard, ARENA + lo, (size_t)(hi - lo) * sizeof(float));
    run_ckpt_range r = {P, NP, lo, hi, shard, on_ops ? o : NULL, 4096, shard_bytes};
    run_ctx c = ctx();
    char *dir = sub(rel);
    base_status s = run_ckpt_write_range(&c, &r, dir, stem, peak);
    free(dir);
    if (on_ops) o->free(shard);
    else free(shard);
    return s;
}

/* Rank 0: every file of DIR_/a is in DIR_/b with the same bytes. */
static void same_files(const char *a, const char *b) {
    if (R != 0) return;
    char *da = sub(a), *db = sub(b);
    DIR *d = opendir(da);
    assert_non_null(d);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *pa = base_path_join(da, e->d_name), *pb = base_path_join(db, e->d_name), *x, *y;
        size_t xl, yl;
        if (base_read_file(pa, &x, &xl)) fail_msg("%s", base_err_msg());
        if (base_read_file(pb, &y, &yl)) fail_msg("%s", base_err_msg());
        assert_int_equal(xl, yl);
        assert_memory_equal(x, y, xl);
        free(x), free(y), free(pa), free(pb);
        n++;
    }
    closedir(d);
    assert_true(n >= 1);
    free(da), free(db);
}

/* Every rank: the ranges of w ranks read back from DIR_/rel equal the arena's. */
static void read_back(const char *rel, const char *stem, int w) {
    char *dir = sub(rel);
    for (int k = 0; k < w; k++) {
        int64_t lo, hi;
        run_split(NUMEL, k, w, &lo, &hi);
        size_t n = (size_t)(hi - lo);
        float *got = malloc((n + 1) * sizeof(float));
        for (size_t i = 0; i < n; i++) got[i] = ARENA[lo + (int64_t)i]; /* gaps as they are */
        for (int i = 0; i < NP; i++)
            for (int64_t e = P[i].offset; e < P[i].offset + P[i].numel; e++)
                if (e >= lo && e < hi) got[e - lo] = -7.0f;
        run_ckpt_range r = {P, NP, lo, hi, got, k % 2 ? ops_cpu() : NULL, 4096, 0};
        assert_int_equal(run_ckpt_read_range(dir, stem, &r, NULL), BASE_OK);
        assert_memory_equal(got, ARENA + lo, n * sizeof(float));
        free(got);
    }
    free(dir);
}

static void test_write_read(void **state) {
    (void)state;
    uint64_t third = total_bytes() / 3;
    if (R == 0) { /* one process, the whole model */
        char *a = sub("whole"), *b = sub("whole-sharded");
        assert_int_equal(run_ckpt_write_weights(M, a, "model", 0, UINT64_MAX, NULL), BASE_OK);
        assert_int_equal(run_ckpt_write_weights(M, a, "ref", 0, UINT64_MAX, NULL), BASE_OK);
        assert_int_equal(run_ckpt_write_weights(M, b, "model", 0, third, NULL), BASE_OK);
        free(a), free(b);
    }
    size_t peak = 0;
    assert_int_equal(write_ranges("one", "model", UINT64_MAX, 0, &peak), BASE_OK);
    assert_true(peak > 0 && peak <= 4096);
    assert_int_equal(write_ranges("one-ref", "model", UINT64_MAX, 1, &peak), BASE_OK);
    assert_int_equal(write_ranges("one-ref", "ref", UINT64_MAX, 0, &peak), BASE_OK);
    assert_int_equal(write_ranges("sharded", "model", third, 1, &peak), BASE_OK);
    assert_true(peak > 0 && peak <= 4096);
    if (R == 0) printf("%d ranks: %zu weight bytes, this rank's host peak %zu bytes\n", W, total_bytes(), peak);
    dist_barrier(dist_world());
    same_files("one", "whole");
    same_files("one-ref", "whole");
    same_files("sharded", "whole-sharded");
    if (R == 0) {
        const char *rel[4] = {"one", "one-ref", "sharded", "whole-sharded"};
        int want[4] = {1, 2, -1, -1};
        for (int k = 0; k < 4; k++) {
            char *p = sub(rel[k]);
            int n = test_count_entries(p);
            if (want[k] > 0) assert_int_equal(n, want[k]);
            else assert_true(n >= 4); /* 3 or more shards and the index */
            free(p);
        }
        char *p = sub("sharded"), *q = sub("whole-sharded");
        assert_int_equal(test_count_entries(p), test_count_entries(q));
        free(p), free(q);
    }
    for (int w = 1; w <= 4; w *= 2) {
        read_back("one", "model", w);
        read_back("one-ref", "ref", w);
        read_back("sharded", "model", w);
        read_back("whole-sharded", "model", w);
    }
}

static void test_failures(void **state) {
    (void)state;
    /* the last rank's range is bad: every rank fails at the layout */
    int64_t lo, hi;
    run_split(NUMEL, R, W, &lo, &hi);
    float *shard = malloc((size_t)(hi - lo + 1) * sizeof(float));
    memcpy(shard, ARENA + lo, (size_t)(hi - lo) * sizeof(float));
    run_ckpt_range r = {P, NP, lo, hi, R == W - 1 ? NULL : shard, NULL, 4096, 0};
    run_ctx c = ctx();
    char *dir = sub("fail1");
    base_status s = run_ckpt_write_range(&c, &r, dir, "model", NULL);
    assert_int_not_equal(s, BASE_OK);
    char want[64];
    snprintf(want, sizeof want, "rank %d failed", W - 1);
    if (R == W - 1) assert_non_null(strstr(base_err_msg(), "bad range"));
    else assert_non_null(strstr(base_err_msg(), want));
    dist_barrier(dist_world());
    assert_int_equal(test_count_entries(dir), 0);
    free(dir);
    /* rank 0 cannot create the files (no such directory): nothing anywhere */
    r.shard = shard;
    dir = sub("fail2/missing");
    s = run_ckpt_write_range(&c, &r, dir, "model", NULL);
    assert_int_not_equal(s, BASE_OK);
    if (R == 0) assert_non_null(strstr(base_err_msg(), "fail2/missing/model.safetensors.tmp"));
    else assert_non_null(strstr(base_err_msg(), "rank 0 failed"));
    dist_barrier(dist_world());
    char *parent = sub("fail2");
    assert_int_equal(test_count_entries(parent), 0);
    free(parent), free(dir), free(shard);
}

int main(int argc, char **argv) {
    if (dist_init(&argc, &argv)) {
        fprintf(stderr, "dist_init: %s\n", base_err_msg());
        return 1;
    }
    R = dist_rank(), W = dist_world_size();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_read),
        cmocka_unit_test(test_failures),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    dist_finalize();
    return rc;
}
