// SPEC 5 / TSMAN Eq. (7): the Gaussian-smoothed argmax disagreement of two
// streams, no gradient. The pass itself is in gaussian_attention.h, shared
// with tsman_loss's forward.
#include <torch/library.h>

#include "gaussian_attention.h"

namespace pyseg_noise {
namespace cpu {

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
  std::vector<int64_t> out_size{a.size(0)};
  for (auto s : a.sizes().slice(2)) out_size.push_back(s);
  at::Tensor out = at::empty(out_size, a.options());
  attention_forward(op, a, b, plan, at::Tensor(), out, at::Tensor());
  return out;
}

TORCH_LIBRARY_IMPL(pyseg_noise, CPU, m) { m.impl("loss_attention", &loss_attention_cpu); }

}  // namespace cpu
}  // namespace pyseg_noise
