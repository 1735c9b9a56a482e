/*
 * Internal interface of the math-equivalence engine (not installed, not for
 * other modules; functions carry the module prefix as reward_mq_*, types
 * and constants the short mq_/MQ_). Pipeline, one call of reward_math_equal:
 *
 *   extraction (mextract.c, PCRE2)  -> answer candidates, Math-Verify order
 *   normalisation (mnorm.c)         -> cleaned LaTeX string
 *   parser (mparse.c, mlex.c,       -> mq_node tree (arena)
 *           mlatex.c)
 *   comparison (mcmp.c)             -> structural rules (sets, relations,
 *                                      tuples, intervals, matrices) over
 *   evaluation (meval.c)            -> exact rationals (bigint.c) or complex
 *                                      doubles at pseudo-random points
 *
 * Memory: every node, string and big number of one call lives in one
 * mq_arena with a byte limit; running out sets arena->failed and the call
 * reports LIMIT. Work: mq_arena.work counts loop iterations of the costly
 * parts (random-point evaluation, set matching); over the budget -> failed.
 */
#ifndef GRPO_REWARD_RULES_INT_H
#define GRPO_REWARD_RULES_INT_H

#include <complex.h>
#include <stddef.h>
#include <stdint.h>

#include "reward/rules/rules.h"

/* ------------------------------------------------------------------------ */
/* Limits                                                                   */

#define MQ_ARENA_LIMIT ((size_t)64 << 20) /* bytes per call */
#define MQ_WORK_LIMIT 20000000L           /* work units per call */
#define MQ_MAX_DEPTH 200                  /* parser recursion */
#define MQ_MAX_LIMBS 128                  /* 4096-bit integers */
#define MQ_MAX_ELEMS 512                  /* elements of one set/tuple/matrix */
#define MQ_MAX_PARSE_LEN ((size_t)64 << 10) /* one answer string, bytes */

/* ------------------------------------------------------------------------ */
/* Arena                                                                    */

typedef struct mq_chunk mq_chunk;
typedef struct {
    mq_chunk *head;
    size_t total; /* bytes of all chunks */
    size_t limit;
    int failed;   /* a limit was hit: results of this call are unreliable */
    long work;    /* work units spent */
} mq_arena;

void reward_mq_arena_init(mq_arena *a);
/* Zeroed, 16-byte aligned; NULL (and a->failed = 1) over the limit. */
void *reward_mq_alloc(mq_arena *a, size_t n);
char *reward_mq_strndup(mq_arena *a, const char *s, size_t n);
void reward_mq_arena_free(mq_arena *a);
/* Spend `n` work units; 0 when the budget is exhausted (sets failed). */
int reward_mq_work(mq_arena *a, long n);

/* ------------------------------------------------------------------------ */
/* Big integers and rationals (bigint.c). Immutable values in the arena;
 * every operation returns 0 on success and -1 when the result would exceed
 * MQ_MAX_LIMBS or the arena is full (the caller then falls back to doubles).*/

typedef struct {
    int sign;    /* -1, 0, +1 */
    int n;       /* limbs in use (0 for zero) */
    uint32_t *d; /* little-endian magnitude */
} mq_int;

typedef struct {
    mq_int num;
    mq_int den; /* > 0; gcd(num, den) == 1 */
} mq_rat;

void reward_mq_int_from_i64(mq_arena *a, mq_int *r, int64_t v);
/* Decimal digits only (no sign). */
int reward_mq_int_from_dec(mq_arena *a, mq_int *r, const char *s, size_t n);
int reward_mq_int_cmp(const mq_int *x, const mq_int *y);
int reward_mq_int_add(mq_arena *a, mq_int *r, const mq_int *x, const mq_int *y);
int reward_mq_int_sub(mq_arena *a, mq_int *r, const mq_int *x, const mq_int *y);
int reward_mq_int_mul(mq_arena *a, mq_int *r, const mq_int *x, const mq_int *y);
/* Truncating division; y != 0. q or rem may be NULL. */
int reward_mq_int_divmod(mq_arena *a, mq_int *q, mq_int *rem, const mq_int *x, const mq_int *y);
int reward_mq_int_gcd(mq_arena *a, mq_int *r, const mq_int *x, const mq_int *y);
long double reward_mq_int_to_ld(const mq_int *x);
int reward_mq_int_is_zero(const mq_int *x);
/* Fits in int64: 1 and *v set; else 0. */
int reward_mq_int_to_i64(const mq_int *x, int64_t *v);
/* Decimal text into buf (cap bytes incl. NUL); returns length or -1. */
int reward_mq_int_to_dec(const mq_int *x, char *buf, size_t cap);

