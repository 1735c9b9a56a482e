/*
 * datagen: synthetic reasoning tasks with checkable answers, for the tiny
 * demo model and for tests. Output is JSONL, one task per line:
 *   {"id": "arith-17", "task": "arith", "prompt": "...", "answer": "85",
 *    "completion": "<think>...</think> \\boxed{85}"}
 * `completion` is a worked solution (used as SFT data by tiny-pretrain);
 * with --noise P a fraction P of completions carry a final answer off by
 * one (a biased teacher: the worked steps stay right, the copied result is
 * wrong), so a model pre-trained on them prefers the wrong answer, solves
 * some problems, not most, and a verifier reward has something to fix.
 *
 * Tasks:
 *   arith      a + b, a - b, a * b (--ops picks) with operands up to --digits
 *              digits; worked column by column (carries, borrows)
 *   countdown  reach a target from 3-4 numbers with + - * (each used at most
 *              once); `answer` is the target, `numbers` the list, and the
 *              completion gives one valid expression
 *
 * Every draw comes from Philox keyed by (seed, task index), so the same
 * arguments always give the same file.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

typedef struct {
    base_rng rng;
    uint32_t next;
} drawer;

static uint32_t draw(drawer *d, uint32_t n) { /* uniform in [0, n) */
    uint32_t w[4];
    base_rng_block(&d->rng, d->next++, w);
    return (uint32_t)(((uint64_t)w[0] * n) >> 32);
}

static long pow10i(int d) {
    long p = 1;
    while (d--) p *= 10;
    return p;
}

/* Column-wise addition steps: "7+8=15 carry 1; 3+4+1=8" */
static void add_steps(base_buf *b, long x, long y) {
    int carry = 0, first = 1;
    while (x || y || carry) {
        int dx = (int)(x % 10), dy = (int)(y % 10), s = dx + dy + carry;
        base_buf_printf(b, "%s%d+%d", first ? "" : "; ", dx, dy);
        if (carry) base_buf_puts(b, "+1");
        base_buf_printf(b, "=%d", s);
        carry = s >= 10;
        x /= 10, y /= 10;
        first = 0;
    }
}

/* Column-wise subtraction steps (x >= y): "2-9 borrow: 12-9=3; 3-0=3" */
static void sub_steps(base_buf *b, long x, long y) {
    int borrow = 0, first = 1;
    while (x) {
        int dx = (int)(x % 10), dy = (int)(y % 10), top = dx - borrow, nb = 0;
        if (top < dy) top += 10, nb = 1;
        base_buf_printf(b, "%s%d-%d=%d", first ? "" : "; ", top, dy, top - dy);
        borrow = nb;
        x /= 10, y /= 10;
        first = 0;
    }
}

static void gen_arith(drawer *d, int digits, const char *ops, long *a, long *b, char *op, long *ans,
                      base_buf *think) {
    long hi = pow10i(digits);
    char pick = ops[draw(d, (uint32_t)strlen(ops))];
    uint32_t kind = pick == '+' ? 0 : pick == '-' ? 1 : 2;
    *a = draw(d, (uint32_t)hi);
    *b = draw(d, (uint32_t)hi);
    if (kind == 0) {
        *op = '+';
        *ans = *a + *b;
        add_steps(think, *a, *b);
    } else if (kind == 1) {
        *op = '-';
        if (*a < *b) {
            long t = *a;
            *a = *b;
            *b = t;
        }
        *ans = *a - *b;
        sub_steps(think, *a, *b);
    } else {
        *op = '*';
        *b = draw(d, 10);
        *ans = *a * *b;
        base_buf_printf(think, "%ld*%ld = %ld*%ld", *a, *b, *b, *a);
        long t = *a, place = 1, first = 1;
        while (t) {
            base_buf_printf(think, "%s%ld*%ld=%ld", first ? ": " : " + ", *b, (t % 10) * place,
                            *b * (t % 10) * place);
            t /= 10, place *= 10, first = 0;
        }
        base_buf_printf(think, " = %ld", *ans);
    }
}

