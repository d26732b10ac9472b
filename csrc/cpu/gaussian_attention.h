// The attention map of SPEC 5 / TSMAN Eq. (7), attention = w * d with
// d_v = [argmax_C a_v != argmax_C b_v] and w a normalized Gaussian, zero
// padded, in-plane or volumetric; and its fused epilogue, the forward of
// tsman_loss (SPEC 6), which needs the same map. Used by loss_attention.cpp
// and tsman_loss.cpp.
//
// The Gaussian is separable: the kernel_size^3 taps of a dense 3-D
// convolution become one 1-D pass per smoothed axis. Seen from the last
// (outermost) smoothed axis, the map is [outer, L, inner] and each row (o, l)
// is a contiguous run of `inner` voxels that holds whole lines of every other
// smoothed axis. So one parallel region over these rows suffices: a thread
// walks its rows in order and, for each input row it needs, reads both
// streams' logits (and for tsman_loss the labels), forms d (and the summed
// cross-entropy ce) and runs the passes along the inner smoothed axes in
// thread-local buffers; it keeps the last kernel_size such rows (and their
// ce) in a ring and emits each output row from it: the pass along the last
// axis, clamped to [0, 1], written in the output dtype, and for tsman_loss
// loss_v = att_v * ce_v (the attention as stored), stored for
// reduction="none" and summed per row. A thread's range that starts inside a
// line recomputes the kernel_size / 2 rows before it. Neither d, the partly
// smoothed map nor ce reaches memory: per voxel the forward reads 2Ce (+ e_t)
// and writes e (+ e), the minimum. (When the last smoothed axis is the
// contiguous one, runs are single voxels: then the partly smoothed map and ce
// go through memory and a second region does the last pass.)
//
// Every value is computed by one thread in a fixed order and the loss is
// summed per row, rows in a fixed order: nothing depends on the number of
// threads.
#pragma once

#include "tsman_terms.h"

