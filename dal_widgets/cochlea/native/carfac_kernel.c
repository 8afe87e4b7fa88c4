/* CARFAC forward and adjoint (reverse-mode gradient) on the CPU.
 *
 * The same model as dal_widgets/cochlea/{car,ihc,synapse,agc,carfac}.py, sample by sample:
 * CAR (OHC nonlinearity, within-sample ripple as a serial loop over channels, AC coupler),
 * two-cap IHC, optional three-class synapse (v3), and the four-stage AGC every decim[0] samples.
 * Layouts and row indices come from dal_widgets/cochlea/native.py, which prepends them as
 * #defines (ROW_*, SC_*, N_STATE_ROWS, SEG, ...) before compiling; REAL, EXP (exp or expf) and
 * SUFFIX pick the precision.
 * Arrays are row-major [rows, width]: width = n_pad * lanes, lane fastest, where n_pad >= n_ch
 * channels fill whole vector registers (the pad channels sit past the apex and start at zero:
 * the ripple only runs apex-ward and the AGC smoother stops at n_ch, so they never reach a real
 * channel). The forward pass can run several waveforms in lockstep ("lanes"), which vectorises
 * the ripple across waveforms; coefficients are then replicated per lane. The adjoint runs one
 * lane.
 *
 * Gradient: the forward pass keeps the state at the start of every segment of SEG samples; the
 * adjoint walks segments backwards, recomputes each from its checkpoint keeping every sample's
 * state, then runs the exact adjoint of each sample and AGC update in reverse order.
 */
#define _DEFAULT_SOURCE /* madvise */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)
#define FN(name) CAT(name, SUFFIX)
#define WORK_ROWS (3 + MAX_STAGES) /* scratch rows of width */

/* Synapse release sigmoids 1 / (1 + exp(-(v - v_half[k]) / v_width[k])): with one width for the
 * three classes (the design's) this is 1 / (1 + exp(-v / width) shift[k]), one exp. */
typedef struct {
  int same_width;
  REAL inv_w[3], v_half[3], shift[3]; /* shift[k] = exp(v_half[k] / width) */
} Release;

typedef struct {
  int n_ch, lanes, width, n_stages, use_syn, linear; /* width = n_pad * lanes */
  const int *decim, *taps, *iters; /* [n_stages] */
  const REAL *coef;                /* [N_COEF_ROWS, width] per-channel coefficients and weights */
  const REAL *scal;                /* [N_SCALARS] */
  const REAL *eps, *fir;           /* [n_stages], [n_stages, 3] AGC */
  Release rel;
} Model;

/* The AGC part of the state: changes only at updates (accum[0] also every sample). */
typedef struct {
  REAL *mem, *acc; /* [n_stages, width] */
  REAL *dzb, *dg;  /* [width] ramps of zb and g toward the AGC target */
  int count;       /* stage-1 updates modulo the slowest stage's period */
} Agc;

#define COEF(m, row) ((m)->coef + (size_t)(row) * (m)->width)
#define ROW(s, row, width) ((s) + (size_t)(row) * (width))

#define R REAL *restrict
#define CR const REAL *restrict
#define S REAL *         /* state rows that may alias (in-place update) */
#define CS const REAL *
/* The channel loops read and write distinct rows: let the compiler vectorise without alias checks
 * (GCC drops `restrict` on local pointers and falls back to scalar loops). */
#if defined(__clang__)
#define IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define IVDEP _Pragma("GCC ivdep")
#else
#define IVDEP
#endif

/* IHC receptor conductance z^3 / (z^3 + z^2 + 0.1), z = max(0, u + DETECT_OFFSET), and its
 * slope d/du; branch-free so that channel loops vectorise. */
static inline REAL detect(REAL u, REAL *slope) {
  REAL z = u + (REAL)DETECT_OFFSET;
  z = z > 0 ? z : 0;
  REAL z2 = z * z, den = z2 * z + z2 + (REAL)0.1;
  *slope = (z2 * z2 + (REAL)0.3 * z2) / (den * den);
  return z2 * z / den;
}

/* The velocity nonlinearity's input scale and offset; both 0 for a linear CAR (nlf = 1). */
static void nlf_scale(const Model *m, REAL *vs, REAL *vo) {
  *vs = m->linear ? 0 : m->scal[SC_VELOCITY_SCALE];
  *vo = m->linear ? 0 : m->scal[SC_V_OFFSET];
}

/* The ripple for `lanes` waveforms at once (index c * lanes + l): channel c's output is
 * y[c] = g[c] y[c-1] + g[c] h[c] z2n[c], with the second term already in y (so the serial chain
 * is one multiply-add per channel), and channel c's stage input (z1 term) is y[c-1]. */
static inline __attribute__((always_inline)) void ripple_lanes(
    int n, const int lanes, const REAL *restrict x, const REAL *restrict g, REAL *restrict z1n,
    REAL *restrict y) {
  REAL prev[MAX_LANES];
  for (int l = 0; l < lanes; l++) prev[l] = x[l];
  for (int i = 0; i < n; i += lanes)
    for (int l = 0; l < lanes; l++) {
      z1n[i + l] += prev[l];
      prev[l] = g[i + l] * prev[l] + y[i + l];
      y[i + l] = prev[l];
    }
}

/* ripple_lanes for a power-of-two lane count, one vector (GCC/clang vector extension) per
 * channel: the compilers do not vectorise the lane loop by themselves. */
