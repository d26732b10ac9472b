// SPEC 3 / PINT §2.2: U_i = mean entropy over the voxels of slice i, with
// fixed chunks of voxels reduced into per-chunk, per-slice partial sums that
// are added in a fixed order (deterministic for any thread count).
#include <torch/library.h>

#include "voxel_block.h"

namespace pyseg_noise {
namespace cpu {
namespace {

template <typename scalar_t>
void slice_uncertainty_kernel_impl(const Geometry& g, const Slicing& sl, const scalar_t* entropy,
                                   std::vector<double>& partial) {
  at::parallel_for(0, g.n_chunks(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t b = chunk / g.chunks_per_item;
      const int64_t n0 = (chunk % g.chunks_per_item) * kBlocksPerChunk * kBlock;
      const int64_t n1 = std::min(n0 + kBlocksPerChunk * kBlock, g.N);
      double* acc = partial.data() + chunk * sl.n_slices;
      const scalar_t* e = entropy + b * g.N;
      SliceCursor cur(sl, n0);
      for (int64_t n = n0; n < n1; ++n, cur.next()) acc[cur.slice] += static_cast<double>(e[n]);
    }
  });
}

}  // namespace

at::Tensor slice_uncertainty_cpu(const at::Tensor& entropy_in, int64_t slice_dim) {
  const char* op = "slice_uncertainty";
  TORCH_CHECK_TYPE(at::isFloatingType(entropy_in.scalar_type()), op, ": entropy must be floating point, got ",
                   entropy_in.scalar_type());
  TORCH_CHECK_VALUE(entropy_in.dim() == 3 || entropy_in.dim() == 4, op,
                    ": entropy must be [B, H, W] or [B, X, Y, Z], got shape ", entropy_in.sizes());
  TORCH_CHECK_VALUE(entropy_in.numel() > 0, op, ": entropy is empty (shape ", entropy_in.sizes(), ")");
  TORCH_CHECK(entropy_in.device().is_cpu(), op, ": the CPU kernel needs CPU tensors");
  const at::Tensor entropy = entropy_in.contiguous();
  const Slicing sl = slicing_of(entropy.sizes().slice(1), slice_dim, op);
  // Geometry of a [B, 1, *S] view: one "class".
  const Geometry g = geometry_of(entropy.unsqueeze(1));
  std::vector<double> partial(g.n_chunks() * sl.n_slices, 0.0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, entropy.scalar_type(), "slice_uncertainty", [&] {
    slice_uncertainty_kernel_impl<scalar_t>(g, sl, entropy.const_data_ptr<scalar_t>(), partial);
  });
  at::Tensor out = at::empty({g.B, sl.n_slices}, entropy.options().dtype(at::kDouble));
  double* o = out.mutable_data_ptr<double>();
  const double per_slice = static_cast<double>(g.N / sl.n_slices);
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t i = 0; i < sl.n_slices; ++i) {
      double acc = 0.0;
      for (int64_t k = 0; k < g.chunks_per_item; ++k) acc += partial[(b * g.chunks_per_item + k) * sl.n_slices + i];
      o[b * sl.n_slices + i] = acc / per_slice;
    }
  return out.to(entropy.scalar_type());
}

TORCH_LIBRARY_IMPL(pyseg_noise, CPU, m) { m.impl("slice_uncertainty", &slice_uncertainty_cpu); }

}  // namespace cpu
}  // namespace pyseg_noise
