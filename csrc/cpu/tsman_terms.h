// Per-voxel pieces of TSMAN's ops (SPEC 5-6), shared by loss_attention.cpp,
// attended_cross_entropy.cpp and tsman_loss.cpp (through
// gaussian_attention.h and attended_ce_backward.h): the argmax and
// cross-entropy of one stream read straight from memory, and the argument
// checks.
#pragma once

#include "voxel_block.h"

namespace pyseg_noise {
namespace cpu {

// For n <= Vec::size() voxels of one item of channel-planar logits p (plane
// stride N) read straight from memory (lanes past n are zero): the argmax
// over classes (as T; strict >, so ties go to the lowest class, as
// torch.argmax) and the cross-entropy logsumexp(x) - x[target] split as
// ce = (m - x[target]) + log(z), m = max_c x_c, z = sum_c exp(x_c - m) in
// [1, C]: the caller adds the logs of several streams as one log of the
// product of their z. NaN: x > m is false for a NaN, so a NaN in class 0
// stays the maximum (m - x[target] is NaN) and a NaN in any other class is
// never the argmax, so it enters z; either way the loss is NaN.
template <int kC, typename T, typename S>
inline void stream_argmax_ce(const S* p, int64_t N, int64_t C_rt, int64_t n, const at::vec::Vectorized<T>& tf,
                             at::vec::Vectorized<T>& idx, at::vec::Vectorized<T>& m_minus_xt,
                             at::vec::Vectorized<T>& z) {
  using Vec = at::vec::Vectorized<T>;
  const int64_t C = kC > 0 ? kC : C_rt;
  const Vec zero(T(0)), one(T(1));
  Vec m = load_vec<T>(p, n);
  Vec xt = where_eq(tf, zero, m, zero);
  idx = zero;
  if constexpr (kC == 2 || kC == 3) {
    // The argmax class contributes exp(0) = 1: only the others need an exp.
    Vec x[kC];
    x[0] = m;
    for (int c = 1; c < kC; ++c) {
      x[c] = load_vec<T>(p + c * N, n);
      idx = where_gt(x[c], m, Vec(T(c)), idx);
      m = where_gt(x[c], m, x[c], m);
      xt = where_eq(tf, Vec(T(c)), x[c], xt);
    }
    if constexpr (kC == 2) {
      z = one + vexp(where_eq(idx, one, x[0], x[1]) - m);
    } else {  // the two classes other than idx: (1, 2), (0, 2) or (0, 1)
      const Vec o1 = where_eq(idx, zero, x[1], x[0]);
      const Vec o2 = where_eq(idx, Vec(T(2)), x[1], x[2]);
      z = one + vexp(o1 - m) + vexp(o2 - m);
    }
  } else {
    for (int64_t c = 1; c < C; ++c) {
      const Vec x = load_vec<T>(p + c * N, n);
      idx = where_gt(x, m, Vec(T(c)), idx);
      m = where_gt(x, m, x, m);
      xt = where_eq(tf, Vec(T(c)), x, xt);
    }
    z = zero;
    for (int64_t c = 0; c < C; ++c) z = z + vexp(load_vec<T>(p + c * N, n) - m);
  }
  m_minus_xt = m - xt;
}

// Argmax only (ties to the lowest class).
template <int kC, typename T, typename S>
inline at::vec::Vectorized<T> stream_argmax(const S* p, int64_t N, int64_t C_rt, int64_t n) {
  using Vec = at::vec::Vectorized<T>;
  const int64_t C = kC > 0 ? kC : C_rt;
  Vec best = load_vec<T>(p, n);
  Vec idx(T(0));
  for (int64_t c = 1; c < C; ++c) {
    const Vec x = load_vec<T>(p + c * N, n);
    idx = where_gt(x, best, Vec(T(c)), idx);
    best = where_gt(x, best, x, best);
  }
  return idx;
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