namespace pyseg_noise {
namespace cpu {

// The separable Gaussian of SPEC 5: the smoothed axes (innermost first) and
// the normalized 1-D weights. smoothing_plan checks the arguments.
struct SmoothingPlan {
  std::vector<int64_t> axes;
  std::vector<double> w;
};

// [outer, L, inner] view of a map of the given (contiguous) sizes around `axis`.
struct AxisView {
  int64_t outer, L, inner;
  int64_t rows() const { return inner == 1 ? outer : outer * L; }
};

inline AxisView axis_view(int64_t outer0, at::IntArrayRef sizes, int64_t axis) {
  AxisView v{outer0, sizes[axis], 1};
  for (int64_t k = 0; k < axis; ++k) v.outer *= sizes[k];
  for (int64_t k = axis + 1; k < static_cast<int64_t>(sizes.size()); ++k) v.inner *= sizes[k];
  return v;
}

// Optional work of the last pass for tsman_loss: loss_v = att_v * ce_v (att as
// rounded to the output dtype), summed per row and, for reduction="none", stored.
template <typename Out, typename T>
struct LossEpilogue {
  const T* ce = nullptr;      // [B * N]: both streams' cross-entropy, summed
  Out* loss_map = nullptr;    // [B * N] or nullptr
  double* row_sum = nullptr;  // one per row of the pass
};

// Rows staged at once by the contiguous-axis pass of smooth_rows (about 8 KB
// of floats), and a staging buffer that holds them for any line length up to
// L at radius r.
constexpr int64_t kStageValues = 2048;
inline int64_t staged_rows(int64_t L, int64_t r) { return std::max<int64_t>(1, kStageValues / (L + 2 * r)); }
template <typename T>
inline int64_t stage_size(int64_t L, int64_t r) {
  return std::max<int64_t>(kStageValues, L + 2 * r) + at::vec::Vectorized<T>::size();
}

// Rows [row0, row1) of one 1-D pass of the Gaussian along the middle axis of
// src viewed as v = [outer, L, inner] (contiguous), zero padded:
// dst[o, l, i] = sum_k w[k] src[o, l + k - r, i]. A row is (o, l) of `inner`
// values, or (o) of L values when inner == 1; `stage` holds
// stage_size<T>(L, r) values.
template <typename Out, typename T>
void smooth_rows(const T* src, Out* dst, const AxisView& v, const std::vector<T>& w, bool clamp01, int64_t row0,
                 int64_t row1, T* stage, const LossEpilogue<Out, T>& epi = {}) {
  using Vec = at::vec::Vectorized<T>;
  const int64_t K = static_cast<int64_t>(w.size());
  const int64_t r = K / 2;
  const Vec zero(T(0)), one(T(1));
  // Writes n values starting at idx; returns their loss contribution.
  auto emit = [&](int64_t idx, Vec acc, int64_t n) -> Vec {
    if (clamp01) acc = at::vec::clamp(acc, zero, one);
    store_vec(dst + idx, acc, n);
    if (epi.ce == nullptr) return zero;
    const Vec att = std::is_same_v<Out, T> ? acc : load_vec<T>(dst + idx, n);
    const Vec loss = att * load_vec<T>(epi.ce + idx, n);  // zero past n
    if (epi.loss_map != nullptr) store_vec(epi.loss_map + idx, loss, n);
    return loss;
  };
  if (v.inner == 1) {
    // The smoothed axis is the contiguous one: copy a group of rows, each
    // between r zeros, then slide the taps along them in SIMD. (Staging a
    // group first, not row by row: the shifted vector loads right after the
    // copy's stores stalled on store forwarding, half of this pass's time.)
    const int64_t L = v.L;
    const int64_t pitch = L + 2 * r;
    const int64_t group = staged_rows(L, r);
    std::fill(stage, stage + group * pitch + Vec::size(), T(0));
    for (int64_t g0 = row0; g0 < row1; g0 += group) {
      const int64_t g1 = std::min(row1, g0 + group);
      for (int64_t o = g0; o < g1; ++o) std::copy(src + o * L, src + (o + 1) * L, stage + (o - g0) * pitch + r);
      for (int64_t o = g0; o < g1; ++o) {
        const T* row = stage + (o - g0) * pitch;
        Vec row_loss(T(0));
        for (int64_t l = 0; l < L; l += Vec::size()) {
          const int64_t n = std::min<int64_t>(Vec::size(), L - l);
          Vec acc(T(0));
          // lanes past n read the next row's padding or values: computed, never stored
          for (int64_t k = 0; k < K; ++k) acc = at::vec::fmadd(Vec(w[k]), Vec::loadu(row + l + k), acc);
          row_loss = row_loss + emit(o * L + l, acc, n);
        }
        if (epi.row_sum != nullptr) epi.row_sum[o] = static_cast<double>(vec_sum(row_loss));
      }
    }
    return;
  }
  // Otherwise SIMD runs across the contiguous inner axis: each output row
  // (o, l) is a weighted sum of up to K input rows.
  const int64_t L = v.L, inner = v.inner;
  for (int64_t id = row0; id < row1; ++id) {
    const int64_t o = id / L;
    const int64_t l = id % L;
    const int64_t k0 = std::max<int64_t>(0, r - l);
    const int64_t k1 = std::min<int64_t>(K, L + r - l);
    Vec row_loss(T(0));
    for (int64_t i = 0; i < inner; i += Vec::size()) {
      const int64_t n = std::min<int64_t>(Vec::size(), inner - i);
      Vec acc(T(0));
      for (int64_t k = k0; k < k1; ++k)
        acc = at::vec::fmadd(Vec(w[k]), load_vec<T>(src + (o * L + l + k - r) * inner + i, n), acc);
      row_loss = row_loss + emit(id * inner + i, acc, n);
    }
    if (epi.row_sum != nullptr) epi.row_sum[id] = static_cast<double>(vec_sum(row_loss));
  }
}

// For the voxels [n0, n0 + cnt) of item b: d (0 or 1, as T) into dloc
// (written in whole vectors: lanes past cnt are 0) and, with a reader, the
// summed cross-entropy of both streams into ce[0, cnt); the labels are read
// vector by vector (load_labels). No software prefetch: for these seven
// streams bursts of prefetches measured 25 % slower than the hardware
// prefetcher alone (they stall once the miss buffers are full).
template <typename scalar_t, int kC>
inline void row_terms(const Geometry& g, const scalar_t* logits_a, const scalar_t* logits_b,
                      const TargetReader* reader, int64_t b, int64_t n0, int64_t cnt, at::opmath_type<scalar_t>* dloc,
                      at::opmath_type<scalar_t>* ce) {
  using T = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<T>;
  const scalar_t* pa = logits_a + b * g.C * g.N + n0;
  const scalar_t* pb = logits_b + b * g.C * g.N + n0;
  for (int64_t j = 0; j < cnt; j += Vec::size()) {
    const int64_t n = std::min<int64_t>(Vec::size(), cnt - j);
    Vec ia, ib;
    if (reader != nullptr) {
      const Vec tv = load_labels<T>(*reader, b * g.N + n0 + j, n);
      Vec da, db, za, zb;
      stream_argmax_ce<kC, T>(pa + j, g.N, g.C, n, tv, ia, da, za);
      stream_argmax_ce<kC, T>(pb + j, g.N, g.C, n, tv, ib, db, zb);
      // ce_a + ce_b with one log: za * zb is in [1, C^2].
      store_vec(ce + j, (da + db) + vlog(za * zb), n);
    } else {
      ia = stream_argmax<kC, T>(pa + j, g.N, g.C, n);
      ib = stream_argmax<kC, T>(pb + j, g.N, g.C, n);
    }
    where_eq(ia, ib, Vec(T(0)), Vec(T(1))).store(dloc + j);
  }
}

template <typename scalar_t, int kC>
void attention_kernel_impl(const Geometry& g, at::IntArrayRef spatial, const SmoothingPlan& plan,
                           const scalar_t* logits_a, const scalar_t* logits_b, const TargetReader* reader,
                           at::opmath_type<scalar_t>* ce, at::opmath_type<scalar_t>* tmp, scalar_t* out,
                           const LossEpilogue<scalar_t, at::opmath_type<scalar_t>>& epi) {
  using T = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<T>;
  const std::vector<T> w(plan.w.begin(), plan.w.end());
  const int64_t r = static_cast<int64_t>(w.size()) / 2;
  const int64_t last = plan.axes.back();
  const AxisView lv = axis_view(g.B, spatial, last);
  const int64_t rows = lv.outer * lv.L;  // runs of lv.inner voxels
  const int64_t rows_per_item = rows / g.B;
  const int64_t run = lv.inner;
  // The inner smoothed axes, seen within one run.
  const at::IntArrayRef run_sizes = spatial.slice(last + 1);
  std::vector<AxisView> inner_views;
  int64_t max_len = 1;
  for (size_t k = 0; k + 1 < plan.axes.size(); ++k) {
    inner_views.push_back(axis_view(1, run_sizes, plan.axes[k] - last - 1));
    max_len = std::max(max_len, inner_views.back().L);
  }
  max_len = std::max(max_len, lv.L);
  const int64_t padded = (run + Vec::size() - 1) / Vec::size() * Vec::size() + Vec::size();
  const int64_t K = static_cast<int64_t>(w.size());

  // Row (o, q) of the last pass's input: d of its run, smoothed along the
  // inner axes, into `dst` (and its ce into ce_row).
  auto inner_row = [&](int64_t row, T* buf0, T* buf1, T* stage, T* dst, T* ce_row) {
    const int64_t b = row / rows_per_item;
    const int64_t n0 = (row % rows_per_item) * run;
    row_terms<scalar_t, kC>(g, logits_a, logits_b, reader, b, n0, run, buf0, ce_row);
    T* src = buf0;
    for (size_t k = 0; k < inner_views.size(); ++k) {
      const AxisView& v = inner_views[k];
      T* to = k + 1 == inner_views.size() ? dst : (src == buf0 ? buf1 : buf0);
      smooth_rows<T, T>(src, to, v, w, false, 0, v.rows(), stage);
      src = to;
    }
    if (inner_views.empty()) std::copy(src, src + run, dst);
  };

  if (lv.inner > 1) {
    // One region: each thread walks its rows (o, l) in order, keeping the K
    // input rows l - r .. l + r of the last pass (and their ce) in a ring, so
    // neither the partly smoothed map nor ce ever reaches memory; a range
    // that starts inside a line recomputes its r rows before the start.
    const Vec zero(T(0)), one(T(1));
    at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / run), [&](int64_t begin, int64_t end) {
      std::vector<T> ring(K * padded, T(0)), ce_ring(reader != nullptr ? K * padded : 0, T(0));
      std::vector<T> buf0(padded), buf1(padded), stage(stage_size<T>(max_len, r));
      std::vector<const T*> tap_row(K);
      std::vector<T> tap_w(K);
      int64_t have_o = -1, have_hi = -1;
      for (int64_t id = begin; id < end; ++id) {
        const int64_t o = id / lv.L;
        const int64_t l = id % lv.L;
        const int64_t lo = std::max<int64_t>(0, l - r);
        const int64_t hi = std::min<int64_t>(lv.L - 1, l + r);
        if (o != have_o) {  // a new line of the last axis: nothing of it in the ring yet
          have_o = o;
          have_hi = lo - 1;
        }
        for (int64_t q = std::max(have_hi + 1, lo); q <= hi; ++q) {
          const int64_t slot = (q % K) * padded;
          inner_row(o * lv.L + q, buf0.data(), buf1.data(), stage.data(), ring.data() + slot,
                    reader != nullptr ? ce_ring.data() + slot : nullptr);
        }
        have_hi = std::max(have_hi, hi);
        // The output row: the Gaussian along the last axis over the ring.
        const int64_t base = id * run;
        const T* ce_row = reader != nullptr ? ce_ring.data() + (l % K) * padded : nullptr;
        const int64_t taps = hi - lo + 1;
        for (int64_t q = lo; q <= hi; ++q) {  // the ring rows and weights of this output row
          tap_row[q - lo] = ring.data() + (q % K) * padded;
          tap_w[q - lo] = w[q - l + r];
        }
        Vec row_loss(T(0));
        for (int64_t i = 0; i < run; i += Vec::size()) {
          const int64_t n = std::min<int64_t>(Vec::size(), run - i);
          Vec acc(T(0));
          for (int64_t k = 0; k < taps; ++k) acc = at::vec::fmadd(Vec(tap_w[k]), Vec::loadu(tap_row[k] + i), acc);
          acc = at::vec::clamp(acc, zero, one);
          store_vec(out + base + i, acc, n);
          if (ce_row != nullptr) {
            const Vec att = std::is_same_v<scalar_t, T> ? acc : load_vec<T>(out + base + i, n);
            const Vec loss = att * load_vec<T>(ce_row + i, n);  // zero past n
            if (epi.loss_map != nullptr) store_vec(epi.loss_map + base + i, loss, n);
            row_loss = row_loss + loss;
          }
        }
        if (epi.row_sum != nullptr) epi.row_sum[id] = static_cast<double>(vec_sum(row_loss));
      }
    });
    return;
  }

