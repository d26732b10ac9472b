// SPEC 6 / TSMAN Eq. (3)-(6): loss_v = attention_v * ce_v with the attention a
// constant, for one stream (attended_cross_entropy) or for both streams of
// TSMAN with one shared attention map (tsman_loss, which first computes the
// map of SPEC 5).
//
// One kernel serves both: it walks the voxels once and handles 1 or 2
// streams per block, so the two-stream loss reads the target and the
// attention once and each stream's logits once; the backward likewise writes
// both streams' gradients in one pass. Nothing voxel-sized is saved between
// forward and backward except the attention map, which is an output anyway.
#include <torch/library.h>

#include <array>

#include "tsman_terms.h"

namespace pyseg_noise {
namespace cpu {
namespace {

constexpr int kMaxStreams = 2;

template <typename scalar_t>
using Streams = std::array<const scalar_t*, kMaxStreams>;

// Loads the block's target (as int64 and as T) and attention (zero past cnt,
// so padded voxels add nothing).
template <typename scalar_t, typename T>
inline void load_target_attention(BlockBuffers<T>& buf, const TargetReader& target, const scalar_t* att, int64_t off,
                                  int64_t cnt) {
  target.load(off, cnt, buf.t.data());
  for (int64_t j = cnt; j < kBlock; ++j) buf.t[j] = 0;
  for (int64_t j = 0; j < kBlock; ++j) buf.tf[j] = static_cast<T>(buf.t[j]);
  for (int64_t j = 0; j < cnt; ++j) buf.c[j] = static_cast<T>(att[off + j]);
  for (int64_t j = cnt; j < kBlock; ++j) buf.c[j] = T(0);
}

template <typename scalar_t>
void attended_ce_kernel_impl(const Geometry& g, const Streams<scalar_t>& logits, int64_t n_streams,
                             const scalar_t* attention, TargetCheck& check, const at::Tensor& target, bool store_map,
                             scalar_t* loss_map, std::vector<double>& partial) {
  using T = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<T>;
  const TargetReader reader = check.reader(target, g.C);
  at::parallel_for(0, g.n_chunks(), 1, [&](int64_t begin, int64_t end) {
    BlockBuffers<T> buf(g.C);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t b = chunk / g.chunks_per_item;
      const int64_t blk0 = (chunk % g.chunks_per_item) * kBlocksPerChunk;
      const int64_t blk1 = std::min(blk0 + kBlocksPerChunk, g.blocks_per_item);
      double chunk_sum = 0.0;
      for (int64_t blk = blk0; blk < blk1; ++blk) {
        const int64_t n0 = blk * kBlock;
        const int64_t cnt = std::min(kBlock, g.N - n0);
        load_target_attention(buf, reader, attention, b * g.N + n0, cnt);
        std::fill(buf.b, buf.b + kBlock, T(0));  // loss of the voxel, summed over streams
        for (int64_t s = 0; s < n_streams; ++s) {
          gather_planes(logits[s] + b * g.C * g.N, g.C, g.N, n0, cnt, T(0), buf.x);
          block_logsumexp(buf.x, g.C, buf.a);
          // loss += attention * (logsumexp(x) - x[target]), the gather done as C selects.
          for (int64_t j = 0; j < kBlock; j += Vec::size()) {
            const Vec tf = Vec::loadu(buf.tf + j);
            Vec xt(T(0));
            for (int64_t c = 0; c < g.C; ++c) xt = Vec::blendv(xt, Vec::loadu(buf.x + c * kBlock + j), tf == Vec(T(c)));
            const Vec ce = Vec::loadu(buf.a + j) - xt;
            at::vec::fmadd(Vec::loadu(buf.c + j), ce, Vec::loadu(buf.b + j)).store(buf.b + j);
          }
        }
        // Lanes of a block in T, blocks of a chunk in double.
        Vec acc(T(0));
        for (int64_t j = 0; j < kBlock; j += Vec::size()) acc = acc + Vec::loadu(buf.b + j);
        chunk_sum += static_cast<double>(vec_sum(acc));
        if (store_map) {
          scalar_t* out = loss_map + b * g.N + n0;
          for (int64_t j = 0; j < cnt; ++j) out[j] = static_cast<scalar_t>(buf.b[j]);
        }
      }
      partial[chunk] = chunk_sum;
    }
  });
}

// grad_s[c] = g_v * attention_v * (softmax_c(x_s) - [c == target_v]) for each stream s.
template <typename scalar_t>
void attended_ce_backward_kernel_impl(const Geometry& g, const Streams<scalar_t>& logits, int64_t n_streams,
                                      const scalar_t* attention, TargetCheck& check, const at::Tensor& target,
                                      const scalar_t* grad_map, double grad_scalar,
                                      const std::array<scalar_t*, kMaxStreams>& grads) {
  using T = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<T>;
  const TargetReader reader = check.reader(target, g.C);
  at::parallel_for(0, g.B * g.blocks_per_item, 16, [&](int64_t begin, int64_t end) {
    BlockBuffers<T> buf(g.C);
    for (int64_t id = begin; id < end; ++id) {
      const int64_t b = id / g.blocks_per_item;
      const int64_t n0 = (id % g.blocks_per_item) * kBlock;
      const int64_t cnt = std::min(kBlock, g.N - n0);
      load_target_attention(buf, reader, attention, b * g.N + n0, cnt);
      // Per-voxel weight g_v * attention_v into buf.a.
      if (grad_map != nullptr) {
        const scalar_t* gm = grad_map + b * g.N + n0;
        for (int64_t j = 0; j < cnt; ++j) buf.a[j] = static_cast<T>(gm[j]) * buf.c[j];
        for (int64_t j = cnt; j < kBlock; ++j) buf.a[j] = T(0);
      } else {
        const Vec gv(static_cast<T>(grad_scalar));
        for (int64_t j = 0; j < kBlock; j += Vec::size()) (gv * Vec::loadu(buf.c + j)).store(buf.a + j);
      }
      for (int64_t s = 0; s < n_streams; ++s) {
        gather_planes(logits[s] + b * g.C * g.N, g.C, g.N, n0, cnt, T(0), buf.x);
        block_softmax<T>(buf.x, g.C, buf.s, nullptr);
        for (int64_t j = 0; j < kBlock; j += Vec::size()) {
          const Vec w = Vec::loadu(buf.a + j);
          const Vec tf = Vec::loadu(buf.tf + j);
          for (int64_t c = 0; c < g.C; ++c) {
            const Vec onehot = Vec::blendv(Vec(T(0)), Vec(T(1)), tf == Vec(T(c)));
            (w * (Vec::loadu(buf.s + c * kBlock + j) - onehot)).store(buf.s + c * kBlock + j);
          }
        }
        scalar_t* out = grads[s] + b * g.C * g.N + n0;
        for (int64_t c = 0; c < g.C; ++c)
          for (int64_t j = 0; j < cnt; ++j) out[c * g.N + j] = static_cast<scalar_t>(buf.s[c * kBlock + j]);
      }
    }
  });
}

// Forward of 1 or 2 streams sharing target and attention (already contiguous,
// attention in the logits' dtype).
at::Tensor attended_ce_forward(const char* op, const std::vector<at::Tensor>& streams, const at::Tensor& target,
                               const at::Tensor& attention, Reduction red) {
  const Geometry g = geometry_of(streams[0]);
  std::vector<double> partial(g.n_chunks(), 0.0);
  at::Tensor loss_map;
  if (red == Reduction::None) loss_map = at::empty(target.sizes(), streams[0].options());
  TargetCheck check;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, streams[0].scalar_type(), "attended_cross_entropy", [&] {
    Streams<scalar_t> ptrs{};
    for (size_t s = 0; s < streams.size(); ++s) ptrs[s] = streams[s].const_data_ptr<scalar_t>();
    attended_ce_kernel_impl<scalar_t>(g, ptrs, static_cast<int64_t>(streams.size()),
                                      attention.const_data_ptr<scalar_t>(), check, target, red == Reduction::None,
                                      red == Reduction::None ? loss_map.mutable_data_ptr<scalar_t>() : nullptr,
                                      partial);
  });
  check.raise_if_bad(op, g.C);
  if (red == Reduction::None) return loss_map;
  double total = ordered_sum(partial);
  if (red == Reduction::Mean) total /= static_cast<double>(g.B * g.N);
  return at::scalar_tensor(total, streams[0].options());
}

std::vector<at::Tensor> attended_ce_backward(const char* op, const at::Tensor& grad_in,
                                             const std::vector<at::Tensor>& streams, const at::Tensor& target,
                                             const at::Tensor& attention, Reduction red) {
  const Geometry g = geometry_of(streams[0]);
  at::Tensor grad_map;
  double grad_scalar = 0.0;
  if (red == Reduction::None) {
    TORCH_CHECK_VALUE(grad_in.sizes() == target.sizes(), op, ": grad must have the loss map's shape ", target.sizes(),
                      ", got ", grad_in.sizes());
    grad_map = grad_in.to(streams[0].scalar_type()).contiguous();
  } else {
    TORCH_CHECK_VALUE(grad_in.numel() == 1, op, ": grad of a reduced loss must have one element, got shape ",
                      grad_in.sizes());
    grad_scalar = grad_in.item<double>();
    if (red == Reduction::Mean) grad_scalar /= static_cast<double>(g.B * g.N);
  }
  std::vector<at::Tensor> grads;
  for (const auto& s : streams) grads.push_back(at::empty(s.sizes(), s.options()));
  TargetCheck check;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, streams[0].scalar_type(), "attended_cross_entropy", [&] {
    Streams<scalar_t> ptrs{};
    std::array<scalar_t*, kMaxStreams> outs{};
    for (size_t s = 0; s < streams.size(); ++s) {
      ptrs[s] = streams[s].const_data_ptr<scalar_t>();
      outs[s] = grads[s].mutable_data_ptr<scalar_t>();
    }
    attended_ce_backward_kernel_impl<scalar_t>(g, ptrs, static_cast<int64_t>(streams.size()),
                                               attention.const_data_ptr<scalar_t>(), check, target,
                                               red == Reduction::None ? grad_map.const_data_ptr<scalar_t>() : nullptr,
                                               grad_scalar, outs);
  });
  check.raise_if_bad(op, g.C);
  return grads;
}

