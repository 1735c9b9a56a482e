/*
 * reward: score completions with Lua 5.4 reward scripts.
 *
 * A reward script is a Lua file that returns either
 *     function(sample) return score [, parts] end
 * or a table
 *     { score = function(sample) ... end,
 *       columns = {"answer", ...},        -- dataset columns it needs
 *       params  = { key = default, ... }, -- tunable from the reward spec
 *       check   = function() ... end }    -- optional pre-flight: raises an
 *                                         -- error when the script cannot work
 * `sample` is the dataset row plus `prompt`, `completion`,
 * `completion_tokens` and `finish_reason`. `score` is a number, or nil to
 * skip the sample ("not scored"); `parts` is a table of named numbers that
 * are logged (the names "std" and "scored" are reserved).
 *
 * A reward spec combines scripts with weights. Text form (command line):
 *     rewards/boxed_math.lua:1.0,rewards/think_format.lua:0.2
 * entry = [NAME=]PATH[:WEIGHT][{KEY=VALUE;KEY=VALUE}]; the weight defaults
 * to 1, the name to the file's basename without ".lua". A PATH without '/'
 * and without ".lua" names a built-in script (rewards/NAME.lua).
 *
 * The pool runs N workers, each with one lua_State made once and reused.
 * Every call has an instruction budget and a memory cap; a script error, an
 * overrun or a bad return value is an error for that function and sample
 * (status REWARD_ERROR, score NaN) plus one line in the reward error log.
 * The pool never stops on one; its callers decide (the trainer's
 * max_reward_error_rate, grpo score's exit status). Results depend only on
 * the scripts and the sample, never on the number of workers.
 *
 * The `grpo` Lua module gives scripts C helpers: run_tests (the code
 * sandbox, also usable from C below), http_post_json, json_encode/decode,
 * and the text helpers of src/reward/rules/.
 */
#ifndef GRPO_REWARD_H
#define GRPO_REWARD_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Reward spec                                                              */

typedef struct {
    char *path;     /* script file (resolved path) */
    char *name;     /* log name: "boxed_math"; unique within a spec */
    double weight;  /* total = sum of weight * score over non-nil scores */
    cJSON *params;  /* object of overrides for the script's `params`, or NULL */
} reward_fn_spec;

typedef struct {
    reward_fn_spec *fns;
    int n;
} reward_spec;

/* Parse the text form. On error BASE_ERR_PARSE naming the entry; *out is
 * then empty. Names must be unique (BASE_ERR_INVALID otherwise). Paths are
 * not opened here (pool creation does). Free with reward_spec_free. */
base_status reward_spec_parse(const char *text, reward_spec *out);
/* Append one function (copies every field; params may be NULL). Used by
 * recipes, which give the spec as a Lua table. name NULL = basename. */
base_status reward_spec_add(reward_spec *s, const char *path, double weight, const char *name,
                            const cJSON *params);
void reward_spec_free(reward_spec *s);
/* Directory of the built-in scripts: $GRPO_REWARDS_DIR, else the source
 * tree's rewards/ (fixed at build time). */
const char *reward_builtin_dir(void);

/* ------------------------------------------------------------------------ */
/* Code sandbox (C side of grpo.run_tests)                                  */

typedef enum {
    REWARD_RUN_PASSED = 0,     /* the verifier saw every test pass */
    REWARD_RUN_FAILED,         /* the verifier finished; some test failed */
    REWARD_RUN_RUNTIME_ERROR,  /* the solution raised or its process died
                                  (signal, os._exit) before the tests, or
                                  a test's call found it gone, or a test
                                  ended the verifier */
    REWARD_RUN_TIMEOUT,        /* wall clock or CPU time limit */
    REWARD_RUN_MEMORY,         /* MemoryError under the address-space cap */
    REWARD_RUN_OUTPUT_LIMIT,   /* stdout/stderr/evidence over the cap */
    REWARD_RUN_SANDBOX_ERROR,  /* could not run (no python, bad test text,
                                  namespaces refused) */
} reward_run_status;

const char *reward_run_status_str(reward_run_status s); /* "passed", ... */

/* Isolation actually applied to the solution's process (bit mask). */
enum {
    REWARD_ISO_USERNS = 1 << 0,  /* user namespace (non-root callers) */
    REWARD_ISO_PIDNS = 1 << 1,   /* PID namespace: killing PID 1 kills all */
    REWARD_ISO_MOUNTNS = 1 << 2, /* own mount namespace */
    REWARD_ISO_NETNS = 1 << 3,   /* empty network namespace */
    REWARD_ISO_UID = 1 << 4,     /* ran under a throw-away uid (root callers) */
    REWARD_ISO_PROC = 1 << 5,    /* own /proc (only the sandbox's processes) */
    REWARD_ISO_ROOTFS = 1 << 6,  /* minimal read-only root: /usr, /dev basics,
                                    private /tmp; no host file else */
    REWARD_ISO_SECCOMP = 1 << 7, /* seccomp filter (no ptrace, mounts,
                                    namespaces, non-AF_UNIX sockets ...) */
};

