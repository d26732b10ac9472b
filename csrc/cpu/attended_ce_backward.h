// The backward of the attended cross-entropy (SPEC 6) for one stream
// (attended_cross_entropy_backward) or for both streams of TSMAN sharing one
// attention map (tsman_loss_backward): per stream and class,
// grad = g_v * attention_v * (softmax_c(x) - [c == target_v]), both streams in
// one pass, the logits read and the gradients written straight in memory.
#pragma once

#include <array>

#include "tsman_terms.h"

namespace pyseg_noise {
namespace cpu {

constexpr int kMaxStreams = 2;

template <typename scalar_t>
using Streams = std::array<const scalar_t*, kMaxStreams>;

template <typename scalar_t, int kC>
void attended_ce_backward_kernel_impl(const Geometry& g, const Streams<scalar_t>& logits, int64_t n_streams,
                                      const scalar_t* attention, const TargetReader& reader,
                                      const scalar_t* grad_map, double grad_scalar,
                                      const std::array<scalar_t*, kMaxStreams>& grads) {
  using T = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<T>;
  const int64_t C = kC > 0 ? kC : g.C;
  at::parallel_for(0, g.B * g.blocks_per_item, 16, [&](int64_t begin, int64_t end) {
    std::vector<T> e(C * Vec::size());  // exp(x_c - max) of one vector of voxels
    const Vec gv(static_cast<T>(grad_scalar));
    for (int64_t id = begin; id < end; ++id) {
      const int64_t b = id / g.blocks_per_item;
      const int64_t n0 = (id % g.blocks_per_item) * kBlock;
      const int64_t cnt = std::min(kBlock, g.N - n0);
      const int64_t off = b * g.N + n0;
      for (int64_t j = 0; j < cnt; j += Vec::size()) {
        const int64_t n = std::min<int64_t>(Vec::size(), cnt - j);
        const Vec tv = load_labels<T>(reader, off + j, n);
        const Vec att = load_vec<T>(attention + off + j, n);
        const Vec w = grad_map != nullptr ? load_vec<T>(grad_map + off + j, n) * att : gv * att;
        for (int64_t s = 0; s < n_streams; ++s) {
          const scalar_t* p = logits[s] + b * g.C * g.N + n0 + j;
          Vec m = load_vec<T>(p, n);
          for (int64_t c = 1; c < C; ++c) m = at::vec::maximum(m, load_vec<T>(p + c * g.N, n));
          Vec z(T(0));
          for (int64_t c = 0; c < C; ++c) {
            const Vec ec = vexp(load_vec<T>(p + c * g.N, n) - m);
            ec.store(e.data() + c * Vec::size());
            z = z + ec;
          }
          const Vec inv = Vec(T(1)) / z;
          scalar_t* out = grads[s] + b * g.C * g.N + n0 + j;
          for (int64_t c = 0; c < C; ++c) {
            const Vec onehot = where_eq(tv, Vec(T(c)), Vec(T(1)), Vec(T(0)));
            store_vec(out + c * g.N, w * (Vec::loadu(e.data() + c * Vec::size()) * inv - onehot), n);
          }
        }
      }
    }
  });
}

// The tensor-facing part: grad is the upstream gradient (a scalar for
// reduction "mean"/"sum", the loss map's shape for "none"); streams, target and
// attention are contiguous, attention in the streams' dtype. Returns one
// gradient per stream.
inline std::vector<at::Tensor> attended_ce_backward(const char* op, const at::Tensor& grad_in,
                                             const std::vector<at::Tensor>& streams, const at::Tensor& target,
                                             const at::Tensor& attention, Reduction red) {
  const Geometry g = geometry_of(streams[0]);
  at::Tensor grad_map;
  double grad_scalar = 0.0;
  if (red == Reduction::None) {
    TORCH_CHECK_VALUE(grad_in.sizes() == target.sizes(), op, ": grad must have the loss map's shape ", target.sizes(),
                      ", got ", grad_in.sizes());
    grad_map = grad_in.to(streams[0].scalar_type()).contiguous();
  } else {
    TORCH_CHECK_VALUE(grad_in.numel() == 1, op, ": grad of a reduced loss must have one element, got shape ",
                      grad_in.sizes());
    grad_scalar = grad_in.item<double>();
    if (red == Reduction::Mean) grad_scalar /= static_cast<double>(g.B * g.N);
  }
  std::vector<at::Tensor> grads;
  for (const auto& s : streams) grads.push_back(at::empty(s.sizes(), s.options()));
  TargetCheck check;
  const TargetReader reader = check.reader(target, g.C);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, streams[0].scalar_type(), "attended_cross_entropy", [&] {
    Streams<scalar_t> ptrs{};
    std::array<scalar_t*, kMaxStreams> outs{};
    for (size_t s = 0; s < streams.size(); ++s) {
      ptrs[s] = streams[s].const_data_ptr<scalar_t>();
      outs[s] = grads[s].mutable_data_ptr<scalar_t>();
    }
    dispatch_classes(g.C, [&](auto kC) {
      attended_ce_backward_kernel_impl<scalar_t, decltype(kC)::value>(
          g, ptrs, static_cast<int64_t>(streams.size()), attention.const_data_ptr<scalar_t>(), reader,
          red == Reduction::None ? grad_map.const_data_ptr<scalar_t>() : nullptr, grad_scalar, outs);
    });
  });
  check.raise_if_bad(op, g.C);
  return grads;
}

}  // namespace cpu
}  // namespace pyseg_noise
