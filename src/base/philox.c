/*
 * Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as
 * easy as 1, 2, 3", SC'11), the generator cuRAND and PyTorch's CUDA RNG use.
 * Ten rounds of multiply-xorshift on a 128-bit counter under a 64-bit key.
 * Checked in tests against the known-answer vectors of Random123.
 */
#include "base.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline void philox_round(uint32_t c[4], const uint32_t k[2]) {
    uint64_t p0 = (uint64_t)PHILOX_M0 * c[0];
    uint64_t p1 = (uint64_t)PHILOX_M1 * c[2];
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    uint32_t n0 = hi1 ^ c[1] ^ k[0];
    uint32_t n1 = lo1;
    uint32_t n2 = hi0 ^ c[3] ^ k[1];
    uint32_t n3 = lo0;
    c[0] = n0;
    c[1] = n1;
    c[2] = n2;
    c[3] = n3;
}

void base_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
    uint32_t k[2] = {key[0], key[1]};
    for (int r = 0; r < 10; r++) {
        if (r) {
            k[0] += PHILOX_W0;
            k[1] += PHILOX_W1;
        }
        philox_round(c, k);
    }
    out[0] = c[0];
    out[1] = c[1];
    out[2] = c[2];
    out[3] = c[3];
}

double base_u64_to_open_unit(uint32_t hi, uint32_t lo) {
    uint64_t x = ((uint64_t)hi << 32 | lo) >> 11; /* 53 bits */
    return ((double)x + 0.5) * (1.0 / 9007199254740992.0);
}

void base_rng_init(base_rng *r, uint64_t seed, uint32_t c0, uint32_t c1, uint32_t c2) {
    r->key[0] = (uint32_t)seed;
    r->key[1] = (uint32_t)(seed >> 32);
    r->ctr[0] = c0;
    r->ctr[1] = c1;
    r->ctr[2] = c2;
    r->ctr[3] = 0;
}

void base_rng_block(const base_rng *r, uint32_t i, uint32_t out[4]) {
    uint32_t c[4] = {r->ctr[0], r->ctr[1], r->ctr[2], i};
    base_philox4x32(c, r->key, out);
}

float base_rng_uniform(const base_rng *r, uint32_t i) {
    uint32_t w[4];
    base_rng_block(r, i, w);
    return base_u32_to_unit(w[0]);
}

float base_rng_normal(const base_rng *r, uint32_t i) {
    uint32_t w[4];
    base_rng_block(r, i, w);
    double u1 = base_u64_to_open_unit(w[0], w[1]);
    double u2 = base_u64_to_open_unit(w[2], w[3]);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
