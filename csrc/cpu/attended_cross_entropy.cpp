// SPEC 6 / TSMAN Eq. (3)-(6): loss_v = attention_v * ce_v with the attention a
// constant, for one stream (attended_cross_entropy) or for both streams of
// TSMAN with one shared attention map (tsman_loss, which first computes the
// map of SPEC 5).
//
// tsman_loss's forward is loss_attention.cpp's pass (attention_forward_cpu),
// which reads both streams' logits and the labels once and forms the loss in
// its last smoothing pass. The backward writes both streams' gradients in one
// pass. Nothing voxel-sized is saved between forward and backward except the
// attention map, which is an output anyway.
//
// The kernels read the logits straight from memory, one vector of voxels of
// every class plane at a time (no per-block gather), with the class loop
// unrolled for C = 2, 3, 4.
#include <torch/library.h>

#include <array>

#include "tsman_terms.h"

namespace pyseg_noise {
namespace cpu {
namespace {

constexpr int kMaxStreams = 2;

template <typename scalar_t>
using Streams = std::array<const scalar_t*, kMaxStreams>;

// Single-stream forward: loss_v = attention_v * ce_v, summed per chunk.
template <typename scalar_t, int kC>
void attended_ce_kernel_impl(const Geometry& g, const scalar_t* logits, const scalar_t* attention,
                             const TargetReader& reader, scalar_t* loss_map, std::vector<double>& partial) {
  using T = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<T>;
  at::parallel_for(0, g.n_chunks(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t b = chunk / g.chunks_per_item;
      const int64_t blk0 = (chunk % g.chunks_per_item) * kBlocksPerChunk;
      const int64_t blk1 = std::min(blk0 + kBlocksPerChunk, g.blocks_per_item);
      double chunk_sum = 0.0;
      for (int64_t blk = blk0; blk < blk1; ++blk) {
        const int64_t n0 = blk * kBlock;
        const int64_t cnt = std::min(kBlock, g.N - n0);
        const int64_t off = b * g.N + n0;
        const scalar_t* p = logits + b * g.C * g.N + n0;
        // Lanes of a block in T, blocks of a chunk in double.
        Vec acc(T(0));
        for (int64_t j = 0; j < cnt; j += Vec::size()) {
          const int64_t n = std::min<int64_t>(Vec::size(), cnt - j);
          Vec idx, m_minus_xt, z;  // (idx unused: the compiler drops the argmax)
          stream_argmax_ce<kC, T>(p + j, g.N, g.C, n, load_labels<T>(reader, off + j, n), idx, m_minus_xt, z);
          const Vec loss = load_vec<T>(attention + off + j, n) * (m_minus_xt + vlog(z));  // zero past n
          acc = acc + loss;
          if (loss_map != nullptr) store_vec(loss_map + off + j, loss, n);
        }
        chunk_sum += static_cast<double>(vec_sum(acc));
      }
      partial[chunk] = chunk_sum;
    }
  });
}

// grad_s[c] = g_v * attention_v * (softmax_c(x_s) - [c == target_v]) for each
// stream s, the logits read and the gradients written straight in memory.
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

// Single-stream forward (logits, target and attention contiguous, attention
// in the logits' dtype).
at::Tensor attended_ce_forward(const char* op, const at::Tensor& logits, const at::Tensor& target,
                               const at::Tensor& attention, Reduction red) {
  const Geometry g = geometry_of(logits);
  std::vector<double> partial(g.n_chunks(), 0.0);
  at::Tensor loss_map;
  if (red == Reduction::None) loss_map = at::empty(target.sizes(), logits.options());
  TargetCheck check;
  const TargetReader reader = check.reader(target, g.C);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "attended_cross_entropy", [&] {
    dispatch_classes(g.C, [&](auto kC) {
      attended_ce_kernel_impl<scalar_t, decltype(kC)::value>(
          g, logits.const_data_ptr<scalar_t>(), attention.const_data_ptr<scalar_t>(), reader,
          red == Reduction::None ? loss_map.mutable_data_ptr<scalar_t>() : nullptr, partial);
    });
  });
  check.raise_if_bad(op, g.C);
  if (red == Reduction::None) return loss_map;
  double total = ordered_sum(partial);
  if (red == Reduction::Mean) total /= static_cast<double>(g.B * g.N);
  return at::scalar_tensor(total, logits.options());
}

std::vector<at::Tensor> attended_ce_backward(const char* op, const at::Tensor& grad_in,
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

void check_ce_args(const char* op, const at::Tensor& logits, const at::Tensor& target, const at::Tensor& attention) {
  check_stream(op, "logits", logits);
  check_target_dtype(op, target);
  check_voxel_map(op, "target", target, logits);
  TORCH_CHECK_TYPE(at::isFloatingType(attention.scalar_type()), op, ": attention must be floating point, got ",
                   attention.scalar_type());
  check_voxel_map(op, "attention", attention, logits);
}

void check_tsman_args(const char* op, const at::Tensor& logits_a, const at::Tensor& logits_b,
                      const at::Tensor& target) {
  check_stream(op, "logits_a", logits_a);
  check_second_stream(op, logits_a, logits_b);
  check_target_dtype(op, target);
  check_voxel_map(op, "target", target, logits_a);
}

}  // namespace

at::Tensor attended_cross_entropy_cpu(const at::Tensor& logits, const at::Tensor& target_in,
                                      const at::Tensor& attention_in, c10::string_view reduction) {
  const char* op = "attended_cross_entropy";
  check_ce_args(op, logits, target_in, attention_in);
  const Reduction red = parse_reduction(op, reduction);
  const at::Tensor attention = attention_in.to(logits.scalar_type()).contiguous();
  return attended_ce_forward(op, logits.contiguous(), target_in.contiguous(), attention, red);
}

at::Tensor attended_cross_entropy_backward_cpu(const at::Tensor& grad, const at::Tensor& logits,
                                               const at::Tensor& target_in, const at::Tensor& attention_in,
                                               c10::string_view reduction) {
  const char* op = "attended_cross_entropy_backward";
  check_ce_args(op, logits, target_in, attention_in);
  const Reduction red = parse_reduction(op, reduction);
  const at::Tensor attention = attention_in.to(logits.scalar_type()).contiguous();
  return attended_ce_backward(op, grad, {logits.contiguous()}, target_in.contiguous(), attention, red)[0];
}

std::tuple<at::Tensor, at::Tensor> tsman_loss_cpu(const at::Tensor& logits_a, const at::Tensor& logits_b,
                                                  const at::Tensor& target_in, double sigma2, int64_t kernel_size,
                                                  int64_t spatial_dims, int64_t slice_dim,
                                                  c10::string_view reduction) {
  const char* op = "tsman_loss";
  check_tsman_args(op, logits_a, logits_b, target_in);
  const Reduction red = parse_reduction(op, reduction);
  const SmoothingPlan plan = smoothing_plan(op, logits_a, sigma2, kernel_size, spatial_dims, slice_dim);
  const at::Tensor a = logits_a.contiguous();
  const at::Tensor b = logits_b.contiguous();
  const at::Tensor target = target_in.contiguous();
  // One pass over both streams and the labels, then the smoothing, whose last
  // pass also forms and sums the loss. The attention map in the logits' dtype
  // is both the returned map and the weight the loss uses, so forward and
  // backward see the same rounded values.
  at::Tensor attention = at::empty(target.sizes(), a.options());
  at::Tensor loss_map;
  if (red == Reduction::None) loss_map = at::empty(target.sizes(), a.options());
  double total = attention_forward_cpu(op, a, b, plan, target, attention, loss_map);
  if (red == Reduction::None) return {loss_map, attention};
  if (red == Reduction::Mean) total /= static_cast<double>(target.numel());
  return {at::scalar_tensor(total, a.options()), attention};
}

std::tuple<at::Tensor, at::Tensor> tsman_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& logits_a,
                                                           const at::Tensor& logits_b, const at::Tensor& target_in,
                                                           const at::Tensor& attention_in,
                                                           c10::string_view reduction) {
  const char* op = "tsman_loss_backward";
  check_tsman_args(op, logits_a, logits_b, target_in);
  TORCH_CHECK_TYPE(at::isFloatingType(attention_in.scalar_type()), op, ": attention must be floating point, got ",
                   attention_in.scalar_type());
  check_voxel_map(op, "attention", attention_in, logits_a);
  const Reduction red = parse_reduction(op, reduction);
  const at::Tensor attention = attention_in.to(logits_a.scalar_type()).contiguous();
  auto grads = attended_ce_backward(op, grad, {logits_a.contiguous(), logits_b.contiguous()}, target_in.contiguous(),
                                    attention, red);
  return {grads[0], grads[1]};
}

TORCH_LIBRARY_IMPL(pyseg_noise, CPU, m) {
  m.impl("attended_cross_entropy", &attended_cross_entropy_cpu);
  m.impl("attended_cross_entropy_backward", &attended_cross_entropy_backward_cpu);
  m.impl("tsman_loss", &tsman_loss_cpu);
  m.impl("tsman_loss_backward", &tsman_loss_backward_cpu);
}

}  // namespace cpu
}  // namespace pyseg_noise
