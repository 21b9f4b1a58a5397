/* qc_x86.h: x86 hot paths of qc_kernels.h (included by it), for the instruction sets the
 * target file lists (`isa avx512_vnni, avx2` -> QC_ISA_AVX512_VNNI, QC_ISA_AVX2).
 *
 * Each kernel is compiled with a function target attribute, so the library builds with any
 * flags; qc_x86_level() picks the best one the CPU has at run time (QC_MAX_ISA caps it:
 * 0 portable, 1 AVX2, 2 AVX-512 VNNI). Every path gives the portable kernels' integers bit
 * for bit: products are exact (u8 x s8 in vpdpbusd, int16 x int16 pairs in vpmaddwd),
 * sums are int32, and the epilogue runs the same float32 operations in the same order.
 *
 * Dense NCHW convs run as an int8 GEMM: the input is packed (im2col when needed) into
 * B[K/4][P][4] u8 (4 consecutive K values of one pixel in one 32-bit word; int8 inputs are
 * offset by 128 and the bias corrected), the weights are packed at generation time into
 * A[OC (padded to 8)][K (padded to 4)]. Depthwise NCHW convs split the padded plane into
 * stride phases, so every tap is a contiguous int16 row, and add two taps per vpmaddwd.
 */
#ifndef QC_X86_H
#define QC_X86_H

#include <immintrin.h>

#ifndef QC_MAX_ISA
#define QC_MAX_ISA 2
#endif

#define QC_T_AVX2 __attribute__((target("avx2")))
#define QC_T_VNNI __attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512vnni")))

/* 0 portable, 1 AVX2, 2 AVX-512 VNNI: what the CPU has, the target allows and QC_MAX_ISA */
static inline int qc_x86_level(void) {
  static int level = -1;
  if (level < 0) {
    int l = 0;
    __builtin_cpu_init();
#if defined(QC_ISA_AVX2) || defined(QC_ISA_AVX512_VNNI)
    if (__builtin_cpu_supports("avx2")) l = 1;
#endif
#if defined(QC_ISA_AVX512_VNNI)
    if (l && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512vnni"))
      l = 2;
#endif
    level = l < QC_MAX_ISA ? l : QC_MAX_ISA;
  }
  return level;
}

/* ------------------------------------------------------------------ epilogue */

/* n accumulators of channel c -> y[yoff .. yoff + n) (qc_rq_store, 8 or 16 at a time when
 * the requantization is the float32 one with ties to even) */
QC_T_AVX2 static void qc_rq_row_avx2(const qc_rq* r, const int32_t* acc, int n, ptrdiff_t c, void* y, int ydt,
                                     ptrdiff_t yoff) {
  int i = 0;
  if (r->mode == QC_RQ_FLOAT_OUT || (r->mode == QC_RQ_FLOAT && QC_ROUNDING == 2)) {
    __m256 s = _mm256_set1_ps(r->scale[r->per_channel ? c : 0]);
    __m256 b = _mm256_set1_ps(r->bias ? r->bias[r->bias_per_channel ? c : 0] : 0.0f);
    __m256 zp = _mm256_set1_ps((float)r->zp), lo = _mm256_set1_ps((float)r->qmin), hi = _mm256_set1_ps((float)r->qmax);
    for (; i + 8 <= n; i += 8) {
      __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i*)(acc + i))), s);
      if (r->bias) v = _mm256_add_ps(v, b);
      if (r->mode == QC_RQ_FLOAT_OUT) {
        _mm256_storeu_ps((float*)y + yoff + i, v);
      } else {
        __m256i q;
        __m128i w;
        v = _mm256_add_ps(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), zp);
        q = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
        w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        w = ydt == QC_U8 ? _mm_packus_epi16(w, w) : _mm_packs_epi16(w, w);
        _mm_storel_epi64((__m128i*)((uint8_t*)y + yoff + i), w);
      }
    }
  }
  for (; i < n; i++) qc_rq_store(r, acc[i], c, y, ydt, yoff + i);
}

