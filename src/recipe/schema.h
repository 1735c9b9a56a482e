/*
 * Private to src/recipe (and the tools that print or test the schema): the
 * schema tables (schema.c). One table per kind of table in a recipe (top
 * level, a dataset, a reward, every stage, one per stage type), one row per
 * key: its name, type, default, allowed values or range, documentation, and
 * where recipe_config() stores it in the typed struct of recipe.h, as
 * Redis's config table does. Validation (validate.c), the typed config
 * (config.c), the key tables of docs/recipes.md and the schema-driven tests
 * all read these tables, so a key added here is checked, documented and
 * tested without another edit.
 */
#ifndef GRPO_RECIPE_SCHEMA_H
#define GRPO_RECIPE_SCHEMA_H

#include <stddef.h>

typedef enum {
    RK_NUM,      /* finite number -> double (NaN when null) */
    RK_INT,      /* integer-valued number -> int64_t */
    RK_BOOL,     /* true/false -> int */
    RK_STR,      /* string (or null when the default is null) -> const char * (NULL) */
    RK_STRLIST,  /* list of strings; a single string becomes a one-element list -> recipe_strlist */
    RK_DATASETS, /* table name -> dataset table (or a bare path string) */
    RK_REWARDS,  /* list of reward tables (or "script:weight" strings) -> recipe_rewards */
    RK_STAGES,   /* list of stage tables */
    RK_TABLE,    /* table of named values (free-form; {} allowed) -> const cJSON * */
    RK_SUB,      /* a table of the keys of the row's `sub` schema (null: not set) -> a struct whose first
                  * member is `int set` (1 when the table is there), then the sub schema's fields */
} recipe_ktype;

/* The values a number may take: an interval with closed or open ends, each
 * end optional. Integer keys always get one with both ends (the typed
 * config stores them in int64_t, the code below in int32 where it says). */
enum {
    RR_MIN = 1,      /* has a lower end */
    RR_MIN_OPEN = 2, /* ... which is excluded */
    RR_MAX = 4,      /* has an upper end */
    RR_MAX_OPEN = 8, /* ... which is excluded */
};

typedef struct {
    double min, max;
    unsigned flags; /* RR_* */
} recipe_range;

/* What a key is besides its type. */
enum {
    /* does not alter the trained result (where outputs go, logging,
     * checkpoint cadence, threads): `--resume` accepts a change to it
     * without --allow-changes */
    RF_NEUTRAL = 1,
    /* a file or directory (RK_STR): a relative path is made absolute when
     * the recipe loads, against the directory of the recipe file that
     * names it (a default or an override: the current directory) */
    RF_PATH = 2,
};

typedef struct recipe_key {
    const char *key;
    recipe_ktype type;
    const char *dflt;    /* JSON text; NULL = required */
    const char *choices; /* "a|b|c" (RK_STR, RK_STRLIST: each item) or NULL */
    const char *doc;
    size_t offset;       /* of the value in the table's typed struct (recipe.h) */
    recipe_range range;  /* RK_NUM, RK_INT: allowed values (flags 0: any finite number) */
    unsigned flags;      /* RF_* */
    const struct recipe_key *sub; /* RK_SUB: the table's keys (offsets into the row's struct) */
} recipe_key;

/* The tables, each ended by a row with key NULL. Offsets: top level into
 * recipe_cfg, a dataset into recipe_dataset, a reward into recipe_reward,
 * the stage tables into recipe_stage_cfg. */
const recipe_key *recipe_schema_top(void);
const recipe_key *recipe_schema_dataset(void);
const recipe_key *recipe_schema_reward(void);
const recipe_key *recipe_schema_stage_common(void);
const recipe_key *recipe_schema_stage(const char *type); /* NULL for an unknown type */
const recipe_key *recipe_schema_lora(void);               /* the top-level `lora` table */
/* The stage types, NULL-terminated, in recipe_stage_type order (recipe.h):
 * sft, grpo, sample, eval. */
const char *const *recipe_schema_stage_types(void);

/* Alias i (0, 1, ...; NULL past the last) of the suggestions for unknown
 * keys (suggest.c): another tool's name (TRL, verl, OpenRLHF, vLLM,
 * transformers; "rollout.n" for a nested one) for the key *key. */
const char *recipe_alias_of(int i, const char **key);

/* 1 when v is inside the key's range (any finite v when it has none). */
int recipe_range_ok(const recipe_key *k, double v);
/* The range as a condition: "in (0, 1]", ">= 0", "> 0", "<= 5"; "" when the
 * key has none. Returns buf. */
char *recipe_range_text(const recipe_key *k, char *buf, size_t n);

#endif
