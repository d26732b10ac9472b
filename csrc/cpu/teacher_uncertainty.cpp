// SPEC 1 / PINT Eq. (1): prob = mean_m softmax_C(teacher_logits[m]) and its
// entropy, in one pass over the voxels that reads all M passes of a block.
// The streaming form (softmax_accumulate_ then prob_entropy) adds one pass at
// a time into an accumulator so the M passes never sit in memory together.
#include <torch/library.h>

#include "pint_fixed.h"
#include "voxel_block.h"

namespace pyseg_noise {
namespace cpu {
namespace {

// Each vector of voxels goes from its M passes' logits to its prob and
// entropy without touching a voxel buffer. `acc_in` (when set) is a running
// sum to scale instead of the M passes (prob_entropy).
template <int NC, typename scalar_t>
void prob_entropy_pass(int64_t M, const Geometry& g, const scalar_t* logits, const scalar_t* acc_in, double scale,
                       scalar_t* prob, scalar_t* entropy) {
  using T = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t W = Vec::size();
  const int64_t C = class_count<NC>(g.C);
  const int64_t pass_stride = g.B * C * g.N;
  const Vec vscale(static_cast<T>(scale));
  at::parallel_for(0, g.B * g.blocks_per_item, 16, [&](int64_t begin, int64_t end) {
    ClassScratch<NC, T> scratch(C);
    for (int64_t id = begin; id < end; ++id) {
      const int64_t b = id / g.blocks_per_item;
      const int64_t n0 = (id % g.blocks_per_item) * kBlock;
      const int64_t cnt = std::min(kBlock, g.N - n0);
      for (int64_t j = 0; j < cnt; j += W) {
        const int64_t n = n0 + j;
        const int64_t lanes = std::min<int64_t>(W, cnt - j);
        ClassVecs<NC, T> p(scratch.slot(ClassSlot::Prob));
        if (acc_in != nullptr) {
          for (int64_t c = 0; c < C; ++c) p[c] = load_vec<T>(acc_in + (b * C + c) * g.N + n, lanes) * vscale;
        } else {
          for (int64_t c = 0; c < C; ++c) p[c] = Vec(T(0));
          for (int64_t m = 0; m < M; ++m) {
            ClassVecs<NC, T> x(scratch.slot(ClassSlot::Logits)), s(scratch.slot(ClassSlot::Softmax));
            Vec mx, z;
            for (int64_t c = 0; c < C; ++c)
              x[c] = load_vec<T>(logits + m * pass_stride + (b * C + c) * g.N + n, lanes);
            softmax_voxels<NC, T>(C, x, s, mx, z);
            for (int64_t c = 0; c < C; ++c) p[c] = p[c] + s[c];
          }
          for (int64_t c = 0; c < C; ++c) p[c] = p[c] * vscale;
        }
        for (int64_t c = 0; c < C; ++c) store_vec(prob + (b * C + c) * g.N + n, p[c], lanes);
        store_vec(entropy + b * g.N + n, entropy_voxels<NC, T>(C, p), lanes);
      }
    }
  });
}

// acc += softmax(logits).
template <int NC, typename acc_t>
void softmax_accumulate_pass(const Geometry& g, const acc_t* logits, acc_t* acc) {
  using T = at::opmath_type<acc_t>;
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t W = Vec::size();
  const int64_t C = class_count<NC>(g.C);
  at::parallel_for(0, g.B * g.blocks_per_item, 16, [&](int64_t begin, int64_t end) {
    ClassScratch<NC, T> scratch(C);
    for (int64_t id = begin; id < end; ++id) {
      const int64_t b = id / g.blocks_per_item;
      const int64_t n0 = (id % g.blocks_per_item) * kBlock;
      const int64_t cnt = std::min(kBlock, g.N - n0);
      for (int64_t j = 0; j < cnt; j += W) {
        const int64_t lanes = std::min<int64_t>(W, cnt - j);
        const int64_t off = b * C * g.N + n0 + j;
        ClassVecs<NC, T> x(scratch.slot(ClassSlot::Logits)), s(scratch.slot(ClassSlot::Softmax));
        Vec mx, z;
        for (int64_t c = 0; c < C; ++c) x[c] = load_vec<T>(logits + off + c * g.N, lanes);
        softmax_voxels<NC, T>(C, x, s, mx, z);
        for (int64_t c = 0; c < C; ++c)
          store_vec(acc + off + c * g.N, load_vec<T>(acc + off + c * g.N, lanes) + s[c], lanes);
      }
    }
  });
}

void check_class_tensor(const char* op, const char* name, const at::Tensor& t, int64_t class_dim) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": ", name, " must be floating point, got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() >= class_dim + 2, op, ": ", name, " must have a class axis and spatial axes, got shape ",
                    t.sizes());
  TORCH_CHECK_VALUE(t.numel() > 0, op, ": ", name, " is empty (shape ", t.sizes(), ")");
  TORCH_CHECK(t.device().is_cpu(), op, ": the CPU kernel needs CPU tensors");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> teacher_uncertainty_cpu(const at::Tensor& teacher_logits) {
  const char* op = "teacher_uncertainty";
  check_class_tensor(op, "teacher_logits", teacher_logits, 2);
  const at::Tensor logits = teacher_logits.contiguous();
  const int64_t M = logits.size(0);
  const at::Tensor first = logits.select(0, 0);
  const Geometry g = geometry_of(first);
  at::Tensor prob = at::empty(first.sizes(), logits.options());
  std::vector<int64_t> esize{first.size(0)};
  for (int64_t d = 2; d < first.dim(); ++d) esize.push_back(first.size(d));
  at::Tensor entropy = at::empty(esize, logits.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "teacher_uncertainty", [&] {
    dispatch_classes(g.C, [&](auto nc) {
      prob_entropy_pass<decltype(nc)::value, scalar_t>(M, g, logits.const_data_ptr<scalar_t>(), nullptr, 1.0 / M,
                                                       prob.mutable_data_ptr<scalar_t>(),
                                                       entropy.mutable_data_ptr<scalar_t>());
    });
  });
  return {prob, entropy};
}

void softmax_accumulate_cpu(const at::Tensor& prob_sum, const at::Tensor& logits_in) {
  const char* op = "softmax_accumulate_";
  check_class_tensor(op, "logits", logits_in, 1);
  check_class_tensor(op, "prob_sum", prob_sum, 1);
  TORCH_CHECK_VALUE(prob_sum.sizes() == logits_in.sizes(), op, ": prob_sum must have the shape of logits ",
                    logits_in.sizes(), ", got ", prob_sum.sizes());
  const at::Tensor logits = logits_in.to(prob_sum.scalar_type()).contiguous();
  // Accumulate into a contiguous buffer; copy back only if the caller's is not.
  at::Tensor acc = prob_sum.is_contiguous() ? prob_sum : prob_sum.contiguous();
  const Geometry g = geometry_of(logits);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, acc.scalar_type(), "softmax_accumulate_", [&] {
    dispatch_classes(g.C, [&](auto nc) {
      softmax_accumulate_pass<decltype(nc)::value, scalar_t>(g, logits.const_data_ptr<scalar_t>(),
                                                              acc.mutable_data_ptr<scalar_t>());
    });
  });
  if (!acc.is_same(prob_sum)) prob_sum.copy_(acc);
}

std::tuple<at::Tensor, at::Tensor> prob_entropy_cpu(const at::Tensor& prob_sum_in, double scale) {
  const char* op = "prob_entropy";
  check_class_tensor(op, "prob_sum", prob_sum_in, 1);
  const at::Tensor prob_sum = prob_sum_in.contiguous();
  const Geometry g = geometry_of(prob_sum);
  at::Tensor prob = at::empty(prob_sum.sizes(), prob_sum.options());
  std::vector<int64_t> esize{prob_sum.size(0)};
  for (int64_t d = 2; d < prob_sum.dim(); ++d) esize.push_back(prob_sum.size(d));
  at::Tensor entropy = at::empty(esize, prob_sum.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, prob_sum.scalar_type(), "prob_entropy", [&] {
    dispatch_classes(g.C, [&](auto nc) {
      prob_entropy_pass<decltype(nc)::value, scalar_t>(0, g, nullptr, prob_sum.const_data_ptr<scalar_t>(), scale,
                                                       prob.mutable_data_ptr<scalar_t>(),
                                                       entropy.mutable_data_ptr<scalar_t>());
    });
  });
  return {prob, entropy};
}

TORCH_LIBRARY_IMPL(pyseg_noise, CPU, m) {
  m.impl("teacher_uncertainty", &teacher_uncertainty_cpu);
  m.impl("softmax_accumulate_", &softmax_accumulate_cpu);
  m.impl("prob_entropy", &prob_entropy_cpu);
}

}  // namespace cpu
}  // namespace pyseg_noise
