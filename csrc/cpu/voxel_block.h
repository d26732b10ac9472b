// Shared machinery of the CPU kernels: the voxel axis is cut into fixed blocks
// of kBlock voxels of one batch item, and blocks into fixed-size chunks whose
// partial sums are reduced in a fixed order, so results do not depend on the
// number of threads. Within a block the kernels work on one SIMD vector of
// voxels (at::vec::Vectorized in the math type: float, or double for float64
// input) at a time, its classes in registers (C = 2-4) or in a small
// per-thread buffer (other C); this header holds what they
// share: the geometry, the label reader, the class-count dispatch, the
// per-class vectors and the vector loads and stores of any dtype.
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
  // Chunk k covers blocks [chunk_begin(k), chunk_end(k)) of item chunk_item(k).
  int64_t chunk_item(int64_t k) const { return k / chunks_per_item; }
  int64_t chunk_begin(int64_t k) const { return (k % chunks_per_item) * kBlocksPerChunk; }
  int64_t chunk_end(int64_t k) const { return std::min(chunk_begin(k) + kBlocksPerChunk, blocks_per_item); }
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

  // Labels off .. off + cnt as O (the math type T: the kernels compare labels
  // as T). Branch-free range test
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

// Calls f(std::integral_constant<int, C>) for the common class counts 2-4 (the
// class loops then unroll and the values stay in registers), else with 0 (C
// read at run time). Every kernel takes both through one template.
template <typename F>
inline void dispatch_classes(int64_t C, F&& f) {
  switch (C) {
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    default: f(std::integral_constant<int, 0>{}); break;
  }
}

// The class count of a kernel instantiated for NC (0: C_rt, read at run time).
// Kernels take it inside their parallel region's lambda: a copy captured by
// reference is read from memory there (OpenMP outlines the region), so the
// class loops would no longer unroll for NC > 0 (teacher_uncertainty ran
// twice as slow at C = 2 that way).
template <int NC>
constexpr int64_t class_count(int64_t C_rt) {
  return NC > 0 ? NC : C_rt;
}

// One vector of voxels per class. For a compile-time class count an array
// (kept in registers once the class loops unroll); for NC = 0 a view of C
// vectors of a ClassScratch buffer. The constructor's storage argument is that
// buffer's slot (ignored for NC > 0), so one kernel body serves every C.
template <int NC, typename T>
struct ClassVecs {
  using Vec = at::vec::Vectorized<T>;
  Vec v[NC];
  explicit ClassVecs(Vec* /*storage*/) {}
  Vec& operator[](int64_t c) { return v[c]; }
  const Vec& operator[](int64_t c) const { return v[c]; }
};

template <typename T>
struct ClassVecs<0, T> {
  using Vec = at::vec::Vectorized<T>;
  Vec* v;
  explicit ClassVecs(Vec* storage) : v(storage) {}
  Vec& operator[](int64_t c) { return v[c]; }
  const Vec& operator[](int64_t c) const { return v[c]; }
};

// Per-thread storage behind the ClassVecs of a run-time class count: one
// named slot of C vectors per role, each holding that role only. Nothing is
// allocated for NC > 0 (slot() is then nullptr and unused).
enum class ClassSlot { Logits, Prob, Softmax, Pseudo, Grad, kCount };

template <int NC, typename T>
struct ClassScratch {
  using Vec = at::vec::Vectorized<T>;
  explicit ClassScratch(int64_t /*C*/) {}
  Vec* slot(ClassSlot) { return nullptr; }
};

template <typename T>
struct ClassScratch<0, T> {
  using Vec = at::vec::Vectorized<T>;
  int64_t C;
  std::vector<Vec> store;
  explicit ClassScratch(int64_t C_) : C(C_), store(static_cast<size_t>(C_) * static_cast<int>(ClassSlot::kCount)) {}
  Vec* slot(ClassSlot s) { return store.data() + static_cast<int>(s) * C; }
};

template <typename T>
inline T vec_sum(const at::vec::Vectorized<T>& v) {
  T lanes[at::vec::Vectorized<T>::size()];
  v.store(lanes);
  T acc = T(0);
  for (int64_t l = 0; l < at::vec::Vectorized<T>::size(); ++l) acc += lanes[l];
  return acc;
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
