/*
 * base: the bottom layer of grpo. Errors and check macros, logging, memory
 * (checked malloc, arena), JSON helpers over cJSON, a streaming JSONL reader
 * with line numbers, the Philox4x32-10 counter RNG, a fixed-size thread pool
 * and a terminal progress bar. Depends on libc, pthreads and cJSON only.
 *
 * Error model (one rule for the whole code base):
 *   - unrecoverable (out of memory, a broken invariant, a failed CUDA call):
 *     print file:line and the failing call, then exit. `base_die`, CHECK_*.
 *   - recoverable (bad user input: a malformed file, a wrong config, a bad
 *     JSONL line): return a `base_status` and leave a message in the calling
 *     thread's error buffer (`base_err_set`, read with `base_err_msg`). The
 *     message names the file, line or tensor. The caller decides to skip,
 *     stop or report.
 */
#ifndef GRPO_BASE_H
#define GRPO_BASE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#ifdef __cplusplus
#define BASE_NORETURN [[noreturn]]
#else
#define BASE_NORETURN _Noreturn
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Status codes and the per-thread error message                            */

typedef enum {
    BASE_OK = 0,
    BASE_ERR_IO,          /* open/read/write/mmap failed */
    BASE_ERR_PARSE,       /* malformed input (JSON, safetensors header, ...) */
    BASE_ERR_INVALID,     /* well-formed but wrong (shape mismatch, bad value) */
    BASE_ERR_UNSUPPORTED, /* valid but not handled by grpo */
    BASE_ERR_NOMEM,       /* a capped allocation refused (not malloc failure) */
    BASE_ERR_LIMIT,       /* a budget ran out (time, instructions, size) */
    BASE_ERR_EOF,         /* end of a stream (not an error for readers) */
    BASE_ERR_INTERRUPTED, /* stopped on request (a signal) with its work saved */
} base_status;

/* Human name of a status ("parse error", ...). Never NULL. */
const char *base_status_str(base_status s);

/* Set the calling thread's error message (printf format). Returns `s` so a
 * function can `return base_err_set(BASE_ERR_PARSE, "%s: ...", path);`. */
