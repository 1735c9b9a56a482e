/*
 * The CUDA emulator's scheduler (see cuda_emu.h): blocks in order, the
 * threads of a block as fibers switched at barriers, each barrier interval
 * in a pseudo-random thread order.
 *
 * Fibers switch stacks with a few instructions of assembly on x86-64
 * (ucontext's swapcontext makes a system call per switch, which dominated
 * the emulated tests' time); elsewhere with ucontext.
 */
#include "cuda_emu.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include <vector>

#include "base/base.h"

#if defined(__x86_64__)
/* emu_switch(&from_sp, to_sp): push the callee-saved registers, save the
 * stack pointer in *from_sp, load to_sp, pop and return on the other stack.
 * (The SSE/x87 control words are callee-saved too; no kernel changes them.) */
__asm__(".text\n"
        ".globl grpo_emu_switch\n"
        ".type grpo_emu_switch,@function\n"
        "grpo_emu_switch:\n"
        "    pushq %rbp\n"
        "    pushq %rbx\n"
        "    pushq %r12\n"
        "    pushq %r13\n"
        "    pushq %r14\n"
        "    pushq %r15\n"
        "    movq %rsp, (%rdi)\n"
        "    movq %rsi, %rsp\n"
        "    popq %r15\n"
        "    popq %r14\n"
        "    popq %r13\n"
        "    popq %r12\n"
        "    popq %rbx\n"
        "    popq %rbp\n"
        "    ret\n"
        ".size grpo_emu_switch, .-grpo_emu_switch\n");
extern "C" void grpo_emu_switch(void **from_sp, void *to_sp);
#define EMU_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

emu_thread *emu_cur;
emu_uint3 emu_block_idx;
dim3 emu_block_dim, emu_grid_dim;
unsigned char *emu_dyn_smem;

