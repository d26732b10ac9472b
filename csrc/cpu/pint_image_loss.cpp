// SPEC 4 / PINT Eq. (4)-(5): per slice i, alpha_i = exp(-U_i) with U_i the
// mean teacher entropy of the slice, loss_i = alpha_i mean(ce) + (1 - alpha_i)
// mean(mse). The forward is one pass accumulating (u, ce, mse) per slice into
// fixed chunks reduced in order; it returns alpha_i for the backward, which
// recomputes the per-voxel terms in one pass.
#include <torch/library.h>

#include "pint_voxel_terms.h"

namespace pyseg_noise {
namespace cpu {
namespace {

// Per-slice sums of (u, ce, mse) for the image-level loss (SPEC 4), into
// partial[(chunk * n_slices + slice) * 3 + {0, 1, 2}]. Within a chunk the sums
// are kept in T and by position q = n mod P in the slicing's period
// P = inner * n_slices (a vector of voxels then adds to q .. q + W with one
// unaligned load/store, whatever slice each lane is in) when P is short, or
// per slice when each vector lies in one slice; otherwise per lane.
template <int NC, bool HARD, typename scalar_t>
void pint_image_loss_kernel_impl(const Geometry& g, const Slicing& sl, const scalar_t* logits, const scalar_t* prob,
                                 const TargetReader& reader, bool normalize, std::vector<double>& partial,
                                 std::atomic<bool>& nan_prob) {
  using T = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t W = Vec::size();
  constexpr int64_t kMaxPeriod = 4096;
  const int64_t P = sl.inner * sl.n_slices;
  const bool by_phase = P >= W && P <= kMaxPeriod;
  at::parallel_for(0, g.n_chunks(), 1, [&](int64_t begin, int64_t end) {
    const int64_t C = class_count<NC>(g.C);
    ClassScratch<NC, T> scratch(C);
    // by phase: 3 rows of P + W sums; otherwise 3 sums per slice.
    std::vector<T> acc(by_phase ? 3 * (P + W) : 3 * sl.n_slices);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t b = g.chunk_item(chunk);
      const int64_t blk0 = g.chunk_begin(chunk), blk1 = g.chunk_end(chunk);
      const scalar_t* xb = logits + b * C * g.N;
      const scalar_t* pb = prob + b * C * g.N;
      std::fill(acc.begin(), acc.end(), T(0));
      T* au = acc.data();
      T* ace = au + (by_phase ? P + W : sl.n_slices);
      T* amse = ace + (by_phase ? P + W : sl.n_slices);
      int64_t q = (blk0 * kBlock) % std::max<int64_t>(P, 1);  // phase of the next vector
      SliceCursor cur(sl, blk0 * kBlock);                       // slice of the next voxel (other modes)
      Vec u_sum = Vec(T(0));
      const int64_t n_end = std::min(blk1 * kBlock, g.N);  // the chunk's voxels, vector by vector
      for (int64_t n = blk0 * kBlock; n < n_end; n += W) {
        const int64_t lanes = std::min<int64_t>(W, n_end - n);
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
// in), with the slice of each lane found as in pint_image_loss_kernel_impl.
template <int NC, bool HARD, typename scalar_t>
void pint_image_loss_backward_kernel_impl(const Geometry& g, const Slicing& sl, const scalar_t* logits,
                                          const scalar_t* prob, const TargetReader& reader,
                                          const std::vector<double>& w_ce, const std::vector<double>& w_mse,
                                          scalar_t* grad_logits) {
  using T = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t W = Vec::size();
  constexpr int64_t kMaxPeriod = 4096;
  const int64_t P = sl.inner * sl.n_slices;
  const bool by_phase = P >= W && P <= kMaxPeriod;
  const T two_over_c = T(2) / static_cast<T>(g.C);
  at::parallel_for(0, g.n_chunks(), 1, [&](int64_t begin, int64_t end) {
    const int64_t C = class_count<NC>(g.C);
    ClassScratch<NC, T> scratch(C);
    std::vector<T> phase_w(by_phase ? 2 * (P + W) : 0);
    int64_t phase_item = -1;
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t b = g.chunk_item(chunk);
      const int64_t blk0 = g.chunk_begin(chunk), blk1 = g.chunk_end(chunk);
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
      const int64_t n_end = std::min(blk1 * kBlock, g.N);  // the chunk's voxels, vector by vector
      for (int64_t n = blk0 * kBlock; n < n_end; n += W) {
        const int64_t lanes = std::min<int64_t>(W, n_end - n);
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
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> pint_image_loss_cpu(const at::Tensor& logits_in, const at::Tensor& target_in,
                                                       const at::Tensor& teacher_prob_in, bool hard,
                                                       bool normalize_entropy, int64_t slice_dim,
                                                       c10::string_view reduction) {
  const char* op = "pint_image_loss";
  const PintInputs in(op, logits_in, target_in, teacher_prob_in);
  const at::Tensor &logits = in.logits, &target = in.target, &prob = in.prob;
  const Geometry& g = in.g;
  TORCH_CHECK_VALUE(logits_in.dim() == 4 || logits_in.dim() == 5, op,
                    ": logits must be [B, C, H, W] or [B, C, X, Y, Z], got shape ", logits_in.sizes());
  const Reduction red = parse_reduction(op, reduction);
  const Slicing sl = slicing_of(logits.sizes().slice(2), slice_dim, op);
  std::vector<double> partial(g.n_chunks() * sl.n_slices * 3, 0.0);
  TargetCheck check;
  std::atomic<bool> nan_prob{false};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "pint_image_loss", [&] {
    const TargetReader reader = check.reader(target, g.C);
    dispatch_pint(g.C, hard, [&](auto nc, auto h) {
      pint_image_loss_kernel_impl<decltype(nc)::value, decltype(h)::value, scalar_t>(
          g, sl, logits.const_data_ptr<scalar_t>(), prob.const_data_ptr<scalar_t>(), reader, normalize_entropy,
          partial, nan_prob);
    });
  });
  check.raise_if_bad(op, g.C);
  TORCH_CHECK_VALUE(!nan_prob.load(), op, ": teacher_prob contains NaN");
  const auto alpha_dtype = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor loss_slices = at::empty({g.B, sl.n_slices}, logits.options().dtype(at::kDouble));
  at::Tensor alpha_d = at::empty({g.B, sl.n_slices}, logits.options().dtype(at::kDouble));
  double* L = loss_slices.mutable_data_ptr<double>();
  double* A = alpha_d.mutable_data_ptr<double>();
  const double per_slice = static_cast<double>(g.N / sl.n_slices);
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t i = 0; i < sl.n_slices; ++i) {
      double u = 0, ce = 0, mse = 0;
      for (int64_t k = 0; k < g.chunks_per_item; ++k) {
        const double* a = partial.data() + ((b * g.chunks_per_item + k) * sl.n_slices + i) * 3;
        u += a[0];
        ce += a[1];
        mse += a[2];
      }
      const double alpha = std::exp(-u / per_slice);
      A[b * sl.n_slices + i] = alpha;
      L[b * sl.n_slices + i] = alpha * ce / per_slice + (1.0 - alpha) * mse / per_slice;
    }
  at::Tensor loss;
  if (red == Reduction::None) {
    loss = loss_slices.to(logits.scalar_type());
  } else {
    double total = 0.0;
    for (int64_t k = 0; k < g.B * sl.n_slices; ++k) total += L[k];
    if (red == Reduction::Mean) total /= static_cast<double>(g.B * sl.n_slices);
    loss = at::scalar_tensor(total, logits.options());
  }
  return {loss, alpha_d.to(alpha_dtype)};
}

at::Tensor pint_image_loss_backward_cpu(const at::Tensor& grad_in, const at::Tensor& logits_in,
                                        const at::Tensor& target_in, const at::Tensor& teacher_prob_in,
                                        const at::Tensor& slice_alpha, bool hard, int64_t slice_dim,
                                        c10::string_view reduction) {
  const char* op = "pint_image_loss_backward";
  const PintInputs in(op, logits_in, target_in, teacher_prob_in);
  const at::Tensor &logits = in.logits, &target = in.target, &prob = in.prob;
  const Geometry& g = in.g;
  const Reduction red = parse_reduction(op, reduction);
  const Slicing sl = slicing_of(logits.sizes().slice(2), slice_dim, op);
  TORCH_CHECK_VALUE(slice_alpha.dim() == 2 && slice_alpha.size(0) == g.B && slice_alpha.size(1) == sl.n_slices, op,
                    ": slice_alpha must be [B, n_slices] = [", g.B, ", ", sl.n_slices, "], got ", slice_alpha.sizes());
  const at::Tensor alpha = slice_alpha.to(at::kDouble).contiguous();
  const double* A = alpha.const_data_ptr<double>();
  const double per_slice = static_cast<double>(g.N / sl.n_slices);
  std::vector<double> gs(g.B * sl.n_slices);
  if (red == Reduction::None) {
    TORCH_CHECK_VALUE(grad_in.dim() == 2 && grad_in.size(0) == g.B && grad_in.size(1) == sl.n_slices, op,
                      ": grad must be [B, n_slices] = [", g.B, ", ", sl.n_slices, "], got ", grad_in.sizes());
    const at::Tensor gd = grad_in.to(at::kDouble).contiguous();
    std::copy(gd.const_data_ptr<double>(), gd.const_data_ptr<double>() + gs.size(), gs.begin());
  } else {
    TORCH_CHECK_VALUE(grad_in.numel() == 1, op, ": grad of a reduced loss must have one element, got shape ",
                      grad_in.sizes());
    double gv = grad_in.item<double>();
    if (red == Reduction::Mean) gv /= static_cast<double>(g.B * sl.n_slices);
    std::fill(gs.begin(), gs.end(), gv);
  }
  std::vector<double> w_ce(gs.size()), w_mse(gs.size());
  for (size_t k = 0; k < gs.size(); ++k) {
    w_ce[k] = gs[k] * A[k] / per_slice;
    w_mse[k] = gs[k] * (1.0 - A[k]) / per_slice;
  }
  at::Tensor grad_logits = at::empty(logits.sizes(), logits.options());
  TargetCheck check;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "pint_image_loss_backward", [&] {
    const TargetReader reader = check.reader(target, g.C);
    dispatch_pint(g.C, hard, [&](auto nc, auto h) {
      pint_image_loss_backward_kernel_impl<decltype(nc)::value, decltype(h)::value, scalar_t>(
          g, sl, logits.const_data_ptr<scalar_t>(), prob.const_data_ptr<scalar_t>(), reader, w_ce, w_mse,
          grad_logits.mutable_data_ptr<scalar_t>());
    });
  });
  check.raise_if_bad(op, g.C);
  return grad_logits;
}

TORCH_LIBRARY_IMPL(pyseg_noise, CPU, m) {
  m.impl("pint_image_loss", &pint_image_loss_cpu);
  m.impl("pint_image_loss_backward", &pint_image_loss_backward_cpu);
}

}  // namespace cpu
}  // namespace pyseg_noise
