/* qc_kernels.h: portable C99 kernels of qcompiler's generated model libraries.
 *
 * Every kernel reproduces the integer reference interpreter
 * (qcompiler/lowering/interpreter.py) bit for bit: int32 accumulation, the program's
 * requantization (Q31 fixed point or float32 scale) and rounding, and its clamps.
 * QC_ROUNDING selects the program's rounding before this file is included:
 *   0 half_away_from_zero (gemmlowp double rounding), 1 single_rounding, 2 half_to_even.
 * QC_ISA_<NAME> (from the target file's `isa` statement) allows the intrinsic paths:
 * NEON / DOTPROD on arm64 (when the compiler targets them), AVX2 / AVX512_VNNI on x86
 * (qc_x86.h, chosen at run time).
 * Compile with -ffp-contract=off (and never -ffast-math): the float32 epilogues must not
 * be fused into FMAs to stay exact.
 *
 * All functions are static inline so that a model compiles only what it calls.
 */
#ifndef QC_KERNELS_H
#define QC_KERNELS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifndef QC_ROUNDING
#error "define QC_ROUNDING (0, 1 or 2) before including qc_kernels.h"
#endif

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* arm64: NEON (vmlal) for NCHW44 dense convs, SDOT (vdotq_s32) for NCHW44_DOT when the
 * compiler targets it (-march=armv8.2-a+dotprod); both give the portable code's integers */
#if defined(__ARM_NEON) && defined(__aarch64__) && defined(QC_ISA_NEON)
#include <arm_neon.h>
#define QC_NEON 1
#endif

/* x86: AVX2 / AVX-512 VNNI conv kernels (qc_x86.h) when the target lists them */
#if defined(__x86_64__) && defined(__GNUC__) && (defined(QC_ISA_AVX2) || defined(QC_ISA_AVX512_VNNI))
#define QC_X86 1
#endif

/* the requantization below relies on arithmetic right shifts of negative integers */
typedef char qc_arithmetic_shift_check[((-8) >> 1) == -4 ? 1 : -1];

enum { QC_I8 = 0, QC_U8 = 1, QC_F32 = 2 };

static inline int32_t qc_ld(const void* p, int dt, ptrdiff_t i) {
  return dt == QC_U8 ? (int32_t)((const uint8_t*)p)[i] : (int32_t)((const int8_t*)p)[i];
}

static inline void qc_st(void* p, int dt, ptrdiff_t i, int32_t v) {
  if (dt == QC_U8) ((uint8_t*)p)[i] = (uint8_t)v;
  else ((int8_t*)p)[i] = (int8_t)v;
}

/* ------------------------------------------------------------------ requantization */

/* round(acc * q * 2^(shift - 31)) by the program's rounding (fixed_point.requantize) */
static inline int64_t qc_mulshift(int32_t acc, int32_t q, int32_t shift) {
#if QC_ROUNDING == 0
  int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
  int64_t a = (int64_t)acc * ((int64_t)1 << left);
  int64_t high, mask, rem, thr;
  if (a > INT32_MAX) a = INT32_MAX;
  if (a < INT32_MIN) a = INT32_MIN;
  high = (a * q + ((int64_t)1 << 30)) >> 31; /* rounding doubling high multiply (q >= 0) */
  mask = ((int64_t)1 << right) - 1;
  rem = high & mask;
  thr = (mask >> 1) + (high < 0);
  return (high >> right) + (rem > thr); /* rounding divide by 2^right, ties away from 0 */
#else
  int64_t prod = (int64_t)acc * q;
  int t = 31 - shift;
  if (t == 0) return prod;
#if QC_ROUNDING == 1
  return (prod + ((int64_t)1 << (t - 1))) >> t; /* one rounding, ties up */
#else
  {
    int64_t fl = prod >> t;
    int64_t rem = (int64_t)((uint64_t)prod & ((((uint64_t)1) << t) - 1));
    int64_t half = (int64_t)1 << (t - 1);
    return fl + (rem > half || (rem == half && (fl & 1))); /* one rounding, ties to even */
  }
#endif
#endif
}

/* float32 rounding of the float-scale epilogue (interpreter.round_float) */
static inline float qc_roundf(float v) {
#if QC_ROUNDING == 2
  return rintf(v);
#elif QC_ROUNDING == 1
  return floorf(v + 0.5f);
#else
  return copysignf(floorf(fabsf(v) + 0.5f), v);
#endif
}

enum { QC_RQ_FIXED = 0, QC_RQ_FLOAT = 1, QC_RQ_FLOAT_OUT = 2 };

/* The requantization of one kernel: per-channel (or per-position) constants, or one entry
 * for all (per_channel 0). bias: the float32 bias in output steps (QC_RQ_FLOAT) or the
 * float bias of a float-out kernel (QC_RQ_FLOAT_OUT); NULL when there is none. */
typedef struct {
  int mode;
  const int32_t* mult;
  const int32_t* shift;
  const float* scale;
  const float* bias;
  int per_channel, bias_per_channel;
  int32_t zp, qmin, qmax;
} qc_rq;

static inline int32_t qc_rq_int(const qc_rq* r, int32_t acc, ptrdiff_t c) {
  ptrdiff_t i = r->per_channel ? c : 0;
  if (r->mode == QC_RQ_FIXED) {
    int64_t v = qc_mulshift(acc, r->mult[i], r->shift[i]) + r->zp;
    if (v < r->qmin) v = r->qmin;
    if (v > r->qmax) v = r->qmax;
    return (int32_t)v;
  } else {
    float v = (float)acc * r->scale[i];
    float o;
    if (r->bias) v = v + r->bias[r->bias_per_channel ? c : 0];
    o = qc_roundf(v) + (float)r->zp;
    if (o < (float)r->qmin) o = (float)r->qmin;
    if (o > (float)r->qmax) o = (float)r->qmax;
    return (int32_t)o;
  }
}

/* write acc of channel c to element i of y (an integer tensor, or float for float-out) */
static inline void qc_rq_store(const qc_rq* r, int32_t acc, ptrdiff_t c, void* y, int ydt, ptrdiff_t i) {
  if (r->mode == QC_RQ_FLOAT_OUT) {
    float v = (float)acc * r->scale[r->per_channel ? c : 0];
    if (r->bias) v = v + r->bias[r->bias_per_channel ? c : 0];
    ((float*)y)[i] = v;
  } else {
    qc_st(y, ydt, i, qc_rq_int(r, acc, c));
  }
}

/* ------------------------------------------------------------------ quantize / dequantize */

static inline void qc_quantize(const float* x, void* y, ptrdiff_t n, float scale, int32_t zp, int dt) {
  float lo = dt == QC_U8 ? 0.0f : -128.0f, hi = dt == QC_U8 ? 255.0f : 127.0f;
  ptrdiff_t i;
  for (i = 0; i < n; i++) {
    float v = x[i] / scale;
    if (v != v) v = 0.0f; /* nan_to_num */
    v = rintf(v) + (float)zp;
    if (v < lo) v = lo;
    if (v > hi) v = hi;
    qc_st(y, dt, i, (int32_t)v);
  }
}

static inline void qc_dequantize(const void* x, int dt, float* y, ptrdiff_t n, float scale, int32_t zp) {
  ptrdiff_t i;
  for (i = 0; i < n; i++) y[i] = (float)(qc_ld(x, dt, i) - zp) * scale;
}

/* ------------------------------------------------------------------ layouts */

