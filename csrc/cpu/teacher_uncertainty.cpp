// SPEC 1 / PINT Eq. (1): prob = mean_m softmax_C(teacher_logits[m]) and its
// entropy, in one pass over the voxels that reads all M passes of a block.
// The streaming form (softmax_accumulate_ then prob_entropy) adds one pass at
// a time into an accumulator so the M passes never sit in memory together.
#include <torch/library.h>

#include "pint_fixed.h"
#include "voxel_block.h"

namespace pyseg_noise {
namespace cpu {
namespace {

// Writes prob (= acc * scale) and its entropy for one block.
template <typename scalar_t, typename T>
inline void store_prob_entropy(BlockBuffers<T>& buf, const Geometry& g, T scale, scalar_t* prob, scalar_t* entropy,
                               int64_t b, int64_t n0, int64_t cnt) {
  using Vec = at::vec::Vectorized<T>;
  for (int64_t j = 0; j < g.C * kBlock; j += Vec::size()) (Vec::loadu(buf.p + j) * Vec(scale)).store(buf.p + j);
  block_entropy(buf.p, g.C, buf.a);
  scalar_t* pout = prob + b * g.C * g.N + n0;
  for (int64_t c = 0; c < g.C; ++c)
    for (int64_t j = 0; j < cnt; ++j) pout[c * g.N + j] = static_cast<scalar_t>(buf.p[c * kBlock + j]);
  scalar_t* eout = entropy + b * g.N + n0;
  for (int64_t j = 0; j < cnt; ++j) eout[j] = static_cast<scalar_t>(buf.a[j]);
}

// Register path for C = 2..4: each vector of voxels goes from its M passes'
// logits to its prob and entropy without touching a buffer. `acc_in` (when
// set) is a running sum to scale instead of the M passes (prob_entropy).
template <int NC, typename scalar_t>
void prob_entropy_fixed(int64_t M, const Geometry& g, const scalar_t* logits, const scalar_t* acc_in, double scale,
                        scalar_t* prob, scalar_t* entropy) {
  using T = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t W = Vec::size();
  const int64_t pass_stride = g.B * NC * g.N;
  const Vec vscale(static_cast<T>(scale));
  const Vec tiny(std::numeric_limits<T>::min());
  at::parallel_for(0, g.B * g.blocks_per_item, 16, [&](int64_t begin, int64_t end) {
    for (int64_t id = begin; id < end; ++id) {
      const int64_t b = id / g.blocks_per_item;
      const int64_t n0 = (id % g.blocks_per_item) * kBlock;
      const int64_t cnt = std::min(kBlock, g.N - n0);
      for (int64_t j = 0; j < cnt; j += W) {
        const int64_t n = n0 + j;
        const int64_t lanes = std::min<int64_t>(W, cnt - j);
        Vec p[NC];
        if (acc_in != nullptr) {
          for (int c = 0; c < NC; ++c) p[c] = load_vec<T>(acc_in + (b * NC + c) * g.N + n, lanes) * vscale;
        } else {
          for (int c = 0; c < NC; ++c) p[c] = Vec(T(0));
          for (int64_t m = 0; m < M; ++m) {
            Vec x[NC], s[NC], mx, z;
            for (int c = 0; c < NC; ++c) x[c] = load_vec<T>(logits + m * pass_stride + (b * NC + c) * g.N + n, lanes);
            softmax_voxels<NC, T>(x, s, mx, z);
            for (int c = 0; c < NC; ++c) p[c] = p[c] + s[c];
          }
          for (int c = 0; c < NC; ++c) p[c] = p[c] * vscale;
        }
        Vec u = Vec(T(0));
        for (int c = 0; c < NC; ++c) {
          u = u - p[c] * vlog(at::vec::maximum(p[c], tiny));
          store_vec(prob + (b * NC + c) * g.N + n, p[c], lanes);
        }
        store_vec(entropy + b * g.N + n, u, lanes);
      }
    }
  });
}

template <typename scalar_t>
bool prob_entropy_fast(int64_t M, const Geometry& g, const scalar_t* logits, const scalar_t* acc_in, double scale,
                       scalar_t* prob, scalar_t* entropy) {
  return dispatch_fixed_classes(g.C, [&](auto nc) {
    prob_entropy_fixed<decltype(nc)::value, scalar_t>(M, g, logits, acc_in, scale, prob, entropy);
  });
}

// acc += softmax(logits) for C = 2..4.
template <int NC, typename acc_t>
void softmax_accumulate_fixed(const Geometry& g, const acc_t* logits, acc_t* acc) {
  using T = at::opmath_type<acc_t>;
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t W = Vec::size();
  at::parallel_for(0, g.B * g.blocks_per_item, 16, [&](int64_t begin, int64_t end) {
    for (int64_t id = begin; id < end; ++id) {
      const int64_t b = id / g.blocks_per_item;
      const int64_t n0 = (id % g.blocks_per_item) * kBlock;
      const int64_t cnt = std::min(kBlock, g.N - n0);
      for (int64_t j = 0; j < cnt; j += W) {
        const int64_t lanes = std::min<int64_t>(W, cnt - j);
        const int64_t off = b * NC * g.N + n0 + j;
        Vec x[NC], s[NC], mx, z;
        for (int c = 0; c < NC; ++c) x[c] = load_vec<T>(logits + off + c * g.N, lanes);
        softmax_voxels<NC, T>(x, s, mx, z);
        for (int c = 0; c < NC; ++c)
          store_vec(acc + off + c * g.N, load_vec<T>(acc + off + c * g.N, lanes) + s[c], lanes);
      }
    }
  });
}

template <typename scalar_t>
void teacher_uncertainty_kernel_impl(int64_t M, const Geometry& g, const scalar_t* logits, scalar_t* prob,
                                     scalar_t* entropy) {
  using T = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<T>;
  const int64_t pass_stride = g.B * g.C * g.N;
  at::parallel_for(0, g.B * g.blocks_per_item, 16, [&](int64_t begin, int64_t end) {
    BlockBuffers<T> buf(g.C);
    for (int64_t id = begin; id < end; ++id) {
      const int64_t b = id / g.blocks_per_item;
      const int64_t n0 = (id % g.blocks_per_item) * kBlock;
      const int64_t cnt = std::min(kBlock, g.N - n0);
      std::fill(buf.p, buf.p + g.C * kBlock, T(0));
      for (int64_t m = 0; m < M; ++m) {
        gather_planes(logits + m * pass_stride + b * g.C * g.N, g.C, g.N, n0, cnt, T(0), buf.x);
        block_softmax<T>(buf.x, g.C, buf.s, nullptr);
        for (int64_t j = 0; j < g.C * kBlock; j += Vec::size())
          (Vec::loadu(buf.p + j) + Vec::loadu(buf.s + j)).store(buf.p + j);
      }
      store_prob_entropy(buf, g, T(1) / static_cast<T>(M), prob, entropy, b, n0, cnt);
    }
  });
}

template <typename acc_t, typename scalar_t>
void softmax_accumulate_kernel_impl(const Geometry& g, const scalar_t* logits, acc_t* acc) {
  using T = at::opmath_type<acc_t>;
  at::parallel_for(0, g.B * g.blocks_per_item, 16, [&](int64_t begin, int64_t end) {
    BlockBuffers<T> buf(g.C);
    for (int64_t id = begin; id < end; ++id) {
      const int64_t b = id / g.blocks_per_item;
      const int64_t n0 = (id % g.blocks_per_item) * kBlock;
      const int64_t cnt = std::min(kBlock, g.N - n0);
      gather_planes(logits + b * g.C * g.N, g.C, g.N, n0, cnt, T(0), buf.x);
      block_softmax<T>(buf.x, g.C, buf.s, nullptr);
      acc_t* out = acc + b * g.C * g.N + n0;
      for (int64_t c = 0; c < g.C; ++c)
        for (int64_t j = 0; j < cnt; ++j)
          out[c * g.N + j] = static_cast<acc_t>(static_cast<T>(out[c * g.N + j]) + buf.s[c * kBlock + j]);
    }
  });
}

template <typename scalar_t>
void prob_entropy_kernel_impl(const Geometry& g, const scalar_t* prob_sum, double scale, scalar_t* prob,
                              scalar_t* entropy) {
  using T = at::opmath_type<scalar_t>;
  at::parallel_for(0, g.B * g.blocks_per_item, 16, [&](int64_t begin, int64_t end) {
    BlockBuffers<T> buf(g.C);
    for (int64_t id = begin; id < end; ++id) {
      const int64_t b = id / g.blocks_per_item;
      const int64_t n0 = (id % g.blocks_per_item) * kBlock;
      const int64_t cnt = std::min(kBlock, g.N - n0);
      gather_planes(prob_sum + b * g.C * g.N, g.C, g.N, n0, cnt, T(0), buf.p);
      store_prob_entropy(buf, g, static_cast<T>(scale), prob, entropy, b, n0, cnt);
    }
  });
}

void check_class_tensor(const char* op, const char* name, const at::Tensor& t, int64_t class_dim) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": ", name, " must be floating point, got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() >= class_dim + 2, op, ": ", name, " must have a class axis and spatial axes, got shape ",
                    t.sizes());
  TORCH_CHECK_VALUE(t.numel() > 0, op, ": ", name, " is empty (shape ", t.sizes(), ")");
  TORCH_CHECK(t.device().is_cpu(), op, ": the CPU kernel needs CPU tensors");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> teacher_uncertainty_cpu(const at::Tensor& teacher_logits) {
  const char* op = "teacher_uncertainty";
  check_class_tensor(op, "teacher_logits", teacher_logits, 2);
  const at::Tensor logits = teacher_logits.contiguous();
  const int64_t M = logits.size(0);
  const at::Tensor first = logits.select(0, 0);
  const Geometry g = geometry_of(first);
  at::Tensor prob = at::empty(first.sizes(), logits.options());
  std::vector<int64_t> esize{first.size(0)};
  for (int64_t d = 2; d < first.dim(); ++d) esize.push_back(first.size(d));
  at::Tensor entropy = at::empty(esize, logits.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "teacher_uncertainty", [&] {
    if (!prob_entropy_fast<scalar_t>(M, g, logits.const_data_ptr<scalar_t>(), nullptr, 1.0 / M,
                                               prob.mutable_data_ptr<scalar_t>(),
                                               entropy.mutable_data_ptr<scalar_t>()))
      teacher_uncertainty_kernel_impl<scalar_t>(M, g, logits.const_data_ptr<scalar_t>(),
                                                prob.mutable_data_ptr<scalar_t>(),
                                                entropy.mutable_data_ptr<scalar_t>());
  });
  return {prob, entropy};
}

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
    const bool fixed = dispatch_fixed_classes(g.C, [&](auto nc) {
      softmax_accumulate_fixed<decltype(nc)::value, scalar_t>(g, logits.const_data_ptr<scalar_t>(),
                                                               acc.mutable_data_ptr<scalar_t>());
    });
    if (!fixed)
      softmax_accumulate_kernel_impl<scalar_t, scalar_t>(g, logits.const_data_ptr<scalar_t>(),
                                                         acc.mutable_data_ptr<scalar_t>());
  });
  if (!acc.is_same(prob_sum)) prob_sum.copy_(acc);
}

