// The decoder layer's small operations, one call each instead of a chain of torch ops: RMS norm
// (with the residual add before it), rotary embedding with the write of the step's keys and
// values into the paged cache, and decode attention read straight from the paged cache.
//
// At one row per sequence each of these is a few microseconds of arithmetic; as chains of
// torch ops called from Python they cost 20-60 us each (dispatch, temporaries), 30 layers per
// step. decoder.py holds the torch code computing the same things (the fallback, and the
// reference of the tests). All tensors are float32 on the CPU.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <immintrin.h>

#include "parallel.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

namespace {

constexpr int64_t kLanes = 8;  // partial sums kept apart, so that loops vectorize

// Root mean square normalization of n values: out = x / sqrt(mean(x^2) + eps) * weight.
void norm_row(const float* x, const float* weight, float* out, int64_t n, double eps) {
  float partial[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) partial[j] += x[i + j] * x[i + j];
  }
  float squares = 0.0f;
  for (; i < n; ++i) squares += x[i] * x[i];
  for (float p : partial) squares += p;
  const float inverse = 1.0f / std::sqrt(squares / static_cast<float>(n) + static_cast<float>(eps));
  for (int64_t k = 0; k < n; ++k) out[k] = x[k] * inverse * weight[k];
}

void check_rows(const at::Tensor& x, const at::Tensor& weight, const char* op) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 2 &&
                  x.stride(1) == 1,
              op, ": x must be a float32 CPU tensor [rows, hidden] with contiguous rows");
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.dim() == 1 &&
                  weight.size(0) == x.size(1) && weight.is_contiguous(),
              op, ": weight must be a contiguous float32 [hidden] tensor");
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check_rows(x, weight, "rms_norm");
  const int64_t rows = x.size(0), n = x.size(1);
  at::Tensor out = at::empty({rows, n}, x.options());
  const float* xp = x.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    norm_row(xp + r * x.stride(0), weight.data_ptr<float>(), out.data_ptr<float>() + r * n, n,
             eps);
  }
  return out;
}

// (x + delta, rms_norm(x + delta)): the residual stream and the next sublayer's input.
std::tuple<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& delta,
                                                const at::Tensor& weight, double eps) {
  check_rows(x, weight, "add_rms_norm");
  check_rows(delta, weight, "add_rms_norm");
  TORCH_CHECK(delta.size(0) == x.size(0), "add_rms_norm: x and delta differ in rows");
  const int64_t rows = x.size(0), n = x.size(1);
  at::Tensor sum = at::empty({rows, n}, x.options());
  at::Tensor out = at::empty({rows, n}, x.options());
  for (int64_t r = 0; r < rows; ++r) {
    const float* a = x.data_ptr<float>() + r * x.stride(0);
    const float* b = delta.data_ptr<float>() + r * delta.stride(0);
    float* s = sum.data_ptr<float>() + r * n;
    for (int64_t k = 0; k < n; ++k) s[k] = a[k] + b[k];
    norm_row(s, weight.data_ptr<float>(), out.data_ptr<float>() + r * n, n, eps);
  }
  return {sum, out};
}