int reward_mq_rat_from_i64(mq_arena *a, mq_rat *r, int64_t num, int64_t den);
/* r = num / den, reduced; den != 0. */
int reward_mq_rat_make(mq_arena *a, mq_rat *r, const mq_int *num, const mq_int *den);
/* Exact value of a decimal literal: int part, frac digits, exponent
 * (e.g. "12", "5", -3 for 12.5e-3). Digits only in ip/fp. */
int reward_mq_rat_from_decimal(mq_arena *a, mq_rat *r, const char *ip, size_t ipn,
                        const char *fp, size_t fpn, long exp10);
int reward_mq_rat_add(mq_arena *a, mq_rat *r, const mq_rat *x, const mq_rat *y);
int reward_mq_rat_sub(mq_arena *a, mq_rat *r, const mq_rat *x, const mq_rat *y);
int reward_mq_rat_mul(mq_arena *a, mq_rat *r, const mq_rat *x, const mq_rat *y);
int reward_mq_rat_div(mq_arena *a, mq_rat *r, const mq_rat *x, const mq_rat *y); /* y != 0 */
int reward_mq_rat_pow(mq_arena *a, mq_rat *r, const mq_rat *x, int64_t e);
void reward_mq_rat_neg(mq_rat *r, const mq_rat *x);
int reward_mq_rat_cmp(const mq_rat *x, const mq_rat *y);
int reward_mq_rat_is_int(const mq_rat *x);
int reward_mq_rat_is_zero(const mq_rat *x);
long double reward_mq_rat_to_ld(const mq_rat *x);
/* Round to `digits` decimals, half to even (SymPy's Float.round). */
int reward_mq_rat_round(mq_arena *a, mq_rat *r, const mq_rat *x, int digits);
/* Exact square root if x is the square of a rational: 1 and *r; else 0. */
int reward_mq_rat_sqrt_exact(mq_arena *a, mq_rat *r, const mq_rat *x);

/* ------------------------------------------------------------------------ */
/* Expression tree                                                          */

typedef enum {
    MQ_NUM,      /* exact rational `q`; flags MQ_F_FLOAT if written with a
                    decimal point or exponent */
    MQ_SYM,      /* variable `name` (lower-cased, subscripts kept: "x_1") */
    MQ_CONST,    /* `name` is "pi", "e", "i", "inf" */
    MQ_ADD,      /* kids[0] + kids[1] + ... */
    MQ_MUL,      /* kids[0] * kids[1] * ... (written order kept) */
    MQ_NEG,      /* -kids[0] */
    MQ_DIV,      /* kids[0] / kids[1] */
    MQ_POW,      /* kids[0] ^ kids[1] */
    MQ_FUNC,     /* builtin `fn` (mq_fn) of kids */
    MQ_APPLY,    /* undefined function `name`(kids); the name keeps its
                    case (P(x) != p(x)), its arguments are lower-cased */
    MQ_PCT,      /* kids[0] percent */
    MQ_BIGOP,    /* \sum / \prod: name "sum"/"prod", kids = var, lo, hi, body */
    MQ_PM,       /* kids[0] +- kids[1] (nk==1: +-kids[0]); expanded away */
    MQ_REL,      /* kids[0] `rel` kids[1] */
    MQ_AND,      /* chain of MQ_REL kids: a < b < c */
    MQ_SET,      /* finite set {kids} */
    MQ_TUPLE,    /* (kids); MQ_F_PAREN2: a bare "(a, b)", which may also
                    mean the open interval */
    MQ_INTERVAL, /* kids[0], kids[1]; MQ_F_LOPEN / MQ_F_ROPEN */
    MQ_UNION,    /* set operations on kids[0], kids[1] */
    MQ_INTER,
    MQ_SETMINUS,
    MQ_SPECIAL,  /* `name`: "reals", "empty", "naturals", "integers",
                    "rationals", "complexes" */
    MQ_MATRIX,   /* rows x cols, kids row-major */
    MQ_RELSET,   /* the solution set of relation kids[0] in one atom
                    (Math-Verify's Relational.as_set) */
} mq_kind;

enum {
    MQ_F_FLOAT = 1,
    MQ_F_PAREN2 = 2,
    MQ_F_LOPEN = 4,
    MQ_F_ROPEN = 8,
    MQ_F_TEXT = 16, /* a symbol that came from \text{...}: a word */
};

