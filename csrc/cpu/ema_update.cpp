// SPEC 7: ema <- decay * ema + (1 - decay) * tensor, in place, for a whole
// model's parameter list in one call.
//
// All tensors' elements are laid end to end in one index space; one
// at::parallel_for splits that space (grain kEmaChunk elements) and each
// thread updates the pieces of the tensors its range covers, so a list of
// many small tensors and a few large ones is divided evenly by elements
// (splitting a list of per-tensor chunks by count left one thread with most
// of the bytes) without a launch per tensor. The element type of each
// (ema, tensor) pair is resolved once, outside the parallel region, into a
// function pointer. The update is
// ATen's lerp with weight 1 - decay, computed in the ema tensor's math type
// (float for float16/bfloat16), so it matches torch._foreach_lerp_.
#include <torch/library.h>

#include "voxel_block.h"

#include <algorithm>

namespace pyseg_noise {
namespace cpu {
namespace {

constexpr int64_t kEmaChunk = 1 << 15;  // the parallel grain, in elements

// m <= Vec::size() source values as the math type T, rounded through the ema
// dtype E first (as ema.add_(tensor.to(ema.dtype) * ...) would).
template <typename T, typename E, typename S>
inline at::vec::Vectorized<T> load_source(const S* p, int64_t m) {
  if constexpr (std::is_same_v<S, E>) {
    return load_vec<T>(p, m);
  } else {
    T tmp[at::vec::Vectorized<T>::size()] = {};
    for (int64_t q = 0; q < m; ++q) tmp[q] = static_cast<T>(static_cast<E>(p[q]));
    return at::vec::Vectorized<T>::loadu(tmp);
  }
}

// ema[0:n] = lerp(ema, src, weight), computing in E's math type.
template <typename E, typename S>
void ema_lerp_kernel_impl(void* ema_v, const void* src_v, int64_t offset, int64_t n, double weight) {
  using T = at::opmath_type<E>;
  using Vec = at::vec::Vectorized<T>;
  E* ema = static_cast<E*>(ema_v) + offset;
  const S* src = static_cast<const S*>(src_v) + offset;
  const T w = static_cast<T>(weight);
  // ATen's lerp switches form at |w| = 0.5 to stay accurate near both ends.
  if (std::abs(w) < T(0.5)) {
    const Vec vw(w);
    for (int64_t i = 0; i < n; i += Vec::size()) {
      const int64_t m = std::min<int64_t>(Vec::size(), n - i);
      const Vec e = load_vec<T>(ema + i, m);
      store_vec(ema + i, at::vec::fmadd(vw, load_source<T, E>(src + i, m) - e, e), m);
    }
  } else {
    const Vec one_minus_w(T(1) - w);
    for (int64_t i = 0; i < n; i += Vec::size()) {
      const int64_t m = std::min<int64_t>(Vec::size(), n - i);
      const Vec s = load_source<T, E>(src + i, m);
      store_vec(ema + i, s - (s - load_vec<T>(ema + i, m)) * one_minus_w, m);
    }
  }
}

using LerpFn = void (*)(void*, const void*, int64_t, int64_t, double);

LerpFn lerp_fn(at::ScalarType ema_type, at::ScalarType src_type) {
  LerpFn fn = nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ema_type, "ema_update_", [&] {
    using E = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src_type, "ema_update_", [&] {
      fn = &ema_lerp_kernel_impl<E, scalar_t>;
    });
  });
  return fn;
}

// One tensor pair, its elements at [start, start + numel) of the joint index space.
struct EmaSegment {
  LerpFn fn;
  void* ema;
  const void* src;
  int64_t start, numel;
};

}  // namespace

void ema_update_cpu(at::TensorList ema_tensors, at::TensorList tensors, const at::Tensor& decay) {
  const char* op = "ema_update_";
  TORCH_CHECK_VALUE(ema_tensors.size() == tensors.size(), op, ": ema_tensors has ", ema_tensors.size(),
                    " tensors but tensors has ", tensors.size(), "; they must pair up one to one");
  TORCH_CHECK_VALUE(decay.numel() == 1, op, ": decay must be a float or a 0-d tensor, got a tensor of shape ",
                    decay.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(decay.scalar_type()), op, ": decay must be a floating point tensor, got ",
                   decay.scalar_type());
  TORCH_CHECK(decay.device().is_cpu(), op, ": the CPU kernel reads decay on the CPU, got a tensor on ", decay.device());
  const double weight = 1.0 - decay.item<double>();

  std::vector<EmaSegment> segments;
  int64_t total = 0;
  std::vector<at::Tensor> keep_alive;                         // contiguous copies of sources
  std::vector<std::pair<at::Tensor, at::Tensor>> write_back;  // (user's ema tensor, its contiguous stand-in)
  for (size_t i = 0; i < ema_tensors.size(); ++i) {
    const at::Tensor& e = ema_tensors[i];
    const at::Tensor& s = tensors[i];
    TORCH_CHECK_TYPE(at::isFloatingType(e.scalar_type()), op, ": ema_tensors[", i,
                     "] must be floating point (an EMA of integers is not defined), got ", e.scalar_type());
    TORCH_CHECK_TYPE(at::isFloatingType(s.scalar_type()), op, ": tensors[", i, "] must be floating point, got ",
                     s.scalar_type());
    TORCH_CHECK_VALUE(e.sizes() == s.sizes(), op, ": ema_tensors[", i, "] has shape ", e.sizes(), " but tensors[", i,
                      "] has shape ", s.sizes(), " (first mismatch)");
    TORCH_CHECK(e.device().is_cpu() && s.device().is_cpu(), op, ": the CPU kernel needs CPU tensors, pair ", i,
                " is on ", e.device(), " / ", s.device());
    if (e.numel() == 0) continue;
    // Dense tensors (contiguous or e.g. channels_last) are updated over their
    // storage directly; anything else through a contiguous stand-in.
    at::Tensor ew = e;
    if (!e.is_non_overlapping_and_dense()) {
      ew = e.contiguous();
      write_back.emplace_back(e, ew);
    }
    at::Tensor sw = s;
    if (s.strides() != ew.strides()) {
      sw = at::empty_like(ew, s.options()).copy_(s);
      keep_alive.push_back(sw);
    }
    segments.push_back({lerp_fn(ew.scalar_type(), sw.scalar_type()), ew.data_ptr(), sw.const_data_ptr(), total,
                        ew.numel()});
    total += ew.numel();
  }
  at::parallel_for(0, total, kEmaChunk, [&](int64_t begin, int64_t end) {
    // the first segment that ends after begin, then every one that starts before end
    auto it = std::upper_bound(segments.begin(), segments.end(), begin,
                               [](int64_t v, const EmaSegment& g) { return v < g.start + g.numel; });
    for (; it != segments.end() && it->start < end; ++it) {
      const int64_t lo = std::max(begin, it->start) - it->start;
      const int64_t hi = std::min(end, it->start + it->numel) - it->start;
      it->fn(it->ema, it->src, lo, hi - lo, weight);
    }
  });
  for (auto& [user, stand_in] : write_back) user.copy_(stand_in);
}

TORCH_LIBRARY_IMPL(pyseg_noise, CPU, m) { m.impl("ema_update_", &ema_update_cpu); }

}  // namespace cpu
}  // namespace pyseg_noise
