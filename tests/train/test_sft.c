/* Tests of src/train/sft*.c: the masked NLL and its gradient, the BFD
 * packing planner on hand-traced cases and against a naive best-fit oracle,
 * packed-row materialisation (positions, segments, targets, loss mask), and
 * chat-sample parsing and assistant-turn masks. */
#include "common/test_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/sft.h"

static void test_loss(void **state) {
    (void)state;
    float lp[4] = {-1, NAN, -3, -4}; /* the masked position is never read */
    uint8_t m[4] = {1, 0, 1, 1};
    float g[4];
    sft_loss_stats s;
    assert_int_equal(sft_loss(lp, m, 4, 6, g, &s), BASE_OK); /* a step of 6 loss tokens */
    assert_true(fabs(s.loss - 8.0 / 6.0) < 1e-12);
    assert_true(s.nll_sum == 8.0 && s.n_tokens == 3.0);
    assert_true(g[1] == 0.0f);
    for (int i = 0; i < 4; i++)
        if (i != 1) assert_true(fabsf(g[i] + 1.0f / 6.0f) < 1e-8f);
    assert_int_equal(sft_loss(lp, m, 4, 2, g, &s), BASE_ERR_INVALID);
    float lp2[2] = {-0.5f, -1.5f};
    assert_int_equal(sft_count_loss_tokens(NULL, 2), 2);
    assert_int_equal(sft_loss(lp2, NULL, 2, 2, g, &s), BASE_OK);
    assert_true(fabs(s.loss - 1.0) < 1e-12);
    uint8_t none[2] = {0, 0};
    assert_int_equal(sft_loss(lp2, none, 2, 0, g, &s), BASE_OK);
    assert_true(s.loss == 0.0 && g[0] == 0.0f && g[1] == 0.0f);
}

static void expect_row(const sft_pack *p, int64_t r, const int64_t *samples, int n) {
    assert_int_equal(p->row_first[r + 1] - p->row_first[r], n);
    for (int i = 0; i < n; i++) assert_int_equal(p->seg[p->row_first[r] + i].sample, samples[i]);
}

static void test_pack_hand(void **state) {
    (void)state;
    /* row 10; sorted: 10 (#5, cut from 12), 7 (#1), 6 (#7), 5 (#2), 4 (#3),
     * 3 (#0), 2 (#6). 10 -> row 0 (full); 7 -> row 1 (free 3); 6 -> row 2
     * (free 4); 5 -> row 3 (free 5); 4 fits best in row 2 (free 4 -> 0);
     * 3 fits best in row 1 (3 -> 0); 2 -> row 3 (5 -> 3). */
    int64_t lens[8] = {3, 7, 5, 4, 0, 12, 2, 6};
    sft_pack p;
    assert_int_equal(sft_pack_plan(lens, 8, 10, &p), BASE_OK);
    assert_int_equal(p.n_rows, 4);
    assert_int_equal(p.n_truncated, 1);
    assert_int_equal(p.n_empty, 1);
    expect_row(&p, 0, (int64_t[]){5}, 1);
    expect_row(&p, 1, (int64_t[]){1, 0}, 2);
    expect_row(&p, 2, (int64_t[]){7, 3}, 2);
    expect_row(&p, 3, (int64_t[]){2, 6}, 2);
    assert_int_equal(p.row_used[3], 7);
    assert_int_equal(p.seg[p.row_first[2] + 1].start, 6);
    assert_int_equal(p.seg[0].len, 10);
    sft_pack_free(&p);
    /* ties in free space go to the row that reached it first:
     * 4 -> r0 (3 free), 4 -> r1 (3 free), 3 -> r0, 3 -> r1, 3 -> r2 */
    int64_t l2[5] = {4, 4, 3, 3, 3};
    assert_int_equal(sft_pack_plan(l2, 5, 7, &p), BASE_OK);
    assert_int_equal(p.n_rows, 3);
    expect_row(&p, 0, (int64_t[]){0, 2}, 2);
    expect_row(&p, 1, (int64_t[]){1, 3}, 2);
    expect_row(&p, 2, (int64_t[]){4}, 1);
    sft_pack_free(&p);
    int64_t bad[1] = {-1};
    assert_int_equal(sft_pack_plan(bad, 1, 7, &p), BASE_ERR_INVALID);
    assert_int_equal(sft_pack_plan(l2, 5, 0, &p), BASE_ERR_INVALID);
}

/* Naive best fit: scan every row; least free space that fits, ties by the
 * time the row got that free space. */
