#include "test_common.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "base/base.h"
#include "io/st.h"
#include "model/model.h"
#include "tensor/ops.h"
#include "tok/tok.h"

static char *env_path(const char *var, const char *dflt, const char *rel) {
    const char *root = getenv(var);
    if (!root) root = dflt;
    return base_path_join(root, rel);
}

char *test_shared_path(const char *rel) { return env_path("SHARED_DIR", "../shared", rel); }
char *test_src_path(const char *rel) { return env_path("GRPO_SRC", ".", rel); }

char *test_tmpdir(void) {
    const char *t = getenv("TMPDIR");
    char *tmpl = base_path_join(t ? t : "/tmp", "grpo-test-XXXXXX");
    if (!mkdtemp(tmpl)) base_die("mkdtemp: %s", base_strerror_now());
    return tmpl;
}

void test_rmdir(const char *dir) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
}

void test_write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) base_die("%s: %s", path, base_strerror_now());
    if (n && fwrite(data, 1, n, f) != n) base_die("%s: short write", path);
    fclose(f);
}

void test_copy_shared(const char *rel, const char *dst) {
    char *src = test_shared_path(rel), *data;
    size_t n;
    if (base_read_file(src, &data, &n)) base_die("%s", base_err_msg());
    test_write_file(dst, data, n);
    free(data), free(src);
}

void test_tiny_model(const char *dir, int tokenizer) {
    if (base_mkdir_p(dir)) base_die("%s", base_err_msg());
    const char *files[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "fixtures/hf-tiny-v3-a/%s", files[i]);
        char *dst = base_path_join(dir, files[i]);
        test_copy_shared(rel, dst);
        free(dst);
    }
    if (tokenizer) {
        tok_bytelevel_spec spec = tok_bytelevel_default();
        if (tok_write_bytelevel(dir, &spec)) base_die("%s", base_err_msg());
    }
}

void test_tiny_model_unbalanced(const char *dir, int tokenizer, float boost) {
    test_tiny_model(dir, tokenizer);
    char *path = base_path_join(dir, "model.safetensors"), *buf = NULL;
    size_t len;
    st_file *f = NULL;
    if (base_read_file(path, &buf, &len) || st_open_memory(buf, len, path, &f)) base_die("%s", base_err_msg());
    st_writer *w = st_writer_new();
    float *moved[64];
    int n = 0;
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        const void *data = t->data;
        if (strstr(t->name, "e_score_correction_bias") && t->dtype == TENSOR_F32 && n < 64) {
            float *b = base_xmalloc(t->nbytes);
            memcpy(b, t->data, t->nbytes);
            b[0] += boost, b[1] += boost;
            data = moved[n++] = b;
        }
        st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, data);
    }
    if (!n || st_writer_write(w, path)) base_die("%s: no routing bias to move, or %s", path, base_err_msg());
    st_writer_free(w);
    st_close(f);
    for (int i = 0; i < n; i++) free(moved[i]);
    free(buf), free(path);
}

char *test_metrics_canon(const char *path) {
    char *text = NULL, *save = NULL;
    size_t n;
    if (base_read_file(path, &text, &n)) fail_msg("%s", base_err_msg());
    base_buf out = {0};
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(line);
        if (!j) fail_msg("%s: a line is not JSON: %.80s", path, line);
        const char *drop[] = {"step_time", "time/rollout", "time/reward", "time/train", "tokens_per_s"};
        for (size_t k = 0; k < sizeof drop / sizeof drop[0]; k++) cJSON_DeleteItemFromObjectCaseSensitive(j, drop[k]);
        char *p = cJSON_PrintUnformatted(j);
        base_buf_printf(&out, "%s\n", p);
        cJSON_free(p);
        cJSON_Delete(j);
    }
    free(text);
    if (!out.data) base_buf_printf(&out, "%s", "");
    return out.data;
}

void test_write_text(const char *dir, const char *rel, const char *text) {
    char *p = base_path_join(dir, rel);
    test_write_file(p, text, strlen(text));
    free(p);
}

int test_count_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

void test_run_fixture(const char *dir) {
    char *m = base_path_join(dir, "model");
    test_tiny_model(m, 1);
    free(m);
    base_buf b = {0};
    for (int i = 0; i < 24; i++)
        base_buf_printf(&b, "{\"id\": %d, \"prompt\": \"What is %d + %d?\", \"answer\": \"%d\"}\n", i, i, 7 * i % 13,
                        i + 7 * i % 13);
    test_write_text(dir, "data.jsonl", b.data);
    base_buf_free(&b);
    test_write_text(dir, "vary.lua",
                    "return function(s) return (#s.completion % 5) / 4 + (s.completion:find('1') and 0.5 or 0) end\n");
}

