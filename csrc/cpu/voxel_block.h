// Shared machinery of the CPU kernels: the voxel axis is cut into fixed blocks
// of kBlock voxels of one batch item; each block is gathered into small
// per-class buffers in the math type (float, or double for float64 input) and
// processed with at::vec::Vectorized, so the class loop (C is 2..8 in practice)
// stays short and the voxel loop is SIMD. Blocks are grouped into fixed-size
// chunks whose partial sums are reduced in a fixed order: results do not
// depend on the number of threads.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include "fast_math.h"

#include <atomic>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace pyseg_noise {
namespace cpu {

constexpr int64_t kBlock = 256;         // voxels per block (a multiple of every SIMD width)
constexpr int64_t kBlocksPerChunk = 32; // blocks per reduction chunk (8192 voxels)

enum class Reduction { None, Mean, Sum };

inline Reduction parse_reduction(const char* op, c10::string_view r) {
  if (r == "mean") return Reduction::Mean;
  if (r == "sum") return Reduction::Sum;
  if (r == "none") return Reduction::None;
  TORCH_CHECK_VALUE(false, op, ": reduction must be 'mean', 'sum' or 'none', got '", std::string(r), "'");
}

// Geometry of a [B, C, *S] tensor made contiguous: N voxels per item.
struct Geometry {
  int64_t B = 0, C = 0, N = 0;
  int64_t blocks_per_item = 0, chunks_per_item = 0;
  int64_t n_chunks() const { return B * chunks_per_item; }
};

inline Geometry geometry_of(const at::Tensor& logits) {
  Geometry g;
  g.B = logits.size(0);
  g.C = logits.size(1);
  g.N = logits.numel() / std::max<int64_t>(1, g.B * g.C);
  g.blocks_per_item = (g.N + kBlock - 1) / kBlock;
  g.chunks_per_item = (g.blocks_per_item + kBlocksPerChunk - 1) / kBlocksPerChunk;
  return g;
}

// Slicing of the spatial axes for the image-level ops: voxel n of an item lies
// in slice (n / inner) % n_slices. 2D input (two spatial axes) is one slice.
struct Slicing {
  int64_t n_slices = 1, inner = 1;
};

inline Slicing slicing_of(at::IntArrayRef spatial, int64_t slice_dim, const char* op) {
  Slicing s;
  const int64_t nd = static_cast<int64_t>(spatial.size());
  if (nd <= 2) {
    s.n_slices = 1;
    s.inner = 1;
    for (auto v : spatial) s.inner *= v;
    return s;
  }
  TORCH_CHECK(slice_dim >= -nd && slice_dim < nd, op, ": slice_dim must index one of the ", nd,
              " spatial axes (", -nd, "..", nd - 1, "), got ", slice_dim);
  const int64_t d = slice_dim < 0 ? slice_dim + nd : slice_dim;
  s.n_slices = spatial[d];
  for (int64_t k = d + 1; k < nd; ++k) s.inner *= spatial[k];
  return s;
}

// Walks the slice index of consecutive voxels without a division per voxel.
struct SliceCursor {
  int64_t inner, n_slices, r, slice;
  SliceCursor(const Slicing& s, int64_t n0)
      : inner(s.inner), n_slices(s.n_slices), r(n0 % s.inner), slice((n0 / s.inner) % s.n_slices) {}
  inline void next() {
    if (++r == inner) {
      r = 0;
      if (++slice == n_slices) slice = 0;
    }
  }
};

// Reads target values of any integer (or bool) dtype into int64, recording
// the first value outside [0, C) instead of throwing inside a parallel region.
struct TargetReader {
  const void* ptr;
  at::ScalarType type;
  int64_t C;
  std::atomic<bool>* bad;
  std::atomic<int64_t>* bad_value;

  // Labels off .. off + cnt as O (int32 for the block path, the math type T
  // for the register paths, which compare labels as T). Branch-free range test
  // (vectorizes); the rare bad block is rescanned and its bad labels set to 0.
  template <typename I, typename O>
  inline void load_as(const I* p, int64_t off, int64_t cnt, O* t) const {
    uint64_t out_of_range = 0;
    for (int64_t j = 0; j < cnt; ++j) {
      const int64_t v = static_cast<int64_t>(p[off + j]);
      out_of_range |= static_cast<uint64_t>(static_cast<uint64_t>(v) >= static_cast<uint64_t>(C));
      t[j] = static_cast<O>(v);
    }
    if (out_of_range) {
      for (int64_t j = 0; j < cnt; ++j) {
        const int64_t v = static_cast<int64_t>(p[off + j]);
        if (v < 0 || v >= C) {
          if (!bad->exchange(true)) bad_value->store(v);
          t[j] = O(0);
        }
      }
    }
  }