static void naive_bfd(const int64_t *lens, int64_t n, int64_t row_len, int64_t *row_of,
                      int64_t *n_rows) {
    int64_t *idx = malloc((size_t)n * sizeof(int64_t));
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (lens[i] > 0) idx[m++] = i;
    for (int64_t a = 1; a < m; a++) /* insertion sort: length desc, index asc */
        for (int64_t b = a; b > 0; b--) {
            int64_t x = idx[b - 1], y = idx[b];
            int64_t lx = lens[x] > row_len ? row_len : lens[x], ly = lens[y] > row_len ? row_len : lens[y];
            if (lx > ly || (lx == ly && x < y)) break;
            idx[b - 1] = y, idx[b] = x;
        }
    int64_t *free_ = malloc((size_t)(m + 1) * sizeof(int64_t)), *when = malloc((size_t)(m + 1) * sizeof(int64_t));
    int64_t rows = 0;
    for (int64_t k = 0; k < m; k++) {
        int64_t len = lens[idx[k]] > row_len ? row_len : lens[idx[k]], best = -1;
        for (int64_t r = 0; r < rows; r++)
            if (free_[r] >= len && free_[r] > 0 &&
                (best < 0 || free_[r] < free_[best] || (free_[r] == free_[best] && when[r] < when[best])))
                best = r;
        if (best < 0) best = rows++, free_[best] = row_len;
        free_[best] -= len;
        when[best] = k;
        row_of[idx[k]] = best;
    }
    *n_rows = rows;
    free(idx);
    free(free_);
    free(when);
}

static void test_pack_random(void **state) {
    (void)state;
    enum { N = 1500 };
    for (int trial = 0; trial < 3; trial++) {
        int64_t row_len = trial == 0 ? 256 : (trial == 1 ? 64 : 1000);
        int64_t lens[N];
        float u[N];
        test_rand_f32(u, N, 40 + (uint64_t)trial, 1.0f);
        for (int i = 0; i < N; i++) lens[i] = (int64_t)((u[i] + 1.0f) * 0.5f * (float)row_len * 1.2f);
        sft_pack p;
        assert_int_equal(sft_pack_plan(lens, N, row_len, &p), BASE_OK);
        int64_t want_row[N], want_rows;
        naive_bfd(lens, N, row_len, want_row, &want_rows);
        assert_int_equal(p.n_rows, want_rows);
        int seen[N] = {0};
        for (int64_t r = 0; r < p.n_rows; r++) {
            int64_t at = 0;
            for (int64_t k = p.row_first[r]; k < p.row_first[r + 1]; k++) {
                const sft_segment *sg = &p.seg[k];
                assert_int_equal(sg->start, at);
                assert_int_equal(sg->len, lens[sg->sample] > row_len ? row_len : lens[sg->sample]);
                assert_int_equal(want_row[sg->sample], r);
                at += sg->len;
                seen[sg->sample]++;
            }
            assert_int_equal(at, p.row_used[r]);
            assert_true(at <= row_len);
        }
        for (int i = 0; i < N; i++) assert_int_equal(seen[i], lens[i] > 0);
        sft_pack_free(&p);
    }
}

static void test_pack_row(void **state) {
    (void)state;
    int32_t a_ids[3] = {10, 11, 12}, b_ids[2] = {20, 21};
    uint8_t a_mask[3] = {0, 1, 1};
    sft_sample s[2] = {{a_ids, a_mask, 3}, {b_ids, NULL, 2}};
    int64_t lens[2] = {3, 2};
    sft_pack p;
    assert_int_equal(sft_pack_plan(lens, 2, 6, &p), BASE_OK);
    assert_int_equal(p.n_rows, 1);
    int32_t ids[6], pos[6], seg[6], tgt[6];
    uint8_t lm[6];
    assert_int_equal(sft_pack_row(&p, 0, s, -7, ids, pos, seg, tgt, lm), BASE_OK);
    const int32_t w_ids[6] = {10, 11, 12, 20, 21, -7}, w_pos[6] = {0, 1, 2, 0, 1, 0};
    const int32_t w_seg[6] = {0, 0, 0, 1, 1, -1}, w_tgt[6] = {11, 12, -1, 21, -1, -1};
    const uint8_t w_lm[6] = {1, 1, 0, 1, 0, 0};
    assert_memory_equal(ids, w_ids, sizeof ids);
    assert_memory_equal(pos, w_pos, sizeof pos);
    assert_memory_equal(seg, w_seg, sizeof seg);
    assert_memory_equal(tgt, w_tgt, sizeof tgt);
    assert_memory_equal(lm, w_lm, sizeof lm);
    int32_t cu[3];
    assert_int_equal(sft_pack_row_cu_seqlens(&p, 0, cu), 2);
    assert_true(cu[0] == 0 && cu[1] == 3 && cu[2] == 5);
    assert_int_equal(sft_pack_row_cu_seqlens(&p, 1, cu), -1);
    /* only ids required */
    assert_int_equal(sft_pack_row(&p, 0, s, 0, ids, NULL, NULL, NULL, NULL), BASE_OK);
    /* a sample that changed length since planning */
    s[1].len = 1;
    assert_int_equal(sft_pack_row(&p, 0, s, 0, ids, pos, seg, tgt, lm), BASE_ERR_INVALID);
    assert_int_equal(sft_pack_row(&p, 1, s, 0, ids, pos, seg, tgt, lm), BASE_ERR_INVALID);
    sft_pack_free(&p);
}

