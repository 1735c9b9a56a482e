/*
 * Language consistency (DeepSeek-R1 §2.3.2): the proportion of words of the
 * chain of thought written in the target language's script.
 *
 * What counts as a word (docs/rewards-helpers.md repeats this):
 *   1. The CoT: inside <think>...</think>; before </think> when <think> was
 *      prefilled; after <think> when it is never closed; else everything.
 *   2. Skipped entirely: fenced code (``` or ~~~ to the closing fence),
 *      inline code (`...`), math ($$...$$, $...$, \(...\), \[...\],
 *      \begin{equation|align|gather|multline|eqnarray|math|displaymath}
 *      ...\end{...}, starred or not), LaTeX command names (\frac), URLs
 *      (http://, https://, www. up to whitespace), tags (<think>, </b>).
 *   3. A word is a maximal run of letters of one script; an apostrophe or
 *      hyphen between two letters of that script and combining marks stay
 *      inside the word. Every Han, Hiragana, Katakana or Hangul character
 *      is a word by itself (these scripts do not separate words).
 *   4. Not words: digits, punctuation, symbols, and single ASCII letters
 *      (math variables such as x or n in prose).
 *   5. A word is in the target language when its script is one the
 *      language is written in (en: Latin; zh: Han; ja: Han, Hiragana,
 *      Katakana; ko: Hangul; ru: Cyrillic; ...). Scripts cannot tell
 *      Latin-script languages apart: for "fr" an English word counts.
 */
#include <math.h>
#include <string.h>

#include "base/base.h"
#include "reward/rules/rules_int.h"

typedef enum {
    S_NONE = 0, /* not a letter */
    S_LATIN, S_GREEK, S_CYRILLIC, S_ARMENIAN, S_HEBREW, S_ARABIC, S_DEVANAGARI, S_BENGALI,
    S_TAMIL, S_THAI, S_GEORGIAN, S_HANGUL, S_HIRAGANA, S_KATAKANA, S_HAN, S_OTHER_LETTER,
    S_MARK, /* combining mark: continues the current word */
    S_COUNT
} script;

static uint32_t next_cp(const unsigned char *s, size_t n, size_t *i)
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

