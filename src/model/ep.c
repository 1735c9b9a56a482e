/*
 * Expert parallelism (issue 15; docs/model.md "Expert parallelism"): the
 * routed experts' dispatch and combine through the caller's exchange
 * functions (model.h model_ep). Every rank routes its own tokens and sorts
 * the (token, choice) rows by GLOBAL expert (moe_plan); the experts being
 * contiguous per rank, the rows for EP peer p are one contiguous block.
 *
 * Forward of one MoE layer, per rank:
 *   1. counts: to every peer its rows per local expert of that peer, and
 *      this rank's capacity per source (alltoall_counts, el + 1 each);
 *   2. rows: xe's blocks to their owners (alltoallv); received in the
 *      order (source rank, expert, source order), gathered (perm) into
 *      (expert, source rank, source order) for the grouped GEMMs over the
 *      local experts (local offsets [el + 1]);
 *   3. results: gathered back to the received order (iperm) and returned
 *      (alltoallv), landing in ye in the source's own expert-sorted order;
 *      the combine is then the single-rank code, in the fixed slot order.
 * Backward: the row gradients dye travel the same way, the expert-side
 * backward runs over the received rows (weight gradients of the local
 * experts accumulate locally), and dxe comes back.
 *
 * A rank with no rows of its own in a pass (fewer micro-batches than its
 * peers: model_train_join_forward / _backward; a finished rollout's
 * decode step) makes the same exchanges with zero rows of its own
 * (ep_join_fwd, ep_join_bwd): it serves the rows its peers send to its
 * experts and sends none.
 *
 * A pair of ranks whose rows exceed the receiver's planned capacity (the
 * pass's token limit times min(K, el): different limits on two ranks)
 * exchanges nothing (both sides see the same counts) and the pass fails
 * with an error naming both ranks: no rank waits for rows that never come.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/internal.h"

int64_t ep_cap(const model *m, int64_t n) {
    int64_t K = m->cfg.num_experts_per_tok, el = m->el;
    return n * (K < el ? K : el);
}

void ep_plan_acts(planner *p, layer_acts *A, int64_t n) {
    const model *m = p->m;
    if (!m->has_ep) return;
    const model_config *c = &m->cfg;
    int64_t P = m->ep.size, el = m->el, d = c->hidden_size, ie = c->moe_intermediate_size;
    int64_t R = P * ep_cap(m, n);
    if (R < 1) R = 1;
    tensor_dtype cd = model_cdt(m);
    A->ep_cnt = plan_t(p, TENSOR_I32, 1, 2 * P * (el + 1), 1, 1);
    A->ep_loff = plan_t(p, TENSOR_I32, 1, el + 1, 1, 1);
    A->ep_perm = plan_t(p, TENSOR_I32, 1, R, 1, 1);
    A->ep_iperm = plan_t(p, TENSOR_I32, 1, R, 1, 1);
    A->ep_buf = plan_t(p, TENSOR_F32, 2, R, d, 1);
    A->xr = plan_t(p, cd, 2, R, d, 1);
    A->gur = plan_t(p, TENSOR_F32, 2, R, 2 * ie, 1);
    A->actr = plan_t(p, cd, 2, R, ie, 1);
    A->yr = plan_t(p, TENSOR_F32, 2, R, d, 1);
    A->ep_cap = ep_cap(m, n);
}

void ep_host_init(ep_host *h, const model *m, int64_t n) {
    memset(h, 0, sizeof *h);
    if (!m->has_ep) return;
    int64_t P = m->ep.size, el = m->el, R = P * ep_cap(m, n);
    h->cnt = base_xmalloc((size_t)(2 * P * (el + 1)) * sizeof(int64_t));
    h->ci = base_xmalloc((size_t)(2 * P * (el + 1)) * sizeof(int32_t));
    h->bs = base_xmalloc((size_t)(2 * P) * sizeof(int64_t));
    h->off = base_xmalloc((size_t)(m->cfg.n_routed_experts + 1) * sizeof(int32_t));
    h->perm = base_xmalloc((size_t)(2 * (R > 0 ? R : 1) + el + 1) * sizeof(int32_t));
}

void ep_host_free(ep_host *h) {
    free(h->cnt), free(h->ci), free(h->bs), free(h->off), free(h->perm);
    memset(h, 0, sizeof *h);
}

static void ep_fail(ep_host *h, base_status st) {
    if (st && !h->err) {
        h->err = st;
        snprintf(h->msg, sizeof h->msg, "%s", base_err_msg());
    }
}

/* Byte counts of the last exchange of A: per peer rows sent (bs[p]) and
 * received (bs[P + p]) times `row` bytes, from A->ep_cnt. */
