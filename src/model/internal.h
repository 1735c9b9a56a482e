/*
 * Private to src/model: the weight views, the activation layout and the
 * helpers the model files share. Not for other modules (use model.h).
 */
#ifndef GRPO_MODEL_INTERNAL_H
#define GRPO_MODEL_INTERNAL_H

#include "model/model.h"

/* Views of one decoder layer's tensors inside an arena (the parameters or
 * the gradients: both have the same layout). A tensor that the layer does
 * not have has data == NULL. */
typedef struct {
    tensor in_norm, post_norm;            /* [d] */
    tensor q_a, q_a_norm, q_b;            /* [dq, d], [dq], [H*dqk, dq]   (q_lora_rank > 0) */
    tensor q;                             /* [H*dqk, d]                   (q_lora_rank = 0) */
    tensor kv_a, kv_a_norm, kv_b;         /* [dc+dr, d], [dc], [H*(dn+dv), dc] */
    tensor o;                             /* [d, H*dv] */
    int moe;
    tensor gu, down;                      /* dense: [2I, d] (gate rows, then up rows), [d, I] */
    tensor router, bias;                  /* [E, d], [E] */
    tensor e_gu, e_down;                  /* [E, 2Ie, d], [E, d, Ie] */
    tensor s_gu, s_down;                  /* shared experts: [2Is, d], [d, Is] (Is = n_shared * Ie) */
    /* MTP module extras (layers num_hidden_layers ..) */
    tensor enorm, hnorm, eh_proj, head_norm; /* [d], [d], [d, 2d], [d] */
    tensor embed_copy, head_copy;            /* [V, d] when the checkpoint stores them */
} model_layer_w;

typedef struct {
    tensor embed;      /* [V, d] */
    tensor final_norm; /* [d] */
    tensor lm_head;    /* [V, d] (the embedding when tied) */
    model_layer_w *layers; /* num_hidden_layers + n_mtp */
} model_weights;

struct model {
    model_config cfg;
    const struct ops *ops;
    int n_mtp;             /* MTP modules in the arena */
    int mtp_copies;        /* MTP layers store embed_tokens / shared_head.head copies */
    int fused_experts;     /* checkpoint uses mlp.experts.gate_up_proj / down_proj */
    float *params;         /* device arena */
    int64_t numel;
    model_param *tab;      /* parameter table (host) */
    int ntab;
    model_weights w;       /* views into params */
    int64_t rope_len;      /* rows of the rope tables */
    float *rope_mem;       /* device: cos then sin, [rope_len, dr/2] each */
    tensor rope_cos, rope_sin;
};

/* weights.c: build the parameter table (tab may be NULL: count only) and
 * bind views of an arena at `base` (NULL: offsets only). Returns numel. */
int64_t model_layout(model *m, float *base, model_weights *w, model_param *tab, int *ntab);
void model_weights_free(model_weights *w);

/* Contiguous device tensor view helpers. */
static inline tensor mv_1d(const model *m, void *p, tensor_dtype dt, int64_t a) {
    int64_t s[1] = {a};
    return tensor_make(p, dt, m->ops->device, 1, s);
}
static inline tensor mv_2d(const model *m, void *p, tensor_dtype dt, int64_t a, int64_t b) {
    int64_t s[2] = {a, b};
    return tensor_make(p, dt, m->ops->device, 2, s);
}
static inline tensor mv_3d(const model *m, void *p, tensor_dtype dt, int64_t a, int64_t b, int64_t c) {
    int64_t s[3] = {a, b, c};
    return tensor_make(p, dt, m->ops->device, 3, s);
}
/* The first n rows (dim 0) of t. */
static inline tensor mv_rows(const tensor *t, int64_t n) {
    tensor r = *t;
    r.shape[0] = n;
    return r;
}
/* Rows [r0, r0 + n) of t. */
static inline tensor mv_slice(const tensor *t, int64_t r0, int64_t n) {
    tensor r = *t;
    r.data = (char *)t->data + r0 * t->stride[0] * (int64_t)tensor_dtype_size(t->dtype);
    r.shape[0] = n;
    return r;
}
/* Columns [c0, c0 + n) of the last dim (a strided view). */
static inline tensor mv_cols(const tensor *t, int64_t c0, int64_t n) {
    tensor r = *t;
    r.data = (char *)t->data + c0 * (int64_t)tensor_dtype_size(t->dtype);
    r.shape[t->ndim - 1] = n;
    return r;
}
/* Reshape a contiguous tensor's leading data as [a, b] / [a, b, c]. */
static inline tensor mv_as2(const tensor *t, int64_t a, int64_t b) {
    int64_t s[2] = {a, b};
    return tensor_make(t->data, t->dtype, t->device, 2, s);
}
static inline tensor mv_as3(const tensor *t, int64_t a, int64_t b, int64_t c) {
    int64_t s[3] = {a, b, c};
    return tensor_make(t->data, t->dtype, t->device, 3, s);
}
/* Slice [i] of the first dim of a 3-D tensor, as 2-D. */
static inline tensor mv_index(const tensor *t, int64_t i) {
    int64_t s[2] = {t->shape[1], t->shape[2]};
    tensor r = tensor_make((char *)t->data + i * t->stride[0] * (int64_t)tensor_dtype_size(t->dtype),
                           t->dtype, t->device, 2, s);
    r.stride[0] = t->stride[1];
    return r;
}

/* Fill the rope tables for positions [0, len). */
void model_rope_tables(model *m, int64_t len);

#endif