#define DEFINE_RIPPLE_VEC(L)                                                                   \
  static void ripple_vec##L(int n, const REAL *x, const REAL *g, REAL *restrict z1n,        \
                            REAL *restrict y) {                                              \
    typedef REAL vec __attribute__((vector_size(L * sizeof(REAL))));                         \
    vec prev, gi, yi, zi;                                                                    \
    memcpy(&prev, x, sizeof prev);                                                           \
    for (int i = 0; i < n; i += L) {                                                         \
      memcpy(&gi, g + i, sizeof gi);                                                         \
      memcpy(&yi, y + i, sizeof yi);                                                         \
      memcpy(&zi, z1n + i, sizeof zi);                                                       \
      zi += prev;                                                                            \
      prev = gi * prev + yi;                                                                 \
      memcpy(z1n + i, &zi, sizeof zi);                                                       \
      memcpy(y + i, &prev, sizeof prev);                                                     \
    }                                                                                        \
  }
DEFINE_RIPPLE_VEC(2)
DEFINE_RIPPLE_VEC(4)
DEFINE_RIPPLE_VEC(8)
DEFINE_RIPPLE_VEC(16)

static void ripple(int n, int lanes, const REAL *x, const REAL *g, REAL *z1n, REAL *y) {
  switch (lanes) {
    case 1: ripple_lanes(n, 1, x, g, z1n, y); return;
    case 2: ripple_vec2(n, x, g, z1n, y); return;
    case 4: ripple_vec4(n, x, g, z1n, y); return;
    case 8: ripple_vec8(n, x, g, z1n, y); return;
    case 16: ripple_vec16(n, x, g, z1n, y); return;
    default: ripple_lanes(n, lanes, x, g, z1n, y); /* other counts: correct, not vectorised */
  }
}

/* Release probabilities of the three fibre classes at receptor potential v, each class with its
 * own sigmoid 1 / (1 + exp(-(v - v_half[k]) / v_width[k])). */
static inline void release(const Release *m, REAL v, REAL *rel) {
  for (int k = 0; k < 3; k++) rel[k] = 1 / (1 + EXP(-(v - m->v_half[k]) * m->inv_w[k]));
}

/* The same when the classes share one width (m->same_width, the design's), given
 * e = exp(-v / width): 1 / (1 + e shift[k]). The channel loops compute e in a loop of their own
 * and choose between the two forms outside the loop, with `same` a constant at each call: with
 * the test inside, GCC vectorised both forms and blended them (four exps and six divisions per
 * channel instead of one and three), and around a vector exp call inside the main loop it
 * spilled and reloaded every live register. */
static inline void release_shared(const Release *m, REAL e, REAL *rel) {
  for (int k = 0; k < 3; k++) rel[k] = 1 / (1 + e * m->shift[k]);
}

/* One synapse fibre class at one channel, given its release probability: the reservoir and the
 * smoothed firing probability (-> *resn, *sln); returns the firing probability.
 * syn: {lpf coefficient, a1, a2, reservoir coefficient}. */
static inline REAL syn_class(REAL rel, const REAL *syn, REAL res, REAL sl, REAL *resn, REAL *sln) {
  REAL rr = (1 - res) * rel;
  *resn = res + syn[3] * (syn[1] * rr - res);
  return *sln = sl + syn[0] * (syn[2] * rr - sl);
}

/* The synapse part of sample_fwd (v3): release, reservoirs and smoothed firing of the three fibre
 * classes -> s1 and nap; `same` = m->rel.same_width, a constant at each call (see
 * release_shared); e: scratch [width]. */
static inline __attribute__((always_inline)) void synapse_fwd(const Model *m, const int same,
                                                              const REAL *s, REAL *s1,
                                                              REAL *restrict nap,
                                                              REAL *restrict e) {
  const int n = m->width;
  const REAL *sc = m->scal;
  CS cap1n = ROW(s1, ROW_CAP1, n);
  const REAL rest_cap1 = sc[SC_REST_CAP1], spont = sc[SC_SPONT_SUB];
  const REAL syn[4] = {sc[SC_SYN_LPF], sc[SC_A1], sc[SC_A2], sc[SC_RES_COEFF]};
  const REAL wk[3] = {sc[SC_AGC_W0], sc[SC_AGC_W1], sc[SC_AGC_W2]};
  CS res0 = ROW(s, ROW_RES0, n); CS res1 = ROW(s, ROW_RES1, n); CS res2 = ROW(s, ROW_RES2, n);
  CS sl0 = ROW(s, ROW_SLPF0, n); CS sl1 = ROW(s, ROW_SLPF1, n); CS sl2 = ROW(s, ROW_SLPF2, n);
  S resn0 = ROW(s1, ROW_RES0, n); S resn1 = ROW(s1, ROW_RES1, n); S resn2 = ROW(s1, ROW_RES2, n);
  S sln0 = ROW(s1, ROW_SLPF0, n); S sln1 = ROW(s1, ROW_SLPF1, n); S sln2 = ROW(s1, ROW_SLPF2, n);
  CR nf0 = COEF(m, CO_NF0); CR nf1 = COEF(m, CO_NF1); CR nf2 = COEF(m, CO_NF2);
  const Release rl = m->rel;
  if (same) {
    IVDEP
    for (int c = 0; c < n; c++) e[c] = EXP(-(rest_cap1 - cap1n[c]) * rl.inv_w[0]);
  }
  IVDEP
  for (int c = 0; c < n; c++) {
    REAL rel[3];
    if (same)
      release_shared(&rl, e[c], rel);
    else
      release(&rl, rest_cap1 - cap1n[c], rel);
    const REAL p0 = syn_class(rel[0], syn, res0[c], sl0[c], &resn0[c], &sln0[c]);
    const REAL p1 = syn_class(rel[1], syn, res1[c], sl1[c], &resn1[c], &sln1[c]);
    const REAL p2 = syn_class(rel[2], syn, res2[c], sl2[c], &resn2[c], &sln2[c]);
    nap[c] = p0 * nf0[c] * wk[0] + p1 * nf1[c] * wk[1] + p2 * nf2[c] * wk[2] - spont;
  }
}

/* One sample: state s -> s1 (both [N_STATE_ROWS, width]; s1 may be s: every channel reads its old
 * values before it writes new ones); x: one input per lane; nap, bm, y: [width] (y scratch). */
