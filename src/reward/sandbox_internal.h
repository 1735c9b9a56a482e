/*
 * Private to src/reward: the Python harness text run by the sandbox.
 */
#ifndef GRPO_REWARD_SANDBOX_INTERNAL_H
#define GRPO_REWARD_SANDBOX_INTERNAL_H

extern const char reward_sandbox_harness_py[];

#endif
