/*
 * Format and shape rewards: the R1-Zero <think> format (our structural
 * check, or open-r1's exact regexes), open-r1's tag_count_reward,
 * reasoning_steps_reward, repetition penalty, cosine length scaling and
 * DAPO's soft overlong punishment. All linear in the text (the regexes run
 * under PCRE2 match limits).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <math.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "reward/rules/rules_int.h"

static struct {
    mq_re *openr1, *steps;
} F;

static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void compile_all(void)
{
    F.openr1 = reward_mq_re_compile("^<think>\\n.*?\\n</think>\\n<answer>\\n.*?\\n</answer>$",
                             PCRE2_DOTALL | PCRE2_MULTILINE | PCRE2_ANCHORED);
    F.steps = reward_mq_re_compile("(Step \\d+:|^\\d+\\.|\\n-|\\n\\*|First,|Second,|Next,|Finally,)", 0);
}

/* Keep the scans bounded: only the last REWARD_MAX_TEXT bytes count. */
static void clamp(const char **text, size_t *len)
{
    if (*len > REWARD_MAX_TEXT) {
        *text += *len - REWARD_MAX_TEXT;
        *len = REWARD_MAX_TEXT;
    }
}

/* Regexes need valid UTF-8: run them on a cleaned copy. */
static char *clean(mq_arena *a, const char *s, size_t n, size_t *out_n)
{
    return reward_mq_utf8_clean(a, s, n, out_n);
}

/* ------------------------------------------------------------------------ */
/* think format                                                             */

void reward_think_opts_default(reward_think_opts *o)
{
    memset(o, 0, sizeof *o);
    o->style = REWARD_THINK_R1;
}

static int blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!(s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\f' || s[i] == '\v'))
            return 0;
    return 1;
}

static const char *find(const char *s, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    if (m > n) return NULL;
    for (size_t i = 0; i + m <= n; i++)
        if (s[i] == needle[0] && memcmp(s + i, needle, m) == 0) return s + i;
    return NULL;
}

static int count(const char *s, size_t n, const char *needle)
{
    int c = 0;
    size_t m = strlen(needle);
    const char *p = s, *e = s + n, *q;
    while ((q = find(p, (size_t)(e - p), needle))) {
        c++;
        p = q + m;
    }
    return c;
}

static double r1_format(const char *s, size_t n, const reward_think_opts *o)
{
    size_t i = 0;
    while (i < n && blank(s + i, 1)) i++;
    int opens = count(s, n, "<think>"), closes = count(s, n, "</think>");
    if (closes != 1 || opens > 1) return 0.0;
    const char *close = find(s, n, "</think>");
    const char *cot;
    if (opens == 1) {
        if (n - i < 7 || memcmp(s + i, "<think>", 7) != 0) return 0.0;
        cot = s + i + 7;
        if (cot > close) return 0.0;
    } else {
        if (!o->prefilled) return 0.0;
        cot = s;
    }
    if (blank(cot, (size_t)(close - cot))) return 0.0;
    const char *ans = close + 8;
    size_t an = (size_t)(s + n - ans);
    int ao = count(ans, an, "<answer>"), ac = count(ans, an, "</answer>");
    if (ao || ac) {
        if (o->answer_tags < 0 || ao != 1 || ac != 1) return 0.0;
        /* only whitespace around <answer>...</answer> */
        size_t b = 0, e = an;
        while (b < e && blank(ans + b, 1)) b++;
        while (e > b && blank(ans + e - 1, 1)) e--;
        if (e - b < 17 || memcmp(ans + b, "<answer>", 8) != 0 || memcmp(ans + e - 9, "</answer>", 9) != 0)
            return 0.0;
        if (blank(ans + b + 8, e - b - 17)) return 0.0;
        return 1.0;
    }
    if (o->answer_tags > 0) return 0.0;
    return blank(ans, an) ? 0.0 : 1.0;
}

static int lang_ok(const char *l)
{
    if (!*l || strlen(l) > 32) return 0;
    for (const char *p = l; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("+#_.-", *p)))
            return 0;
    return 1;
}

static double openr1_format(const char *s, size_t n, const char *lang)
{
    mq_arena a;
    reward_mq_arena_init(&a);
    size_t cn;
    char *c = clean(&a, s, n, &cn);
    double r = 0.0;
    if (c) {
        size_t ov[2];
        if (!lang) {
            r = reward_mq_re_find(F.openr1, c, cn, 0, ov, 2) == 1 ? 1.0 : 0.0;
        } else {
            char pat[256];
            snprintf(pat, sizeof pat,
                     "^<think>\\n.*?\\n</think>\\n<answer>\\n.*?```\\Q%s\\E.*?```.*?\\n</answer>$", lang);
            mq_re *re = reward_mq_re_compile(pat, PCRE2_DOTALL | PCRE2_MULTILINE | PCRE2_ANCHORED);
            r = reward_mq_re_find(re, c, cn, 0, ov, 2) == 1 ? 1.0 : 0.0;
            reward_mq_re_free(re);
        }
    }
    reward_mq_arena_free(&a);
    return r;
}