  template <typename O>
  inline void load(int64_t off, int64_t cnt, O* t) const {
    switch (type) {
      case at::kByte: load_as(static_cast<const uint8_t*>(ptr), off, cnt, t); break;
      case at::kBool: load_as(static_cast<const bool*>(ptr), off, cnt, t); break;
      case at::kChar: load_as(static_cast<const int8_t*>(ptr), off, cnt, t); break;
      case at::kShort: load_as(static_cast<const int16_t*>(ptr), off, cnt, t); break;
      case at::kInt: load_as(static_cast<const int32_t*>(ptr), off, cnt, t); break;
      case at::kLong: load_as(static_cast<const int64_t*>(ptr), off, cnt, t); break;
      default: TORCH_INTERNAL_ASSERT(false, "unsupported target dtype");
    }
  }
};

struct TargetCheck {
  std::atomic<bool> bad{false};
  std::atomic<int64_t> bad_value{0};
  TargetReader reader(const at::Tensor& target, int64_t C) {
    return TargetReader{target.data_ptr(), target.scalar_type(), C, &bad, &bad_value};
  }
  void raise_if_bad(const char* op, int64_t C) const {
    TORCH_CHECK_VALUE(!bad.load(), op, ": target has value ", bad_value.load(), " but logits have C=", C,
                      " classes (valid labels are 0..", C - 1, ")");
  }
};

inline void check_target_dtype(const char* op, const at::Tensor& target) {
  const auto t = target.scalar_type();
  TORCH_CHECK_TYPE(t == at::kByte || t == at::kBool || t == at::kChar || t == at::kShort || t == at::kInt ||
                       t == at::kLong,
                   op, ": target must be an integer tensor of class indices, got dtype ", t);
}

// Per-class buffers of one block in the math type T.
template <typename T>
struct BlockBuffers {
  int64_t C;
  std::vector<T> storage;
  T *x, *p, *s, *a, *b, *c, *d, *tf;
  std::vector<int32_t> t;  // target (validated, so it fits)
  explicit BlockBuffers(int64_t C_) : C(C_), storage((3 * C_ + 5) * kBlock), t(kBlock) {
    T* q = storage.data();
    x = q; q += C * kBlock;   // logits
    p = q; q += C * kBlock;   // teacher probabilities
    s = q; q += C * kBlock;   // softmax
    a = q; q += kBlock;       // per-voxel scratch
    b = q; q += kBlock;
    c = q; q += kBlock;
    d = q; q += kBlock;
    tf = q;                   // target as T (for vector compares)
  }
};

// Gathers `cnt` voxels starting at n0 of channel-planar data (plane stride N)
// into buf[c * kBlock + j]; pads the rest of the block with `pad`.
template <typename scalar_t, typename T>
inline void gather_planes(const scalar_t* base, int64_t C, int64_t N, int64_t n0, int64_t cnt, T pad, T* buf) {
  for (int64_t c = 0; c < C; ++c) {
    const scalar_t* src = base + c * N + n0;
    T* dst = buf + c * kBlock;
    for (int64_t j = 0; j < cnt; ++j) dst[j] = static_cast<T>(src[j]);
    for (int64_t j = cnt; j < kBlock; ++j) dst[j] = pad;
  }
}

// s = softmax_C(x) over the block; with ce, also the cross-entropy for the
// labels tf (as T) per voxel, ce = logsumexp(x) - x[target] formed as
// (max - x[target]) + log sum_c exp(x_c - max): the difference of two logits is
// exact where logsumexp - x[target] would lose a small ce to rounding once
// |logits| is large.
template <typename T>
inline void block_softmax(const T* x, int64_t C, T* s, const T* tf = nullptr, T* ce = nullptr) {
  using Vec = at::vec::Vectorized<T>;
  for (int64_t j = 0; j < kBlock; j += Vec::size()) {
    Vec m = Vec::loadu(x + j);
    for (int64_t c = 1; c < C; ++c) m = at::vec::maximum(m, Vec::loadu(x + c * kBlock + j));
    Vec z(T(0));
    for (int64_t c = 0; c < C; ++c) {
      Vec e = vexp(Vec::loadu(x + c * kBlock + j) - m);
      e.store(s + c * kBlock + j);
      z = z + e;
    }
    const Vec inv = Vec(T(1)) / z;
    for (int64_t c = 0; c < C; ++c) (Vec::loadu(s + c * kBlock + j) * inv).store(s + c * kBlock + j);
    if (ce != nullptr) {
      const Vec t = Vec::loadu(tf + j);
      Vec xt(T(0));
      for (int64_t c = 0; c < C; ++c) xt = where_eq(t, Vec(T(c)), Vec::loadu(x + c * kBlock + j), xt);
      ((m - xt) + vlog(z)).store(ce + j);
    }
  }
}

// u = -sum_c p_c log p_c with 0 log 0 = 0.
template <typename T>
inline void block_entropy(const T* p, int64_t C, T* u) {
  using Vec = at::vec::Vectorized<T>;
  const Vec tiny(std::numeric_limits<T>::min());
  for (int64_t j = 0; j < kBlock; j += Vec::size()) {
    Vec acc(T(0));
    for (int64_t c = 0; c < C; ++c) {
      const Vec pc = Vec::loadu(p + c * kBlock + j);
      // p = 0 gives 0 * log(tiny) = 0; NaN propagates.
      acc = acc - pc * vlog(at::vec::maximum(pc, tiny));
    }
    acc.store(u + j);
  }
}

// Index (as T) of the largest teacher probability, ties to the lowest class.
template <typename T>
inline void block_argmax(const T* p, int64_t C, T* k) {
  using Vec = at::vec::Vectorized<T>;
  for (int64_t j = 0; j < kBlock; j += Vec::size()) {
    Vec best = Vec::loadu(p + j);
    Vec idx(T(0));
    for (int64_t c = 1; c < C; ++c) {
      const Vec pc = Vec::loadu(p + c * kBlock + j);
      idx = where_gt(pc, best, Vec(T(c)), idx);  // strict: ties keep the lower index
      best = where_gt(pc, best, pc, best);
    }
    idx.store(k + j);
  }
}

// Calls f(std::integral_constant<int, C>) for the common class counts 2-4 (the
// class loops then unroll and the values stay in registers), else with 0 (C
// read at run time).
template <typename F>
inline void dispatch_classes(int64_t C, F&& f) {
  switch (C) {
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    default: f(std::integral_constant<int, 0>{}); break;
  }
}

// Pseudo label of class c: teacher probability (soft) or one-hot of argmax (hard).
template <typename T>
inline at::vec::Vectorized<T> pseudo_label(bool hard, const T* p, const T* k, int64_t c, int64_t j) {
  using Vec = at::vec::Vectorized<T>;
  if (!hard) return Vec::loadu(p + c * kBlock + j);
  return where_eq(Vec::loadu(k + j), Vec(T(c)), Vec(T(1)), Vec(T(0)));
}

template <typename T>
inline T vec_sum(const at::vec::Vectorized<T>& v) {
  T lanes[at::vec::Vectorized<T>::size()];
  v.store(lanes);
  T acc = T(0);
  for (int64_t l = 0; l < at::vec::Vectorized<T>::size(); ++l) acc += lanes[l];
  return acc;
}

template <typename T>
inline bool any_nan(const T* v, int64_t cnt) {
  bool nan = false;
  for (int64_t j = 0; j < cnt; ++j) nan |= std::isnan(v[j]);
  return nan;
}

// Loads n <= Vec::size() values of any floating (or integer) type S as a
// Vectorized<T>; lanes past n are zero. Same-type loads stay a single loadu.
template <typename T, typename S>
inline at::vec::Vectorized<T> load_vec(const S* p, int64_t n) {
  using Vec = at::vec::Vectorized<T>;
  if constexpr (std::is_same_v<S, T>) {
    return n == Vec::size() ? Vec::loadu(p) : Vec::loadu(p, n);
  } else {
    if constexpr (std::is_same_v<T, float> && at::vec::is_reduced_floating_point_v<S>) {
      if (n == Vec::size()) {  // half/bfloat16 -> float in one vector instruction
        Vec out;
        at::vec::load_to_float(p, out);
        return out;
      }
    }
    T tmp[Vec::size()] = {};
    if (n == Vec::size()) {
      // A constant trip count lets the compiler emit one vector conversion.
      for (int64_t q = 0; q < Vec::size(); ++q) tmp[q] = static_cast<T>(p[q]);
    } else {
      for (int64_t q = 0; q < n; ++q) tmp[q] = static_cast<T>(p[q]);
    }
    return Vec::loadu(tmp);
  }
}

// The labels off .. off + n (n <= Vec::size(), checked as TargetReader::load
// does) as a Vectorized<T>, lanes past n zero. The register paths read labels
// vector by vector, next to the logits, so their cache misses overlap the math
// (a block's labels read at once stalled on that first touch; software
// prefetch of the block two ahead moved the stall onto the prefetches once
// the miss buffers filled, and measured slower than the hardware prefetcher).
template <typename T>
inline at::vec::Vectorized<T> load_labels(const TargetReader& reader, int64_t off, int64_t n) {
  using Vec = at::vec::Vectorized<T>;
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<T, float>) {
    // int64 labels (torch's default) in registers: two loads, one unsigned range
    // test for both halves (a negative label is a huge unsigned one), two
    // conversions; a vector with a bad label takes the checked path below.
    if (reader.type == at::kLong && n == Vec::size()) {
      const int64_t* p = static_cast<const int64_t*>(reader.ptr) + off;
      const __m512i lo = _mm512_loadu_si512(p), hi = _mm512_loadu_si512(p + 8);
      const __m512i c = _mm512_set1_epi64(reader.C);
      if ((_mm512_cmpge_epu64_mask(lo, c) | _mm512_cmpge_epu64_mask(hi, c)) == 0)
        return _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtepi64_ps(lo)), _mm512_cvtepi64_ps(hi), 1);
    }
  }
