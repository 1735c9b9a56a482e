/*
 * In-memory recipes for the one-stage commands (sample, eval, sft). See
 * recipe_cli.h.
 */
#include "cli/recipe_cli.h"

#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "recipe/recipe.h"
#include "reward/reward.h"
#include "tok/tok.h"

void cli_lua_str(base_buf *b, const char *s) {
    base_buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') base_buf_printf(b, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f) base_buf_printf(b, "\\%03d", *p);
        else base_buf_append(b, p, 1);
    }
    base_buf_puts(b, "\"");
}

void cli_lua_kv_str(base_buf *b, const char *key, const char *val) {
    base_buf_printf(b, "%s = ", key);
    cli_lua_str(b, val);
    base_buf_puts(b, ",\n");
}

/* A JSON scalar (reward params are scalars in the text form) as Lua. */
static void lua_scalar(base_buf *b, const cJSON *v) {
    if (cJSON_IsNumber(v)) base_buf_printf(b, "%.17g", v->valuedouble);
    else if (cJSON_IsBool(v)) base_buf_puts(b, cJSON_IsTrue(v) ? "true" : "false");
    else if (cJSON_IsString(v)) cli_lua_str(b, v->valuestring);
    else base_buf_puts(b, "nil");
}

base_status cli_lua_rewards(base_buf *b, const char *spec) {
    reward_spec rs;
    base_status s = reward_spec_parse(spec, &rs);
    if (s) return s;
    base_buf_puts(b, "rewards = {\n");
    for (int i = 0; i < rs.n; i++) {
        const reward_fn_spec *f = &rs.fns[i];
        base_buf_puts(b, "  { script = ");
        cli_lua_str(b, f->path);
        base_buf_printf(b, ", weight = %.17g, name = ", f->weight);
        cli_lua_str(b, f->name);
        if (f->params) {
            base_buf_puts(b, ", params = {");
            for (const cJSON *p = f->params->child; p; p = p->next) {
                base_buf_puts(b, "[");
                cli_lua_str(b, p->string);
                base_buf_puts(b, "] = ");
                lua_scalar(b, p);
                base_buf_puts(b, ", ");
            }
            base_buf_puts(b, "}");
        }
        base_buf_puts(b, " },\n");
    }
    base_buf_puts(b, "},\n");
    reward_spec_free(&rs);
    return BASE_OK;
}

/* ---- run directories ----------------------------------------------------- */

base_status cli_run_dir_open(const char *cmd, const char *run_dir, cli_run_dir *rd) {
    memset(rd, 0, sizeof *rd);
    snprintf(rd->cmd, sizeof rd->cmd, "%s", cmd);
    char *path;
    if (run_dir) {
        if (!*run_dir) return base_err_set(BASE_ERR_INVALID, "--run-dir: empty path");
        path = base_xstrdup(run_dir);
        size_t n = strlen(path);
        while (n > 1 && path[n - 1] == '/') path[--n] = 0;
    } else {
        const char *t = getenv("TMPDIR");
        base_buf b = {0};
        base_buf_printf(&b, "%s/grpo-%s-XXXXXX", t && *t ? t : "/tmp", cmd);
        if (!mkdtemp(b.data)) {
            base_status s = base_err_set(BASE_ERR_IO, "%s: cannot create a temporary run directory: %s", b.data,
                                         base_strerror_now());
            base_buf_free(&b);
            return s;
        }
        path = b.data;
        rd->tmp = base_xstrdup(path);
    }
    char *a = base_xstrdup(path), *c = base_xstrdup(path);
    rd->output_dir = base_xstrdup(dirname(a));
    rd->name = base_xstrdup(basename(c));
    rd->path = path;
    free(a), free(c);
    if (!strcmp(rd->name, "/") || !strcmp(rd->name, ".") || !strcmp(rd->name, "..")) {
        base_status s = base_err_set(BASE_ERR_INVALID, "--run-dir '%s': name a directory", run_dir);
        cli_run_dir_close(rd);
        return s;
    }
    return BASE_OK;
}

