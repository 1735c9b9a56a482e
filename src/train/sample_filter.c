/*
 * Rejection sampling without the model: the reasoning span, R1's filters
 * (mixed language, long paragraphs, code blocks) and the `keep` expression
 * in a restricted Lua state. See sample_internal.h.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reward/rules/rules.h"
#include "sample_internal.h"

/* ---- the reasoning ------------------------------------------------------ */

static const char *find(const char *s, const char *end, const char *pat) {
    size_t m = strlen(pat);
    if (end < s || (size_t)(end - s) < m) return NULL;
    return memmem(s, (size_t)(end - s), pat, m);
}

void sample_reasoning(const char *text, size_t n, size_t *start, size_t *len) {
    const char *end = text + n, *close = find(text, end, "</think>");
    const char *b = text, *e = end;
    if (close) { /* after the last <think> before the first </think> */
        const char *p = text, *q;
        while ((q = find(p, close, "<think>"))) b = q + 7, p = q + 7;
        e = close;
    } else {
        const char *open = find(text, end, "<think>");
        if (open) b = open + 7;
    }
    *start = (size_t)(b - text);
    *len = (size_t)(e - b);
}

/* ---- filters ------------------------------------------------------------ */

static const char *const filter_names[SAMPLE_FILTER_COUNT] = {"mixed_language", "long_paragraphs", "code_blocks"};

const char *sample_filter_name(sample_filter f) {
    return f >= 0 && f < SAMPLE_FILTER_COUNT ? filter_names[f] : "?";
}

int sample_filter_parse(const char *name) {
    for (int i = 0; i < SAMPLE_FILTER_COUNT; i++)
        if (!strcmp(name, filter_names[i])) return i;
    return -1;
}

int sample_mixed_language(const char *cot, size_t n, const char *lang, double min_ratio, double *ratio) {
    double r = reward_lang_ratio(cot, n, lang, NULL);
    if (ratio) *ratio = r < 0 ? NAN : r;
    if (r < 0) return -1;
    if (isnan(r)) return 0; /* no words: nothing is mixed */
    return r < min_ratio;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }

/* UTF-8 characters of s[b, e) without leading/trailing whitespace. */
static int64_t para_chars(const char *s, size_t b, size_t e) {
    while (b < e && is_space(s[b])) b++;
    while (e > b && is_space(s[e - 1])) e--;
    int64_t k = 0;
    for (size_t i = b; i < e; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

int sample_long_paragraphs(const char *cot, size_t n, int64_t max_chars, int64_t *longest) {
    int64_t best = 0;
    size_t para = 0, i = 0;
    while (i < n) {
        if (cot[i] != '\n') {
            i++;
            continue;
        }
        /* a newline: is the next line blank (up to another newline)? */
        size_t j = i + 1;
        while (j < n && (cot[j] == ' ' || cot[j] == '\t' || cot[j] == '\r')) j++;
        if (j < n && cot[j] == '\n') {
            int64_t k = para_chars(cot, para, i);
            if (k > best) best = k;
            while (j < n && is_space(cot[j])) j++; /* runs of blank lines are one break */
            para = i = j;
        } else {
            i = j;
        }
    }
    int64_t k = para_chars(cot, para, n);
    if (k > best) best = k;
    if (longest) *longest = best;
    return best > max_chars;
}

int sample_code_blocks(const char *cot, size_t n) { return find(cot, cot + n, "```") != NULL; }

/* ---- the keep expression ------------------------------------------------ */

enum { KEEP_INSTRUCTIONS = 1000000, KEEP_HOOK_EVERY = 1000 };
#define KEEP_MEMORY ((size_t)16 << 20)

struct sample_keep {
    lua_State *L;
    char *expr;
    int fn_ref;       /* the compiled chunk */
    size_t mem, cap;  /* bytes in use / allowed */
    int64_t budget;   /* instructions left in this evaluation */
};

/* Allocator with a cap (Lua raises "not enough memory" past it). */
static void *keep_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    sample_keep *k = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        k->mem -= old;
        return NULL;
    }
    if (nsize > old && k->mem + (nsize - old) > k->cap) return NULL;
    void *p = realloc(ptr, nsize);
    if (p) k->mem = k->mem - old + nsize;
    return p;
}

static void keep_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    sample_keep *k;
    lua_getallocf(L, (void **)&k);
    k->budget -= KEEP_HOOK_EVERY;
    if (k->budget < 0) luaL_error(L, "over the instruction budget (%d)", KEEP_INSTRUCTIONS);
}

base_status sample_keep_new(const char *expr, sample_keep **out) {
    *out = NULL;
    if (!expr || !*expr) return base_err_set(BASE_ERR_INVALID, "keep expression: empty");
    sample_keep *k = base_xcalloc(1, sizeof *k);
    k->cap = KEEP_MEMORY;
    k->expr = base_xstrdup(expr);
    k->L = lua_newstate(keep_alloc, k);
    if (!k->L) {
        free(k->expr), free(k);
        return base_err_set(BASE_ERR_NOMEM, "keep expression: cannot create a Lua state");
    }
    lua_State *L = k->L;
    static const luaL_Reg libs[] = {{LUA_GNAME, luaopen_base},       {LUA_STRLIBNAME, luaopen_string},
                                    {LUA_TABLIBNAME, luaopen_table}, {LUA_MATHLIBNAME, luaopen_math},
                                    {LUA_UTF8LIBNAME, luaopen_utf8}};
    for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) {
        luaL_requiref(L, libs[i].name, libs[i].func, 1);
        lua_pop(L, 1);
    }
    static const char *const banned[] = {"load", "loadfile", "dofile", "require", "collectgarbage", "print"};
    for (size_t i = 0; i < sizeof banned / sizeof banned[0]; i++) {
        lua_pushnil(L);
        lua_setglobal(L, banned[i]);
    }
    base_buf src = {0};
    base_buf_printf(&src, "return (%s)", expr);
    int rc = luaL_loadbufferx(L, src.data, src.len, "=keep", "t");
    base_buf_free(&src);
    if (rc != LUA_OK) {
        base_status s = base_err_set(BASE_ERR_PARSE, "keep expression '%s': syntax error: %s", expr, lua_tostring(L, -1));
        sample_keep_free(k);
        return s;
    }
    k->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_sethook(L, keep_hook, LUA_MASKCOUNT, KEEP_HOOK_EVERY);
    *out = k;
    return BASE_OK;
}