// Rotates the query and key heads of qkv [rows, heads + 2 * kv_heads, dim] by each row's
// position (rotate-half layout: cos/sin [rows, dim] hold each frequency twice), and writes the
// rotated keys and the values of row r to cache slot slots[r]. Returns the rotated query and
// key heads [rows, heads + kv_heads, dim]. Each element is x * cos + (-/+)x' * sin, rounded as
// torch's two products and sum are (no fused multiply-add in this file's default target).
at::Tensor rope_and_cache(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                          const at::Tensor& slots, at::Tensor& k_cache, at::Tensor& v_cache,
                          int64_t heads, int64_t kv_heads) {
  TORCH_CHECK(qkv.device().is_cpu() && qkv.scalar_type() == at::kFloat && qkv.dim() == 3 &&
                  qkv.is_contiguous(),
              "rope_and_cache: qkv must be a contiguous float32 CPU tensor [rows, heads, dim]");
  const int64_t rows = qkv.size(0), dim = qkv.size(2), half = dim / 2;
  TORCH_CHECK(qkv.size(1) == heads + 2 * kv_heads && dim % 2 == 0,
              "rope_and_cache: qkv holds ", qkv.size(1), " heads of ", dim, ", expected ",
              heads + 2 * kv_heads, " of an even size");
  for (const at::Tensor* table : {&cos, &sin}) {
    TORCH_CHECK(table->scalar_type() == at::kFloat && table->is_contiguous() &&
                    table->numel() == rows * dim,
                "rope_and_cache: cos and sin must be contiguous float32 [rows, dim]");
  }
  TORCH_CHECK(slots.scalar_type() == at::kLong && slots.dim() == 1 && slots.size(0) == rows &&
                  slots.is_contiguous(),
              "rope_and_cache: slots must be a contiguous int64 [rows] tensor");
  for (const at::Tensor* cache : {&k_cache, &v_cache}) {
    TORCH_CHECK(cache->scalar_type() == at::kFloat && cache->is_contiguous() &&
                    cache->dim() == 3 && cache->size(1) == kv_heads && cache->size(2) == dim,
                "rope_and_cache: the caches must be contiguous float32 [slots, kv_heads, dim]");
  }
  const int64_t rotated = heads + kv_heads, capacity = k_cache.size(0);
  at::Tensor out = at::empty({rows, rotated, dim}, qkv.options());
  const int64_t* slot = slots.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK(slot[r] >= 0 && slot[r] < capacity, "rope_and_cache: slot ", slot[r],
                " outside the cache's ", capacity);
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* c = cos.data_ptr<float>() + r * dim;
    const float* s = sin.data_ptr<float>() + r * dim;
    const float* in = qkv.data_ptr<float>() + r * qkv.size(1) * dim;
    float* o = out.data_ptr<float>() + r * rotated * dim;
    for (int64_t h = 0; h < rotated; ++h) {
      const float* x = in + h * dim;
      float* y = o + h * dim;
      for (int64_t i = 0; i < half; ++i) {
        const float a = x[i] * c[i], b = -x[i + half] * s[i];
        y[i] = a + b;
      }
      for (int64_t i = half; i < dim; ++i) {
        const float a = x[i] * c[i], b = x[i - half] * s[i];
        y[i] = a + b;
      }
    }
    const int64_t row_bytes = kv_heads * dim;
    std::copy(o + heads * dim, o + rotated * dim, k_cache.data_ptr<float>() + slot[r] * row_bytes);
    std::copy(in + rotated * dim, in + (rotated + kv_heads) * dim,
              v_cache.data_ptr<float>() + slot[r] * row_bytes);
  }
  return out;
}

// silu(gate) * up of gate_up [rows, 2 * size] (gate first): the SwiGLU activation.
void scalar_silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

// Declared here, defined with the other AVX2 code below.
void avx2_silu_mul(const float* gate, const float* up, float* out, int64_t n);
bool cpu_has_avx2_fma();

at::Tensor silu_mul(const at::Tensor& gate_up, bool vectorized) {
  TORCH_CHECK(gate_up.device().is_cpu() && gate_up.scalar_type() == at::kFloat &&
                  gate_up.dim() == 2 && gate_up.stride(1) == 1 && gate_up.size(1) % 2 == 0,
              "silu_mul: gate_up must be a float32 CPU tensor [rows, 2 * size], rows contiguous");
  const int64_t rows = gate_up.size(0), n = gate_up.size(1) / 2;
  at::Tensor out = at::empty({rows, n}, gate_up.options());
  const bool avx2 = vectorized && cpu_has_avx2_fma();
  for (int64_t r = 0; r < rows; ++r) {
    const float* gate = gate_up.data_ptr<float>() + r * gate_up.stride(0);
    float* o = out.data_ptr<float>() + r * n;
    if (avx2) {
      avx2_silu_mul(gate, gate + n, o, n);
    } else {
      scalar_silu_mul(gate, gate + n, o, n);
    }
  }
  return out;
}