/* Lines of the run's reward error log (0 when it has none). */
static int64_t reward_log_lines(const char *dir) {
    char *p = base_path_join(dir, "reward_errors.log");
    FILE *f = fopen(p, "r");
    free(p);
    if (!f) return 0;
    int64_t n = 0;
    int ch;
    while ((ch = getc(f)) != EOF) n += ch == '\n';
    fclose(f);
    return n;
}

void cli_run_dir_close(cli_run_dir *rd) {
    int64_t errs = rd->tmp ? reward_log_lines(rd->tmp) : 0;
    if (errs > 0) /* the messages pointed there: keep it */
        fprintf(stderr, "grpo %s: %lld reward error(s): kept the run directory %s for its reward_errors.log "
                "(remove it when done)\n", rd->cmd, (long long)errs, rd->tmp);
    else if (rd->tmp && base_remove_tree(rd->tmp))
        base_warn("could not remove the temporary run directory: %s", base_err_msg());
    free(rd->output_dir), free(rd->name), free(rd->path), free(rd->tmp);
    memset(rd, 0, sizeof *rd);
}

int cli_run_recipe_src(const char *cmd, const char *src, cli_common *co, const cli_run_dir *rd) {
    co->ro.no_results = 1;
    co->ro.temporary_dir = rd->tmp != NULL;
    char chunk[64];
    snprintf(chunk, sizeof chunk, "(grpo %s)", cmd);
    for (int i = 0; i < co->n_user_sets; i++) co->sets[co->nsets++] = (recipe_set){co->user_sets[i], NULL};
    co->n_user_sets = 0;
    recipe *rc;
    if (recipe_load_string_sets(src, chunk, co->sets, co->nsets, &rc)) {
        fprintf(stderr, "grpo %s: %s\n", cmd, base_err_msg());
        return 2;
    }
    int r = 0;
    co->ro.stop_signal = cli_catch_stop_signals();
    base_status s = run_recipe(rc, &co->ro);
    if (s == BASE_ERR_INTERRUPTED && *co->ro.stop_signal) {
        r = 128 + *co->ro.stop_signal;
        if (co->run_dir) fprintf(stderr, "grpo %s: %s\n", cmd, base_err_msg());
        else /* the temporary run directory goes: nothing to resume */
            fprintf(stderr, "grpo %s: interrupted (its temporary run directory is removed; --run-dir DIR keeps a run "
                            "that --resume continues)\n", cmd);
    } else if (s) {
        fprintf(stderr, "grpo %s: %s\n", cmd, base_err_msg());
        r = 1;
    }
    recipe_free(rc);
    return r;
}

