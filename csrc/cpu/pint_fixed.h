// PINT's per-voxel terms (SPEC 2), one SIMD vector of voxels at a time, for
// any class count: NC = C for C = 2, 3, 4 (the class loops unroll and every
// value stays in registers), NC = 0 for other C (read at run time; the
// per-class vectors live in a per-thread ClassScratch). A vector of voxels
// goes from the load of its logits and teacher probabilities to the store of
// its loss and gradient with no intermediate buffer written or re-read, and
// the loss, the gradient, or both come out of the same evaluation of the exps
// and logs.
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

// What one pass of the pixel kernel produces.
template <typename scalar_t>
struct PixelPass {
  bool normalize = false;
  // Loss: partial sums per chunk (mean/sum), or the per-voxel map.
  std::vector<double>* partial = nullptr;
  scalar_t* loss_map = nullptr;
  // Gradient: written when grad_logits is set, scaled per voxel by grad_map
  // (when set) or by grad_scalar.
  scalar_t* grad_logits = nullptr;
  const scalar_t* grad_map = nullptr;
  double grad_scalar = 1.0;
  std::atomic<bool>* nan_prob = nullptr;
};

template <int NC, bool HARD, typename scalar_t>
void pint_pixel_pass(const Geometry& g, const scalar_t* logits, const scalar_t* prob, const TargetReader& reader,
                     const PixelPass<scalar_t>& job) {
  using T = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t W = Vec::size();
  const int64_t C = class_count<NC>(g.C);
  const bool with_loss = job.partial != nullptr || job.loss_map != nullptr;
  const bool with_grad = job.grad_logits != nullptr;
  const T two_over_c = T(2) / static_cast<T>(C);
  at::parallel_for(0, g.n_chunks(), 1, [&](int64_t begin, int64_t end) {
    ClassScratch<NC, T> scratch(C);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t b = chunk / g.chunks_per_item;
      const int64_t blk0 = (chunk % g.chunks_per_item) * kBlocksPerChunk;
      const int64_t blk1 = std::min(blk0 + kBlocksPerChunk, g.blocks_per_item);
      const scalar_t* xb = logits + b * C * g.N;
      const scalar_t* pb = prob + b * C * g.N;
      double chunk_sum = 0.0;
      Vec u_sum = Vec(T(0));
      for (int64_t blk = blk0; blk < blk1; ++blk) {
        const int64_t n0 = blk * kBlock;
        const int64_t cnt = std::min(kBlock, g.N - n0);
        Vec acc = Vec(T(0));
        // Loads one vector of voxels (lanes real ones) and evaluates its terms.
        auto eval = [&](int64_t j, int64_t lanes, PintVoxels<NC, T>& v, Vec& t) {
          const int64_t n = n0 + j;
          ClassVecs<NC, T> x(scratch.slot(ClassSlot::Logits)), p(scratch.slot(ClassSlot::Prob));
          load_voxels<NC>(C, xb, pb, g.N, n, lanes, x, p);
          t = load_labels<T>(reader, b * g.N + n, lanes);
          pint_voxel_terms<NC, HARD, T>(C, x, p, t, job.normalize, with_loss, v);
        };
        // Writes its loss and gradient.
        auto emit = [&](int64_t j, int64_t lanes, const PintVoxels<NC, T>& v, const Vec& t) {
          const int64_t n = n0 + j;
          u_sum = u_sum + v.u;
          if (with_loss) {
            Vec l = at::vec::fmadd(v.alpha, v.ce - v.mse, v.mse);  // alpha ce + (1 - alpha) mse
            if (job.loss_map != nullptr) store_vec(job.loss_map + b * g.N + n, l, lanes);
            if (lanes < W) l = Vec::set(Vec(T(0)), l, lanes);  // tail: real voxels only
            acc = acc + l;
          }
          if (with_grad) {
            const Vec scale = job.grad_map != nullptr ? load_vec<T>(job.grad_map + b * g.N + n, lanes)
                                                      : Vec(static_cast<T>(job.grad_scalar));
            const Vec w_ce = scale * v.alpha;
            const Vec w2 = (scale - w_ce) * Vec(two_over_c);
            ClassVecs<NC, T> gr(scratch.slot(ClassSlot::Grad));
            pint_voxel_grad<NC, T>(C, v, t, w_ce, w2, gr);
            scalar_t* out = job.grad_logits + b * C * g.N + n;
            for (int64_t c = 0; c < C; ++c) store_vec_stream(out + c * g.N, gr[c], lanes);
          }
        };
        int64_t j = 0;
        for (; j < cnt; j += W) {
          const int64_t lanes = std::min<int64_t>(W, cnt - j);
          PintVoxels<NC, T> v(scratch);
          Vec t;
          eval(j, lanes, v, t);
          emit(j, lanes, v, t);
        }
        chunk_sum += static_cast<double>(vec_sum(acc));
      }
      if (job.partial != nullptr) (*job.partial)[chunk] = chunk_sum;
      if (with_grad) stream_fence();
      // NaN in teacher_prob makes u NaN (padding lanes load 0 and stay finite).
      if (job.nan_prob != nullptr && std::isnan(vec_sum(u_sum))) *job.nan_prob = true;
    }
  });
}

