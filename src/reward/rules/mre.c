/*
 * PCRE2 wrappers for the math engine: compile once, find, Python-style
 * global substitution, and the UTF-8 cleaning that PCRE2's UTF mode needs.
 * Every match runs under a match limit so that no pattern can backtrack
 * for long on adversarial text; hitting it counts as "no match". JIT is
 * used when available; a JIT stack overflow falls back to the interpreter.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "reward/rules/rules_int.h"

struct mq_re {
    pcre2_code *code;
    int groups;
};

#define MQ_MATCH_LIMIT 2000000u
#define MQ_DEPTH_LIMIT 20000u

mq_re *reward_mq_re_compile(const char *pattern, uint32_t flags)
{
    int err;
    PCRE2_SIZE off;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                     flags | PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err,
                                     &off, NULL);
    if (!code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        base_die("reward rules: bad regex at %zu: %s: %s", (size_t)off, (char *)msg, pattern);
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); /* optional: ignore failure */
    mq_re *re = base_xcalloc(1, sizeof *re);
    re->code = code;
    uint32_t cap = 0;
    pcre2_pattern_info(code, PCRE2_INFO_CAPTURECOUNT, &cap);
    re->groups = (int)cap;
    return re;
}

void reward_mq_re_free(mq_re *re)
{
    if (!re) return;
    pcre2_code_free(re->code);
    free(re);
}

int reward_mq_re_group_count(const mq_re *re) { return re->groups; }

int reward_mq_re_group_index(const mq_re *re, const char *name)
{
    int n = pcre2_substring_number_from_name(re->code, (PCRE2_SPTR)name);
    return n < 0 ? -1 : n;
}

int reward_mq_re_find(const mq_re *re, const char *s, size_t n, size_t start, size_t *ov, int ovn)
{
    if (start > n) return 0;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re->code, NULL);
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    if (!md || !mc) base_die("reward rules: out of memory (pcre2)");
    pcre2_set_match_limit(mc, MQ_MATCH_LIMIT);
    pcre2_set_depth_limit(mc, MQ_DEPTH_LIMIT);
    int rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK, md, mc);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md,
                         mc);
    int ret;
    if (rc >= 0) {
        PCRE2_SIZE *v = pcre2_get_ovector_pointer(md);
        uint32_t pairs = pcre2_get_ovector_count(md);
        for (int i = 0; i < ovn; i++) {
            uint32_t g = (uint32_t)i / 2;
            ov[i] = g < pairs && v[i] != PCRE2_UNSET ? (size_t)v[i] : SIZE_MAX;
        }
        ret = 1;
    } else {
        ret = rc == PCRE2_ERROR_NOMATCH ? 0 : -1;
    }
    pcre2_match_data_free(md);
    pcre2_match_context_free(mc);
    return ret;
}

/* Append template expansion: "\\" -> '\', "\N" -> group N, else literal. */
static void expand(base_buf *b, const char *tmpl, const char *s, const size_t *ov, int ngroups)
{
    for (const char *t = tmpl; *t; t++) {
        if (t[0] == '\\' && t[1] == '\\') {
            base_buf_append(b, "\\", 1);
            t++;
        } else if (t[0] == '\\' && t[1] >= '0' && t[1] <= '9') {
            int g = t[1] - '0';
            if (g <= ngroups && ov[2 * g] != SIZE_MAX)
                base_buf_append(b, s + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
            t++;
        } else {
            base_buf_append(b, t, 1);
        }
    }
}

char *reward_mq_re_sub(mq_arena *a, const mq_re *re, const char *s, size_t n, const char *tmpl, size_t *out_n)
{
    base_buf b = {0};
    size_t ov[2 * 10];
    int ng = re->groups < 9 ? re->groups : 9;
    size_t pos = 0, last = 0;
    while (pos <= n && reward_mq_re_find(re, s, n, pos, ov, 2 * (ng + 1)) == 1) {
        base_buf_append(&b, s + last, ov[0] - last);
        expand(&b, tmpl, s, ov, ng);
        last = ov[1];
        if (ov[1] == ov[0]) {
            /* empty match: copy one character and move on */
            if (ov[1] >= n) break;
            size_t step = 1;
            while (ov[1] + step < n && ((unsigned char)s[ov[1] + step] & 0xC0) == 0x80) step++;
            base_buf_append(&b, s + ov[1], step);
            last = pos = ov[1] + step;
        } else {
            pos = ov[1];
        }
    }
    if (last < n) base_buf_append(&b, s + last, n - last);
    char *r = reward_mq_strndup(a, b.data ? b.data : "", b.len);
    if (out_n) *out_n = b.len;
    base_buf_free(&b);
    return r;
}

char *reward_mq_utf8_clean(mq_arena *a, const char *s, size_t n, size_t *out_n)
{
    /* worst case: every byte becomes U+FFFD (3 bytes) */
    char *o = reward_mq_alloc(a, 3 * n + 1);
    if (!o) return NULL;
    size_t k = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        size_t len = 0;
        uint32_t cp = 0;
        if (c < 0x80) {
            o[k++] = c ? (char)c : ' ';
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            len = 2, cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3, cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4, cp = c & 0x07;
        }
        int ok = len > 0 && i + len <= n;
        for (size_t j = 1; ok && j < len; j++) {
            if ((u[i + j] & 0xC0) != 0x80) ok = 0;
            else cp = (cp << 6) | (u[i + j] & 0x3F);
        }
        if (ok && ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
                   (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))))
            ok = 0;
        if (ok) {
            memcpy(o + k, s + i, len);
            k += len;
            i += len;
        } else {
            memcpy(o + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i++;
        }
    }
    o[k] = 0;
    if (out_n) *out_n = k;
    return o;
}