/* A stand-in tokenizer: one token per byte of a simple template
 * "<s>" + per message "<|role|>" + content (+ "<eos>" after assistant). */
static base_status count_bytes(void *ctx, const sft_message *m, int n, int gen, int64_t *out) {
    int broken = ctx != NULL; /* a template whose prefixes are not prefixes */
    int64_t c = 3;
    for (int i = 0; i < n; i++) {
        c += 4 + (int64_t)strlen(m[i].role) + (int64_t)strlen(m[i].content);
        if (!strcmp(m[i].role, "assistant")) c += 5;
    }
    if (gen) c += 13;
    if (broken && gen) c += 100;
    *out = c;
    return BASE_OK;
}

static void test_chat(void **state) {
    (void)state;
    const char *txt = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"},"
                      "{\"role\": \"assistant\", \"content\": \"yo\"},"
                      "{\"role\": \"user\", \"content\": \"q\"},"
                      "{\"role\": \"assistant\", \"content\": \"ok\"}]}";
    cJSON *row = cJSON_Parse(txt);
    sft_chat chat;
    assert_int_equal(sft_chat_parse(row, "t.jsonl:1", &chat), BASE_OK);
    assert_int_equal(chat.n, 4);
    assert_string_equal(chat.msgs[3].content, "ok");
    sft_span sp[2];
    int ns;
    assert_int_equal(sft_chat_assistant_spans(&chat, count_bytes, NULL, sp, &ns), BASE_OK);
    /* "<s>" 3 + "<|user|>hi" 10 = 13, + "<|assistant|>" 13 = 26; "yo<eos>" 7
     * -> 33; "<|user|>q" 9 -> 42, + 13 = 55; "ok<eos>" -> 62 */
    assert_int_equal(ns, 2);
    assert_int_equal(sp[0].begin, 26);
    assert_int_equal(sp[0].end, 33);
    assert_int_equal(sp[1].begin, 55);
    assert_int_equal(sp[1].end, 62);
    uint8_t mask[62];
    sft_mask_from_spans(62, sp, ns, mask);
    for (int i = 0; i < 62; i++) assert_int_equal(mask[i], (i >= 26 && i < 33) || (i >= 55 && i < 62));
    int dummy;
    assert_int_equal(sft_chat_assistant_spans(&chat, count_bytes, &dummy, sp, &ns), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "prefix"));
    sft_chat_free(&chat);
    cJSON_Delete(row);

    const char *bad[] = {
        "{\"messages\": []}",
        "{\"text\": \"x\"}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}",
        "{\"messages\": [{\"role\": \"robot\", \"content\": \"hi\"}]}",
        "{\"messages\": [{\"role\": \"assistant\", \"content\": 3}]}",
    };
    const char *why[] = {"empty", "messages", "no assistant", "robot", "content"};
    for (int i = 0; i < 5; i++) {
        row = cJSON_Parse(bad[i]);
        assert_int_equal(sft_chat_parse(row, "t.jsonl:9", &chat), BASE_ERR_INVALID);
        assert_non_null(strstr(base_err_msg(), why[i]));
        assert_non_null(strstr(base_err_msg(), "t.jsonl:9"));
        cJSON_Delete(row);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss),     cmocka_unit_test(test_pack_hand),
        cmocka_unit_test(test_pack_random), cmocka_unit_test(test_pack_row),
        cmocka_unit_test(test_chat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
