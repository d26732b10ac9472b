// SPEC 4 / PINT Eq. (4)-(5): per slice i, alpha_i = exp(-U_i) with U_i the
// mean teacher entropy of the slice, loss_i = alpha_i mean(ce) + (1 - alpha_i)
// mean(mse). The forward is one pass accumulating (u, ce, mse) per slice into
// fixed chunks reduced in order; it returns alpha_i for the backward, which
// recomputes the per-voxel terms in one pass.
#include <torch/library.h>

#include "pint_fixed.h"

namespace pyseg_noise {
namespace cpu {

std::tuple<at::Tensor, at::Tensor> pint_image_loss_cpu(const at::Tensor& logits_in, const at::Tensor& target_in,
                                                       const at::Tensor& teacher_prob_in, bool hard,
                                                       bool normalize_entropy, int64_t slice_dim,
                                                       c10::string_view reduction) {
  const char* op = "pint_image_loss";
  check_pint_args(op, logits_in, target_in, teacher_prob_in);
  TORCH_CHECK_VALUE(logits_in.dim() == 4 || logits_in.dim() == 5, op,
                    ": logits must be [B, C, H, W] or [B, C, X, Y, Z], got shape ", logits_in.sizes());
  const Reduction red = parse_reduction(op, reduction);
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor target = target_in.contiguous();
  const at::Tensor prob = teacher_prob_in.to(logits.scalar_type()).contiguous();
  const Geometry g = geometry_of(logits);
  const Slicing sl = slicing_of(logits.sizes().slice(2), slice_dim, op);
  std::vector<double> partial(g.n_chunks() * sl.n_slices * 3, 0.0);
  TargetCheck check;
  std::atomic<bool> nan_prob{false};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "pint_image_loss", [&] {
    const TargetReader reader = check.reader(target, g.C);
    dispatch_pint(g.C, hard, [&](auto nc, auto h) {
      pint_image_pass<decltype(nc)::value, decltype(h)::value, scalar_t>(
          g, sl, logits.const_data_ptr<scalar_t>(), prob.const_data_ptr<scalar_t>(), reader, normalize_entropy,
          partial, nan_prob);
    });
  });
  check.raise_if_bad(op, g.C);
  TORCH_CHECK_VALUE(!nan_prob.load(), op, ": teacher_prob contains NaN");
  const auto alpha_dtype = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor loss_slices = at::empty({g.B, sl.n_slices}, logits.options().dtype(at::kDouble));
  at::Tensor alpha_d = at::empty({g.B, sl.n_slices}, logits.options().dtype(at::kDouble));
  double* L = loss_slices.mutable_data_ptr<double>();
  double* A = alpha_d.mutable_data_ptr<double>();
  const double per_slice = static_cast<double>(g.N / sl.n_slices);
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t i = 0; i < sl.n_slices; ++i) {
      double u = 0, ce = 0, mse = 0;
      for (int64_t k = 0; k < g.chunks_per_item; ++k) {
        const double* a = partial.data() + ((b * g.chunks_per_item + k) * sl.n_slices + i) * 3;
        u += a[0];
        ce += a[1];
        mse += a[2];
      }
      const double alpha = std::exp(-u / per_slice);
      A[b * sl.n_slices + i] = alpha;
      L[b * sl.n_slices + i] = alpha * ce / per_slice + (1.0 - alpha) * mse / per_slice;
    }
  at::Tensor loss;
  if (red == Reduction::None) {
    loss = loss_slices.to(logits.scalar_type());
  } else {
    double total = 0.0;
    for (int64_t k = 0; k < g.B * sl.n_slices; ++k) total += L[k];
    if (red == Reduction::Mean) total /= static_cast<double>(g.B * sl.n_slices);
    loss = at::scalar_tensor(total, logits.options());
  }
  return {loss, alpha_d.to(alpha_dtype)};
}

at::Tensor pint_image_loss_backward_cpu(const at::Tensor& grad_in, const at::Tensor& logits_in,
                                        const at::Tensor& target_in, const at::Tensor& teacher_prob_in,
                                        const at::Tensor& slice_alpha, bool hard, int64_t slice_dim,
                                        c10::string_view reduction) {
  const char* op = "pint_image_loss_backward";
  check_pint_args(op, logits_in, target_in, teacher_prob_in);
  const Reduction red = parse_reduction(op, reduction);
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor target = target_in.contiguous();
  const at::Tensor prob = teacher_prob_in.to(logits.scalar_type()).contiguous();
  const Geometry g = geometry_of(logits);
  const Slicing sl = slicing_of(logits.sizes().slice(2), slice_dim, op);
  TORCH_CHECK_VALUE(slice_alpha.dim() == 2 && slice_alpha.size(0) == g.B && slice_alpha.size(1) == sl.n_slices, op,
                    ": slice_alpha must be [B, n_slices] = [", g.B, ", ", sl.n_slices, "], got ", slice_alpha.sizes());
  const at::Tensor alpha = slice_alpha.to(at::kDouble).contiguous();
  const double* A = alpha.const_data_ptr<double>();
  const double per_slice = static_cast<double>(g.N / sl.n_slices);
  std::vector<double> gs(g.B * sl.n_slices);
  if (red == Reduction::None) {
    TORCH_CHECK_VALUE(grad_in.dim() == 2 && grad_in.size(0) == g.B && grad_in.size(1) == sl.n_slices, op,
                      ": grad must be [B, n_slices] = [", g.B, ", ", sl.n_slices, "], got ", grad_in.sizes());
    const at::Tensor gd = grad_in.to(at::kDouble).contiguous();
    std::copy(gd.const_data_ptr<double>(), gd.const_data_ptr<double>() + gs.size(), gs.begin());
  } else {
    TORCH_CHECK_VALUE(grad_in.numel() == 1, op, ": grad of a reduced loss must have one element, got shape ",
                      grad_in.sizes());
    double gv = grad_in.item<double>();
    if (red == Reduction::Mean) gv /= static_cast<double>(g.B * sl.n_slices);
    std::fill(gs.begin(), gs.end(), gv);
  }
  std::vector<double> w_ce(gs.size()), w_mse(gs.size());
  for (size_t k = 0; k < gs.size(); ++k) {
    w_ce[k] = gs[k] * A[k] / per_slice;
    w_mse[k] = gs[k] * (1.0 - A[k]) / per_slice;
  }
  at::Tensor grad_logits = at::empty(logits.sizes(), logits.options());
  TargetCheck check;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "pint_image_loss_backward", [&] {
    const TargetReader reader = check.reader(target, g.C);
    dispatch_pint(g.C, hard, [&](auto nc, auto h) {
      pint_image_grad<decltype(nc)::value, decltype(h)::value, scalar_t>(
          g, sl, logits.const_data_ptr<scalar_t>(), prob.const_data_ptr<scalar_t>(), reader, w_ce, w_mse,
          grad_logits.mutable_data_ptr<scalar_t>());
    });
  });
  check.raise_if_bad(op, g.C);
  return grad_logits;
}

TORCH_LIBRARY_IMPL(pyseg_noise, CPU, m) {
  m.impl("pint_image_loss", &pint_image_loss_cpu);
  m.impl("pint_image_loss_backward", &pint_image_loss_backward_cpu);
}

}  // namespace cpu
}  // namespace pyseg_noise