static void byte_counts(const model *m, const layer_acts *A, ep_host *h, size_t row) {
    int64_t P = m->ep.size, el = m->el;
    m->ops->download(h->ci, A->ep_cnt.data, (size_t)(2 * P * (el + 1)) * sizeof(int32_t));
    for (int64_t p = 0; p < P; p++) {
        int64_t s = 0, r = 0;
        for (int64_t i = 0; i < el; i++) {
            s += h->ci[p * (el + 1) + i];
            r += h->ci[P * (el + 1) + p * (el + 1) + i];
        }
        h->bs[p] = s * (int64_t)row;
        h->bs[P + p] = r * (int64_t)row;
    }
}

/* Steps 1-2 of the forward: counts, plan, rows in; returns the rows
 * received (the local experts' batch). */
static int64_t dispatch(const model *m, layer_acts *A, ep_host *h, const tensor *xe) {
    const struct ops *o = m->ops;
    int64_t P = m->ep.size, el = m->el, E = m->cfg.n_routed_experts, d = m->cfg.hidden_size;
    int64_t me = m->ep.rank, cap = A->ep_cap;
    o->download(h->off, A->offsets.data, (size_t)(E + 1) * sizeof(int32_t));
    int64_t *snd = h->cnt, *rcv = h->cnt + P * (el + 1);
    for (int64_t p = 0; p < P; p++) {
        for (int64_t i = 0; i < el; i++) snd[p * (el + 1) + i] = h->off[p * el + i + 1] - h->off[p * el + i];
        snd[p * (el + 1) + el] = cap;
    }
    ep_fail(h, m->ep.alltoall_counts(m->ep.ctx, snd, rcv, (int)(el + 1)));
    if (h->err) memset(rcv, 0, (size_t)(P * (el + 1)) * sizeof(int64_t));
    /* pairwise capacity: both sides of a pair see the same count and cap */
    for (int64_t p = 0; p < P; p++) {
        int64_t s = 0, r = 0;
        for (int64_t i = 0; i < el; i++) s += snd[p * (el + 1) + i], r += rcv[p * (el + 1) + i];
        if (s > rcv[p * (el + 1) + el] || r > cap) {
            ep_fail(h, base_err_set(BASE_ERR_LIMIT,
                                    "expert parallel: %lld rows between EP ranks %lld and %lld exceed the planned "
                                    "%lld per source (every rank of the group must use the same token limits)",
                                    (long long)(s > rcv[p * (el + 1) + el] ? s : r), (long long)me, (long long)p,
                                    (long long)(s > rcv[p * (el + 1) + el] ? rcv[p * (el + 1) + el] : cap)));
            for (int64_t i = 0; i < el; i++) snd[p * (el + 1) + i] = rcv[p * (el + 1) + i] = 0;
        }
    }
    for (int64_t k = 0; k < 2 * P * (el + 1); k++) h->ci[k] = (int32_t)h->cnt[k];
    o->upload(A->ep_cnt.data, h->ci, (size_t)(2 * P * (el + 1)) * sizeof(int32_t));
    /* received order (p, i, r) -> local order (i, p, r) */
    int64_t R = 0;
    for (int64_t k = 0; k < P * (el + 1); k++)
        if (k % (el + 1) != el) R += rcv[k];
    int32_t *perm = h->perm, *iperm = h->perm + (R > 0 ? R : 1), *loff = iperm + (R > 0 ? R : 1);
    int64_t at = 0;
    for (int64_t i = 0; i < el; i++) {
        loff[i] = (int32_t)at;
        for (int64_t p = 0; p < P; p++) {
            int64_t start = 0; /* the block of (p, i) in the received order */
            for (int64_t q = 0; q < p; q++)
                for (int64_t j = 0; j < el; j++) start += rcv[q * (el + 1) + j];
            for (int64_t j = 0; j < i; j++) start += rcv[p * (el + 1) + j];
            for (int64_t r = 0; r < rcv[p * (el + 1) + i]; r++, at++) {
                perm[at] = (int32_t)(start + r);
                iperm[start + r] = (int32_t)at;
            }
        }
    }
    loff[el] = (int32_t)at;
    o->upload(A->ep_loff.data, loff, (size_t)(el + 1) * sizeof(int32_t));
    if (R > 0) {
        o->upload(A->ep_perm.data, perm, (size_t)R * sizeof(int32_t));
        o->upload(A->ep_iperm.data, iperm, (size_t)R * sizeof(int32_t));
    }
    size_t row = (size_t)d * tensor_dtype_size(xe->dtype);
    byte_counts(m, A, h, row);
    ep_fail(h, m->ep.alltoallv(m->ep.ctx, xe->data, h->bs, A->ep_buf.data, h->bs + P));
    return R;
}