#endif
  alignas(64) T t[Vec::size()];
  if (n == Vec::size()) {
    reader.load(off, Vec::size(), t);
    return Vec::loadu(t);
  }
  reader.load(off, n, t);
  return load_vec<T>(t, n);
}

// Stores the first n lanes of v into p, converting to S.
template <typename S, typename T>
inline void store_vec(S* p, const at::vec::Vectorized<T>& v, int64_t n) {
  using Vec = at::vec::Vectorized<T>;
  if constexpr (std::is_same_v<S, T>) {
    if (n == Vec::size()) v.store(p); else v.store(p, n);
  } else {
    if constexpr (std::is_same_v<T, float> && at::vec::is_reduced_floating_point_v<S>) {
      if (n == Vec::size()) {  // float -> half/bfloat16 (round to nearest even), one vector
        at::vec::convert_from_float<S>(v, v).store(p, Vec::size());
        return;
      }
    }
    T tmp[Vec::size()];
    v.store(tmp);
    if (n == Vec::size()) {
      for (int64_t q = 0; q < Vec::size(); ++q) p[q] = static_cast<S>(tmp[q]);
    } else {
      for (int64_t q = 0; q < n; ++q) p[q] = static_cast<S>(tmp[q]);
    }
  }
}

// store_vec with a non-temporal store for a full, aligned float vector: large
// outputs (a gradient the size of the logits) then go to memory without being
// read first and without evicting the inputs from the cache. Callers end their
// parallel region with stream_fence().
template <typename S, typename T>
inline void store_vec_stream(S* p, const at::vec::Vectorized<T>& v, int64_t n) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<S, float> && std::is_same_v<T, float>) {
    if (n == 16 && (reinterpret_cast<uintptr_t>(p) & 63) == 0) {
      _mm512_stream_ps(p, v);
      return;
    }
  }
#elif defined(CPU_CAPABILITY_AVX2)
  if constexpr (std::is_same_v<S, float> && std::is_same_v<T, float>) {
    if (n == 8 && (reinterpret_cast<uintptr_t>(p) & 31) == 0) {
      _mm256_stream_ps(p, v);
      return;
    }
  }
#endif
  store_vec(p, v, n);
}

inline void stream_fence() {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  _mm_sfence();
#endif
}

// Sums chunk partials in a fixed order.
inline double ordered_sum(const std::vector<double>& parts) {
  double acc = 0.0;
  for (double v : parts) acc += v;
  return acc;
}

}  // namespace cpu
}  // namespace pyseg_noise
