/*
 * Unit tests of the text helpers: \boxed extraction, the R1 think format,
 * tag counting, language ratio (what counts as a word), repetition
 * penalty, length shaping. Expected values are worked out by hand in the
 * comments next to each case.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "reward/rules/rules.h"
#include "tests/common/test_common.h"

/* ------------------------------------------------------------------------ */
/* boxed                                                                    */

static const char *boxed(const char *s, char *buf, size_t cap)
{
    size_t st, n;
    if (!reward_boxed(s, strlen(s), &st, &n)) return NULL;
    snprintf(buf, cap, "%.*s", (int)n, s + st);
    return buf;
}

static void test_boxed(void **state)
{
    (void)state;
    char b[256];
    assert_string_equal(boxed("so \\boxed{42}.", b, sizeof b), "42");
    /* nested braces */
    assert_string_equal(boxed("\\boxed{\\frac{1}{2}}", b, sizeof b), "\\frac{1}{2}");
    assert_string_equal(boxed("x \\boxed{a{b{c}}d} y", b, sizeof b), "a{b{c}}d");
    /* the last box wins, \fbox too */
    assert_string_equal(boxed("\\boxed{1} then \\boxed{2}", b, sizeof b), "2");
    assert_string_equal(boxed("\\boxed{1} then \\fbox{3}", b, sizeof b), "3");
    assert_string_equal(boxed("\\fbox{3} then \\boxed{4}", b, sizeof b), "4");
    /* space before the brace */
    assert_string_equal(boxed("\\boxed {7}", b, sizeof b), "7");
    /* \boxed 5 form: up to '$' or end of line */
    assert_string_equal(boxed("$\\boxed 5$", b, sizeof b), "5");
    assert_string_equal(boxed("answer: \\boxed 12 \nmore", b, sizeof b), "12");
    /* empty box is found (an empty answer) */
    assert_string_equal(boxed("\\boxed{}", b, sizeof b), "");
    /* none, unterminated, or no separator */
    assert_null(boxed("no box here", b, sizeof b));
    assert_null(boxed("\\boxed{1", b, sizeof b));
    assert_null(boxed("\\boxed{1} and \\boxed{2", b, sizeof b));
    assert_null(boxed("\\boxed", b, sizeof b));
    assert_null(boxed("\\boxedx", b, sizeof b));
    /* a NUL byte inside is data, not an end */
    const char with_nul[] = "\\boxed{a\0b}";
    size_t st, n;
    assert_int_equal(reward_boxed(with_nul, sizeof with_nul - 1, &st, &n), 1);
    assert_int_equal(n, 3);
}

/* ------------------------------------------------------------------------ */
/* think format                                                             */

static double think(const char *s, int prefilled, int tags)
{
    reward_think_opts o;
    reward_think_opts_default(&o);
    o.prefilled = prefilled;
    o.answer_tags = tags;
    return reward_think_format(s, strlen(s), &o);
}

static void test_think_format(void **state)
{
    (void)state;
    assert_true(think("<think>reason</think>42", 0, 0) == 1.0);
    assert_true(think("  <think>\nreason\n</think>\n<answer>42</answer>\n", 0, 0) == 1.0);
    assert_true(think("<think>reason</think><answer>42</answer>", 0, 1) == 1.0);
    /* answer tags required / forbidden */
    assert_true(think("<think>reason</think>42", 0, 1) == 0.0);
    assert_true(think("<think>reason</think><answer>42</answer>", 0, -1) == 0.0);
    /* no </think>, two </think>, second <think> */
    assert_true(think("<think>reason 42", 0, 0) == 0.0);
    assert_true(think("<think>a</think>b</think>c", 0, 0) == 0.0);
    assert_true(think("<think>a<think>b</think>c", 0, 0) == 0.0);
    /* text before <think> */
    assert_true(think("hi <think>a</think>b", 0, 0) == 0.0);
    /* empty CoT or empty answer */
    assert_true(think("<think> \n </think>42", 0, 0) == 0.0);
    assert_true(think("<think>a</think>  \n", 0, 0) == 0.0);
    assert_true(think("<think>a</think><answer> </answer>", 0, 0) == 0.0);
    /* answer tags with junk outside, or twice */
    assert_true(think("<think>a</think>x<answer>4</answer>", 0, 0) == 0.0);
    assert_true(think("<think>a</think><answer>4</answer><answer>5</answer>", 0, 0) == 0.0);
    /* </think> before <think> */
    assert_true(think("</think><think>a", 0, 0) == 0.0);
    /* prefilled: the completion starts inside the CoT */
    assert_true(think("reason</think>42", 0, 0) == 0.0);
    assert_true(think("reason</think>42", 1, 0) == 1.0);
    assert_true(think("<think>reason</think>42", 1, 0) == 1.0);
    assert_true(think("a<think>b</think>42", 1, 0) == 0.0);
    /* open-r1 regex style, and a bad code language */
    reward_think_opts o;
    reward_think_opts_default(&o);
    o.style = REWARD_THINK_OPENR1;
    const char *ok = "<think>\nx\n</think>\n<answer>\ny\n</answer>";
    assert_true(reward_think_format(ok, strlen(ok), &o) == 1.0);
    o.code_lang = "py(thon";
    assert_true(reward_think_format(ok, strlen(ok), &o) == -1.0);
}