double reward_think_format(const char *text, size_t len, const reward_think_opts *opts)
{
    reward_think_opts o;
    if (opts) o = *opts;
    else reward_think_opts_default(&o);
    if (!text) text = "", len = 0;
    clamp(&text, &len);
    if (o.style == REWARD_THINK_OPENR1) {
        pthread_once(&g_once, compile_all);
        if (o.code_lang && !lang_ok(o.code_lang)) return -1.0;
        return openr1_format(text, len, o.code_lang);
    }
    return r1_format(text, len, &o);
}

double reward_tag_count(const char *text, size_t len)
{
    if (!text) return 0.0;
    clamp(&text, &len);
    double r = 0;
    if (count(text, len, "<think>\n") == 1) r += 0.25;
    if (count(text, len, "\n</think>\n") == 1) r += 0.25;
    if (count(text, len, "\n<answer>\n") == 1) r += 0.25;
    if (count(text, len, "\n</answer>") == 1) r += 0.25;
    return r;
}

double reward_reasoning_steps(const char *text, size_t len)
{
    if (!text) return 0.0;
    clamp(&text, &len);
    pthread_once(&g_once, compile_all);
    mq_arena a;
    reward_mq_arena_init(&a);
    size_t cn;
    char *c = clean(&a, text, len, &cn);
    int k = 0;
    if (c) {
        size_t pos = 0, ov[4];
        while (pos <= cn && reward_mq_re_find(F.steps, c, cn, pos, ov, 4) == 1) {
            k++;
            pos = ov[1] > ov[0] ? ov[1] : ov[1] + 1;
        }
    }
    reward_mq_arena_free(&a);
    return k >= 3 ? 1.0 : k / 3.0;
}

/* ------------------------------------------------------------------------ */
/* Repetition penalty                                                       */

/* Decode one code point; invalid bytes decode as themselves (one byte). */
static uint32_t utf8_next(const unsigned char *s, size_t n, size_t *i)
{
    unsigned c = s[*i];
    size_t len = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
    if (len == 0 || *i + len > n) {
        (*i)++;
        return 0xFFFD;
    }
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; k < len; k++) {
        if ((s[*i + k] & 0xC0) != 0x80) {
            (*i)++;
            return 0xFFFD;
        }
        cp = (cp << 6) | (s[*i + k] & 0x3F);
    }
    *i += len;
    return cp;
}

size_t reward_utf8_length(const char *text, size_t len)
{
    size_t i = 0, k = 0;
    while (text && i < len) {
        utf8_next((const unsigned char *)text, len, &i);
        k++;
    }
    return k;
}