base_status base_err_set(base_status s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prepend context to the current message: "ctx: old message". */
base_status base_err_wrap(base_status s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The calling thread's last message ("" if none). Valid until the next set. */
const char *base_err_msg(void);
void base_err_clear(void);

/* ------------------------------------------------------------------------ */
/* Logging                                                                  */

enum { BASE_LOG_DEBUG = 0, BASE_LOG_INFO, BASE_LOG_WARN, BASE_LOG_ERROR };

/* Messages below the level are dropped. Default INFO; env GRPO_LOG=debug. */
void base_log_set_level(int level);
int base_log_level(void);
/* The name messages start with: "grpo" (default), or e.g. "grpo[rank 3]"
 * in a multi-process run, so every line says which process wrote it.
 * Copied (at most 47 bytes). */
void base_log_set_tag(const char *tag);
const char *base_log_tag(void);
void base_log_at(int level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define base_debug(...) base_log_at(BASE_LOG_DEBUG, __FILE__, __LINE__, __VA_ARGS__)
#define base_info(...) base_log_at(BASE_LOG_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define base_warn(...) base_log_at(BASE_LOG_WARN, __FILE__, __LINE__, __VA_ARGS__)
#define base_error(...) base_log_at(BASE_LOG_ERROR, __FILE__, __LINE__, __VA_ARGS__)

/* Print "grpo: file:line: message" to stderr and exit(1). */
BASE_NORETURN void base_die_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define base_die(...) base_die_at(__FILE__, __LINE__, __VA_ARGS__)

/* ------------------------------------------------------------------------ */
/* Check macros. Each names file:line, the call's text and the library's own
 * message, then dies. Macros expand only where used, so this header needs no
 * CUDA, curl or Lua headers: include those where you call the macro.       */

/* syscalls and libc calls that return -1 (or < 0) and set errno */
#define CHECK_SYS(call)                                                        \
    do {                                                                       \
        if ((call) < 0) base_die_at(__FILE__, __LINE__, "%s: %s", #call,       \
                                    base_strerror_now());                      \
    } while (0)
/* calls that return a pointer, NULL on failure with errno set */
#define CHECK_PTR(call)                                                        \
    do {                                                                       \
        if ((call) == NULL) base_die_at(__FILE__, __LINE__, "%s: %s", #call,   \
                                        base_strerror_now());                  \
    } while (0)
#define CHECK_CUDA(call)                                                       \
    do {                                                                       \
        cudaError_t e_ = (call);                                               \
        if (e_ != cudaSuccess)                                                 \
            base_die_at(__FILE__, __LINE__, "%s: CUDA error %d: %s", #call,    \
                        (int)e_, cudaGetErrorString(e_));                      \
    } while (0)
#define CHECK_LAUNCH() CHECK_CUDA(cudaGetLastError())
#define CHECK_CUBLAS(call)                                                     \
    do {                                                                       \
        cublasStatus_t s_ = (call);                                            \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                       \
            base_die_at(__FILE__, __LINE__, "%s: cuBLAS error %d: %s", #call,  \
                        (int)s_, cublasGetStatusString(s_));                   \
    } while (0)
#define CHECK_NCCL(call)                                                       \
    do {                                                                       \
        ncclResult_t r_ = (call);                                              \
        if (r_ != ncclSuccess)                                                 \
            base_die_at(__FILE__, __LINE__, "%s: NCCL error %d: %s", #call,    \
                        (int)r_, ncclGetErrorString(r_));                      \
    } while (0)
#define CHECK_CURL(call)                                                       \
    do {                                                                       \
        CURLcode c_ = (call);                                                  \
        if (c_ != CURLE_OK)                                                    \
            base_die_at(__FILE__, __LINE__, "%s: curl error %d: %s", #call,    \
                        (int)c_, curl_easy_strerror(c_));                      \
    } while (0)
/* Lua: for calls returning a LUA_* status with the message on the stack */
#define CHECK_LUA(L, call)                                                     \
    do {                                                                       \
        int l_ = (call);                                                       \
        if (l_ != LUA_OK)                                                      \
            base_die_at(__FILE__, __LINE__, "%s: Lua error %d: %s", #call, l_, \
                        lua_tostring((L), -1));                                \
    } while (0)

/* strerror(errno) without the thread-safety problem of strerror. */
const char *base_strerror_now(void);

/* ------------------------------------------------------------------------ */
/* Memory                                                                   */

/* malloc/calloc/realloc/strdup that die on failure (file:line of caller). */
void *base_xmalloc_at(size_t n, const char *file, int line);
void *base_xcalloc_at(size_t n, size_t size, const char *file, int line);
void *base_xrealloc_at(void *p, size_t n, const char *file, int line);
char *base_xstrdup_at(const char *s, const char *file, int line);
#define base_xmalloc(n) base_xmalloc_at((n), __FILE__, __LINE__)
#define base_xcalloc(n, s) base_xcalloc_at((n), (s), __FILE__, __LINE__)
#define base_xrealloc(p, n) base_xrealloc_at((p), (n), __FILE__, __LINE__)
#define base_xstrdup(s) base_xstrdup_at((s), __FILE__, __LINE__)
/* 64-byte aligned allocation (for SIMD and cache lines); free with free(). */
void *base_xmalloc_aligned_at(size_t n, const char *file, int line);
#define base_xmalloc_aligned(n) base_xmalloc_aligned_at((n), __FILE__, __LINE__)

/* Arena: one block, bump allocation, freed all at once. Owns its memory.
 * Used for "one allocation per role": size it at start-up, carve views. */
typedef struct {
    uint8_t *base;
    size_t cap;  /* bytes */
    size_t used; /* bytes, including alignment padding */
    size_t peak;
} base_arena;

void base_arena_init(base_arena *a, size_t cap); /* dies if it cannot allocate */
/* Aligned (align a power of two, 0 means 64). NULL if the arena is full: the
 * caller sized it wrongly, which is a bug it should report. Zeroed memory. */
void *base_arena_alloc(base_arena *a, size_t n, size_t align);
void base_arena_reset(base_arena *a);
void base_arena_free(base_arena *a);

/* Growable byte buffer (for building strings and output lines). */
typedef struct {
    char *data; /* always NUL-terminated when len > 0 or after any append */
    size_t len;
    size_t cap;
} base_buf;

void base_buf_append(base_buf *b, const void *p, size_t n);
void base_buf_puts(base_buf *b, const char *s);
void base_buf_printf(base_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void base_buf_reset(base_buf *b); /* len = 0, keeps the memory */
void base_buf_free(base_buf *b);

/* ------------------------------------------------------------------------ */
/* Files                                                                    */

/* Read a whole file. *out is malloc'd, NUL-terminated; *len excludes the NUL.
 * On error: BASE_ERR_IO with "path: reason". */
base_status base_read_file(const char *path, char **out, size_t *len);
/* Write atomically: path.tmp.PID, fsync, rename, fsync the directory. */
base_status base_write_file_atomic(const char *path, const void *data, size_t len);
/* mkdir -p. */
base_status base_mkdir_p(const char *path);
/* Join a directory and a file name into a malloc'd string. */
char *base_path_join(const char *dir, const char *name);
int base_file_exists(const char *path);
/* rm -r without a shell: remove a file, a symbolic link or a directory tree.
 * Links are removed, never followed (a link inside the tree to a directory
 * outside it leaves that directory alone); a mount point inside the tree is
 * an error. An absent path is BASE_OK. Errors name the path. */
base_status base_remove_tree(const char *path);

/* ------------------------------------------------------------------------ */
/* JSON (cJSON) helpers                                                     */
/* cJSON strings are NUL-terminated, so a string holding U+0000 would be
 * silently cut there. Both parsers below refuse such text instead: a raw NUL
 * byte anywhere, or a \u0000 escape in any string (keys included), is a
 * BASE_ERR_PARSE "WHAT:LINE:COL: U+0000 (NUL) in a string: not supported".
 * Every string grpo reads from JSON is therefore whole. */

/* Parse a JSON file. On error BASE_ERR_IO/PARSE with "path: ..." (the
 * parse message gives line and column of the first bad byte). */
base_status base_json_parse_file(const char *path, cJSON **out);
/* Parse a string; `what` names it in the message (e.g. "config.json").
 * Text after the value other than whitespace is an error. */
base_status base_json_parse(const char *text, size_t len, const char *what, cJSON **out);
/* Offset of the first U+0000 (a raw NUL byte, or a \u0000 escape inside a
 * string) in JSON text[0, len), len when there is none: what cJSON would
 * silently cut a string at. For callers that parse with cJSON directly. */
size_t base_json_find_nul(const char *text, size_t len);
/* Line and column (1-based) of byte offset `off` in text. */
void base_text_linecol(const char *text, size_t off, int *line, int *col);

/* Typed getters with defaults; `found` (may be NULL) says if the key exists
 * with a usable type. base_json_int's usable type is a number that is an
 * integer within int64 (not 2.5, not 1e999); any other value gives dflt
 * with *found = 0. cJSON keeps numbers as doubles: integers above 2^53
 * arrive rounded. */
double base_json_num(const cJSON *obj, const char *key, double dflt, int *found);
int64_t base_json_int(const cJSON *obj, const char *key, int64_t dflt, int *found);
int base_json_bool(const cJSON *obj, const char *key, int dflt, int *found);
const char *base_json_str(const cJSON *obj, const char *key, const char *dflt);

/* 1 and *out when `item` is a JSON number that is finite, integral and in
 * [lo, hi]; 0 otherwise (*out untouched). Defined for every input. */
int base_json_to_int(const cJSON *item, int64_t lo, int64_t hi, int64_t *out);
/* A range-checked integer key: absent or null gives *out = dflt; an integer
 * in [lo, hi] gives its value; anything else gives *out = dflt and
 * BASE_ERR_INVALID "WHAT: KEY must be an integer in [LO, HI] (got V)". */
base_status base_json_int_range(const cJSON *obj, const char *key, int64_t lo, int64_t hi,
                                int64_t dflt, const char *what, int64_t *out);
/* "3.5", "1e+30", "a string", "an object", ...: a value for messages. */
const char *base_json_describe(const cJSON *item, char *buf, size_t n);
/* Print a JSON value (malloc'd, free with free(); never NULL: out of
 * memory is fatal, NULL or an invalid item prints null): one line when pretty is 0, else indented by two spaces with a
 * final newline. Numbers in their shortest round-trip form (the fewest
 * %.Ng digits that strtod reads back to the same double; integers below
 * 2^53 in full); NaN and infinities print null (as cJSON). Strings are
 * escaped as cJSON does. Every file grpo writes uses this, not cJSON_Print. */
char *base_json_print(const cJSON *v, int pretty);
/* The number v as base_json_print writes it, into buf (snprintf's result). */
int base_json_number(char *buf, size_t n, double v);

/* ------------------------------------------------------------------------ */
/* JSONL streaming reader: one JSON value per line; blank lines are skipped.
 * Lines of any length. `base_jsonl_next` returns:
 *   BASE_OK          *out is the parsed value (caller owns, cJSON_Delete)
 *   BASE_ERR_PARSE   this line is bad (malformed, extra text, a NUL byte or
 *                    \u0000: see above); message "path:LINE[:COL]: ..."; the
 *                    reader has moved past it, so the caller may skip or stop
 *   BASE_ERR_EOF     no more lines
 *   BASE_ERR_IO      read error                                            */

typedef struct base_jsonl base_jsonl;

base_status base_jsonl_open(const char *path, base_jsonl **out); /* "-" = stdin */
/* Read from a copy of len bytes of memory; `name` stands for the path. */
base_status base_jsonl_open_mem(const char *data, size_t len, const char *name, base_jsonl **out);
base_status base_jsonl_next(base_jsonl *r, cJSON **out);
long base_jsonl_line(const base_jsonl *r); /* line number of the last value */
const char *base_jsonl_path(const base_jsonl *r);
void base_jsonl_close(base_jsonl *r);

/* ------------------------------------------------------------------------ */
/* Philox4x32-10 (Salmon et al., SC'11; Random123). A counter-based RNG:
 * out = f(counter, key) with no state, so a draw keyed by (seed, step,
 * prompt, sample, position) never depends on the order or batch of draws. */

void base_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
/* Uniform float in [0, 1) from one 32-bit word (24 high bits). */
static inline float base_u32_to_unit(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }
/* Uniform double in (0, 1) from two words (53 bits, never 0). */
double base_u64_to_open_unit(uint32_t hi, uint32_t lo);

/* A stream view: key = seed, counter = (c0, c1, c2, index). Draws are pure
 * functions of (seed, c0, c1, c2, index). */
typedef struct {
    uint32_t key[2];
    uint32_t ctr[4];
} base_rng;

void base_rng_init(base_rng *r, uint64_t seed, uint32_t c0, uint32_t c1, uint32_t c2);
/* The 4 words for position `i` in this stream. */
void base_rng_block(const base_rng *r, uint32_t i, uint32_t out[4]);
/* Uniform in [0,1) for draw `i` (uses word 0 of block i). */
float base_rng_uniform(const base_rng *r, uint32_t i);
/* Standard normal N(0,1) for draw `i` (Box-Muller on block i). */
float base_rng_normal(const base_rng *r, uint32_t i);

/* ------------------------------------------------------------------------ */
/* Thread pool: a fixed set of workers made once. `base_pool_for` runs
 * fn(ctx, i, worker) for i in [0, n) over the workers and the caller, and
 * returns when all are done. Not reentrant from inside fn.               */

typedef struct base_pool base_pool;
typedef void (*base_pool_fn)(void *ctx, int64_t i, int worker);

base_pool *base_pool_create(int n_threads); /* n_threads <= 0: all cores */
int base_pool_size(const base_pool *p);     /* workers + the caller */
void base_pool_for(base_pool *p, int64_t n, base_pool_fn fn, void *ctx);
void base_pool_destroy(base_pool *p);
int base_ncpu(void);

/* ------------------------------------------------------------------------ */
/* Time                                                                      */

double base_now(void); /* monotonic seconds */

/* ------------------------------------------------------------------------ */
/* Progress bar: on a terminal a single redrawn line; otherwise a plain line
 * every `plain_every` seconds. */

typedef struct {
    const char *label;
    int64_t total;
    int64_t done;
    double t0, last_draw;
    int tty;
    double plain_every;
    char extra[160]; /* caller's "reward 0.41 tok/s 1200" */
} base_progress;

void base_progress_start(base_progress *p, const char *label, int64_t total);
void base_progress_update(base_progress *p, int64_t done, const char *extra_fmt, ...)
    __attribute__((format(printf, 3, 4)));
void base_progress_finish(base_progress *p);

#ifdef __cplusplus
}
#endif

#endif