enum { QC_NCHW = 0, QC_NHWC = 1, QC_BLOCKED = 2 };

/* offset of logical element (n, c, h, w) in a tensor of layout lay (block k; cp: the
 * physical channel count, padded to the block) */
static inline ptrdiff_t qc_off(int lay, int k, int cp, int h_, int w_, int n, int c, int h, int w) {
  if (lay == QC_NCHW) return (((ptrdiff_t)n * cp + c) * h_ + h) * w_ + w;
  if (lay == QC_NHWC) return (((ptrdiff_t)n * h_ + h) * w_ + w) * cp + c;
  return ((((ptrdiff_t)n * (cp / k) + c / k) * h_ + h) * w_ + w) * k + c % k;
}

/* LayoutConvert: copy the real channels, fill the destination's padded lanes */
static inline void qc_layout_convert(const void* x, void* y, int esize, int N, int H, int W, int channels,
                                     int slay, int sk, int scp, int dlay, int dk, int dcp,
                                     int32_t ipad, float fpad) {
  int n, c, h, w;
  for (n = 0; n < N; n++)
    for (c = 0; c < dcp; c++)
      for (h = 0; h < H; h++)
        for (w = 0; w < W; w++) {
          ptrdiff_t d = qc_off(dlay, dk, dcp, H, W, n, c, h, w);
          if (c < channels) {
            ptrdiff_t s = qc_off(slay, sk, scp, H, W, n, c, h, w);
            if (esize == 4) ((float*)y)[d] = ((const float*)x)[s];
            else ((uint8_t*)y)[d] = ((const uint8_t*)x)[s];
          } else if (esize == 4) {
            ((float*)y)[d] = fpad;
          } else {
            ((int8_t*)y)[d] = (int8_t)ipad; /* the zero point, stored in the tensor's type */
          }
        }
}

/* ------------------------------------------------------------------ convolution */

/* Spatially padded int16 copy of an integer activation: nplanes planes of H x W pixels,
 * `lanes` contiguous values per pixel (1 for NCHW, k blocked, C for NHWC); padding reads
 * the input zero point. */
static inline void qc_pad_i16(const void* x, int dt, int nplanes, int H, int W, int lanes, int pt, int pl,
                              int pb, int pr, int32_t zx, int16_t* xp) {
  int Hp = H + pt + pb, Wp = W + pl + pr, p, h, i;
  ptrdiff_t rowp = (ptrdiff_t)Wp * lanes, row = (ptrdiff_t)W * lanes;
  for (p = 0; p < nplanes; p++) {
    int16_t* dst = xp + (ptrdiff_t)p * Hp * rowp;
    ptrdiff_t src = (ptrdiff_t)p * H * row;
    for (h = 0; h < Hp; h++) {
      int16_t* d = dst + h * rowp;
      if (h < pt || h >= pt + H) {
        for (i = 0; i < rowp; i++) d[i] = (int16_t)zx;
        continue;
      }
      for (i = 0; i < pl * lanes; i++) d[i] = (int16_t)zx;
      if (dt == QC_U8) {
        const uint8_t* s = (const uint8_t*)x + src + (ptrdiff_t)(h - pt) * row;
        for (i = 0; i < row; i++) d[pl * lanes + i] = s[i];
      } else {
        const int8_t* s = (const int8_t*)x + src + (ptrdiff_t)(h - pt) * row;
        for (i = 0; i < row; i++) d[pl * lanes + i] = s[i];
      }
      for (i = (pl + W) * lanes; i < rowp; i++) d[i] = (int16_t)zx;
    }
  }
}

typedef struct {
  int N, C, Hp, Wp;           /* padded input (C: physical channels, padded to the block) */
  int OC, G, FH, FW;          /* OC: output channels computed (bias length) */
  int sh, sw, dh, dw, Ho, Wo;
} qc_conv_geo;

/* acc[y*Wo + x] += wv * row(y, x) over the output plane, for one filter tap */
static inline void qc_plane_tap(int32_t* acc, const int16_t* plane, int32_t wv, const qc_conv_geo* g,
                                int i, int j, int lanes) {
  int oh, ow;
  for (oh = 0; oh < g->Ho; oh++) {
    const int16_t* row = plane + ((ptrdiff_t)(oh * g->sh + i * g->dh) * g->Wp + j * g->dw) * lanes;
    int32_t* a = acc + (ptrdiff_t)oh * g->Wo;
    if (g->sw == 1 && lanes == 1) {
      for (ow = 0; ow < g->Wo; ow++) a[ow] += wv * row[ow];
    } else {
      ptrdiff_t st = (ptrdiff_t)g->sw * lanes;
      for (ow = 0; ow < g->Wo; ow++) a[ow] += wv * row[ow * st];
    }
  }
}

/* 1x1, stride 1, unpadded NCHW dense conv as a register-tiled GEMM: 4 output channels x 16
 * pixels of int32 accumulators stay in registers across the input channels (the compiler
 * vectorises the 16-wide rows). Channel and pixel tails fall back to the same sums. */
static inline void qc_conv1x1_nchw(const int16_t* x, const int8_t* w, const int32_t* bias, int N, int C, int OC,
                                   ptrdiff_t P, const qc_rq* rq, void* y, int ydt) {
  int n, oc0, ic, r, j;
  ptrdiff_t p0;
  for (n = 0; n < N; n++) {
    const int16_t* xn = x + (ptrdiff_t)n * C * P;
    for (oc0 = 0; oc0 < OC; oc0 += 4) {
      int rows = OC - oc0 < 4 ? OC - oc0 : 4;
      for (p0 = 0; p0 < P; p0 += 16) {
        int cols = P - p0 < 16 ? (int)(P - p0) : 16;
        int32_t a[4][16];
        for (r = 0; r < 4; r++)
          for (j = 0; j < 16; j++) a[r][j] = r < rows ? bias[oc0 + r] : 0;
        if (rows == 4 && cols == 16) {
          const int8_t* w0 = w + (ptrdiff_t)oc0 * C;
          for (ic = 0; ic < C; ic++) {
            const int16_t* xr = xn + (ptrdiff_t)ic * P + p0;
            int32_t v0 = w0[ic], v1 = w0[C + ic], v2 = w0[2 * C + ic], v3 = w0[3 * C + ic];
            for (j = 0; j < 16; j++) {
              int32_t xv = xr[j];
              a[0][j] += v0 * xv;
              a[1][j] += v1 * xv;
              a[2][j] += v2 * xv;
              a[3][j] += v3 * xv;
            }
          }
        } else {
          for (ic = 0; ic < C; ic++) {
            const int16_t* xr = xn + (ptrdiff_t)ic * P + p0;
            for (r = 0; r < rows; r++) {
              int32_t v = w[(ptrdiff_t)(oc0 + r) * C + ic];
              for (j = 0; j < cols; j++) a[r][j] += v * xr[j];
            }
          }
        }
        for (r = 0; r < rows; r++)
          for (j = 0; j < cols; j++)
            qc_rq_store(rq, a[r][j], oc0 + r, y, ydt, ((ptrdiff_t)n * OC + oc0 + r) * P + p0 + j);
      }
    }
  }
}

