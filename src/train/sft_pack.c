/*
 * sft_pack: best-fit-decreasing packing of samples into rows of row_len
 * tokens (TRL pack_dataset(strategy="bfd"): truncate overflow, drop empty
 * samples), and the materialisation of one packed row with position ids,
 * segment ids and next-token targets that never cross a segment.
 *
 * The best fit is found in O(log row_len): a segment tree over free-space
 * values counts the open rows having each free space, and a FIFO queue per
 * free space gives the row that reached it first (TRL's deque).
 */
#include "sft.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t len, idx;
} item;

static int item_cmp(const void *a, const void *b) {
    const item *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

/* Counts per free-space value 0..size-1 (size a power of two). */
typedef struct {
    int64_t size;
    int64_t *cnt; /* [2 * size], node 1 the root */
} space_tree;

static void tree_add(space_tree *t, int64_t s, int64_t d) {
    for (int64_t i = s + t->size; i >= 1; i >>= 1) t->cnt[i] += d;
}

/* Smallest s >= lo with a count, or -1. */
static int64_t tree_first_from(const space_tree *t, int64_t node, int64_t nlo, int64_t nhi,
                               int64_t lo) {
    if (nhi < lo || t->cnt[node] == 0) return -1;
    if (nlo == nhi) return nlo;
    int64_t mid = (nlo + nhi) / 2;
    int64_t r = tree_first_from(t, 2 * node, nlo, mid, lo);
    return r >= 0 ? r : tree_first_from(t, 2 * node + 1, mid + 1, nhi, lo);
}

base_status sft_pack_plan(const int64_t *lens, int64_t n, int64_t row_len, sft_pack *out) {
    memset(out, 0, sizeof *out);
    if (row_len < 1)
        return base_err_set(BASE_ERR_INVALID, "sft packing: row length %lld (expected >= 1)",
                            (long long)row_len);
    for (int64_t i = 0; i < n; i++)
        if (lens[i] < 0)
            return base_err_set(BASE_ERR_INVALID, "sft packing: sample %lld has length %lld",
                                (long long)i, (long long)lens[i]);
    item *items = base_xmalloc((size_t)(n > 0 ? n : 1) * sizeof *items);
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (lens[i] == 0) {
            out->n_empty++;
            continue;
        }
        if (lens[i] > row_len) out->n_truncated++;
        items[m].len = lens[i] > row_len ? row_len : lens[i];
        items[m].idx = i;
        m++;
    }
    qsort(items, (size_t)m, sizeof *items, item_cmp);

    space_tree tr = {1, NULL};
    while (tr.size < row_len + 1) tr.size <<= 1;
    tr.cnt = base_xcalloc((size_t)(2 * tr.size), sizeof(int64_t));
    int64_t *head = base_xmalloc((size_t)(row_len + 1) * sizeof(int64_t));
    int64_t *tail = base_xmalloc((size_t)(row_len + 1) * sizeof(int64_t));
    for (int64_t s = 0; s <= row_len; s++) head[s] = tail[s] = -1;
    int64_t *next = base_xmalloc((size_t)(m > 0 ? m : 1) * sizeof(int64_t)); /* per row */
    int64_t *used = base_xcalloc((size_t)(m > 0 ? m : 1), sizeof(int64_t));
    int64_t *row_of = base_xmalloc((size_t)(m > 0 ? m : 1) * sizeof(int64_t)); /* per item */
    int64_t n_rows = 0;
    for (int64_t k = 0; k < m; k++) {
        int64_t len = items[k].len;
        int64_t s = tree_first_from(&tr, 1, 0, tr.size - 1, len), r;
        if (s >= 0) { /* pop the oldest row with exactly s free */
            r = head[s];
            head[s] = next[r];
            if (head[s] < 0) tail[s] = -1;
            tree_add(&tr, s, -1);
        } else {
            r = n_rows++;
        }
        used[r] += len;
        row_of[k] = r;
        int64_t free_after = row_len - used[r];
        if (free_after > 0) { /* a full row is never a candidate again */
            next[r] = -1;
            if (tail[free_after] >= 0) next[tail[free_after]] = r;
            else head[free_after] = r;
            tail[free_after] = r;
            tree_add(&tr, free_after, 1);
        }
    }
    /* group items by row, in placement order */
    out->row_len = row_len;
    out->n_rows = n_rows;
    out->n_segments = m;
    out->seg = base_xmalloc((size_t)(m > 0 ? m : 1) * sizeof(sft_segment));
    out->row_first = base_xcalloc((size_t)n_rows + 1, sizeof(int64_t));
    out->row_used = base_xmalloc((size_t)(n_rows > 0 ? n_rows : 1) * sizeof(int64_t));
    for (int64_t k = 0; k < m; k++) out->row_first[row_of[k] + 1]++;
    for (int64_t r = 0; r < n_rows; r++) {
        out->row_first[r + 1] += out->row_first[r];
        out->row_used[r] = 0;
    }
    int64_t *fill = base_xmalloc((size_t)(n_rows > 0 ? n_rows : 1) * sizeof(int64_t));
    memcpy(fill, out->row_first, (size_t)n_rows * sizeof(int64_t));
    for (int64_t k = 0; k < m; k++) {
        int64_t r = row_of[k];
        sft_segment *sg = &out->seg[fill[r]++];
        sg->sample = items[k].idx;
        sg->len = items[k].len;
        sg->start = out->row_used[r];
        out->row_used[r] += sg->len;
    }
    free(fill);
    free(row_of);
    free(used);
    free(next);
    free(head);
    free(tail);
    free(tr.cnt);
    free(items);
    return BASE_OK;
}

