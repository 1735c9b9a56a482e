/*
 * Private header of the CPU backend: the ops it implements, shared between
 * its files and with tests (the naive oracles).
 */
#ifndef GRPO_TENSOR_CPU_H
#define GRPO_TENSOR_CPU_H

#include "tensor/ops.h"

void cpu_matmul(tensor *c, const tensor *a, const tensor *b, int trans_a, int trans_b, float alpha,
                float beta);
void cpu_matmul_naive(tensor *c, const tensor *a, const tensor *b, int trans_a, int trans_b,
                      float alpha, float beta);

/* optim.c */
double cpu_sumsq(const tensor *x);
void cpu_adamw(tensor *param, tensor *m, tensor *v, const tensor *grad, const ops_adamw_args *a);

#endif