static int gen_countdown(drawer *d, int k, long nums[4], long *target, base_buf *expr) {
    /* build a random expression from k numbers, left to right: target known
     * to be reachable */
    for (int i = 0; i < k; i++) nums[i] = 1 + draw(d, 12);
    long acc = nums[0];
    base_buf_printf(expr, "%ld", nums[0]);
    for (int i = 1; i < k; i++) {
        uint32_t op = draw(d, 3);
        if (op == 2 && acc * nums[i] > 200) op = 0;
        if (op == 1 && acc - nums[i] < 0) op = 0;
        const char *ops = "+-*";
        if (op == 2 && i > 1) { /* keep precedence explicit */
            base_buf b2 = {0};
            base_buf_printf(&b2, "(%s)", expr->data);
            base_buf_reset(expr);
            base_buf_puts(expr, b2.data);
            base_buf_free(&b2);
        }
        base_buf_printf(expr, "%c%ld", ops[op], nums[i]);
        acc = op == 0 ? acc + nums[i] : op == 1 ? acc - nums[i] : acc * nums[i];
    }
    *target = acc;
    /* shuffle the numbers shown (the expression keeps its order) */
    for (int i = k - 1; i > 0; i--) {
        int j = (int)draw(d, (uint32_t)i + 1);
        long t = nums[i];
        nums[i] = nums[j];
        nums[j] = t;
    }
    return 0;
}

