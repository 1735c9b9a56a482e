/*
 * sft: the masked next-token NLL and its gradient w.r.t. logp, and loss
 * masks for chat samples (only assistant turns are trained). Packing is in
 * sft_pack.c.
 */
#include "sft.h"

#include <stdlib.h>
#include <string.h>

int64_t sft_count_loss_tokens(const uint8_t *mask, int64_t n) {
    if (!mask) return n;
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++) c += mask[i] != 0;
    return c;
}

base_status sft_loss(const float *logp, const uint8_t *mask, int64_t n, int64_t n_tokens_step,
                     float *g_logp, sft_loss_stats *stats) {
    int64_t local = sft_count_loss_tokens(mask, n);
    if (n_tokens_step < local)
        return base_err_set(BASE_ERR_INVALID,
                            "sft_loss: n_tokens_step = %lld but this micro-batch alone has %lld "
                            "loss tokens",
                            (long long)n_tokens_step, (long long)local);
    const double inv = n_tokens_step > 0 ? 1.0 / (double)n_tokens_step : 0.0;
    double nll = 0;
    for (int64_t t = 0; t < n; t++) {
        if (mask && !mask[t]) {
            g_logp[t] = 0.0f;
            continue;
        }
        nll -= (double)logp[t];
        g_logp[t] = (float)-inv;
    }
    if (stats) {
        stats->nll_sum = nll;
        stats->n_tokens = (double)local;
        stats->loss = nll * inv;
    }
    return BASE_OK;
}

/* ------------------------------------------------------------------------ */
/* Chat samples                                                             */

static int known_role(const char *r) {
    return !strcmp(r, "system") || !strcmp(r, "user") || !strcmp(r, "assistant") ||
           !strcmp(r, "tool");
}

base_status sft_chat_parse(const cJSON *row, const char *where, sft_chat *out) {
    memset(out, 0, sizeof *out);
    const char *w = where ? where : "chat sample";
    const cJSON *arr = cJSON_IsObject(row) ? cJSON_GetObjectItemCaseSensitive(row, "messages") : NULL;
    if (!cJSON_IsArray(arr))
        return base_err_set(BASE_ERR_INVALID, "%s: expected an object with a \"messages\" array", w);
    int n = cJSON_GetArraySize(arr), n_asst = 0;
    if (n < 1) return base_err_set(BASE_ERR_INVALID, "%s: \"messages\" is empty", w);
    sft_message *m = base_xcalloc((size_t)n, sizeof *m);
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(it, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (!cJSON_IsString(role) || !cJSON_IsString(content)) {
            free(m);
            return base_err_set(BASE_ERR_INVALID,
                                "%s: message %d needs string \"role\" and \"content\"", w, i);
        }
        if (!known_role(role->valuestring)) {
            base_err_set(BASE_ERR_INVALID,
                         "%s: message %d has role \"%s\" (expected system, user, assistant or "
                         "tool)",
                         w, i, role->valuestring);
            free(m);
            return BASE_ERR_INVALID;
        }
        m[i].role = role->valuestring;
        m[i].content = content->valuestring;
        n_asst += !strcmp(m[i].role, "assistant");
        i++;
    }
    if (!n_asst) {
        free(m);
        return base_err_set(BASE_ERR_INVALID, "%s: no assistant message to train on", w);
    }
    out->n = n;
    out->msgs = m;
    return BASE_OK;
}

void sft_chat_free(sft_chat *c) {
    free(c->msgs);
    memset(c, 0, sizeof *c);
}

base_status sft_chat_assistant_spans(const sft_chat *chat, sft_chat_count_fn count, void *ctx,
                                     sft_span *spans, int *n_spans) {
    int ns = 0;
    int64_t prev_end = 0;
    for (int k = 0; k < chat->n; k++) {
        if (strcmp(chat->msgs[k].role, "assistant")) continue;
        int64_t b, e;
        base_status st = count(ctx, chat->msgs, k, 1, &b);
        if (!st) st = count(ctx, chat->msgs, k + 1, 0, &e);
        if (st) return base_err_wrap(st, "assistant message %d", k);
        if (b < prev_end || e <= b)
            return base_err_set(BASE_ERR_INVALID,
                                "assistant message %d: token span [%lld, %lld) after %lld: the "
                                "chat template does not encode prefixes as prefixes",
                                k, (long long)b, (long long)e, (long long)prev_end);
        spans[ns].begin = b;
        spans[ns].end = e;
        prev_end = e;
        ns++;
    }
    *n_spans = ns;
    return BASE_OK;
}

void sft_mask_from_spans(int64_t n, const sft_span *spans, int n_spans, uint8_t *mask) {
    memset(mask, 0, (size_t)(n > 0 ? n : 0));
    for (int s = 0; s < n_spans; s++) {
        int64_t b = spans[s].begin < 0 ? 0 : spans[s].begin;
        int64_t e = spans[s].end > n ? n : spans[s].end;
        for (int64_t i = b; i < e; i++) mask[i] = 1;
    }
}