/* Python str.split() whitespace */
static int py_space(uint32_t c)
{
    return (c >= 9 && c <= 13) || c == ' ' || (c >= 0x1C && c <= 0x1F) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

static int is_cjk(uint32_t c)
{
    return (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0xF900 && c <= 0xFAFF) ||
           (c >= 0x20000 && c <= 0x2FFFF) || (c >= 0x3040 && c <= 0x30FF) || (c >= 0xAC00 && c <= 0xD7AF);
}

/* Lower-case for the alphabets we know (ASCII, Latin-1, Greek, Cyrillic). */
static uint32_t lower(uint32_t c)
{
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
    if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;
    if (c >= 0x410 && c <= 0x42F) return c + 32;
    if (c >= 0x400 && c <= 0x40F) return c + 80;
    return c;
}

typedef struct {
    uint32_t *cp;  /* lower-cased code points of all words, concatenated */
    size_t *start; /* word i = cp[start[i] .. start[i+1]) */
    size_t nw;
} words;

static int split_words(const char *s, size_t n, int zh, words *w)
{
    w->cp = malloc(sizeof(uint32_t) * (n + 1));
    w->start = malloc(sizeof(size_t) * (n + 2));
    if (!w->cp || !w->start) base_die("out of memory");
    size_t i = 0, k = 0;
    int in_word = 0;
    w->nw = 0;
    while (i < n) {
        uint32_t c = utf8_next((const unsigned char *)s, n, &i);
        if (py_space(c)) {
            in_word = 0;
            continue;
        }
        if (zh && is_cjk(c)) {
            w->start[w->nw++] = k;
            w->cp[k++] = c;
            in_word = 0;
            continue;
        }
        if (!in_word) w->start[w->nw++] = k;
        in_word = 1;
        w->cp[k++] = lower(c);
    }
    w->start[w->nw] = k;
    return 0;
}

typedef struct {
    uint64_t h;
    size_t first; /* index of the first word of the n-gram */
} gram;

static int gram_cmp(const void *x, const void *y)
{
    const gram *a = x, *b = y;
    return a->h < b->h ? -1 : a->h > b->h;
}

static int same_gram(const words *w, size_t a, size_t b, int n)
{
    for (int k = 0; k < n; k++) {
        size_t la = w->start[a + k + 1] - w->start[a + k], lb = w->start[b + k + 1] - w->start[b + k];
        if (la != lb || memcmp(w->cp + w->start[a + k], w->cp + w->start[b + k], la * sizeof(uint32_t)) != 0)
            return 0;
    }
    return 1;
}

double reward_repetition_penalty(const char *text, size_t len, int ngram_size, double max_penalty, const char *lang)
{
    if (ngram_size < 1 || !(max_penalty <= 0)) return NAN;
    if (!text || len == 0) return 0.0;
    clamp(&text, &len);
    int zh = lang && (lang[0] == 'z' || lang[0] == 'Z') && (lang[1] == 'h' || lang[1] == 'H');
    words w;
    split_words(text, len, zh, &w);
    double r = 0.0;
    if (w.nw >= (size_t)ngram_size) {
        size_t total = w.nw - (size_t)ngram_size + 1;
        gram *g = malloc(sizeof(gram) * total);
        if (!g) base_die("out of memory");
        for (size_t i = 0; i < total; i++) {
            uint64_t h = 1469598103934665603ull;
            for (int k = 0; k < ngram_size; k++) {
                size_t a = w.start[i + (size_t)k], b = w.start[i + (size_t)k + 1];
                for (size_t j = a; j < b; j++) {
                    h ^= w.cp[j];
                    h *= 1099511628211ull;
                }
                h ^= 0xFFFFFFFFu; /* word separator */
                h *= 1099511628211ull;
            }
            g[i].h = h;
            g[i].first = i;
        }
        qsort(g, total, sizeof *g, gram_cmp);
        /* distinct n-grams: within a run of equal hashes compare each
         * n-gram with the distinct ones of the run (one, unless the 64-bit
         * hash collided), so identical n-grams cost O(1) each */
        size_t distinct = 0;
        for (size_t i = 0; i < total;) {
            size_t j = i;
            while (j < total && g[j].h == g[i].h) j++;
            size_t reps[8];
            int nrep = 0;
            for (size_t a = i; a < j; a++) {
                int dup = 0;
                for (int b = 0; b < nrep && !dup; b++) dup = same_gram(&w, g[a].first, reps[b], ngram_size);
                if (dup) continue;
                distinct++;
                if (nrep < 8) reps[nrep++] = g[a].first;
            }
            i = j;
        }
        r = (1.0 - (double)distinct / (double)total) * max_penalty;
        free(g);
    }
    free(w.cp);
    free(w.start);
    return r == 0 ? 0.0 : r;
}

/* ------------------------------------------------------------------------ */
/* Length shaping                                                           */

void reward_cosine_opts_default(reward_cosine_opts *o)
{
    o->min_value_wrong = -1.0;
    o->max_value_wrong = -0.5;
    o->min_value_correct = 0.5;
    o->max_value_correct = 1.0;
    o->max_len = 1000;
    o->clamp = 1;
}

double reward_cosine_scaled(double gen_len, int correct, const reward_cosine_opts *opts)
{
    reward_cosine_opts o;
    if (opts) o = *opts;
    else reward_cosine_opts_default(&o);
    if (!(o.max_len > 0) || !(gen_len >= 0)) return NAN;
    if (o.clamp && gen_len > o.max_len) gen_len = o.max_len;
    double c = cos(M_PI * gen_len / o.max_len);
    double lo, hi;
    if (correct) {
        lo = o.min_value_correct;
        hi = o.max_value_correct;
    } else {
        /* swapped on purpose (open-r1): long wrong answers lose less */
        lo = o.max_value_wrong;
        hi = o.min_value_wrong;
    }
    return lo + 0.5 * (hi - lo) * (1.0 + c);
}

double reward_soft_overlong(double L, double max_len, double cache)
{
    if (!(cache > 0) || !(cache <= max_len) || !(L >= 0)) return NAN;
    double expected = max_len - cache;
    if (L <= expected) return 0.0;
    if (L <= max_len) return (expected - L) / cache;
    return -1.0;
}
