/*
 * TensorBoard event files: RUN/tb/events.out.tfevents.TIME.HOST.PID.grpo,
 * so `tensorboard --logdir runs` shows every run's metrics.
 *
 * The format, written by hand (no protobuf library):
 *   - a file is a sequence of TFRecords: uint64 length (little endian),
 *     uint32 masked CRC32C of those 8 bytes, the data, uint32 masked
 *     CRC32C of the data; masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8
 *   - each record is a serialized tensorflow.Event: wall_time (field 1,
 *     double), step (2, varint), then one of file_version (3, string:
 *     "brain.Event:2", the first record), summary (5) or session_log (7)
 *   - a Summary holds repeated Value (field 1): tag (1, string),
 *     simple_value (2, float)
 *   - a resumed run starts its new file with SessionLog{status: START}
 *     at the step it resumes from: TensorBoard then drops the older
 *     file's points from that step on (what the checkpoint did not keep).
 *
 * Tags follow the Hugging Face Trainer's TensorBoard callback as TRL users
 * see them: "train/" + the TRL metric name for training stages ("lr" is
 * learning_rate, completion_length completions/mean_length, rewards/NAME
 * rewards/NAME/mean, clip_ratio/low clip_ratio/low_mean, ...), "eval/" for
 * eval stages, "sample/" for sample stages; the step is the run's global
 * step.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "recipe/recipe.h"
#include "run_internal.h"

struct run_tb {
    FILE *f;
    char *path;
    base_buf rec; /* the record being built */
};

/* ---- CRC32C (Castagnoli, reflected polynomial 0x82f63b78) ------------------- */

static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t masked_crc(const void *data, size_t n) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, crc_init);
    const unsigned char *p = data;
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    c ^= 0xffffffffu;
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

/* ---- protobuf wire format ------------------------------------------------- */

static void put_varint(base_buf *b, uint64_t v) {
    unsigned char t[10];
    int n = 0;
    do {
        t[n] = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (v) t[n] |= 0x80;
        n++;
    } while (v);
    base_buf_append(b, t, (size_t)n);
}

static void put_le(base_buf *b, uint64_t v, int bytes) {
    unsigned char t[8];
    for (int i = 0; i < bytes; i++) t[i] = (unsigned char)(v >> (8 * i));
    base_buf_append(b, t, (size_t)bytes);
}

static void put_bytes(base_buf *b, int field, const void *p, size_t n) {
    put_varint(b, (uint64_t)field << 3 | 2);
    put_varint(b, n);
    base_buf_append(b, p, n);
}

/* Event header: wall_time (1, fixed64 double) and step (2, varint). */
static void put_event_head(base_buf *b, double wall, int64_t step) {
    uint64_t w;
    memcpy(&w, &wall, sizeof w);
    put_varint(b, 1 << 3 | 1);
    put_le(b, w, 8);
    put_varint(b, 2 << 3 | 0);
    put_varint(b, (uint64_t)step);
}

static base_status write_record(run_tb *tb, const base_buf *ev) {
    unsigned char head[12];
    uint64_t n = ev->len;
    for (int i = 0; i < 8; i++) head[i] = (unsigned char)(n >> (8 * i));
    uint32_t hc = masked_crc(head, 8), dc = masked_crc(ev->data, ev->len);
    for (int i = 0; i < 4; i++) head[8 + i] = (unsigned char)(hc >> (8 * i));
    unsigned char tail[4];
    for (int i = 0; i < 4; i++) tail[i] = (unsigned char)(dc >> (8 * i));
    if (fwrite(head, 1, 12, tb->f) != 12 || fwrite(ev->data, 1, ev->len, tb->f) != ev->len ||
        fwrite(tail, 1, 4, tb->f) != 4 || fflush(tb->f) != 0)
        return base_err_set(BASE_ERR_IO, "%s: %s", tb->path, base_strerror_now());
    return BASE_OK;
}

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

base_status run_tb_open(const char *run_dir, int64_t resume_step, run_tb **out) {
    *out = NULL;
    char *dir = base_path_join(run_dir, "tb");
    base_status s = base_mkdir_p(dir);
    if (s) {
        free(dir);
        return s;
    }
    char host[256] = "localhost";
    if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "localhost");
    for (char *p = host; *p; p++)
        if (*p == '/') *p = '_';
    base_buf name = {0};
    double wall = wall_now();
    base_buf_printf(&name, "events.out.tfevents.%lld.%s.%ld.grpo", (long long)wall, host, (long)getpid());
    run_tb *tb = base_xcalloc(1, sizeof *tb);
    tb->path = base_path_join(dir, name.data);
    base_buf_free(&name);
    free(dir);
    tb->f = fopen(tb->path, "wb");
    if (!tb->f) {
        s = base_err_set(BASE_ERR_IO, "%s: %s", tb->path, base_strerror_now());
        run_tb_close(tb);
        return s;
    }
    put_event_head(&tb->rec, wall, 0);
    put_bytes(&tb->rec, 3, "brain.Event:2", 13);
    s = write_record(tb, &tb->rec);
    if (!s && resume_step >= 0) { /* SessionLog{status: START (1)} */
        base_buf_reset(&tb->rec);
        put_event_head(&tb->rec, wall, resume_step);
        put_bytes(&tb->rec, 7, "\x08\x01", 2);
        s = write_record(tb, &tb->rec);
    }
    if (s) {
        run_tb_close(tb);
        return s;
    }
    *out = tb;
    return BASE_OK;
}

