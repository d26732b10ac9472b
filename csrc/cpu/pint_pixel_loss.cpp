// SPEC 2 / PINT Eq. (2)-(3): loss_v = alpha_v ce_v + (1 - alpha_v) mse_v with
// alpha_v = exp(-entropy(teacher_prob_v)). The forward is one pass that writes
// the loss and, for pint_pixel_loss_with_grad, the gradient for a unit upstream
// gradient from the same terms; the backward op recomputes the per-voxel terms
// in one pass, so nothing voxel-sized but the gradient is ever allocated.
// C = 2..4 run the register kernels of pint_fixed.h, other C the block path.
#include <torch/library.h>

#include "pint_fixed.h"
#include "pint_terms.h"

namespace pyseg_noise {
namespace cpu {
namespace {

template <typename scalar_t>
void pint_pixel_loss_kernel_impl(const Geometry& g, const scalar_t* logits, const scalar_t* prob,
                                 TargetCheck& check, const at::Tensor& target, bool hard, bool normalize,
                                 bool store_map, scalar_t* loss_map, std::vector<double>& partial,
                                 std::atomic<bool>& nan_prob) {
  using T = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<T>;
  const TargetReader reader = check.reader(target, g.C);
  at::parallel_for(0, g.n_chunks(), 1, [&](int64_t begin, int64_t end) {
    BlockBuffers<T> buf(g.C);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t b = chunk / g.chunks_per_item;
      const int64_t blk0 = (chunk % g.chunks_per_item) * kBlocksPerChunk;
      const int64_t blk1 = std::min(blk0 + kBlocksPerChunk, g.blocks_per_item);
      double chunk_sum = 0.0;
      for (int64_t blk = blk0; blk < blk1; ++blk) {
        const int64_t n0 = blk * kBlock;
        const int64_t cnt = std::min(kBlock, g.N - n0);
        pint_block_load(buf, g, logits, prob, reader, b, n0, cnt);
        pint_block_terms(buf, g.C, hard, normalize);
        // NaN in teacher_prob makes u NaN: one check of the block's u sum.
        Vec u_sum(T(0));
        Vec acc(T(0));
        for (int64_t j = 0; j < kBlock; j += Vec::size()) {
          const Vec u = Vec::loadu(buf.a + j);
          u_sum = u_sum + u;
          const Vec alpha = vexp(Vec(T(0)) - u);
          const Vec l = alpha * Vec::loadu(buf.b + j) + (Vec(T(1)) - alpha) * Vec::loadu(buf.c + j);
          l.store(buf.d + j);  // argmax is no longer needed
          acc = acc + l;
        }
        if (std::isnan(vec_sum(u_sum))) nan_prob = true;
        if (cnt < kBlock) {  // tail block: sum the real voxels only
          for (int64_t j = cnt; j < kBlock; ++j) buf.d[j] = T(0);
          acc = Vec(T(0));
          for (int64_t j = 0; j < kBlock; j += Vec::size()) acc = acc + Vec::loadu(buf.d + j);
        }
        chunk_sum += static_cast<double>(vec_sum(acc));
        if (store_map) {
          scalar_t* out = loss_map + b * g.N + n0;
          for (int64_t j = 0; j < cnt; ++j) out[j] = static_cast<scalar_t>(buf.d[j]);
        }
      }
      partial[chunk] = chunk_sum;
    }
  });
}

template <typename scalar_t>
void pint_pixel_loss_backward_kernel_impl(const Geometry& g, const scalar_t* logits, const scalar_t* prob,
                                          TargetCheck& check, const at::Tensor& target, bool hard, bool normalize,
                                          const scalar_t* grad_map, double grad_scalar, scalar_t* grad_logits) {
  using T = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<T>;
  const TargetReader reader = check.reader(target, g.C);
  at::parallel_for(0, g.B * g.blocks_per_item, 16, [&](int64_t begin, int64_t end) {
    BlockBuffers<T> buf(g.C);
    for (int64_t id = begin; id < end; ++id) {
      const int64_t b = id / g.blocks_per_item;
      const int64_t n0 = (id % g.blocks_per_item) * kBlock;
      const int64_t cnt = std::min(kBlock, g.N - n0);
      pint_block_load(buf, g, logits, prob, reader, b, n0, cnt);
      pint_block_terms(buf, g.C, hard, normalize, /*with_loss=*/false);
      // Per-voxel upstream gradient into buf.b (ce is not needed any more).
      if (grad_map != nullptr) {
        const scalar_t* gm = grad_map + b * g.N + n0;
        for (int64_t j = 0; j < cnt; ++j) buf.b[j] = static_cast<T>(gm[j]);
        for (int64_t j = cnt; j < kBlock; ++j) buf.b[j] = T(0);
      } else {
        for (int64_t j = 0; j < kBlock; ++j) buf.b[j] = static_cast<T>(grad_scalar);
      }
      for (int64_t j = 0; j < kBlock; j += Vec::size()) {
        const Vec gv = Vec::loadu(buf.b + j);
        const Vec alpha = vexp(Vec(T(0)) - Vec::loadu(buf.a + j));
        (gv * alpha).store(buf.a + j);               // w_ce
        (gv * (Vec(T(1)) - alpha)).store(buf.c + j); // w_mse
      }
      pint_block_grad(buf, g.C, hard);
      scalar_t* out = grad_logits + b * g.C * g.N + n0;
      for (int64_t c = 0; c < g.C; ++c)
        for (int64_t j = 0; j < cnt; ++j) out[c * g.N + j] = static_cast<scalar_t>(buf.s[c * kBlock + j]);
    }
  });
}

}  // namespace

// Forward, optionally with the gradient for a unit upstream gradient.
static std::tuple<at::Tensor, at::Tensor> pint_pixel_loss_impl(const char* op, const at::Tensor& logits_in,
                                                               const at::Tensor& target_in,
                                                               const at::Tensor& teacher_prob_in, bool hard,
                                                               bool normalize_entropy, c10::string_view reduction,
                                                               bool with_grad) {
  check_pint_args(op, logits_in, target_in, teacher_prob_in);
  const Reduction red = parse_reduction(op, reduction);
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor target = target_in.contiguous();
  const at::Tensor prob = teacher_prob_in.to(logits.scalar_type()).contiguous();
  const Geometry g = geometry_of(logits);
  std::vector<double> partial(g.n_chunks(), 0.0);
  at::Tensor loss_map, grad_logits;
  if (red == Reduction::None) loss_map = at::empty(target.sizes(), logits.options());
  if (with_grad) grad_logits = at::empty(logits.sizes(), logits.options());
  TargetCheck check;
  std::atomic<bool> nan_prob{false};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "pyseg_noise_cpu", [&] {
    const TargetReader reader = check.reader(target, g.C);
    PixelPass<scalar_t> job;
    job.normalize = normalize_entropy;
    if (red == Reduction::None) job.loss_map = loss_map.mutable_data_ptr<scalar_t>();
    else job.partial = &partial;
    job.nan_prob = &nan_prob;
    if (with_grad) {
      job.grad_logits = grad_logits.mutable_data_ptr<scalar_t>();
      job.grad_scalar = red == Reduction::Mean ? 1.0 / static_cast<double>(g.B * g.N) : 1.0;
    }
    const bool done =
        pint_pixel_pass(g, logits.const_data_ptr<scalar_t>(), prob.const_data_ptr<scalar_t>(), reader, hard, job);
    if (!done) {
      pint_pixel_loss_kernel_impl<scalar_t>(g, logits.const_data_ptr<scalar_t>(), prob.const_data_ptr<scalar_t>(),
                                            check, target, hard, normalize_entropy, red == Reduction::None,
                                            job.loss_map, partial, nan_prob);
      if (with_grad)
        pint_pixel_loss_backward_kernel_impl<scalar_t>(g, logits.const_data_ptr<scalar_t>(),
                                                       prob.const_data_ptr<scalar_t>(), check, target, hard,
                                                       normalize_entropy, nullptr, job.grad_scalar,
                                                       job.grad_logits);
    }
  });
  check.raise_if_bad(op, g.C);
  TORCH_CHECK_VALUE(!nan_prob.load(), op, ": teacher_prob contains NaN");
  if (red == Reduction::None) return {loss_map, grad_logits};
  double total = ordered_sum(partial);
  if (red == Reduction::Mean) total /= static_cast<double>(g.B * g.N);
  return {at::scalar_tensor(total, logits.options()), grad_logits};
}