static void sample_fwd(const Model *m, const REAL *x, const REAL *s, REAL *s1, const Agc *a,
                       REAL *restrict nap, REAL *restrict bm, REAL *restrict y) {
  const int n = m->width;
  const REAL *sc = m->scal;
  REAL vs, vo;
  nlf_scale(m, &vs, &vo);
  CR r1 = COEF(m, CO_R1); CR a0 = COEF(m, CO_A0); CR c0 = COEF(m, CO_C0); CR h = COEF(m, CO_H);
  CS z1 = ROW(s, ROW_Z1, n); CS z2 = ROW(s, ROW_Z2, n); CS za = ROW(s, ROW_ZA, n);
  CS zb = ROW(s, ROW_ZB, n); CS g = ROW(s, ROW_G, n); CR dzb = a->dzb; CR dg = a->dg;
  S z1n = ROW(s1, ROW_Z1, n); S z2n = ROW(s1, ROW_Z2, n); S zan = ROW(s1, ROW_ZA, n);
  S zbn = ROW(s1, ROW_ZB, n); S gn = ROW(s1, ROW_G, n);
  IVDEP
  for (int c = 0; c < n; c++) {
    const REAL z1c = z1[c], z2c = z2[c], zbc = zb[c] + dzb[c], gc = g[c] + dg[c];
    const REAL u = (z2c - za[c]) * vs + vo;
    const REAL r = r1[c] + zbc / (1 + u * u);
    const REAL z2nc = r * (c0[c] * z1c + a0[c] * z2c);
    zbn[c] = zbc;
    gn[c] = gc;
    z1n[c] = r * (a0[c] * z1c - c0[c] * z2c);
    z2n[c] = z2nc;
    zan[c] = z2c;
    y[c] = gc * h[c] * z2nc;  /* the ripple's own term of channel c */
  }
  ripple(n, m->lanes, x, gn, z1n, y);
  const REAL ac_coeff = sc[SC_AC_COEFF], out1 = sc[SC_OUT1_RATE], in1 = sc[SC_IN1_RATE];
  const REAL out2 = sc[SC_OUT2_RATE], in2 = sc[SC_IN2_RATE], lpf_c = sc[SC_IHC_LPF];
  const REAL gain = sc[SC_OUTPUT_GAIN], rest = sc[SC_REST_OUTPUT];
  CS ac = ROW(s, ROW_AC, n); CR ihc_gain = COEF(m, CO_IHC_GAIN);
  CS cap1 = ROW(s, ROW_CAP1, n); CS cap2 = ROW(s, ROW_CAP2, n); CS lpf = ROW(s, ROW_ILPF, n);
  S acn = ROW(s1, ROW_AC, n); S cap1n = ROW(s1, ROW_CAP1, n); S cap2n = ROW(s1, ROW_CAP2, n);
  S lpfn = ROW(s1, ROW_ILPF, n);
  IVDEP
  for (int c = 0; c < n; c++) {
    const REAL acc = ac[c], cap1c = cap1[c], cap2c = cap2[c], lpfc = lpf[c];
    REAL slope;
    const REAL b = y[c] - acc;
    const REAL rc = detect(b * ihc_gain[c], &slope) * cap1c;
    const REAL k1 = cap1c - rc * out1 + (1 - cap1c) * in1;
    const REAL tr = (1 - k1) * cap2c;
    const REAL lpfnc = lpfc + lpf_c * (tr * gain - lpfc);
    bm[c] = b;
    acn[c] = acc + ac_coeff * b;
    cap1n[c] = k1;
    cap2n[c] = cap2c - tr * out2 + (1 - cap2c) * in2;
    lpfn[c] = lpfnc;
    nap[c] = lpfnc - rest;
  }
  if (!m->use_syn) return;
  if (m->rel.same_width)
    synapse_fwd(m, 1, s, s1, nap, y);
  else
    synapse_fwd(m, 0, s, s1, nap, y);
}

/* Reverse of synapse_fwd: the bars of the synapse state (sb, in place) and of the receptor
 * potential (-> vr_b) from the bars of nap; `same` as in synapse_fwd. */
static inline __attribute__((always_inline)) void synapse_adj(const Model *m, const int same,
                                                              const REAL *s, const REAL *cap1n,
                                                              REAL *sb, const REAL *nap_b,
                                                              REAL *vr_b) {
  const int n = m->width;
  const REAL *sc = m->scal;
  const REAL lpf_c = sc[SC_SYN_LPF], res_c = sc[SC_RES_COEFF], a1 = sc[SC_A1], a2 = sc[SC_A2];
  const Release rl = m->rel;
  REAL *e = vr_b; /* as in synapse_fwd: the exps first, into vr_b (read, then written, per c) */
  if (same) {
    IVDEP
    for (int c = 0; c < n; c++) e[c] = EXP(-(sc[SC_REST_CAP1] - cap1n[c]) * rl.inv_w[0]);
  }
  IVDEP
  for (int c = 0; c < n; c++) {
    REAL rel[3], v_b = 0;
    if (same)
      release_shared(&rl, e[c], rel);
    else
      release(&rl, sc[SC_REST_CAP1] - cap1n[c], rel);
    for (int k = 0; k < 3; k++) {
      REAL *res_b = ROW(sb, ROW_RES0 + k, n) + c, *sl_b = ROW(sb, ROW_SLPF0 + k, n) + c;
      REAL sln_b = *sl_b + nap_b[c] * COEF(m, CO_NF0 + k)[c] * sc[SC_AGC_W0 + k];
      REAL rr_b = sln_b * lpf_c * a2 + *res_b * res_c * a1;
      *sl_b = sln_b * (1 - lpf_c);
      *res_b = *res_b * (1 - res_c) - rr_b * rel[k];
      v_b += rr_b * (1 - ROW(s, ROW_RES0 + k, n)[c]) * rel[k] * (1 - rel[k]) * rl.inv_w[k];
    }
    vr_b[c] = v_b;
  }
}

