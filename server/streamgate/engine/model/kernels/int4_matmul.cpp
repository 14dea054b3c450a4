// y = x @ W^T for 4-bit weights in groups along the inputs: w = q * scale + minimum.
//
// Weight layout ("tiles", built once by int4.py): the outputs come in tiles of 8. For each
// tile and input k, one 32-bit word holds the 8 codes of the tile's outputs at k, output j in
// nibble j: codes int32 [tiles, K]. Scales and minimums stay the file's float16 numbers, per
// tile and group as two runs of 8: params [tiles, groups, 2, 8], float16 bit patterns held as
// int16 (so that converting a model's floating-point tensors leaves them alone).
//
// Per group g, sum_k (q * s + m) * x = s * sum_k q * x + m * sum_k x: the group's dot product
// of codes and inputs is accumulated exactly as float32, then scaled once. Results equal
// float32 dequantize-then-matmul up to float32 rounding (summation order only).
//
// Two AVX2 loops, chosen by the row count, read the same words:
// - one row (decode of one stream, memory-bound): the lanes are 8 consecutive inputs; a
//   32-byte load gives 8 inputs x 8 outputs, each output's codes are one mask away;
// - several rows: the lanes are the tile's 8 outputs; each word is unpacked once and applied
//   to up to kRowBlock rows before the next one is read.
// Without AVX2/FMA at run time, a scalar loop computes the same sums.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <immintrin.h>

#include "parallel.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

constexpr int64_t kTile = 8;      // outputs per tile: one nibble each of a 32-bit word
constexpr int64_t kRowBlock = 8;  // rows sharing one unpacked word in the multi-row loop
constexpr int64_t kGrain = 4;     // tiles per parallel task, at least

struct Problem {
  const float* x;         // [rows, K]
  const float* xsum;      // [rows, groups]: sum of x over each group
  const uint32_t* codes;  // [tiles, K]
  const at::Half* params; // [tiles, groups, 2, 8]
  float* y;               // [rows, N]
  int64_t rows, K, N, group, groups;
};

// Writes 8 outputs of tile t for row r, dropping the columns past N (the padding).
inline void store_tile(const Problem& p, int64_t r, int64_t t, const float* values) {
  const int64_t n0 = t * kTile, count = std::min<int64_t>(kTile, p.N - n0);
  std::copy(values, values + count, p.y + r * p.N + n0);
}

void scalar_tiles(const Problem& p, int64_t t0, int64_t t1) {
  for (int64_t t = t0; t < t1; ++t) {
    const uint32_t* words = p.codes + t * p.K;
    for (int64_t r = 0; r < p.rows; ++r) {
      const float* x = p.x + r * p.K;
      float out[kTile] = {};
      for (int64_t g = 0; g < p.groups; ++g) {
        float dot[kTile] = {};
        for (int64_t k = g * p.group; k < (g + 1) * p.group; ++k) {
          for (int64_t j = 0; j < kTile; ++j) {
            dot[j] += static_cast<float>((words[k] >> (4 * j)) & 15u) * x[k];
          }
        }
        const at::Half* sm = p.params + (t * p.groups + g) * 2 * kTile;
        for (int64_t j = 0; j < kTile; ++j) {
          out[j] += static_cast<float>(sm[j]) * dot[j] +
                    static_cast<float>(sm[kTile + j]) * p.xsum[r * p.groups + g];
        }
      }
      store_tile(p, r, t, out);
    }
  }
}

#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 inline __m256 load_half8(const at::Half* h) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)));
}