static script classify(uint32_t c)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')) return S_LATIN;
    if (c < 0xC0) return c == 0xAA || c == 0xBA ? S_LATIN : S_NONE;
    if (c <= 0x24F) return c == 0xD7 || c == 0xF7 ? S_NONE : S_LATIN;
    if (c <= 0x2AF) return S_LATIN; /* IPA extensions */
    if (c >= 0x300 && c <= 0x36F) return S_MARK;
    if (c >= 0x370 && c <= 0x3FF) return c == 0x37E || c == 0x387 ? S_NONE : S_GREEK;
    if (c >= 0x400 && c <= 0x52F) return (c >= 0x483 && c <= 0x489) ? S_MARK : S_CYRILLIC;
    if (c >= 0x531 && c <= 0x58F) return S_ARMENIAN;
    if (c >= 0x591 && c <= 0x5C7) return S_MARK;
    if (c >= 0x5D0 && c <= 0x5F4) return S_HEBREW;
    if ((c >= 0x610 && c <= 0x61A) || (c >= 0x64B && c <= 0x65F) || c == 0x670) return S_MARK;
    if ((c >= 0x660 && c <= 0x669) || (c >= 0x6F0 && c <= 0x6F9)) return S_NONE; /* digits */
    if ((c >= 0x620 && c <= 0x6FF) || (c >= 0x750 && c <= 0x77F) || (c >= 0x8A0 && c <= 0x8FF) ||
        (c >= 0xFB50 && c <= 0xFDFF) || (c >= 0xFE70 && c <= 0xFEFF))
        return c == 0x640 ? S_NONE : S_ARABIC;
    if (c >= 0x900 && c <= 0x97F) {
        if (c >= 0x966 && c <= 0x96F) return S_NONE;
        if ((c >= 0x900 && c <= 0x903) || (c >= 0x93A && c <= 0x94F) || (c >= 0x951 && c <= 0x957) ||
            c == 0x962 || c == 0x963)
            return S_MARK;
        return c == 0x964 || c == 0x965 ? S_NONE : S_DEVANAGARI;
    }
    if (c >= 0x980 && c <= 0x9FF) return (c >= 0x9E6 && c <= 0x9EF) ? S_NONE : S_BENGALI;
    if (c >= 0xB80 && c <= 0xBFF) return (c >= 0xBE6 && c <= 0xBEF) ? S_NONE : S_TAMIL;
    if (c >= 0xE00 && c <= 0xE7F) {
        if (c >= 0xE50 && c <= 0xE59) return S_NONE;
        if (c == 0xE31 || (c >= 0xE34 && c <= 0xE3A) || (c >= 0xE47 && c <= 0xE4E)) return S_MARK;
        return S_THAI;
    }
    if (c >= 0x10A0 && c <= 0x10FF) return S_GEORGIAN;
    if (c >= 0x1100 && c <= 0x11FF) return S_HANGUL;
    if (c >= 0x1AB0 && c <= 0x1AFF) return S_MARK;
    if (c >= 0x1DC0 && c <= 0x1DFF) return S_MARK;
    if (c >= 0x1E00 && c <= 0x1EFF) return S_LATIN;
    if (c >= 0x1F00 && c <= 0x1FFF) return S_GREEK;
    if (c >= 0x20D0 && c <= 0x20FF) return S_MARK;
    if (c >= 0x2C60 && c <= 0x2C7F) return S_LATIN;
    if (c >= 0x2DE0 && c <= 0x2DFF) return S_CYRILLIC;
    if (c == 0x3005 || c == 0x3007 || (c >= 0x3021 && c <= 0x3029)) return S_HAN;
    if (c >= 0x3041 && c <= 0x309F) return (c == 0x3099 || c == 0x309A) ? S_MARK : S_HIRAGANA;
    if (c >= 0x30A1 && c <= 0x30FF) return c == 0x30FB ? S_NONE : S_KATAKANA;
    if (c >= 0x3130 && c <= 0x318F) return S_HANGUL;
    if (c >= 0x31F0 && c <= 0x31FF) return S_KATAKANA;
    if (c >= 0x3400 && c <= 0x4DBF) return S_HAN;
    if (c >= 0x4E00 && c <= 0x9FFF) return S_HAN;
    if (c >= 0xA640 && c <= 0xA69F) return S_CYRILLIC;
    if (c >= 0xA720 && c <= 0xA7FF) return S_LATIN;
    if (c >= 0xAC00 && c <= 0xD7AF) return S_HANGUL;
    if (c >= 0xF900 && c <= 0xFAFF) return S_HAN;
    if (c >= 0xFE20 && c <= 0xFE2F) return S_MARK;
    if ((c >= 0xFF21 && c <= 0xFF3A) || (c >= 0xFF41 && c <= 0xFF5A)) return S_LATIN; /* fullwidth */
    if (c >= 0xFF66 && c <= 0xFF9D) return S_KATAKANA;
    if (c >= 0xFFA0 && c <= 0xFFDC) return S_HANGUL;
    if (c >= 0x20000 && c <= 0x3134F) return S_HAN;
    return S_NONE;
}

static int single_char_words(script s) { return s == S_HAN || s == S_HIRAGANA || s == S_KATAKANA || s == S_HANGUL; }

/* ------------------------------------------------------------------------ */
/* Languages                                                                */

static const struct {
    const char *codes; /* space separated ISO 639-1 codes */
    script s[3];
} k_langs[] = {
    {"en fr de es it pt nl sv da no nb nn fi pl cs sk sl hr bs ro hu tr id ms vi tl sw ca eu gl et "
     "lv lt is ga cy sq af eo la az uz mt lb fo ha yo ig zu xh so jv su",
     {S_LATIN}},
    {"ru uk be bg mk sr kk ky mn tg tt ba cv", {S_CYRILLIC}},
    {"el", {S_GREEK}},
    {"zh", {S_HAN}},
    {"ja", {S_HAN, S_HIRAGANA, S_KATAKANA}},
    {"ko", {S_HANGUL}},
    {"ar fa ur ps ug ku sd", {S_ARABIC}},
    {"he yi", {S_HEBREW}},
    {"hi mr ne sa", {S_DEVANAGARI}},
    {"bn as", {S_BENGALI}},
    {"ta", {S_TAMIL}},
    {"th", {S_THAI}},
    {"hy", {S_ARMENIAN}},
    {"ka", {S_GEORGIAN}},
};

