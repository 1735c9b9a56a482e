/*
 * One restricted lua_State for reward scripts (building it; luacall.c loads
 * scripts into it and calls them).
 *
 * Limits per call:
 *   - instructions: a count hook every RH_HOOK_EVERY VM instructions adds
 *     to a counter and raises once the budget is spent. From then on the
 *     call is "killed": the hook raises again at every tick and the error
 *     catchers (pcall, xpcall, coroutine.resume/close, load) re-raise, so a
 *     script cannot swallow the error and keep running.
 *   - memory: a lua_Alloc that refuses growth past the cap. Lua answers a
 *     refusal with an emergency collection and one retry; a second refusal
 *     kills the call the same way.
 * A long single C call (a pathological string pattern) is not interrupted:
 *   hooks run only between VM instructions.
 *
 * Library: base (no dofile/loadfile; load is text-only; setmetatable
 * refuses __gc, whose finalizers would run outside the hook), string,
 * table, math, utf8, coroutine, os = {clock, time, date, difftime},
 * io = {open (read modes, regular files only), lines (a named regular file)},
 * require (Lua files from the script directories only), grpo. No package,
 * debug, os.execute/exit/remove/rename/getenv, io.popen/write.
 *
 * The RH_CONFIG profile is the same sandbox for configuration files
 * (recipes, luaconf.c): no grpo module (its helpers start processes and
 * connections), os.getenv allowed, and the removed functions replaced by
 * ones raising a message that says why; the hook notes the position every
 * tick so a kill names the line.
 *
 * Determinism: every library table is a read-only proxy, the globals of
 * the state and of each script are frozen after loading (assigning a
 * global in a call is an error), math.random is reseeded before every call
 * from the sample, and the heap is collected before every call, so a
 * result depends only on the script and the sample, never on which worker
 * ran what before.
 */
#include "reward/reward_internal.h"

#include <lauxlib.h>
#include <lualib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define RH_HOOK_EVERY 1000
#define RH_PRINT_CAP 8192

static const char *const RH_FROZEN = "grpo.frozen";   /* registry: weak set of frozen tables */
static const char *const RH_MODS = "grpo.modules";    /* registry: require() cache */

rh_state *rh_of(lua_State *L) { return *(rh_state **)lua_getextraspace(L); }

/* ------------------------------------------------------------------------ */
/* Allocator and hook                                                       */

static void *rh_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    rh_state *s = ud;
    size_t old = ptr ? osize : 0; /* with ptr NULL, osize is a type tag */
    if (nsize == 0) {
        s->used -= old;
        free(ptr);
        return NULL;
    }
    if (nsize > old && s->used - old + nsize > s->limit) {
        if (s->refused) s->killed = RH_KILL_MEMORY; /* refused again after the emergency GC */
        s->refused = 1;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (!p) return NULL;
    s->refused = 0;
    s->used = s->used - old + nsize;
    return p;
}

static int rh_raise_killed(lua_State *L) {
    rh_state *s = rh_of(L);
    if (s->killed == RH_KILL_MEMORY)
        return luaL_error(L, "memory cap exceeded (%d MiB)", (int)(s->limit >> 20));
    return luaL_error(L, "instruction budget exceeded (%I instructions)", (lua_Integer)s->budget);
}

static void rh_hook(lua_State *L, lua_Debug *ar) {
    rh_state *s = rh_of(L);
    if (s->config && lua_getinfo(L, "Sl", ar)) /* where a kill happens, for the message */
        snprintf(s->where, sizeof s->where, "%s:%d", ar->short_src, ar->currentline);
    s->ticks += RH_HOOK_EVERY;
    if (s->ticks > s->budget && !s->killed) s->killed = RH_KILL_BUDGET;
    if (s->killed) rh_raise_killed(L);
}

/* ------------------------------------------------------------------------ */
/* Wrapped base functions                                                   */

static int rh_finish_pcall(lua_State *L, int status, lua_KContext extra) {
    rh_state *s = rh_of(L);
    if (status == LUA_ERRMEM) s->killed = RH_KILL_MEMORY;
    if (status != LUA_OK && status != LUA_YIELD) {
        if (s->killed) return lua_error(L); /* error object on top */
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);
        return 2;
    }
    return lua_gettop(L) - (int)extra;
}