void test_model_outputs_run(model *m, test_model_outputs *o) {
    const struct ops *op = model_ops(m);
    int64_t V = model_cfg(m)->vocab_size;
    enum { T0 = 29, T1 = 17, TD = 21, PD = 6 };
    int32_t ids[T0 + T1];
    for (int i = 0; i < T0 + T1; i++) ids[i] = (int32_t)((i * 37 + 11) % V);
    int32_t cu[3] = {0, T0, T0 + T1};
    o->nfull = (T0 + T1) * V;
    o->full = malloc((size_t)o->nfull * sizeof(float));
    assert_int_equal(model_forward_logits(m, 2, ids, cu, o->full, NULL), BASE_OK);
    model_train_limits tl = {.max_tokens = T0 + T1, .max_seqs = 2};
    model_train *tr = NULL;
    assert_int_equal(model_train_new(m, &tl, &tr), BASE_OK);
    model_batch b = {.nseq = 2, .ids = ids, .cu_seqlens = cu};
    assert_int_equal(model_forward(tr, &b), BASE_OK);
    o->nlogp = T0 + T1;
    o->logp = malloc((size_t)o->nlogp * sizeof(float));
    model_train_download(tr, o->logp, NULL);
    model_train_free(tr);
    model_cache_limits cl = {.slots = 2, .max_len = TD, .max_batch = 2, .max_prefill = TD};
    model_cache *c = NULL;
    assert_int_equal(model_cache_new(m, &cl, &c), BASE_OK);
    o->ndec = (TD - PD + 1) * V;
    o->dec = malloc((size_t)o->ndec * sizeof(float));
    int32_t slot = 1, pcu[2] = {0, PD};
    const tensor *lg;
    assert_int_equal(model_prefill(c, 1, &slot, ids, pcu, &lg), BASE_OK);
    op->download(o->dec, lg->data, (size_t)V * sizeof(float));
    for (int t = PD; t < TD; t++) {
        int32_t pos = t;
        assert_int_equal(model_decode(c, 1, &slot, &ids[t], &pos, &lg), BASE_OK);
        op->download(o->dec + (t - PD + 1) * V, lg->data, (size_t)V * sizeof(float));
    }
    model_cache_free(c);
}


void test_model_outputs_free(test_model_outputs *o) { free(o->full), free(o->logp), free(o->dec); }

#define COUNT_MAX_LIVE 4096
static const struct ops *count_inner;
static struct ops count_table;
static struct {
    void *p;
    size_t n;
} count_live[COUNT_MAX_LIVE];
static size_t count_live_bytes, count_peak_bytes;

static void *count_alloc(size_t n) {
    void *p = count_inner->alloc(n);
    int i = 0;
    while (i < COUNT_MAX_LIVE && count_live[i].p) i++;
    if (i == COUNT_MAX_LIVE) fail_msg("more than %d live device allocations", COUNT_MAX_LIVE);
    count_live[i].p = p, count_live[i].n = n;
    count_live_bytes += n;
    if (count_live_bytes > count_peak_bytes) count_peak_bytes = count_live_bytes;
    return p;
}

static void count_free(void *p) {
    if (!p) return;
    for (int i = 0; i < COUNT_MAX_LIVE; i++)
        if (count_live[i].p == p) {
            count_live_bytes -= count_live[i].n;
            count_live[i].p = NULL;
            count_inner->free(p);
            return;
        }
    fail_msg("freeing %p: not a live device allocation", p);
}

const struct ops *test_counting_ops(const struct ops *inner, const char *name) {
    count_inner = inner;
    count_table = *inner;
    count_table.name = name;
    count_table.alloc = count_alloc;
    count_table.free = count_free;
    return &count_table;
}

size_t test_counting_live(void) { return count_live_bytes; }
size_t test_counting_peak(void) { return count_peak_bytes; }
void test_counting_reset_peak(void) { count_peak_bytes = count_live_bytes; }

void test_rand_f32(float *x, int64_t n, uint64_t seed, float scale) {
    base_rng r;
    base_rng_init(&r, seed, 0x7e57, 0, 0);
    for (int64_t i = 0; i < n; i++) x[i] = (2.0f * base_rng_uniform(&r, (uint32_t)i) - 1.0f) * scale;
}

double test_max_abs_diff(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = a[i] - (double)b[i];
        if (d < 0) d = -d;
        if (d != d) return 1e300; /* NaN */
        if (d > m) m = d;
    }
    return m;
}

double test_rel_l2(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    if (den == 0) return num == 0 ? 0 : 1e300;
    return __builtin_sqrt(num / den);
}

int test_run_grpo(const char *args, char **out) {
    const char *exe = getenv("GRPO_EXE");
    if (!exe) exe = "./grpo";
    base_buf cmd = {0};
    base_buf_printf(&cmd, "'%s' %s 2>&1", exe, args);
    FILE *p = popen(cmd.data, "r");
    base_buf_free(&cmd);
    if (!p) base_die("popen: %s", base_strerror_now());
    base_buf o = {0};
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) base_buf_append(&o, buf, n);
    int st = pclose(p);
    if (out) *out = o.data ? o.data : base_xstrdup("");
    else base_buf_free(&o);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

char *test_tiny_config(const char *over) {
    static const char *base =
        "\"model_type\": \"deepseek_v3\", \"vocab_size\": 61, \"hidden_size\": 32, "
        "\"intermediate_size\": 40, \"moe_intermediate_size\": 12, \"num_hidden_layers\": 3, "
        "\"num_attention_heads\": 3, \"num_key_value_heads\": 3, \"n_shared_experts\": 1, "
        "\"n_routed_experts\": 8, \"num_experts_per_tok\": 3, \"n_group\": 4, \"topk_group\": 2, "
        "\"routed_scaling_factor\": 2.5, \"kv_lora_rank\": 16, \"q_lora_rank\": 24, "
        "\"qk_nope_head_dim\": 8, \"qk_rope_head_dim\": 8, \"v_head_dim\": 10, "
        "\"first_k_dense_replace\": 1, \"norm_topk_prob\": true, \"max_position_embeddings\": 256, "
        "\"rms_norm_eps\": 1e-6, \"rope_theta\": 10000";
    base_buf b = {0};
    base_buf_printf(&b, "{%s%s%s}", over, *over ? ", " : "", base);
    return b.data;
}