// Per-slice sums of (u, ce, mse) for the image-level loss (SPEC 4), into
// partial[(chunk * n_slices + slice) * 3 + {0, 1, 2}]. Within a chunk the sums
// are kept in T and by position q = n mod P in the slicing's period
// P = inner * n_slices (a vector of voxels then adds to q .. q + W with one
// unaligned load/store, whatever slice each lane is in) when P is short, or
// per slice when each vector lies in one slice; otherwise per lane.
template <int NC, bool HARD, typename scalar_t>
void pint_image_pass(const Geometry& g, const Slicing& sl, const scalar_t* logits, const scalar_t* prob,
                           const TargetReader& reader, bool normalize, std::vector<double>& partial,
                           std::atomic<bool>& nan_prob) {
  using T = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t W = Vec::size();
  constexpr int64_t kMaxPeriod = 4096;
  const int64_t C = class_count<NC>(g.C);
  const int64_t P = sl.inner * sl.n_slices;
  const bool by_phase = P >= W && P <= kMaxPeriod;
  at::parallel_for(0, g.n_chunks(), 1, [&](int64_t begin, int64_t end) {
    ClassScratch<NC, T> scratch(C);
    // by phase: 3 rows of P + W sums; otherwise 3 sums per slice.
    std::vector<T> acc(by_phase ? 3 * (P + W) : 3 * sl.n_slices);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t b = chunk / g.chunks_per_item;
      const int64_t blk0 = (chunk % g.chunks_per_item) * kBlocksPerChunk;
      const int64_t blk1 = std::min(blk0 + kBlocksPerChunk, g.blocks_per_item);
      const scalar_t* xb = logits + b * C * g.N;
      const scalar_t* pb = prob + b * C * g.N;
      std::fill(acc.begin(), acc.end(), T(0));
      T* au = acc.data();
      T* ace = au + (by_phase ? P + W : sl.n_slices);
      T* amse = ace + (by_phase ? P + W : sl.n_slices);
      int64_t q = (blk0 * kBlock) % std::max<int64_t>(P, 1);  // phase of the next vector
      SliceCursor cur(sl, blk0 * kBlock);                       // slice of the next voxel (other modes)
      Vec u_sum = Vec(T(0));
      for (int64_t blk = blk0; blk < blk1; ++blk) {
        const int64_t n0 = blk * kBlock;
        const int64_t cnt = std::min(kBlock, g.N - n0);
        for (int64_t j = 0; j < cnt; j += W) {
          const int64_t n = n0 + j;
          const int64_t lanes = std::min<int64_t>(W, cnt - j);
          ClassVecs<NC, T> x(scratch.slot(ClassSlot::Logits)), p(scratch.slot(ClassSlot::Prob));
          load_voxels<NC>(C, xb, pb, g.N, n, lanes, x, p);
          PintVoxels<NC, T> v(scratch);
          pint_voxel_terms<NC, HARD, T>(C, x, p, load_labels<T>(reader, b * g.N + n, lanes), normalize,
                                        /*with_loss=*/true, v);
          Vec u = v.u, ce = v.ce, mse = v.mse;
          if (lanes < W) {  // tail: real voxels only
            u = Vec::set(Vec(T(0)), u, lanes);
            ce = Vec::set(Vec(T(0)), ce, lanes);
            mse = Vec::set(Vec(T(0)), mse, lanes);
          }
          u_sum = u_sum + u;
          if (by_phase) {
            (Vec::loadu(au + q) + u).store(au + q);
            (Vec::loadu(ace + q) + ce).store(ace + q);
            (Vec::loadu(amse + q) + mse).store(amse + q);
            q += lanes;
            if (q >= P) q -= P;
          } else if (cur.r + lanes <= cur.inner) {  // the whole vector in one slice
            au[cur.slice] += vec_sum(u);
            ace[cur.slice] += vec_sum(ce);
            amse[cur.slice] += vec_sum(mse);
            cur.r += lanes - 1;
            cur.next();
          } else {
            alignas(64) T lu[W], lce[W], lmse[W];
            u.store(lu);
            ce.store(lce);
            mse.store(lmse);
            for (int64_t l = 0; l < lanes; ++l, cur.next()) {
              au[cur.slice] += lu[l];
              ace[cur.slice] += lce[l];
              amse[cur.slice] += lmse[l];
            }
          }
        }
      }
      double* out = partial.data() + chunk * sl.n_slices * 3;
      if (by_phase) {
        for (int64_t k = 0; k < W; ++k) {  // adds past the period's end belong to its start
          au[k] += au[P + k];
          ace[k] += ace[P + k];
          amse[k] += amse[P + k];
        }
        for (int64_t i = 0; i < P; ++i) {
          double* o = out + (i / sl.inner) * 3;
          o[0] += static_cast<double>(au[i]);
          o[1] += static_cast<double>(ace[i]);
          o[2] += static_cast<double>(amse[i]);
        }
      } else {
        for (int64_t i = 0; i < sl.n_slices; ++i) {
          out[i * 3] = static_cast<double>(au[i]);
          out[i * 3 + 1] = static_cast<double>(ace[i]);
          out[i * 3 + 2] = static_cast<double>(amse[i]);
        }
      }
      if (std::isnan(vec_sum(u_sum))) nan_prob = true;
    }
  });
}

