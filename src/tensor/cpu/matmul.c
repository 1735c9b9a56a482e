/*
 * CPU matmul (float32): a packed, blocked GEMM in the BLIS style.
 *
 *   for jc over N by NC:            B block [KC x NC] packed into NR-wide panels
 *     for pc over K by KC:          A block [M x KC] packed into MR-tall panels
 *       for ic over M by MC:        the A panels of one L2-sized block
 *         parallel for tiles (MR x NR) of C: micro-kernel over KC
 *
 * The micro-kernel keeps an MR x NR tile of C in vector registers (GCC vector
 * extensions: AVX-512 with -march=native on machines that have it, AVX2 or
 * SSE otherwise) and streams packed A and B. alpha is folded into A packing.
 * Work is split by tiles with a static schedule, and every tile sums over k in
 * a fixed order, so results do not depend on the thread count: determinism.
 * Small M (decode: one token) runs the same path with a micro-kernel for the
 * valid rows only, so each row's numerics never depend on the batch.
 */
#include "tensor/ops.h"

#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define VW 16
#elif defined(__AVX__)
#define VW 8
#else
#define VW 4
#endif

typedef float vf __attribute__((vector_size(VW * 4)));
typedef float vfu __attribute__((vector_size(VW * 4), aligned(4))); /* unaligned access */

#define MR 6
#define NR (2 * VW)
#define KC 256
#define NC 3072
#define MCP 40 /* A panels per L2 block: 40 * MR = 240 rows */
/* Below this many FLOPs a product runs on the calling thread: a parallel
 * region costs a few microseconds on an idle machine and far more when
 * the cores are shared (a barrier waits for a descheduled thread), while
 * 4 MFLOP take ~40 us on one AVX-512 core. */
#define PAR_MIN_FLOP 4.0e6

/* a * b + c as one fused instruction, and a broadcast as one instruction.
 * Written with intrinsics because ISO C11 mode (-std=c11) turns off GCC's
 * contraction of a * b + c into an FMA (half the micro-kernel's
 * throughput), and GCC builds an element-by-element vector initialiser
 * through the stack (a store and reload per broadcast). */
static inline vf vfma(vf a, vf b, vf c) {
#if VW == 16
    return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif VW == 8 && defined(__FMA__)
    return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
    return a * b + c;
#endif
}

static inline vf vbcast(float x) {
#if VW == 16
    return (vf)_mm512_set1_ps(x);
#elif VW == 8
    return (vf)_mm256_set1_ps(x);
#elif defined(__SSE__)
    return (vf)_mm_set1_ps(x);
#else
    vf v;
    for (int i = 0; i < VW; i++) v[i] = x;
    return v;
#endif
}

static inline vf vload(const float *p) { return *(const vfu *)p; }
static inline void vstore(float *p, vf v) { *(vfu *)p = v; }

/* Element (r, c) of op(X) where X has row stride ld. */
#define OPX(X, trans, ld, r, c) ((trans) ? (X)[(int64_t)(c) * (ld) + (r)] : (X)[(int64_t)(r) * (ld) + (c)])

/* Pack rows [0, m) x cols [p0, p0+kc) of op(A) into MR-row panels:
 * Ap[panel][k][MR], zero-padded; scaled by alpha. */
static void pack_a(float *Ap, const float *A, int64_t lda, int ta, int64_t m, int64_t p0, int64_t kc,
                   float alpha, int par) {
    int64_t np = (m + MR - 1) / MR;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t p = 0; p < np; p++) {
        float *dst = Ap + p * kc * MR;
        int64_t r0 = p * MR;
        for (int64_t k = 0; k < kc; k++)
            for (int r = 0; r < MR; r++)
                dst[k * MR + r] = r0 + r < m ? alpha * OPX(A, ta, lda, r0 + r, p0 + k) : 0.0f;
    }
}

/* Pack rows [p0, p0+kc) x cols [j0, j0+nc) of op(B) into NR-col panels:
 * Bp[panel][k][NR], zero-padded. */