/* Scripts of `lang` as a bit mask, 0 if unknown. "en-US", "zh_Hans" take
 * the primary subtag. */
static unsigned lang_mask(const char *lang)
{
    if (!lang) return 0;
    char code[8];
    size_t n = 0;
    while (lang[n] && lang[n] != '-' && lang[n] != '_' && n < 7) {
        char c = lang[n];
        code[n++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    if (lang[n] && lang[n] != '-' && lang[n] != '_') return 0;
    code[n] = 0;
    if (n < 2) return 0;
    for (size_t i = 0; i < sizeof k_langs / sizeof k_langs[0]; i++) {
        const char *p = k_langs[i].codes;
        while (*p) {
            size_t l = strcspn(p, " ");
            if (l == n && memcmp(p, code, n) == 0) {
                unsigned m = 0;
                for (int k = 0; k < 3; k++)
                    if (k_langs[i].s[k]) m |= 1u << k_langs[i].s[k];
                return m;
            }
            p += l;
            while (*p == ' ') p++;
        }
    }
    return 0;
}

int reward_lang_known(const char *lang) { return lang_mask(lang) != 0; }

/* ------------------------------------------------------------------------ */
/* Spans that are not prose                                                 */

static const char *find_str(const char *s, const char *e, const char *needle)
{
    size_t m = strlen(needle);
    for (const char *p = s; p + m <= e; p++)
        if (*p == needle[0] && memcmp(p, needle, m) == 0) return p;
    return NULL;
}

/* End of a span starting at s, or NULL if s does not start one. */
static const char *skip_span(const char *s, const char *e)
{
    size_t left = (size_t)(e - s);
    if (left >= 3 && (memcmp(s, "```", 3) == 0 || memcmp(s, "~~~", 3) == 0)) {
        char fence[4] = {s[0], s[0], s[0], 0};
        const char *q = find_str(s + 3, e, fence);
        return q ? q + 3 : e;
    }
    if (*s == '`') {
        const char *q = memchr(s + 1, '`', (size_t)(e - s - 1));
        return q ? q + 1 : s + 1;
    }
    if (left >= 2 && s[0] == '$' && s[1] == '$') {
        const char *q = find_str(s + 2, e, "$$");
        return q ? q + 2 : e;
    }
    if (*s == '$') {
        for (const char *q = s + 1; q < e; q++) {
            if (*q == '\\' && q + 1 < e) {
                q++;
                continue;
            }
            if (*q == '$') return q + 1;
        }
        return s + 1;
    }
    if (*s == '\\' && left >= 2 && (s[1] == '(' || s[1] == '[')) {
        const char *q = find_str(s + 2, e, s[1] == '(' ? "\\)" : "\\]");
        return q ? q + 2 : e;
    }
    if (*s == '\\' && left >= 2 && s[1] == '$') return s + 2; /* \$ currency */
    if (*s == '\\' && left >= 7 && memcmp(s, "\\begin{", 7) == 0) {
        static const char *const envs[] = {"equation", "align", "gather", "multline", "eqnarray",
                                           "math", "displaymath", "aligned", "split", "array", "cases"};
        const char *nm = s + 7;
        const char *close = memchr(nm, '}', (size_t)(e - nm));
        if (close) {
            size_t l = (size_t)(close - nm);
            size_t base = l && nm[l - 1] == '*' ? l - 1 : l;
            for (size_t k = 0; k < sizeof envs / sizeof envs[0]; k++)
                if (strlen(envs[k]) == base && memcmp(nm, envs[k], base) == 0) {
                    char end[64];
                    snprintf(end, sizeof end, "\\end{%.*s}", (int)l, nm);
                    const char *q = find_str(close + 1, e, end);
                    return q ? q + strlen(end) : e;
                }
        }
    }
    if (*s == '\\' && left >= 2 && ((s[1] | 32) >= 'a' && (s[1] | 32) <= 'z')) {
        const char *q = s + 1;
        while (q < e && (((*q | 32) >= 'a' && (*q | 32) <= 'z'))) q++;
        return q;
    }
    if ((left >= 7 && memcmp(s, "http://", 7) == 0) || (left >= 8 && memcmp(s, "https://", 8) == 0) ||
        (left >= 4 && memcmp(s, "www.", 4) == 0)) {
        const char *q = s;
        while (q < e && !(*q == ' ' || *q == '\n' || *q == '\t' || *q == '\r')) q++;
        return q;
    }
    if (*s == '<') {
        const char *q = s + 1;
        if (q < e && *q == '/') q++;
        if (q < e && (((*q | 32) >= 'a' && (*q | 32) <= 'z'))) {
            while (q < e && (((*q | 32) >= 'a' && (*q | 32) <= 'z') || (*q >= '0' && *q <= '9') || *q == '_' || *q == '-'))
                q++;
            if (q < e && *q == '>') return q + 1;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Counting                                                                 */

static void cot_region(const char *s, size_t n, const char **b, const char **e)
{
    const char *end = s + n;
    const char *close = find_str(s, end, "</think>");
    if (close) {
        /* the last <think> before the close, if any */
        const char *open = NULL, *p = s, *q;
        while ((q = find_str(p, close, "<think>"))) {
            open = q;
            p = q + 7;
        }
        *b = open ? open + 7 : s;
        *e = close;
        return;
    }
    const char *open = find_str(s, end, "<think>");
    *b = open ? open + 7 : s;
    *e = end;
}

static int is_joiner(uint32_t c) { return c == '\'' || c == 0x2019 || c == '-' || c == 0x2010; }

double reward_lang_ratio(const char *text, size_t len, const char *lang, reward_lang_counts *counts)
{
    unsigned mask = lang_mask(lang);
    if (counts) counts->target = counts->total = 0;
    if (!mask) return -1.0;
    if (!text) text = "", len = 0;
    if (len > REWARD_MAX_TEXT) {
        text += len - REWARD_MAX_TEXT;
        len = REWARD_MAX_TEXT;
    }
    const char *b, *e;
    cot_region(text, len, &b, &e);
    int64_t target = 0, total = 0;
    script cur = S_NONE;  /* script of the word being read */
    size_t cur_len = 0;   /* its letters */
    int cur_ascii1 = 0;   /* one ASCII letter so far */
    const unsigned char *u = (const unsigned char *)b;
    size_t n = (size_t)(e - b), i = 0;
#define END_WORD()                                                      \
    do {                                                                \
        if (cur != S_NONE && !(cur_len == 1 && cur_ascii1)) {           \
            total++;                                                    \
            if (mask & (1u << cur)) target++;                           \
        }                                                               \
        cur = S_NONE;                                                   \
        cur_len = 0;                                                    \
    } while (0)
    while (i < n) {
        const char *sp = skip_span(b + i, e);
        if (sp) {
            END_WORD();
            i = (size_t)(sp - b);
            continue;
        }
        size_t at = i;
        uint32_t c = next_cp(u, n, &i);
        script s = classify(c);
        if (s == S_MARK) continue;
        if (s == S_NONE) {
            /* apostrophe/hyphen between two letters of the word's script */
            if (cur != S_NONE && !single_char_words(cur) && is_joiner(c) && i < n) {
                size_t j = i;
                uint32_t nx = next_cp(u, n, &j);
                if (classify(nx) == cur) continue;
            }
            (void)at;
            END_WORD();
            continue;
        }
        if (single_char_words(s)) {
            END_WORD();
            total++;
            if (mask & (1u << s)) target++;
            continue;
        }
        if (s != cur) {
            END_WORD();
            cur = s;
            cur_ascii1 = c < 0x80;
        }
        cur_len++;
    }
    END_WORD();
#undef END_WORD
    if (counts) counts->target = target, counts->total = total;
    return total ? (double)target / (double)total : NAN;
}
