// SPEC 3 / PINT §2.2: U_i = mean entropy over the voxels of slice i, with
// fixed chunks of voxels reduced into per-chunk, per-slice partial sums that
// are added in a fixed order (deterministic for any thread count).
#include <torch/library.h>

#include "voxel_block.h"

namespace pyseg_noise {
namespace cpu {
namespace {

// The voxels of an item are (outer, slice, inner) with inner contiguous: a row
// of `n_slices * inner` voxels visits every slice once. Chunks are fixed runs of
// rows, so the per-chunk partial sums and their ordered total do not depend on
// the thread count. Rows are summed with contiguous (vectorizable) loops.
template <typename scalar_t>
void slice_uncertainty_kernel_impl(const Geometry& g, const Slicing& sl, const scalar_t* entropy,
                                   int64_t rows_per_chunk, int64_t chunks_per_item, std::vector<double>& partial) {
  const int64_t row_len = sl.n_slices * sl.inner;
  const int64_t rows = g.N / row_len;
  at::parallel_for(0, g.B * chunks_per_item, 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t b = chunk / chunks_per_item;
      const int64_t r0 = (chunk % chunks_per_item) * rows_per_chunk;
      const int64_t r1 = std::min(r0 + rows_per_chunk, rows);
      double* acc = partial.data() + chunk * sl.n_slices;
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* row = entropy + b * g.N + r * row_len;
        if (sl.inner == 1) {
          for (int64_t i = 0; i < sl.n_slices; ++i) acc[i] += static_cast<double>(row[i]);
        } else {
          for (int64_t i = 0; i < sl.n_slices; ++i) {
            const scalar_t* run = row + i * sl.inner;
            double s = 0.0;
            for (int64_t k = 0; k < sl.inner; ++k) s += static_cast<double>(run[k]);
            acc[i] += s;
          }
        }
      }
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
  const int64_t row_len = sl.n_slices * sl.inner;
  const int64_t rows_per_chunk = std::max<int64_t>(1, kBlocksPerChunk * kBlock / row_len);
  const int64_t chunks_per_item = (g.N / row_len + rows_per_chunk - 1) / rows_per_chunk;
  std::vector<double> partial(g.B * chunks_per_item * sl.n_slices, 0.0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, entropy.scalar_type(), "slice_uncertainty", [&] {
    slice_uncertainty_kernel_impl<scalar_t>(g, sl, entropy.const_data_ptr<scalar_t>(), rows_per_chunk,
                                            chunks_per_item, partial);
  });
  at::Tensor out = at::empty({g.B, sl.n_slices}, entropy.options().dtype(at::kDouble));
  double* o = out.mutable_data_ptr<double>();
  const double per_slice = static_cast<double>(g.N / sl.n_slices);
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t i = 0; i < sl.n_slices; ++i) {
      double acc = 0.0;
      for (int64_t k = 0; k < chunks_per_item; ++k) acc += partial[(b * chunks_per_item + k) * sl.n_slices + i];
      o[b * sl.n_slices + i] = acc / per_slice;
    }
  return out.to(entropy.scalar_type());
}

TORCH_LIBRARY_IMPL(pyseg_noise, CPU, m) { m.impl("slice_uncertainty", &slice_uncertainty_cpu); }

}  // namespace cpu
}  // namespace pyseg_noise
