/*
 * Private to src/reward: one sandboxed lua_State (luahost.c), JSON <-> Lua
 * (luajson.c) and the `grpo` module (luamod.c).
 */
#ifndef GRPO_REWARD_INTERNAL_H
#define GRPO_REWARD_INTERNAL_H

#include <lua.h>

#include "reward/reward.h"

/* How a call was stopped. */
enum { RH_KILL_NONE = 0, RH_KILL_BUDGET, RH_KILL_MEMORY };

typedef struct {
    lua_State *L;
    const reward_limits *limits; /* owned by the pool */
    size_t used, limit;          /* heap bytes now / cap */
    int refused;                 /* the last allocation was refused once */
    int64_t ticks;               /* instructions counted in this call */
    int killed;                  /* RH_KILL_*: errors can no longer be caught */
    int n_funcs;
    int *fn_ref;                 /* registry refs of the score functions */
    uint8_t *fn_group;           /* 1: a score_group function (one call per group) */
    int *fn_check;               /* registry refs of the scripts' check functions (LUA_NOREF: none) */
    int64_t budget;              /* this call's instruction budget */
    size_t printed;              /* bytes print()ed in this call */
    char **dirs;                 /* require() search directories */
    int n_dirs;
    int config;                  /* RH_CONFIG profile (a recipe), else a reward script's */
    const char *what;            /* "reward scripts" / "recipes", for messages */
    char where[96];              /* config: "chunk:line" at the last hook tick */
} rh_state;

/* The two uses of the sandbox: reward scripts (the `grpo` module, no
 * os.getenv) and configuration files (recipes: no `grpo` module, whose
 * run_tests and http_post start processes and connections, but os.getenv;
 * the removed functions raise a message saying why). */
enum { RH_REWARD = 0, RH_CONFIG = 1 };

/* The state that owns L (also for coroutines). */
rh_state *rh_of(lua_State *L);

/* A fresh restricted state; dies only on malloc failure. `dirs` (copied)
 * are where require() looks for NAME.lua. */
rh_state *rh_open(const reward_limits *lim, const char *const *dirs, int n_dirs);
/* The same for a profile (RH_REWARD: rh_open). */
rh_state *rh_open_profile(const reward_limits *lim, const char *const *dirs, int n_dirs, int profile);
/* RH_CONFIG (luaconf.c): t[name] = a function raising "LIB.NAME is not
 * available in recipes ..." (lib NULL: a global). */
void rh_forbid(lua_State *L, int t, const char *lib, const char *name);
/* Start a call: the instruction count and the kill state reset, the budget
 * limits->instructions. */
void rh_begin_call(rh_state *s);
/* The message of the error at idx (or of the limit that killed the call)
 * into err[cap], on one line. */
void rh_errmsg(lua_State *L, int idx, char *err, size_t cap);
/* Freeze the environment table at idx in place (reads keep working, writes
 * raise); parent_idx: the table its unknown names come from, or 0. */
void rh_freeze_env(lua_State *L, int idx, int parent_idx);
/* Registry key of the real math.randomseed (the scripts' one is wrapped). */
#define RH_SEED "grpo.randomseed"
void rh_close(rh_state *s);

/* Load script f into the state (appends to fn_ref). On success the
 * declared columns are appended to *cols (malloc'd strings; may be NULL
 * when cols is NULL). Error: BASE_ERR_* with "path: why". */
base_status rh_load(rh_state *s, const reward_fn_spec *f, char ***cols, int *n_cols);

/* Call function f on `sample`. Returns REWARD_OK (score set, *parts an
 * object or NULL), REWARD_NIL, or REWARD_ERROR (message in err, one line).
 * `seed` reseeds math.random so results do not depend on call order. */
int rh_call(rh_state *s, int f, const cJSON *sample, uint64_t seed, double *score, cJSON **parts, char *err,
            size_t err_cap);

/* Run script f's `check` function (none: nothing to do) under the
 * per-call limits: 0, or -1 with the error (one line) in err. */
int rh_check(rh_state *s, int f, char *err, size_t err_cap);

/* Call group function f (fn_group[f]) once on samples[0..n), one prompt's
 * completions: writes status[i] (REWARD_*), score[i] (NaN unless OK),
 * parts[i] (object or NULL) for every i. A call that fails as a whole
 * (error, budget, memory, not a list) gives REWARD_ERROR for all and the
 * message in err; a bad entry gives REWARD_ERROR for that sample with
 * its message in errs[i] (err_cap bytes each). The instruction budget is
 * n times the per-sample one. */
void rh_call_group(rh_state *s, int f, const cJSON *const *samples, int n, uint64_t seed, double *score,
                   cJSON **parts, uint8_t *status, char *err, char *errs, size_t err_cap);

/* JSON value -> Lua value pushed on L (objects and arrays become tables,
 * null becomes nil, integral numbers integers). May raise Lua errors. */
void rh_push_json(lua_State *L, const cJSON *v);
/* Lua value at idx -> JSON. NULL and a message in err (one line) if it
 * cannot be represented (functions, NaN, cycles, depth > 100). An empty
 * table becomes {}; a table with keys exactly 1..n an array. */
cJSON *rh_to_json(lua_State *L, int idx, char *err, size_t err_cap);

/* Push the `grpo` module table (helpers in C). */
void rh_push_grpo_module(lua_State *L);

#endif