static void pack_b(float *Bp, const float *B, int64_t ldb, int tb, int64_t p0, int64_t kc, int64_t j0,
                   int64_t nc, int par) {
    int64_t np = (nc + NR - 1) / NR;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t p = 0; p < np; p++) {
        float *dst = Bp + p * kc * NR;
        int64_t c0 = j0 + p * NR, w = nc - p * NR < NR ? nc - p * NR : NR;
        if (!tb && w == NR) {
            for (int64_t k = 0; k < kc; k++)
                memcpy(dst + k * NR, B + (p0 + k) * ldb + c0, NR * sizeof(float));
        } else if (tb) { /* B is [N, K]: read each row contiguously */
            for (int c = 0; c < NR; c++) {
                if (c < w) {
                    const float *src = B + (c0 + c) * ldb + p0;
                    for (int64_t k = 0; k < kc; k++) dst[k * NR + c] = src[k];
                } else {
                    for (int64_t k = 0; k < kc; k++) dst[k * NR + c] = 0.0f;
                }
            }
        } else {
            for (int64_t k = 0; k < kc; k++)
                for (int c = 0; c < NR; c++)
                    dst[k * NR + c] = c < w ? OPX(B, tb, ldb, p0 + k, c0 + c) : 0.0f;
        }
    }
}

/* C[ROWS x NR tile] += Ap-panel x Bp-panel over kc (nr columns valid). One
 * kernel per row count: a tile with fewer valid rows (decode: one token)
 * does only its rows' work. Every element of C gets the same sequence of
 * operations whatever ROWS is (an FMA chain over the KC block from zero,
 * then one add into C), so a row's result does not depend on how many
 * other rows share the call: the numerics are independent of batch
 * composition. */
#define DEFINE_MICRO_KERNEL(ROWS)                                                                  \
    static void micro_kernel_##ROWS(int64_t kc, const float *restrict a, const float *restrict b,  \
                                    float *c, int64_t ldc, int nr) {                               \
        vf acc[ROWS][2];                                                                           \
        for (int i = 0; i < ROWS; i++) acc[i][0] = acc[i][1] = vbcast(0.0f);                       \
        for (int64_t k = 0; k < kc; k++) {                                                         \
            vf b0 = *(const vf *)(b + k * NR);                                                     \
            vf b1 = *(const vf *)(b + k * NR + VW);                                                \
            const float *ak = a + k * MR;                                                          \
            for (int i = 0; i < ROWS; i++) {                                                       \
                vf ai = vbcast(ak[i]);                                                             \
                acc[i][0] = vfma(ai, b0, acc[i][0]);                                               \
                acc[i][1] = vfma(ai, b1, acc[i][1]);                                               \
            }                                                                                      \
        }                                                                                          \
        if (nr == NR) {                                                                            \
            for (int i = 0; i < ROWS; i++) {                                                       \
                float *ci = c + i * ldc;                                                           \
                vstore(ci, vload(ci) + acc[i][0]);                                                 \
                vstore(ci + VW, vload(ci + VW) + acc[i][1]);                                       \
            }                                                                                      \
        } else {                                                                                   \
            float tile[ROWS][NR] __attribute__((aligned(64)));                                     \
            for (int i = 0; i < ROWS; i++) {                                                       \
                *(vf *)&tile[i][0] = acc[i][0];                                                    \
                *(vf *)&tile[i][VW] = acc[i][1];                                                   \
            }                                                                                      \
            for (int i = 0; i < ROWS; i++)                                                         \
                for (int j = 0; j < nr; j++) c[i * ldc + j] += tile[i][j];                         \
        }                                                                                          \
    }

DEFINE_MICRO_KERNEL(1)
DEFINE_MICRO_KERNEL(2)
DEFINE_MICRO_KERNEL(3)
DEFINE_MICRO_KERNEL(4)
DEFINE_MICRO_KERNEL(5)
DEFINE_MICRO_KERNEL(6)
_Static_assert(MR == 6, "one micro-kernel per row count 1..MR");

static void micro_kernel(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, int mr,
                         int nr) {
    switch (mr) {
    case 1: micro_kernel_1(kc, a, b, c, ldc, nr); break;
    case 2: micro_kernel_2(kc, a, b, c, ldc, nr); break;
    case 3: micro_kernel_3(kc, a, b, c, ldc, nr); break;
    case 4: micro_kernel_4(kc, a, b, c, ldc, nr); break;
    case 5: micro_kernel_5(kc, a, b, c, ldc, nr); break;
    default: micro_kernel_6(kc, a, b, c, ldc, nr); break;
    }
}

/* Scratch for packing, grown as needed (the only allocation here; it is
 * reused across calls and freed at exit). */
static _Thread_local float *scratch;
static _Thread_local size_t scratch_n;

static float *get_scratch(size_t n) {
    if (n > scratch_n) {
        free(scratch);
        scratch = base_xmalloc_aligned(n * sizeof(float));
        scratch_n = n;
    }
    return scratch;
}