/* NCHW: dense, grouped and depthwise; weight OIHW [OC, C/G, FH, FW]; output NCHW */
static inline void qc_conv_nchw(const int16_t* xp, const int8_t* w, const int32_t* bias, const qc_conv_geo* g,
                                int32_t* acc, const qc_rq* rq, void* y, int ydt) {
  int icg_n = g->C / g->G, ocg_n = g->OC / g->G, n, oc, icg, i, j;
  ptrdiff_t P = (ptrdiff_t)g->Ho * g->Wo, plane = (ptrdiff_t)g->Hp * g->Wp, p;
  int flat = g->FH == 1 && g->FW == 1 && g->sh == 1 && g->sw == 1 && g->Hp == g->Ho && g->Wp == g->Wo;
  if (flat && g->G == 1) {
    qc_conv1x1_nchw(xp, w, bias, g->N, g->C, g->OC, P, rq, y, ydt);
    return;
  }
  for (n = 0; n < g->N; n++)
    for (oc = 0; oc < g->OC; oc++) {
      int grp = oc / ocg_n;
      for (p = 0; p < P; p++) acc[p] = bias[oc];
      for (icg = 0; icg < icg_n; icg++) {
        const int16_t* xpl = xp + ((ptrdiff_t)n * g->C + grp * icg_n + icg) * plane;
        const int8_t* wk = w + ((ptrdiff_t)oc * icg_n + icg) * g->FH * g->FW;
        if (flat) {
          int32_t wv = wk[0];
          if (wv)
            for (p = 0; p < P; p++) acc[p] += wv * xpl[p];
          continue;
        }
        for (i = 0; i < g->FH; i++)
          for (j = 0; j < g->FW; j++)
            if (wk[i * g->FW + j]) qc_plane_tap(acc, xpl, wk[i * g->FW + j], g, i, j, 1);
      }
      for (p = 0; p < P; p++) qc_rq_store(rq, acc[p], oc, y, ydt, ((ptrdiff_t)n * g->OC + oc) * P + p);
    }
}

/* NHWC dense / grouped: weight [OC, FH, FW, C/G]; depthwise: weight [FH, FW, C]. */
static inline void qc_conv_nhwc(const int16_t* xp, const int8_t* w, const int32_t* bias, const qc_conv_geo* g,
                                int depthwise, const qc_rq* rq, void* y, int ydt) {
  int icg_n = depthwise ? 1 : g->C / g->G, ocg_n = g->OC / g->G, n, oh, ow, oc, i, j, c;
  for (n = 0; n < g->N; n++)
    for (oh = 0; oh < g->Ho; oh++)
      for (ow = 0; ow < g->Wo; ow++)
        for (oc = 0; oc < g->OC; oc++) {
          int32_t acc = bias[oc];
          int c0 = depthwise ? oc : (oc / ocg_n) * icg_n;
          for (i = 0; i < g->FH; i++)
            for (j = 0; j < g->FW; j++) {
              const int16_t* px = xp + (((ptrdiff_t)n * g->Hp + oh * g->sh + i * g->dh) * g->Wp +
                                        ow * g->sw + j * g->dw) * g->C + c0;
              if (depthwise) {
                acc += px[0] * w[((ptrdiff_t)i * g->FW + j) * g->C + oc];
              } else {
                const int8_t* wk = w + (((ptrdiff_t)oc * g->FH + i) * g->FW + j) * icg_n;
                for (c = 0; c < icg_n; c++) acc += px[c] * wk[c];
              }
            }
          qc_rq_store(rq, acc, oc, y, ydt, (((ptrdiff_t)n * g->Ho + oh) * g->Wo + ow) * g->OC + oc);
        }
}

/* one output pixel of a 4x4 weight block: a[o] += sum_i x[i] * w(i, o) */
static inline void qc_block44(int32_t* a, const int16_t* xv, const int8_t* wb, int dot, int x_s8) {
#if defined(QC_NEON)
#if defined(__ARM_FEATURE_DOTPROD) && defined(QC_ISA_DOTPROD)
  if (dot && x_s8) { /* w is (oc, ic): lane o of SDOT sums w[o][0..3] * x[0..3] */
    int16x4_t x16 = vld1_s16(xv);
    int8x8_t x8 = vmovn_s16(vcombine_s16(x16, x16));
    vst1q_s32(a, vdotq_s32(vld1q_s32(a), vld1q_s8(wb), vcombine_s8(x8, x8)));
    return;
  }
#endif
  if (!dot) { /* w is (ic, oc): row i times lane i of x, widened to int16 */
    int8x16_t w8 = vld1q_s8(wb);
    int16x8_t w01 = vmovl_s8(vget_low_s8(w8)), w23 = vmovl_s8(vget_high_s8(w8));
    int16x4_t x16 = vld1_s16(xv);
    int32x4_t acc = vld1q_s32(a);
    acc = vmlal_lane_s16(acc, vget_low_s16(w01), x16, 0);
    acc = vmlal_lane_s16(acc, vget_high_s16(w01), x16, 1);
    acc = vmlal_lane_s16(acc, vget_low_s16(w23), x16, 2);
    acc = vmlal_lane_s16(acc, vget_high_s16(w23), x16, 3);
    vst1q_s32(a, acc);
    return;
  }
#endif
  {
    int wi_s = dot ? 1 : 4, wo_s = dot ? 4 : 1, o, ii;
    (void)x_s8;
    for (o = 0; o < 4; o++) {
      int32_t s = 0;
      for (ii = 0; ii < 4; ii++) s += xv[ii] * wb[ii * wi_s + o * wo_s];
      a[o] += s;
    }
  }
}

/* NCHW44 / NCHW44_DOT dense and grouped: weight [G, OCg/4, ICg/4, FH, FW, 4, 4] with the
 * last two axes (ic, oc), or (oc, ic) when dot; output blocked by 4. acc: [Ho*Wo*4].
 * x_s8: the input is int8 (SDOT multiplies int8 by int8). */
static inline void qc_conv_nchw44(const int16_t* xp, const int8_t* w, const int32_t* bias, const qc_conv_geo* g,
                                  int dot, int x_s8, int32_t* acc, const qc_rq* rq, void* y, int ydt) {
  int icb_n = g->C / 4 / g->G, ocb_n = g->OC / 4 / g->G, ob_all = g->OC / 4, n, ob, ib, i, j, oh, ow, o;
  ptrdiff_t P = (ptrdiff_t)g->Ho * g->Wo, plane = (ptrdiff_t)g->Hp * g->Wp * 4, p;
  for (n = 0; n < g->N; n++)
    for (ob = 0; ob < ob_all; ob++) {
      int grp = ob / ocb_n;
      for (p = 0; p < P; p++)
        for (o = 0; o < 4; o++) acc[p * 4 + o] = bias[ob * 4 + o];
      for (ib = 0; ib < icb_n; ib++) {
        const int16_t* xpl = xp + ((ptrdiff_t)n * (g->C / 4) + grp * icb_n + ib) * plane;
        for (i = 0; i < g->FH; i++)
          for (j = 0; j < g->FW; j++) {
            const int8_t* wb = w + ((((ptrdiff_t)ob * icb_n + ib) * g->FH + i) * g->FW + j) * 16;
            for (oh = 0; oh < g->Ho; oh++) {
              const int16_t* row = xpl + ((ptrdiff_t)(oh * g->sh + i * g->dh) * g->Wp + j * g->dw) * 4;
              int32_t* a = acc + (ptrdiff_t)oh * g->Wo * 4;
              for (ow = 0; ow < g->Wo; ow++) qc_block44(a + ow * 4, row + (ptrdiff_t)ow * g->sw * 4, wb, dot, x_s8);
            }
          }
      }
      for (p = 0; p < P; p++)
        for (o = 0; o < 4; o++)
          qc_rq_store(rq, acc[p * 4 + o], ob * 4 + o, y, ydt, ((ptrdiff_t)n * ob_all + ob) * P * 4 + p * 4 + o);
    }
}