static void test_tag_count(void **state)
{
    (void)state;
    const char *all = "<think>\nx\n</think>\n<answer>\ny\n</answer>";
    assert_true(reward_tag_count(all, strlen(all)) == 1.0);
    /* a tag twice earns nothing for it */
    const char *twice = "<think>\n<think>\nx\n</think>\n<answer>\ny\n</answer>";
    assert_true(reward_tag_count(twice, strlen(twice)) == 0.75);
    assert_true(reward_tag_count("", 0) == 0.0);
}

/* ------------------------------------------------------------------------ */
/* language ratio                                                           */

static double ratio(const char *s, const char *lang, int64_t *t, int64_t *n)
{
    reward_lang_counts c;
    double r = reward_lang_ratio(s, strlen(s), lang, &c);
    *t = c.target;
    *n = c.total;
    return r;
}

static void test_lang_ratio(void **state)
{
    (void)state;
    int64_t t, n;
    /* 3 English words */
    assert_true(ratio("<think>the cat sat</think>answer", "en", &t, &n) == 1.0);
    assert_int_equal(n, 3);
    /* only the CoT counts: 我们 (2 Han words) + "so" (1 Latin) */
    assert_true(fabs(ratio("<think>我们 so</think> answer words here", "zh", &t, &n) - 2.0 / 3.0) < 1e-12);
    assert_int_equal(t, 2);
    assert_int_equal(n, 3);
    /* no tags: whole text; prefilled: before </think>; unclosed: after <think> */
    ratio("one two", "en", &t, &n);
    assert_int_equal(n, 2);
    ratio("one two</think>three four five", "en", &t, &n);
    assert_int_equal(n, 2);
    ratio("zero <think>one two three", "en", &t, &n);
    assert_int_equal(n, 3);
    /* math, code, numbers, commands, URLs and single letters are not words:
     * counted: "Let", "be", "see", "and", "done" */
    const char *mixed = "Let $x^2 + y$ be 42, see `code here` and \\(a+b\\) \\textbf done "
                        "https://example.com/abc x ```py\nprint(1)\n```";
    ratio(mixed, "en", &t, &n);
    assert_int_equal(n, 5);
    assert_int_equal(t, 5);
    /* apostrophes and hyphens join: don't, well-known = 2 words */
    ratio("don't well-known", "en", &t, &n);
    assert_int_equal(n, 2);
    /* Japanese: Han + kana all count; Latin does not */
    ratio("私はテストです OK", "ja", &t, &n);
    assert_int_equal(n, 8); /* 私 は テ ス ト で す + OK */
    assert_int_equal(t, 7);
    /* Korean syllables each count; Cyrillic words */
    ratio("한국어 word", "ko", &t, &n);
    assert_int_equal(t, 3);
    assert_int_equal(n, 4);
    ratio("привет мир hello", "ru", &t, &n);
    assert_int_equal(t, 2);
    assert_int_equal(n, 3);
    /* accented Latin stays one word; a combining mark too */
    ratio("café naïve e\xCC\x81t\xC3\xA9", "fr", &t, &n);
    assert_int_equal(n, 3);
    assert_int_equal(t, 3);
    /* no words: NaN; unknown language: -1 */
    assert_true(isnan(ratio("<think>123 + 456 = $x$</think>", "en", &t, &n)));
    assert_int_equal(n, 0);
    assert_true(ratio("hello", "xx", &t, &n) == -1.0);
    assert_true(reward_lang_known("en-US"));
    assert_true(reward_lang_known("ZH"));
    assert_false(reward_lang_known("klingon"));
    /* invalid UTF-8 bytes are not letters */
    ratio("ab\xFF\xFE" "cd", "en", &t, &n);
    assert_int_equal(n, 2);
}