// Lane j of the result: the sum of the 8 lanes of d[j].
AVX2 inline __m256 sum_lanes8(const __m256* d) {
  const __m256 h01 = _mm256_hadd_ps(d[0], d[1]), h23 = _mm256_hadd_ps(d[2], d[3]);
  const __m256 h45 = _mm256_hadd_ps(d[4], d[5]), h67 = _mm256_hadd_ps(d[6], d[7]);
  const __m256 a = _mm256_hadd_ps(h01, h23), b = _mm256_hadd_ps(h45, h67);
  // a = [0 1 2 3 | 0 1 2 3] (low and high halves of the inputs), b the same for 4..7.
  return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

AVX2 void avx2_one_row(const Problem& p, int64_t t0, int64_t t1) {
  // Nibble j is masked in place, not shifted down: its float is q * 16^(j % 4), exact, and the
  // group's sums are scaled back by the exact 16^-(j % 4). Nibbles 4..7 come from the word
  // shifted by 16 once (a mask of the top nibble would read as a negative int32).
  const __m256 unscale = _mm256_setr_ps(1.0f, 0x1p-4f, 0x1p-8f, 0x1p-12f,
                                        1.0f, 0x1p-4f, 0x1p-8f, 0x1p-12f);
  for (int64_t t = t0; t < t1; ++t) {
    const uint32_t* words = p.codes + t * p.K;
    __m256 out = _mm256_setzero_ps();
    for (int64_t g = 0; g < p.groups; ++g) {
      __m256 dot[kTile];
      for (auto& d : dot) d = _mm256_setzero_ps();
      for (int64_t k = g * p.group; k < (g + 1) * p.group; k += 8) {
        const __m256i low = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + k));
        const __m256i high = _mm256_srli_epi32(low, 16);
        const __m256 x = _mm256_loadu_ps(p.x + k);
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {
          const __m256i mask = _mm256_set1_epi32(15 << (4 * j));
          dot[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(low, mask)), x, dot[j]);
          dot[j + 4] =
              _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(high, mask)), x, dot[j + 4]);
        }
      }
      const at::Half* sm = p.params + (t * p.groups + g) * 2 * kTile;
      const __m256 sums = _mm256_mul_ps(sum_lanes8(dot), unscale);
      out = _mm256_fmadd_ps(load_half8(sm), sums, out);
      out = _mm256_fmadd_ps(load_half8(sm + kTile), _mm256_set1_ps(p.xsum[g]), out);
    }
    alignas(32) float values[kTile];
    _mm256_store_ps(values, out);
    store_tile(p, 0, t, values);
  }
}

template <int R>
AVX2 void avx2_row_block(const Problem& p, int64_t t, int64_t r0) {
  const __m256i nibble = _mm256_set1_epi32(15);
  const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
  const uint32_t* words = p.codes + t * p.K;
  __m256 out[R];
  for (auto& o : out) o = _mm256_setzero_ps();
  for (int64_t g = 0; g < p.groups; ++g) {
    __m256 dot[R];
    for (auto& d : dot) d = _mm256_setzero_ps();
    for (int64_t k = g * p.group; k < (g + 1) * p.group; ++k) {
      const __m256i w = _mm256_set1_epi32(static_cast<int>(words[k]));
      const __m256 q = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(w, shifts), nibble));
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        dot[r] = _mm256_fmadd_ps(q, _mm256_set1_ps(p.x[(r0 + r) * p.K + k]), dot[r]);
      }
    }
    const at::Half* sm = p.params + (t * p.groups + g) * 2 * kTile;
    const __m256 scale = load_half8(sm), minimum = load_half8(sm + kTile);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      out[r] = _mm256_fmadd_ps(scale, dot[r], out[r]);
      out[r] = _mm256_fmadd_ps(minimum, _mm256_set1_ps(p.xsum[(r0 + r) * p.groups + g]), out[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    alignas(32) float values[kTile];
    _mm256_store_ps(values, out[r]);
    store_tile(p, r0 + r, t, values);
  }
}

AVX2 void avx2_rows(const Problem& p, int64_t t0, int64_t t1) {
  for (int64_t t = t0; t < t1; ++t) {
    int64_t r = 0;
    for (; r + kRowBlock <= p.rows; r += kRowBlock) avx2_row_block<kRowBlock>(p, t, r);
    switch (p.rows - r) {
      case 7: avx2_row_block<7>(p, t, r); break;
      case 6: avx2_row_block<6>(p, t, r); break;
      case 5: avx2_row_block<5>(p, t, r); break;
      case 4: avx2_row_block<4>(p, t, r); break;
      case 3: avx2_row_block<3>(p, t, r); break;
      case 2: avx2_row_block<2>(p, t, r); break;
      case 1: avx2_row_block<1>(p, t, r); break;
      default: break;
    }
  }
}

bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c");
  return has;
}

