/*
 * recipe: Lua recipes. A recipe is a Lua file returning a table: model,
 * datasets, template, rewards with weights, and stages (sft, grpo, sample,
 * eval) with hyperparameters named as TRL names them. Loading runs the file
 * in a fresh Lua state, converts the returned table to a JSON tree, applies
 * `--set a.b=v` overrides, validates every key against the schema (an
 * unknown key is an error with a suggestion), and fills in the defaults, so
 * the resolved tree holds every value the run uses and can be written back
 * as `config.resolved.lua`.
 *
 * Stages are addressed in overrides by name (`stages.grpo.beta=0.01`) or by
 * 1-based index (`stages.2.beta=0.01`). A stage's name defaults to its type,
 * with a number appended when the type repeats (eval, eval_2, ...).
 */
#ifndef GRPO_RECIPE_H
#define GRPO_RECIPE_H

#include "base/base.h"

typedef struct recipe recipe;

/* Load, override, validate, fill defaults. On error returns non-OK with a
 * message naming the recipe file and the key path (and a suggestion for an
 * unknown key). `sets` are "a.b=v" strings. */
base_status recipe_load(const char *path, const char *const *sets, int nsets, recipe **out);
/* Same from a Lua source string (`chunkname` names it in errors). */
base_status recipe_load_string(const char *src, const char *chunkname, const char *const *sets,
                               int nsets, recipe **out);
void recipe_free(recipe *r);

/* The resolved tree (owned by the recipe). */
const cJSON *recipe_root(const recipe *r);
const char *recipe_path(const recipe *r);
int recipe_nstages(const recipe *r);
const cJSON *recipe_stage(const recipe *r, int i); /* 0-based */
const cJSON *recipe_stage_by_name(const recipe *r, const char *name);

/* Accessors for a resolved object: every schema key is present after
 * loading, so these never fall back silently; a missing key dies (a bug). */
double recipe_num(const cJSON *obj, const char *key);
int64_t recipe_int(const cJSON *obj, const char *key);
int recipe_bool(const cJSON *obj, const char *key);
const char *recipe_str(const cJSON *obj, const char *key); /* NULL for null */

/* The resolved tree as a Lua table literal ("return { ... }\n"). */
char *recipe_to_lua(const recipe *r);
/* Write it atomically to `path`. */
base_status recipe_write_resolved(const recipe *r, const char *path);

/* Resolve a relative path: against the recipe file's directory when it
 * exists there, else as given (relative to the current directory). */
char *recipe_resolve_path(const recipe *r, const char *p);

/* Edit distance (for "did you mean" suggestions). */
int recipe_edit_distance(const char *a, const char *b);

#endif
