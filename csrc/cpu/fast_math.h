// exp and log for the CPU kernels. For float under AVX2 or AVX-512 they are inlined
// Cephes-style polynomials (about 1-2 ulp over the whole float range, NaN
// propagated, log(0) = log(FLT_MIN)): a Sleef call through the PLT costs
// 3-4x more instructions, and the PINT losses spend most of their time in
// exp/log (C + 1 of each per voxel). Other types use Vectorized's Sleef calls.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <cmath>
#include <limits>

namespace pyseg_noise {
namespace cpu {

template <typename T>
inline at::vec::Vectorized<T> vexp(const at::vec::Vectorized<T>& v) {
  return v.exp();
}

template <typename T>
inline at::vec::Vectorized<T> vlog(const at::vec::Vectorized<T>& v) {
  return v.log();
}

// Lane-wise selects: where_gt(a, b, x, y) = a > b ? x : y, where_eq(a, b, x, y) =
// a == b ? x : y (ordered compares: a NaN lane takes y). Vectorized's compares
// return a vector mask that blendv turns back into a mask register under
// AVX-512 (compare, materialize, compare, blend): these specializations
// compare straight into the mask register that the blend takes.
template <typename T>
inline at::vec::Vectorized<T> where_gt(const at::vec::Vectorized<T>& a, const at::vec::Vectorized<T>& b,
                                       const at::vec::Vectorized<T>& x, const at::vec::Vectorized<T>& y) {
  return at::vec::Vectorized<T>::blendv(y, x, a > b);
}

template <typename T>
inline at::vec::Vectorized<T> where_eq(const at::vec::Vectorized<T>& a, const at::vec::Vectorized<T>& b,
                                       const at::vec::Vectorized<T>& x, const at::vec::Vectorized<T>& y) {
  return at::vec::Vectorized<T>::blendv(y, x, a == b);
}

#if defined(CPU_CAPABILITY_AVX512)
template <>
inline at::vec::Vectorized<float> where_gt(const at::vec::Vectorized<float>& a, const at::vec::Vectorized<float>& b,
                                           const at::vec::Vectorized<float>& x, const at::vec::Vectorized<float>& y) {
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_GT_OQ), y, x);
}

template <>
inline at::vec::Vectorized<float> where_eq(const at::vec::Vectorized<float>& a, const at::vec::Vectorized<float>& b,
                                           const at::vec::Vectorized<float>& x, const at::vec::Vectorized<float>& y) {
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ), y, x);
}
#endif

#if defined(CPU_CAPABILITY_AVX2)
template <>
inline at::vec::Vectorized<float> vexp(const at::vec::Vectorized<float>& v) {
  // exp(x) = 2^n exp(r), n = round(x log2 e), r = x - n ln 2 (ln 2 split in two
  // for an exact product), exp(r) by a degree-6 polynomial on |r| <= ln2 / 2.
  __m256 x = v;
  // max/min return their second operand when either is NaN: keep x second.
  x = _mm256_max_ps(_mm256_set1_ps(-87.33654f), x);
  x = _mm256_min_ps(_mm256_set1_ps(88.37626f), x);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^n from the exponent bits; n in [-126, 127] after the clamp (NaN lanes stay NaN via y).
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return at::vec::Vectorized<float>(_mm256_mul_ps(y, _mm256_castsi256_ps(e)));
}