static int rh_pcall(lua_State *L) {
    luaL_checkany(L, 1);
    lua_pushboolean(L, 1);
    lua_insert(L, 1);
    int status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0, rh_finish_pcall);
    return rh_finish_pcall(L, status, 0);
}

static int rh_xpcall(lua_State *L) {
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushboolean(L, 1); /* f msgh args... true */
    lua_pushvalue(L, 1);   /* f msgh args... true f */
    lua_rotate(L, 3, 2);   /* f msgh true f args... */
    int status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, rh_finish_pcall);
    return rh_finish_pcall(L, status, 2);
}

/* resume/close/load report errors as values: re-raise them once killed. */
static int rh_call_upvalue_checked(lua_State *L) {
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    rh_state *s = rh_of(L);
    if (!s->killed && lua_type(L, 1) == LUA_TBOOLEAN && !lua_toboolean(L, 1) && lua_type(L, 2) == LUA_TSTRING &&
        !strcmp(lua_tostring(L, 2), "not enough memory"))
        s->killed = RH_KILL_MEMORY;
    if (s->killed) return rh_raise_killed(L);
    return lua_gettop(L);
}

static int rh_load_text(lua_State *L) {
    /* force text mode: load(chunk, name, "t" [, env]) */
    int n = lua_gettop(L);
    if (n < 3) lua_settop(L, 3);
    lua_pushliteral(L, "t");
    lua_replace(L, 3);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    if (rh_of(L)->killed) return rh_raise_killed(L);
    return lua_gettop(L);
}

static int rh_setmetatable(lua_State *L) {
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        int t = lua_rawget(L, 2);
        lua_pop(L, 1);
        if (t != LUA_TNIL) return luaL_error(L, "__gc metamethods are not allowed in %s", rh_of(L)->what);
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static int rh_is_frozen(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    lua_getfield(L, LUA_REGISTRYINDEX, RH_FROZEN);
    lua_pushvalue(L, idx);
    int f = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 2);
    return f;
}

static int rh_rawset(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    if (rh_is_frozen(L, 1)) return luaL_error(L, "rawset on a read-only table (globals or a library)");
    luaL_checkany(L, 2);
    luaL_checkany(L, 3);
    lua_settop(L, 3);
    lua_rawset(L, 1);
    return 1;
}