QC_T_VNNI static void qc_rq_row_512(const qc_rq* r, const int32_t* acc, int n, ptrdiff_t c, void* y, int ydt,
                                    ptrdiff_t yoff) {
  int i;
  if (!(r->mode == QC_RQ_FLOAT_OUT || (r->mode == QC_RQ_FLOAT && QC_ROUNDING == 2))) {
    for (i = 0; i < n; i++) qc_rq_store(r, acc[i], c, y, ydt, yoff + i);
    return;
  }
  {
    __m512 s = _mm512_set1_ps(r->scale[r->per_channel ? c : 0]);
    __m512 b = _mm512_set1_ps(r->bias ? r->bias[r->bias_per_channel ? c : 0] : 0.0f);
    __m512 zp = _mm512_set1_ps((float)r->zp), lo = _mm512_set1_ps((float)r->qmin), hi = _mm512_set1_ps((float)r->qmax);
    for (i = 0; i < n; i += 16) {
      __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
      __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(m, acc + i)), s);
      if (r->bias) v = _mm512_add_ps(v, b);
      if (r->mode == QC_RQ_FLOAT_OUT) {
        _mm512_mask_storeu_ps((float*)y + yoff + i, m, v);
      } else {
        v = _mm512_add_ps(_mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), zp);
        _mm_mask_storeu_epi8((uint8_t*)y + yoff + i, m,
                             _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(v, lo), hi))));
      }
    }
  }
}

/* ------------------------------------------------------------------ dense conv as GEMM */

typedef struct {
  int N, C, H, W, OC, FH, FW, sh, sw, dh, dw, pt, pl, pb, pr, Ho, Wo;
  int K, K4, OCp;    /* K = C*FH*FW, padded to 4; OC padded to 8 (rows of A) */
  ptrdiff_t P, Pp;   /* output pixels, padded to 32 */
  int direct;        /* 1x1, stride 1, no padding: B is built straight from x */
} qc_x86_conv;

/* 4 rows of bytes -> n 32-bit words (r0[i], r1[i], r2[i], r3[i]); flip: xor 0x80 (int8 -> u8) */
static inline void qc_interleave4(const uint8_t* r0, const uint8_t* r1, const uint8_t* r2, const uint8_t* r3,
                                  ptrdiff_t st, ptrdiff_t n, uint8_t flip, uint8_t* d) {
  ptrdiff_t i = 0;
  if (st == 2) { /* the even bytes of 32: the stride-2 columns of 16 outputs */
    __m128i f = _mm_set1_epi8((char)flip), ev = _mm_set1_epi16(0x00FF);
#define QC_EVEN16(r) \
  _mm_xor_si128(_mm_packus_epi16(_mm_and_si128(_mm_loadu_si128((const __m128i*)((r) + 2 * i)), ev), \
                                 _mm_and_si128(_mm_loadu_si128((const __m128i*)((r) + 2 * i + 16)), ev)), f)
    for (; i + 16 <= n - 1; i += 16) { /* n - 1: the last pair's odd byte may lie past the row */
      __m128i a = QC_EVEN16(r0), b = QC_EVEN16(r1), c = QC_EVEN16(r2), e = QC_EVEN16(r3);
      __m128i ab0 = _mm_unpacklo_epi8(a, b), ab1 = _mm_unpackhi_epi8(a, b);
      __m128i ce0 = _mm_unpacklo_epi8(c, e), ce1 = _mm_unpackhi_epi8(c, e);
      _mm_storeu_si128((__m128i*)(d + 4 * i), _mm_unpacklo_epi16(ab0, ce0));
      _mm_storeu_si128((__m128i*)(d + 4 * i + 16), _mm_unpackhi_epi16(ab0, ce0));
      _mm_storeu_si128((__m128i*)(d + 4 * i + 32), _mm_unpacklo_epi16(ab1, ce1));
      _mm_storeu_si128((__m128i*)(d + 4 * i + 48), _mm_unpackhi_epi16(ab1, ce1));
    }
#undef QC_EVEN16
  }
  if (st == 1) {
    __m128i f = _mm_set1_epi8((char)flip);
    for (; i + 16 <= n; i += 16) {
      __m128i a = _mm_xor_si128(_mm_loadu_si128((const __m128i*)(r0 + i)), f);
      __m128i b = _mm_xor_si128(_mm_loadu_si128((const __m128i*)(r1 + i)), f);
      __m128i c = _mm_xor_si128(_mm_loadu_si128((const __m128i*)(r2 + i)), f);
      __m128i e = _mm_xor_si128(_mm_loadu_si128((const __m128i*)(r3 + i)), f);
      __m128i ab0 = _mm_unpacklo_epi8(a, b), ab1 = _mm_unpackhi_epi8(a, b);
      __m128i ce0 = _mm_unpacklo_epi8(c, e), ce1 = _mm_unpackhi_epi8(c, e);
      _mm_storeu_si128((__m128i*)(d + 4 * i), _mm_unpacklo_epi16(ab0, ce0));
      _mm_storeu_si128((__m128i*)(d + 4 * i + 16), _mm_unpackhi_epi16(ab0, ce0));
      _mm_storeu_si128((__m128i*)(d + 4 * i + 32), _mm_unpacklo_epi16(ab1, ce1));
      _mm_storeu_si128((__m128i*)(d + 4 * i + 48), _mm_unpackhi_epi16(ab1, ce1));
    }
  }
  for (; i < n; i++) {
    d[4 * i] = r0[i * st] ^ flip;
    d[4 * i + 1] = r1[i * st] ^ flip;
    d[4 * i + 2] = r2[i * st] ^ flip;
    d[4 * i + 3] = r3[i * st] ^ flip;
  }
}