typedef enum { MQ_EQ, MQ_NE, MQ_LT, MQ_LE, MQ_GT, MQ_GE } mq_rel;

typedef enum {
    MQ_FN_SQRT, MQ_FN_ROOT, /* ROOT: kids[0] = radicand, kids[1] = index */
    MQ_FN_SIN, MQ_FN_COS, MQ_FN_TAN, MQ_FN_SEC, MQ_FN_CSC, MQ_FN_COT,
    MQ_FN_ASIN, MQ_FN_ACOS, MQ_FN_ATAN, MQ_FN_ASEC, MQ_FN_ACSC, MQ_FN_ACOT,
    MQ_FN_SINH, MQ_FN_COSH, MQ_FN_TANH,
    MQ_FN_LN, MQ_FN_LOG, /* LOG: kids[0] = x, kids[1] = base */
    MQ_FN_EXP, MQ_FN_ABS, MQ_FN_FLOOR, MQ_FN_CEIL, MQ_FN_FACT,
    MQ_FN_BINOM, MQ_FN_GCD, MQ_FN_LCM, MQ_FN_MAX, MQ_FN_MIN, MQ_FN_DET,
    MQ_FN_COUNT
} mq_fn;

typedef struct mq_node mq_node;
struct mq_node {
    mq_kind kind;
    int flags;
    int nk;          /* number of kids */
    int rows, cols;  /* MQ_MATRIX */
    mq_rel rel;      /* MQ_REL */
    mq_fn fn;        /* MQ_FUNC */
    const char *name;
    mq_rat q;        /* MQ_NUM */
    mq_node **kids;
};

mq_node *reward_mq_new(mq_arena *a, mq_kind k, int nk);
mq_node *reward_mq_num_i64(mq_arena *a, int64_t v);
mq_node *reward_mq_bin(mq_arena *a, mq_kind k, mq_node *x, mq_node *y);
mq_node *reward_mq_un(mq_arena *a, mq_kind k, mq_node *x);
const char *reward_mq_fn_name(mq_fn f);

/* ------------------------------------------------------------------------ */
/* Regex helpers (mre.c): PCRE2, compiled once per process.                 */

typedef struct mq_re mq_re;
/* pattern: PCRE2 syntax; flags: PCRE2_* compile options (UTF|UCP added).
 * Dies on a bad pattern (a bug in our sources). Thread-safe, cached by the
 * caller in a static set once (mq_re_once). */
mq_re *reward_mq_re_compile(const char *pattern, uint32_t flags);
/* Find the first match at or after `start`. Returns 1 and fills ovector
 * (2*(groups+1) offsets, unset groups = SIZE_MAX), 0 for no match, -1 on a
 * match-limit error (treated as no match by callers). */
int reward_mq_re_find(const mq_re *re, const char *s, size_t n, size_t start, size_t *ov, int ovn);
int reward_mq_re_group_count(const mq_re *re);
void reward_mq_re_free(mq_re *re);
/* Index of a named group, or -1. */
int reward_mq_re_group_index(const mq_re *re, const char *name);
/* Global substitution (Python re.sub with a template: \1 .. \9 and literal
 * text). Result in the arena; returns NULL on arena failure. */
char *reward_mq_re_sub(mq_arena *a, const mq_re *re, const char *s, size_t n, const char *tmpl, size_t *out_n);

/* ------------------------------------------------------------------------ */
/* Normalisation (mnorm.c) and \boxed scanning (boxed.c)                    */

typedef enum { MQ_BOX_NONE, MQ_BOX_LAST, MQ_BOX_ALL } mq_box_mode;

typedef struct {
    mq_box_mode boxed;
    int basic_latex, units, malformed_operators, nits, equations;
} mq_norm_cfg;

/* Math-Verify extract_boxed_content: boxes right to left; LAST keeps a
 * run of "connected" boxes, ALL joins every box with ','. Returns the
 * text unchanged when there is no box. Result in the arena. */
char *reward_mq_boxed_content(mq_arena *a, const char *s, size_t n, mq_box_mode mode, size_t *out_n);

/* normalize_latex. Result in the arena. When units stripping changed the
 * text, *pre_units (if not NULL) receives the text before that step so the
 * caller can retry a parse that the stripping broke. */
char *reward_mq_normalize(mq_arena *a, const char *s, size_t n, const mq_norm_cfg *cfg,
                   char **pre_units);

