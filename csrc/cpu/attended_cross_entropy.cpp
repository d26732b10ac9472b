// SPEC 6 / TSMAN Eq. (3)-(6) for one stream: loss_v = attention_v * ce_v with
// the attention a constant. The forward reads the logits straight from
// memory, one vector of voxels of every class plane at a time (no per-block
// gather), with the class loop unrolled for C = 2, 3, 4; the backward is
// attended_ce_backward.h's, shared with tsman_loss.
#include <torch/library.h>

#include "attended_ce_backward.h"

namespace pyseg_noise {
namespace cpu {
namespace {

// Single-stream forward: loss_v = attention_v * ce_v, summed per chunk.
template <typename scalar_t, int kC>
void attended_ce_kernel_impl(const Geometry& g, const scalar_t* logits, const scalar_t* attention,
                             const TargetReader& reader, scalar_t* loss_map, std::vector<double>& partial) {
  using T = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<T>;
  at::parallel_for(0, g.n_chunks(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t b = g.chunk_item(chunk);
      const int64_t blk0 = g.chunk_begin(chunk), blk1 = g.chunk_end(chunk);
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

void check_ce_args(const char* op, const at::Tensor& logits, const at::Tensor& target, const at::Tensor& attention) {
  check_stream(op, "logits", logits);
  check_target_dtype(op, target);
  check_voxel_map(op, "target", target, logits);
  TORCH_CHECK_TYPE(at::isFloatingType(attention.scalar_type()), op, ": attention must be floating point, got ",
                   attention.scalar_type());
  check_voxel_map(op, "attention", attention, logits);
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

TORCH_LIBRARY_IMPL(pyseg_noise, CPU, m) {
  m.impl("attended_cross_entropy", &attended_cross_entropy_cpu);
  m.impl("attended_cross_entropy_backward", &attended_cross_entropy_backward_cpu);
}

}  // namespace cpu
}  // namespace pyseg_noise