typedef struct {
    double timeout_s;     /* wall clock for the whole run; default 10 */
    double cpu_s;         /* RLIMIT_CPU; default ceil(timeout_s) */
    size_t memory_bytes;  /* RLIMIT_AS; default 1 GiB */
    size_t output_bytes;  /* cap on stdout and on stderr; default 64 KiB */
    size_t file_bytes;    /* RLIMIT_FSIZE; default 16 MiB */
    size_t disk_bytes;    /* size of the tmpfs work dir; default 64 MiB */
    int nproc;            /* RLIMIT_NPROC (processes + threads); default 32 */
    int nofile;           /* RLIMIT_NOFILE; default 64 */
    const char *python;   /* interpreter; default "/usr/bin/python3" */
    int namespaces;       /* 1 (default): required; where the kernel
                             refuses them the run is a sandbox_error, never
                             silently weaker. 0: never use them: the code
                             sees the host's files (warned once per
                             process; docs/rewards.md says what it costs) */
} reward_sandbox_limits;

/* Defaults (every field set). */
void reward_sandbox_limits_default(reward_sandbox_limits *lim);

typedef struct {
    reward_run_status status;
    int passed, total;
    int isolation;      /* REWARD_ISO_* bits applied to the solution */
    double seconds;     /* wall time of the run */
    char message[512];  /* one line: first failure or the error; "" if none */
} reward_run_result;

/* Run Python `code` against the `n_tests` test snippets (each usually one
 * assert; a HumanEval test is one snippet ending in `check(f)`), with
 * `setup` (imports for the tests; may be NULL) run first on both sides.
 * Two sandboxed python3 processes: the solution's runs `setup` and `code`
 * and then only answers requests; the verifier runs `setup` and the tests,
 * never `code`, reaching the solution's names through a channel that
 * carries plain data (and handles of objects the solution keeps), so
 * expected values and the verdict never enter the solution's process.
 * Tests and setup are trusted text: never put model output in them.
 * Returns BASE_ERR_INVALID for bad arguments only; every other outcome is
 * in res->status. Thread-safe. */
base_status reward_sandbox_run_tests(const char *code, const char *const *tests, int n_tests,
                                     const char *setup, const reward_sandbox_limits *lim,
                                     reward_run_result *res);

/* ------------------------------------------------------------------------ */
/* HTTP (C side of grpo.http_post_json)                                     */

typedef struct {
    double timeout_s;   /* per attempt; default 30 */
    int retries;        /* extra attempts on connect errors, timeouts, 429, 5xx; default 2 */
    double backoff_s;   /* first wait between attempts, doubled each time; default 0.2 */
    size_t max_bytes;   /* response cap; default 16 MiB */
    const char *const *headers; /* extra "Name: value" lines, may be NULL */
    int n_headers;
} reward_http_opts;

void reward_http_opts_default(reward_http_opts *o);

/* POST `body` (JSON text) to `url` with Content-Type application/json.
 * On success (2xx) *resp is the response body (malloc'd, NUL-terminated)
 * and *http_code the status. Other outcomes: BASE_ERR_IO with a message
 * naming the URL, the attempts and the last error or status; *resp NULL. */
base_status reward_http_post_json(const char *url, const char *body, const reward_http_opts *o,
                                  char **resp, long *http_code);

/* ------------------------------------------------------------------------ */
/* Pool                                                                     */

typedef struct {
    int64_t instructions;         /* Lua VM instructions per call; default 50M */
    size_t memory_bytes;          /* cap on one lua_State's heap; default 256 MiB */
    reward_sandbox_limits sandbox; /* defaults for grpo.run_tests */
} reward_limits;

void reward_limits_default(reward_limits *l);

/* The limits a user may set (recipes' reward_workers, reward_memory_mb and
 * reward_instructions; grpo score's --workers, --memory-mb, --instructions):
 * a Lua state with the grpo module needs a few MiB, thread creation fails
 * long before a million workers. reward_pool_create rejects values outside. */
#define REWARD_MAX_WORKERS 256
#define REWARD_MIN_MEMORY_MB 16
#define REWARD_MAX_MEMORY_MB 65536
#define REWARD_MIN_INSTRUCTIONS 1000

typedef struct reward_pool reward_pool;

/* Load every script of `spec` into n_workers lua_States (n_workers 0: all
 * cores; at most REWARD_MAX_WORKERS). `limits` NULL = defaults. `error_log_path` NULL = stderr;
 * otherwise the file is appended to. Errors (missing file, syntax error,
 * bad return value, unknown param) are BASE_ERR_* with a message naming the
 * script; *out is NULL then. */
base_status reward_pool_create(const reward_spec *spec, int n_workers, const reward_limits *limits,
                               const char *error_log_path, reward_pool **out);