/* JSON -> Lua (null -> nil; integral numbers -> integers). */
static void push_json(lua_State *L, const cJSON *v, int depth) {
    luaL_checkstack(L, 4, "sample nesting");
    if (depth > 64 || !v || cJSON_IsNull(v) || cJSON_IsInvalid(v)) {
        lua_pushnil(L);
    } else if (cJSON_IsBool(v)) {
        lua_pushboolean(L, cJSON_IsTrue(v));
    } else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d == floor(d) && fabs(d) <= 9007199254740992.0) lua_pushinteger(L, (lua_Integer)d);
        else lua_pushnumber(L, d);
    } else if (cJSON_IsString(v)) {
        lua_pushstring(L, v->valuestring);
    } else if (cJSON_IsArray(v)) {
        lua_createtable(L, cJSON_GetArraySize(v), 0);
        lua_Integer i = 1;
        for (const cJSON *e = v->child; e; e = e->next, i++) {
            push_json(L, e, depth + 1);
            lua_rawseti(L, -2, i);
        }
    } else {
        lua_createtable(L, 0, cJSON_GetArraySize(v));
        for (const cJSON *e = v->child; e; e = e->next) {
            push_json(L, e, depth + 1);
            lua_setfield(L, -2, e->string);
        }
    }
}

typedef struct {
    sample_keep *k;
    double total;
    const char *const *names;
    const double *scores;
    int nf;
    const cJSON *sample;
} keep_args;

/* Runs protected: sets the globals, calls the chunk, leaves its value. */
static int keep_call(lua_State *L) {
    keep_args *a = lua_touserdata(L, 1);
    if (isnan(a->total)) lua_pushnil(L);
    else lua_pushnumber(L, a->total);
    lua_setglobal(L, "reward");
    lua_createtable(L, 0, a->nf);
    for (int f = 0; f < a->nf; f++) {
        if (isnan(a->scores[f])) continue;
        lua_pushnumber(L, a->scores[f]);
        lua_setfield(L, -2, a->names[f]);
    }
    lua_setglobal(L, "rewards");
    push_json(L, a->sample, 0);
    lua_getfield(L, -1, "completion");
    lua_setglobal(L, "completion");
    lua_getfield(L, -1, "finish_reason");
    lua_setglobal(L, "finish_reason");
    lua_setglobal(L, "sample");
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->k->fn_ref);
    lua_call(L, 0, 1);
    return 1;
}

base_status sample_keep_eval(sample_keep *k, double total, const char *const *names, const double *scores,
                             int nf, const cJSON *sample, int *keep) {
    *keep = 0;
    lua_State *L = k->L;
    keep_args a = {k, total, names, scores, nf, sample};
    k->budget = KEEP_INSTRUCTIONS;
    lua_pushcfunction(L, keep_call);
    lua_pushlightuserdata(L, &a);
    int rc = lua_pcall(L, 1, 1, 0);
    base_status s = BASE_OK;
    if (rc != LUA_OK) {
        const char *m = lua_tostring(L, -1);
        base_buf hint = {0};
        if (m && strstr(m, "nil")) {
            base_buf_puts(&hint, " (reward and rewards.NAME are nil when the functions gave nil, and rewards has only");
            for (int f = 0; f < nf; f++) base_buf_printf(&hint, "%s%s", f ? ", " : " ", names[f]);
            base_buf_puts(&hint, ": write e.g. '(rewards.NAME or 0) > 0')");
        }
        s = base_err_set(BASE_ERR_INVALID, "keep expression '%s': %s%s", k->expr,
                         m ? m : "error object is not a string", hint.data ? hint.data : "");
        base_buf_free(&hint);
    } else if (lua_isboolean(L, -1) || lua_isnil(L, -1)) {
        *keep = lua_toboolean(L, -1);
    } else {
        /* no luaL_tolstring: a __tostring metamethod could raise outside pcall */
        char shown[64] = "";
        if (lua_type(L, -1) == LUA_TNUMBER) snprintf(shown, sizeof shown, " %.17g", lua_tonumber(L, -1));
        else if (lua_type(L, -1) == LUA_TSTRING) snprintf(shown, sizeof shown, " \"%.40s\"", lua_tostring(L, -1));
        s = base_err_set(BASE_ERR_INVALID,
                         "keep expression '%s': gave a %s%s, not true or false; write a condition such as "
                         "'reward > 0'",
                         k->expr, luaL_typename(L, -1), shown);
    }
    lua_settop(L, 0);
    return s;
}

void sample_keep_free(sample_keep *k) {
    if (!k) return;
    if (k->L) lua_close(k->L);
    free(k->expr);
    free(k);
}
