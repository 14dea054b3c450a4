// y = x @ W^T for 8-bit weights in groups along the inputs: w = d * q (GGUF's Q8_0).
//
// Weight layout: the file's own, row-major: codes int8 [N, K] and, per output and group of
// `group` inputs, one float16 scale d: scales [N, groups], float16 bit patterns held as int16
// (so that converting a model's floating-point tensors leaves them alone).
//
// d * q is exact in float32 (8 bits times 11), so both loops below equal float32
// dequantize-then-matmul up to float32 rounding (summation order only):
// - one row (decode of one stream, memory-bound): per output and group, the dot product of
//   codes and inputs is accumulated in 8 lanes, then scaled by d once;
// - several rows: a pair of outputs' codes is converted to d * q once per 8 inputs and applied
//   to up to kRowBlock rows; outputs go in tiles of kTile whose codes stay in cache while every
//   block of rows reads them, so the weight comes from memory once per call.
// Without AVX2/FMA/F16C at run time, a scalar loop computes the one-row sums.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <immintrin.h>

#include "parallel.h"

#include <algorithm>
#include <cstdint>

namespace {

constexpr int64_t kTile = 32;        // outputs whose codes (kTile * K bytes) stay in L1/L2
constexpr int64_t kRowBlock = 6;     // rows per block: 2 outputs x 6 rows = 12 accumulators
constexpr int64_t kPrefetch = 4096;  // bytes of codes fetched ahead in the one-row loop
constexpr int64_t kGrain = 64;       // outputs per parallel task, at least

struct Problem {
  const float* x;         // [rows, K]
  const int8_t* codes;    // [N, K]
  const at::Half* scales; // [N, groups]
  float* y;               // [rows, N]
  int64_t rows, K, N, group, groups;
};

void scalar_outputs(const Problem& p, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* q = p.codes + n * p.K;
    for (int64_t r = 0; r < p.rows; ++r) {
      const float* x = p.x + r * p.K;
      float out = 0.0f;
      for (int64_t g = 0; g < p.groups; ++g) {
        float dot = 0.0f;
        for (int64_t k = g * p.group; k < (g + 1) * p.group; ++k) {
          dot += static_cast<float>(q[k]) * x[k];
        }
        out += static_cast<float>(p.scales[n * p.groups + g]) * dot;
      }
      p.y[r * p.N + n] = out;
    }
  }
}

#define AVX2 __attribute__((target("avx2,fma,f16c")))

// 8 codes as floats.
AVX2 inline __m256 load_codes8(const int8_t* q) {
  return _mm256_cvtepi32_ps(
      _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q))));
}

AVX2 inline float sum_lanes(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

AVX2 inline float half_at(const at::Half* h) {
  return _cvtsh_ss(static_cast<unsigned short>(h->x));
}

// The dot product of one group's codes and inputs, in 8 lanes; G as in one_row_output.
template <int G>
AVX2 inline __m256 group_dot(const int8_t* q, const float* x, int64_t group) {
  __m256 dot = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int64_t k = 0; k < (G > 0 ? G : group); k += 8) {
    dot = _mm256_fmadd_ps(load_codes8(q + k), _mm256_loadu_ps(x + k), dot);
  }
  return dot;
}

// Output n for one row; G is the group size when known at compile time (else 0).
template <int G>
AVX2 void one_row_output(const Problem& p, int64_t n) {
  const int8_t* q = p.codes + n * p.K;
  const at::Half* d = p.scales + n * p.groups;
  // Two chains of scaled sums, even and odd groups: one chain would be as long as the loads.
  __m256 even = _mm256_setzero_ps(), odd = _mm256_setzero_ps();
  int64_t g = 0;
  for (; g + 2 <= p.groups; g += 2) {
    _mm_prefetch(reinterpret_cast<const char*>(q + g * p.group + kPrefetch), _MM_HINT_T0);
    const __m256 a = group_dot<G>(q + g * p.group, p.x + g * p.group, p.group);
    const __m256 b = group_dot<G>(q + (g + 1) * p.group, p.x + (g + 1) * p.group, p.group);
    even = _mm256_fmadd_ps(a, _mm256_set1_ps(half_at(d + g)), even);
    odd = _mm256_fmadd_ps(b, _mm256_set1_ps(half_at(d + g + 1)), odd);
  }
  if (g < p.groups) {
    const __m256 a = group_dot<G>(q + g * p.group, p.x + g * p.group, p.group);
    even = _mm256_fmadd_ps(a, _mm256_set1_ps(half_at(d + g)), even);
  }
  p.y[n] = sum_lanes(_mm256_add_ps(even, odd));
}

template <int G>
AVX2 void avx2_one_row_outputs(const Problem& p, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) one_row_output<G>(p, n);
}

AVX2 void avx2_one_row(const Problem& p, int64_t n0, int64_t n1) {
  if (p.group == 32) {  // GGUF's Q8_0
    avx2_one_row_outputs<32>(p, n0, n1);
  } else {
    avx2_one_row_outputs<0>(p, n0, n1);
  }
}