/* Reverse of sample_fwd: given the bars of s1 (sb, in place -> bars of s), of nap and bm,
 * accumulates into x_bar (returned), ohc/ihc bars, dzb/dg bars. Recomputes intermediates. */
static REAL sample_adj(const Model *m, REAL x, const REAL *s, const REAL *s1, REAL *sb,
                       const REAL *nap_b, const REAL *bm_b, REAL *ihc_gain_b, REAL *dzb_b,
                       REAL *dg_b, REAL *w) {
  const int n = m->width;
  const REAL *sc = m->scal;
  const REAL *r1 = COEF(m, CO_R1), *a0 = COEF(m, CO_A0), *c0 = COEF(m, CO_C0), *h = COEF(m, CO_H);
  const REAL *ihc_gain = COEF(m, CO_IHC_GAIN);
  REAL vs, vo;
  nlf_scale(m, &vs, &vo);
  REAL *vr_b = w, *y_b = w + n, *bmt_b = w + 2 * n; /* scratch [3, n_ch] */
  const REAL *cap1 = ROW(s, ROW_CAP1, n), *cap2 = ROW(s, ROW_CAP2, n);
  const REAL *cap1n = ROW(s1, ROW_CAP1, n);
  REAL *cap1_b = ROW(sb, ROW_CAP1, n), *cap2_b = ROW(sb, ROW_CAP2, n);
  REAL *lpf_b = ROW(sb, ROW_ILPF, n);
  /* Synapse (or the v2 output) -> bars of the receptor potential and the IHC low-pass. */
  if (m->use_syn) {
    if (m->rel.same_width)
      synapse_adj(m, 1, s, cap1n, sb, nap_b, vr_b);
    else
      synapse_adj(m, 0, s, cap1n, sb, nap_b, vr_b);
  } else {
    IVDEP
    for (int c = 0; c < n; c++) {
      vr_b[c] = 0;
      lpf_b[c] += nap_b[c];
    }
  }
  /* IHC. */
  const REAL *ac = ROW(s, ROW_AC, n);
  IVDEP
  for (int c = 0; c < n; c++) {
    REAL k1_b = cap1_b[c] - vr_b[c];
    REAL tr_b = lpf_b[c] * sc[SC_IHC_LPF] * sc[SC_OUTPUT_GAIN] - cap2_b[c] * sc[SC_OUT2_RATE];
    lpf_b[c] *= 1 - sc[SC_IHC_LPF];
    k1_b -= cap2[c] * tr_b;
    REAL c2b = cap2_b[c] * (1 - sc[SC_IN2_RATE]) + (1 - cap1n[c]) * tr_b;
    cap2_b[c] = c2b;
    bmt_b[c] = -sc[SC_OUT1_RATE] * k1_b; /* bar of the receptor current, until bm is known */
    cap1_b[c] = k1_b * (1 - sc[SC_IN1_RATE]);
  }
  /* CAR, forward recompute of the pre-ripple values, then the ripple in reverse. */
  const REAL *z1 = ROW(s, ROW_Z1, n), *z2 = ROW(s, ROW_Z2, n), *za = ROW(s, ROW_ZA, n);
  const REAL *zbn = ROW(s1, ROW_ZB, n), *gn = ROW(s1, ROW_G, n), *z2n = ROW(s1, ROW_Z2, n);
  IVDEP
  for (int c = 0; c < n; c++) y_b[c] = gn[c] * h[c] * z2n[c];
  REAL prev = x;
  for (int c = 0; c < n; c++) { /* y[c], recomputed (y_b holds values here, not bars) */
    prev = gn[c] * prev + y_b[c];
    y_b[c] = prev;
  }
  REAL *ac_b = ROW(sb, ROW_AC, n);
  IVDEP
  for (int c = 0; c < n; c++) {
    REAL b = y_b[c] - ac[c], slope;
    REAL d = detect(b * ihc_gain[c], &slope);
    REAL rc_b = bmt_b[c];
    cap1_b[c] += rc_b * d;
    REAL u_b = rc_b * cap1[c] * slope;
    ihc_gain_b[c] += u_b * b;
    REAL bm_total = bm_b[c] + u_b * ihc_gain[c] + sc[SC_AC_COEFF] * ac_b[c];
    ac_b[c] -= bm_total;
    bmt_b[c] = bm_total; /* bar of y[c] from bm */
  }
  REAL *z1_b = ROW(sb, ROW_Z1, n), *z2_b = ROW(sb, ROW_Z2, n), *za_b = ROW(sb, ROW_ZA, n);
  REAL *zb_b = ROW(sb, ROW_ZB, n), *g_b = ROW(sb, ROW_G, n);
  /* Ripple reverse: y[c] = g[c] t[c], t[c] = y[c-1] + h[c] z2n[c]; z1n[c] += y[c-1]. The bar of
   * y[c-1] is g[c] (bar of y[c]) + z1n_b[c]: a serial multiply-add from the last channel down,
   * then the bars of g and z2n per channel. */
  REAL *carry_in = vr_b; /* free again: bar of y[c] flowing from channel c+1 */
  IVDEP
  for (int c = 0; c < n; c++) carry_in[c] = gn[c] * bmt_b[c] + z1_b[c];
  REAL carry = 0;
  for (int c = n - 1; c >= 0; c--) {
    const REAL own = carry_in[c];
    carry_in[c] = carry;
    carry = gn[c] * carry + own;
  }
  IVDEP
  for (int c = 0; c < n; c++) {
    REAL yb = bmt_b[c] + carry_in[c];
    g_b[c] += yb * ((c ? y_b[c - 1] : x) + h[c] * z2n[c]);
    z2_b[c] += h[c] * gn[c] * yb; /* bar of z2n (the new z2) */
  }
  REAL x_b = carry;
  IVDEP
  for (int c = 0; c < n; c++) {
    REAL u = (z2[c] - za[c]) * vs + vo, nlf = 1 / (1 + u * u);
    REAL r = r1[c] + zbn[c] * nlf;
    REAL p = a0[c] * z1[c] - c0[c] * z2[c], q = c0[c] * z1[c] + a0[c] * z2[c];
    REAL z1n_b = z1_b[c], z2n_b = z2_b[c];
    REAL r_b = z1n_b * p + z2n_b * q, p_b = z1n_b * r, q_b = z2n_b * r;
    REAL zb_total = zb_b[c] + r_b * nlf;
    REAL nlf_b = r_b * zbn[c];
    REAL v_b = -2 * u * nlf * nlf * nlf_b * vs;
    z1_b[c] = a0[c] * p_b + c0[c] * q_b;
    z2_b[c] = -c0[c] * p_b + a0[c] * q_b + v_b + za_b[c];
    za_b[c] = -v_b;
    zb_b[c] = zb_total;
    dzb_b[c] += zb_total;
    dg_b[c] += g_b[c];
  }
  return x_b;
}

