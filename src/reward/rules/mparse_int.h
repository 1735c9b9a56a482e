/*
 * Internal interface between the three parser files (mparse.c: expression
 * levels, lists and entry points; mlex.c: lexing, numbers, symbols;
 * mlatex.c: commands and brackets). Not used outside the parser.
 *
 * Conventions: every parse function returns a node or NULL with p->fail
 * set (FAIL); p->i moves past what was consumed; reward_mqp_ws skips spaces and
 * spacing commands (\quad, \left, \, ...) before most tokens.
 */
#ifndef GRPO_REWARD_MPARSE_INT_H
#define GRPO_REWARD_MPARSE_INT_H

#include "reward/rules/rules_int.h"

/* Growable node list in the arena (copy on growth). */
typedef struct {
    mq_node **v;
    int n, cap;
} nvec;

/* Parser state over one answer string s[0, n). */
typedef struct {
    mq_arena *a;
    const char *s;
    size_t n, i;
    int depth;     /* recursion depth, capped at MQ_MAX_DEPTH */
    int abs_depth; /* inside |...|: a '|' closes instead of opening */
    int in_matrix; /* \\ separates rows instead of being a space */
    const mq_parse_cfg *cfg;
    int fail;
} P;

#define FAIL(p)              \
    do {                     \
        (p)->fail = 1;       \
        return NULL;         \
    } while (0)

static inline int ch(const P *p) { return p->i < p->n ? (unsigned char)p->s[p->i] : 0; }
static inline int ch_at(const P *p, size_t k) { return p->i + k < p->n ? (unsigned char)p->s[p->i + k] : 0; }

/* mlex.c */
int reward_mqp_nv_push(mq_arena *a, nvec *v, mq_node *x); /* -1: NULL x or over MQ_MAX_ELEMS */
mq_node *reward_mqp_from_vec(mq_arena *a, mq_kind k, const nvec *v);
size_t reward_mqp_cmd_len_at(const P *p, size_t i); /* letters of the \command at i */
int reward_mqp_is_cmd_at(const P *p, size_t i, const char *name);
int reward_mqp_is_cmd(const P *p, const char *name);
void reward_mqp_ws(P *p);
int reward_mqp_eat(P *p, int c);
int reward_mqp_eat_cmd(P *p, const char *name);
char *reward_mqp_lower_dup(mq_arena *a, const char *s, size_t n);
int reward_mqp_raw_group(P *p, const char **out, size_t *outn); /* {...} text */
int reward_mqp_enter(P *p);                                      /* depth++; 0 if too deep */
int reward_mqp_is_int_lit(const mq_node *n);
int reward_mqp_real_value(P *p, const mq_node *n, double *v);
mq_node *reward_mqp_parse_number(P *p);
mq_node *reward_mqp_parse_group_content(P *p, int close);
mq_node *reward_mqp_parse_arg(P *p);      /* TeX argument: {group}, digit, letter, command */
mq_node *reward_mqp_parse_exponent(P *p); /* after ^ */
int reward_mqp_subscript_text(P *p, const char **out, size_t *outn);
char *reward_mqp_sub_name(P *p, const char *base, size_t bn, const char *sub, size_t sn, int fold);
mq_node *reward_mqp_make_sym(P *p, const char *name);
mq_node *reward_mqp_make_const(P *p, const char *name);
mq_node *reward_mqp_parse_letter(P *p);

/* mlatex.c */
mq_node *reward_mqp_text_node(P *p, const char *s, size_t n);
int reward_mqp_is_fn_cmd_here(P *p);
mq_node *reward_mqp_flatten_groups(P *p, nvec *g, mq_kind k);
mq_node *reward_mqp_parse_paren(P *p, int open);
mq_node *reward_mqp_parse_brace_body(P *p, int escaped);
mq_node *reward_mqp_parse_brace(P *p, int escaped);
mq_node *reward_mqp_parse_command(P *p);

/* mparse.c */
mq_node *reward_mqp_parse_primary(P *p);
mq_node *reward_mqp_parse_power(P *p);
mq_node *reward_mqp_parse_implicit(P *p, int stop_at_fn);
mq_node *reward_mqp_parse_additive(P *p);
mq_node *reward_mqp_parse_element(P *p);
int reward_mqp_parse_groups(P *p, nvec *groups);

#endif