/* B[K4/4][Pp][4] of image n; xpad: the spatially padded u8/s8 copy (unused when direct);
 * zrow: a row of zeros at least Wp long, read for the K padding */
static inline void qc_pack_b(const uint8_t* x, const uint8_t* xpad, const qc_x86_conv* c, int n, uint8_t flip,
                             const uint8_t* zrow, uint8_t* B) {
  int Hp = c->H + c->pt + c->pb, Wp = c->W + c->pl + c->pr, k4, t, oh;
  ptrdiff_t plane = (ptrdiff_t)Hp * Wp, tap = (ptrdiff_t)c->FH * c->FW;
  for (k4 = 0; k4 < c->K4; k4 += 4) {
    uint8_t* d = B + (ptrdiff_t)k4 * c->Pp;
    if (c->direct) {
      const uint8_t* r[4];
      for (t = 0; t < 4; t++)
        r[t] = k4 + t < c->K ? x + ((ptrdiff_t)n * c->C + k4 + t) * c->P : zrow;
      for (t = 0; t < 4; t++)
        if (r[t] == zrow) r[t] = x + ((ptrdiff_t)n * c->C) * c->P; /* any bytes: the weight is 0 */
      qc_interleave4(r[0], r[1], r[2], r[3], 1, c->P, flip, d);
    } else {
      for (oh = 0; oh < c->Ho; oh++) {
        const uint8_t* r[4];
        for (t = 0; t < 4; t++) {
          int k = k4 + t;
          if (k < c->K) {
            int ic = (int)(k / tap), i = (int)(k % tap) / c->FW, j = (int)(k % tap) % c->FW;
            r[t] = xpad + ((ptrdiff_t)n * c->C + ic) * plane + (ptrdiff_t)(oh * c->sh + i * c->dh) * Wp + j * c->dw;
          } else {
            r[t] = zrow;
          }
        }
        qc_interleave4(r[0], r[1], r[2], r[3], r[0] == zrow ? 0 : c->sw, c->Wo, flip, d + (ptrdiff_t)oh * c->Wo * 4);
      }
    }
    if (c->Pp > c->P) memset(d + c->P * 4, 0, (size_t)(c->Pp - c->P) * 4);
  }
}

/* spatially padded byte copy of x (padding reads the zero point) */
static inline void qc_pad_u8(const uint8_t* x, int planes, int H, int W, int pt, int pl, int pb, int pr, uint8_t z,
                             uint8_t* xp) {
  int Hp = H + pt + pb, Wp = W + pl + pr, p, h;
  for (p = 0; p < planes; p++) {
    uint8_t* d = xp + (ptrdiff_t)p * Hp * Wp;
    const uint8_t* s = x + (ptrdiff_t)p * H * W;
    memset(d, z, (size_t)pt * Wp);
    for (h = 0; h < H; h++) {
      uint8_t* dr = d + (ptrdiff_t)(pt + h) * Wp;
      memset(dr, z, (size_t)pl);
      memcpy(dr + pl, s + (ptrdiff_t)h * W, (size_t)W);
      memset(dr + pl + W, z, (size_t)pr);
    }
    memset(d + (ptrdiff_t)(pt + H) * Wp, z, (size_t)pb * Wp);
  }
}

#define QC_TILE_P 32 /* pixels of one register tile (and of the B padding) */

