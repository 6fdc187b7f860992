// A team of threads for one kernel call, and the barrier its members meet at once per
// time step. Defined in parallel.cpp, which is compiled for the baseline instruction
// set only: the per-ISA kernel files call these plain functions and never instantiate
// std::thread or std::atomic themselves.
//
// A team runs either on the workers of an OpenMP runtime already loaded in the process
// (torch's libgomp, given once through set_team_runtime: hot workers, no thread creation
// per call, and no fight with torch's own spinning workers for the cores), or, without
// one, on std::threads started for the call and joined at its end.
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

// Runs fn(ctx, tid, n, barrier) on a team of n <= nthreads threads (the caller is tid 0)
// and returns when all have finished. n is the size granted: an OpenMP runtime may give
// fewer than asked (a call from inside one of its parallel regions, its thread limit),
// so the body splits its work by the n it is given, never by nthreads. No state outlives
// the call. may_shrink: the body reads barrier_team after every barrier and splits its
// work by it (the sequence kernels of recurrence.h do); otherwise the team keeps its size.
void parallel_run(int nthreads, void (*fn)(void* ctx, int tid, int nthreads, Barrier* barrier), void* ctx,
                  bool may_shrink = false);

// The three entry points of an OpenMP runtime (the libgomp ABI) that a team needs.
struct TeamRuntime {
  void (*parallel)(void (*fn)(void*), void* data, unsigned num_threads, unsigned flags);  // GOMP_parallel
  int (*thread_num)();   // omp_get_thread_num
  int (*num_threads)();  // omp_get_num_threads
};

// Makes later parallel_run calls fork their teams on `runtime` (all three pointers set),
// or on std::threads again (null). The first runtime given is kept for the life of the
// process (a call snapshots it once at its start, so one running on it never sees it
// change or go away); a different runtime given later is refused: returns false and
// changes nothing. Switching between that runtime and std::threads is allowed at any
// time and affects the calls that start afterwards (the tests run both).
bool set_team_runtime(const TeamRuntime* runtime);

// Whether parallel_run forks on an OpenMP runtime now.
bool team_runtime_active();

}  // namespace rnnkit