void ep_routed_fwd(const model *m, int l, layer_acts *A, const tensor *xe, tensor *ye) {
    const struct ops *o = m->ops;
    const model_layer_w *wc = &m->wc.layers[l];
    ep_host *h = A->eh;
    int64_t P = m->ep.size, d = m->cfg.hidden_size, ie = m->cfg.moe_intermediate_size;
    int64_t R = dispatch(m, A, h, xe);
    if (R > 0) {
        tensor raw = tensor_make(A->ep_buf.data, xe->dtype, o->device, 2, (int64_t[]){R, d});
        tensor xr = mv_rows(&A->xr, R), gur = mv_rows(&A->gur, R), actr = mv_rows(&A->actr, R);
        tensor yr = mv_rows(&A->yr, R), perm = mv_rows(&A->ep_perm, R), iperm = mv_rows(&A->ep_iperm, R);
        o->gather_rows(&xr, &raw, &perm);
        o->moe_matmul(&gur, &xr, &wc->e_gu, &A->ep_loff, 1, 1.0f, 0.0f);
        o->swiglu_fwd(&actr, &gur);
        o->moe_matmul(&yr, &actr, &wc->e_down, &A->ep_loff, 1, 1.0f, 0.0f);
        tensor back = mv_rows(&A->ep_buf, R);
        o->gather_rows(&back, &yr, &iperm);
    }
    (void)ie;
    /* results back: the reverse of the rows' exchange (f32 rows) */
    byte_counts(m, A, h, (size_t)d * sizeof(float));
    ep_fail(h, m->ep.alltoallv(m->ep.ctx, A->ep_buf.data, h->bs + P, ye->data, h->bs));
}

void ep_join_fwd(const model *m, int l, layer_acts *A, const int32_t *zeros) {
    /* no rows of its own: every expert's offset 0, the peers' rows served */
    m->ops->upload(A->offsets.data, zeros, (size_t)(m->cfg.n_routed_experts + 1) * sizeof(int32_t));
    tensor xe = mv_rows(&A->xe, 0), ye = mv_rows(&A->ye, 0);
    ep_routed_fwd(m, l, A, &xe, &ye);
}

void ep_join_bwd(const model *m, int l, const layer_acts *A, bwd_scratch *b, float *grads, ep_grad_fn fn) {
    /* zero rows of dL/dy in the compute dtype (the row size the peers send) */
    tensor dyec = tensor_make(b->dye.data, model_cdt(m), m->ops->device, 2, (int64_t[]){0, m->cfg.hidden_size});
    tensor dxe = mv_rows(&b->dxe, 0);
    ep_routed_bwd(m, l, A, b, grads, &dyec, &dxe, fn);
}

void ep_routed_bwd(const model *m, int l, const layer_acts *A, bwd_scratch *b, float *grads, const tensor *dyec,
                   tensor *dxe, ep_grad_fn fn) {
    const struct ops *o = m->ops;
    ep_host *h = A->eh;
    int64_t P = m->ep.size, d = m->cfg.hidden_size;
    /* the row gradients to the experts' owners (the forward's counts) */
    byte_counts(m, A, h, (size_t)d * tensor_dtype_size(dyec->dtype));
    ep_fail(h, m->ep.alltoallv(m->ep.ctx, dyec->data, h->bs, A->ep_buf.data, h->bs + P));
    int64_t R = 0;
    for (int64_t p = 0; p < P; p++) R += h->bs[P + p];
    R /= d * (int64_t)tensor_dtype_size(dyec->dtype);
    if (R > 0) {
        tensor raw = tensor_make(A->ep_buf.data, dyec->dtype, o->device, 2, (int64_t[]){R, d});
        tensor dyr = tensor_make(b->ep_dy.data, dyec->dtype, o->device, 2, (int64_t[]){R, d});
        tensor perm = mv_rows(&A->ep_perm, R), iperm = mv_rows(&A->ep_iperm, R);
        o->gather_rows(&dyr, &raw, &perm);
        tensor dxr = mv_rows(&b->ep_dx, R);
        fn(m, l, A, b, grads, R, &A->xr, &A->gur, &A->actr, &A->ep_loff, &dyr, &dxr);
        tensor back = mv_rows(&A->ep_buf, R);
        o->gather_rows(&back, &dxr, &iperm);
    }
    byte_counts(m, A, h, (size_t)d * sizeof(float));
    ep_fail(h, m->ep.alltoallv(m->ep.ctx, A->ep_buf.data, h->bs + P, dxe->data, h->bs));
    if (h->err) base_die("backward: %s", h->msg);
}
