// SPEC 1 / PINT Eq. (1): prob = mean_m softmax_C(teacher_logits[m]) and its
// entropy, in one pass over the voxels that reads all M passes of a vector of
// voxels. (The streaming form, softmax_accumulate_ then prob_entropy, adds one
// pass at a time into an accumulator so the M passes never sit in memory
// together.)
#include <torch/library.h>

#include "pint_voxel_terms.h"

namespace pyseg_noise {
namespace cpu {
namespace {

// Each vector of voxels goes from its M passes' logits to its prob and
// entropy without touching a voxel buffer. (The block loop is written out, as
// in softmax_accumulate.cpp and prob_entropy.cpp: behind a helper that called
// the kernel body per block, GCC did not inline the body, and this kernel ran
// 1.5x as long at C = 3.)
template <int NC, typename scalar_t>
void teacher_uncertainty_kernel_impl(int64_t M, const Geometry& g, const scalar_t* logits, scalar_t* prob,
                                     scalar_t* entropy) {
  using T = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<T>;
  const int64_t pass_stride = g.B * g.C * g.N;
  const Vec scale(static_cast<T>(1.0 / M));
  at::parallel_for(0, g.B * g.blocks_per_item, 16, [&](int64_t begin, int64_t end) {
    const int64_t C = class_count<NC>(g.C);
    ClassScratch<NC, T> scratch(C);
    for (int64_t id = begin; id < end; ++id) {
      const int64_t b = id / g.blocks_per_item;
      const int64_t n0 = (id % g.blocks_per_item) * kBlock;
      const int64_t n1 = std::min(n0 + kBlock, g.N);
      for (int64_t n = n0; n < n1; n += Vec::size()) {
        const int64_t lanes = std::min<int64_t>(Vec::size(), n1 - n);
        ClassVecs<NC, T> p(scratch.slot(ClassSlot::Prob));
        for (int64_t c = 0; c < C; ++c) p[c] = Vec(T(0));
        for (int64_t m = 0; m < M; ++m) {
          ClassVecs<NC, T> x(scratch.slot(ClassSlot::Logits)), s(scratch.slot(ClassSlot::Softmax));
          Vec mx, z;
          for (int64_t c = 0; c < C; ++c) x[c] = load_vec<T>(logits + m * pass_stride + (b * C + c) * g.N + n, lanes);
          softmax_voxels<NC, T>(C, x, s, mx, z);
          for (int64_t c = 0; c < C; ++c) p[c] = p[c] + s[c];
        }
        for (int64_t c = 0; c < C; ++c) p[c] = p[c] * scale;
        store_prob_entropy<NC, T>(C, g, p, b, n, lanes, prob, entropy);
      }
    }
  });
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
  at::Tensor entropy = voxel_map_like(first);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "teacher_uncertainty", [&] {
    dispatch_classes(g.C, [&](auto nc) {
      teacher_uncertainty_kernel_impl<decltype(nc)::value, scalar_t>(M, g, logits.const_data_ptr<scalar_t>(),
                                                                     prob.mutable_data_ptr<scalar_t>(),
                                                                     entropy.mutable_data_ptr<scalar_t>());
    });
  });
  return {prob, entropy};
}

TORCH_LIBRARY_IMPL(pyseg_noise, CPU, m) { m.impl("teacher_uncertainty", &teacher_uncertainty_cpu); }

}  // namespace cpu
}  // namespace pyseg_noise
