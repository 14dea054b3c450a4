// How finely the kernels split their work across torch's intra-op threads.
//
// A parallel region pays for waking the other threads and, after it, leaves them spinning for a
// while on cores that the engine's event loop and its clients need. In the engine on 2 cores,
// splitting every call of a one-stream decode step made the step 1.7x slower than running it on
// one thread (the same calls, measured alone, were 1.4x faster on two). So a call is split only
// into tasks of at least kMinTaskWork multiply-adds (~0.1 ms on one core): one-stream decode
// steps stay on the calling thread, 32-stream steps and prefills use every thread.
#pragma once

#include <algorithm>
#include <cstdint>

namespace streamgate {

constexpr int64_t kMinTaskWork = int64_t{1} << 21;

// Items per parallel task (at::parallel_for's grain) for items of `work_per_item`
// multiply-adds each, and at least `min_grain` items.
inline int64_t grain_for(int64_t work_per_item, int64_t min_grain) {
  return std::max(min_grain, kMinTaskWork / std::max<int64_t>(work_per_item, 1));
}

}  // namespace streamgate