/* first layer of NCHW44 / _DOT: NCHW input with C = 1..3 channels, weight [OC/4, FH, FW, C, 4],
 * output blocked by 4 */
static inline void qc_conv_first44(const int16_t* xp, const int8_t* w, const int32_t* bias, const qc_conv_geo* g,
                                   int32_t* acc, const qc_rq* rq, void* y, int ydt) {
  int ob_all = g->OC / 4, n, ob, i, j, c, oh, ow, o;
  ptrdiff_t P = (ptrdiff_t)g->Ho * g->Wo, plane = (ptrdiff_t)g->Hp * g->Wp, p;
  for (n = 0; n < g->N; n++)
    for (ob = 0; ob < ob_all; ob++) {
      for (p = 0; p < P; p++)
        for (o = 0; o < 4; o++) acc[p * 4 + o] = bias[ob * 4 + o];
      for (i = 0; i < g->FH; i++)
        for (j = 0; j < g->FW; j++)
          for (c = 0; c < g->C; c++) {
            const int8_t* wv = w + ((((ptrdiff_t)ob * g->FH + i) * g->FW + j) * g->C + c) * 4;
            const int16_t* xpl = xp + ((ptrdiff_t)n * g->C + c) * plane;
            for (oh = 0; oh < g->Ho; oh++) {
              const int16_t* row = xpl + (ptrdiff_t)(oh * g->sh + i * g->dh) * g->Wp + j * g->dw;
              int32_t* a = acc + (ptrdiff_t)oh * g->Wo * 4;
              for (ow = 0; ow < g->Wo; ow++) {
                int32_t xv = row[ow * g->sw];
                for (o = 0; o < 4; o++) a[ow * 4 + o] += xv * wv[o];
              }
            }
          }
      for (p = 0; p < P; p++)
        for (o = 0; o < 4; o++)
          qc_rq_store(rq, acc[p * 4 + o], ob * 4 + o, y, ydt, ((ptrdiff_t)n * ob_all + ob) * P * 4 + p * 4 + o);
    }
}

/* blocked depthwise (any block k): weight [C/k, FH, FW, k]; acc: [Ho*Wo*k] */
static inline void qc_conv_dw_blocked(const int16_t* xp, const int8_t* w, const int32_t* bias, const qc_conv_geo* g,
                                      int k, int32_t* acc, const qc_rq* rq, void* y, int ydt) {
  int cb_n = g->OC / k, n, cb, i, j, oh, ow, l;
  ptrdiff_t P = (ptrdiff_t)g->Ho * g->Wo, plane = (ptrdiff_t)g->Hp * g->Wp * k, p;
  for (n = 0; n < g->N; n++)
    for (cb = 0; cb < cb_n; cb++) {
      const int16_t* xpl = xp + ((ptrdiff_t)n * cb_n + cb) * plane;
      for (p = 0; p < P; p++)
        for (l = 0; l < k; l++) acc[p * k + l] = bias[cb * k + l];
      for (i = 0; i < g->FH; i++)
        for (j = 0; j < g->FW; j++) {
          const int8_t* wv = w + (((ptrdiff_t)cb * g->FH + i) * g->FW + j) * k;
          for (oh = 0; oh < g->Ho; oh++) {
            const int16_t* row = xpl + ((ptrdiff_t)(oh * g->sh + i * g->dh) * g->Wp + j * g->dw) * k;
            int32_t* a = acc + (ptrdiff_t)oh * g->Wo * k;
            for (ow = 0; ow < g->Wo; ow++) {
              const int16_t* xv = row + (ptrdiff_t)ow * g->sw * k;
              for (l = 0; l < k; l++) a[ow * k + l] += xv[l] * wv[l];
            }
          }
        }
      for (p = 0; p < P; p++)
        for (l = 0; l < k; l++)
          qc_rq_store(rq, acc[p * k + l], cb * k + l, y, ydt, ((ptrdiff_t)n * cb_n + cb) * P * k + p * k + l);
    }
}

/* NC4HW4 / NC32HW32 dense and grouped (cuDNN-style vectorised filters): weight
 * [OC, ICg/k, FH, FW, k] (grouped: the groups' OC/G filters one after another); acc: [Ho*Wo] */
static inline void qc_conv_vec(const int16_t* xp, const int8_t* w, const int32_t* bias, const qc_conv_geo* g,
                               int k, int32_t* acc, const qc_rq* rq, void* y, int ydt) {
  int icb_n = g->C / k / g->G, ocg_n = g->OC / g->G, ob_all = g->OC / k, n, oc, ib, i, j, oh, ow, l;
  ptrdiff_t P = (ptrdiff_t)g->Ho * g->Wo, plane = (ptrdiff_t)g->Hp * g->Wp * k, p;
  for (n = 0; n < g->N; n++)
    for (oc = 0; oc < g->OC; oc++) {
      int grp = oc / ocg_n;
      for (p = 0; p < P; p++) acc[p] = bias[oc];
      for (ib = 0; ib < icb_n; ib++) {
        const int16_t* xpl = xp + ((ptrdiff_t)n * (g->C / k) + grp * icb_n + ib) * plane;
        for (i = 0; i < g->FH; i++)
          for (j = 0; j < g->FW; j++) {
            const int8_t* wv = w + ((((ptrdiff_t)oc * icb_n + ib) * g->FH + i) * g->FW + j) * k;
            for (oh = 0; oh < g->Ho; oh++) {
              const int16_t* row = xpl + ((ptrdiff_t)(oh * g->sh + i * g->dh) * g->Wp + j * g->dw) * k;
              int32_t* a = acc + (ptrdiff_t)oh * g->Wo;
              for (ow = 0; ow < g->Wo; ow++) {
                const int16_t* xv = row + (ptrdiff_t)ow * g->sw * k;
                int32_t s = 0;
                for (l = 0; l < k; l++) s += xv[l] * wv[l];
                a[ow] += s;
              }
            }
          }
      }
      for (p = 0; p < P; p++)
        qc_rq_store(rq, acc[p], oc, y, ydt, (((ptrdiff_t)n * ob_all + oc / k) * P + p) * k + oc % k);
    }
}

/* ------------------------------------------------------------------ gemm */

/* y[m, n] = rq(bias[n] + sum_k (a[m, k] - za) * w[n, k]) */
static inline void qc_gemm(const void* a, int adt, int32_t za, const int8_t* w, const int32_t* bias, int M, int N,
                           int K, const qc_rq* rq, void* y, int ydt) {
  int m, n, k;
  for (m = 0; m < M; m++)
    for (n = 0; n < N; n++) {
      int32_t acc = bias[n];
      const int8_t* wr = w + (ptrdiff_t)n * K;
      for (k = 0; k < K; k++) acc += (qc_ld(a, adt, (ptrdiff_t)m * K + k) - za) * wr[k];
      qc_rq_store(rq, acc, n, y, ydt, (ptrdiff_t)m * N + n);
    }
}

/* ------------------------------------------------------------------ elementwise */

/* broadcasting over up to 6 physical dims: output index io, input offsets ia, ib */
typedef struct {
  ptrdiff_t shape[6], sa[6], sb[6];
} qc_bcast;

