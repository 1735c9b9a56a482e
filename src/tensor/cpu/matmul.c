/*
 * CPU matmul (float32): a packed, blocked GEMM in the BLIS style.
 *
 *   each thread takes a block of C (a range of NR-wide column panels, or of
 *   MR-tall row panels: whichever divides evenly) and, on its own:
 *     for jc over its columns by NC:   B block [KC x NC] packed into NR-wide panels
 *       for pc over K by KC:
 *         for ic over its rows by MC:  A block [MC x KC] packed into MR-tall panels (L2)
 *           for tiles (MR x NR): micro-kernel over KC
 *
 * The micro-kernel keeps an MR x NR tile of C in vector registers (GCC vector
 * extensions: AVX-512 with -march=native on machines that have it, AVX2 or
 * SSE otherwise) and streams packed A and B. alpha is folded into A packing.
 * Threads share no packed data and meet only at the end (no barrier inside,
 * which matters on a machine shared with other processes), and every tile
 * sums over k in a fixed order whichever thread owns it, so results do not
 * depend on the thread count: determinism.
 * Small M (decode: one token) runs the same path with a micro-kernel for the
 * valid rows only, so each row's numerics never depend on the batch.
 *
 * Stored weights: B may be BF16 or F8_E4M3 (with its block scales, tensor.h
 * tensor_qblock): a frozen model's compute weights. Each B panel is widened
 * to f32 (tensor_widen: exact for bf16, e4m3(q) * scale for fp8) just
 * before it is packed, so the packed panel holds the values an f32 copy of
 * the dequantised weight would give, the micro-kernels are unchanged and
 * the arithmetic stays f32: C equals, bit for bit, the product with that
 * f32 copy.
 */
#include "tensor/cpu/cpu.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#define MR 6
#define NR (2 * CPU_VW)
#define KC 256
#define NCP 96 /* B panels per block: 96 * NR = 3072 columns (with AVX-512) */
#define MCP 40 /* A panels per L2 block: 40 * MR = 240 rows */
/* Below this many FLOPs a product runs on the calling thread: a parallel
 * region costs a few microseconds on an idle machine and far more when
 * the cores are shared (a barrier waits for a descheduled thread), while
 * 4 MFLOP take ~40 us on one AVX-512 core. */
#define PAR_MIN_FLOP 4.0e6

/* A broadcast as one instruction: GCC builds an element-by-element vector
 * initialiser through the stack (a store and reload per broadcast). */
static inline cpu_vf vbcast(float x) {
#if CPU_VW == 16
    return (cpu_vf)_mm512_set1_ps(x);
#elif CPU_VW == 8
    return (cpu_vf)_mm256_set1_ps(x);
#elif defined(__SSE__)
    return (cpu_vf)_mm_set1_ps(x);
#else
    cpu_vf v;
    for (int i = 0; i < CPU_VW; i++) v[i] = x;
    return v;
#endif
}

/* Element (r, c) of op(X) where X has row stride ld. */
#define OPX(X, trans, ld, r, c) ((trans) ? (X)[(int64_t)(c) * (ld) + (r)] : (X)[(int64_t)(r) * (ld) + (c)])

/* Pack A panels [i0, i1) (rows [i0*MR, i1*MR) clipped to m) x cols
 * [p0, p0+kc) of op(A): Ap[panel][k][MR], zero-padded, scaled by alpha. */
static void pack_a(float *Ap, const float *A, int64_t lda, int ta, int64_t m, int64_t i0, int64_t i1,
                   int64_t p0, int64_t kc, float alpha) {
    for (int64_t p = i0; p < i1; p++) {
        float *dst = Ap + (p - i0) * kc * MR;
        int64_t r0 = p * MR;
        if (!ta && r0 + MR <= m) {
            for (int r = 0; r < MR; r++) {
                const float *src = A + (r0 + r) * lda + p0;
                for (int64_t k = 0; k < kc; k++) dst[k * MR + r] = alpha * src[k];
            }
        } else {
            for (int64_t k = 0; k < kc; k++)
                for (int r = 0; r < MR; r++)
                    dst[k * MR + r] = r0 + r < m ? alpha * OPX(A, ta, lda, r0 + r, p0 + k) : 0.0f;
        }
    }
}

#if CPU_VW == 16
/* In-register transpose of a 16 x 16 float tile: r[q] becomes column q. */
static inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
}
#endif

/* Pack B panels [j0, j1) (cols [j0*NR, j1*NR) clipped to n) x rows
 * [p0, p0+kc) of op(B): Bp[panel][k][NR], zero-padded. */
