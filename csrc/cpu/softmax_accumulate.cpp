// SPEC 1, streaming form: prob_sum += softmax_C(logits) in place, one teacher
// pass at a time, so the M passes never sit in memory together
// (prob_entropy.cpp then scales the sum and takes its entropy).
#include <torch/library.h>

#include "pint_voxel_terms.h"

namespace pyseg_noise {
namespace cpu {
namespace {

template <int NC, typename scalar_t>
void softmax_accumulate_kernel_impl(const Geometry& g, const scalar_t* logits, scalar_t* acc) {
  using T = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<T>;
  at::parallel_for(0, g.B * g.blocks_per_item, 16, [&](int64_t begin, int64_t end) {
    const int64_t C = class_count<NC>(g.C);
    ClassScratch<NC, T> scratch(C);
    for (int64_t id = begin; id < end; ++id) {
      const int64_t b = id / g.blocks_per_item;
      const int64_t n0 = (id % g.blocks_per_item) * kBlock;
      const int64_t n1 = std::min(n0 + kBlock, g.N);
      for (int64_t n = n0; n < n1; n += Vec::size()) {
        const int64_t lanes = std::min<int64_t>(Vec::size(), n1 - n);
        const int64_t off = b * C * g.N + n;
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

}  // namespace

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
      softmax_accumulate_kernel_impl<decltype(nc)::value, scalar_t>(g, logits.const_data_ptr<scalar_t>(),
                                                                     acc.mutable_data_ptr<scalar_t>());
    });
  });
  if (!acc.is_same(prob_sum)) prob_sum.copy_(acc);
}

TORCH_LIBRARY_IMPL(pyseg_noise, CPU, m) { m.impl("softmax_accumulate_", &softmax_accumulate_cpu); }

}  // namespace cpu
}  // namespace pyseg_noise
