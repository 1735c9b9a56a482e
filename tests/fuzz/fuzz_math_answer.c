/*
 * libFuzzer target for the math answer helpers the rewards use
 * (src/reward/rules/rules.h): reward_boxed, reward_math_equal and
 * reward_math_extract on arbitrary bytes. They must return for every input
 * (no crash, hang, stack overflow, unbounded allocation, leak or sanitizer
 * report), and what they return must make sense:
 *   - a box lies inside the text;
 *   - every status is one of the five, and math_equal(NULL, gold) is only
 *     NO_GOLD, NO_PRED or LIMIT (what boxed_math.lua relies on to skip a
 *     sample whose gold cannot be parsed);
 *   - an answer that extraction parses equals itself (or hits a limit);
 *   - the extracted text is NUL-terminated inside its buffer.
 *
 * Input: two option bytes, then gold and prediction split at the first NUL
 * (no NUL: the rest is both). Byte 0 bits: extract_latex, extract_expr,
 * gold_plain, !strict, ordered_lists, equations, allow_set_relation_comp,
 * boxed_priority 50. Byte 1: !units, !malformed_operators, !nits,
 * boxed_priority -1, float_rounding in the high nibble. Inputs over 4 KiB
 * are ignored: the helpers' own limits (1 MiB texts, 64 KiB answers, depth
 * 200, 64 MiB arena and a work budget per call) are tested on large inputs
 * by tests/reward/rules/test_math_unit.c; here the fuzzer explores structure.
 *
 * Fuzz with `make fuzz FUZZ_TARGET=math_answer` (docs/fuzzing.md); `make
 * test` replays tests/fuzz/corpus/math_answer/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reward/rules/rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_INPUT = 4096 };

static void options(const uint8_t *data, size_t size, reward_math_opts *o) {
    reward_math_opts_default(o);
    uint8_t a = size > 0 ? data[0] : 0, b = size > 1 ? data[1] : 0;
    o->extract_latex = a & 1;
    o->extract_expr = (a >> 1) & 1;
    o->gold_plain = (a >> 2) & 1;
    o->strict = !((a >> 3) & 1);
    o->ordered_lists = (a >> 4) & 1;
    o->equations = (a >> 5) & 1;
    o->allow_set_relation_comp = (a >> 6) & 1;
    o->boxed_priority = (a >> 7) & 1 ? 50 : (b >> 3) & 1 ? -1 : 0;
    o->units = !(b & 1);
    o->malformed_operators = !((b >> 1) & 1);
    o->nits = !((b >> 2) & 1);
    o->float_rounding = b >> 4;
}

static void check_status(reward_math_status s) {
    if ((unsigned)s > REWARD_MATH_LIMIT) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > MAX_INPUT) return 0;
    reward_math_opts o;
    options(data, size, &o);
    size_t head = size < 2 ? size : 2;
    const char *text = (const char *)data + head;
    size_t n = size - head;
    const char *nul = memchr(text, 0, n);
    const char *gold = text, *pred = text;
    size_t gn = n, pn = n;
    if (nul) {
        gn = (size_t)(nul - text);
        pred = nul + 1;
        pn = n - gn - 1;
    }

    /* boxed_math.lua's path: the last box of the prediction against gold */
    size_t bs = 0, bl = 0;
    if (reward_boxed(pred, pn, &bs, &bl)) {
        if (bs > pn || bl > pn - bs) abort();
        reward_math_opts go = o;
        go.gold_plain = 1;
        check_status(reward_math_equal(pred + bs, bl, gold, gn, &go));
    }

    check_status(reward_math_equal(pred, pn, gold, gn, &o));

    reward_math_status none = reward_math_equal(NULL, 0, gold, gn, &o);
    if (none != REWARD_MATH_NO_GOLD && none != REWARD_MATH_NO_PRED && none != REWARD_MATH_LIMIT) abort();

    char buf[256];
    memset(buf, 'x', sizeof buf);
    int found = reward_math_extract(gold, gn, &o, buf, sizeof buf);
    if (!memchr(buf, 0, sizeof buf)) abort();
    if (found) {
        reward_math_opts self = o;
        self.gold_plain = 0;
        reward_math_status s = reward_math_equal(gold, gn, gold, gn, &self);
        if (s != REWARD_MATH_EQUAL && s != REWARD_MATH_LIMIT) abort();
    }
    return 0;
}