void reward_pool_destroy(reward_pool *p);

int reward_pool_n_funcs(const reward_pool *p);
const char *reward_pool_func_name(const reward_pool *p, int f);
const char *reward_pool_func_path(const reward_pool *p, int f); /* the script */
double reward_pool_func_weight(const reward_pool *p, int f);
int reward_pool_n_workers(const reward_pool *p);
/* Lines written to the error log so far. */
int64_t reward_pool_n_errors(const reward_pool *p);
/* The error log's path as given to reward_pool_create (NULL: stderr). */
const char *reward_pool_error_log(const reward_pool *p);
/* Start every error log line with "TAG: " (a multi-process run: "rank 3");
 * NULL or "": nothing. */
void reward_pool_set_log_tag(reward_pool *p, const char *tag);
/* The first error logged for function f, "sample ID: message" (malloc'd;
 * NULL when it has none). */
char *reward_pool_first_error(reward_pool *p, int f);
/* Pre-flight: run every script's optional `check` function once (worker
 * 0, the per-call limits), for scripts that depend on something outside
 * the sample (http_judge.lua: its server answers). BASE_ERR_INVALID
 * "reward 'NAME' (PATH): check failed: message" on the first that raises. */
base_status reward_pool_check(reward_pool *p);

/* Dataset columns the scripts declared (union, in spec order, without
 * duplicates and without the four fields the pipeline adds). Owned by the
 * pool. */
const char *const *reward_required_columns(const reward_pool *p, int *n);
/* BASE_ERR_INVALID "WHERE: missing column 'answer' needed by rewards/x.lua"
 * if `row` lacks a required column (JSON null counts as missing). */
base_status reward_check_row(const reward_pool *p, const cJSON *row, const char *where);

/* Per-function outcome of one call. */
enum { REWARD_OK = 0, REWARD_NIL = 1, REWARD_ERROR = 2 };

/* Scores of a batch. Sample i, function f: index i * n_funcs + f. */
typedef struct {
    int64_t n;
    int n_funcs;
    double *total;     /* [n] weighted sum over non-nil scores; NaN if all nil */
    double *score;     /* [n * n_funcs] NaN where nil or error */
    uint8_t *status;   /* [n * n_funcs] REWARD_OK / NIL / ERROR */
    cJSON **parts;     /* [n * n_funcs] object {part: number} or NULL */
} reward_scores;

/* Score samples[0..n) (JSON objects; read only, shared between workers).
 * The sample id in error lines is the row's "id" (string or number), else
 * "#i". Overwrites *out (frees what it held; start from {0}). Returns
 * BASE_OK unless a sample is not an object (BASE_ERR_INVALID, nothing
 * scored). Not reentrant on one pool. */
base_status reward_pool_score(reward_pool *p, const cJSON *const *samples, int64_t n,
                              reward_scores *out);
/* The same with the samples in groups of consecutive completions of one
 * prompt: group g is samples[group_off[g], group_off[g + 1]) (group_off
 * [n_groups + 1], from 0 to n, non-decreasing; else BASE_ERR_INVALID).
 * A script with score_group is called once per group with the list of its
 * samples. group_off NULL: groups of one (= reward_pool_score). */
base_status reward_pool_score_groups(reward_pool *p, const cJSON *const *samples, int64_t n,
                                     const int64_t *group_off, int64_t n_groups, reward_scores *out);
void reward_scores_free(reward_scores *s);

/* ------------------------------------------------------------------------ */
/* Lua configuration files (recipes)                                        */

struct lua_State;
/* Called with the chunk's first result at the top of L's stack, inside the
 * protected call and under the limits; use raw access (lua_next,
 * lua_rawget*) and keep every C allocation reachable from ud: a Lua error
 * (the memory cap) ends it without returning. */
typedef base_status (*reward_config_fn)(struct lua_State *L, void *ud);

/* Run Lua text src[0..len) (text only; `chunkname` names it in errors) as a
 * configuration file in the reward scripts' sandbox: an instruction budget
 * and a heap cap (`lim`: instructions and memory_bytes), base (no dofile or
 * loadfile; load takes text), string, table, math, utf8, coroutine,
 * os = {clock, time, date, difftime, getenv}, io = {open (read modes),
 * lines (of a named file)}, require (NAME.lua from `dir`). No processes,
 * no file writes, no `grpo` module: calling a removed function raises
 * "os.execute is not available in recipes ...". Globals the chunk sets are
 * its own. Then fn(L, ud) converts the result, and the state is closed.
 * Errors: BASE_ERR_PARSE "chunk:LINE: message" (syntax, runtime, "memory cap
 * exceeded (N MiB)", "instruction budget exceeded (N instructions)"), or
 * fn's own status. */
base_status reward_lua_run_config(const char *src, size_t len, const char *chunkname, const char *dir,
                                  const reward_limits *lim, reward_config_fn fn, void *ud);

#ifdef __cplusplus
}
#endif

#endif