template <>
inline at::vec::Vectorized<float> vlog(const at::vec::Vectorized<float>& v) {
  // x = 2^e m with m in [sqrt(1/2), sqrt(2)); log x = e ln 2 + log(1 + (m - 1)),
  // the latter by a degree-9 polynomial. x < 0 or NaN gives NaN, 0 gives log(FLT_MIN).
  const __m256 in = v;
  const __m256 negative = _mm256_cmp_ps(in, _mm256_setzero_ps(), _CMP_NGE_UQ);  // x < 0 or NaN
  __m256 x = _mm256_max_ps(_mm256_set1_ps(std::numeric_limits<float>::min()), in);  // NaN kept
  const __m256i bits = _mm256_castps_si256(x);
  __m256 e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(126)));
  // mantissa in [0.5, 1)
  x = _mm256_or_ps(_mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x007fffff))), _mm256_set1_ps(0.5f));
  const __m256 small = _mm256_cmp_ps(x, _mm256_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
  e = _mm256_sub_ps(e, _mm256_and_ps(_mm256_set1_ps(1.0f), small));
  x = _mm256_add_ps(_mm256_sub_ps(x, _mm256_set1_ps(1.0f)), _mm256_and_ps(x, small));
  const __m256 z = _mm256_mul_ps(x, x);
  __m256 y = _mm256_set1_ps(7.0376836292e-2f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(-1.1514610310e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.1676998740e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(-1.2420140846e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.4249322787e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(-1.6668057665e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(2.0000714765e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(-2.4999993993e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(3.3333331174e-1f));
  y = _mm256_mul_ps(_mm256_mul_ps(y, x), z);
  y = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.12194440e-4f), y);
  y = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5f), y);
  __m256 out = _mm256_add_ps(x, y);
  out = _mm256_fmadd_ps(e, _mm256_set1_ps(0.693359375f), out);
  return at::vec::Vectorized<float>(_mm256_or_ps(out, negative));  // all-ones bits = NaN
}
#endif

#if defined(CPU_CAPABILITY_AVX512)
// The same polynomials on 16 lanes; AVX-512's scalef replaces the exponent-bit
// arithmetic of exp (and keeps exp(88.37) finite), masks replace blends.
template <>
inline at::vec::Vectorized<float> vexp(const at::vec::Vectorized<float>& v) {
  __m512 x = v;
  x = _mm512_max_ps(_mm512_set1_ps(-87.33654f), x);  // NaN in x is kept (second operand)
  x = _mm512_min_ps(_mm512_set1_ps(88.37626f), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 y = _mm512_set1_ps(1.9875691500e-4f);
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return at::vec::Vectorized<float>(_mm512_scalef_ps(y, n));
}

template <>
inline at::vec::Vectorized<float> vlog(const at::vec::Vectorized<float>& v) {
  const __m512 in = v;
  const __mmask16 negative = _mm512_cmp_ps_mask(in, _mm512_setzero_ps(), _CMP_NGE_UQ);  // x < 0 or NaN
  __m512 x = _mm512_max_ps(_mm512_set1_ps(std::numeric_limits<float>::min()), in);  // NaN kept
  const __m512i bits = _mm512_castps_si512(x);
  __m512 e = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(bits, 23), _mm512_set1_epi32(126)));
  x = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(bits, _mm512_set1_epi32(0x007fffff)),
                                          _mm512_castps_si512(_mm512_set1_ps(0.5f))));
  const __mmask16 small = _mm512_cmp_ps_mask(x, _mm512_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
  e = _mm512_mask_sub_ps(e, small, e, _mm512_set1_ps(1.0f));
  const __m512 xm1 = _mm512_sub_ps(x, _mm512_set1_ps(1.0f));
  x = _mm512_mask_add_ps(xm1, small, xm1, x);
  const __m512 z = _mm512_mul_ps(x, x);
  __m512 y = _mm512_set1_ps(7.0376836292e-2f);
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(-1.1514610310e-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.1676998740e-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(-1.2420140846e-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.4249322787e-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(-1.6668057665e-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(2.0000714765e-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(-2.4999993993e-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(3.3333331174e-1f));
  y = _mm512_mul_ps(_mm512_mul_ps(y, x), z);
  y = _mm512_fmadd_ps(e, _mm512_set1_ps(-2.12194440e-4f), y);
  y = _mm512_fnmadd_ps(z, _mm512_set1_ps(0.5f), y);
  __m512 out = _mm512_add_ps(x, y);
  out = _mm512_fmadd_ps(e, _mm512_set1_ps(0.693359375f), out);
  return at::vec::Vectorized<float>(
      _mm512_mask_mov_ps(out, negative, _mm512_set1_ps(std::numeric_limits<float>::quiet_NaN())));
}
#endif

}  // namespace cpu
}  // namespace pyseg_noise