#define QC_BCAST_LOOP(bc, ...)                                                                        \
  do {                                                                                                \
    ptrdiff_t i0, i1, i2, i3, i4, i5, io = 0;                                                         \
    for (i0 = 0; i0 < (bc)->shape[0]; i0++)                                                           \
      for (i1 = 0; i1 < (bc)->shape[1]; i1++)                                                         \
        for (i2 = 0; i2 < (bc)->shape[2]; i2++)                                                       \
          for (i3 = 0; i3 < (bc)->shape[3]; i3++)                                                     \
            for (i4 = 0; i4 < (bc)->shape[4]; i4++) {                                                 \
              ptrdiff_t ba = i0 * (bc)->sa[0] + i1 * (bc)->sa[1] + i2 * (bc)->sa[2] + i3 * (bc)->sa[3] + \
                             i4 * (bc)->sa[4];                                                        \
              ptrdiff_t bb = i0 * (bc)->sb[0] + i1 * (bc)->sb[1] + i2 * (bc)->sb[2] + i3 * (bc)->sb[3] + \
                             i4 * (bc)->sb[4];                                                        \
              for (i5 = 0; i5 < (bc)->shape[5]; i5++, io++) {                                         \
                ptrdiff_t ia = ba + i5 * (bc)->sa[5], ib = bb + i5 * (bc)->sb[5];                      \
                __VA_ARGS__;                                                                          \
              }                                                                                       \
            }                                                                                         \
  } while (0)

/* integer Add: fixed point (rescale both inputs << left_shift to a common scale, add,
 * requantize) or float scale (one float32 expression, one rounding) */
typedef struct {
  int32_t za, zb, ls;
  int32_t ma, sa, mb, sb; /* fixed point: input multipliers */
  float fa, fb;           /* float scale: s_a / s_y, s_b / s_y */
  qc_rq out;              /* fixed point: the output multiplier; both: zp and clamp */
} qc_add_p;

#if defined(QC_X86)
#include "qc_x86.h"
#endif

/* the outer five dims of a broadcast, one innermost row at a time: row base offsets io,
 * ba, bb and the row's length shape[5] */
#define QC_BCAST_ROWS(bc, ...)                                                                        \
  do {                                                                                                \
    ptrdiff_t i0, i1, i2, i3, i4, io = 0;                                                             \
    for (i0 = 0; i0 < (bc)->shape[0]; i0++)                                                           \
      for (i1 = 0; i1 < (bc)->shape[1]; i1++)                                                         \
        for (i2 = 0; i2 < (bc)->shape[2]; i2++)                                                       \
          for (i3 = 0; i3 < (bc)->shape[3]; i3++)                                                     \
            for (i4 = 0; i4 < (bc)->shape[4]; i4++, io += (bc)->shape[5]) {                           \
              ptrdiff_t ba = i0 * (bc)->sa[0] + i1 * (bc)->sa[1] + i2 * (bc)->sa[2] + i3 * (bc)->sa[3] + \
                             i4 * (bc)->sa[4];                                                        \
              ptrdiff_t bb = i0 * (bc)->sb[0] + i1 * (bc)->sb[1] + i2 * (bc)->sb[2] + i3 * (bc)->sb[3] + \
                             i4 * (bc)->sb[4];                                                        \
              __VA_ARGS__;                                                                            \
            }                                                                                         \
  } while (0)

/* uint8 operands and output, a contiguous, b contiguous or one value per row, float scale
 * with ties to even: the rows the x86 paths take */
static inline int qc_rows_u8(int adt, int bdt, int ydt, const qc_bcast* bc) {
  return adt == QC_U8 && bdt == QC_U8 && ydt == QC_U8 && bc->sa[5] == 1 && (bc->sb[5] == 0 || bc->sb[5] == 1) &&
         QC_ROUNDING == 2;
}

static inline void qc_add(const void* a, int adt, const void* b, int bdt, const qc_bcast* bc, const qc_add_p* p,
                          void* y, int ydt) {
  if (p->out.mode == QC_RQ_FIXED) {
    QC_BCAST_LOOP(bc, {
      int32_t da = qc_ld(a, adt, ia) - p->za, db = qc_ld(b, bdt, ib) - p->zb;
      int32_t ra = (int32_t)qc_mulshift(da * (1 << p->ls), p->ma, p->sa);
      int32_t rb = (int32_t)qc_mulshift(db * (1 << p->ls), p->mb, p->sb);
      qc_st(y, ydt, io, qc_rq_int(&p->out, ra + rb, 0));
    });
  } else {
    float lo = (float)p->out.qmin, hi = (float)p->out.qmax;
    int fast = 0;
#if defined(QC_X86)
    fast = qc_x86_level() >= 1 && qc_rows_u8(adt, bdt, ydt, bc);
#endif
    QC_BCAST_ROWS(bc, {
      ptrdiff_t i5 = 0, n5 = bc->shape[5];
#if defined(QC_X86)
      if (fast)
        i5 = qc_add_row_avx2((const uint8_t*)a + ba, (const uint8_t*)b + bb, (int)bc->sb[5], n5, p, (uint8_t*)y + io);
#endif
      for (; i5 < n5; i5++) {
        float va = ((float)qc_ld(a, adt, ba + i5 * bc->sa[5]) - (float)p->za) * p->fa;
        float vb = ((float)qc_ld(b, bdt, bb + i5 * bc->sb[5]) - (float)p->zb) * p->fb;
        float o = qc_roundf(va + vb) + (float)p->out.zp;
        if (o < lo) o = lo;
        if (o > hi) o = hi;
        qc_st(y, ydt, io + i5, (int32_t)o);
      }
    });
    (void)fast;
  }
}

static inline void qc_mul(const void* a, int adt, int32_t za, const void* b, int bdt, int32_t zb,
                          const qc_bcast* bc, const qc_rq* rq, void* y, int ydt) {
  int fast = 0;
#if defined(QC_X86)
  fast = qc_x86_level() >= 1 && rq->mode == QC_RQ_FLOAT && qc_rows_u8(adt, bdt, ydt, bc);
#endif
  QC_BCAST_ROWS(bc, {
    ptrdiff_t i5 = 0, n5 = bc->shape[5];
#if defined(QC_X86)
    if (fast)
      i5 = qc_mul_row_avx2((const uint8_t*)a + ba, za, (const uint8_t*)b + bb, (int)bc->sb[5], zb, n5, rq,
                           (uint8_t*)y + io);
#endif
    for (; i5 < n5; i5++) {
      int32_t acc = (qc_ld(a, adt, ba + i5 * bc->sa[5]) - za) * (qc_ld(b, bdt, bb + i5 * bc->sb[5]) - zb);
      qc_st(y, ydt, io + i5, qc_rq_int(rq, acc, 0));
    }
  });
  (void)fast;
}

static inline void qc_requant(const void* x, int xdt, int32_t zx, ptrdiff_t n, const qc_rq* rq, void* y, int ydt) {
  ptrdiff_t i;
  for (i = 0; i < n; i++) qc_st(y, ydt, i, qc_rq_int(rq, qc_ld(x, xdt, i) - zx, 0));
}

