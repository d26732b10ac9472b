// Per-voxel terms of PINT's losses (SPEC 2), shared by the pixel-wise and the
// image-wise ops: softmax s, entropy u of the teacher probabilities, ce and mse.
#pragma once

#include "voxel_block.h"

namespace pyseg_noise {
namespace cpu {

// Fills buf.s = softmax(x), buf.a = u (entropy, / log C if normalize) and,
// for hard pseudo labels, buf.d = argmax p. With `with_loss` also buf.b = ce
// and buf.c = mse (the backward needs neither).
template <typename T>
inline void pint_block_terms(BlockBuffers<T>& buf, int64_t C, bool hard, bool normalize, bool with_loss = true) {
  using Vec = at::vec::Vectorized<T>;
  block_softmax(buf.x, C, buf.s, buf.tf, with_loss ? buf.b : nullptr);
  block_entropy(buf.p, C, buf.a);
  if (normalize) {
    const Vec inv_log_c(T(1) / std::log(static_cast<T>(C)));
    for (int64_t j = 0; j < kBlock; j += Vec::size()) (Vec::loadu(buf.a + j) * inv_log_c).store(buf.a + j);
  }
  if (hard) block_argmax(buf.p, C, buf.d);
  if (!with_loss) return;
  const Vec inv_c(T(1) / static_cast<T>(C));
  for (int64_t j = 0; j < kBlock; j += Vec::size()) {
    Vec acc(T(0));
    for (int64_t c = 0; c < C; ++c) {
      const Vec diff = Vec::loadu(buf.s + c * kBlock + j) - pseudo_label(hard, buf.p, buf.d, c, j);
      acc = at::vec::fmadd(diff, diff, acc);
    }
    (acc * inv_c).store(buf.c + j);
  }
}

// Writes into buf.s the gradient of w_ce * ce + w_mse * mse with respect to the
// logits, for per-voxel weights w_ce (in buf.a) and w_mse (in buf.c):
//   w_ce (s_k - [k == t]) + w_mse (2/C) s_k ((s_k - y_k) - sum_c (s_c - y_c) s_c).
// Expects buf.s = softmax, buf.d = argmax (hard), buf.tf = target as T.
template <typename T>
inline void pint_block_grad(BlockBuffers<T>& buf, int64_t C, bool hard) {
  using Vec = at::vec::Vectorized<T>;
  const Vec two_over_c(T(2) / static_cast<T>(C));
  for (int64_t j = 0; j < kBlock; j += Vec::size()) {
    Vec dot(T(0));
    for (int64_t c = 0; c < C; ++c) {
      const Vec sc = Vec::loadu(buf.s + c * kBlock + j);
      dot = at::vec::fmadd(sc - pseudo_label(hard, buf.p, buf.d, c, j), sc, dot);
    }
    const Vec w_ce = Vec::loadu(buf.a + j);
    const Vec w_mse = Vec::loadu(buf.c + j) * two_over_c;
    const Vec tf = Vec::loadu(buf.tf + j);
    for (int64_t c = 0; c < C; ++c) {
      const Vec sc = Vec::loadu(buf.s + c * kBlock + j);
      const Vec onehot = where_eq(tf, Vec(T(c)), Vec(T(1)), Vec(T(0)));
      const Vec dmse = sc * (sc - pseudo_label(hard, buf.p, buf.d, c, j) - dot);
      (w_ce * (sc - onehot) + w_mse * dmse).store(buf.s + c * kBlock + j);
    }
  }
}

// Loads the block (b, n0, cnt) of logits, teacher probabilities and target.
template <typename scalar_t, typename T>
inline void pint_block_load(BlockBuffers<T>& buf, const Geometry& g, const scalar_t* logits, const scalar_t* prob,
                            const TargetReader& target, int64_t b, int64_t n0, int64_t cnt) {
  const int64_t item = b * g.C * g.N;
  gather_planes(logits + item, g.C, g.N, n0, cnt, T(0), buf.x);
  gather_planes(prob + item, g.C, g.N, n0, cnt, T(1) / static_cast<T>(g.C), buf.p);
  target.load(b * g.N + n0, cnt, buf.t.data());
  for (int64_t j = cnt; j < kBlock; ++j) buf.t[j] = 0;
  for (int64_t j = 0; j < kBlock; ++j) buf.tf[j] = static_cast<T>(buf.t[j]);
}

// Common argument checks of the PINT loss ops (the Python layer checks too,
// with friendlier messages; these keep direct torch.ops calls safe).
inline void check_pint_args(const char* op, const at::Tensor& logits, const at::Tensor& target,
                            const at::Tensor& teacher_prob) {
  TORCH_CHECK_VALUE(logits.dim() >= 3, op, ": logits must be [B, C, *S] with 1-3 spatial axes, got shape ",
                    logits.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(logits.scalar_type()), op, ": logits must be floating point, got ",
                   logits.scalar_type());
  TORCH_CHECK_VALUE(logits.size(1) >= 2, op, ": logits need at least C=2 classes, got C=", logits.size(1));
  check_target_dtype(op, target);
  TORCH_CHECK_VALUE(target.dim() == logits.dim() - 1 && target.size(0) == logits.size(0) &&
                        target.sizes().slice(1) == logits.sizes().slice(2),
                    op, ": target must be [B, *S] = ", logits.sizes().slice(0, 1), " + ", logits.sizes().slice(2),
                    ", got ", target.sizes());
  TORCH_CHECK_VALUE(teacher_prob.sizes() == logits.sizes(), op, ": teacher_prob must have the shape of logits ",
                    logits.sizes(), ", got ", teacher_prob.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(teacher_prob.scalar_type()), op, ": teacher_prob must be floating point, got ",
                   teacher_prob.scalar_type());
  TORCH_CHECK_VALUE(logits.numel() > 0, op, ": logits is empty (shape ", logits.sizes(), ")");
  TORCH_CHECK(logits.device().is_cpu() && target.device().is_cpu() && teacher_prob.device().is_cpu(), op,
              ": the CPU kernel needs CPU tensors");
}

}  // namespace cpu
}  // namespace pyseg_noise