  // The last smoothed axis is the contiguous one (a run is one voxel): the
  // inner rows go to tmp (and ce) in memory, then the last pass.
  at::parallel_for(0, rows, std::max<int64_t>(1, 8192 / run), [&](int64_t begin, int64_t end) {
    std::vector<T> buf0(padded), buf1(padded), stage(stage_size<T>(max_len, r));
    for (int64_t row = begin; row < end; ++row)
      inner_row(row, buf0.data(), buf1.data(), stage.data(), tmp + row * run,
                reader != nullptr ? ce + row * run : nullptr);
  });
  const int64_t grain = std::max<int64_t>(1, 32768 / (lv.inner * static_cast<int64_t>(w.size())));
  at::parallel_for(0, lv.rows(), grain, [&](int64_t begin, int64_t end) {
    std::vector<T> stage(stage_size<T>(lv.L, r));
    smooth_rows<scalar_t, T>(tmp, out, lv, w, true, begin, end, stage.data(), epi);
  });
}

inline SmoothingPlan smoothing_plan(const char* op, const at::Tensor& logits_a, double sigma2, int64_t kernel_size,
                             int64_t spatial_dims, int64_t slice_dim) {
  TORCH_CHECK_VALUE(logits_a.dim() == 4 || logits_a.dim() == 5, op,
                    ": logits_a must be [B, C, H, W] or [B, C, X, Y, Z], got shape ", logits_a.sizes());
  TORCH_CHECK_VALUE(kernel_size >= 1 && kernel_size % 2 == 1, op, ": kernel_size must be an odd integer >= 1, got ",
                    kernel_size);
  TORCH_CHECK_VALUE(std::isfinite(sigma2) && sigma2 > 0.0, op, ": sigma2 (the Gaussian's variance) must be > 0, got ",
                    sigma2);
  TORCH_CHECK_VALUE(spatial_dims == 2 || spatial_dims == 3, op, ": spatial_dims must be 2 (in-plane) or 3 (volumetric), got ",
                    spatial_dims);
  const int64_t nd = logits_a.dim() - 2;
  TORCH_CHECK_VALUE(spatial_dims == 2 || nd == 3, op, ": spatial_dims=3 needs 3D input [B, C, X, Y, Z], got shape ",
                    logits_a.sizes());
  SmoothingPlan plan;
  // Smoothed axes, innermost first: the first pass then reads the byte map
  // along (or across) contiguous memory.
  if (nd == 3 && spatial_dims == 2) {
    TORCH_CHECK_VALUE(slice_dim >= -3 && slice_dim < 3, op, ": slice_dim must index one of the 3 spatial axes (-3..2), got ",
                      slice_dim);
    const int64_t sd = slice_dim < 0 ? slice_dim + 3 : slice_dim;
    for (int64_t a = 2; a >= 0; --a)
      if (a != sd) plan.axes.push_back(a);
  } else {
    for (int64_t a = nd - 1; a >= 0; --a) plan.axes.push_back(a);
  }
  // Normalized 1-D weights exp(-x^2 / (2 sigma2)), x = -r..r, in double.
  const int64_t r = kernel_size / 2;
  plan.w.resize(kernel_size);
  double total = 0.0;
  for (int64_t k = 0; k < kernel_size; ++k) {
    const double x = static_cast<double>(k - r);
    plan.w[k] = std::exp(-x * x / (2.0 * sigma2));
    total += plan.w[k];
  }
  for (double& v : plan.w) v /= total;
  return plan;
}