// Gradient of the image-level loss: per voxel the weights of its slice,
// w_ce[b * n_slices + i] and w_mse (upstream gradient, alpha_i and 1/n_i folded
// in), with the slice of each lane found as in pint_image_pass.
template <int NC, bool HARD, typename scalar_t>
void pint_image_grad(const Geometry& g, const Slicing& sl, const scalar_t* logits, const scalar_t* prob,
                           const TargetReader& reader, const std::vector<double>& w_ce,
                           const std::vector<double>& w_mse, scalar_t* grad_logits) {
  using T = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t W = Vec::size();
  constexpr int64_t kMaxPeriod = 4096;
  const int64_t P = sl.inner * sl.n_slices;
  const bool by_phase = P >= W && P <= kMaxPeriod;
  const int64_t C = class_count<NC>(g.C);
  const T two_over_c = T(2) / static_cast<T>(C);
  at::parallel_for(0, g.n_chunks(), 1, [&](int64_t begin, int64_t end) {
    ClassScratch<NC, T> scratch(C);
    std::vector<T> phase_w(by_phase ? 2 * (P + W) : 0);
    int64_t phase_item = -1;
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t b = chunk / g.chunks_per_item;
      const int64_t blk0 = (chunk % g.chunks_per_item) * kBlocksPerChunk;
      const int64_t blk1 = std::min(blk0 + kBlocksPerChunk, g.blocks_per_item);
      const scalar_t* xb = logits + b * C * g.N;
      const scalar_t* pb = prob + b * C * g.N;
      const double* wc = w_ce.data() + b * sl.n_slices;
      const double* wm = w_mse.data() + b * sl.n_slices;
      T* ph_ce = phase_w.data();
      T* ph_mse = ph_ce + (by_phase ? P + W : 0);
      if (by_phase && phase_item != b) {  // weights by position in the period, continued past its end
        for (int64_t k = 0; k < P + W; ++k) {
          const int64_t i = (k % P) / sl.inner;
          ph_ce[k] = static_cast<T>(wc[i]);
          ph_mse[k] = static_cast<T>(wm[i]) * two_over_c;
        }
        phase_item = b;
      }
      int64_t q = (blk0 * kBlock) % std::max<int64_t>(P, 1);
      SliceCursor cur(sl, blk0 * kBlock);
      for (int64_t blk = blk0; blk < blk1; ++blk) {
        const int64_t n0 = blk * kBlock;
        const int64_t cnt = std::min(kBlock, g.N - n0);
        for (int64_t j = 0; j < cnt; j += W) {
          const int64_t n = n0 + j;
          const int64_t lanes = std::min<int64_t>(W, cnt - j);
          Vec w_ce_v, w2_v;
          if (by_phase) {
            w_ce_v = Vec::loadu(ph_ce + q);
            w2_v = Vec::loadu(ph_mse + q);
            q += lanes;
            if (q >= P) q -= P;
          } else if (cur.r + lanes <= cur.inner) {
            w_ce_v = Vec(static_cast<T>(wc[cur.slice]));
            w2_v = Vec(static_cast<T>(wm[cur.slice]) * two_over_c);
            cur.r += lanes - 1;
            cur.next();
          } else {
            alignas(64) T lc[W] = {}, lm[W] = {};
            for (int64_t l = 0; l < lanes; ++l, cur.next()) {
              lc[l] = static_cast<T>(wc[cur.slice]);
              lm[l] = static_cast<T>(wm[cur.slice]) * two_over_c;
            }
            w_ce_v = Vec::loadu(lc);
            w2_v = Vec::loadu(lm);
          }
          ClassVecs<NC, T> x(scratch.slot(ClassSlot::Logits)), p(scratch.slot(ClassSlot::Prob));
          load_voxels<NC>(C, xb, pb, g.N, n, lanes, x, p);
          PintVoxels<NC, T> v(scratch);
          Vec m, z;
          softmax_voxels<NC, T>(C, x, v.s, m, z);
          pseudo_voxels<NC, HARD, T>(C, p, v.y);
          ClassVecs<NC, T> gr(scratch.slot(ClassSlot::Grad));
          pint_voxel_grad<NC, T>(C, v, load_labels<T>(reader, b * g.N + n, lanes), w_ce_v, w2_v, gr);
          scalar_t* out = grad_logits + b * C * g.N + n;
          for (int64_t c = 0; c < C; ++c) store_vec(out + c * g.N, gr[c], lanes);
        }
      }
    }
  });
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