/* C[OC][P] = A[OCp][K4] . B: 8 rows x 32 pixels of int32 accumulators in zmm registers */
QC_T_VNNI static void qc_gemm_vnni(const int8_t* A, const uint8_t* B, const int32_t* bias, const qc_x86_conv* c,
                                   const qc_rq* rq, void* y, int ydt, ptrdiff_t ybase) {
  ptrdiff_t pb, p0;
  int oc0, k, r;
  int32_t tile[8][QC_TILE_P];
  for (pb = 0; pb < c->P; pb += 256) {
    ptrdiff_t pe = pb + 256 < c->P ? pb + 256 : c->P;
    for (oc0 = 0; oc0 < c->OC; oc0 += 8)
      for (p0 = pb; p0 < pe; p0 += QC_TILE_P) {
        const int8_t* a = A + (ptrdiff_t)oc0 * c->K4;
        const uint8_t* b = B + p0 * 4;
        int K4 = c->K4, rows = c->OC - oc0 < 8 ? c->OC - oc0 : 8, cols = c->P - p0 < QC_TILE_P ? (int)(c->P - p0) : QC_TILE_P;
        __m512i c00 = _mm512_set1_epi32(bias[oc0]), c01 = c00, c10 = _mm512_set1_epi32(bias[oc0 + 1]), c11 = c10;
        __m512i c20 = _mm512_set1_epi32(bias[oc0 + 2]), c21 = c20, c30 = _mm512_set1_epi32(bias[oc0 + 3]), c31 = c30;
        __m512i c40 = _mm512_set1_epi32(bias[oc0 + 4]), c41 = c40, c50 = _mm512_set1_epi32(bias[oc0 + 5]), c51 = c50;
        __m512i c60 = _mm512_set1_epi32(bias[oc0 + 6]), c61 = c60, c70 = _mm512_set1_epi32(bias[oc0 + 7]), c71 = c70;
        if (cols > 16) {
          for (k = 0; k < K4; k += 4, b += c->Pp * 4) {
            __m512i b0 = _mm512_loadu_si512((const void*)b), b1 = _mm512_loadu_si512((const void*)(b + 64)), w;
            int32_t wv;
#define QC_VNNI_ROW(R)                                    \
  memcpy(&wv, a + (ptrdiff_t)(R) * K4 + k, 4);            \
  w = _mm512_set1_epi32(wv);                              \
  c##R##0 = _mm512_dpbusd_epi32(c##R##0, b0, w);           \
  c##R##1 = _mm512_dpbusd_epi32(c##R##1, b1, w);
            QC_VNNI_ROW(0) QC_VNNI_ROW(1) QC_VNNI_ROW(2) QC_VNNI_ROW(3)
            QC_VNNI_ROW(4) QC_VNNI_ROW(5) QC_VNNI_ROW(6) QC_VNNI_ROW(7)
#undef QC_VNNI_ROW
          }
        } else { /* a tail of 16 pixels or fewer: half the tile */
          for (k = 0; k < K4; k += 4, b += c->Pp * 4) {
            __m512i b0 = _mm512_loadu_si512((const void*)b), w;
            int32_t wv;
#define QC_VNNI_ROW(R)                                    \
  memcpy(&wv, a + (ptrdiff_t)(R) * K4 + k, 4);            \
  w = _mm512_set1_epi32(wv);                              \
  c##R##0 = _mm512_dpbusd_epi32(c##R##0, b0, w);
            QC_VNNI_ROW(0) QC_VNNI_ROW(1) QC_VNNI_ROW(2) QC_VNNI_ROW(3)
            QC_VNNI_ROW(4) QC_VNNI_ROW(5) QC_VNNI_ROW(6) QC_VNNI_ROW(7)
#undef QC_VNNI_ROW
          }
        }
        _mm512_storeu_si512((void*)tile[0], c00); _mm512_storeu_si512((void*)(tile[0] + 16), c01);
        _mm512_storeu_si512((void*)tile[1], c10); _mm512_storeu_si512((void*)(tile[1] + 16), c11);
        _mm512_storeu_si512((void*)tile[2], c20); _mm512_storeu_si512((void*)(tile[2] + 16), c21);
        _mm512_storeu_si512((void*)tile[3], c30); _mm512_storeu_si512((void*)(tile[3] + 16), c31);
        _mm512_storeu_si512((void*)tile[4], c40); _mm512_storeu_si512((void*)(tile[4] + 16), c41);
        _mm512_storeu_si512((void*)tile[5], c50); _mm512_storeu_si512((void*)(tile[5] + 16), c51);
        _mm512_storeu_si512((void*)tile[6], c60); _mm512_storeu_si512((void*)(tile[6] + 16), c61);
        _mm512_storeu_si512((void*)tile[7], c70); _mm512_storeu_si512((void*)(tile[7] + 16), c71);
        for (r = 0; r < rows; r++)
          qc_rq_row_512(rq, tile[r], cols, oc0 + r, y, ydt, ybase + (ptrdiff_t)(oc0 + r) * c->P + p0);
      }
  }
}

/* the same with AVX2: u8 words split into (k0, k2) and (k1, k3) int16 pairs for vpmaddwd;
 * 4 rows x 16 pixels; wpair: scratch for a row block's weights as int16 pairs */