base_status cli_copy_file(const char *src, const char *dst) {
    FILE *in = fopen(src, "rb");
    if (!in) return base_err_set(BASE_ERR_IO, "%s: %s", src, base_strerror_now());
    base_buf tmp = {0};
    base_buf_printf(&tmp, "%s.tmp-%ld", dst, (long)getpid());
    FILE *out = fopen(tmp.data, "wb");
    base_status s = BASE_OK;
    if (!out) {
        s = base_err_set(BASE_ERR_IO, "%s: %s", tmp.data, base_strerror_now());
        fclose(in);
        base_buf_free(&tmp);
        return s;
    }
    enum { CHUNK = 1 << 20 };
    char *buf = base_xmalloc(CHUNK);
    size_t n;
    while ((n = fread(buf, 1, CHUNK, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) break;
    int bad = ferror(in) || ferror(out) || fflush(out) != 0 || fsync(fileno(out)) != 0;
    bad |= fclose(out) != 0;
    fclose(in);
    free(buf);
    if (bad || rename(tmp.data, dst) != 0) {
        s = base_err_set(BASE_ERR_IO, "%s: cannot write: %s", dst, base_strerror_now());
        unlink(tmp.data);
    }
    base_buf_free(&tmp);
    return s;
}

/* ---- shared options ------------------------------------------------------ */

void cli_common_init(cli_common *co, int argc) {
    memset(co, 0, sizeof *co);
    co->sets = base_xcalloc((size_t)argc + 1, sizeof *co->sets);
    co->user_sets = base_xcalloc((size_t)argc + 1, sizeof *co->user_sets);
    co->owned = base_xcalloc(2 * (size_t)argc + 1, sizeof *co->owned);
}

void cli_common_free(cli_common *co) {
    base_buf_free(&co->top);
    base_buf_free(&co->stage);
    base_buf_free(&co->stops);
    for (int i = 0; i < co->n_owned; i++) free(co->owned[i]);
    free(co->owned), free(co->sets), free(co->user_sets);
}

/* The override "PATH=JSON" of option `opt` given `arg` (origin "OPT ARG"). */
static void flag_set(cli_common *co, const char *opt, const char *arg, int stage, const char *key, const char *json) {
    base_buf set = {0}, origin = {0};
    base_buf_printf(&set, "%s%s=%s", stage ? "stages.1." : "", key, json);
    base_buf_printf(&origin, "%s %s", opt, arg);
    co->owned[co->n_owned++] = set.data;
    co->owned[co->n_owned++] = origin.data;
    co->sets[co->nsets++] = (recipe_set){set.data, origin.data};
}

int cli_flag_num(cli_common *co, const char *cmd, const char *opt, int stage, const char *key, const char *arg,
                 int integer) {
    char *end, json[64];
    errno = 0;
    if (integer) {
        long long v = strtoll(arg, &end, 10);
        if (!*arg || *end || errno) return cli_usage_error(cmd, "%s: '%s' is not an integer", opt, arg);
        snprintf(json, sizeof json, "%lld", v);
    } else {
        double d = strtod(arg, &end);
        if (!*arg || *end || errno || !isfinite(d)) return cli_usage_error(cmd, "%s: '%s' is not a number", opt, arg);
        snprintf(json, sizeof json, "%.17g", d);
    }
    flag_set(co, opt, arg, stage, key, json);
    return 0;
}

void cli_flag_str(cli_common *co, const char *opt, int stage, const char *key, const char *arg) {
    cJSON *v = cJSON_CreateString(arg);
    char *json = cJSON_PrintUnformatted(v);
    if (!json) base_die("cJSON_PrintUnformatted: out of memory");
    flag_set(co, opt, arg, stage, key, json);
    cJSON_free(json);
    cJSON_Delete(v);
}

void cli_flag_list(cli_common *co, const char *opt, int stage, const char *key, const char *csv) {
    cJSON *v = cJSON_CreateArray();
    char *copy = base_xstrdup(csv), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ') t++;
        size_t n = strlen(t);
        while (n && t[n - 1] == ' ') t[--n] = 0;
        if (n) cJSON_AddItemToArray(v, cJSON_CreateString(t));
    }
    free(copy);
    char *json = cJSON_PrintUnformatted(v);
    if (!json) base_die("cJSON_PrintUnformatted: out of memory");
    flag_set(co, opt, csv, stage, key, json);
    cJSON_free(json);
    cJSON_Delete(v);
}

int cli_common_opt(cli_common *co, const char *cmd, int c, const char *arg) {
    base_buf *t = &co->top;
    switch (c) {
    case CLI_OPT_MODEL: co->model = arg; cli_lua_kv_str(t, "model", arg); return 0;
    case CLI_OPT_TOKENIZER: cli_lua_kv_str(t, "tokenizer", arg); return 0;
    case CLI_OPT_IN: co->in = arg; return 0;
    case CLI_OPT_PROMPT_COLUMN: co->prompt_column = arg; return 0;
    case CLI_OPT_TEMPLATE: { /* as the recipe's template key reads it: '{prompt}\n' ends in a newline */
        char *tmpl;
        if (tok_template_unescape(arg, &tmpl))
            return cli_usage_error(cmd, "--template '%s': %s (the template is read as a Lua string)", arg,
                                   base_err_msg());
        cli_lua_kv_str(t, "template", tmpl);
        free(tmpl);
        return 0;
    }
    case CLI_OPT_SYSTEM: cli_lua_kv_str(t, "system_prompt", arg); return 0;
    case CLI_OPT_SEED: return cli_flag_num(co, cmd, "--seed", 0, "seed", arg, 1);
    case CLI_OPT_THREADS: return cli_flag_num(co, cmd, "--threads", 0, "threads", arg, 1);
    case CLI_OPT_RUN_DIR: co->run_dir = arg; return 0;
    case CLI_OPT_OVERWRITE: co->ro.overwrite = 1; return 0;
    case CLI_OPT_RESUME: co->ro.resume = 1; return 0;
    case CLI_OPT_ALLOW_CHANGES: co->ro.allow_changes = 1; return 0;
    case CLI_OPT_DEVICE: co->ro.device = arg; return 0;
    case CLI_OPT_PRECISION: co->ro.precision = arg; return 0;
    case CLI_OPT_QUIET: co->ro.quiet = 1; return 0;
    case CLI_OPT_SET: co->user_sets[co->n_user_sets++] = arg; return 0;
    case CLI_OPT_OUT: co->out = arg; return 0;
    case CLI_OPT_REWARDS: co->rewards = arg; return 0;
    case CLI_OPT_N: return cli_flag_num(co, cmd, "--n", 1, "num_generations", arg, 1);
    case CLI_OPT_TEMPERATURE: return cli_flag_num(co, cmd, "--temperature", 1, "temperature", arg, 0);
    case CLI_OPT_TOP_P: return cli_flag_num(co, cmd, "--top-p", 1, "top_p", arg, 0);
    case CLI_OPT_TOP_K: return cli_flag_num(co, cmd, "--top-k", 1, "top_k", arg, 1);
    case CLI_OPT_MIN_P: return cli_flag_num(co, cmd, "--min-p", 1, "min_p", arg, 0);
    case CLI_OPT_MAX_NEW: return cli_flag_num(co, cmd, "--max-new-tokens", 1, "max_completion_length", arg, 1);
    case CLI_OPT_MAX_PROMPT: return cli_flag_num(co, cmd, "--max-prompt-length", 1, "max_prompt_length", arg, 1);
    case CLI_OPT_LIMIT: return cli_flag_num(co, cmd, "--limit", 1, "limit", arg, 1);
    case CLI_OPT_STOP:
        cli_lua_str(&co->stops, arg);
        base_buf_puts(&co->stops, ", ");
        return 0;
    default: return -1;
    }
}

base_status cli_recipe_begin(base_buf *b, const cli_common *co, const cli_run_dir *rd, const char *extra_datasets) {
    base_buf_puts(b, "return {\n");
    cli_lua_kv_str(b, "name", rd->name);
    cli_lua_kv_str(b, "output_dir", rd->output_dir);
    base_buf_puts(b, "report = false,\n");
    if (co->top.len) base_buf_append(b, co->top.data, co->top.len);
    base_buf_puts(b, "datasets = {\n  input = { path = ");
    cli_lua_str(b, co->in);
    if (co->prompt_column) {
        base_buf_puts(b, ", prompt_column = ");
        cli_lua_str(b, co->prompt_column);
    }
    base_buf_puts(b, " },\n");
    if (extra_datasets) base_buf_puts(b, extra_datasets);
    base_buf_puts(b, "},\n");
    return co->rewards ? cli_lua_rewards(b, co->rewards) : BASE_OK;
}

void cli_recipe_stage(base_buf *b, const cli_common *co, const char *type, const char *extra) {
    base_buf_printf(b, "stages = {\n  {\ntype = \"%s\", name = \"%s\", dataset = \"input\",\n", type, type);
    if (co->stage.len) base_buf_append(b, co->stage.data, co->stage.len);
    if (co->stops.len) base_buf_printf(b, "stop = { %s},\n", co->stops.data);
    if (extra) base_buf_puts(b, extra);
    base_buf_puts(b, "  },\n},\n}\n");
}
