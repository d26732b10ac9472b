// SPEC 2 / PINT Eq. (2)-(3): loss_v = alpha_v ce_v + (1 - alpha_v) mse_v with
// alpha_v = exp(-entropy(teacher_prob_v)). The forward is one pass that writes
// the loss and, for pint_pixel_loss_with_grad, the gradient for a unit upstream
// gradient from the same terms; the backward op recomputes the per-voxel terms
// in one pass, so nothing voxel-sized but the gradient is ever allocated.
// Every C runs the kernel of pint_fixed.h (C = 2..4 with the class count a
// compile-time constant).
#include <torch/library.h>

#include "pint_fixed.h"

namespace pyseg_noise {
namespace cpu {

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
    dispatch_pint(g.C, hard, [&](auto nc, auto h) {
      pint_pixel_pass<decltype(nc)::value, decltype(h)::value, scalar_t>(g, logits.const_data_ptr<scalar_t>(),
                                                                         prob.const_data_ptr<scalar_t>(), reader, job);
    });
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
    const TargetReader reader = check.reader(target, g.C);
    dispatch_pint(g.C, hard, [&](auto nc, auto h) {
      pint_pixel_pass<decltype(nc)::value, decltype(h)::value, scalar_t>(g, logits.const_data_ptr<scalar_t>(),
                                                                         prob.const_data_ptr<scalar_t>(), reader, job);
    });
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
