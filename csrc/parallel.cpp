#include "parallel.h"

#include <atomic>
#include <climits>
#include <cstdlib>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define RNNKIT_PAUSE() _mm_pause()
#else
#define RNNKIT_PAUSE() std::this_thread::yield()
#endif

namespace rnnkit {

// Sleeps while *word == expected (or returns at once if it no longer is); wakes sleepers.
static void word_wait(std::atomic<unsigned>* word, unsigned expected) {
#if defined(__linux__)
  syscall(SYS_futex, reinterpret_cast<unsigned*>(word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
#else
  (void)word;
  (void)expected;
  std::this_thread::yield();
#endif
}
static void word_wake_all(std::atomic<unsigned>* word) {
#if defined(__linux__)
  syscall(SYS_futex, reinterpret_cast<unsigned*>(word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
#else
  (void)word;
#endif
}
static_assert(sizeof(std::atomic<unsigned>) == sizeof(unsigned), "the futex word is the atomic itself");

// Members arriving early spin for a few microseconds (the others are usually that
// close behind), then sleep on the generation word (a futex on Linux) so that on a
// loaded machine the member they wait for can have the core; the last to arrive
// starts the next generation and wakes the sleepers, if any.
//
// A team that keeps waiting for a member the scheduler has taken away (several sleeps
// in quick succession: other processes hold the cores) is slower than one thread, so,
// if its body allows it (may_shrink), the last member to arrive then shrinks the team
// to member 0 alone for the rest of the call (see barrier_team). The sequence kernels
// split work so that the result does not depend on the team size, so the change costs
// nothing in exactness.
class Barrier {
 public:
  // may_shrink: after a few long waits the team shrinks (see above); shrink_at > 0: it
  // shrinks at that barrier whatever the waits (for the tests).
  Barrier(int n, bool may_shrink, long shrink_at) : team_(n), may_shrink_(may_shrink), shrink_at_(shrink_at) {}
  int team() const { return team_.load(std::memory_order_acquire); }
  // The size an OpenMP runtime granted (known only inside its region): every member
  // stores it before its first wait, so no barrier completes before all have, and no
  // shrink (a later store, by the last member of a barrier) can be undone by one.
  void grant(int n) { team_.store(n, std::memory_order_release); }
  void wait() {
    const int n = team_.load(std::memory_order_acquire);
    if (n <= 1) return;
    const unsigned gen = generation_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) == n - 1) {
      count_.store(0, std::memory_order_relaxed);
      // Only the last member of a generation touches strikes_ (ordered by the barrier).
      if (slept_.exchange(false, std::memory_order_acq_rel))
        strikes_ += kStrike;
      else if (strikes_ > 0)
        --strikes_;
      if (may_shrink_ && (strikes_ >= kShrinkAt || ++passed_ == shrink_at_)) team_.store(1, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_seq_cst);
      if (sleepers_.load(std::memory_order_seq_cst) > 0) word_wake_all(&generation_);
      return;
    }
    for (int spins = 0; spins < kSpins; ++spins) {
      if (generation_.load(std::memory_order_acquire) != gen) return;
      RNNKIT_PAUSE();
    }
    // Announce the sleep before the last check: the last member either sees a sleeper
    // and wakes it, or its new generation is seen here (both are seq_cst).
    slept_.store(true, std::memory_order_release);
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    while (generation_.load(std::memory_order_seq_cst) == gen) word_wait(&generation_, gen);
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
  }

 private:
  static constexpr int kSpins = 2000;   // about 5-30 us of _mm_pause, depending on the CPU
  static constexpr int kStrike = 8;     // a sleep adds this, a barrier passed awake takes 1 off
  static constexpr int kShrinkAt = 24;  // three sleeps within a few steps: one thread from now on
  alignas(64) std::atomic<int> count_{0};
  alignas(64) std::atomic<unsigned> generation_{0};
  alignas(64) std::atomic<int> sleepers_{0};
  std::atomic<bool> slept_{false};
  std::atomic<int> team_;
  const bool may_shrink_;
  const long shrink_at_;
  long passed_ = 0;  // barriers passed (only the last member of each touches it)
  int strikes_ = 0;
};

void barrier_wait(Barrier* barrier) { barrier->wait(); }

int barrier_team(const Barrier* barrier) { return barrier->team(); }

namespace {

// The runtime teams fork on: installed_ is set once and never freed or changed (a call
// may be running on it); active_ says whether calls starting now use it.
std::atomic<const TeamRuntime*> installed_{nullptr};
std::atomic<bool> active_{false};

struct Fork {
  void (*fn)(void*, int, int, Barrier*);
  void* ctx;
  Barrier* barrier;
  const TeamRuntime* runtime;
  int asked;
};

// One member of a team on the OpenMP runtime: its thread number and the size granted
// come from the runtime (a nested region may be a team of one); members past the size
// asked (never granted by libgomp, but cheap to rule out) take no part.
void fork_member(void* data) {
  const Fork& f = *static_cast<const Fork*>(data);
  const int granted = f.runtime->num_threads(), tid = f.runtime->thread_num();
  const int n = granted < f.asked ? granted : f.asked;
  if (tid >= n) return;
  f.barrier->grant(n);
  f.fn(f.ctx, tid, n, f.barrier);
}

}  // namespace

bool set_team_runtime(const TeamRuntime* runtime) {
  if (!runtime) {
    active_.store(false, std::memory_order_release);
    return true;
  }
  if (!runtime->parallel || !runtime->thread_num || !runtime->num_threads) return false;
  const TeamRuntime* now = installed_.load(std::memory_order_acquire);
  if (!now) {
    const TeamRuntime* fresh = new TeamRuntime(*runtime);  // kept for the life of the process
    if (installed_.compare_exchange_strong(now, fresh, std::memory_order_acq_rel))
      now = fresh;
    else
      delete fresh;  // another thread installed one first: `now` holds it
  }
  if (now->parallel != runtime->parallel || now->thread_num != runtime->thread_num ||
      now->num_threads != runtime->num_threads)
    return false;
  active_.store(true, std::memory_order_release);
  return true;
}

bool team_runtime_active() { return active_.load(std::memory_order_acquire); }

void parallel_run(int nthreads, void (*fn)(void*, int, int, Barrier*), void* ctx, bool may_shrink) {
  if (nthreads < 1) nthreads = 1;
  // RNNKIT_TEAM_SHRINK_AT=k makes the team shrink at its k-th barrier: the tests use it
  // to check that a shrink in any phase of a step leaves the results unchanged.
  const char* forced = may_shrink && nthreads > 1 ? std::getenv("RNNKIT_TEAM_SHRINK_AT") : nullptr;
  Barrier barrier(nthreads, may_shrink, forced ? std::atol(forced) : 0);
  if (nthreads == 1) {
    fn(ctx, 0, 1, &barrier);
    return;
  }
  // The runtime, read once: a switch while this call runs does not reach it.
  const TeamRuntime* runtime = active_.load(std::memory_order_acquire) ? installed_.load(std::memory_order_acquire)
                                                                       : nullptr;
  if (runtime) {
    Fork f{fn, ctx, &barrier, runtime, nthreads};
    runtime->parallel(fork_member, &f, unsigned(nthreads), 0);
    return;
  }
  std::vector<std::thread> team;
  team.reserve(size_t(nthreads - 1));
  for (int tid = 1; tid < nthreads; ++tid) team.emplace_back(fn, ctx, tid, nthreads, &barrier);
  fn(ctx, 0, nthreads, &barrier);
  for (auto& t : team) t.join();
}

}  // namespace rnnkit