static inline void qc_lut(const void* x, int xdt, ptrdiff_t n, const void* table, void* y) {
  ptrdiff_t i;
  const uint8_t* t = (const uint8_t*)table;
  uint8_t* d = (uint8_t*)y;
  if (xdt == QC_U8) {
    const uint8_t* s = (const uint8_t*)x;
    for (i = 0; i < n; i++) d[i] = t[s[i]];
  } else {
    const int8_t* s = (const int8_t*)x;
    for (i = 0; i < n; i++) d[i] = t[s[i] + 128];
  }
}

/* ------------------------------------------------------------------ spatial ops */

/* A 4-D activation seen as `units` planes (n, channel) with strides: unit u starts at
 * (u / lanes) * ustride + (u % lanes); pixel (h, w) is at + h * hs + w * ws. NCHW: lanes 1;
 * blocked: lanes k; NHWC: lanes C. */
typedef struct {
  int units, lanes, H, W;
  ptrdiff_t ustride, hs, ws;
} qc_plane;

static inline ptrdiff_t qc_unit(const qc_plane* p, int u) {
  return (ptrdiff_t)(u / p->lanes) * p->ustride + u % p->lanes;
}

/* MaxPool: padding and the ceil_mode overhang read the type's minimum, i.e. are skipped.
 * Separable: each window row's maximum over the columns, then the maximum of those, for up
 * to 256 output columns at a time. */
static inline void qc_maxpool(const void* x, int dt, const qc_plane* xi, void* y, const qc_plane* yo, int kh,
                              int kw, int sh, int sw, int dh, int dw, int pt, int pl) {
  int u, oh, ow0, ow, i, j, n;
  int32_t m[256];
  int32_t lo = dt == QC_U8 ? 0 : -128;
  for (u = 0; u < xi->units; u++) {
    ptrdiff_t bx = qc_unit(xi, u), by = qc_unit(yo, u);
    for (oh = 0; oh < yo->H; oh++)
      for (ow0 = 0; ow0 < yo->W; ow0 += 256) {
        n = yo->W - ow0 < 256 ? yo->W - ow0 : 256;
        for (ow = 0; ow < n; ow++) m[ow] = lo;
        for (i = 0; i < kh; i++) {
          int h = oh * sh + i * dh - pt;
          ptrdiff_t row = bx + h * xi->hs;
          if (h < 0 || h >= xi->H) continue;
          for (j = 0; j < kw; j++) {
            /* output columns whose tap j is inside the row: w = ow*sw + j*dw - pl in [0, W) */
            int first = 0, last = n, c0 = j * dw - pl;
            if (c0 < 0) first = (-c0 + sw - 1) / sw - ow0;
            if (xi->W - c0 <= 0) last = 0;
            else if ((xi->W - c0 + sw - 1) / sw - ow0 < last) last = (xi->W - c0 + sw - 1) / sw - ow0;
            if (first < 0) first = 0;
            if (dt == QC_U8) {
              const uint8_t* r = (const uint8_t*)x + row + (ptrdiff_t)(ow0 * sw + c0) * xi->ws;
              for (ow = first; ow < last; ow++) {
                int32_t v = r[(ptrdiff_t)ow * sw * xi->ws];
                m[ow] = v > m[ow] ? v : m[ow];
              }
            } else {
              const int8_t* r = (const int8_t*)x + row + (ptrdiff_t)(ow0 * sw + c0) * xi->ws;
              for (ow = first; ow < last; ow++) {
                int32_t v = r[(ptrdiff_t)ow * sw * xi->ws];
                m[ow] = v > m[ow] ? v : m[ow];
              }
            }
          }
        }
        for (ow = 0; ow < n; ow++) qc_st(y, dt, by + oh * yo->hs + (ptrdiff_t)(ow0 + ow) * yo->ws, m[ow]);
      }
  }
}

/* AveragePool: acc = sum(x - zx) over the window (padding reads zx); the requantization
 * holds one constant per output position (the window's size is in it) */
static inline void qc_avgpool(const void* x, int dt, int32_t zx, const qc_plane* xi, void* y, int ydt,
                              const qc_plane* yo, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl,
                              const qc_rq* rq) {
  int u, oh, ow, i, j;
  for (u = 0; u < xi->units; u++) {
    ptrdiff_t bx = qc_unit(xi, u), by = qc_unit(yo, u);
    for (oh = 0; oh < yo->H; oh++)
      for (ow = 0; ow < yo->W; ow++) {
        int32_t acc = 0;
        for (i = 0; i < kh; i++) {
          int h = oh * sh + i * dh - pt;
          if (h < 0 || h >= xi->H) continue;
          for (j = 0; j < kw; j++) {
            int w = ow * sw + j * dw - pl;
            if (w < 0 || w >= xi->W) continue;
            acc += qc_ld(x, dt, bx + h * xi->hs + w * xi->ws) - zx;
          }
        }
        qc_st(y, ydt, by + oh * yo->hs + ow * yo->ws, qc_rq_int(rq, acc, (ptrdiff_t)oh * yo->W + ow));
      }
  }
}

static inline void qc_global_avgpool(const void* x, int dt, int32_t zx, const qc_plane* xi, void* y, int ydt,
                                     const qc_plane* yo, const qc_rq* rq) {
  int u, h, w;
  for (u = 0; u < xi->units; u++) {
    ptrdiff_t bx = qc_unit(xi, u);
    int32_t acc = 0;
    for (h = 0; h < xi->H; h++)
      for (w = 0; w < xi->W; w++) acc += qc_ld(x, dt, bx + h * xi->hs + w * xi->ws) - zx;
    qc_st(y, ydt, qc_unit(yo, u), qc_rq_int(rq, acc, 0));
  }
}

/* nearest Resize: source row / column of every output row / column precomputed */
static inline void qc_resize_nearest(const void* x, void* y, int esize, const qc_plane* xi, const qc_plane* yo,
                                     const int32_t* hidx, const int32_t* widx) {
  int u, oh, ow;
  for (u = 0; u < xi->units; u++) {
    ptrdiff_t bx = qc_unit(xi, u), by = qc_unit(yo, u);
    for (oh = 0; oh < yo->H; oh++)
      for (ow = 0; ow < yo->W; ow++) {
        ptrdiff_t s = bx + hidx[oh] * xi->hs + widx[ow] * xi->ws, d = by + oh * yo->hs + ow * yo->ws;
        if (esize == 4) ((float*)y)[d] = ((const float*)x)[s];
        else ((uint8_t*)y)[d] = ((const uint8_t*)x)[s];
      }
  }
}

/* ------------------------------------------------------------------ data movement */

/* Concat of one input: `outer` rows of `chunk` bytes into rows of `row` bytes at `at` */
static inline void qc_concat_part(const void* x, void* y, ptrdiff_t outer, ptrdiff_t chunk, ptrdiff_t row,
                                  ptrdiff_t at) {
  ptrdiff_t o;
  for (o = 0; o < outer; o++) memcpy((uint8_t*)y + o * row + at, (const uint8_t*)x + o * chunk, (size_t)chunk);
}

/* y[i] = x[base + sum_d idx_d * stride_d] over a 6-D output shape (elements of esize bytes) */
static inline void qc_strided_copy(const void* x, void* y, int esize, const ptrdiff_t* shape,
                                   const ptrdiff_t* stride, ptrdiff_t base) {
  qc_bcast bc;
  int d;
  for (d = 0; d < 6; d++) {
    bc.shape[d] = shape[d];
    bc.sa[d] = stride[d];
    bc.sb[d] = 0;
  }
  if (esize == 4) {
    QC_BCAST_LOOP(&bc, { ((float*)y)[io] = ((const float*)x)[base + ia]; (void)ib; });
  } else if (esize == 8) {
    QC_BCAST_LOOP(&bc, { ((int64_t*)y)[io] = ((const int64_t*)x)[base + ia]; (void)ib; });
  } else {
    QC_BCAST_LOOP(&bc, { ((uint8_t*)y)[io] = ((const uint8_t*)x)[base + ia]; (void)ib; });
  }
}

