/*
 * Private to src/recipe: the recipe object, and what loading (recipe.c),
 * schema validation of the tree (validate.c) and the typed config
 * (config.c) share: a validation context that knows the file and the
 * overrides, so that every error names the key, its value, and the
 * override or flag it came from.
 */
#ifndef GRPO_RECIPE_INTERNAL_H
#define GRPO_RECIPE_INTERNAL_H

#include "recipe.h"
#include "schema.h"

struct recipe {
    char *path;
    char *dir;
    cJSON *root;
    recipe_cfg cfg;
    void **blocks; /* what cfg's arrays live in (config.c) */
    int n_blocks;
};

typedef struct {
    const char *file;       /* the recipe file (chunk name) */
    const recipe_set *sets; /* [nsets] the overrides */
    int nsets;
    cJSON **set_items;      /* [nsets] the value each override put into the tree (NULL: none left) */
    const char *dir;        /* the recipe file's directory, absolute (its relative paths start there) */
    const char *cwd;        /* the current directory (overrides', flags' and defaults' relative paths) */
} recipe_vctx;

/* The override whose value is v or holds v, or -1. */
int recipe_vctx_origin(const recipe_vctx *c, const cJSON *v);
/* old is being replaced by new in the tree: overrides that pointed at old
 * point at new. */
void recipe_vctx_replaced(recipe_vctx *c, const cJSON *old, cJSON *new_item);

/* An error about the value v at `path` (as the user writes it:
 * "stages[2].top_p"): "FILE: PATH = VALUE: MSG", plus " (--set A=B)" when
 * an override gave v, or "FLAG VALUE: MSG" when a flag did. Returns
 * BASE_ERR_INVALID. */
base_status recipe_value_error(const recipe_vctx *c, const char *path, const cJSON *v, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* "FILE: MSG" plus the override that gave v (v may be NULL). */
base_status recipe_key_error(const recipe_vctx *c, const cJSON *v, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* v as the message shows it: a number, a quoted string (shortened), true,
 * false, nil, {...}. Returns buf. */
char *recipe_value_text(const cJSON *v, char *buf, size_t n);

/* "a.lua:1.0,b:0.2" rewards as their list [{script, weight}, ...]; one
 * "script:weight" string as its table {script, weight} (NULL when the
 * string holds no entry). */
cJSON *recipe_reward_spec_list(const char *spec);
cJSON *recipe_reward_spec_table(const char *spec);

/* Suggestions (suggest.c). For an unknown key k (value v) of a table with
 * the keys of a and b: " (did you mean 'beta'? 'kl_coef' is verl's and
 * OpenRLHF's name for it)", " ('beta' is a key of grpo stages)", ... or
 * "" into buf. For a string v that is none of choices ("a|b|c";
 * stage_type: the stage types, with their other names): " (did you mean
 * 'x'?)" or "". */
void recipe_unknown_key_hint(const recipe_key *a, const recipe_key *b, const char *k, const cJSON *v, char *buf,
                             size_t n);
void recipe_choice_hint(const char *choices, const char *v, int stage_type, char *buf, size_t n);

/* Check the tree against the schema (unknown keys, types, choices, ranges),
 * normalise the short forms (a string for a list, "script:weight" rewards,
 * a bare dataset path) and add the defaults. */
base_status recipe_validate_tree(recipe_vctx *c, cJSON *root);

/* p made absolute against the absolute directory base, with "." segments
 * dropped and "NAME/.." folded where NAME is a directory and no symbolic
 * link (malloc'd). */
char *recipe_abs_path(const char *base, const char *p);
/* The RF_PATH key k of obj (at `path`) made absolute in place (paths.c):
 * against c->dir when the recipe file named it, else (an override, a flag,
 * dflt: the default) against c->cwd; "stage:NAME" datasets and init_from
 * "model" stay; a bare reward script name must be a built-in script. */
base_status recipe_resolve_value(recipe_vctx *c, cJSON *obj, const recipe_key *k, const char *path, int dflt);

/* Fill r->cfg from the validated tree and check the keys that depend on
 * each other (dataset references, divisibility, ordered pairs, the GRPO
 * loss configuration). */
base_status recipe_config_build(recipe_vctx *c, recipe *r);
/* Free what recipe_config_build allocated. */
void recipe_config_free(recipe *r);

#endif