void check_ce_args(const char* op, const at::Tensor& logits, const at::Tensor& target, const at::Tensor& attention) {
  check_stream(op, "logits", logits);
  check_target_dtype(op, target);
  check_voxel_map(op, "target", target, logits);
  TORCH_CHECK_TYPE(at::isFloatingType(attention.scalar_type()), op, ": attention must be floating point, got ",
                   attention.scalar_type());
  check_voxel_map(op, "attention", attention, logits);
}

void check_tsman_args(const char* op, const at::Tensor& logits_a, const at::Tensor& logits_b,
                      const at::Tensor& target) {
  check_stream(op, "logits_a", logits_a);
  check_second_stream(op, logits_a, logits_b);
  check_target_dtype(op, target);
  check_voxel_map(op, "target", target, logits_a);
}

}  // namespace

at::Tensor attended_cross_entropy_cpu(const at::Tensor& logits, const at::Tensor& target_in,
                                      const at::Tensor& attention_in, c10::string_view reduction) {
  const char* op = "attended_cross_entropy";
  check_ce_args(op, logits, target_in, attention_in);
  const Reduction red = parse_reduction(op, reduction);
  const at::Tensor attention = attention_in.to(logits.scalar_type()).contiguous();
  return attended_ce_forward(op, {logits.contiguous()}, target_in.contiguous(), attention, red);
}