static int rh_collectgarbage(lua_State *L) {
    const char *opt = luaL_optstring(L, 1, "collect");
    if (strcmp(opt, "count") && strcmp(opt, "collect") && strcmp(opt, "step") && strcmp(opt, "isrunning"))
        return luaL_error(L, "collectgarbage('%s') is not allowed in %s", opt, rh_of(L)->what);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

static int rh_print(lua_State *L) {
    rh_state *s = rh_of(L);
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, s->config ? "[recipe] " : "[reward] ");
    for (int i = 1; i <= n; i++) {
        if (i > 1) luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_addchar(&b, '\n');
    luaL_pushresult(&b);
    size_t len;
    const char *txt = lua_tolstring(L, -1, &len);
    if (s->printed < RH_PRINT_CAP) {
        size_t w = len < RH_PRINT_CAP - s->printed ? len : RH_PRINT_CAP - s->printed;
        fwrite(txt, 1, w, stderr);
        s->printed += w;
    }
    return 0;
}

/* Only regular files: reading a FIFO, a terminal or /dev/stdin would block
 * where no instruction budget runs, /dev/zero never ends. */
static void rh_check_regular(lua_State *L, const char *fn) {
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
        luaL_error(L, "%s: '%s' is not a regular file (only regular files can be read in %s)", fn, path,
                   rh_of(L)->what);
}

static int rh_io_open(lua_State *L) {
    const char *mode = luaL_optstring(L, 2, "r");
    if (mode[0] != 'r' || strchr(mode, '+'))
        return luaL_error(L, "io.open: only read modes are allowed in %s (got '%s')", rh_of(L)->what, mode);
    rh_check_regular(L, "io.open");
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

static int rh_io_lines(lua_State *L) {
    luaL_checkstring(L, 1); /* io.lines() without a file would read the trainer's stdin */
    rh_check_regular(L, "io.lines");
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

static int rh_global_write(lua_State *L) {
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?";
    return luaL_error(L,
                      "assignment to global '%s' outside loading: use a local "
                      "(reward scripts keep no state between samples)",
                      k);
}

static int rh_readonly_write(lua_State *L) {
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?";
    return luaL_error(L, "cannot set '%s': library tables are read-only", k);
}

static int rh_proxy_pairs(lua_State *L) {
    lua_pushvalue(L, lua_upvalueindex(2)); /* next */
    lua_pushvalue(L, lua_upvalueindex(1)); /* the hidden table */
    lua_pushnil(L);
    return 3;
}

/* __pairs for a proxy over the table at idx */
static void rh_push_pairs(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    lua_pushvalue(L, idx);
    lua_getglobal(L, "next");
    lua_pushcclosure(L, rh_proxy_pairs, 2);
}

/* Replace the table at the top by a read-only proxy reading from it; the
 * proxy is left at the top and marked frozen. `newindex` raises on writes. */
static void rh_make_proxy(lua_State *L, lua_CFunction newindex) {
    int h = lua_gettop(L);
    lua_newtable(L);                /* proxy */
    lua_createtable(L, 0, 4);       /* its metatable */
    lua_pushvalue(L, h);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    rh_push_pairs(L, h);
    lua_setfield(L, -2, "__pairs");
    lua_setmetatable(L, -2);
    lua_getfield(L, LUA_REGISTRYINDEX, RH_FROZEN);
    lua_pushvalue(L, -2);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    lua_replace(L, h);
}

/* Freeze an environment table in place: its contents move to a hidden
 * table (which inherits the old metatable's __index), it keeps reading
 * them, and writes raise. */
void rh_freeze_env(lua_State *L, int idx, int parent_idx) {
    idx = lua_absindex(L, idx);
    if (parent_idx) parent_idx = lua_absindex(L, parent_idx);
    lua_newtable(L); /* hidden */
    int h = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, h);
    }
    if (parent_idx) {
        lua_createtable(L, 0, 1);
        lua_pushvalue(L, parent_idx);
        lua_setfield(L, -2, "__index");
        lua_setmetatable(L, h);
    }
    /* clear the env: collect keys first (no insertion during traversal) */
    lua_newtable(L);
    int keys = lua_gettop(L);
    lua_Integer nk = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_rawseti(L, keys, ++nk);
    }
    for (lua_Integer i = 1; i <= nk; i++) {
        lua_rawgeti(L, keys, i);
        lua_pushnil(L);
        lua_rawset(L, idx);
    }
    lua_pop(L, 1);
    lua_createtable(L, 0, 4);
    lua_pushvalue(L, h);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, rh_global_write);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    rh_push_pairs(L, h);
    lua_setfield(L, -2, "__pairs");
    lua_setmetatable(L, idx);
    lua_getfield(L, LUA_REGISTRYINDEX, RH_FROZEN);
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 2); /* frozen set, hidden */
}

/* require(name): NAME.lua from the script directories, text mode, its own
 * environment frozen after loading, result cached per state. */
static int rh_require(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_' ||
              *c == '.'))
            return luaL_error(L, "require '%s': module names are letters, digits, '_' and '.'", name);
    lua_getfield(L, LUA_REGISTRYINDEX, RH_MODS);
    if (lua_getfield(L, -1, name) != LUA_TNIL) return 1;
    lua_pop(L, 1);
    if (!strcmp(name, "grpo") && !rh_of(L)->config) {
        lua_getglobal(L, "grpo");
        return 1;
    }
    rh_state *s = rh_of(L);
    luaL_Buffer rel;
    luaL_buffinit(L, &rel);
    for (const char *c = name; *c; c++) luaL_addchar(&rel, *c == '.' ? '/' : *c);
    luaL_addstring(&rel, ".lua");
    luaL_pushresult(&rel); /* 3 */
    const char *relpath = lua_tostring(L, 3);
    for (int i = 0; i < s->n_dirs; i++) {
        lua_settop(L, 3);
        lua_pushfstring(L, "%s/%s", s->dirs[i], relpath); /* 4 */
        const char *path = lua_tostring(L, 4);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        fclose(f);
        if (luaL_loadfilex(L, path, "t") != LUA_OK) return lua_error(L); /* 5 */
        lua_newtable(L); /* 6: env */
        lua_createtable(L, 0, 1);
        lua_pushglobaltable(L);
        lua_setfield(L, -2, "__index");
        lua_setmetatable(L, 6);
        lua_pushvalue(L, 6);
        lua_setupvalue(L, 5, 1); /* _ENV of the chunk */
        lua_pushvalue(L, 5);
        lua_pushstring(L, name);
        lua_call(L, 1, 1); /* 7 */
        if (lua_isnil(L, 7)) {
            lua_pushboolean(L, 1);
            lua_replace(L, 7);
        }
        lua_pushglobaltable(L); /* 8 */
        rh_freeze_env(L, 6, 8);
        lua_settop(L, 7);
        lua_pushvalue(L, 7);
        lua_setfield(L, 2, name); /* cache */
        return 1;
    }
    return luaL_error(L, "module '%s' not found in the %s", name,
                      rh_of(L)->config ? "recipe's directory" : "reward script directories");
}

