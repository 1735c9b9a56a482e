/*
 * CPU op: rotary position embedding on the rope slice (spec §3.2, §3.11).
 *
 * Pair i of a rope vector is (x[2i], x[2i+1]) in the interleaved layout of
 * DeepSeek checkpoints, or (x[i], x[i+R/2]) in the rotate-half layout. With
 * c = cos[p][i], s = sin[p][i] (both already times the YaRN attention
 * factor):
 *   forward   a' = a c - b s,   b' = a s + b c
 *   backward  da = ga c + gb s, db = -ga s + gb c   (the transpose)
 */
#include "cpu.h"

static void rope(const char *op, tensor *x, const tensor *pos, const tensor *cos, const tensor *sin,
                 int interleaved, int inverse) {
    ops_check_rope("cpu", op, x, pos, cos, sin);
    int64_t n = x->shape[0];
    int64_t h = x->ndim == 3 ? x->shape[1] : 1;
    int64_t r = x->shape[x->ndim - 1];
    int64_t hs = x->ndim == 3 ? x->stride[1] : 0;
    int64_t half = r / 2, np = cos->shape[0];
    const int32_t *P = cpu_i32(pos);
    for (int64_t t = 0; t < n; t++)
        if (P[t] < 0 || P[t] >= np)
            base_die("%s: position %d outside the rope table [0, %lld)", op, P[t], (long long)np);
    int64_t da = interleaved ? 2 : 1;     /* index step between pairs */
    int64_t db = interleaved ? 1 : half;  /* offset of b within a pair */
    float sgn = inverse ? -1.0f : 1.0f;
#pragma omp parallel for schedule(static) if (n * h * r > 65536)
    for (int64_t t = 0; t < n; t++) {
        const float *C = cpu_row(cos, P[t]), *S = cpu_row(sin, P[t]);
        for (int64_t k = 0; k < h; k++) {
            float *v = (float *)x->data + t * x->stride[0] + k * hs;
            for (int64_t i = 0; i < half; i++) {
                float a = v[i * da], b = v[i * da + db];
                float c = C[i], s = sgn * S[i];
                v[i * da] = a * c - b * s;
                v[i * da + db] = a * s + b * c;
            }
        }
    }
}

void cpu_rope_fwd(tensor *x, const tensor *pos, const tensor *cos, const tensor *sin, int interleaved) {
    rope("rope_fwd", x, pos, cos, sin, interleaved, 0);
}

void cpu_rope_bwd(tensor *dx, const tensor *pos, const tensor *cos, const tensor *sin, int interleaved) {
    rope("rope_bwd", dx, pos, cos, sin, interleaved, 1);
}