at::Tensor pint_pixel_loss_cpu(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& teacher_prob,
                               bool hard, bool normalize_entropy, c10::string_view reduction) {
  return std::get<0>(
      pint_pixel_loss_impl("pint_pixel_loss", logits, target, teacher_prob, hard, normalize_entropy, reduction, false));
}

std::tuple<at::Tensor, at::Tensor> pint_pixel_loss_with_grad_cpu(const at::Tensor& logits, const at::Tensor& target,
                                                                 const at::Tensor& teacher_prob, bool hard,
                                                                 bool normalize_entropy, c10::string_view reduction) {
  return pint_pixel_loss_impl("pint_pixel_loss_with_grad", logits, target, teacher_prob, hard, normalize_entropy,
                              reduction, true);
}

at::Tensor pint_pixel_loss_backward_cpu(const at::Tensor& grad_in, const at::Tensor& logits_in,
                                        const at::Tensor& target_in, const at::Tensor& teacher_prob_in, bool hard,
                                        bool normalize_entropy, c10::string_view reduction) {
  const char* op = "pint_pixel_loss_backward";
  check_pint_args(op, logits_in, target_in, teacher_prob_in);
  const Reduction red = parse_reduction(op, reduction);
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor target = target_in.contiguous();
  const at::Tensor prob = teacher_prob_in.to(logits.scalar_type()).contiguous();
  const Geometry g = geometry_of(logits);
  at::Tensor grad_map;
  double grad_scalar = 0.0;
  if (red == Reduction::None) {
    TORCH_CHECK_VALUE(grad_in.sizes() == target.sizes(), op, ": grad must have the loss map's shape ",
                      target.sizes(), ", got ", grad_in.sizes());
    grad_map = grad_in.to(logits.scalar_type()).contiguous();
  } else {
    TORCH_CHECK_VALUE(grad_in.numel() == 1, op, ": grad of a reduced loss must have one element, got shape ",
                      grad_in.sizes());
    grad_scalar = grad_in.item<double>();
    if (red == Reduction::Mean) grad_scalar /= static_cast<double>(g.B * g.N);
  }
  at::Tensor grad_logits = at::empty(logits.sizes(), logits.options());
  TargetCheck check;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "pyseg_noise_cpu", [&] {
    const scalar_t* gm = red == Reduction::None ? grad_map.const_data_ptr<scalar_t>() : nullptr;
    PixelPass<scalar_t> job;
    job.normalize = normalize_entropy;
    job.grad_logits = grad_logits.mutable_data_ptr<scalar_t>();
    job.grad_map = gm;
    job.grad_scalar = grad_scalar;
    const bool done = pint_pixel_pass(g, logits.const_data_ptr<scalar_t>(), prob.const_data_ptr<scalar_t>(),
                                      check.reader(target, g.C), hard, job);
    if (!done)
      pint_pixel_loss_backward_kernel_impl<scalar_t>(g, logits.const_data_ptr<scalar_t>(),
                                                     prob.const_data_ptr<scalar_t>(), check, target, hard,
                                                     normalize_entropy, gm, grad_scalar, job.grad_logits);
  });
  check.raise_if_bad(op, g.C);
  return grad_logits;
}

TORCH_LIBRARY_IMPL(pyseg_noise, CPU, m) {
  m.impl("pint_pixel_loss", &pint_pixel_loss_cpu);
  m.impl("pint_pixel_loss_backward", &pint_pixel_loss_backward_cpu);
  m.impl("pint_pixel_loss_with_grad", &pint_pixel_loss_with_grad_cpu);
}

}  // namespace cpu
}  // namespace pyseg_noise
