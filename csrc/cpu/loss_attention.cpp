// SPEC 5 / TSMAN Eq. (7): attention = w * d, with d_v = [argmax_C a_v != argmax_C b_v]
// and w a normalized Gaussian, zero padded, in-plane or volumetric.
//
// One pass over the logits writes d as one byte per voxel; the Gaussian is
// separable, so 2 or 3 one-dimensional passes follow (bytes -> float, float ->
// float, float -> output dtype), each reading only the small maps: the
// kernel_size^3 taps of a dense 3-D convolution become 3 * kernel_size.
// Every output value is computed by one thread in a fixed order, so the map
// does not depend on the number of threads.
#include <torch/library.h>

#include "tsman_terms.h"

namespace pyseg_noise {
namespace cpu {
namespace {

// d[b, v] = 1 where the two streams' hard predictions differ (ties go to the
// lowest class in both, as torch.argmax). The logits are read straight from
// memory, a vector of voxels at a time.
template <typename scalar_t, int kC>
void disagreement_kernel_impl(const Geometry& g, const scalar_t* logits_a, const scalar_t* logits_b, uint8_t* d) {
  using T = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<T>;
  at::parallel_for(0, g.B * g.blocks_per_item, 16, [&](int64_t begin, int64_t end) {
    T diff[kBlock];
    for (int64_t id = begin; id < end; ++id) {
      const int64_t b = id / g.blocks_per_item;
      const int64_t n0 = (id % g.blocks_per_item) * kBlock;
      const int64_t cnt = std::min(kBlock, g.N - n0);
      const scalar_t* pa = logits_a + b * g.C * g.N + n0;
      const scalar_t* pb = logits_b + b * g.C * g.N + n0;
      for (int64_t j = 0; j < cnt; j += Vec::size()) {
        const int64_t n = std::min<int64_t>(Vec::size(), cnt - j);
        const Vec ia = stream_argmax<kC, T>(pa + j, g.N, g.C, n);
        const Vec ib = stream_argmax<kC, T>(pb + j, g.N, g.C, n);
        ((ia != ib) & Vec(T(1))).store(diff + j);  // 1 where they differ, else 0
      }
      uint8_t* out = d + b * g.N + n0;
      for (int64_t j = 0; j < cnt; ++j) out[j] = static_cast<uint8_t>(diff[j]);
    }
  });
}

// Optional work of the last smoothing pass for the fused tsman_loss: the
// per-voxel loss att * ce (att as rounded to the output dtype), summed per row
// of the pass (a row is handled by one thread, so the sum does not depend on
// the number of threads) and, for reduction="none", stored.
template <typename Out, typename T>
struct LossEpilogue {
  const T* ce = nullptr;        // [B * N] cross-entropy of both streams, summed
  Out* loss_map = nullptr;      // [B * N] or nullptr
  double* row_sum = nullptr;    // one per row of the pass
};

// One 1-D pass of the Gaussian along the middle axis of src viewed as
// [outer, L, inner] (contiguous), zero padded: dst[o, l, i] = sum_k w[k] src[o, l + k - r, i].
template <typename In, typename Out, typename T>
void smooth_axis_kernel_impl(const In* src, Out* dst, int64_t outer, int64_t L, int64_t inner,
                             const std::vector<T>& w, bool clamp01, const LossEpilogue<Out, T>& epi = {}) {
  using Vec = at::vec::Vectorized<T>;
  const int64_t K = static_cast<int64_t>(w.size());
  const int64_t r = K / 2;
  const Vec zero(T(0)), one(T(1));
  // Writes n values of the row starting at idx; returns their loss contribution.
  auto emit = [&](int64_t idx, Vec acc, int64_t n) -> Vec {
    if (clamp01) acc = at::vec::clamp(acc, zero, one);
    store_vec(dst + idx, acc, n);
    if (epi.ce == nullptr) return zero;
    const Vec att = std::is_same_v<Out, T> ? acc : load_vec<T>(dst + idx, n);
    const Vec loss = att * load_vec<T>(epi.ce + idx, n);  // zero past n
    if (epi.loss_map != nullptr) store_vec(epi.loss_map + idx, loss, n);
    return loss;
  };
  if (inner == 1) {
    // The smoothed axis is the contiguous one: stage each row between r zeros
    // on either side in the math type, then slide the taps along it in SIMD.
    at::parallel_for(0, outer, std::max<int64_t>(1, 32768 / L), [&](int64_t begin, int64_t end) {
      std::vector<T> row(L + 2 * r + Vec::size(), T(0));
      for (int64_t o = begin; o < end; ++o) {
        const In* s = src + o * L;
        for (int64_t l = 0; l < L; ++l) row[r + l] = static_cast<T>(s[l]);
        Vec row_loss(T(0));
        for (int64_t l = 0; l < L; l += Vec::size()) {
          Vec acc(T(0));
          for (int64_t k = 0; k < K; ++k) acc = at::vec::fmadd(Vec(w[k]), Vec::loadu(row.data() + l + k), acc);
          row_loss = row_loss + emit(o * L + l, acc, std::min<int64_t>(Vec::size(), L - l));
        }
        if (epi.row_sum != nullptr) epi.row_sum[o] = static_cast<double>(vec_sum(row_loss));
      }
    });
    return;
  }
  // Otherwise SIMD runs across the contiguous inner axis: each output row
  // (o, l) is a weighted sum of up to K input rows.
  at::parallel_for(0, outer * L, std::max<int64_t>(1, 32768 / (inner * K)), [&](int64_t begin, int64_t end) {
    for (int64_t id = begin; id < end; ++id) {
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
  });
}

// [outer, L, inner] view of a [B, *S] map around spatial axis `axis`.
struct AxisView {
  int64_t outer, L, inner;
};

AxisView axis_view(int64_t B, at::IntArrayRef spatial, int64_t axis) {
  AxisView v{B, spatial[axis], 1};
  for (int64_t k = 0; k < axis; ++k) v.outer *= spatial[k];
  for (int64_t k = axis + 1; k < static_cast<int64_t>(spatial.size()); ++k) v.inner *= spatial[k];
  return v;
}

// The separable passes from the byte map d to out (the last one clamped to
// [0, 1] and, with a loss epilogue, also producing the loss).
template <typename scalar_t>
void smooth_kernel_impl(int64_t B, at::IntArrayRef spatial, const SmoothingPlan& plan, const uint8_t* d,
                        at::opmath_type<scalar_t>* tmp0, at::opmath_type<scalar_t>* tmp1, scalar_t* out,
                        const LossEpilogue<scalar_t, at::opmath_type<scalar_t>>& epi) {
  using T = at::opmath_type<scalar_t>;
  const std::vector<T> w(plan.w.begin(), plan.w.end());
  const auto& axes = plan.axes;
  const AxisView v0 = axis_view(B, spatial, axes[0]);
  const AxisView v1 = axis_view(B, spatial, axes[1]);
  if (axes.size() == 2) {
    smooth_axis_kernel_impl(d, tmp0, v0.outer, v0.L, v0.inner, w, false);
    smooth_axis_kernel_impl(tmp0, out, v1.outer, v1.L, v1.inner, w, true, epi);
  } else {
    const AxisView v2 = axis_view(B, spatial, axes[2]);
    smooth_axis_kernel_impl(d, tmp0, v0.outer, v0.L, v0.inner, w, false);
    smooth_axis_kernel_impl(tmp0, tmp1, v1.outer, v1.L, v1.inner, w, false);
    smooth_axis_kernel_impl(tmp1, out, v2.outer, v2.L, v2.inner, w, true, epi);
  }
}

// Rows of the last smoothing pass (the unit of the loss's partial sums).
int64_t last_pass_rows(int64_t B, at::IntArrayRef spatial, const SmoothingPlan& plan) {
  const AxisView v = axis_view(B, spatial, plan.axes.back());
  return v.inner == 1 ? v.outer : v.outer * v.L;
}

}  // namespace

SmoothingPlan smoothing_plan(const char* op, const at::Tensor& logits_a, double sigma2, int64_t kernel_size,
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

double smooth_disagreement_cpu(const at::Tensor& d, const at::Tensor& out, const SmoothingPlan& plan,
                               const at::Tensor& ce, const at::Tensor& loss_map) {
  const int64_t B = out.size(0);
  const at::IntArrayRef spatial = out.sizes().slice(1);
  const int64_t numel = out.numel();
  const auto math_type = out.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor tmp0 = at::empty({numel}, out.options().dtype(math_type));
  at::Tensor tmp1 = plan.axes.size() == 3 ? at::empty({numel}, out.options().dtype(math_type)) : tmp0;
  std::vector<double> row_sum;
  if (ce.defined()) {
    TORCH_INTERNAL_ASSERT(ce.scalar_type() == math_type && ce.numel() == numel && ce.is_contiguous());
    row_sum.assign(last_pass_rows(B, spatial, plan), 0.0);
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "loss_attention", [&] {
    using T = at::opmath_type<scalar_t>;
    LossEpilogue<scalar_t, T> epi;
    if (ce.defined()) {
      epi.ce = ce.const_data_ptr<T>();
      epi.row_sum = row_sum.data();
      if (loss_map.defined()) epi.loss_map = loss_map.mutable_data_ptr<scalar_t>();
    }
    smooth_kernel_impl<scalar_t>(B, spatial, plan, d.const_data_ptr<uint8_t>(), tmp0.mutable_data_ptr<T>(),
                                 tmp1.mutable_data_ptr<T>(), out.mutable_data_ptr<scalar_t>(), epi);
  });
  return ordered_sum(row_sum);
}

at::Tensor loss_attention_cpu(const at::Tensor& logits_a_in, const at::Tensor& logits_b_in, double sigma2,
                              int64_t kernel_size, int64_t spatial_dims, int64_t slice_dim) {
  const char* op = "loss_attention";
  check_stream(op, "logits_a", logits_a_in);
  TORCH_CHECK_VALUE(logits_a_in.dim() == 4 || logits_a_in.dim() == 5, op,
                    ": logits_a must be [B, C, H, W] or [B, C, X, Y, Z], got shape ", logits_a_in.sizes());
  check_second_stream(op, logits_a_in, logits_b_in);
  const SmoothingPlan plan = smoothing_plan(op, logits_a_in, sigma2, kernel_size, spatial_dims, slice_dim);
  const at::Tensor a = logits_a_in.contiguous();
  const at::Tensor b = logits_b_in.contiguous();
  const Geometry g = geometry_of(a);
  std::vector<int64_t> out_size{g.B};
  for (auto s : a.sizes().slice(2)) out_size.push_back(s);
  at::Tensor out = at::empty(out_size, a.options());
  at::Tensor d = at::empty({g.B * g.N}, a.options().dtype(at::kByte));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "loss_attention", [&] {
    dispatch_classes(g.C, [&](auto kC) {
      disagreement_kernel_impl<scalar_t, decltype(kC)::value>(g, a.const_data_ptr<scalar_t>(),
                                                              b.const_data_ptr<scalar_t>(), d.mutable_data_ptr<uint8_t>());
    });
  });
  smooth_disagreement_cpu(d, out, plan, at::Tensor(), at::Tensor());
  return out;
}

TORCH_LIBRARY_IMPL(pyseg_noise, CPU, m) { m.impl("loss_attention", &loss_attention_cpu); }

}  // namespace cpu
}  // namespace pyseg_noise