namespace {

enum { F_READY, F_WAIT_BLOCK, F_WAIT_WARP, F_DONE };

/* Hopper's limits: a launch over them fails on the GPU, so it dies here. */
const int MAX_THREADS = 1024;
const size_t MAX_DYN_SMEM = 227 * 1024;
const size_t STACK_BYTES = 64 * 1024;

struct fiber {
#ifdef EMU_ASM_SWITCH
    void *sp; /* saved stack pointer while switched out */
#else
    ucontext_t ctx;
#endif
    emu_thread t;
    int state;
    void *stack;
};

fiber fibers[MAX_THREADS];
int nfib;
#ifdef EMU_ASM_SWITCH
void *sched_sp;
#else
ucontext_t sched_ctx;
#endif
fiber *cur_fiber;
const std::function<void()> *cur_body;
uint64_t slots[MAX_THREADS];                /* warp exchange: one per thread */
int order[MAX_THREADS];                     /* the run order of one barrier interval */
uint64_t rng_state = 0x9e3779b97f4a7c15ull; /* fixed: runs are reproducible */

/* Back to the scheduler; returns when f is resumed. */
inline void to_sched(fiber *f) {
#ifdef EMU_ASM_SWITCH
    grpo_emu_switch(&f->sp, sched_sp);
#else
    swapcontext(&f->ctx, &sched_ctx);
#endif
}

void fiber_entry(void) {
    (*cur_body)();
    cur_fiber->state = F_DONE;
    to_sched(cur_fiber);
    abort(); /* a finished fiber is never resumed */
}

void yield(int state) {
    fiber *f = cur_fiber;
    f->state = state;
    to_sched(f);
}

/* Switch to f until it yields (its own frame: no local of run_block lives
 * across the context switch). */
__attribute__((noinline)) void resume(fiber *f) {
    cur_fiber = f;
    emu_cur = &f->t;
#ifdef EMU_ASM_SWITCH
    grpo_emu_switch(&sched_sp, f->sp);
#else
    swapcontext(&sched_ctx, &f->ctx);
#endif
}

/* Fresh context for thread i of a block of shape `block` (its own frame:
 * getcontext returns twice). */
__attribute__((noinline)) void init_fiber(fiber *f, int i, const dim3 &block) {
    if (!f->stack) {
        f->stack = mmap(NULL, STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (f->stack == MAP_FAILED) base_die("emu: no memory for fiber stacks");
    }
#ifdef EMU_ASM_SWITCH
    /* the first switch pops six registers and returns into fiber_entry as
     * if called: the slot above the return address is its (unused) return
     * address, which leaves rsp = 8 mod 16 at entry, as the ABI wants */
    uintptr_t top = ((uintptr_t)f->stack + STACK_BYTES) & ~(uintptr_t)15;
    void **sp = (void **)top;
    *--sp = NULL;                /* fiber_entry's return address (never used) */
    *--sp = (void *)fiber_entry; /* ret target */
    for (int r = 0; r < 6; r++)
        *--sp = NULL; /* rbp rbx r12 r13 r14 r15 */
    f->sp = sp;
#else
    if (getcontext(&f->ctx)) base_die("emu: getcontext failed");
    f->ctx.uc_stack.ss_sp = f->stack;
    f->ctx.uc_stack.ss_size = STACK_BYTES;
    f->ctx.uc_link = NULL;
    makecontext(&f->ctx, fiber_entry, 0);
#endif
    f->state = F_READY;
    f->t.tid.x = (unsigned)i % block.x;
    f->t.tid.y = ((unsigned)i / block.x) % block.y;
    f->t.tid.z = (unsigned)i / (block.x * block.y);
    f->t.linear = i;
    f->t.lane = i % 32;
    f->t.warp = i / 32;
}

/* A pseudo-random permutation of a[0..n). */
void shuffle(int *a, int n) {
    for (int i = n - 1; i > 0; i--) {
        rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
        int j = (int)((rng_state >> 33) % (uint64_t)(i + 1)), x = a[i];
        a[i] = a[j];
        a[j] = x;
    }
}

/* Run warp w's lanes until each has exited or waits at __syncthreads:
 * warp-level barriers are settled inside the warp (every live lane
 * arrived: all go on). Each interval runs the lanes in a fresh order. */
void run_warp(int w) {
    int lo = w * 32, hi = lo + 32 < nfib ? lo + 32 : nfib, lanes[32];
    for (;;) {
        int n = 0;
        for (int i = lo; i < hi; i++)
            lanes[n++] = i;
        shuffle(lanes, n);
        for (int i = 0; i < n; i++)
            if (fibers[lanes[i]].state == F_READY) resume(&fibers[lanes[i]]);
        int live = 0, at_warp = 0;
        for (int i = lo; i < hi; i++) {
            if (fibers[i].state != F_DONE) live++;
            if (fibers[i].state == F_WAIT_WARP) at_warp++;
        }
        if (!at_warp) return; /* every live lane is at __syncthreads */
        if (at_warp != live)
            base_die("emu: divergent barrier in block (%u,%u,%u), warp %d: %d lanes in warp intrinsics, %d at "
                     "__syncthreads",
                     emu_block_idx.x, emu_block_idx.y, emu_block_idx.z, w, at_warp, live - at_warp);
        for (int i = lo; i < hi; i++)
            if (fibers[i].state == F_WAIT_WARP) fibers[i].state = F_READY;
    }
}

/* Each barrier interval of the block runs its warps in a fresh
 * pseudo-random order (and each warp's lanes likewise), so that a read of
 * shared memory that another thread writes in the same interval (a missing
 * barrier) sees the wrong value in some interval whichever of the two the
 * hardware runs first. */
void run_block(const dim3 &block) {
    nfib = (int)(block.x * block.y * block.z);
    for (int i = 0; i < nfib; i++)
        init_fiber(&fibers[i], i, block);
    int nwarps = (nfib + 31) / 32;
    for (;;) {
        for (int w = 0; w < nwarps; w++)
            order[w] = w;
        shuffle(order, nwarps);
        for (int w = 0; w < nwarps; w++)
            run_warp(order[w]);
        int live = 0;
        for (int i = 0; i < nfib; i++)
            if (fibers[i].state == F_WAIT_BLOCK) fibers[i].state = F_READY, live++;
        if (!live) break;
    }
}

} // namespace

void emu_syncthreads(void) { yield(F_WAIT_BLOCK); }
void emu_syncwarp(void) { yield(F_WAIT_WARP); }

uint64_t emu_warp_xchg(uint64_t v, int src) {
    int me = emu_cur->linear, base = me - emu_cur->lane;
    slots[me] = v;
    yield(F_WAIT_WARP);
    int from = base + src;
    if (from >= nfib || fibers[from].state == F_DONE)
        base_die("emu: a shuffle in block (%u,%u,%u) reads lane %d, which has exited or does not exist",
                 emu_block_idx.x, emu_block_idx.y, emu_block_idx.z, src);
    uint64_t r = slots[from];
    yield(F_WAIT_WARP);
    return r;
}

unsigned emu_ballot(int pred) {
    int me = emu_cur->linear, base = me - emu_cur->lane;
    slots[me] = pred != 0;
    yield(F_WAIT_WARP);
    unsigned m = 0;
    for (int l = 0; l < 32 && base + l < nfib; l++)
        if (fibers[base + l].state != F_DONE && slots[base + l]) m |= 1u << l;
    yield(F_WAIT_WARP);
    return m;
}

/* One recorded item of a graph: a launch, or host work (host != 0). */
struct emu_item {
    int host;
    dim3 grid, block;
    size_t smem;
    std::function<void()> fn;
};
static std::vector<emu_item> *emu_rec; /* the capture in progress, or NULL */

void emu_capture_begin(void) {
    if (emu_rec) base_die("emu: graph capture inside a capture");
    emu_rec = new std::vector<emu_item>();
}

void *emu_capture_end(void) {
    if (!emu_rec) base_die("emu: graph capture ended without a begin");
    void *g = emu_rec;
    emu_rec = NULL;
    return g;
}

int emu_capturing(void) { return emu_rec != NULL; }

void emu_host(const std::function<void()> &fn) {
    if (emu_rec)
        emu_rec->push_back(emu_item{1, dim3(), dim3(), 0, fn});
    else
        fn();
}

void emu_graph_run(void *graph) {
    if (emu_rec) base_die("emu: graph launch inside a capture");
    for (const emu_item &it : *(std::vector<emu_item> *)graph) {
        if (it.host)
            it.fn();
        else
            emu_launch(it.grid, it.block, it.smem, it.fn);
    }
}

void emu_graph_free(void *graph) { delete (std::vector<emu_item> *)graph; }

void emu_launch(dim3 grid, dim3 block, size_t smem, const std::function<void()> &body) {
    if (emu_rec) {
        emu_rec->push_back(emu_item{0, grid, block, smem, body});
        return;
    }
    unsigned nt = block.x * block.y * block.z;
    if (nt == 0 || nt > (unsigned)MAX_THREADS || grid.x == 0 || grid.y == 0 || grid.z == 0)
        base_die("emu: bad launch: grid (%u,%u,%u), block (%u,%u,%u)", grid.x, grid.y, grid.z, block.x, block.y,
                 block.z);
    if (smem > MAX_DYN_SMEM)
        base_die("emu: launch asks %zu bytes of dynamic shared memory (Hopper: %zu)", smem, MAX_DYN_SMEM);
    unsigned char *dyn = NULL;
    if (smem) {
        dyn = (unsigned char *)aligned_alloc(16, (smem + 15) & ~(size_t)15);
        if (!dyn) base_die("emu: out of memory");
        memset(dyn, 0xff, smem); /* NaN / -1: reads before writes show */
    }
    emu_dyn_smem = dyn;
    emu_grid_dim = grid;
    emu_block_dim = block;
    cur_body = &body;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                emu_block_idx.x = x;
                emu_block_idx.y = y;
                emu_block_idx.z = z;
                run_block(block);
            }
    free(dyn);
    emu_dyn_smem = NULL;
    emu_cur = NULL;
}