QC_T_AVX2 static void qc_gemm_avx2(const int8_t* A, const uint8_t* B, const int32_t* bias, const qc_x86_conv* c,
                                   const qc_rq* rq, void* y, int ydt, ptrdiff_t ybase, int32_t* wpair) {
  ptrdiff_t pb, p0;
  int oc0, k, r;
  int32_t tile[4][16];
  const __m256i lo8 = _mm256_set1_epi32(0x00FF00FF);
  for (oc0 = 0; oc0 < c->OC; oc0 += 4) {
    int rows = c->OC - oc0 < 4 ? c->OC - oc0 : 4;
    for (r = 0; r < 4; r++)
      for (k = 0; k < c->K4; k += 4) {
        const int8_t* a = A + (ptrdiff_t)(oc0 + r) * c->K4 + k;
        int32_t* wp = wpair + ((ptrdiff_t)(k / 4) * 4 + r) * 2;
        wp[0] = (int32_t)((uint32_t)(uint16_t)(int16_t)a[0] | ((uint32_t)(uint16_t)(int16_t)a[2] << 16));
        wp[1] = (int32_t)((uint32_t)(uint16_t)(int16_t)a[1] | ((uint32_t)(uint16_t)(int16_t)a[3] << 16));
      }
    for (pb = 0; pb < c->P; pb += 512) {
      ptrdiff_t pe = pb + 512 < c->P ? pb + 512 : c->P;
      for (p0 = pb; p0 < pe; p0 += 16) {
        const uint8_t* b = B + p0 * 4;
        const int32_t* wp = wpair;
        int cols = c->P - p0 < 16 ? (int)(c->P - p0) : 16;
        __m256i c00 = _mm256_set1_epi32(bias[oc0]), c01 = c00, c10 = _mm256_set1_epi32(bias[oc0 + 1]), c11 = c10;
        __m256i c20 = _mm256_set1_epi32(bias[oc0 + 2]), c21 = c20, c30 = _mm256_set1_epi32(bias[oc0 + 3]), c31 = c30;
        for (k = 0; k < c->K4; k += 4, b += c->Pp * 4, wp += 8) {
          __m256i x0 = _mm256_loadu_si256((const __m256i*)b), x1 = _mm256_loadu_si256((const __m256i*)(b + 32));
          __m256i e0 = _mm256_and_si256(x0, lo8), o0 = _mm256_srli_epi16(x0, 8);
          __m256i e1 = _mm256_and_si256(x1, lo8), o1 = _mm256_srli_epi16(x1, 8), we, wo;
#define QC_AVX2_ROW(R)                                                                              \
  we = _mm256_set1_epi32(wp[2 * (R)]);                                                               \
  wo = _mm256_set1_epi32(wp[2 * (R) + 1]);                                                           \
  c##R##0 = _mm256_add_epi32(c##R##0, _mm256_add_epi32(_mm256_madd_epi16(e0, we), _mm256_madd_epi16(o0, wo))); \
  c##R##1 = _mm256_add_epi32(c##R##1, _mm256_add_epi32(_mm256_madd_epi16(e1, we), _mm256_madd_epi16(o1, wo)));
          QC_AVX2_ROW(0) QC_AVX2_ROW(1) QC_AVX2_ROW(2) QC_AVX2_ROW(3)
#undef QC_AVX2_ROW
        }
        _mm256_storeu_si256((__m256i*)tile[0], c00); _mm256_storeu_si256((__m256i*)(tile[0] + 8), c01);
        _mm256_storeu_si256((__m256i*)tile[1], c10); _mm256_storeu_si256((__m256i*)(tile[1] + 8), c11);
        _mm256_storeu_si256((__m256i*)tile[2], c20); _mm256_storeu_si256((__m256i*)(tile[2] + 8), c21);
        _mm256_storeu_si256((__m256i*)tile[3], c30); _mm256_storeu_si256((__m256i*)(tile[3] + 8), c31);
        for (r = 0; r < rows; r++)
          qc_rq_row_avx2(rq, tile[r], cols, oc0 + r, y, ydt, ybase + (ptrdiff_t)(oc0 + r) * c->P + p0);
      }
    }
  }
}

/* Dense NCHW conv (group 1) from an int8/uint8 input: returns 0 when no x86 path applies
 * (the caller runs the portable kernel). scratch: qc_x86_conv_scratch() bytes. */