/* Source channel of a spatial-smoother tap at shift k (google/carfac edge rule, agc.py _shift). */
static int tap_src(int c, int k, int n) {
  if (k == 0) return c;
  if (k == 1) return c ? c - 1 : 0;
  if (k == -1) return c < n - 1 ? c + 1 : n - 1;
  if (k == 2) return c >= 2 ? c - 2 : c;
  return c <= n - 3 ? c + 2 : (c == n - 2 ? n - 1 : n - 2);
}

/* One smoother pass across the n channels of every lane (out = S in), or its transpose
 * (out = S^T in) when transpose is set. Rows whose taps all fall inside the array run as one
 * shifted, vectorisable pass per tap; the edge rows follow the reference's rule (tap_src). */
static void smooth_pass(const REAL *f, int taps, int n, int lanes, const REAL *restrict in,
                        REAL *restrict out, int transpose) {
  static const int k3[3] = {1, 0, -1};
  static const int k5[5] = {2, 1, 0, -1, -2};
  const int nk = taps == 3 ? 3 : 5, reach = nk / 2, L = lanes;
  const int *ks = taps == 3 ? k3 : k5;
  const int lo = reach, hi = n - reach; /* interior rows */
  REAL wt[5];
  for (int j = 0; j < nk; j++) wt[j] = taps == 3 ? f[j] : f[j < 2 ? 0 : (j == 2 ? 1 : 2)];
  if (transpose) memset(out, 0, sizeof(REAL) * (size_t)n * L);
  for (int j = 0; j < nk; j++) {
    const REAL wj = wt[j];
    const long d = (long)ks[j] * L;
    if (transpose) {
      IVDEP
      for (int i = lo * L; i < hi * L; i++) out[i - d] += wj * in[i];
    } else if (j == 0) {
      IVDEP
      for (int i = lo * L; i < hi * L; i++) out[i] = wj * in[i - d];
    } else {
      IVDEP
      for (int i = lo * L; i < hi * L; i++) out[i] += wj * in[i - d];
    }
  }
  for (int c = 0; c < n; c++) { /* the edge rows: 0..lo-1 and hi..n-1 */
    if (c == lo && hi > lo) c = hi;
    if (c >= n) break;
    if (!transpose) for (int l = 0; l < L; l++) out[c * L + l] = 0;
    for (int j = 0; j < nk; j++) {
      const int src = tap_src(c, ks[j], n);
      for (int l = 0; l < L; l++) {
        if (transpose) out[src * L + l] += wt[j] * in[c * L + l];
        else out[c * L + l] += wt[j] * in[src * L + l];
      }
    }
  }
}

static int period_of(const Model *m, int stage) {
  int p = 1;
  for (int s = 1; s <= stage; s++) p *= m->decim[s];
  return p;
}

/* Which stages update at the update that makes `count` (stage 0 always). */
static void due_flags(const Model *m, int count, int *due) {
  due[0] = 1;
  for (int s = 1; s < m->n_stages; s++) due[s] = due[s - 1] && (count % period_of(m, s) == 0);
}

/* AGC update (agc.agc_update) and the loop closure (carfac._close_loop), in place.
 * zb, g: the CAR's current rows; out: stage-1 output row [n_ch]; work: [3, n_ch]. */
static void agc_fwd(const Model *m, Agc *a, const REAL *zb, const REAL *g, REAL *out, REAL *work) {
  const int n = m->width, ns = m->n_stages, d0 = m->decim[0];
  int due[MAX_STAGES];
  a->count = (a->count + 1) % period_of(m, ns - 1);
  due_flags(m, a->count, due);
  REAL *t1 = work, *t2 = work + n, *inputs = work + 2 * n; /* inputs: [n_stages, n_ch] */
  /* Decimated inputs: stage s sees the running sum of stage s-1's inputs. */
  IVDEP
  for (int c = 0; c < n; c++) { inputs[c] = a->acc[c] / d0; a->acc[c] = 0; }
  for (int s = 1; s < ns; s++) {
    REAL *acc = a->acc + (size_t)s * n;
    IVDEP
    for (int c = 0; c < n; c++) {
      REAL summed = acc[c] + inputs[(size_t)(s - 1) * n + c];
      inputs[(size_t)s * n + c] = summed / m->decim[s];
      if (due[s]) acc[c] = 0;
      else if (due[s - 1]) acc[c] = summed;
    }
  }
  for (int s = ns - 1; s >= 0; s--) {
    if (!due[s]) continue;
    REAL *mem = a->mem + (size_t)s * n;
    const REAL eps = m->eps[s], *in_s = inputs + (size_t)s * n;
    /* the next stage's memory feeds back, scaled by the stage gain (none into the last stage) */
    const REAL *next = s + 1 < ns ? mem + n : mem, gain = s + 1 < ns ? m->scal[SC_STAGE_GAIN] : 0;
    IVDEP
    for (int c = 0; c < n; c++) t1[c] = mem[c] + eps * (in_s[c] + gain * next[c] - mem[c]);
    for (int it = 0; it < m->iters[s]; it++) {
      smooth_pass(m->fir + 3 * s, m->taps[s], m->n_ch, m->lanes, t1, t2, 0);
      memcpy(t1, t2, sizeof(REAL) * m->n_ch * m->lanes); /* pad channels: not smoothed */
    }
    memcpy(mem, t1, sizeof(REAL) * n);
  }
  const REAL *zr = COEF(m, CO_ZR), *ga = COEF(m, CO_GA), *gb = COEF(m, CO_GB), *gc = COEF(m, CO_GC);
  const REAL *ohc = COEF(m, CO_OHC_HEALTH);
  IVDEP
  for (int c = 0; c < n; c++) {
    REAL und = (1 - a->mem[c]) * ohc[c];
    a->dzb[c] = (zr[c] * und - zb[c]) / d0;
    a->dg[c] = ((ga[c] * und + gb[c]) * und + gc[c] - g[c]) / d0;
    out[c] = a->mem[c];
  }
}