at::Tensor int4_mm(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& params,
                   int64_t out_features, int64_t group_size, bool vectorized) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 2,
              "int4_mm: x must be a 2-D float32 CPU tensor");
  TORCH_CHECK(codes.scalar_type() == at::kInt && codes.dim() == 2 && codes.is_contiguous(),
              "int4_mm: codes must be a contiguous int32 [tiles, in] tensor");
  TORCH_CHECK(params.scalar_type() == at::kShort && params.is_contiguous(),
              "int4_mm: params must be contiguous int16 (float16 bit patterns)");
  const int64_t K = codes.size(1), tiles = codes.size(0);
  TORCH_CHECK(group_size > 0 && group_size % 8 == 0 && K % group_size == 0,
              "int4_mm: group_size must be a multiple of 8 dividing the inputs");
  TORCH_CHECK(x.size(1) == K, "int4_mm: x has ", x.size(1), " inputs, the weight ", K);
  TORCH_CHECK(out_features > (tiles - 1) * kTile && out_features <= tiles * kTile,
              "int4_mm: ", tiles, " tiles do not hold ", out_features, " outputs");
  const int64_t groups = K / group_size;
  TORCH_CHECK(params.numel() == tiles * groups * 2 * kTile, "int4_mm: params have the wrong size");

  const at::Tensor xc = x.contiguous();
  const int64_t rows = xc.size(0);
  // Summed here, not by a torch op: at a few microseconds per dispatch, that would show.
  std::vector<float> xsum(rows * groups, 0.0f);
  const float* xp = xc.data_ptr<float>();
  for (int64_t i = 0; i < rows * groups; ++i) {
    for (int64_t k = 0; k < group_size; ++k) xsum[i] += xp[i * group_size + k];
  }
  at::Tensor y = at::empty({rows, out_features}, xc.options());
  const Problem p{xp,
                  xsum.data(),
                  reinterpret_cast<const uint32_t*>(codes.data_ptr<int32_t>()),
                  reinterpret_cast<const at::Half*>(params.data_ptr<int16_t>()),
                  y.data_ptr<float>(),
                  rows, K, out_features, group_size, groups};
  const bool avx2 = vectorized && cpu_has_avx2();
  const int64_t grain = streamgate::grain_for(rows * K * kTile, kGrain);
  at::parallel_for(0, tiles, grain, [&](int64_t t0, int64_t t1) {
    if (!avx2) {
      scalar_tiles(p, t0, t1);
    } else if (rows == 1) {
      avx2_one_row(p, t0, t1);
    } else {
      avx2_rows(p, t0, t1);
    }
  });
  return y;
}

// The float32 weight, transposed: [K, N], w = q * scale + minimum (q * scale is exact, so the
// sum is rounded once, as in Int4Blocks.dequantize). For big row counts (long prefills) a
// float32 GEMM on it beats the kernel above; written in the [K, N] order that GEMM reads.
at::Tensor int4_dequantize_t(const at::Tensor& codes, const at::Tensor& params,
                             int64_t out_features, int64_t group_size) {
  TORCH_CHECK(codes.scalar_type() == at::kInt && codes.dim() == 2 && codes.is_contiguous() &&
                  params.scalar_type() == at::kShort && params.is_contiguous(),
              "int4_dequantize_t: codes int32 [tiles, in] and params int16, contiguous");
  const int64_t K = codes.size(1), tiles = codes.size(0), N = out_features;
  TORCH_CHECK(group_size > 0 && K % group_size == 0 && N > (tiles - 1) * kTile &&
                  N <= tiles * kTile,
              "int4_dequantize_t: shapes do not match");
  const int64_t groups = K / group_size;
  at::Tensor w = at::empty({K, N}, codes.options().dtype(at::kFloat));
  const uint32_t* words = reinterpret_cast<const uint32_t*>(codes.data_ptr<int32_t>());
  const at::Half* sm = reinterpret_cast<const at::Half*>(params.data_ptr<int16_t>());
  float* out = w.data_ptr<float>();
  at::parallel_for(0, tiles, streamgate::grain_for(K * kTile, kGrain), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n0 = t * kTile, count = std::min<int64_t>(kTile, N - n0);
      for (int64_t g = 0; g < groups; ++g) {
        const at::Half* pair = sm + (t * groups + g) * 2 * kTile;
        float scale[kTile], minimum[kTile];
        for (int64_t j = 0; j < kTile; ++j) {
          scale[j] = static_cast<float>(pair[j]);
          minimum[j] = static_cast<float>(pair[kTile + j]);
        }
        for (int64_t k = g * group_size; k < (g + 1) * group_size; ++k) {
          const uint32_t word = words[t * K + k];
          float* row = out + k * N + n0;
          for (int64_t j = 0; j < count; ++j) {
            row[j] = static_cast<float>((word >> (4 * j)) & 15u) * scale[j] + minimum[j];
          }
        }
      }
    }
  });
  return w;
}

}  // namespace

TORCH_LIBRARY(streamgate_kernels, m) {
  m.def("int4_mm(Tensor x, Tensor codes, Tensor params, int out_features, int group_size, "
        "bool vectorized) -> Tensor");
  m.def("int4_dequantize_t(Tensor codes, Tensor params, int out_features, int group_size) "
        "-> Tensor");
  m.def("has_avx2() -> bool", &cpu_has_avx2);
}

TORCH_LIBRARY_IMPL(streamgate_kernels, CPU, m) {
  m.impl("int4_mm", int4_mm);
  m.impl("int4_dequantize_t", int4_dequantize_t);
}
