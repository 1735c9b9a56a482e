/*
 * Backend selection and the shape checks both backends share.
 */
#include "ops.h"

#include <stdio.h>
#include <string.h>

void ops_check_same_shape(const char *op, const tensor *a, const tensor *b) {
    int ok = a->ndim == b->ndim;
    for (int i = 0; ok && i < a->ndim; i++) ok = a->shape[i] == b->shape[i];
    if (!ok) {
        char s1[64], s2[64];
        base_die("%s: shape mismatch %s vs %s", op, tensor_shape_str(a, s1, sizeof s1),
                 tensor_shape_str(b, s2, sizeof s2));
    }
}

static void mm_operand(const tensor *t, int trans, int64_t *rows, int64_t *cols, int64_t *batch,
                       int64_t *bstride, int64_t *ld) {
    if (t->ndim == 2) {
        *batch = 1;
        *bstride = 0;
        *rows = t->shape[0];
        *cols = t->shape[1];
        *ld = t->stride[0];
    } else if (t->ndim == 3) {
        *batch = t->shape[0];
        *bstride = t->shape[0] == 1 ? 0 : t->stride[0];
        *rows = t->shape[1];
        *cols = t->shape[2];
        *ld = t->stride[1];
    } else {
        base_die("matmul: operands must be 2-D or 3-D (got %d-D)", t->ndim);
    }
    if (t->stride[t->ndim - 1] != 1) base_die("matmul: last dimension must have stride 1");
    if (trans) {
        int64_t x = *rows;
        *rows = *cols;
        *cols = x;
    }
}

ops_matmul_dims ops_matmul_resolve(const tensor *c, const tensor *a, const tensor *b, int trans_a,
                                   int trans_b) {
    ops_matmul_dims d;
    int64_t am, ak, ab, bk, bn, bb, cm, cn, cb;
    mm_operand(a, trans_a, &am, &ak, &ab, &d.a_bstride, &d.lda);
    mm_operand(b, trans_b, &bk, &bn, &bb, &d.b_bstride, &d.ldb);
    mm_operand(c, 0, &cm, &cn, &cb, &d.c_bstride, &d.ldc);
    int64_t batch = cb;
    if (ab > batch) batch = ab;
    if (bb > batch) batch = bb;
    if (ak != bk || am != cm || bn != cn || (ab != 1 && ab != batch) || (bb != 1 && bb != batch) ||
        cb != batch) {
        char s1[64], s2[64], s3[64];
        base_die("matmul: shapes do not agree: C %s, A %s%s, B %s%s", tensor_shape_str(c, s1, 64),
                 tensor_shape_str(a, s2, 64), trans_a ? "^T" : "", tensor_shape_str(b, s3, 64),
                 trans_b ? "^T" : "");
    }
    if (cb > 1 && c->shape[0] > 1 && d.c_bstride == 0) base_die("matmul: bad C batch stride");
    d.batch = batch;
    d.m = am;
    d.n = bn;
    d.k = ak;
    return d;
}

#define OPS_EXTRA 4
static struct {
    char name[32];
    const struct ops *o;
} extra[OPS_EXTRA];

void ops_register(const char *name, const struct ops *o) {
    for (int i = 0; i < OPS_EXTRA; i++)
        if (!extra[i].o || !strcmp(extra[i].name, name)) {
            snprintf(extra[i].name, sizeof extra[i].name, "%s", name);
            extra[i].o = o;
            return;
        }
    base_die("ops_register: more than %d extra backends", OPS_EXTRA);
}

const struct ops *ops_by_name(const char *name) {
    for (int i = 0; i < OPS_EXTRA && extra[i].o; i++)
        if (!strcmp(extra[i].name, name)) return extra[i].o;
    if (!strcmp(name, "cpu")) return ops_cpu();
    if (!strcmp(name, "cuda")) return ops_cuda();
    if (!strcmp(name, "auto")) {
        const struct ops *o = ops_cuda();
        return o ? o : ops_cpu();
    }
    base_err_set(BASE_ERR_INVALID, "unknown device '%s' (expected cpu, cuda or auto)", name);
    return NULL;
}
