/*
 * Rotary embedding in place on the rope slice (spec §3.2, §3.11), as
 * src/tensor/cpu/rope.c: pair i is (x[2i], x[2i+1]) interleaved or
 * (x[i], x[i+R/2]) rotate-half; forward a' = a c - b s, b' = a s + b c;
 * backward rotates by -angle. One thread per (token, head, pair).
 */
#include "cuda_common.cuh"

CUDA_NS_BEGIN

__global__ void rope_kernel(float *x, int64_t s0, int64_t s1, const int32_t *pos, const float *cs, const float *sn,
                            int64_t tld, int64_t n, int64_t h, int64_t half, int64_t np, int interleaved, float sgn,
                            int *err) {
    int64_t total = n * h * half;
    int64_t da = interleaved ? 2 : 1, db = interleaved ? 1 : half;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = e % half, k = (e / half) % h, t = e / (half * h);
        int32_t p = pos[t];
        if (p < 0 || p >= np) {
            if (i == 0 && k == 0) cuda_flag(err, CU_OP_ROPE, CU_WHAT_POSITION, t, p, np);
            continue;
        }
        float *v = x + t * s0 + k * s1;
        float a = v[i * da], b = v[i * da + db];
        float c = cs[p * tld + i], s = sgn * sn[p * tld + i];
        v[i * da] = a * c - b * s;
        v[i * da + db] = a * s + b * c;
    }
}

static void rope(const char *op, tensor *x, const tensor *pos, const tensor *cos, const tensor *sin, int interleaved,
                 int inverse) {
    ops_check_rope("cuda", op, x, pos, cos, sin);
    int64_t n = x->shape[0], h = x->ndim == 3 ? x->shape[1] : 1, r = x->shape[x->ndim - 1];
    int64_t hs = x->ndim == 3 ? x->stride[1] : 0;
    int64_t half = r / 2, np = cos->shape[0];
    if (cos->stride[0] != sin->stride[0]) base_die("cuda %s: cos and sin tables differ in row stride", op);
    int64_t total = n * h * half;
    if (!total) return;
    CUDA_LAUNCH(rope_kernel, cuda_blocks(total, 256), 256, 0, (float *)x->data, x->stride[0], hs,
                (const int32_t *)pos->data, (const float *)cos->data, (const float *)sin->data, cos->stride[0], n, h,
                half, np, interleaved, inverse ? -1.0f : 1.0f, cuda_errbuf());
}

void cuda_rope_fwd(tensor *x, const tensor *pos, const tensor *cos, const tensor *sin, int interleaved) {
    rope("rope_fwd", x, pos, cos, sin, interleaved, 0);
}
void cuda_rope_bwd(tensor *dx, const tensor *pos, const tensor *cos, const tensor *sin, int interleaved) {
    rope("rope_bwd", dx, pos, cos, sin, interleaved, 1);
}

CUDA_NS_END
