/*
 * Private to src/recipe: the schema tables (see schema.c).
 */
#ifndef GRPO_RECIPE_SCHEMA_H
#define GRPO_RECIPE_SCHEMA_H

typedef enum {
    RK_NUM,      /* number */
    RK_INT,      /* integer-valued number */
    RK_BOOL,     /* true/false */
    RK_STR,      /* string (or null when the default is null) */
    RK_STRLIST,  /* list of strings; a single string becomes a one-element list */
    RK_DATASETS, /* table name -> dataset table (or a bare path string) */
    RK_REWARDS,  /* list of reward tables (or "script:weight" strings) */
    RK_STAGES,   /* list of stage tables */
    RK_TABLE,    /* table of named values (free-form; {} allowed) */
} recipe_ktype;

typedef struct {
    const char *key;
    recipe_ktype type;
    const char *dflt;    /* JSON text; NULL = required */
    const char *choices; /* "a|b|c" or NULL */
    const char *doc;
} recipe_key;

const recipe_key *recipe_schema_top(void);
const recipe_key *recipe_schema_dataset(void);
const recipe_key *recipe_schema_reward(void);
const recipe_key *recipe_schema_stage_common(void);
const recipe_key *recipe_schema_stage(const char *type); /* NULL for an unknown type */

#endif
