/*
 * Prompt templates: the R1-Zero training template, user templates with
 * {prompt}/{system}/{bos}/{eos}, and the DeepSeek-V3/R1 chat format.
 *
 * A template is rendered to one string and encoded as one string, so the
 * ids equal Hugging Face encoding the rendered text (a chat template's
 * output is tokenised the same way). The difference is safety: the byte
 * ranges that came from user values (prompt, system, message contents) are
 * protected, so an added-token string inside them ("<｜User｜>", "<think>")
 * stays plain text instead of becoming a control token.
 */
#include "tok/tok_int.h"

#include <stdlib.h>
#include <string.h>

const char *const tok_template_r1zero =
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process "
    "here </think> <answer> answer here </answer>. User: {prompt}. Assistant:";

#define USER_TAG "<\xef\xbd\x9cUser\xef\xbd\x9c>"
#define ASSISTANT_TAG "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>"
#define EOS_TAG "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"

typedef struct {
    base_buf text;
    tok_range *r;
    int n, cap;
} rendered;

static void put_plain(rendered *o, const char *s, size_t n) { base_buf_append(&o->text, s, n); }

static void put_value(rendered *o, const char *s, size_t n) {
    if (!n) return;
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 8;
        o->r = base_xrealloc(o->r, (size_t)o->cap * sizeof *o->r);
    }
    o->r[o->n++] = (tok_range){o->text.len, o->text.len + n};
    base_buf_append(&o->text, s, n);
}

static const char *token_or_empty(const tok_tokenizer *tk, int32_t id) {
    const char *s = id >= 0 ? tok_token_str(tk, id) : NULL;
    return s ? s : "";
}

static void render(const tok_tokenizer *tk, const char *tmpl, const tok_template_vars *v,
                   rendered *o) {
    static const char *names[] = {"{prompt}", "{system}", "{bos}", "{eos}"};
    const char *p = tmpl;
    while (*p) {
        const char *b = strchr(p, '{');
        if (!b) b = p + strlen(p);
        put_plain(o, p, (size_t)(b - p));
        p = b;
        if (!*p) break;
        int which = -1;
        for (int k = 0; k < 4 && which < 0; k++)
            if (!strncmp(p, names[k], strlen(names[k]))) which = k;
        if (which < 0) {
            put_plain(o, p, 1); /* a literal brace */
            p++;
            continue;
        }
        p += strlen(names[which]);
        const char *val = which == 0 ? (v && v->prompt ? v->prompt : "")
                          : which == 1 ? (v && v->system ? v->system : "")
                          : token_or_empty(tk, which == 2 ? tk->bos_id : tk->eos_id);
        if (which < 2) put_value(o, val, strlen(val));
        else put_plain(o, val, strlen(val));
    }
    if (!o->text.data) base_buf_puts(&o->text, "");
}

static void rendered_free(rendered *o) {
    base_buf_free(&o->text);
    free(o->r);
}

char *tok_template_render(const tok_tokenizer *tk, const char *tmpl, const tok_template_vars *v) {
    rendered o = {0};
    render(tk, tmpl, v, &o);
    free(o.r);
    return o.text.data;
}

