// A team of threads for one kernel call, and the barrier its members meet at once per
// time step. Defined in parallel.cpp, which is compiled for the baseline instruction
// set only: the per-ISA kernel files call these plain functions and never instantiate
// std::thread or std::atomic themselves.
#pragma once

namespace rnnkit {

class Barrier;

// Blocks until all members of the team have called it (a no-op for a team of one).
void barrier_wait(Barrier* barrier);

// The team's size now. A team started with may_shrink (see parallel_run) may shrink at a
// barrier to member 0 alone (when waiting for the others costs more than working alone:
// a loaded machine). Members whose tid is not below it have no share of the work after
// that barrier; the caller's body must then leave them nothing to do.
int barrier_team(const Barrier* barrier);

// Runs fn(ctx, tid, nthreads, barrier) on nthreads threads (the caller is tid 0) and
// returns when all have finished. No state outlives the call. may_shrink: the body
// reads barrier_team after every barrier and splits its work by it (the sequence
// kernels of recurrence.h do); otherwise the team keeps its size.
void parallel_run(int nthreads, void (*fn)(void* ctx, int tid, int nthreads, Barrier* barrier), void* ctx,
                  bool may_shrink = false);

}  // namespace rnnkit
