/*
 * A fixed-size thread pool for parallel-for. Workers are made once; each
 * base_pool_for hands out indices through an atomic counter (dynamic
 * scheduling, good for uneven work such as reward scripts) and the caller
 * works too. One job at a time: the pool is not reentrant.
 */
#include "base.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

struct base_pool {
    int n_workers; /* threads besides the caller */
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    uint64_t generation; /* bumped per job */
    int active;          /* workers still inside the current job */
    int quit;
    /* the current job */
    base_pool_fn fn;
    void *ctx;
    int64_t n;
    atomic_llong next;
};

typedef struct {
    base_pool *p;
    int id;
} worker_arg;

static void run_job(base_pool *p, int worker) {
    for (;;) {
        int64_t i = atomic_fetch_add(&p->next, 1);
        if (i >= p->n) break;
        p->fn(p->ctx, i, worker);
    }
}

static void *worker_main(void *arg) {
    worker_arg *wa = arg;
    base_pool *p = wa->p;
    int id = wa->id;
    free(wa);
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->quit && p->generation == seen) pthread_cond_wait(&p->start, &p->mu);
        if (p->quit) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        run_job(p, id);
        pthread_mutex_lock(&p->mu);
        if (--p->active == 0) pthread_cond_signal(&p->done);
        pthread_mutex_unlock(&p->mu);
    }
}

int base_ncpu(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

base_pool *base_pool_create(int n_threads) {
    if (n_threads <= 0) n_threads = base_ncpu();
    base_pool *p = base_xcalloc(1, sizeof *p);
    p->n_workers = n_threads - 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start, NULL);
    pthread_cond_init(&p->done, NULL);
    p->threads = base_xcalloc((size_t)(p->n_workers > 0 ? p->n_workers : 1), sizeof(pthread_t));
    for (int i = 0; i < p->n_workers; i++) {
        worker_arg *wa = base_xmalloc(sizeof *wa);
        wa->p = p;
        wa->id = i + 1;
        int e = pthread_create(&p->threads[i], NULL, worker_main, wa);
        if (e) base_die("pthread_create: error %d", e);
    }
    return p;
}

int base_pool_size(const base_pool *p) { return p->n_workers + 1; }

void base_pool_for(base_pool *p, int64_t n, base_pool_fn fn, void *ctx) {
    if (n <= 0) return;
    if (p->n_workers == 0 || n == 1) {
        for (int64_t i = 0; i < n; i++) fn(ctx, i, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    atomic_store(&p->next, 0);
    p->active = p->n_workers;
    p->generation++;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    run_job(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->active > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void base_pool_destroy(base_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_workers; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->start);
    pthread_cond_destroy(&p->done);
    free(p->threads);
    free(p);
}