static inline int qc_conv_nchw_x86(const void* x, int xdt, int32_t zx, const int8_t* A, const int32_t* bias,
                                   const qc_x86_conv* c, const qc_rq* rq, void* y, int ydt, uint8_t* scratch) {
  int level = qc_x86_level(), n;
  int Hp = c->H + c->pt + c->pb, Wp = c->W + c->pl + c->pr;
  ptrdiff_t xpad_bytes = c->direct ? 0 : ((ptrdiff_t)c->N * c->C * Hp * Wp + 63) / 64 * 64;
  ptrdiff_t zrow_bytes = ((ptrdiff_t)Wp + 64 + 63) / 64 * 64;
  ptrdiff_t b_bytes = ((ptrdiff_t)c->K4 * c->Pp + 63) / 64 * 64;
  uint8_t *xpad = scratch, *zrow = scratch + xpad_bytes, *B = zrow + zrow_bytes;
  int32_t* wpair = (int32_t*)(B + b_bytes);
  uint8_t flip = xdt == QC_I8 ? 0x80 : 0;
  if (level == 0 || (ydt == QC_F32 && rq->mode != QC_RQ_FLOAT_OUT)) return 0;
  memset(zrow, 0, (size_t)zrow_bytes);
  for (n = 0; n < c->N; n++) {
    if (!c->direct && n == 0) qc_pad_u8((const uint8_t*)x, c->N * c->C, c->H, c->W, c->pt, c->pl, c->pb, c->pr,
                                        (uint8_t)zx, xpad);
    qc_pack_b((const uint8_t*)x, xpad, c, n, flip, zrow, B);
    if (level >= 2) qc_gemm_vnni(A, B, bias, c, rq, y, ydt, (ptrdiff_t)n * c->OC * c->P);
    else qc_gemm_avx2(A, B, bias, c, rq, y, ydt, (ptrdiff_t)n * c->OC * c->P, wpair);
  }
  return 1;
}

/* ------------------------------------------------------------------ depthwise NCHW */

typedef struct {
  int N, C, H, W, FH, FW, sh, sw, dh, dw, pt, pl, Ho, Wo;
  int Hq, Wq;         /* one stride phase of the padded plane: Hq x Wq */
  ptrdiff_t NQ, NQp;  /* Ho * Wq positions computed (the columns past Wo are discarded), padded */
  ptrdiff_t phase;    /* elements of one phase plane */
} qc_x86_dw;

/* the sh*sw stride phases of channel ch's padded plane as int16 (padding: zx), then zeros */
static inline void qc_dw_phases(const void* x, int xdt, int32_t zx, const qc_x86_dw* d, ptrdiff_t ch, int16_t* ph,
                                ptrdiff_t total) {
  int a, b, u, v;
  ptrdiff_t i;
  const uint8_t* xu = (const uint8_t*)x + ch * d->H * d->W;
  const int8_t* xs = (const int8_t*)x + ch * d->H * d->W;
  for (a = 0; a < d->sh; a++)
    for (b = 0; b < d->sw; b++) {
      int16_t* p = ph + (ptrdiff_t)(a * d->sw + b) * d->phase;
      /* columns v with 0 <= v*sw + b - pl < W */
      int v0 = d->pl - b > 0 ? (d->pl - b + d->sw - 1) / d->sw : 0;
      int v1 = (d->W + d->pl - b + d->sw - 1) / d->sw;
      if (v1 > d->Wq) v1 = d->Wq;
      if (v0 > v1) v0 = v1;
      for (u = 0; u < d->Hq; u++) {
        int h = u * d->sh + a - d->pt, off;
        int16_t* row = p + (ptrdiff_t)u * d->Wq;
        if (h < 0 || h >= d->H) {
          for (v = 0; v < d->Wq; v++) row[v] = (int16_t)zx;
          continue;
        }
        for (v = 0; v < v0; v++) row[v] = (int16_t)zx;
        off = h * d->W + b - d->pl;
        if (d->sw == 1) {
          if (xdt == QC_U8)
            for (v = v0; v < v1; v++) row[v] = xu[off + v];
          else
            for (v = v0; v < v1; v++) row[v] = xs[off + v];
        } else {
          for (v = v0; v < v1; v++) row[v] = (int16_t)(xdt == QC_U8 ? xu[off + v * d->sw] : xs[off + v * d->sw]);
        }
        for (v = v1; v < d->Wq; v++) row[v] = (int16_t)zx;
      }
    }
  for (i = (ptrdiff_t)d->sh * d->sw * d->phase; i < total; i++) ph[i] = 0;
}

#define QC_DW_MAX_TAPS 64

/* the taps' offsets in the phase planes (two a pair; an odd last tap pairs with itself,
 * weight 0) and the int16 weight pairs */
