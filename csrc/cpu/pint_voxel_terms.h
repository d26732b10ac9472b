// PINT's per-voxel terms (SPEC 1-2), one SIMD vector of voxels at a time, for
// any class count: NC = C for C = 2, 3, 4 (the class loops unroll and every
// value stays in registers), NC = 0 for other C (read at run time; the
// per-class vectors live in a per-thread ClassScratch). A vector of voxels
// goes from the load of its logits and teacher probabilities to the store of
// its loss and gradient with no intermediate buffer written or re-read, and
// the loss, the gradient, or both come out of the same evaluation of the exps
// and logs. The PINT ops' kernels (pint_pixel_loss.cpp, pint_image_loss.cpp,
// teacher_uncertainty.cpp, softmax_accumulate.cpp, prob_entropy.cpp) are built
// from these pieces; their argument checks are here too.
#pragma once

#include "voxel_block.h"

namespace pyseg_noise {
namespace cpu {

// One vector of voxels: softmax s, pseudo label y, alpha = exp(-u), and (when
// asked) ce and mse.
template <int NC, typename T>
struct PintVoxels {
  using Vec = at::vec::Vectorized<T>;
  ClassVecs<NC, T> s;
  ClassVecs<NC, T> y;
  Vec alpha, u, ce, mse;
  explicit PintVoxels(ClassScratch<NC, T>& scratch)
      : s(scratch.slot(ClassSlot::Softmax)), y(scratch.slot(ClassSlot::Pseudo)) {}
};

// s = softmax(x); returns m and z with logsumexp(x) = m + log z.
template <int NC, typename T>
inline void softmax_voxels(int64_t C_rt, const ClassVecs<NC, T>& x, ClassVecs<NC, T>& s, at::vec::Vectorized<T>& m,
                           at::vec::Vectorized<T>& z) {
  using Vec = at::vec::Vectorized<T>;
  const int64_t C = class_count<NC>(C_rt);
  if constexpr (NC == 2) {
    // One exp: e = exp(-|x1 - x0|), s_larger = 1 / (1 + e), s_smaller = e / (1 + e).
    const Vec d = x[1] - x[0];
    const Vec e = vexp(Vec(T(0)) - d.abs());
    z = Vec(T(1)) + e;
    const Vec big = Vec(T(1)) / z;
    const Vec small = e * big;
    s[1] = where_gt(d, Vec(T(0)), big, small);  // class 1 the larger
    s[0] = where_gt(d, Vec(T(0)), small, big);
    m = at::vec::maximum(x[0], x[1]);
  } else {
    m = x[0];
    for (int64_t c = 1; c < C; ++c) m = at::vec::maximum(m, x[c]);
    z = Vec(T(0));
    for (int64_t c = 0; c < C; ++c) {
      s[c] = vexp(x[c] - m);
      z = z + s[c];
    }
    const Vec inv = Vec(T(1)) / z;
    for (int64_t c = 0; c < C; ++c) s[c] = s[c] * inv;
  }
}

// y = p (soft) or the one-hot of argmax p, ties to the lower class (hard).
template <int NC, bool HARD, typename T>
inline void pseudo_voxels(int64_t C_rt, const ClassVecs<NC, T>& p, ClassVecs<NC, T>& y) {
  using Vec = at::vec::Vectorized<T>;
  const int64_t C = class_count<NC>(C_rt);
  if constexpr (HARD) {
    Vec best = p[0];
    Vec idx = Vec(T(0));
    for (int64_t c = 1; c < C; ++c) {
      idx = where_gt(p[c], best, Vec(T(c)), idx);  // strict: ties keep the lower class
      best = where_gt(p[c], best, p[c], best);
    }
    for (int64_t c = 0; c < C; ++c) y[c] = where_eq(idx, Vec(T(c)), Vec(T(1)), Vec(T(0)));
  } else {
    for (int64_t c = 0; c < C; ++c) y[c] = p[c];
  }
}

// u = -sum_c p_c log p_c with 0 log 0 = 0; NaN propagates.
template <int NC, typename T>
inline at::vec::Vectorized<T> entropy_voxels(int64_t C_rt, const ClassVecs<NC, T>& p) {
  using Vec = at::vec::Vectorized<T>;
  const int64_t C = class_count<NC>(C_rt);
  const Vec tiny(std::numeric_limits<T>::min());
  Vec u = Vec(T(0));
  for (int64_t c = 0; c < C; ++c) u = u - p[c] * vlog(at::vec::maximum(p[c], tiny));
  return u;
}

template <int NC, bool HARD, typename T>
inline void pint_voxel_terms(int64_t C_rt, const ClassVecs<NC, T>& x, const ClassVecs<NC, T>& p,
                             const at::vec::Vectorized<T>& tf, bool normalize, bool with_loss,
                             PintVoxels<NC, T>& v) {
  using Vec = at::vec::Vectorized<T>;
  const int64_t C = class_count<NC>(C_rt);
  Vec m, z;
  softmax_voxels<NC, T>(C, x, v.s, m, z);
  Vec u = entropy_voxels<NC, T>(C, p);
  if (normalize) u = u * Vec(T(1) / std::log(static_cast<T>(C)));
  v.u = u;
  v.alpha = vexp(Vec(T(0)) - u);
  pseudo_voxels<NC, HARD, T>(C, p, v.y);
  if (!with_loss) return;
  Vec xt = Vec(T(0));
  for (int64_t c = 0; c < C; ++c) xt = where_eq(tf, Vec(T(c)), x[c], xt);
  v.ce = (m - xt) + vlog(z);  // max - x[target] exact (large |logits|)
  Vec acc = Vec(T(0));
  for (int64_t c = 0; c < C; ++c) {
    const Vec d = v.s[c] - v.y[c];
    acc = at::vec::fmadd(d, d, acc);
  }
  v.mse = acc * Vec(T(1) / static_cast<T>(C));
}

// Gradient of w_ce * ce + w_mse_half_c * (C/2) * mse with respect to the logits:
//   g_k = w_ce (s_k - [k == t]) + w2 s_k ((s_k - y_k) - sum_c (s_c - y_c) s_c),
// with w2 = (2/C) w_mse.
template <int NC, typename T>
inline void pint_voxel_grad(int64_t C_rt, const PintVoxels<NC, T>& v, const at::vec::Vectorized<T>& tf,
                            const at::vec::Vectorized<T>& w_ce, const at::vec::Vectorized<T>& w2,
                            ClassVecs<NC, T>& g) {
  using Vec = at::vec::Vectorized<T>;
  const int64_t C = class_count<NC>(C_rt);
  Vec dot = Vec(T(0));
  for (int64_t c = 0; c < C; ++c) dot = at::vec::fmadd(v.s[c] - v.y[c], v.s[c], dot);
  for (int64_t c = 0; c < C; ++c) {
    const Vec onehot = where_eq(tf, Vec(T(c)), Vec(T(1)), Vec(T(0)));
    const Vec dmse = v.s[c] * (v.s[c] - v.y[c] - dot);
    g[c] = at::vec::fmadd(w_ce, v.s[c] - onehot, w2 * dmse);
  }
}

// Calls f(nc, hard) with the class count as in dispatch_classes and the
// pseudo-label kind as a second constant.
template <typename F>
inline void dispatch_pint(int64_t C, bool hard, F&& f) {
  dispatch_classes(C, [&](auto nc) {
    if (hard) f(nc, std::true_type{});
    else f(nc, std::false_type{});
  });
}

// One vector of voxels (lanes real ones, from voxel n) of the class planes of
// an item's logits xb and teacher probabilities pb.
template <int NC, typename T, typename scalar_t>
inline void load_voxels(int64_t C_rt, const scalar_t* xb, const scalar_t* pb, int64_t N, int64_t n, int64_t lanes,
                        ClassVecs<NC, T>& x, ClassVecs<NC, T>& p) {
  const int64_t C = class_count<NC>(C_rt);
  for (int64_t c = 0; c < C; ++c) {
    x[c] = load_vec<T>(xb + c * N + n, lanes);
    p[c] = load_vec<T>(pb + c * N + n, lanes);
  }
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

// The inputs of a PINT loss op, checked and made contiguous (teacher_prob in
// the logits' dtype), and their geometry.
struct PintInputs {
  at::Tensor logits, target, prob;
  Geometry g;
  PintInputs(const char* op, const at::Tensor& logits_in, const at::Tensor& target_in,
             const at::Tensor& teacher_prob_in) {
    check_pint_args(op, logits_in, target_in, teacher_prob_in);
    logits = logits_in.contiguous();
    target = target_in.contiguous();
    prob = teacher_prob_in.to(logits.scalar_type()).contiguous();
    g = geometry_of(logits);
  }
};

// A floating tensor [..., C, *S] whose class axis is class_dim (teacher logits
// [M, B, C, *S], logits and probability sums [B, C, *S]).
inline void check_class_tensor(const char* op, const char* name, const at::Tensor& t, int64_t class_dim) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": ", name, " must be floating point, got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() >= class_dim + 2, op, ": ", name, " must have a class axis and spatial axes, got shape ",
                    t.sizes());
  TORCH_CHECK_VALUE(t.numel() > 0, op, ": ", name, " is empty (shape ", t.sizes(), ")");
  TORCH_CHECK(t.device().is_cpu(), op, ": the CPU kernel needs CPU tensors");
}

// The voxel map [B, *S] of a [B, C, *S] tensor (its entropy), in its dtype.
inline at::Tensor voxel_map_like(const at::Tensor& t) {
  std::vector<int64_t> sizes{t.size(0)};
  for (int64_t d = 2; d < t.dim(); ++d) sizes.push_back(t.size(d));
  return at::empty(sizes, t.options());
}

// Stores prob (C class planes of an item) and its entropy for one vector of
// voxels: the output of teacher_uncertainty and prob_entropy.
template <int NC, typename T, typename scalar_t>
inline void store_prob_entropy(int64_t C_rt, const Geometry& g, const ClassVecs<NC, T>& p, int64_t b, int64_t n,
                               int64_t lanes, scalar_t* prob, scalar_t* entropy) {
  const int64_t C = class_count<NC>(C_rt);
  for (int64_t c = 0; c < C; ++c) store_vec(prob + (b * C + c) * g.N + n, p[c], lanes);
  store_vec(entropy + b * g.N + n, entropy_voxels<NC, T>(C, p), lanes);
}

}  // namespace cpu
}  // namespace pyseg_noise