// Outputs n..n+O-1 for rows r0..r0+R-1.
template <int O, int R>
AVX2 void avx2_block(const Problem& p, int64_t n, int64_t r0) {
  __m256 acc[O][R];
  for (auto& row : acc) {
    for (auto& a : row) a = _mm256_setzero_ps();
  }
  const float* x = p.x + r0 * p.K;
  for (int64_t g = 0; g < p.groups; ++g) {
    __m256 d[O];
    for (int o = 0; o < O; ++o) {
      d[o] = _mm256_set1_ps(half_at(p.scales + (n + o) * p.groups + g));
    }
    for (int64_t k = g * p.group; k < (g + 1) * p.group; k += 8) {
      __m256 w[O];
#pragma GCC unroll 2
      for (int o = 0; o < O; ++o) {
        w[o] = _mm256_mul_ps(load_codes8(p.codes + (n + o) * p.K + k), d[o]);  // exact
      }
#pragma GCC unroll 6
      for (int r = 0; r < R; ++r) {
        const __m256 xv = _mm256_loadu_ps(x + r * p.K + k);
#pragma GCC unroll 2
        for (int o = 0; o < O; ++o) acc[o][r] = _mm256_fmadd_ps(w[o], xv, acc[o][r]);
      }
    }
  }
  for (int o = 0; o < O; ++o) {
    for (int r = 0; r < R; ++r) p.y[(r0 + r) * p.N + n + o] = sum_lanes(acc[o][r]);
  }
}

template <int R>
AVX2 void avx2_tile_rows(const Problem& p, int64_t n0, int64_t n1, int64_t r0) {
  int64_t n = n0;
  for (; n + 2 <= n1; n += 2) avx2_block<2, R>(p, n, r0);
  if (n < n1) avx2_block<1, R>(p, n, r0);
}

AVX2 void avx2_rows(const Problem& p, int64_t n0, int64_t n1) {
  for (int64_t t = n0; t < n1; t += kTile) {
    const int64_t t1 = std::min(t + kTile, n1);
    int64_t r = 0;
    for (; r + kRowBlock <= p.rows; r += kRowBlock) avx2_tile_rows<kRowBlock>(p, t, t1, r);
    switch (p.rows - r) {
      case 5: avx2_tile_rows<5>(p, t, t1, r); break;
      case 4: avx2_tile_rows<4>(p, t, t1, r); break;
      case 3: avx2_tile_rows<3>(p, t, t1, r); break;
      case 2: avx2_tile_rows<2>(p, t, t1, r); break;
      case 1: avx2_tile_rows<1>(p, t, t1, r); break;
      default: break;
    }
  }
}

bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c");
  return has;
}

at::Tensor int8_mm(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales,
                   int64_t group_size, bool vectorized) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 2,
              "int8_mm: x must be a 2-D float32 CPU tensor");
  TORCH_CHECK(codes.device().is_cpu() && codes.scalar_type() == at::kChar && codes.dim() == 2 &&
                  codes.is_contiguous(),
              "int8_mm: codes must be a contiguous int8 [out, in] CPU tensor");
  TORCH_CHECK(scales.device().is_cpu() && scales.scalar_type() == at::kShort &&
                  scales.is_contiguous(),
              "int8_mm: scales must be contiguous int16 (float16 bit patterns)");
  const int64_t N = codes.size(0), K = codes.size(1);
  TORCH_CHECK(group_size > 0 && group_size % 8 == 0 && K % group_size == 0,
              "int8_mm: group_size must be a multiple of 8 dividing the inputs");
  TORCH_CHECK(x.size(1) == K, "int8_mm: x has ", x.size(1), " inputs, the weight ", K);
  const int64_t groups = K / group_size;
  TORCH_CHECK(scales.numel() == N * groups, "int8_mm: scales must be [out, in / group_size]");

  const at::Tensor xc = x.contiguous();
  const int64_t rows = xc.size(0);
  at::Tensor y = at::empty({rows, N}, xc.options());
  if (rows == 0 || N == 0) return y;
  const Problem p{xc.data_ptr<float>(),
                  codes.data_ptr<int8_t>(),
                  reinterpret_cast<const at::Half*>(scales.data_ptr<int16_t>()),
                  y.data_ptr<float>(),
                  rows, K, N, group_size, groups};
  const bool avx2 = vectorized && cpu_has_avx2();
  at::parallel_for(0, N, streamgate::grain_for(rows * K, kGrain), [&](int64_t n0, int64_t n1) {
    if (!avx2) {
      scalar_outputs(p, n0, n1);
    } else if (rows == 1) {
      avx2_one_row(p, n0, n1);
    } else {
      avx2_rows(p, n0, n1);
    }
  });
  return y;
}

}  // namespace

// The library itself (and has_avx2) is declared by int4_matmul.cpp.
TORCH_LIBRARY_FRAGMENT(streamgate_kernels, m) {
  m.def("int8_mm(Tensor x, Tensor codes, Tensor scales, int group_size, bool vectorized) "
        "-> Tensor");
}

TORCH_LIBRARY_IMPL(streamgate_kernels, CPU, m) { m.impl("int8_mm", int8_mm); }