static inline int qc_dw_taps(const qc_x86_dw* d, const int8_t* wk, ptrdiff_t* off, int32_t* wpair) {
  int taps = d->FH * d->FW, t;
  for (t = 0; t < taps + (taps & 1); t++) {
    int tt = t < taps ? t : taps - 1;
    int ri = (tt / d->FW) * d->dh, cj = (tt % d->FW) * d->dw;
    off[t] = (ptrdiff_t)((ri % d->sh) * d->sw + cj % d->sw) * d->phase + (ptrdiff_t)(ri / d->sh) * d->Wq + cj / d->sw;
  }
  for (t = 0; t < taps; t += 2) {
    int32_t w1 = t + 1 < taps ? wk[t + 1] : 0;
    wpair[t / 2] = (int32_t)((uint32_t)(uint16_t)(int16_t)wk[t] | ((uint32_t)(uint16_t)(int16_t)w1 << 16));
  }
  return (taps + 1) / 2;
}

QC_T_AVX2 static void qc_dw_channel_avx2(const int16_t* ph, const ptrdiff_t* off, const int32_t* wpair, int pairs,
                                         int32_t bias, ptrdiff_t NQ, int32_t* acc) {
  int t;
  ptrdiff_t q;
  for (q = 0; q < NQ; q += 16) {
    __m256i a0 = _mm256_set1_epi32(bias), a1 = a0;
    for (t = 0; t < pairs; t++) {
      __m256i w = _mm256_set1_epi32(wpair[t]);
      __m256i u = _mm256_loadu_si256((const __m256i*)(ph + off[2 * t] + q));
      __m256i v = _mm256_loadu_si256((const __m256i*)(ph + off[2 * t + 1] + q));
      a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_unpacklo_epi16(u, v), w));
      a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_unpackhi_epi16(u, v), w));
    }
    /* a0 holds positions 0-3, 8-11; a1 4-7, 12-15 */
    _mm256_storeu_si256((__m256i*)(acc + q), _mm256_permute2x128_si256(a0, a1, 0x20));
    _mm256_storeu_si256((__m256i*)(acc + q + 8), _mm256_permute2x128_si256(a0, a1, 0x31));
  }
}

QC_T_VNNI static void qc_dw_channel_512(const int16_t* ph, const ptrdiff_t* off, const int32_t* wpair, int pairs,
                                        int32_t bias, ptrdiff_t NQ, int32_t* acc) {
  int t;
  ptrdiff_t q;
  const __m512i ilo = _mm512_set_epi32(23, 22, 21, 20, 7, 6, 5, 4, 19, 18, 17, 16, 3, 2, 1, 0);
  const __m512i ihi = _mm512_set_epi32(31, 30, 29, 28, 15, 14, 13, 12, 27, 26, 25, 24, 11, 10, 9, 8);
  for (q = 0; q < NQ; q += 32) {
    __m512i a0 = _mm512_set1_epi32(bias), a1 = a0;
    for (t = 0; t < pairs; t++) {
      __m512i w = _mm512_set1_epi32(wpair[t]);
      __m512i u = _mm512_loadu_si512((const void*)(ph + off[2 * t] + q));
      __m512i v = _mm512_loadu_si512((const void*)(ph + off[2 * t + 1] + q));
      a0 = _mm512_add_epi32(a0, _mm512_madd_epi16(_mm512_unpacklo_epi16(u, v), w));
      a1 = _mm512_add_epi32(a1, _mm512_madd_epi16(_mm512_unpackhi_epi16(u, v), w));
    }
    /* lane l of a0 holds positions 8l..8l+3, of a1 8l+4..8l+7 */
    _mm512_storeu_si512((void*)(acc + q), _mm512_permutex2var_epi32(a0, ilo, a1));
    _mm512_storeu_si512((void*)(acc + q + 16), _mm512_permutex2var_epi32(a0, ihi, a1));
  }
}

