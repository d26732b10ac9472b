// SPEC 1, streaming form, last step: prob = prob_sum * scale (scale = 1/M
// after M softmax_accumulate_ calls) and its entropy, in one pass.
#include <torch/library.h>

#include "pint_voxel_terms.h"

namespace pyseg_noise {
namespace cpu {
namespace {

template <int NC, typename scalar_t>
void prob_entropy_kernel_impl(const Geometry& g, const scalar_t* prob_sum, double scale, scalar_t* prob,
                              scalar_t* entropy) {
  using T = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<T>;
  const Vec vscale(static_cast<T>(scale));
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
        for (int64_t c = 0; c < C; ++c) p[c] = load_vec<T>(prob_sum + (b * C + c) * g.N + n, lanes) * vscale;
        store_prob_entropy<NC, T>(C, g, p, b, n, lanes, prob, entropy);
      }
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> prob_entropy_cpu(const at::Tensor& prob_sum_in, double scale) {
  const char* op = "prob_entropy";
  check_class_tensor(op, "prob_sum", prob_sum_in, 1);
  const at::Tensor prob_sum = prob_sum_in.contiguous();
  const Geometry g = geometry_of(prob_sum);
  at::Tensor prob = at::empty(prob_sum.sizes(), prob_sum.options());
  at::Tensor entropy = voxel_map_like(prob_sum);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, prob_sum.scalar_type(), "prob_entropy", [&] {
    dispatch_classes(g.C, [&](auto nc) {
      prob_entropy_kernel_impl<decltype(nc)::value, scalar_t>(g, prob_sum.const_data_ptr<scalar_t>(), scale,
                                                              prob.mutable_data_ptr<scalar_t>(),
                                                              entropy.mutable_data_ptr<scalar_t>());
    });
  });
  return {prob, entropy};
}

TORCH_LIBRARY_IMPL(pyseg_noise, CPU, m) { m.impl("prob_entropy", &prob_entropy_cpu); }

}  // namespace cpu
}  // namespace pyseg_noise
