// SPEC 2 / PINT Eq. (2)-(3): loss_v = alpha_v ce_v + (1 - alpha_v) mse_v with
// alpha_v = exp(-entropy(teacher_prob_v)). The forward is one pass that writes
// the loss and, for pint_pixel_loss_with_grad, the gradient for a unit upstream
// gradient from the same terms; the backward op recomputes the per-voxel terms
// in one pass, so nothing voxel-sized but the gradient is ever allocated.
// One kernel for every C (pint_voxel_terms.h; C = 2..4 with the class count a
// compile-time constant) serves all three ops.
#include <torch/library.h>

#include "pint_voxel_terms.h"

namespace pyseg_noise {
namespace cpu {
namespace {

// What one pass of the pixel kernel produces.
template <typename scalar_t>
struct PixelPass {
  bool normalize = false;
  // Loss: partial sums per chunk (mean/sum), or the per-voxel map.
  std::vector<double>* partial = nullptr;
  scalar_t* loss_map = nullptr;
  // Gradient: written when grad_logits is set, scaled per voxel by grad_map
  // (when set) or by grad_scalar.
  scalar_t* grad_logits = nullptr;
  const scalar_t* grad_map = nullptr;
  double grad_scalar = 1.0;
  std::atomic<bool>* nan_prob = nullptr;
};

template <int NC, bool HARD, typename scalar_t>
void pint_pixel_loss_kernel_impl(const Geometry& g, const scalar_t* logits, const scalar_t* prob,
                                 const TargetReader& reader, const PixelPass<scalar_t>& job) {
  using T = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t W = Vec::size();
  const bool with_loss = job.partial != nullptr || job.loss_map != nullptr;
  const bool with_grad = job.grad_logits != nullptr;
  const T two_over_c = T(2) / static_cast<T>(g.C);
  at::parallel_for(0, g.n_chunks(), 1, [&](int64_t begin, int64_t end) {
    const int64_t C = class_count<NC>(g.C);
    ClassScratch<NC, T> scratch(C);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t b = g.chunk_item(chunk);
      const int64_t blk0 = g.chunk_begin(chunk), blk1 = g.chunk_end(chunk);
      const scalar_t* xb = logits + b * C * g.N;
      const scalar_t* pb = prob + b * C * g.N;
      double chunk_sum = 0.0;
      Vec u_sum = Vec(T(0));
      for (int64_t blk = blk0; blk < blk1; ++blk) {
        const int64_t n0 = blk * kBlock;
        const int64_t cnt = std::min(kBlock, g.N - n0);
        Vec acc = Vec(T(0));
        // Loads one vector of voxels (lanes real ones) and evaluates its terms.
        auto eval = [&](int64_t j, int64_t lanes, PintVoxels<NC, T>& v, Vec& t) {
          const int64_t n = n0 + j;
          ClassVecs<NC, T> x(scratch.slot(ClassSlot::Logits)), p(scratch.slot(ClassSlot::Prob));
          load_voxels<NC>(C, xb, pb, g.N, n, lanes, x, p);
          t = load_labels<T>(reader, b * g.N + n, lanes);
          pint_voxel_terms<NC, HARD, T>(C, x, p, t, job.normalize, with_loss, v);
        };
        // Writes its loss and gradient.
        auto emit = [&](int64_t j, int64_t lanes, const PintVoxels<NC, T>& v, const Vec& t) {
          const int64_t n = n0 + j;
          u_sum = u_sum + v.u;
          if (with_loss) {
            Vec l = at::vec::fmadd(v.alpha, v.ce - v.mse, v.mse);  // alpha ce + (1 - alpha) mse
            if (job.loss_map != nullptr) store_vec(job.loss_map + b * g.N + n, l, lanes);
            if (lanes < W) l = Vec::set(Vec(T(0)), l, lanes);  // tail: real voxels only
            acc = acc + l;
          }
          if (with_grad) {
            const Vec scale = job.grad_map != nullptr ? load_vec<T>(job.grad_map + b * g.N + n, lanes)
                                                      : Vec(static_cast<T>(job.grad_scalar));
            const Vec w_ce = scale * v.alpha;
            const Vec w2 = (scale - w_ce) * Vec(two_over_c);
            ClassVecs<NC, T> gr(scratch.slot(ClassSlot::Grad));
            pint_voxel_grad<NC, T>(C, v, t, w_ce, w2, gr);
            scalar_t* out = job.grad_logits + b * C * g.N + n;
            for (int64_t c = 0; c < C; ++c) store_vec_stream(out + c * g.N, gr[c], lanes);
          }
        };
        int64_t j = 0;
        for (; j < cnt; j += W) {
          const int64_t lanes = std::min<int64_t>(W, cnt - j);
          PintVoxels<NC, T> v(scratch);
          Vec t;
          eval(j, lanes, v, t);
          emit(j, lanes, v, t);
        }
        chunk_sum += static_cast<double>(vec_sum(acc));
      }
      if (job.partial != nullptr) (*job.partial)[chunk] = chunk_sum;
      if (with_grad) stream_fence();
      // NaN in teacher_prob makes u NaN (padding lanes load 0 and stay finite).
      if (job.nan_prob != nullptr && std::isnan(vec_sum(u_sum))) *job.nan_prob = true;
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
  const PintInputs in(op, logits_in, target_in, teacher_prob_in);
  const at::Tensor &logits = in.logits, &target = in.target, &prob = in.prob;
  const Geometry& g = in.g;
  const Reduction red = parse_reduction(op, reduction);
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
      pint_pixel_loss_kernel_impl<decltype(nc)::value, decltype(h)::value, scalar_t>(
          g, logits.const_data_ptr<scalar_t>(), prob.const_data_ptr<scalar_t>(), reader, job);
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
  const PintInputs in(op, logits_in, target_in, teacher_prob_in);
  const at::Tensor &logits = in.logits, &target = in.target, &prob = in.prob;
  const Geometry& g = in.g;
  const Reduction red = parse_reduction(op, reduction);
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
      pint_pixel_loss_kernel_impl<decltype(nc)::value, decltype(h)::value, scalar_t>(
          g, logits.const_data_ptr<scalar_t>(), prob.const_data_ptr<scalar_t>(), reader, job);
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
