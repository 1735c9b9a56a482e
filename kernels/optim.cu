/*
 * Optimizer ops on the GPU, as src/tensor/cpu/optim.c: the sum of squares
 * in double with a fixed reduction tree (the same x gives the same bits on
 * every run), and AdamW in torch's float32 operation order with the scalars
 * computed on the host exactly as the CPU backend computes them.
 */
#include "cuda_common.cuh"

#include <math.h>

CUDA_NS_BEGIN

#define RED_THREADS 256
#define RED_MAX_BLOCKS 1024
#define RED_PER_THREAD 16

static void need_f32_contig(const char *op, const char *arg, const tensor *t) {
    if (t->dtype != TENSOR_F32) base_die("cuda %s: %s must be F32 (got %s)", op, arg, tensor_dtype_name(t->dtype));
    cuda_need_contig(op, arg, t);
}

/* part[b] = sum of squares of block b's range [b*per, (b+1)*per) */
__global__ void sumsq_part_kernel(double *part, const float *x, int64_t n, int64_t per) {
    __shared__ double red[32];
    int64_t lo = blockIdx.x * per, hi = lo + per < n ? lo + per : n;
    double s = 0;
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x)
        s += (double)x[i] * (double)x[i];
    s = block_sum(s, red);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ void sumsq_final_kernel(double *out, const double *part, int nparts) {
    __shared__ double red[32];
    double s = 0;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x)
        s += part[i];
    s = block_sum(s, red);
    if (threadIdx.x == 0) out[0] = s;
}

double cuda_sumsq(const tensor *x) {
    need_f32_contig("sumsq", "x", x);
    int64_t n = tensor_numel(x);
    if (n == 0) return 0.0;
    /* the partition depends on n only */
    int64_t nb = (n + RED_THREADS * RED_PER_THREAD - 1) / (RED_THREADS * RED_PER_THREAD);
    if (nb > RED_MAX_BLOCKS) nb = RED_MAX_BLOCKS;
    int64_t per = (n + nb - 1) / nb;
    double *part = (double *)cuda_scratch(SCR_RED, (size_t)(nb + 1) * sizeof(double));
    CUDA_LAUNCH(sumsq_part_kernel, (unsigned)nb, RED_THREADS, 0, part + 1, (const float *)x->data, n, per);
    CUDA_LAUNCH(sumsq_final_kernel, 1, RED_THREADS, 0, part, (const double *)(part + 1), (int)nb);
    double r = 0;
#ifdef GRPO_CUDA_EMU
    r = part[0];
#else
    CHECK_CUDA(cudaMemcpyAsync(&r, part, sizeof r, cudaMemcpyDeviceToHost, cuda_stream));
#endif
    cuda_check_errors(); /* synchronises */
    return r;
}

__global__ void adamw_kernel(float *P, float *M, float *V, const float *G, int64_t n, float decay, float w1, float b2,
                             float w2, float bc2_sqrt, float neg_step, float eps, float scale) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
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

void cuda_adamw(tensor *param, tensor *m, tensor *v, const tensor *grad, const ops_adamw_args *a) {
    ops_check_same_shape("adamw", param, grad);
    ops_check_same_shape("adamw", param, m);
    ops_check_same_shape("adamw", param, v);
    need_f32_contig("adamw", "param", param), need_f32_contig("adamw", "m", m);
    need_f32_contig("adamw", "v", v), need_f32_contig("adamw", "grad", grad);
    if (a->step < 1) base_die("cuda adamw: step %lld (the 1-based update count) must be >= 1", (long long)a->step);
    int64_t n = tensor_numel(param);
    if (!n) return;
    const double bc1 = 1.0 - pow(a->beta1, (double)a->step);
    const double bc2 = 1.0 - pow(a->beta2, (double)a->step);
    const float decay = (float)(1.0 - a->lr * a->weight_decay);
    const float w1 = (float)(1.0 - a->beta1);
    const float b2 = (float)a->beta2;
    const float w2 = (float)(1.0 - a->beta2);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float neg_step = (float)(-(a->lr / bc1));
    CUDA_LAUNCH(adamw_kernel, cuda_blocks(n, 256), 256, 0, (float *)param->data, (float *)m->data, (float *)v->data,
                (const float *)grad->data, n, decay, w1, b2, w2, bc2_sqrt, neg_step, (float)a->eps, a->grad_scale);
}

CUDA_NS_END