/* Depthwise NCHW conv (weight [C, 1, FH, FW]); 0 when no x86 path applies */
static inline int qc_conv_dw_x86(const void* x, int xdt, int32_t zx, const int8_t* w, const int32_t* bias,
                                 const qc_x86_dw* d, const qc_rq* rq, void* y, int ydt, uint8_t* scratch) {
  int level = qc_x86_level(), n, ch, oh;
  ptrdiff_t total = (ptrdiff_t)d->sh * d->sw * d->phase + d->NQp + 64;
  int16_t* ph = (int16_t*)scratch;
  int32_t* acc = (int32_t*)(scratch + (total * 2 + 63) / 64 * 64);
  ptrdiff_t off[QC_DW_MAX_TAPS + 1];
  int32_t wpair[QC_DW_MAX_TAPS / 2];
  if (level == 0 || (ydt == QC_F32 && rq->mode != QC_RQ_FLOAT_OUT) || d->FH * d->FW > QC_DW_MAX_TAPS) return 0;
  for (n = 0; n < d->N; n++)
    for (ch = 0; ch < d->C; ch++) {
      ptrdiff_t plane = (ptrdiff_t)n * d->C + ch;
      int pairs = qc_dw_taps(d, w + (ptrdiff_t)ch * d->FH * d->FW, off, wpair);
      qc_dw_phases(x, xdt, zx, d, plane, ph, total);
      if (level >= 2) qc_dw_channel_512(ph, off, wpair, pairs, bias[ch], d->NQ, acc);
      else qc_dw_channel_avx2(ph, off, wpair, pairs, bias[ch], d->NQ, acc);
      for (oh = 0; oh < d->Ho; oh++) {
        ptrdiff_t yo = (plane * d->Ho + oh) * d->Wo;
        if (level >= 2) qc_rq_row_512(rq, acc + (ptrdiff_t)oh * d->Wq, d->Wo, ch, y, ydt, yo);
        else qc_rq_row_avx2(rq, acc + (ptrdiff_t)oh * d->Wq, d->Wo, ch, y, ydt, yo);
      }
    }
  return 1;
}

/* ------------------------------------------------------------------ elementwise rows */

/* y[i] = clamp(rint(((a[i] - za) * fa + (b[i*bs] - zb) * fb)) + zy) over uint8 (bs 0 or 1):
 * the float-scale Add of qc_add, 8 at a time */
QC_T_AVX2 static ptrdiff_t qc_add_row_avx2(const uint8_t* a, const uint8_t* b, int bs, ptrdiff_t n, const qc_add_p* p,
                                           uint8_t* y) {
  ptrdiff_t i = 0;
  __m256 za = _mm256_set1_ps((float)p->za), zb = _mm256_set1_ps((float)p->zb), fa = _mm256_set1_ps(p->fa);
  __m256 fb = _mm256_set1_ps(p->fb), zy = _mm256_set1_ps((float)p->out.zp);
  __m256 lo = _mm256_set1_ps((float)p->out.qmin), hi = _mm256_set1_ps((float)p->out.qmax);
  __m256 bv = _mm256_mul_ps(_mm256_sub_ps(_mm256_set1_ps((float)b[0]), zb), fb);
  for (; i + 8 <= n; i += 8) {
    __m256 va = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(a + i))));
    __m256 v, vb = bv;
    __m256i q;
    __m128i w;
    va = _mm256_mul_ps(_mm256_sub_ps(va, za), fa);
    if (bs) {
      vb = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(b + i))));
      vb = _mm256_mul_ps(_mm256_sub_ps(vb, zb), fb);
    }
    v = _mm256_add_ps(_mm256_round_ps(_mm256_add_ps(va, vb), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), zy);
    q = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
    w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    _mm_storel_epi64((__m128i*)(y + i), _mm_packus_epi16(w, w));
  }
  return i;
}

/* the float-scale Mul of qc_mul over uint8 (bs 0 or 1), 8 at a time */
QC_T_AVX2 static ptrdiff_t qc_mul_row_avx2(const uint8_t* a, int32_t za, const uint8_t* b, int bs, int32_t zb,
                                           ptrdiff_t n, const qc_rq* r, uint8_t* y) {
  ptrdiff_t i = 0;
  __m256i zav = _mm256_set1_epi32(za), zbv = _mm256_set1_epi32(zb), bv = _mm256_set1_epi32((int32_t)b[0] - zb);
  __m256 s = _mm256_set1_ps(r->scale[0]), bias = _mm256_set1_ps(r->bias ? r->bias[0] : 0.0f);
  __m256 zy = _mm256_set1_ps((float)r->zp), lo = _mm256_set1_ps((float)r->qmin), hi = _mm256_set1_ps((float)r->qmax);
  for (; i + 8 <= n; i += 8) {
    __m256i xa = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(a + i))), zav), xb = bv, q;
    __m256 v;
    __m128i w;
    if (bs) xb = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(b + i))), zbv);
    v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_mullo_epi32(xa, xb)), s);
    if (r->bias) v = _mm256_add_ps(v, bias);
    v = _mm256_add_ps(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), zy);
    q = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
    w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    _mm_storel_epi64((__m128i*)(y + i), _mm_packus_epi16(w, w));
  }
  return i;
}

#endif /* QC_X86_H */