void sft_pack_free(sft_pack *p) {
    free(p->seg);
    free(p->row_first);
    free(p->row_used);
    memset(p, 0, sizeof *p);
}

base_status sft_pack_row(const sft_pack *p, int64_t r, const sft_sample *samples, int32_t pad_id,
                         int32_t *ids, int32_t *pos, int32_t *seg, int32_t *target,
                         uint8_t *loss_mask) {
    if (r < 0 || r >= p->n_rows)
        return base_err_set(BASE_ERR_INVALID, "sft packing: row %lld of %lld", (long long)r,
                            (long long)p->n_rows);
    for (int64_t k = p->row_first[r]; k < p->row_first[r + 1]; k++) {
        const sft_segment *sg = &p->seg[k];
        const sft_sample *s = &samples[sg->sample];
        int64_t want = s->len > p->row_len ? p->row_len : s->len;
        if (want != sg->len || !s->ids)
            return base_err_set(BASE_ERR_INVALID,
                                "sft packing: sample %lld has %lld tokens but was planned with %lld",
                                (long long)sg->sample, (long long)s->len, (long long)sg->len);
    }
    for (int64_t q = 0; q < p->row_len; q++) {
        ids[q] = pad_id;
        if (pos) pos[q] = 0;
        if (seg) seg[q] = -1;
        if (target) target[q] = -1;
        if (loss_mask) loss_mask[q] = 0;
    }
    for (int64_t k = p->row_first[r]; k < p->row_first[r + 1]; k++) {
        const sft_segment *sg = &p->seg[k];
        const sft_sample *s = &samples[sg->sample];
        for (int64_t i = 0; i < sg->len; i++) {
            int64_t q = sg->start + i;
            int last = i + 1 == sg->len;
            ids[q] = s->ids[i];
            if (pos) pos[q] = (int32_t)i;
            if (seg) seg[q] = (int32_t)(k - p->row_first[r]);
            if (target) target[q] = last ? -1 : s->ids[i + 1];
            if (loss_mask) loss_mask[q] = !last && (!s->mask || s->mask[i + 1]);
        }
    }
    return BASE_OK;
}

int sft_pack_row_cu_seqlens(const sft_pack *p, int64_t r, int32_t *cu) {
    if (r < 0 || r >= p->n_rows) return -1;
    int k = 0;
    cu[0] = 0;
    for (int64_t i = p->row_first[r]; i < p->row_first[r + 1]; i++, k++)
        cu[k + 1] = (int32_t)(p->seg[i].start + p->seg[i].len);
    return k;
}