base_status tok_template_encode(const tok_tokenizer *tk, const char *tmpl,
                                const tok_template_vars *v, int flags, tok_ids *out) {
    rendered o = {0};
    render(tk, tmpl, v, &o);
    base_status st = tok_encode_ranges(tk, o.text.data, o.text.len, o.r, o.n, flags, out);
    if (st) base_err_wrap(st, "template");
    rendered_free(&o);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Lua string escapes (templates given on the command line)                 */

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Code point u as UTF-8 (Lua 5.4 accepts up to 2^31 - 1: up to 6 bytes). */
static void put_utf8(base_buf *b, unsigned long u) {
    unsigned char t[8];
    int n = 0;
    if (u < 0x80) {
        t[n++] = (unsigned char)u;
    } else {
        unsigned long mfb = 0x3f; /* the most the first byte can hold */
        unsigned char rev[8];
        int k = 0;
        do {
            rev[k++] = (unsigned char)(0x80 | (u & 0x3f));
            u >>= 6;
            mfb >>= 1;
        } while (u > mfb);
        t[n++] = (unsigned char)((~mfb << 1) | u);
        while (k) t[n++] = rev[--k];
    }
    base_buf_append(b, t, (size_t)n);
}

base_status tok_template_unescape(const char *s, char **out) {
    *out = NULL;
    base_buf b = {0};
    base_buf_puts(&b, "");
    for (size_t i = 0; s[i];) {
        if (s[i] != '\\') {
            base_buf_append(&b, s + i, 1);
            i++;
            continue;
        }
        size_t at = i++;
        int c = (unsigned char)s[i];
        const char *simple = strchr("ntr\\\"'", c);
        if (c && simple) {
            static const char map[] = "\n\t\r\\\"'";
            base_buf_append(&b, map + (simple - "ntr\\\"'"), 1);
            i++;
        } else if (c == '\n') { /* backslash-newline: a newline */
            base_buf_puts(&b, "\n");
            i++;
        } else if (c == 'z') { /* skip the following white space */
            i++;
            while (s[i] == ' ' || (s[i] >= '\t' && s[i] <= '\r')) i++;
        } else if (c == 'x') {
            int h = s[i + 1] ? hexval((unsigned char)s[i + 1]) : -1;
            int l = h >= 0 && s[i + 2] ? hexval((unsigned char)s[i + 2]) : -1;
            if (l < 0) {
                base_buf_free(&b);
                return base_err_set(BASE_ERR_PARSE, "byte %zu: '\\x' needs two hexadecimal digits", at);
            }
            char ch = (char)(h * 16 + l);
            base_buf_append(&b, &ch, 1);
            i += 3;
        } else if (c >= '0' && c <= '9') {
            int v = 0, k = 0;
            while (k < 3 && s[i] >= '0' && s[i] <= '9') v = v * 10 + (s[i++] - '0'), k++;
            if (v > 255) {
                base_buf_free(&b);
                return base_err_set(BASE_ERR_PARSE, "byte %zu: decimal escape too large (%d > 255)", at, v);
            }
            char ch = (char)v;
            base_buf_append(&b, &ch, 1);
        } else if (c == 'u') {
            unsigned long u = 0;
            size_t k = i + 1, digits = 0;
            int ok = s[k] == '{';
            for (k++; ok && hexval((unsigned char)s[k]) >= 0; k++, digits++) {
                u = u * 16 + (unsigned long)hexval((unsigned char)s[k]);
                if (u > 0x7fffffffUL) ok = 0;
            }
            if (!ok || digits == 0 || s[k] != '}') {
                base_buf_free(&b);
                return base_err_set(BASE_ERR_PARSE, "byte %zu: '\\u' needs {HEX} with a code point below 2^31", at);
            }
            put_utf8(&b, u);
            i = k + 1;
        } else if (c && strchr("abfv", c)) {
            base_buf_free(&b);
            return base_err_set(BASE_ERR_PARSE,
                                "byte %zu: '\\%c' is a control character in a Lua string; write '\\\\%c' for a "
                                "backslash and '%c' (as in \\\\boxed, \\\\frac)",
                                at, c, c, c);
        } else {
            base_buf_free(&b);
            if (!c) return base_err_set(BASE_ERR_PARSE, "byte %zu: a lone backslash at the end (write '\\\\')", at);
            return base_err_set(BASE_ERR_PARSE,
                                "byte %zu: '\\%c' is not an escape of a Lua string; write '\\\\' for a backslash", at,
                                c);
        }
    }
    *out = b.data;
    return BASE_OK;
}

/* ------------------------------------------------------------------------ */
/* DeepSeek chat format                                                     */

static base_status chat_build(const tok_tokenizer *tk, const tok_msg *msgs, int n, int flags,
                              rendered *o) {
    for (int i = 0; i < n; i++)
        if (!msgs[i].role || (strcmp(msgs[i].role, "system") && strcmp(msgs[i].role, "user") &&
                              strcmp(msgs[i].role, "assistant")))
            return base_err_set(BASE_ERR_INVALID, "chat message %d: role \"%s\" is not system, "
                                "user or assistant", i, msgs[i].role ? msgs[i].role : "(null)");
    const char *bos = token_or_empty(tk, tk->bos_id);
    put_plain(o, bos, strlen(bos));
    int first_sys = 1;
    for (int i = 0; i < n; i++) {
        if (strcmp(msgs[i].role, "system")) continue;
        if (!first_sys) put_plain(o, "\n\n", 2);
        const char *c = msgs[i].content ? msgs[i].content : "";
        put_value(o, c, strlen(c));
        first_sys = 0;
    }
    for (int i = 0; i < n; i++) {
        const char *c = msgs[i].content ? msgs[i].content : "";
        if (!strcmp(msgs[i].role, "user")) {
            put_plain(o, USER_TAG, strlen(USER_TAG));
            put_value(o, c, strlen(c));
        } else if (!strcmp(msgs[i].role, "assistant")) {
            if (flags & TOK_CHAT_R1) {
                /* content.split('</think>')[-1] */
                for (const char *t = strstr(c, "</think>"); t; t = strstr(c, "</think>"))
                    c = t + strlen("</think>");
            }
            put_plain(o, ASSISTANT_TAG, strlen(ASSISTANT_TAG));
            if (flags & TOK_CHAT_ASSISTANT_TOKENS) put_plain(o, c, strlen(c)); /* the model's own text */
            else put_value(o, c, strlen(c));
            put_plain(o, EOS_TAG, strlen(EOS_TAG));
        }
    }
    if (flags & (TOK_CHAT_GENERATION_PROMPT)) {
        const char *g = (flags & TOK_CHAT_R1) ? TOK_R1_GENERATION_PROMPT : ASSISTANT_TAG;
        put_plain(o, g, strlen(g));
    }
    return BASE_OK;
}

base_status tok_chat_render(const tok_tokenizer *tk, const tok_msg *msgs, int n, int flags,
                            char **text) {
    rendered o = {0};
    *text = NULL;
    base_status st = chat_build(tk, msgs, n, flags, &o);
    if (!st) {
        if (!o.text.data) base_buf_puts(&o.text, "");
        *text = o.text.data;
        o.text.data = NULL;
    }
    rendered_free(&o);
    return st;
}

base_status tok_chat_encode(const tok_tokenizer *tk, const tok_msg *msgs, int n, int flags,
                            tok_ids *out) {
    rendered o = {0};
    base_status st = chat_build(tk, msgs, n, flags, &o);
    if (!st) {
        if (!o.text.data) base_buf_puts(&o.text, "");
        st = tok_encode_ranges(tk, o.text.data, o.text.len, o.r, o.n, 0, out);
    }
    rendered_free(&o);
    return st;
}

/* ------------------------------------------------------------------------ */
/* The tokenizer's chat template                                            */

static int has(const char *s, const char *pat) { return strstr(s, pat) != NULL; }

tok_chat_template_kind tok_chat_template_classify(const char *j) {
    if (!j || !*j) return TOK_CHAT_TEMPLATE_NONE;
    /* what the DeepSeek templates emit for a user and an assistant message */
    int user = has(j, "'" USER_TAG "' + message['content']");
    int asst_v3 = has(j, "'" ASSISTANT_TAG "' + message['content'] + '" EOS_TAG "'");
    int asst_r1 = has(j, "'" ASSISTANT_TAG "' + content + '" EOS_TAG "'") && has(j, "content.split('</think>')[-1]");
    /* their generation prompts ("\\n": the two characters backslash n of
     * the Jinja string literal) */
    int gen_v3 = has(j, "{{'" ASSISTANT_TAG "'}}"), gen_r1 = has(j, "{{'" ASSISTANT_TAG "<think>\\n'}}");
    /* later variants render differently (a thinking switch, a last-user rule) */
    int variant = has(j, "thinking") || has(j, "is_last_user");
    if (user && !variant) {
        if (asst_v3 && gen_v3 && !gen_r1 && !asst_r1) return TOK_CHAT_TEMPLATE_DEEPSEEK_V3;
        if (asst_r1 && gen_r1 && !gen_v3) return TOK_CHAT_TEMPLATE_DEEPSEEK_R1;
    }
    return TOK_CHAT_TEMPLATE_OTHER;
}

tok_chat_template_kind tok_chat_template(const tok_tokenizer *tk) { return (tok_chat_template_kind)tk->chat_template; }

const char *tok_chat_template_name(tok_chat_template_kind k) {
    switch (k) {
    case TOK_CHAT_TEMPLATE_NONE: return "none";
    case TOK_CHAT_TEMPLATE_DEEPSEEK_V3: return "DeepSeek-V3";
    case TOK_CHAT_TEMPLATE_DEEPSEEK_R1: return "DeepSeek-R1";
    default: return "other";
    }
}

base_status tok_chat_check(const tok_tokenizer *tk) {
    switch (tok_chat_template(tk)) {
    case TOK_CHAT_TEMPLATE_DEEPSEEK_V3:
    case TOK_CHAT_TEMPLATE_DEEPSEEK_R1: return BASE_OK;
    case TOK_CHAT_TEMPLATE_NONE:
        if (tok_token_id(tk, USER_TAG) >= 0 && tok_token_id(tk, ASSISTANT_TAG) >= 0) return BASE_OK;
        return base_err_set(BASE_ERR_UNSUPPORTED,
                            "the tokenizer %s has no chat template (no chat_template in tokenizer_config.json) "
                            "and no " USER_TAG " / " ASSISTANT_TAG " tokens: the DeepSeek chat format would reach "
                            "the model as plain text it was never trained on",
                            tk->path);
    default:
        return base_err_set(BASE_ERR_UNSUPPORTED,
                            "the chat_template of the tokenizer %s (tokenizer_config.json) is neither "
                            "DeepSeek-V3's nor DeepSeek-R1's, the only chat templates grpo renders (it has no "
                            "Jinja engine)",
                            tk->path);
    }
}