static void json_str(base_buf *b, const char *key, const char *v) {
    cJSON *s = cJSON_CreateString(v);
    char *t = cJSON_PrintUnformatted(s);
    base_buf_printf(b, ",\"%s\":%s", key, t);
    cJSON_free(t);
    cJSON_Delete(s);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The "prompt" of every line of a JSONL file, sorted (for bsearch). */
static base_status load_prompts(const char *path, char ***out, size_t *n) {
    base_jsonl *r;
    base_status s = base_jsonl_open(path, &r);
    if (s) return s;
    size_t cap = 0;
    cJSON *v;
    while ((s = base_jsonl_next(r, &v)) != BASE_ERR_EOF) {
        if (s) break;
        const char *p = base_json_str(v, "prompt", NULL);
        if (p) {
            if (*n == cap) *out = base_xrealloc(*out, (cap = cap ? 2 * cap : 1024) * sizeof **out);
            (*out)[(*n)++] = base_xstrdup(p);
        }
        cJSON_Delete(v);
    }
    base_jsonl_close(r);
    if (s == BASE_ERR_EOF) s = BASE_OK;
    if (!s) qsort(*out, *n, sizeof **out, cmp_str); /* sorted again after each file */
    return s;
}

static void usage(void) {
    fprintf(stderr,
            "usage: datagen --task arith|countdown --n N [--seed S] [--start I] [--digits D] [--ops +-*]\n"
            "               [--noise P] [--exclude FILE] [--out FILE]\n"
            "--exclude FILE (repeatable) skips tasks whose prompt appears in FILE (JSONL with \"prompt\"),\n"
            "so held-out sets share no problem with training sets.\n");
}

int main(int argc, char **argv) {
    const char *task = "arith", *out = NULL, *ops = "+-*";
    const char *exclude[8];
    int nexclude = 0;
    long n = 100, start = 0;
    uint64_t seed = 1;
    int digits = 2;
    double noise = 0;
    static struct option opts[] = {
        {"task", required_argument, 0, 't'}, {"n", required_argument, 0, 'n'},
        {"seed", required_argument, 0, 's'}, {"start", required_argument, 0, 'i'},
        {"digits", required_argument, 0, 'd'}, {"noise", required_argument, 0, 'p'},
        {"out", required_argument, 0, 'o'},  {"help", no_argument, 0, 'h'},
        {"exclude", required_argument, 0, 'x'}, {"ops", required_argument, 0, 'O'},
        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 't': task = optarg; break;
        case 'n': n = atol(optarg); break;
        case 's': seed = strtoull(optarg, NULL, 10); break;
        case 'i': start = atol(optarg); break;
        case 'd': digits = atoi(optarg); break;
        case 'p': noise = atof(optarg); break;
        case 'o': out = optarg; break;
        case 'x':
            if (nexclude == 8) {
                fprintf(stderr, "datagen: at most 8 --exclude files\n");
                return 2;
            }
            exclude[nexclude++] = optarg;
            break;
        case 'O': ops = optarg; break;
        case 'h': usage(); return 0;
        default: usage(); return 2;
        }
    }
    if (strcmp(task, "arith") && strcmp(task, "countdown")) {
        fprintf(stderr, "datagen: unknown task '%s' (arith or countdown)\n", task);
        return 2;
    }
    if (!*ops || strspn(ops, "+-*") != strlen(ops)) {
        fprintf(stderr, "datagen: --ops takes a non-empty string of + - *\n");
        return 2;
    }
    if (n < 0 || digits < 1 || digits > 6 || noise < 0 || noise > 1) {
        fprintf(stderr, "datagen: bad --n, --digits (1..6) or --noise (0..1)\n");
        return 2;
    }
    char **excl = NULL;
    size_t nex = 0;
    for (int i = 0; i < nexclude; i++)
        if (load_prompts(exclude[i], &excl, &nex)) {
            fprintf(stderr, "datagen: %s\n", base_err_msg());
            return 1;
        }
    base_buf all = {0}, think = {0}, line = {0};
    long written = 0;
    for (long i = start; written < n; i++) {
        drawer d;
        base_rng_init(&d.rng, seed, (uint32_t)i, (uint32_t)((uint64_t)i >> 32), 0xda7a);
        d.next = 0;
        base_buf_reset(&think);
        base_buf_reset(&line);
        char prompt[256], answer[64], final[64];
        if (!strcmp(task, "arith")) {
            long a, b, ans;
            char op;
            gen_arith(&d, digits, ops, &a, &b, &op, &ans, &think);
            snprintf(prompt, sizeof prompt, "What is %ld %c %ld?", a, op, b);
            snprintf(answer, sizeof answer, "%ld", ans);
            long shown = ans;
            if (draw(&d, 1000000) < (uint32_t)(noise * 1000000)) shown = ans + 1;
            snprintf(final, sizeof final, "%ld", shown);
        } else {
            long nums[4], target;
            int k = 3 + (int)draw(&d, 2);
            gen_countdown(&d, k, nums, &target, &think);
            char list[64] = "";
            for (int j = 0; j < k; j++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%ld", j ? ", " : "", nums[j]);
            snprintf(prompt, sizeof prompt, "Using the numbers [%s], make %ld with + - * (each at most once).",
                     list, target);
            snprintf(answer, sizeof answer, "%ld", target);
            snprintf(final, sizeof final, "%s", think.data);
            base_buf_printf(&line, ",\"numbers\":[%s]", list);
        }
        if (nex && bsearch(&(const char *){prompt}, excl, nex, sizeof *excl, cmp_str)) continue;
        written++;
        base_buf_printf(&all, "{\"id\":\"%s-%ld\",\"task\":\"%s\"", task, i, task);
        json_str(&all, "prompt", prompt);
        json_str(&all, "answer", answer);
        base_buf_puts(&all, line.len ? line.data : "");
        base_buf comp = {0};
        base_buf_printf(&comp, "<think>%s</think> \\boxed{%s}", think.data, final);
        json_str(&all, "completion", comp.data);
        base_buf_free(&comp);
        base_buf_puts(&all, "}\n");
    }
    int rc = 0;
    if (out) {
        if (base_write_file_atomic(out, all.data ? all.data : "", all.len)) {
            fprintf(stderr, "datagen: %s\n", base_err_msg());
            rc = 1;
        }
    } else if (all.len) {
        fwrite(all.data, 1, all.len, stdout);
    }
    base_buf_free(&all), base_buf_free(&think), base_buf_free(&line);
    for (size_t i = 0; i < nex; i++) free(excl[i]);
    free(excl);
    return rc;
}