/* ------------------------------------------------------------------------ */
/* State creation                                                           */

/* t[name] = closure(wrapper, upvalue t[name]) */
static void rh_wrap(lua_State *L, int t, const char *name, lua_CFunction wrapper) {
    lua_getfield(L, t, name);
    lua_pushcclosure(L, wrapper, 1);
    lua_setfield(L, t, name);
}

/* Copy the fields `keep` (NULL-terminated; NULL = all) of library table
 * `lib` into a new table, leave it on the stack. */
static void rh_copy_fields(lua_State *L, int lib, const char *const *keep) {
    lib = lua_absindex(L, lib);
    lua_newtable(L);
    if (keep) {
        for (int i = 0; keep[i]; i++) {
            lua_getfield(L, lib, keep[i]);
            lua_setfield(L, -2, keep[i]);
        }
        return;
    }
    lua_pushnil(L);
    while (lua_next(L, lib)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
}

rh_state *rh_open(const reward_limits *lim, const char *const *dirs, int n_dirs) {
    return rh_open_profile(lim, dirs, n_dirs, RH_REWARD);
}

rh_state *rh_open_profile(const reward_limits *lim, const char *const *dirs, int n_dirs, int profile) {
    rh_state *s = base_xcalloc(1, sizeof *s);
    s->config = profile == RH_CONFIG;
    s->what = s->config ? "recipes" : "reward scripts";
    s->limits = lim;
    s->limit = lim->memory_bytes;
    s->n_dirs = n_dirs;
    s->dirs = base_xcalloc((size_t)(n_dirs > 0 ? n_dirs : 1), sizeof(char *));
    for (int i = 0; i < n_dirs; i++) s->dirs[i] = base_xstrdup(dirs[i]);
    lua_State *L = lua_newstate(rh_alloc, s);
    if (!L) base_die("lua_newstate: out of memory");
    s->L = L;
    *(rh_state **)lua_getextraspace(L) = s;
    /* setup is trusted: allow it the whole heap cap, no budget yet */
    static const struct {
        const char *name;
        lua_CFunction open;
    } libs[] = {{"_G", luaopen_base},     {"string", luaopen_string}, {"table", luaopen_table},
                {"math", luaopen_math},   {"utf8", luaopen_utf8},     {"coroutine", luaopen_coroutine},
                {"os", luaopen_os},       {"io", luaopen_io}};
    for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) {
        luaL_requiref(L, libs[i].name, libs[i].open, 1);
        lua_pop(L, 1);
    }
    lua_newtable(L); /* weak-keyed set of frozen tables */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, RH_FROZEN);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, RH_MODS);

    lua_pushglobaltable(L);
    int g = lua_gettop(L);
    static const char *const drop[] = {"dofile", "loadfile", "require", "package", "debug", NULL};
    for (int i = 0; drop[i]; i++) {
        lua_pushnil(L);
        lua_setfield(L, g, drop[i]);
    }
    if (s->config) {
        rh_forbid(L, g, NULL, "dofile");
        rh_forbid(L, g, NULL, "loadfile");
    }
    rh_wrap(L, g, "load", rh_load_text);
    rh_wrap(L, g, "setmetatable", rh_setmetatable);
    rh_wrap(L, g, "collectgarbage", rh_collectgarbage);
    lua_pushcfunction(L, rh_pcall);
    lua_setfield(L, g, "pcall");
    lua_pushcfunction(L, rh_xpcall);
    lua_setfield(L, g, "xpcall");
    lua_pushcfunction(L, rh_rawset);
    lua_setfield(L, g, "rawset");
    lua_pushcfunction(L, rh_print);
    lua_setfield(L, g, "print");
    lua_pushcfunction(L, rh_require);
    lua_setfield(L, g, "require");

    /* math.randomseed, kept for the per-call reseed */
    lua_getfield(L, g, "math");
    lua_getfield(L, -1, "randomseed");
    lua_setfield(L, LUA_REGISTRYINDEX, RH_SEED);
    lua_pop(L, 1);
    /* string metatable and file handles: hide their metatables */
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);
    luaL_getmetatable(L, LUA_FILEHANDLE);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);

    /* library tables -> read-only proxies over (restricted) copies */
    static const char *const os_keep[] = {"clock", "time", "date", "difftime", NULL};
    static const char *const os_keep_config[] = {"clock", "time", "date", "difftime", "getenv", NULL};
    static const char *const os_forbid[] = {"execute", "exit", "remove", "rename", "tmpname", "setlocale", NULL};
    static const char *const io_forbid[] = {"popen", "write", "output", "input", "read", "close", "tmpfile", NULL};
    static const char *const io_keep[] = {"open", "lines", NULL};
    static const char *const proxied[] = {"string", "table", "math", "utf8", "coroutine", "os", "io", NULL};
    for (int i = 0; proxied[i]; i++) {
        const char *name = proxied[i];
        lua_getfield(L, g, name);
        const char *const *keep = !strcmp(name, "os")   ? (s->config ? os_keep_config : os_keep)
                                  : !strcmp(name, "io") ? io_keep
                                                        : NULL;
        rh_copy_fields(L, -1, keep);
        lua_remove(L, -2);
        int t = lua_gettop(L);
        if (!strcmp(name, "coroutine")) {
            rh_wrap(L, t, "resume", rh_call_upvalue_checked);
            rh_wrap(L, t, "close", rh_call_upvalue_checked);
        } else if (!strcmp(name, "io")) {
            rh_wrap(L, t, "open", rh_io_open);
            rh_wrap(L, t, "lines", rh_io_lines);
        }
        const char *const *forbid = !strcmp(name, "os") ? os_forbid : !strcmp(name, "io") ? io_forbid : NULL;
        for (int k = 0; s->config && forbid && forbid[k]; k++) rh_forbid(L, t, name, forbid[k]);
        rh_make_proxy(L, rh_readonly_write);
        lua_setfield(L, g, name);
    }
    if (!s->config) {
        rh_push_grpo_module(L);
        rh_make_proxy(L, rh_readonly_write);
        lua_pushvalue(L, -1);
        lua_setfield(L, g, "grpo");
        lua_getfield(L, LUA_REGISTRYINDEX, RH_MODS);
        lua_insert(L, -2);
        lua_setfield(L, -2, "grpo");
        lua_pop(L, 1);
    }
    /* freeze the globals themselves; _G keeps pointing at them */
    rh_freeze_env(L, g, 0);
    lua_pop(L, 1);
    lua_sethook(L, rh_hook, LUA_MASKCOUNT, RH_HOOK_EVERY);
    lua_gc(L, LUA_GCCOLLECT);
    return s;
}