/* ------------------------------------------------------------------------ */
/* open-r1 rewards beyond their test file                                   */

static void test_repetition(void **state)
{
    (void)state;
    /* 6 words, 4 trigrams, all distinct */
    assert_true(reward_repetition_penalty("a b c d e f", 11, 3, -1.0, "en") == 0.0);
    /* case-insensitive: "A a A a" bigrams (a a) x3 -> 1 distinct of 3 */
    double r = reward_repetition_penalty("A a A a", 7, 2, -1.0, "en");
    assert_true(fabs(r - -(1.0 - 1.0 / 3.0)) < 1e-12);
    /* invalid arguments */
    assert_true(isnan(reward_repetition_penalty("a", 1, 0, -1.0, "en")));
    assert_true(isnan(reward_repetition_penalty("a", 1, 2, 0.5, "en")));
    /* zh: Han characters are words, other runs split on spaces */
    r = reward_repetition_penalty("好好好 ab ab", 15, 1, -1.0, "zh");
    /* words 好 好 好 ab ab: 5 unigrams, 2 distinct */
    assert_true(fabs(r - -(1.0 - 2.0 / 5.0)) < 1e-12);
}

static void test_length_shaping(void **state)
{
    (void)state;
    reward_cosine_opts o;
    reward_cosine_opts_default(&o);
    /* len 0: full value; len = max_len: the other end */
    assert_true(fabs(reward_cosine_scaled(0, 1, &o) - 1.0) < 1e-12);
    assert_true(fabs(reward_cosine_scaled(1000, 1, &o) - 0.5) < 1e-12);
    assert_true(fabs(reward_cosine_scaled(0, 0, &o) - -1.0) < 1e-12);
    assert_true(fabs(reward_cosine_scaled(1000, 0, &o) - -0.5) < 1e-12);
    /* past max_len: clamped by default (TRL); open-r1's cosine comes back */
    assert_true(fabs(reward_cosine_scaled(2000, 1, &o) - 0.5) < 1e-12);
    assert_true(fabs(reward_cosine_scaled(1500, 0, &o) - -0.5) < 1e-12);
    o.clamp = 0;
    assert_true(fabs(reward_cosine_scaled(2000, 1, &o) - 1.0) < 1e-12);
    assert_true(fabs(reward_cosine_scaled(1500, 0, &o) - -0.75) < 1e-12);
    o.max_len = 0;
    assert_true(isnan(reward_cosine_scaled(1, 1, &o)));
    assert_true(reward_soft_overlong(80, 100, 20) == 0.0);
    assert_true(reward_soft_overlong(100, 100, 20) == -1.0);
    assert_true(reward_soft_overlong(101, 100, 20) == -1.0);
    assert_true(isnan(reward_soft_overlong(10, 100, 0)));
    assert_true(isnan(reward_soft_overlong(10, 10, 20)));
    assert_int_equal(reward_utf8_length("h\xC3\xA9llo", 6), 5);
    assert_int_equal(reward_utf8_length("\xFF\xFE", 2), 2);
}

static void test_reasoning_steps(void **state)
{
    (void)state;
    /* "^\d+\." only at the very start (no MULTILINE) */
    const char *s = "1. a\n2. b\n3. c";
    assert_true(fabs(reward_reasoning_steps(s, strlen(s)) - 1.0 / 3.0) < 1e-12);
    const char *t = "intro\n- a\n- b\n* c\n- d";
    assert_true(reward_reasoning_steps(t, strlen(t)) == 1.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_boxed),        cmocka_unit_test(test_think_format),
        cmocka_unit_test(test_tag_count),    cmocka_unit_test(test_lang_ratio),
        cmocka_unit_test(test_repetition),   cmocka_unit_test(test_length_shaping),
        cmocka_unit_test(test_reasoning_steps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