std::tuple<at::Tensor, at::Tensor> prob_entropy_cpu(const at::Tensor& prob_sum_in, double scale) {
  const char* op = "prob_entropy";
  check_class_tensor(op, "prob_sum", prob_sum_in, 1);
  const at::Tensor prob_sum = prob_sum_in.contiguous();
  const Geometry g = geometry_of(prob_sum);
  at::Tensor prob = at::empty(prob_sum.sizes(), prob_sum.options());
  std::vector<int64_t> esize{prob_sum.size(0)};
  for (int64_t d = 2; d < prob_sum.dim(); ++d) esize.push_back(prob_sum.size(d));
  at::Tensor entropy = at::empty(esize, prob_sum.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, prob_sum.scalar_type(), "prob_entropy", [&] {
    if (!prob_entropy_fast<scalar_t>(0, g, nullptr, prob_sum.const_data_ptr<scalar_t>(), scale,
                                               prob.mutable_data_ptr<scalar_t>(),
                                               entropy.mutable_data_ptr<scalar_t>()))
      prob_entropy_kernel_impl<scalar_t>(g, prob_sum.const_data_ptr<scalar_t>(), scale,
                                         prob.mutable_data_ptr<scalar_t>(), entropy.mutable_data_ptr<scalar_t>());
  });
  return {prob, entropy};
}

TORCH_LIBRARY_IMPL(pyseg_noise, CPU, m) {
  m.impl("teacher_uncertainty", &teacher_uncertainty_cpu);
  m.impl("softmax_accumulate_", &softmax_accumulate_cpu);
  m.impl("prob_entropy", &prob_entropy_cpu);
}

}  // namespace cpu
}  // namespace pyseg_noise
