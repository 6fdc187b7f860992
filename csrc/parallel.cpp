#include "parallel.h"

#include <atomic>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define RNNKIT_PAUSE() _mm_pause()
#else
#define RNNKIT_PAUSE() std::this_thread::yield()
#endif

namespace rnnkit {

class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void wait() {
    if (n_ <= 1) return;
    const unsigned gen = generation_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
      count_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_acq_rel);
      return;
    }
    // Spin briefly (the others are usually a few microseconds behind), then give the
    // core away: on an oversubscribed machine the thread we wait for needs it.
    for (int spins = 0; generation_.load(std::memory_order_acquire) == gen; ++spins) {
      if (spins < 2048)
        RNNKIT_PAUSE();
      else
        std::this_thread::yield();
    }
  }

 private:
  const int n_;
  alignas(64) std::atomic<int> count_{0};
  alignas(64) std::atomic<unsigned> generation_{0};
};

void barrier_wait(Barrier* barrier) { barrier->wait(); }

void parallel_run(int nthreads, void (*fn)(void*, int, int, Barrier*), void* ctx) {
  if (nthreads < 1) nthreads = 1;
  Barrier barrier(nthreads);
  if (nthreads == 1) {
    fn(ctx, 0, 1, &barrier);
    return;
  }
  std::vector<std::thread> team;
  team.reserve(size_t(nthreads - 1));
  for (int tid = 1; tid < nthreads; ++tid) team.emplace_back(fn, ctx, tid, nthreads, &barrier);
  fn(ctx, 0, nthreads, &barrier);
  for (auto& t : team) t.join();
}

}  // namespace rnnkit