/* y[i] = x[index[i]]: data movement that is not a strided view */
static inline void qc_gather(const void* x, void* y, int esize, const int32_t* index, ptrdiff_t n) {
  ptrdiff_t i;
  for (i = 0; i < n; i++) memcpy((uint8_t*)y + i * esize, (const uint8_t*)x + (ptrdiff_t)index[i] * esize, (size_t)esize);
}

/* ------------------------------------------------------------------ float islands */

enum {
  QC_F_RELU, QC_F_CLIP, QC_F_SIGMOID, QC_F_HARDSIGMOID, QC_F_HARDSWISH, QC_F_LEAKYRELU, QC_F_ELU, QC_F_TANH,
  QC_F_EXP, QC_F_LOG, QC_F_SQRT, QC_F_ABS, QC_F_NEG, QC_F_RECIPROCAL, QC_F_FLOOR, QC_F_CEIL, QC_F_ROUND,
  QC_F_ERF, QC_F_SOFTPLUS
};

static inline float qc_unary1(int op, float x, float a, float b) {
  switch (op) {
    case QC_F_RELU: return x > 0.0f ? x : 0.0f;
    case QC_F_CLIP: return x < a ? a : (x > b ? b : x);
    case QC_F_SIGMOID:
      if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
      else {
        float e = expf(x);
        return e / (1.0f + e);
      }
    case QC_F_HARDSIGMOID: {
      float v = a * x + b;
      return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
    }
    case QC_F_HARDSWISH: {
      float v = x * (1.0f / 6.0f) + 0.5f;
      v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
      return x * v;
    }
    case QC_F_LEAKYRELU: return x >= 0.0f ? x : x * a;
    case QC_F_ELU: return x >= 0.0f ? x : a * (expf(x) - 1.0f);
    case QC_F_TANH: return tanhf(x);
    case QC_F_EXP: return expf(x);
    case QC_F_LOG: return logf(x);
    case QC_F_SQRT: return sqrtf(x);
    case QC_F_ABS: return fabsf(x);
    case QC_F_NEG: return -x;
    case QC_F_RECIPROCAL: return 1.0f / x;
    case QC_F_FLOOR: return floorf(x);
    case QC_F_CEIL: return ceilf(x);
    case QC_F_ROUND: return rintf(x);
    case QC_F_ERF: return (float)erf((double)x);
    case QC_F_SOFTPLUS: return x > 0.0f ? x + log1pf(expf(-x)) : log1pf(expf(x));
    default: return x;
  }
}

static inline void qc_unary(int op, const float* x, float* y, ptrdiff_t n, float a, float b) {
  ptrdiff_t i;
  for (i = 0; i < n; i++) y[i] = qc_unary1(op, x[i], a, b);
}

enum { QC_F_ADD, QC_F_SUB, QC_F_MUL, QC_F_DIV, QC_F_MAX, QC_F_MIN, QC_F_POW };

static inline void qc_binary(int op, const float* a, const float* b, const qc_bcast* bc, float* y) {
  QC_BCAST_LOOP(bc, {
    float u = a[ia], v = b[ib], r;
    switch (op) {
      case QC_F_ADD: r = u + v; break;
      case QC_F_SUB: r = u - v; break;
      case QC_F_MUL: r = u * v; break;
      case QC_F_DIV: r = u / v; break;
      case QC_F_MAX: r = u > v ? u : v; break;
      case QC_F_MIN: r = u < v ? u : v; break;
      default: r = powf(u, v); break;
    }
    y[io] = r;
  });
}

/* Softmax / LogSoftmax over the middle axis of [outer, n, inner], in double rounded once
 * (as the reference computes it: libm's expf and NumPy's float32 exp differ in the last bit) */
static inline void qc_softmax(const float* x, float* y, ptrdiff_t outer, ptrdiff_t n, ptrdiff_t inner, int log_) {
  ptrdiff_t o, i, j;
  for (o = 0; o < outer; o++)
    for (j = 0; j < inner; j++) {
      const float* xs = x + o * n * inner + j;
      float* ys = y + o * n * inner + j;
      float m = xs[0];
      double s = 0.0;
      for (i = 1; i < n; i++)
        if (xs[i * inner] > m) m = xs[i * inner];
      for (i = 0; i < n; i++) s += exp((double)xs[i * inner] - (double)m);
      for (i = 0; i < n; i++) {
        double d = (double)xs[i * inner] - (double)m;
        ys[i * inner] = (float)(log_ ? d - log(s) : exp(d) / s);
      }
    }
}

enum { QC_R_MEAN, QC_R_SUM, QC_R_MAX, QC_R_MIN };

/* ReduceMean / Sum / Max / Min over the middle axis of [outer, n, inner]; sums in double */
static inline void qc_reduce_f(int op, const float* x, float* y, ptrdiff_t outer, ptrdiff_t n, ptrdiff_t inner) {
  ptrdiff_t o, i, j;
  for (o = 0; o < outer; o++)
    for (j = 0; j < inner; j++) {
      const float* xs = x + o * n * inner + j;
      double s = 0.0;
      float m = xs[0];
      for (i = 0; i < n; i++) {
        float v = xs[i * inner];
        s += (double)v;
        if (op == QC_R_MAX ? v > m : v < m) m = v;
      }
      y[o * inner + j] = op == QC_R_MEAN ? (float)(s / (double)n) : (op == QC_R_SUM ? (float)s : m);
    }
}

/* float MatMul: y[b] = a[b] (M x K) @ w[b] (K x N) for each of `batches` (offsets in
 * elements, broadcasting resolved at generation time), summed in double, rounded once */
static inline void qc_matmul_f(const float* a, const float* w, float* y, const int32_t* aoff, const int32_t* woff,
                               ptrdiff_t batches, int M, int K, int N) {
  ptrdiff_t bi;
  int i, j, k;
  for (bi = 0; bi < batches; bi++) {
    const float* ab = a + aoff[bi];
    const float* wb = w + woff[bi];
    float* yb = y + bi * (ptrdiff_t)M * N;
    for (i = 0; i < M; i++)
      for (j = 0; j < N; j++) {
        double s = 0.0;
        for (k = 0; k < K; k++) s += (double)ab[(ptrdiff_t)i * K + k] * (double)wb[(ptrdiff_t)k * N + j];
        yb[(ptrdiff_t)i * N + j] = (float)s;
      }
  }
}

/* ONNX LSTM (gates i, o, f, c; layout 0; default activations) as the reference computes
 * it: state and gates in double, each output rounded to float once. W [D, 4H, I],
 * R [D, 4H, H], B [D, 8H], P [D, 3H], h0/c0 [D, N, H] may be NULL; y [T, D, N, H] and
 * yh/yc [D, N, H] may be NULL. ws: 2*N*H + 4*H doubles. dirs 2: bidirectional */
static inline double qc_sigmoid_d(double v) { return 1.0 / (1.0 + exp(-v)); }