/* Reverse of agc_fwd. count: the count after the update; mem0: stage-1 output of the update.
 * ab: bars of the AGC state after the update (in place -> before); zb_b, g_b: bars of the CAR
 * rows; out_b: bar of the stage-1 output row (may be NULL); ohc_b accumulates. */
static void agc_adj(const Model *m, int count, const REAL *mem0, Agc *ab, REAL *zb_b, REAL *g_b,
                    const REAL *out_b, REAL *ohc_b, REAL *work) {
  const int n = m->width, ns = m->n_stages, d0 = m->decim[0];
  int due[MAX_STAGES];
  due_flags(m, count, due);
  const REAL *zr = COEF(m, CO_ZR), *ga = COEF(m, CO_GA), *gb = COEF(m, CO_GB);
  const REAL *ohc = COEF(m, CO_OHC_HEALTH);
  REAL *t1 = work, *t2 = work + n, *inputs_b = work + 2 * n; /* inputs_b: [n_stages, n_ch] */
  memset(inputs_b, 0, sizeof(REAL) * (size_t)ns * n);
  IVDEP
  for (int c = 0; c < n; c++) {
    REAL und = (1 - mem0[c]) * ohc[c];
    REAL und_b = (ab->dzb[c] * zr[c] + ab->dg[c] * (2 * ga[c] * und + gb[c])) / d0;
    zb_b[c] -= ab->dzb[c] / d0;
    g_b[c] -= ab->dg[c] / d0;
    ab->dzb[c] = 0;
    ab->dg[c] = 0;
    ab->mem[c] += (out_b ? out_b[c] : 0) - und_b * ohc[c];
    ohc_b[c] += und_b * (1 - mem0[c]);
  }
  for (int s = 0; s < ns; s++) {
    if (!due[s]) continue; /* memory unchanged: its bar passes through */
    REAL *mem_b = ab->mem + (size_t)s * n, eps = m->eps[s];
    memcpy(t1, mem_b, sizeof(REAL) * n);
    for (int it = 0; it < m->iters[s]; it++) {
      smooth_pass(m->fir + 3 * s, m->taps[s], m->n_ch, m->lanes, t1, t2, 1);
      memcpy(t1, t2, sizeof(REAL) * m->n_ch * m->lanes);
    }
    IVDEP
    for (int c = 0; c < n; c++) {
      REAL target_b = eps * t1[c];
      mem_b[c] = (1 - eps) * t1[c];
      inputs_b[(size_t)s * n + c] += target_b;
      if (s + 1 < ns) ab->mem[(size_t)(s + 1) * n + c] += m->scal[SC_STAGE_GAIN] * target_b;
    }
  }
  for (int s = ns - 1; s >= 1; s--) {
    REAL *acc_b = ab->acc + (size_t)s * n;
    IVDEP
    for (int c = 0; c < n; c++) {
      REAL summed_b = inputs_b[(size_t)s * n + c] / m->decim[s];
      if (!due[s] && due[s - 1]) { summed_b += acc_b[c]; acc_b[c] = 0; }
      else if (due[s]) acc_b[c] = 0;
      acc_b[c] += summed_b;
      inputs_b[(size_t)(s - 1) * n + c] += summed_b;
    }
  }
  IVDEP
  for (int c = 0; c < n; c++) ab->acc[c] = inputs_b[c] / d0;
}

/* Accumulates the stage-1 detector input of one sample. */
static void accumulate(const Model *m, Agc *a, const REAL *nap) {
  IVDEP
  for (int i = 0; i < m->width; i++) a->acc[i] += m->scal[SC_DETECT_SCALE] * nap[i];
}

static void setup(Model *m, int n_ch, int n_pad, int lanes, int n_stages, const int *ints,
                  const REAL *coef, const REAL *scal, const REAL *agc_coef) {
  m->n_ch = n_ch;
  m->lanes = lanes;
  m->width = n_pad * lanes;
  m->n_stages = n_stages;
  m->use_syn = ints[0];
  m->linear = ints[1];
  m->decim = ints + 2;
  m->taps = ints + 2 + n_stages;
  m->iters = ints + 2 + 2 * n_stages;
  m->coef = coef;
  m->scal = scal;
  m->eps = agc_coef;
  m->fir = agc_coef + n_stages;
  Release *r = &m->rel;
  r->same_width = 1;
  for (int k = 0; k < 3; k++) {
    r->inv_w[k] = 1 / scal[SC_V_WIDTH0 + k];
    r->v_half[k] = scal[SC_V_HALF0 + k];
    r->same_width &= scal[SC_V_WIDTH0 + k] == scal[SC_V_WIDTH0];
  }
  for (int k = 0; k < 3; k++) r->shift[k] = EXP(r->v_half[k] * r->inv_w[0]);
}