// ---- Decode attention over the paged cache ----
//
// One query row per sequence; its keys and values are read in place, block by block, through
// the sequence's block table (no gathered copy). Per sequence and key/value head, the query
// heads sharing that head (grouped-query attention) are scored together, so each key row is
// read once for all of them. Softmax subtracts the maximum score, as SDPA does.

struct Attention {
  const float* q;  // [batch, heads, dim], strides below
  int64_t q_batch_stride, q_head_stride;
  const float* k;  // [slots, kv_heads, dim]
  const float* v;
  const int64_t* tables;  // [batch, width]
  const int64_t* lengths; // [batch]
  float* out;             // [batch, heads, dim]
  int64_t heads, kv_heads, dim, width, block_size;
  float scale;
};

// Offsets in the caches of sequence b's key/value rows of head g, position by position (built
// block by block: a division per position would cost more than the dot products).
void row_offsets(const Attention& a, int64_t b, int64_t g, std::vector<int64_t>& rows) {
  const int64_t length = a.lengths[b], stride = a.kv_heads * a.dim;
  for (int64_t t0 = 0, i = 0; t0 < length; t0 += a.block_size, ++i) {
    const int64_t first = a.tables[b * a.width + i] * a.block_size * stride + g * a.dim;
    const int64_t count = std::min(a.block_size, length - t0);
    for (int64_t o = 0; o < count; ++o) rows[t0 + o] = first + o * stride;
  }
}

void scalar_attend(const Attention& a, int64_t b, int64_t g, const std::vector<int64_t>& rows,
                   std::vector<float>& scores) {
  const int64_t group = a.heads / a.kv_heads, length = a.lengths[b];
  for (int64_t h = 0; h < group; ++h) {
    const int64_t head = g * group + h;
    const float* q = a.q + b * a.q_batch_stride + head * a.q_head_stride;
    float* p = scores.data();
    float top = -std::numeric_limits<float>::infinity();
    for (int64_t t = 0; t < length; ++t) {
      const float* k = a.k + rows[t];
      float dot = 0.0f;
      for (int64_t i = 0; i < a.dim; ++i) dot += q[i] * k[i];
      p[t] = dot * a.scale;
      top = std::max(top, p[t]);
    }
    float total = 0.0f;
    for (int64_t t = 0; t < length; ++t) total += (p[t] = std::exp(p[t] - top));
    float* o = a.out + (b * a.heads + head) * a.dim;
    std::fill(o, o + a.dim, 0.0f);
    for (int64_t t = 0; t < length; ++t) {
      const float* v = a.v + rows[t];
      for (int64_t i = 0; i < a.dim; ++i) o[i] += p[t] * v[i];
    }
    for (int64_t i = 0; i < a.dim; ++i) o[i] /= total;
  }
}

#define AVX2 __attribute__((target("avx2,fma")))

// exp(x), Cephes' polynomial (relative error ~1e-7), for x in [-87, 88] (clamped to it:
// exp(-87) ~ 1.6e-38 is still a normal float, exp(88) ~ 1.7e38 still finite).
AVX2 inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f),
                                             _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i exponent = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(exponent));
}