void run_tb_tag(const char *prefix, const char *key, char *tag, size_t n) {
    static const char *const renamed[][2] = {
        {"lr", "learning_rate"},
        {"completion_length", "completions/mean_length"},
        {"clip_ratio/low", "clip_ratio/low_mean"},
        {"clip_ratio/high", "clip_ratio/high_mean"},
        {"clip_ratio/region", "clip_ratio/region_mean"},
    };
    for (size_t i = 0; i < sizeof renamed / sizeof renamed[0]; i++)
        if (!strcmp(key, renamed[i][0])) {
            snprintf(tag, n, "%s/%s", prefix, renamed[i][1]);
            return;
        }
    size_t k = strlen(key);
    int per_func = !strncmp(key, "rewards/", 8) && !(k >= 4 && !strcmp(key + k - 4, "/std"));
    snprintf(tag, n, "%s/%s%s", prefix, key, per_func ? "/mean" : "");
}

/* Summary.Value entries for the numbers of obj (an object inside the line,
 * e.g. the sample stage's "dropped", gives keys "dropped/NAME"). */
static int put_values(base_buf *summary, base_buf *value, const char *prefix, const char *outer, const cJSON *obj) {
    int any = 0;
    for (const cJSON *e = obj->child; e; e = e->next) {
        if (!e->string || (!outer && (!strcmp(e->string, "step") || !strcmp(e->string, "global_step")))) continue;
        char key[256], tag[300];
        snprintf(key, sizeof key, "%s%s%s", outer ? outer : "", outer ? "/" : "", e->string);
        if (cJSON_IsObject(e) && !outer) {
            any |= put_values(summary, value, prefix, key, e);
            continue;
        }
        if (!cJSON_IsNumber(e)) continue;
        run_tb_tag(prefix, key, tag, sizeof tag);
        float f = (float)e->valuedouble;
        uint32_t u;
        memcpy(&u, &f, sizeof u);
        base_buf_reset(value);
        put_bytes(value, 1, tag, strlen(tag));
        put_varint(value, 2 << 3 | 5);
        put_le(value, u, 4);
        put_bytes(summary, 1, value->data, value->len);
        any = 1;
    }
    return any;
}

base_status run_tb_scalars(run_tb *tb, const char *prefix, const cJSON *line, int64_t step) {
    base_buf *ev = &tb->rec;
    base_buf_reset(ev);
    put_event_head(ev, wall_now(), step);
    base_buf summary = {0}, value = {0};
    int any = put_values(&summary, &value, prefix, NULL, line);
    base_status s = BASE_OK;
    if (any) {
        put_bytes(ev, 5, summary.data, summary.len);
        s = write_record(tb, ev);
    }
    base_buf_free(&summary);
    base_buf_free(&value);
    return s;
}

void run_tb_close(run_tb *tb) {
    if (!tb) return;
    if (tb->f) fclose(tb->f);
    base_buf_free(&tb->rec);
    free(tb->path);
    free(tb);
}

base_status run_tb_start(run_ctx *c, int64_t resume_step) {
    run_tb_close(c->tb);
    c->tb = NULL;
    return run_tb_open(c->dir, resume_step, &c->tb);
}

void run_tb_metrics(run_ctx *c, const cJSON *line) {
    if (!c->tb) return;
    const char *stage = base_json_str(line, "stage", NULL), *prefix = "train";
    for (int i = 0; stage && i < c->cfg->n_stages; i++)
        if (!strcmp(c->cfg->stages[i].name, stage)) {
            int t = c->cfg->stages[i].type;
            prefix = t == RECIPE_STAGE_EVAL ? "eval" : t == RECIPE_STAGE_SAMPLE ? "sample" : "train";
        }
    int64_t step = base_json_int(line, "global_step", c->total_steps, NULL);
    if (run_tb_scalars(c->tb, prefix, line, step)) {
        base_warn("TensorBoard events: %s (no more events are written)", base_err_msg());
        run_tb_close(c->tb);
        c->tb = NULL;
    }
}