static void pack_b(float *Bp, const float *B, int64_t ldb, int tb, int64_t n, int64_t j0, int64_t j1,
                   int64_t p0, int64_t kc) {
    for (int64_t p = j0; p < j1; p++) {
        float *dst = Bp + (p - j0) * kc * NR;
        int64_t c0 = p * NR, w = n - c0 < NR ? n - c0 : NR;
        if (!tb && w == NR) {
            for (int64_t k = 0; k < kc; k++)
                memcpy(dst + k * NR, B + (p0 + k) * ldb + c0, NR * sizeof(float));
        } else if (tb) { /* B is [N, K]: a transpose, 16 x 16 tiles in registers */
            int64_t kt = 0;
#if CPU_VW == 16
            if (w == NR)
                for (; kt + 16 <= kc; kt += 16)
                    for (int h = 0; h < NR; h += 16) {
                        __m512 r[16];
                        for (int l = 0; l < 16; l++) r[l] = _mm512_loadu_ps(B + (c0 + h + l) * ldb + p0 + kt);
                        transpose16(r);
                        for (int q = 0; q < 16; q++) _mm512_storeu_ps(dst + (kt + q) * NR + h, r[q]);
                    }
#endif
            for (int c = 0; c < NR; c++) { /* the rest: edge panels, a kc tail */
                if (c < w) {
                    const float *src = B + (c0 + c) * ldb + p0;
                    for (int64_t k = kt; k < kc; k++) dst[k * NR + c] = src[k];
                } else {
                    for (int64_t k = kt; k < kc; k++) dst[k * NR + c] = 0.0f;
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
        cpu_vf acc[ROWS][2];                                                                       \
        for (int i = 0; i < ROWS; i++) acc[i][0] = acc[i][1] = vbcast(0.0f);                       \
        for (int64_t k = 0; k < kc; k++) {                                                         \
            cpu_vf b0 = *(const cpu_vf *)(b + k * NR);                                             \
            cpu_vf b1 = *(const cpu_vf *)(b + k * NR + CPU_VW);                                    \
            const float *ak = a + k * MR;                                                          \
            for (int i = 0; i < ROWS; i++) {                                                       \
                cpu_vf ai = vbcast(ak[i]);                                                         \
                acc[i][0] = cpu_vfma(ai, b0, acc[i][0]);                                           \
                acc[i][1] = cpu_vfma(ai, b1, acc[i][1]);                                           \
            }                                                                                      \
        }                                                                                          \
        if (nr == NR) {                                                                            \
            for (int i = 0; i < ROWS; i++) {                                                       \
                float *ci = c + i * ldc;                                                           \
                cpu_vstore(ci, cpu_vload(ci) + acc[i][0]);                                         \
                cpu_vstore(ci + CPU_VW, cpu_vload(ci + CPU_VW) + acc[i][1]);                       \
            }                                                                                      \
        } else {                                                                                   \
            float tile[ROWS][NR] __attribute__((aligned(64)));                                     \
            for (int i = 0; i < ROWS; i++) {                                                       \
                *(cpu_vf *)&tile[i][0] = acc[i][0];                                                \
                *(cpu_vf *)&tile[i][CPU_VW] = acc[i][1];                                           \
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

/* Scratch for packing, one per thread, grown as needed and reused across
 * calls (the only allocation here). A thread's scratch is freed when the
 * thread exits (OpenMP drops workers when the team shrinks), through a
 * pthread key destructor; the live threads' buffers stay reachable through
 * their thread-local pointers until the process ends. */
static _Thread_local float *scratch;
static _Thread_local size_t scratch_n;
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_key_init(void) {
    if (pthread_key_create(&scratch_key, free) != 0) base_die("pthread_key_create failed");
}

static float *get_scratch(size_t n) {
    if (n > scratch_n) {
        pthread_once(&scratch_once, scratch_key_init);
        free(scratch);
        scratch = base_xmalloc_aligned(n * sizeof(float));
        scratch_n = n;
        if (pthread_setspecific(scratch_key, scratch) != 0) base_die("pthread_setspecific failed");
    }
    return scratch;
}

typedef struct {
    int64_t m, n, k;
    const float *A, *B;
    float *C;
    int64_t lda, ldb, ldc;
    int ta, tb;
    float alpha, beta;
    const tensor *bq; /* B stored as BF16 / F8 (B is then NULL): widened panel by panel */
    int64_t bq_off;   /* element offset of this batch's B from bq->data */
} gemm_args;

/* A second per-thread buffer: one B panel widened to f32 before packing. */
static _Thread_local float *widen_buf;
static _Thread_local size_t widen_n;
static pthread_key_t widen_key;
static pthread_once_t widen_once = PTHREAD_ONCE_INIT;

static void widen_key_init(void) {
    if (pthread_key_create(&widen_key, free) != 0) base_die("pthread_key_create failed");
}

static float *get_widen(size_t n) {
    if (n > widen_n) {
        pthread_once(&widen_once, widen_key_init);
        free(widen_buf);
        widen_buf = base_xmalloc_aligned(n * sizeof(float));
        widen_n = n;
        if (pthread_setspecific(widen_key, widen_buf) != 0) base_die("pthread_setspecific failed");
    }
    return widen_buf;
}

/* pack_b for B panels [j0, j1) of either an f32 B or a stored (BF16 / F8)
 * one: a stored panel is widened into f32 (its NR columns of op(B) over
 * the kc rows) and packed from there, the same packed values as from an
 * f32 copy. */
static void pack_b_any(float *Bp, const gemm_args *g, int64_t j0, int64_t j1, int64_t p0, int64_t kc) {
    if (!g->bq) {
        pack_b(Bp, g->B, g->ldb, g->tb, g->n, j0, j1, p0, kc);
        return;
    }
    float *t = get_widen((size_t)(NR * kc));
    for (int64_t p = j0; p < j1; p++) {
        int64_t c0 = p * NR, w = g->n - c0 < NR ? g->n - c0 : NR;
        if (g->tb) { /* B [N, K]: w rows of kc */
            for (int64_t c = 0; c < w; c++) tensor_widen(t + c * kc, g->bq, g->bq_off + (c0 + c) * g->ldb + p0, kc);
            pack_b(Bp + (p - j0) * kc * NR, t, kc, 1, w, 0, 1, 0, kc);
        } else { /* B [K, N]: kc rows of w */
            for (int64_t k = 0; k < kc; k++) tensor_widen(t + k * w, g->bq, g->bq_off + (p0 + k) * g->ldb + c0, w);
            pack_b(Bp + (p - j0) * kc * NR, t, w, 0, w, 0, 1, 0, kc);
        }
    }
}

/* One thread's share of C: the tiles of B panels [jp0, jp1) x A panels
 * [ip0, ip1), over all of k. The thread applies beta to its own part, packs
 * the B and A panels it needs into its own scratch, and meets no other
 * thread until the end: no barrier inside, so a descheduled thread delays
 * only itself. Each tile sums pc blocks in ascending order and k within a
 * block in ascending order whichever thread owns it: determinism. */
static void gemm_part(const gemm_args *g, int64_t jp0, int64_t jp1, int64_t ip0, int64_t ip1) {
    if (jp0 >= jp1 || ip0 >= ip1) return;
    int64_t r0 = ip0 * MR, r1 = ip1 * MR < g->m ? ip1 * MR : g->m;
    int64_t c0 = jp0 * NR, c1 = jp1 * NR < g->n ? jp1 * NR : g->n;
    for (int64_t i = r0; i < r1; i++) { /* C = beta * C; beta = 0 overwrites (NaN in C ignored) */
        float *ci = g->C + i * g->ldc;
        if (g->beta == 0.0f) memset(ci + c0, 0, (size_t)(c1 - c0) * sizeof(float));
        else if (g->beta != 1.0f)
            for (int64_t j = c0; j < c1; j++) ci[j] *= g->beta;
    }
    if (g->k == 0 || g->alpha == 0.0f) return;
    int64_t kcmax = g->k < KC ? g->k : KC;
    int64_t jpn = jp1 - jp0 < NCP ? jp1 - jp0 : NCP;
    size_t a_sz = ((size_t)(MCP * MR * kcmax) + 15) & ~(size_t)15; /* keep Bp 64-byte aligned */
    float *Ap = get_scratch(a_sz + (size_t)(jpn * NR * kcmax));
    float *Bp = Ap + a_sz;
    if (ip1 - ip0 <= MCP) {
        /* one A block (small M: decode, short prompts): pack A once per k
         * block, then each B panel just before its micro-kernels, so B is
         * read from memory once and its packed copy stays in L1 (B packed
         * whole would be written out and read back: 3 passes over the
         * weight instead of 1). Same packed values, same kernel calls:
         * the same numerics as the path below. */
        for (int64_t pc = 0; pc < g->k; pc += KC) {
            int64_t kc = g->k - pc < KC ? g->k - pc : KC;
            pack_a(Ap, g->A, g->lda, g->ta, g->m, ip0, ip1, pc, kc, g->alpha);
            for (int64_t jp = jp0; jp < jp1; jp++) {
                int nr = (int)(g->n - jp * NR < NR ? g->n - jp * NR : NR);
                pack_b_any(Bp, g, jp, jp + 1, pc, kc);
                for (int64_t ip = ip0; ip < ip1; ip++) {
                    int mr = (int)(g->m - ip * MR < MR ? g->m - ip * MR : MR);
                    micro_kernel(kc, Ap + (ip - ip0) * kc * MR, Bp, g->C + ip * MR * g->ldc + jp * NR,
                                 g->ldc, mr, nr);
                }
            }
        }
        return;
    }
    for (int64_t jc = jp0; jc < jp1; jc += NCP) {
        int64_t je = jc + NCP < jp1 ? jc + NCP : jp1;
        for (int64_t pc = 0; pc < g->k; pc += KC) {
            int64_t kc = g->k - pc < KC ? g->k - pc : KC;
            pack_b_any(Bp, g, jc, je, pc, kc);
            for (int64_t ic = ip0; ic < ip1; ic += MCP) {
                int64_t ie = ic + MCP < ip1 ? ic + MCP : ip1;
                pack_a(Ap, g->A, g->lda, g->ta, g->m, ic, ie, pc, kc, g->alpha);
                for (int64_t jp = jc; jp < je; jp++)
                    for (int64_t ip = ic; ip < ie; ip++) {
                        int mr = (int)(g->m - ip * MR < MR ? g->m - ip * MR : MR);
                        int nr = (int)(g->n - jp * NR < NR ? g->n - jp * NR : NR);
                        micro_kernel(kc, Ap + (ip - ic) * kc * MR, Bp + (jp - jc) * kc * NR,
                                     g->C + ip * MR * g->ldc + jp * NR, g->ldc, mr, nr);
                    }
            }
        }
    }
}

static void gemm(int64_t m, int64_t n, int64_t k, const float *A, int64_t lda, int ta, const float *B,
                 int64_t ldb, int tb, float *C, int64_t ldc, float alpha, float beta, const tensor *bq,
                 int64_t bq_off) {
    gemm_args g = {m, n, k, A, B, C, lda, ldb, ldc, ta, tb, alpha, beta, bq, bq_off};
    int64_t mp = (m + MR - 1) / MR, np = (n + NR - 1) / NR;
    int par = 2.0 * (double)m * (double)n * (double)k >= PAR_MIN_FLOP;
#pragma omp parallel if (par)
    {
        int64_t T = 1, t = 0;
#ifdef _OPENMP
        T = omp_get_num_threads();
        t = omp_get_thread_num();
#endif
        /* split the dimension that divides more evenly among T threads (N
         * on ties: the threads then share reads of A, the smaller block) */
        double effn = (double)np / (double)(T * ((np + T - 1) / T));
        double effm = (double)mp / (double)(T * ((mp + T - 1) / T));
        if (effn >= effm) gemm_part(&g, np * t / T, np * (t + 1) / T, 0, mp);
        else gemm_part(&g, 0, np, mp * t / T, mp * (t + 1) / T);
    }
}

void cpu_matmul(tensor *c, const tensor *a, const tensor *b, int trans_a, int trans_b, float alpha,
                float beta) {
    int stored = b->dtype == TENSOR_BF16 || b->dtype == TENSOR_F8_E4M3;
    if (a->dtype != TENSOR_F32 || (b->dtype != TENSOR_F32 && !stored) || c->dtype != TENSOR_F32)
        base_die("cpu matmul: float32 operands (B may be a stored BF16 or F8_E4M3 weight; got %s, %s -> %s)",
                 tensor_dtype_name(a->dtype), tensor_dtype_name(b->dtype), tensor_dtype_name(c->dtype));
    ops_matmul_dims d = ops_matmul_resolve(c, a, b, trans_a, trans_b);
    for (int64_t bt = 0; bt < d.batch; bt++) {
        const float *A = (const float *)a->data + bt * d.a_bstride;
        const float *B = stored ? NULL : (const float *)b->data + bt * d.b_bstride;
        float *C = (float *)c->data + bt * d.c_bstride;
        gemm(d.m, d.n, d.k, A, d.lda, trans_a, B, d.ldb, trans_b, C, d.ldc, alpha, beta, stored ? b : NULL,
             bt * d.b_bstride);
    }
}

/* Plain triple loop in double: the oracle for tests. */
void cpu_matmul_naive(tensor *c, const tensor *a, const tensor *b, int trans_a, int trans_b,
                      float alpha, float beta) {
    ops_matmul_dims d = ops_matmul_resolve(c, a, b, trans_a, trans_b);
    for (int64_t bt = 0; bt < d.batch; bt++) {
        const float *A = (const float *)a->data + bt * d.a_bstride;
        float *C = (float *)c->data + bt * d.c_bstride;
        for (int64_t i = 0; i < d.m; i++)
            for (int64_t j = 0; j < d.n; j++) {
                double s = 0;
                for (int64_t p = 0; p < d.k; p++) {
                    int64_t bo = bt * d.b_bstride + (trans_b ? j * d.ldb + p : p * d.ldb + j);
                    float bv;
                    if (b->dtype == TENSOR_F32) bv = ((const float *)b->data)[bo];
                    else tensor_widen(&bv, b, bo, 1);
                    s += (double)OPX(A, trans_a, d.lda, i, p) * bv;
                }
                float old = beta == 0.0f ? 0.0f : beta * C[i * d.ldc + j];
                C[i * d.ldc + j] = (float)(alpha * s) + old;
            }
    }
}