AVX2 inline float sum8(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// The AVX2 loop takes dim % 8 == 0 (64 and 128 in every model here) and up to 8 query heads
// per key/value head; other shapes take the scalar loop.
constexpr int64_t kMaxGroup = 8;

AVX2 void avx2_attend(const Attention& a, int64_t b, int64_t g, const std::vector<int64_t>& rows,
                      std::vector<float>& scores) {
  const int64_t group = a.heads / a.kv_heads, length = a.lengths[b], dim = a.dim;
  const float* q[kMaxGroup];
  for (int64_t h = 0; h < group; ++h) {
    q[h] = a.q + b * a.q_batch_stride + (g * group + h) * a.q_head_stride;
  }
  // Scores [group, length]: each key row is read once for every query head of the group.
  for (int64_t t = 0; t < length; ++t) {
    const float* k = a.k + rows[t];
    __m256 acc[kMaxGroup];
    for (int64_t h = 0; h < group; ++h) acc[h] = _mm256_setzero_ps();
    for (int64_t i = 0; i < dim; i += 8) {
      const __m256 kv = _mm256_loadu_ps(k + i);
      for (int64_t h = 0; h < group; ++h) {
        acc[h] = _mm256_fmadd_ps(_mm256_loadu_ps(q[h] + i), kv, acc[h]);
      }
    }
    for (int64_t h = 0; h < group; ++h) scores[h * length + t] = sum8(acc[h]) * a.scale;
  }
  for (int64_t h = 0; h < group; ++h) {
    float* p = scores.data() + h * length;
    const float top = *std::max_element(p, p + length);
    const __m256 shift = _mm256_set1_ps(top);
    __m256 totals = _mm256_setzero_ps();
    int64_t t = 0;
    for (; t + 8 <= length; t += 8) {
      const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p + t), shift));
      _mm256_storeu_ps(p + t, e);
      totals = _mm256_add_ps(totals, e);
    }
    float total = sum8(totals);
    if (t < length) {  // the tail, padded with -inf's stand-in (exp -> 0)
      alignas(32) float tail[8];
      std::fill(tail, tail + 8, -1e30f);
      std::copy(p + t, p + length, tail);
      _mm256_store_ps(tail, exp8(_mm256_sub_ps(_mm256_load_ps(tail), shift)));
      for (int64_t j = 0; t + j < length; ++j) total += (p[t + j] = tail[j]);
    }
    // Weighted values, normalized once at the end.
    float* o = a.out + (b * a.heads + g * group + h) * dim;
    std::fill(o, o + dim, 0.0f);
    for (int64_t s = 0; s < length; ++s) {
      const float* v = a.v + rows[s];
      const __m256 weight = _mm256_set1_ps(p[s]);
      for (int64_t i = 0; i < dim; i += 8) {
        _mm256_storeu_ps(o + i, _mm256_fmadd_ps(weight, _mm256_loadu_ps(v + i),
                                                _mm256_loadu_ps(o + i)));
      }
    }
    const __m256 inverse = _mm256_set1_ps(1.0f / total);
    for (int64_t i = 0; i < dim; i += 8) {
      _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_loadu_ps(o + i), inverse));
    }
  }
}

AVX2 void avx2_silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
    const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
  }
  scalar_silu_mul(gate + i, up + i, out + i, n - i);
}

bool cpu_has_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

