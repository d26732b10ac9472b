// SPEC 6 / TSMAN Eq. (3)-(7), fused: both streams' attended cross-entropy
// with one shared attention map, loss_v = attention_v * (ce_a + ce_b)_v, and
// the map itself (SPEC 5), returned as the second output.
//
// The forward is gaussian_attention.h's pass, which reads both streams' logits
// and the labels once and forms the loss in its last smoothing pass. The
// backward (attended_ce_backward.h) writes both streams' gradients in one
// pass. Nothing voxel-sized is saved between forward and backward except the
// attention map, which is an output anyway.
#include <torch/library.h>

#include "attended_ce_backward.h"
#include "gaussian_attention.h"

namespace pyseg_noise {
namespace cpu {
namespace {

void check_tsman_args(const char* op, const at::Tensor& logits_a, const at::Tensor& logits_b,
                      const at::Tensor& target) {
  check_stream(op, "logits_a", logits_a);
  check_second_stream(op, logits_a, logits_b);
  check_target_dtype(op, target);
  check_voxel_map(op, "target", target, logits_a);
}

}  // namespace

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
  double total = attention_forward(op, a, b, plan, target, attention, loss_map);
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
  m.impl("tsman_loss", &tsman_loss_cpu);
  m.impl("tsman_loss_backward", &tsman_loss_backward_cpu);
}

}  // namespace cpu
}  // namespace pyseg_noise
