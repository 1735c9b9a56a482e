/*
 * The resolved recipe written back as Lua (config.resolved.lua): every value
 * the run used, defaults included, loadable by `grpo run` again.
 */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "recipe.h"

static void put_string(base_buf *b, const char *s) {
    base_buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': base_buf_puts(b, "\\\""); break;
        case '\\': base_buf_puts(b, "\\\\"); break;
        case '\n': base_buf_puts(b, "\\n"); break;
        case '\r': base_buf_puts(b, "\\r"); break;
        case '\t': base_buf_puts(b, "\\t"); break;
        default:
            if (*p < 0x20 || *p == 0x7f) base_buf_printf(b, "\\%03d", *p);
            else base_buf_append(b, p, 1);
        }
    }
    base_buf_puts(b, "\"");
}

static int is_ident(const char *s) {
    static const char *kw[] = {"and", "break", "do", "else", "elseif", "end", "false", "for",
                               "function", "goto", "if", "in", "local", "nil", "not", "or",
                               "repeat", "return", "then", "true", "until", "while"};
    if (!isalpha((unsigned char)s[0]) && s[0] != '_') return 0;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_') return 0;
    for (size_t i = 0; i < sizeof kw / sizeof kw[0]; i++)
        if (!strcmp(kw[i], s)) return 0;
    return 1;
}

static void put_value(base_buf *b, const cJSON *v, int indent) {
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d == 0 && signbit(d)) base_buf_puts(b, "-0.0"); /* Lua reads -0 as the integer 0 */
        else if (d == floor(d) && fabs(d) < 1e15) base_buf_printf(b, "%.0f", d);
        else base_buf_printf(b, "%.17g", d);
    } else if (cJSON_IsBool(v)) {
        base_buf_puts(b, cJSON_IsTrue(v) ? "true" : "false");
    } else if (cJSON_IsString(v)) {
        put_string(b, v->valuestring);
    } else if (cJSON_IsNull(v)) {
        base_buf_puts(b, "nil");
    } else if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        int arr = cJSON_IsArray(v);
        if (!v->child) {
            base_buf_puts(b, "{}");
            return;
        }
        base_buf_puts(b, "{\n");
        for (const cJSON *e = v->child; e; e = e->next) {
            if (!arr && cJSON_IsNull(e)) continue; /* nil fields are absent in Lua */
            base_buf_printf(b, "%*s", (indent + 1) * 2, "");
            if (!arr) {
                if (is_ident(e->string)) base_buf_printf(b, "%s = ", e->string);
                else {
                    base_buf_puts(b, "[");
                    put_string(b, e->string);
                    base_buf_puts(b, "] = ");
                }
            }
            put_value(b, e, indent + 1);
            base_buf_puts(b, ",\n");
        }
        base_buf_printf(b, "%*s}", indent * 2, "");
    }
}

char *recipe_to_lua(const recipe *r) {
    base_buf b = {0};
    base_buf_printf(&b, "-- resolved from %s: every value of the run, defaults included\nreturn ",
                    recipe_path(r));
    put_value(&b, recipe_root(r), 0);
    base_buf_puts(&b, "\n");
    return b.data;
}

base_status recipe_write_resolved(const recipe *r, const char *path) {
    char *s = recipe_to_lua(r);
    base_status st = base_write_file_atomic(path, s, strlen(s));
    free(s);
    return st;
}