static void gemm(int64_t m, int64_t n, int64_t k, const float *A, int64_t lda, int ta, const float *B,
                 int64_t ldb, int tb, float *C, int64_t ldc, float alpha, float beta) {
    /* beta first: C = beta * C (beta = 0 overwrites, ignoring NaN in C) */
    if (beta == 0.0f) {
        for (int64_t i = 0; i < m; i++) memset(C + i * ldc, 0, (size_t)n * sizeof(float));
    } else if (beta != 1.0f) {
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) C[i * ldc + j] *= beta;
    }
    if (k == 0 || alpha == 0.0f) return;
    int par = 2.0 * (double)m * (double)n * (double)k >= PAR_MIN_FLOP;
    int64_t mp = (m + MR - 1) / MR;
    int64_t ncmax = n < NC ? n : NC;
    int64_t kcmax = k < KC ? k : KC;
    size_t a_sz = ((size_t)(mp * MR * kcmax) + 15) & ~(size_t)15; /* keep Bp 64-byte aligned */
    size_t b_sz = (size_t)(((ncmax + NR - 1) / NR) * NR * kcmax);
    float *Ap = get_scratch(a_sz + b_sz);
    float *Bp = Ap + a_sz;
    for (int64_t jc = 0; jc < n; jc += NC) {
        int64_t nc = n - jc < NC ? n - jc : NC;
        int64_t np = (nc + NR - 1) / NR;
        for (int64_t pc = 0; pc < k; pc += KC) {
            int64_t kc = k - pc < KC ? k - pc : KC;
            pack_b(Bp, B, ldb, tb, pc, kc, jc, nc, par);
            pack_a(Ap, A, lda, ta, m, pc, kc, alpha, par);
            /* MC blocks of A panels: the packed A block a B panel meets
             * stays in L2 (MCP * MR * KC floats, ~250 KB) */
            for (int64_t ip0 = 0; ip0 < mp; ip0 += MCP) {
                int64_t ip1 = ip0 + MCP < mp ? ip0 + MCP : mp;
#pragma omp parallel for collapse(2) schedule(static) if (par)
                for (int64_t jp = 0; jp < np; jp++) {
                    for (int64_t ip = ip0; ip < ip1; ip++) {
                        int mr = (int)(m - ip * MR < MR ? m - ip * MR : MR);
                        int nr = (int)(nc - jp * NR < NR ? nc - jp * NR : NR);
                        micro_kernel(kc, Ap + ip * kc * MR, Bp + jp * kc * NR,
                                     C + ip * MR * ldc + jc + jp * NR, ldc, mr, nr);
                    }
                }
            }
        }
    }
}

void cpu_matmul(tensor *c, const tensor *a, const tensor *b, int trans_a, int trans_b, float alpha,
                float beta) {
    if (a->dtype != TENSOR_F32 || b->dtype != TENSOR_F32 || c->dtype != TENSOR_F32)
        base_die("cpu matmul: float32 only (got %s, %s -> %s)", tensor_dtype_name(a->dtype),
                 tensor_dtype_name(b->dtype), tensor_dtype_name(c->dtype));
    ops_matmul_dims d = ops_matmul_resolve(c, a, b, trans_a, trans_b);
    for (int64_t bt = 0; bt < d.batch; bt++) {
        const float *A = (const float *)a->data + bt * d.a_bstride;
        const float *B = (const float *)b->data + bt * d.b_bstride;
        float *C = (float *)c->data + bt * d.c_bstride;
        gemm(d.m, d.n, d.k, A, d.lda, trans_a, B, d.ldb, trans_b, C, d.ldc, alpha, beta);
    }
}

/* Plain triple loop in double: the oracle for tests. */
void cpu_matmul_naive(tensor *c, const tensor *a, const tensor *b, int trans_a, int trans_b,
                      float alpha, float beta) {
    ops_matmul_dims d = ops_matmul_resolve(c, a, b, trans_a, trans_b);
    for (int64_t bt = 0; bt < d.batch; bt++) {
        const float *A = (const float *)a->data + bt * d.a_bstride;
        const float *B = (const float *)b->data + bt * d.b_bstride;
        float *C = (float *)c->data + bt * d.c_bstride;
        for (int64_t i = 0; i < d.m; i++)
            for (int64_t j = 0; j < d.n; j++) {
                double s = 0;
                for (int64_t p = 0; p < d.k; p++)
                    s += (double)OPX(A, trans_a, d.lda, i, p) * OPX(B, trans_b, d.ldb, p, j);
                float old = beta == 0.0f ? 0.0f : beta * C[i * d.ldc + j];
                C[i * d.ldc + j] = (float)(alpha * s) + old;
            }
    }
}
