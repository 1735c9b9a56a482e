/*
 * \boxed{...} scanning. Two flavours:
 *   reward_boxed        the last box only (hendrycks/verl/Qwen graders):
 *                       what a reward script asks for;
 *   reward_mq_boxed_content    Math-Verify's extract_boxed_content (all boxes, or
 *                       the last run of "connected" boxes) used inside the
 *                       normalisation of the math engine.
 * Both scan right to left with brace counting; work is linear in the text.
 */
#include <string.h>

#include "base/base.h"
#include "reward/rules/rules_int.h"

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

/* Last "\boxed" or "\fbox" fully inside s[0, end): its offset, and the
 * command length in *cmd; -1 if none. One backward scan. */
static long rfind_box(const char *s, size_t end, size_t *cmd)
{
    for (size_t i = end; i-- > 0;) {
        if (s[i] != '\\') continue;
        if (i + 6 <= end && memcmp(s + i, "\\boxed", 6) == 0) {
            *cmd = 6;
            return (long)i;
        }
        if (i + 5 <= end && memcmp(s + i, "\\fbox", 5) == 0) {
            *cmd = 5;
            return (long)i;
        }
    }
    return -1;
}

/* Position of the '}' matching the '{' at `open`, searching below max_pos;
 * SIZE_MAX if unbalanced. */
static size_t match_brace(const char *s, size_t open, size_t max_pos)
{
    int depth = 1;
    for (size_t i = open + 1; i < max_pos; i++) {
        if (s[i] == '{') depth++;
        else if (s[i] == '}' && --depth == 0) return i;
    }
    return SIZE_MAX;
}

int reward_boxed(const char *text, size_t len, size_t *start, size_t *out_len)
{
    if (!text) return 0;
    size_t cmd;
    long at = rfind_box(text, len, &cmd);
    if (at < 0) return 0;
    size_t p = (size_t)at + cmd;
    size_t q = p;
    while (q < len && is_space(text[q])) q++;
    if (q < len && text[q] == '{') {
        size_t close = match_brace(text, q, len);
        if (close == SIZE_MAX) return 0;
        *start = q + 1;
        *out_len = close - q - 1;
        return 1;
    }
    /* "\boxed 5": needs a separating space, content up to '$' or newline */
    if (q == p || q >= len) return 0;
    size_t e = q;
    while (e < len && text[e] != '$' && text[e] != '\n') e++;
    while (e > q && is_space(text[e - 1])) e--;
    if (e == q) return 0;
    *start = q;
    *out_len = e - q;
    return 1;
}

/* Math-Verify's rule for joining an earlier box to a later one in LAST
 * mode: close together, or a separator word between different contents. */
static int connected(const char *s, size_t content_end, size_t next_start, const char *content,
                     size_t cn, const char *next, size_t nn)
{
    size_t lo = content_end + 1;
    size_t gap = next_start > lo ? next_start - lo : 0;
    if (gap < 10) return 1;
    int same = cn == nn && memcmp(content, next, cn) == 0;
    if (same || gap >= 70) return 0;
    const char *g = s + lo;
    for (size_t i = 0; i < gap; i++) {
        if (g[i] == ',' || g[i] == ';') return 1;
        /* \b(and|or)\b */
        int word_start = i == 0 || !(((g[i - 1] | 32) >= 'a' && (g[i - 1] | 32) <= 'z') ||
                                     (g[i - 1] >= '0' && g[i - 1] <= '9') || g[i - 1] == '_');
        if (!word_start) continue;
        size_t wl = 0;
        if (i + 3 <= gap && memcmp(g + i, "and", 3) == 0) wl = 3;
        else if (i + 2 <= gap && memcmp(g + i, "or", 2) == 0) wl = 2;
        if (!wl) continue;
        char c = i + wl < gap ? g[i + wl] : ' ';
        int word_end = !(((c | 32) >= 'a' && (c | 32) <= 'z') || (c >= '0' && c <= '9') || c == '_');
        if (word_end) return 1;
    }
    return 0;
}

char *reward_mq_boxed_content(mq_arena *a, const char *s, size_t n, mq_box_mode mode, size_t *out_n)
{
    enum { MAXB = 256 };
    const char *res[MAXB];
    size_t resn[MAXB];
    int nres = 0;
    size_t cur = n, max_pos = n;
    long last_start = -1;
    while (nres < MAXB) {
        size_t cmd;
        long bs = rfind_box(s, cur, &cmd);
        if (bs < 0) break;
        size_t st = (size_t)bs;
        size_t p = st + cmd;
        while (p < max_pos && is_space(s[p])) p++;
        if (p >= max_pos) break;
        if (s[p] == '{') {
            size_t close = match_brace(s, p, max_pos);
            if (close == SIZE_MAX) {
                if (nres == 0) res[nres] = s + p, resn[nres++] = n - p;
                break;
            }
            const char *c = s + p + 1;
            size_t cn = close - p - 1;
            while (cn && is_space(*c)) c++, cn--;
            while (cn && is_space(c[cn - 1])) cn--;
            if (mode == MQ_BOX_LAST && last_start >= 0 &&
                !connected(s, close, (size_t)last_start, c, cn, nres ? res[nres - 1] : "",
                           nres ? resn[nres - 1] : 0))
                break;
            if (nres == 0 || resn[nres - 1] != cn || memcmp(res[nres - 1], c, cn) != 0)
                res[nres] = c, resn[nres++] = cn;
            last_start = (long)st;
            max_pos = st;
        } else {
            if (nres == 0) res[nres] = s + p, resn[nres++] = n - p;
            break;
        }
        cur = st;
    }
    if (nres == 0) {
        if (out_n) *out_n = n;
        return reward_mq_strndup(a, s, n);
    }
    size_t tot = 0;
    for (int i = 0; i < nres; i++) tot += resn[i] + 1;
    char *o = reward_mq_alloc(a, tot + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (int i = nres - 1; i >= 0; i--) {
        memcpy(o + k, res[i], resn[i]);
        k += resn[i];
        if (i) o[k++] = ',';
    }
    o[k] = 0;
    if (out_n) *out_n = k;
    return o;
}