void rh_close(rh_state *s) {
    if (!s) return;
    lua_close(s->L);
    for (int i = 0; i < s->n_dirs; i++) free(s->dirs[i]);
    free(s->dirs);
    free(s->fn_ref);
    free(s->fn_group);
    free(s->fn_check);
    free(s);
}

void rh_begin_call(rh_state *s) {
    s->ticks = 0;
    s->budget = s->limits->instructions;
    s->killed = RH_KILL_NONE;
    s->refused = 0;
    s->printed = 0;
}

void rh_errmsg(lua_State *L, int idx, char *err, size_t cap) {
    rh_state *s = rh_of(L);
    if (s->killed == RH_KILL_MEMORY) snprintf(err, cap, "memory cap exceeded (%d MiB)", (int)(s->limit >> 20));
    else if (s->killed == RH_KILL_BUDGET)
        snprintf(err, cap, "instruction budget exceeded (%lld instructions)", (long long)s->budget);
    else if (lua_type(L, idx) == LUA_TSTRING) snprintf(err, cap, "%s", lua_tostring(L, idx));
    else snprintf(err, cap, "error object is a %s value", luaL_typename(L, idx));
    for (char *c = err; *c; c++)
        if (*c == '\n' || *c == '\r' || *c == '\t') *c = ' ';
}
