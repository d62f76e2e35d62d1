// The bf16 Linear of a decode step with AVX512_BF16 (vdpbf16ps: 32 bf16 products summed into 16 fp32 lanes an
// instruction). CMake compiles this file alone with -mavx512f -mavx512bf16; it runs only where
// cpu_bf16_support() found the instructions (fused_ops.cc checks). Same blocking as the fp32 kernel
// (cpu_kernels_isa.inc): dot products against the weight rows as stored, 2 rows x 4 columns a block.
#include <immintrin.h>

#include <cstdint>

#include "cpu_kernels.h"

namespace cmn::model::kernels::avx512bf16 {
namespace {

typedef float V16 __attribute__((vector_size(64)));
typedef float V8 __attribute__((vector_size(32)));
typedef float V4 __attribute__((vector_size(16)));

// Not _mm512_reduce_add_ps: GCC 12's header trips -Wmaybe-uninitialized in it.
inline float hsum(__m512 a) {
  const V16 v = (V16)a;
  const V8 h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
               __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const V4 q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
  return (q[0] + q[2]) + (q[1] + q[3]);
}

template <int R, int C>
inline void dots(const uint16_t* const (&x)[R], const uint16_t* const (&w)[C], int64_t k, float (&out)[R][C]) {
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  }
  for (int64_t i = 0; i < k; i += 32) {  // k % 32 == 0 (checked by the caller)
    __m512bh wv[C];
    for (int c = 0; c < C; ++c) wv[c] = (__m512bh)_mm512_loadu_si512(w[c] + i);
    for (int r = 0; r < R; ++r) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(x[r] + i);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], xv, wv[c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) out[r][c] = hsum(acc[r][c]);
  }
}

}  // namespace

void linear(const uint16_t* x, const uint16_t* w, const float* b, float* y, int64_t m, int64_t n, int64_t k,
            int64_t n0, int64_t n1) {
  int64_t c = n0;
  for (; c + 4 <= n1; c += 4) {
    const uint16_t* const wr[4] = {w + c * k, w + (c + 1) * k, w + (c + 2) * k, w + (c + 3) * k};
    int64_t r = 0;
    for (; r + 2 <= m; r += 2) {
      const uint16_t* const xr[2] = {x + r * k, x + (r + 1) * k};
      float s[2][4];
      dots<2, 4>(xr, wr, k, s);
      for (int i = 0; i < 2; ++i) {
        for (int j = 0; j < 4; ++j) y[(r + i) * n + c + j] = s[i][j] + (b ? b[c + j] : 0.0f);
      }
    }
    for (; r < m; ++r) {
      const uint16_t* const xr[1] = {x + r * k};
      float s[1][4];
      dots<1, 4>(xr, wr, k, s);
      for (int j = 0; j < 4; ++j) y[r * n + c + j] = s[0][j] + (b ? b[c + j] : 0.0f);
    }
  }
  for (; c < n1; ++c) {
    const uint16_t* const wr[1] = {w + c * k};
    for (int64_t r = 0; r < m; ++r) {
      const uint16_t* const xr[1] = {x + r * k};
      float s[1][1];
      dots<1, 1>(xr, wr, k, s);
      y[r * n + c] = s[0][0] + (b ? b[c] : 0.0f);
    }
  }
}

}  // namespace cmn::model::kernels::avx512bf16
