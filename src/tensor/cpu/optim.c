/*
 * CPU optimizer ops: the deterministic sum of squares (global gradient
 * norm) and the AdamW update, float32 in torch's operation order (see
 * ops_adamw_args in ops.h), so a CPU run follows torch.optim.AdamW to
 * within float rounding of the norm.
 */
#include "cpu.h"

#include <math.h>

static void need_f32_contig(const char *op, const tensor *t) {
    if (t->dtype != TENSOR_F32) base_die("cpu %s: float32 only (got %s)", op, tensor_dtype_name(t->dtype));
    if (!tensor_is_contiguous(t)) base_die("cpu %s: contiguous tensors only", op);
}

/* A fixed split into SUMSQ_CHUNKS ranges whose partial sums are added in
 * order: the result does not depend on the number of threads. */
#define SUMSQ_CHUNKS 256

double cpu_sumsq(const tensor *x) {
    need_f32_contig("sumsq", x);
    const int64_t n = tensor_numel(x);
    const float *X = x->data;
    double part[SUMSQ_CHUNKS];
    const int64_t per = (n + SUMSQ_CHUNKS - 1) / SUMSQ_CHUNKS;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int c = 0; c < SUMSQ_CHUNKS; c++) {
        int64_t lo = (int64_t)c * per, hi = lo + per < n ? lo + per : n;
        /* 8 independent accumulators (the add latency, not memory, bounds a
         * single chain), combined in a fixed order */
        double a[8] = {0};
        int64_t i = lo;
        for (; i + 8 <= hi; i += 8)
            for (int k = 0; k < 8; k++) a[k] += (double)X[i + k] * (double)X[i + k];
        for (; i < hi; i++) a[0] += (double)X[i] * (double)X[i];
        part[c] = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    }
    double s = 0;
    for (int c = 0; c < SUMSQ_CHUNKS; c++) s += part[c];
    return s;
}

void cpu_adamw(tensor *param, tensor *m, tensor *v, const tensor *grad, const ops_adamw_args *a) {
    ops_check_same_shape("adamw", param, grad);
    ops_check_same_shape("adamw", param, m);
    ops_check_same_shape("adamw", param, v);
    need_f32_contig("adamw", param), need_f32_contig("adamw", m), need_f32_contig("adamw", v);
    need_f32_contig("adamw", grad);
    if (a->step < 1) base_die("cpu adamw: step %lld (the 1-based update count) must be >= 1",
                              (long long)a->step);
    const int64_t n = tensor_numel(param);
    float *P = param->data, *M = m->data, *V = v->data;
    const float *G = grad->data;
    /* Python-float scalars, rounded to float where torch's float32 kernels
     * take them */
    const double bc1 = 1.0 - pow(a->beta1, (double)a->step);
    const double bc2 = 1.0 - pow(a->beta2, (double)a->step);
    const float decay = (float)(1.0 - a->lr * a->weight_decay);
    const float w1 = (float)(1.0 - a->beta1);
    const float b2 = (float)a->beta2;
    const float w2 = (float)(1.0 - a->beta2);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float neg_step = (float)(-(a->lr / bc1));
    const float eps = (float)a->eps, scale = a->grad_scale;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        float g = G[i] * scale;
        float p = P[i] * decay;
        float mi = M[i] + w1 * (g - M[i]);
        float vi = V[i] * b2 + w2 * g * g;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        P[i] = p + neg_step * (mi / denom);
        M[i] = mi;
        V[i] = vi;
    }
}