static void agc_view(Agc *a, REAL *agc_state, int width, int n_stages) {
  a->mem = agc_state;
  a->acc = agc_state + (size_t)n_stages * width;
  a->dzb = agc_state + (size_t)2 * n_stages * width;
  a->dg = a->dzb + width;
}

/* Asks the kernel for transparent huge pages behind a large, not yet touched output buffer: XLA
 * hands over freshly mapped memory, and first-touch faults of 4 KiB pages otherwise cost more
 * than the model (measured: a batch of 8 one-second clips, 26k faults, ~80 ms of CPU per call). */
static void advise_huge_pages(void *p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t page = 4096, huge = (uintptr_t)2 << 20;
  if (bytes < 2 * huge) return;
  uintptr_t start = ((uintptr_t)p + page - 1) & ~(page - 1);
  uintptr_t end = ((uintptr_t)p + bytes) & ~(page - 1);
  madvise((void *)start, end - start, MADV_HUGEPAGE); /* advice only: failure is harmless */
#else
  (void)p; (void)bytes;
#endif
}

/* Copies row `src` [n_ch * lanes] (lane fastest) into lane-major rows dst + l * stride. */
static inline __attribute__((always_inline)) void scatter_rows(const REAL *restrict src, int n_ch,
                                                              const int lanes, REAL *restrict dst,
                                                              size_t stride) {
  for (int c = 0; c < n_ch; c++)
    for (int l = 0; l < lanes; l++) dst[l * stride + c] = src[c * lanes + l];
}

static void scatter_lanes(const REAL *src, int n_ch, int lanes, REAL *dst, size_t stride) {
  switch (lanes) { /* constant lane counts unroll into straight stores */
    case 1: scatter_rows(src, n_ch, 1, dst, stride); break;
    case 4: scatter_rows(src, n_ch, 4, dst, stride); break;
    case 8: scatter_rows(src, n_ch, 8, dst, stride); break;
    case 16: scatter_rows(src, n_ch, 16, dst, stride); break;
    default: scatter_rows(src, n_ch, lanes, dst, stride);
  }
}

/* Forward of n samples of `lanes` waveforms in lockstep (one AGC phase and count for all).
 * ints: [use_syn, linear, decim[ns], taps[ns], iters[ns]]; coef [N_COEF_ROWS, width];
 * x [n, lanes]; state [N_STATE_ROWS, width] and agc_state [2 ns + 2, width] (mem, acc, dzb, dg)
 * are updated in place; counters: [phase, count] in/out. nap, bm: [lanes, n, n_ch]; agc_out:
 * [lanes, n_updates, n_ch]; bm may be NULL (not written). checkpoints (one lane only; NULL: none)
 * receive the state,
 * agc_state and count at the start of each SEG segment. Returns the number of AGC updates, or
 * -1 when scratch memory cannot be allocated (nothing is written then). */
int FN(carfac_forward)(int n, int n_ch, int n_pad, int lanes, int n_stages, const int *ints,
                       const REAL *coef, const REAL *scal, const REAL *agc_coef, const REAL *x,
                       REAL *state, REAL *agc_state, int *counters, REAL *nap, REAL *bm,
                       REAL *agc_out, REAL *checkpoints) {
  Model m;
  setup(&m, n_ch, n_pad, lanes, n_stages, ints, coef, scal, agc_coef);
  const int w = m.width;
  const int direct = lanes == 1 && n_pad == n_ch; /* sample rows straight into the outputs */
  const int n_updates = (counters[0] + n) / m.decim[0];
  Agc a;
  agc_view(&a, agc_state, w, n_stages);
  a.count = counters[1];
  const size_t ssize = (size_t)N_STATE_ROWS * w, asize = (size_t)(2 * n_stages + 2) * w;
  /* one state, updated in place: a smaller working set than two alternating ones (lockstep lanes
   * multiply it, and it should stay in the L1 cache) */
  REAL *buf = malloc(sizeof(REAL) * (ssize + (size_t)(WORK_ROWS + 3) * w));
  if (!buf) return -1;
  REAL *cur = buf, *work = buf + ssize;
  REAL *nap_t = work + (size_t)WORK_ROWS * w, *bm_t = nap_t + w, *agc_t = bm_t + w;
  memcpy(cur, state, sizeof(REAL) * ssize);
  advise_huge_pages(nap, sizeof(REAL) * (size_t)n * n_ch * lanes); /* the outputs are unpadded */
  if (bm) advise_huge_pages(bm, sizeof(REAL) * (size_t)n * n_ch * lanes);
  int phase = counters[0], n_up = 0;
  for (int t = 0; t < n; t++) {
    if (checkpoints && t % SEG == 0) {
      REAL *cp = checkpoints + (size_t)(t / SEG) * (ssize + asize + 1);
      memcpy(cp, cur, sizeof(REAL) * ssize);
      memcpy(cp + ssize, agc_state, sizeof(REAL) * asize);
      cp[ssize + asize] = (REAL)a.count;
    }
    if (direct) {
      nap_t = nap + (size_t)t * n_ch;
      if (bm) bm_t = bm + (size_t)t * n_ch;
    }
    sample_fwd(&m, x + (size_t)t * lanes, cur, cur, &a, nap_t, bm_t, work);
    accumulate(&m, &a, nap_t);
    if (!direct) {
      scatter_lanes(nap_t, n_ch, lanes, nap + (size_t)t * n_ch, (size_t)n * n_ch);
      if (bm) scatter_lanes(bm_t, n_ch, lanes, bm + (size_t)t * n_ch, (size_t)n * n_ch);
    }
    if (++phase == m.decim[0]) {
      agc_fwd(&m, &a, ROW(cur, ROW_ZB, w), ROW(cur, ROW_G, w), agc_t, work);
      scatter_lanes(agc_t, n_ch, lanes, agc_out + (size_t)n_up * n_ch, (size_t)n_updates * n_ch);
      n_up++;
      phase = 0;
    }
  }
  memcpy(state, cur, sizeof(REAL) * ssize);
  counters[0] = phase;
  counters[1] = a.count;
  free(buf);
  return n_up;
}

