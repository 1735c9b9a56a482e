/*
 * CPU ops: RMSNorm (spec §3.1, §3.11), embedding lookup and row gather.
 * Row work is split over OpenMP threads by rows; reductions over rows (dw,
 * dtable) are split by column blocks, so every sum runs in one fixed order
 * whatever the thread count. dw's column sums run in double (rounded once
 * into dw), so another backend that sums the rows in another order agrees
 * to the last bit but for rare double-rounding ties.
 */
#include "cpu.h"

#include <math.h>
#include <string.h>

#define COL_BLOCK 256

void cpu_gather_rows(tensor *dst, const tensor *src, const tensor *idx) {
    ops_check_gather_rows("cpu", dst, src, idx);
    int64_t m = dst->shape[0], d = dst->shape[1], n = src->shape[0];
    const int32_t *ix = cpu_i32(idx);
    for (int64_t r = 0; r < m; r++)
        if (ix[r] < 0 || ix[r] >= n) base_die("gather_rows: idx[%lld] = %d outside [0, %lld)", (long long)r, ix[r], (long long)n);
#pragma omp parallel for schedule(static) if (m * d > 65536)
    for (int64_t r = 0; r < m; r++) memcpy(cpu_row(dst, r), cpu_row(src, ix[r]), (size_t)d * sizeof(float));
}

void cpu_rmsnorm_fwd(tensor *y, tensor *rstd, const tensor *x, const tensor *w, float eps) {
    ops_check_rmsnorm_fwd("cpu", y, rstd, x, w);
    int64_t n = x->shape[0], d = x->shape[1];
    const float *W = w->data;
#pragma omp parallel for schedule(static) if (n * d > 32768)
    for (int64_t i = 0; i < n; i++) {
        const float *xi = cpu_row(x, i);
        float *yi = cpu_row(y, i);
        double ss = 0;
        for (int64_t j = 0; j < d; j++) ss += (double)xi[j] * xi[j];
        float r = (float)(1.0 / sqrt(ss / (double)d + (double)eps));
        for (int64_t j = 0; j < d; j++) yi[j] = W[j] * (xi[j] * r);
        if (rstd) ((float *)rstd->data)[i] = r;
    }
}

void cpu_rmsnorm_bwd(tensor *dx, tensor *dw, const tensor *dy, const tensor *x, const tensor *w,
                     const tensor *rstd, int accumulate_dx) {
    ops_check_rmsnorm_bwd("cpu", dx, dw, dy, x, w, rstd);
    int64_t n = x->shape[0], d = x->shape[1];
    const float *W = w->data, *R = rstd->data;
    if (dw) {
        float *DW = dw->data;
        int64_t nb = (d + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) if (n * d > 32768)
        for (int64_t b = 0; b < nb; b++) {
            int64_t j0 = b * COL_BLOCK, j1 = j0 + COL_BLOCK < d ? j0 + COL_BLOCK : d;
            /* the column sums in double, added to dw once: a sum over many
             * rows that nearly cancels dw's old value keeps its digits */
            double acc[COL_BLOCK] = {0};
            for (int64_t i = 0; i < n; i++) {
                const float *xi = cpu_row(x, i), *gi = cpu_row(dy, i);
                float r = R[i];
                for (int64_t j = j0; j < j1; j++) acc[j - j0] += (double)(gi[j] * xi[j] * r);
            }
            for (int64_t j = j0; j < j1; j++) DW[j] = (float)((double)DW[j] + acc[j - j0]);
        }
    }
    /* dx may alias neither x nor dy when accumulating; rows are independent */
#pragma omp parallel for schedule(static) if (n * d > 32768)
    for (int64_t i = 0; i < n; i++) {
        const float *xi = cpu_row(x, i), *gi = cpu_row(dy, i);
        float *di = cpu_row(dx, i);
        double dot = 0;
        for (int64_t j = 0; j < d; j++) dot += (double)gi[j] * W[j] * xi[j];
        float r = R[i];
        float c = (float)(dot / (double)d) * r * r * r;
        if (accumulate_dx)
            for (int64_t j = 0; j < d; j++) di[j] += r * gi[j] * W[j] - xi[j] * c;
        else
            for (int64_t j = 0; j < d; j++) di[j] = r * gi[j] * W[j] - xi[j] * c;
    }
}

void cpu_embedding_fwd(tensor *y, const tensor *table, const tensor *ids) {
    ops_check_embedding_fwd("cpu", y, table, ids);
    if (table->dtype == TENSOR_F32) {
        cpu_gather_rows(y, table, ids);
        return;
    }
    /* a stored BF16 table (a frozen model): rows widened into f32 */
    int64_t m = y->shape[0], d = y->shape[1], n = table->shape[0];
    const int32_t *ix = cpu_i32(ids);
    for (int64_t r = 0; r < m; r++)
        if (ix[r] < 0 || ix[r] >= n) base_die("gather_rows: idx[%lld] = %d outside [0, %lld)", (long long)r, ix[r], (long long)n);
#pragma omp parallel for schedule(static) if (m * d > 65536)
    for (int64_t r = 0; r < m; r++) tensor_widen(cpu_row(y, r), table, ix[r] * table->stride[0], d);
}

void cpu_embedding_bwd(tensor *dtable, const tensor *dy, const tensor *ids) {
    ops_check_embedding_bwd("cpu", dtable, dy, ids);
    int64_t n = dy->shape[0], d = dy->shape[1], v = dtable->shape[0];
    const int32_t *ix = cpu_i32(ids);
    for (int64_t i = 0; i < n; i++)
        if (ix[i] < 0 || ix[i] >= v) base_die("embedding_bwd: ids[%lld] = %d outside [0, %lld)", (long long)i, ix[i], (long long)v);
    int64_t nb = (d + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) if (n * d > 32768)
    for (int64_t b = 0; b < nb; b++) {
        int64_t j0 = b * COL_BLOCK, j1 = j0 + COL_BLOCK < d ? j0 + COL_BLOCK : d;
        for (int64_t i = 0; i < n; i++) {
            float *t = cpu_row(dtable, ix[i]);
            const float *g = cpu_row(dy, i);
            for (int64_t j = j0; j < j1; j++) t[j] += g[j];
        }
    }
}