// q [batch, heads, dim] (any strides with contiguous heads), caches [slots, kv_heads, dim],
// tables int64 [batch, width] (block ids; entries past a sequence's length are not read),
// lengths int64 [batch]. Returns [batch, heads, dim].
at::Tensor paged_attention(const at::Tensor& q, const at::Tensor& k_cache,
                           const at::Tensor& v_cache, const at::Tensor& tables,
                           const at::Tensor& lengths, int64_t block_size, bool vectorized) {
  TORCH_CHECK(q.device().is_cpu() && q.scalar_type() == at::kFloat && q.dim() == 3 &&
                  q.stride(2) == 1,
              "paged_attention: q must be a float32 CPU tensor [batch, heads, dim]");
  const int64_t batch = q.size(0), heads = q.size(1), dim = q.size(2);
  for (const at::Tensor* cache : {&k_cache, &v_cache}) {
    TORCH_CHECK(cache->scalar_type() == at::kFloat && cache->is_contiguous() &&
                    cache->dim() == 3 && cache->size(2) == dim &&
                    cache->size(1) == k_cache.size(1),
                "paged_attention: the caches must be contiguous float32 [slots, kv_heads, dim]");
  }
  const int64_t kv_heads = k_cache.size(1);
  TORCH_CHECK(kv_heads > 0 && heads % kv_heads == 0, "paged_attention: ", heads,
              " query heads cannot share ", kv_heads, " key/value heads");
  TORCH_CHECK(tables.scalar_type() == at::kLong && tables.dim() == 2 &&
                  tables.size(0) == batch && tables.is_contiguous(),
              "paged_attention: tables must be a contiguous int64 [batch, blocks] tensor");
  TORCH_CHECK(lengths.scalar_type() == at::kLong && lengths.dim() == 1 &&
                  lengths.size(0) == batch && lengths.is_contiguous(),
              "paged_attention: lengths must be a contiguous int64 [batch] tensor");
  TORCH_CHECK(block_size > 0, "paged_attention: block_size must be positive");
  const int64_t width = tables.size(1), blocks = k_cache.size(0) / block_size;
  const int64_t* len = lengths.data_ptr<int64_t>();
  const int64_t* table = tables.data_ptr<int64_t>();
  int64_t longest = 0;
  for (int64_t b = 0; b < batch; ++b) {
    TORCH_CHECK(len[b] > 0 && len[b] <= width * block_size, "paged_attention: length ", len[b],
                " of sequence ", b, " does not fit its ", width, " blocks");
    for (int64_t i = 0; i < (len[b] + block_size - 1) / block_size; ++i) {
      TORCH_CHECK(table[b * width + i] >= 0 && table[b * width + i] < blocks,
                  "paged_attention: block ", table[b * width + i], " outside the cache");
    }
    longest = std::max(longest, len[b]);
  }
  at::Tensor out = at::empty({batch, heads, dim}, q.options());
  const Attention a{q.data_ptr<float>(),       q.stride(0), q.stride(1),
                    k_cache.data_ptr<float>(), v_cache.data_ptr<float>(),
                    table,                     len,
                    out.data_ptr<float>(),     heads,
                    kv_heads,                  dim,
                    width,                     block_size,
                    1.0f / std::sqrt(static_cast<float>(dim))};
  const int64_t group = heads / kv_heads;
  const bool avx2 = vectorized && cpu_has_avx2_fma() && dim % 8 == 0 && group <= kMaxGroup;
  // A task: one sequence and key/value head, ~2 * group * dim multiply-adds per position.
  const int64_t grain = streamgate::grain_for(2 * group * dim * longest, 1);
  at::parallel_for(0, batch * kv_heads, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(group * longest);
    std::vector<int64_t> rows(longest);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / kv_heads, g = task % kv_heads;
      row_offsets(a, b, g, rows);
      if (avx2) {
        avx2_attend(a, b, g, rows, scores);
      } else {
        scalar_attend(a, b, g, rows, scores);
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(streamgate_kernels, m) {
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("add_rms_norm(Tensor x, Tensor delta, Tensor weight, float eps) -> (Tensor, Tensor)");
  m.def("rope_and_cache(Tensor qkv, Tensor cos, Tensor sin, Tensor slots, Tensor(a!) k_cache, "
        "Tensor(b!) v_cache, int heads, int kv_heads) -> Tensor");
  m.def("silu_mul(Tensor gate_up, bool vectorized) -> Tensor");
  m.def("paged_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor tables, "
        "Tensor lengths, int block_size, bool vectorized) -> Tensor");
}

TORCH_LIBRARY_IMPL(streamgate_kernels, CPU, m) {
  m.impl("rms_norm", rms_norm);
  m.impl("add_rms_norm", add_rms_norm);
  m.impl("rope_and_cache", rope_and_cache);
  m.impl("silu_mul", silu_mul);
  m.impl("paged_attention", paged_attention);
}
