// Pieces of TSMAN's ops (SPEC 5-6) shared by loss_attention.cpp and
// attended_cross_entropy.cpp: the attention map itself (the fused tsman_loss
// computes it before its cross-entropy pass), the per-voxel log-sum-exp and
// the argument checks.
#pragma once

#include "voxel_block.h"

namespace pyseg_noise {
namespace cpu {

// SPEC 5: the Gaussian-smoothed argmax disagreement of two streams,
// Tensor[B, *S] in logits_a's dtype. Defined in loss_attention.cpp.
at::Tensor loss_attention_cpu(const at::Tensor& logits_a, const at::Tensor& logits_b, double sigma2,
                              int64_t kernel_size, int64_t spatial_dims, int64_t slice_dim);

// lse (per voxel) = logsumexp_C(x) over the block; the cross-entropy only
// needs this, not the softmax itself.
template <typename T>
inline void block_logsumexp(const T* x, int64_t C, T* lse) {
  using Vec = at::vec::Vectorized<T>;
  for (int64_t j = 0; j < kBlock; j += Vec::size()) {
    Vec m = Vec::loadu(x + j);
    for (int64_t c = 1; c < C; ++c) m = at::vec::maximum(m, Vec::loadu(x + c * kBlock + j));
    Vec z(T(0));
    for (int64_t c = 0; c < C; ++c) z = z + vexp(Vec::loadu(x + c * kBlock + j) - m);
    (m + vlog(z)).store(lse + j);
  }
}

// logits must be a non-empty floating [B, C, *S] tensor with C >= 2 on the CPU.
inline void check_stream(const char* op, const char* name, const at::Tensor& logits) {
  TORCH_CHECK_VALUE(logits.dim() >= 3 && logits.dim() <= 5, op, ": ", name,
                    " must be [B, C, *S] with 1-3 spatial axes, got shape ", logits.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(logits.scalar_type()), op, ": ", name, " must be floating point, got ",
                   logits.scalar_type());
  TORCH_CHECK_VALUE(logits.size(1) >= 2, op, ": ", name, " needs at least C=2 classes, got C=", logits.size(1));
  TORCH_CHECK_VALUE(logits.numel() > 0, op, ": ", name, " is empty (shape ", logits.sizes(), ")");
  TORCH_CHECK(logits.device().is_cpu(), op, ": the CPU kernel needs CPU tensors, ", name, " is on ",
              logits.device());
}

// logits_b must match logits_a in shape and dtype (one kernel reads both).
inline void check_second_stream(const char* op, const at::Tensor& logits_a, const at::Tensor& logits_b) {
  check_stream(op, "logits_b", logits_b);
  TORCH_CHECK_VALUE(logits_b.sizes() == logits_a.sizes(), op, ": logits_b must have the shape of logits_a ",
                    logits_a.sizes(), ", got ", logits_b.sizes());
  TORCH_CHECK_TYPE(logits_b.scalar_type() == logits_a.scalar_type(), op, ": logits_b must have the dtype of logits_a (",
                   logits_a.scalar_type(), "), got ", logits_b.scalar_type());
}

// A per-voxel tensor [B, *S] matching logits [B, C, *S] (target, attention, loss maps).
inline void check_voxel_map(const char* op, const char* name, const at::Tensor& map, const at::Tensor& logits) {
  TORCH_CHECK_VALUE(map.dim() == logits.dim() - 1 && map.size(0) == logits.size(0) &&
                        map.sizes().slice(1) == logits.sizes().slice(2),
                    op, ": ", name, " must be [B, *S] = ", logits.sizes().slice(0, 1), " + ", logits.sizes().slice(2),
                    ", got ", map.sizes());
  TORCH_CHECK(map.device().is_cpu(), op, ": the CPU kernel needs CPU tensors, ", name, " is on ", map.device());
}

}  // namespace cpu
}  // namespace pyseg_noise