/* ------------------------------------------------------------------------ */
/* Parser (mparse.c; mlex.c and mlatex.c through mparse_int.h)              */

typedef struct {
    int ordered_lists; /* top-level comma lists become tuples */
    int plain_expr;    /* text from the plain-expression extractor */
} mq_parse_cfg;

/* Parse a normalised answer; NULL on a syntax error or limit (see
 * arena->failed). Relations whose first lhs is symbols only and chains are
 * kept as written; +- is expanded into sets. */
mq_node *reward_mq_parse(mq_arena *a, const char *s, size_t n, const mq_parse_cfg *cfg);
/* Math-Verify is_expr_of_only_symbols: a tree whose leaves are all symbols
 * (x, AB, f(x), |AB|, A:B, (p, q)): the lhs of an "assignment". */
int reward_mq_only_symbols(const mq_node *n);
/* Math-Verify's fallback: parse the text after the last '=' when the whole
 * fails and there is no ',' or ';'. */
mq_node *reward_mq_parse_with_last_eq(mq_arena *a, const char *s, size_t n, const mq_parse_cfg *cfg);

/* ------------------------------------------------------------------------ */
/* Evaluation (meval.c)                                                     */

typedef struct {
    int exact;          /* q valid */
    mq_rat q;
    double complex z;   /* numeric value (valid when ok) */
    int ok;             /* numeric value finite or a signed infinity */
} mq_val;

/* Value at sample point `pt` (symbols get pseudo-random values that depend
 * on the name and pt; pt < 0 means "no symbols allowed": a symbol makes
 * ok = 0). Undefined functions and unevaluable big operators get a
 * deterministic hash of their name and argument values. */
mq_val reward_mq_eval(mq_arena *a, const mq_node *n, int pt);
/* Value of the symbol-free node `n` with the atom `atom` (a symbol or an
 * undefined-function application, compared by canonical text) set to t. */
mq_val reward_mq_eval_subst(mq_arena *a, const mq_node *n, const char *atom, double t);
int reward_mq_has_symbols(const mq_node *n);
/* Canonical text (commutative kids sorted): structural equality and
 * hashing. Arena string. */
const char *reward_mq_canon(mq_arena *a, const mq_node *n);
/* Free atoms, sorted and distinct: the symbols, or with fn_atoms the
 * symbols outside undefined-function applications plus the applications
 * themselves (canonical text; f(x) is then one atom, as Math-Verify's
 * unwrap_fcs makes it). Returns the count; over cap, only cap are stored
 * and the count is only known to exceed cap (atoms past cap are not
 * deduplicated). */
int reward_mq_atoms(mq_arena *a, const mq_node *n, const char **out, int cap, int fn_atoms);
/* Replace symbol names: from[i] -> to[i] (strict = 0). New tree. */
mq_node *reward_mq_rename(mq_arena *a, const mq_node *n, const char **from, const char **to, int k);
/* Evaluate a matrix expression (sums, products, scalar multiples of
 * MQ_MATRIX) into one MQ_MATRIX of scalar trees; NULL if not a matrix or
 * shapes do not fit. */
mq_node *reward_mq_matrix_value(mq_arena *a, const mq_node *n);
int reward_mq_is_matrix_expr(const mq_node *n);

/* ------------------------------------------------------------------------ */
/* Comparison (mcmp.c)                                                      */

typedef struct {
    int float_rounding;
    int strict;
    int allow_set_relation_comp;
    double rel_tol;
} mq_cmp_cfg;

/* Math-Verify sympy_expr_eq(gold, pred). */
int reward_mq_equal(mq_arena *a, const mq_node *gold, const mq_node *pred, const mq_cmp_cfg *cfg);

/* ------------------------------------------------------------------------ */
/* Extraction (mextract.c)                                                  */

typedef struct {
    mq_node *node;      /* parsed answer or NULL */
    const char *str;    /* Math-Verify's string fallback (first match) */
    const char *norm;   /* the normalised text that parsed into node */
} mq_answer;

/* parse(text, extraction targets) with any_match extraction and the
 * first_match string fallback. `o` selects the targets; with none, the
 * whole text is normalised and parsed. */
void reward_mq_extract(mq_arena *a, const char *s, size_t n, const reward_math_opts *o, mq_answer *out);

/* UTF-8: replace invalid sequences by U+FFFD and NUL by a space (PCRE2
 * needs valid UTF-8). Arena copy. */
char *reward_mq_utf8_clean(mq_arena *a, const char *s, size_t n, size_t *out_n);

#endif