at::Tensor attended_cross_entropy_backward_cpu(const at::Tensor& grad, const at::Tensor& logits,
                                               const at::Tensor& target_in, const at::Tensor& attention_in,
                                               c10::string_view reduction) {
  const char* op = "attended_cross_entropy_backward";
  check_ce_args(op, logits, target_in, attention_in);
  const Reduction red = parse_reduction(op, reduction);
  const at::Tensor attention = attention_in.to(logits.scalar_type()).contiguous();
  return attended_ce_backward(op, grad, {logits.contiguous()}, target_in.contiguous(), attention, red)[0];
}

std::tuple<at::Tensor, at::Tensor> tsman_loss_cpu(const at::Tensor& logits_a, const at::Tensor& logits_b,
                                                  const at::Tensor& target_in, double sigma2, int64_t kernel_size,
                                                  int64_t spatial_dims, int64_t slice_dim,
                                                  c10::string_view reduction) {
  const char* op = "tsman_loss";
  check_tsman_args(op, logits_a, logits_b, target_in);
  const Reduction red = parse_reduction(op, reduction);
  const at::Tensor a = logits_a.contiguous();
  const at::Tensor b = logits_b.contiguous();
  // The map in the logits' dtype is both the returned attention and the weight
  // the loss uses, so forward and backward see the same rounded values.
  at::Tensor attention = loss_attention_cpu(a, b, sigma2, kernel_size, spatial_dims, slice_dim);
  at::Tensor loss = attended_ce_forward(op, {a, b}, target_in.contiguous(), attention, red);
  return {loss, attention};
}

std::tuple<at::Tensor, at::Tensor> tsman_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& logits_a,
                                                           const at::Tensor& logits_b, const at::Tensor& target_in,
                                                           const at::Tensor& attention_in,
                                                           c10::string_view reduction) {
  const char* op = "tsman_loss_backward";
  check_tsman_args(op, logits_a, logits_b, target_in);
  TORCH_CHECK_TYPE(at::isFloatingType(attention_in.scalar_type()), op, ": attention must be floating point, got ",
                   attention_in.scalar_type());
  check_voxel_map(op, "attention", attention_in, logits_a);
  const Reduction red = parse_reduction(op, reduction);
  const at::Tensor attention = attention_in.to(logits_a.scalar_type()).contiguous();
  auto grads = attended_ce_backward(op, grad, {logits_a.contiguous(), logits_b.contiguous()}, target_in.contiguous(),
                                    attention, red);
  return {grads[0], grads[1]};
}

TORCH_LIBRARY_IMPL(pyseg_noise, CPU, m) {
  m.impl("attended_cross_entropy", &attended_cross_entropy_cpu);
  m.impl("attended_cross_entropy_backward", &attended_cross_entropy_backward_cpu);
  m.impl("tsman_loss", &tsman_loss_cpu);
  m.impl("tsman_loss_backward", &tsman_loss_backward_cpu);
}

}  // namespace cpu
}  // namespace pyseg_noise