static inline void qc_lstm(const float* x, const float* W, const float* R, const float* B, const float* P,
                           const float* h0, const float* c0, float* y, float* yh, float* yc, int T, int N, int I,
                           int H, int dirs, int reverse, double* ws) {
  int d, s, t, n, j, k, H4 = 4 * H;
  double *h = ws, *c = ws + (ptrdiff_t)N * H, *g = ws + 2 * (ptrdiff_t)N * H;
  for (d = 0; d < dirs; d++) {
    const float* Wd = W + (ptrdiff_t)d * H4 * I;
    const float* Rd = R + (ptrdiff_t)d * H4 * H;
    const float* Pd = P ? P + (ptrdiff_t)d * 3 * H : NULL;
    int rev = dirs == 2 ? d == 1 : reverse;
    for (k = 0; k < N * H; k++) {
      h[k] = h0 ? (double)h0[(ptrdiff_t)d * N * H + k] : 0.0;
      c[k] = c0 ? (double)c0[(ptrdiff_t)d * N * H + k] : 0.0;
    }
    for (s = 0; s < T; s++) {
      t = rev ? T - 1 - s : s;
      for (n = 0; n < N; n++) {
        const float* xt = x + ((ptrdiff_t)t * N + n) * I;
        double* hn = h + (ptrdiff_t)n * H;
        double* cn = c + (ptrdiff_t)n * H;
        for (j = 0; j < H4; j++) {
          double ax = 0.0, ah = 0.0, b = 0.0;
          if (B) b = (double)B[(ptrdiff_t)d * 2 * H4 + j] + (double)B[(ptrdiff_t)d * 2 * H4 + H4 + j];
          for (k = 0; k < I; k++) ax += (double)xt[k] * (double)Wd[(ptrdiff_t)j * I + k];
          for (k = 0; k < H; k++) ah += hn[k] * (double)Rd[(ptrdiff_t)j * H + k];
          g[j] = (b + ax) + ah;
        }
        for (j = 0; j < H; j++) {
          double pi = Pd ? (double)Pd[j] : 0.0, po = Pd ? (double)Pd[H + j] : 0.0, pf = Pd ? (double)Pd[2 * H + j] : 0.0;
          double ig = qc_sigmoid_d(g[j] + pi * cn[j]);
          double fg = qc_sigmoid_d(g[2 * H + j] + pf * cn[j]);
          double cc = fg * cn[j] + ig * tanh(g[3 * H + j]);
          double og = qc_sigmoid_d(g[H + j] + po * cc);
          cn[j] = cc;
          hn[j] = og * tanh(cc);
          if (y) y[(((ptrdiff_t)t * dirs + d) * N + n) * H + j] = (float)hn[j];
        }
      }
    }
    for (k = 0; k < N * H; k++) {
      if (yh) yh[(ptrdiff_t)d * N * H + k] = (float)h[k];
      if (yc) yc[(ptrdiff_t)d * N * H + k] = (float)c[k];
    }
  }
}

/* float ConvTranspose (weight [C, OC/G, FH, FW]) as the reference computes it: per group,
 * the float32 products summed over the input channels for every (output channel, tap) at
 * every input pixel (cb: OC/G*FH*FW*H*W floats), then scattered into a double accumulator
 * of the cropped output (acc: OC*Ho*Wo doubles), then the bias */
static inline void qc_conv_transpose_f(const float* x, const float* w, const float* b, int N, int C, int H, int W,
                                       int OC, int G, int FH, int FW, int sh, int sw, int dh, int dw, int pt,
                                       int pl, int Ho, int Wo, double* acc, double* cb, float* y) {
  int icg = C / G, ocg = OC / G, n, grp, ic, ih, iw, o, i, j, col, ncol = ocg * FH * FW;
  ptrdiff_t P = (ptrdiff_t)Ho * Wo, HW = (ptrdiff_t)H * W, k;
  for (n = 0; n < N; n++) {
    for (k = 0; k < (ptrdiff_t)OC * P; k++) acc[k] = 0.0;
    for (grp = 0; grp < G; grp++) {
      for (k = 0; k < (ptrdiff_t)ncol * HW; k++) cb[k] = 0.0;
      for (ic = 0; ic < icg; ic++) {
        const float* xp = x + ((ptrdiff_t)n * C + grp * icg + ic) * HW;
        const float* wk = w + (ptrdiff_t)(grp * icg + ic) * ncol;
        for (col = 0; col < ncol; col++) {
          double wv = wk[col]; /* float32 products are exact in double */
          double* c = cb + (ptrdiff_t)col * HW;
          for (k = 0; k < HW; k++) c[k] += (double)xp[k] * wv;
        }
      }
      for (o = 0; o < ocg; o++)
        for (i = 0; i < FH; i++)
          for (j = 0; j < FW; j++) {
            const double* c = cb + ((ptrdiff_t)(o * FH + i) * FW + j) * HW;
            double* a = acc + (ptrdiff_t)(grp * ocg + o) * P;
            int c0 = j * dw - pl, iw0 = 0, iw1 = W; /* input columns landing inside the output */
            if (c0 < 0) iw0 = (-c0 + sw - 1) / sw;
            if (Wo - c0 <= 0) iw1 = 0;
            else if ((Wo - c0 + sw - 1) / sw < iw1) iw1 = (Wo - c0 + sw - 1) / sw;
            for (ih = 0; ih < H; ih++) {
              int oh = ih * sh + i * dh - pt;
              double* ar = a + (ptrdiff_t)oh * Wo + c0;
              if (oh < 0 || oh >= Ho) continue;
              for (iw = iw0; iw < iw1; iw++) ar[(ptrdiff_t)iw * sw] += c[(ptrdiff_t)ih * W + iw];
            }
          }
    }
    for (o = 0; o < OC; o++)
      for (k = 0; k < P; k++)
        y[((ptrdiff_t)n * OC + o) * P + k] = (float)(acc[(ptrdiff_t)o * P + k] + (b ? (double)b[o] : 0.0));
  }
}

/* float Conv (weight [OC, C/G, FH, FW]), summed in double; padding reads 0 */
static inline void qc_conv_f(const float* x, const float* w, const float* b, int N, int C, int H, int W, int OC,
                             int G, int FH, int FW, int sh, int sw, int dh, int dw, int pt, int pl, int Ho, int Wo,
                             float* y) {
  int icg = C / G, ocg = OC / G, n, oc, c, oh, ow, i, j;
  for (n = 0; n < N; n++)
    for (oc = 0; oc < OC; oc++)
      for (oh = 0; oh < Ho; oh++)
        for (ow = 0; ow < Wo; ow++) {
          double s = b ? (double)b[oc] : 0.0;
          for (c = 0; c < icg; c++) {
            const float* xp = x + ((ptrdiff_t)n * C + (oc / ocg) * icg + c) * H * W;
            const float* wk = w + ((ptrdiff_t)oc * icg + c) * FH * FW;
            for (i = 0; i < FH; i++) {
              int h = oh * sh + i * dh - pt;
              if (h < 0 || h >= H) continue;
              for (j = 0; j < FW; j++) {
                int ww = ow * sw + j * dw - pl;
                if (ww >= 0 && ww < W) s += (double)xp[(ptrdiff_t)h * W + ww] * wk[i * FW + j];
              }
            }
          }
          y[(((ptrdiff_t)n * OC + oc) * Ho + oh) * Wo + ow] = (float)s;
        }
}

#endif /* QC_KERNELS_H */