/* Gradient. Inputs as carfac_forward (one lane) at the start of the call (state, agc_state,
 * counters before it) plus its checkpoints; bars of the outputs nap_b, bm_b [n, n_ch], agc_out_b
 * [updates, n_ch] (each NULL when zero), state_b / agc_state_b ([rows, n_pad] bars of the final
 * state, overwritten with the bars of the initial state). Writes x_b [n], ohc_b, ihc_b [n_ch].
 * Returns 0, or -1 when scratch memory cannot be allocated. */
int FN(carfac_adjoint)(int n, int n_ch, int n_pad, int n_stages, const int *ints,
                       const REAL *coef, const REAL *scal, const REAL *agc_coef, const REAL *x,
                       const int *counters, const REAL *checkpoints, const REAL *nap_b,
                       const REAL *bm_b, const REAL *agc_out_b, REAL *state_b, REAL *agc_state_b,
                       REAL *x_b, REAL *ohc_b, REAL *ihc_b) {
  Model m;
  setup(&m, n_ch, n_pad, 1, n_stages, ints, coef, scal, agc_coef);
  const size_t ssize = (size_t)N_STATE_ROWS * n_pad, asize = (size_t)(2 * n_stages + 2) * n_pad;
  const int d0 = m.decim[0];
  /* Per segment: states before each sample, and for each update its count and stage-1 output. */
  REAL *states = malloc(sizeof(REAL) * (SEG + 1) * ssize);
  REAL *mem0s = malloc(sizeof(REAL) * (SEG + 1) * n_pad);
  int counts[SEG + 1];
  REAL *agc_buf = malloc(sizeof(REAL) * asize), *work = malloc(sizeof(REAL) * WORK_ROWS * n_pad);
  /* rows: recomputed nap and bm; bars of nap, bm and the AGC output of one sample (pads stay 0);
   * ohc and ihc bars */
  REAL *rows = calloc((size_t)7 * n_pad, sizeof(REAL));
  if (!states || !mem0s || !agc_buf || !work || !rows) {
    free(states); free(mem0s); free(agc_buf); free(work); free(rows);
    return -1;
  }
  REAL *nap_t = rows, *nb = rows + 2 * n_pad, *bb = rows + 3 * n_pad;
  REAL *ob = rows + 4 * n_pad, *ohc_w = rows + 5 * n_pad, *ihc_w = rows + 6 * n_pad;
  Agc ab;
  agc_view(&ab, agc_state_b, n_pad, n_stages);
  /* Updates before sample t: those completed at samples < t, counted from the initial phase. */
  const int phase0 = counters[0];
  int n_seg = (n + SEG - 1) / SEG;
  for (int sg = n_seg - 1; sg >= 0; sg--) {
    int t0 = sg * SEG, t1 = t0 + SEG < n ? t0 + SEG : n;
    const REAL *cp = checkpoints + (size_t)sg * (ssize + asize + 1);
    memcpy(states, cp, sizeof(REAL) * ssize);
    memcpy(agc_buf, cp + ssize, sizeof(REAL) * asize);
    Agc a;
    agc_view(&a, agc_buf, n_pad, n_stages);
    a.count = (int)cp[ssize + asize];
    int ups_before = (phase0 + t0) / d0; /* updates completed before sample t0 */
    int n_local = 0;
    int upd_after[SEG]; /* index into mem0s of the update after sample t, or -1 */
    for (int t = t0; t < t1; t++) {
      REAL *s = states + (size_t)(t - t0) * ssize, *s1 = s + ssize;
      sample_fwd(&m, x + t, s, s1, &a, nap_t, nap_t + n_pad, work);
      accumulate(&m, &a, nap_t);
      upd_after[t - t0] = -1;
      if ((phase0 + t + 1) % d0 == 0) {
        agc_fwd(&m, &a, ROW(s1, ROW_ZB, n_pad), ROW(s1, ROW_G, n_pad),
                mem0s + (size_t)n_local * n_pad, work);
        counts[n_local] = a.count;
        upd_after[t - t0] = n_local++;
      }
    }
    for (int t = t1 - 1; t >= t0; t--) {
      REAL *s = states + (size_t)(t - t0) * ssize, *s1 = s + ssize;
      int u = upd_after[t - t0];
      if (u >= 0) {
        if (agc_out_b)
          memcpy(ob, agc_out_b + (size_t)(ups_before + u) * n_ch, sizeof(REAL) * n_ch);
        agc_adj(&m, counts[u], mem0s + (size_t)u * n_pad, &ab, ROW(state_b, ROW_ZB, n_pad),
                ROW(state_b, ROW_G, n_pad), agc_out_b ? ob : NULL, ohc_w, work);
      }
      /* bar of nap gets the detector accumulation's share */
      IVDEP
      for (int c = 0; c < n_pad; c++) nb[c] = scal[SC_DETECT_SCALE] * ab.acc[c];
      if (nap_b)
        for (int c = 0; c < n_ch; c++) nb[c] += nap_b[(size_t)t * n_ch + c];
      if (bm_b) memcpy(bb, bm_b + (size_t)t * n_ch, sizeof(REAL) * n_ch);
      x_b[t] = sample_adj(&m, x[t], s, s1, state_b, nb, bb, ihc_w, ab.dzb, ab.dg, work);
    }
  }
  memcpy(ohc_b, ohc_w, sizeof(REAL) * n_ch);
  memcpy(ihc_b, ihc_w, sizeof(REAL) * n_ch);
  free(states); free(mem0s); free(agc_buf); free(work); free(rows);
  return 0;
}