// The attention map of SPEC 5 of two contiguous streams into out ([B, *S],
// contiguous, the logits' dtype; clamped to [0, 1]). With target defined
// (contiguous labels, validated on the way: a bad label raises after the
// pass) it is tsman_loss's forward too: loss_v = out_v * (ce_a + ce_b)_v (out_v
// as stored) is written to loss_map if that is defined, and the sum over all
// voxels is returned (in a fixed order); else 0 is returned.
inline double attention_forward(const char* op, const at::Tensor& logits_a, const at::Tensor& logits_b,
                                const SmoothingPlan& plan, const at::Tensor& target, const at::Tensor& out,
                                const at::Tensor& loss_map) {
  const Geometry g = geometry_of(logits_a);
  const at::IntArrayRef spatial = logits_a.sizes().slice(2);
  const auto math_type = logits_a.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const bool with_loss = target.defined();
  // Maps between the two regions, needed only when the last smoothed axis is
  // the contiguous one (runs of one voxel); else the partly smoothed rows and
  // ce stay in per-thread rings.
  const bool two_regions = axis_view(g.B, spatial, plan.axes.back()).inner == 1;
  at::Tensor tmp, ce;
  if (two_regions) tmp = at::empty({g.B * g.N}, logits_a.options().dtype(math_type));
  if (two_regions && with_loss) ce = at::empty({g.B * g.N}, logits_a.options().dtype(math_type));
  std::vector<double> row_sum;
  TargetCheck check;
  TargetReader reader{};
  if (with_loss) {
    row_sum.assign(axis_view(g.B, spatial, plan.axes.back()).rows(), 0.0);
    reader = check.reader(target, g.C);
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits_a.scalar_type(), "loss_attention", [&] {
    using T = at::opmath_type<scalar_t>;
    LossEpilogue<scalar_t, T> epi;
    if (with_loss) {
      if (two_regions) epi.ce = ce.const_data_ptr<T>();
      epi.row_sum = row_sum.data();
      if (loss_map.defined()) epi.loss_map = loss_map.mutable_data_ptr<scalar_t>();
    }
    dispatch_classes(g.C, [&](auto kC) {
      attention_kernel_impl<scalar_t, decltype(kC)::value>(
          g, spatial, plan, logits_a.const_data_ptr<scalar_t>(), logits_b.const_data_ptr<scalar_t>(),
          with_loss ? &reader : nullptr, ce.defined() ? ce.mutable_data_ptr<T>() : nullptr,
          tmp.defined() ? tmp.mutable_data_ptr<T>() : nullptr,
          out.mutable_data_ptr<scalar_t>(), epi);
    });
  });
  check.raise_if_bad(op, g.C);
  return ordered_sum(row_sum);
}

}  // namespace cpu
}  // namespace pyseg_noise
