/*
 * The online biohsic step of ibhebb.engine.step, hand-written in C.
 *
 * One call of ibhebb_replicas() trains replicas [r0, r1) on the K samples of
 * a chunk, one replica after the other: each replica's weights and moments
 * (about 1.3 MB for the paper's MNIST network) stay in cache for the whole
 * chunk instead of being streamed from memory once per sample.  Everything
 * the replicas share (the window's inputs and labels, their kernel matrices
 * and the optimiser's bias corrections) is prepared once per chunk by
 * ibhebb_begin() and written back by ibhebb_end().  Several threads may run
 * ibhebb_replicas() on disjoint replica ranges between the two.
 *
 * Same arithmetic as step.py (MATH §3-§5): per update, the forward pass, the
 * global factor xi of each hidden layer from its window, its pull-back through
 * LayerNorm and the activation (the local factor), the readout's softmax
 * gradient over the window, then one AdamW / Adam / SGD step of every
 * parameter.  A hidden layer's weight gradient is the outer product
 * delta h^T: it is formed element by element inside the optimiser's loop and
 * never stored.  Right after each first-layer row's step, while the row is
 * still in the L1 cache, its dot product with the next update's input (the
 * same sample's at the next time step, or the next sample's) gives that
 * update's drive, so the forward pass does not read the first layer again
 * from the L2 cache or beyond.  REAL is float or double (one library per dtype).
 *
 * With the reservoir memory (MATH §4, eq 8) xi comes instead from the readout
 * of a frozen reservoir per hidden layer, which every replica drives with its
 * own state (memory/reservoir.py); the buffer's true xi is still computed,
 * for the correlation and NMSE that the memory reports.
 *
 * With the features memory (functional/traces.py, memory/features.py) xi^l is a readout of leaky traces of
 * random-feature neurons: the traces of the input's and label's features are shared by the replicas and
 * advanced by ibhebb_begin() (which also gives each chunk sample its surprise s and readout scale); each
 * replica's fast-weight matrices F^l (S stages of D x (2 d_l + 2)) are read for xi and take the
 * sample's Hebbian outer product phi_z(z) [1, z, s, s z]^T in the same pass at the sample's last update
 * (whose z is the z of the push).  The readout layer then learns from the current sample only.
 *
 * A spiking network (P->spiking, models/spiking.py, functional/spiking.py) runs its hidden layers as
 * leaky integrate-and-fire populations: per update (time step t of a sample) each layer integrates
 * v' = v + leak (W h + b - v), fires (s = 1[v' > threshold], or 1[noise < f(v' - threshold)] with escape
 * noise), updates its readout r <- r + kappa (s - r), resets, and sees z = LN(r); its local factor is
 * the spike's derivative g (the surrogate, or the escape function's f'), and the weight gradient is
 * delta h^T scaled by kappa leak.  The random numbers (input spike trains, escape noise) are drawn by
 * the Python side from each replica's own generator and passed in per chunk (spk_noise), so the C
 * step spikes exactly as the model's own loop.
 */
#include <limits.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <tgmath.h> /* sqrt, exp, tanh of a float stay float */
#if defined(__x86_64__) || defined(__SSE__)
#include <xmmintrin.h>
#endif
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#ifndef REAL
#define REAL float
#endif
typedef REAL real;

/* The enums (ACT_*, XI_*, OPT_*), MAXL and the Problem struct are generated
 * from the Python side at build time (cstep.abi_header), so the two cannot drift.
 * What this file implements of each enum is declared here and read by cstep.py;
 * a value Python has and this file lacks makes the engine fall back, never crash. */
#include "ibhebb_abi.h"
/* ibhebb:implements activation relu tanh sigmoid identity */
/* ibhebb:implements variant paper first-term exact */
/* ibhebb:implements optimizer adamw adam sgd */
/* ibhebb:implements model mlp lif-mlp spiking-mlp */
/* ibhebb:implements firing surrogate escape */
/* ibhebb:implements surrogate fast-sigmoid arctan */
/* ibhebb:implements escape sigmoid exp */
/* ibhebb:implements encoding current bernoulli poisson */
/* ibhebb:implements spike_z count trace */
/* ibhebb:implements reset zero subtract */

/* -- the floating-point mode of a worker -------------------------------------------------------
 * A unit whose gradient stays zero decays its Adam moments by beta per step into the subnormal
 * range, where x86 arithmetic is ~100x slower.  Each worker call flushes subnormal inputs and
 * results to zero (the mode is per thread) and gives the caller its own mode back. */
#if defined(__x86_64__) || defined(__SSE__)
typedef unsigned int FpMode;
#define FP_FLUSH 0x8040u /* MXCSR: FTZ (bit 15), DAZ (bit 6) */
static inline FpMode fp_get(void) { return _mm_getcsr(); }
static inline void fp_set(FpMode m) { _mm_setcsr(m); }
#elif defined(__aarch64__)
typedef uint64_t FpMode;
#define FP_FLUSH (1ull << 24) /* FPCR.FZ */
static inline FpMode fp_get(void) { uint64_t m; __asm__ volatile("mrs %0, fpcr" : "=r"(m)); return m; }
static inline void fp_set(FpMode m) { __asm__ volatile("msr fpcr, %0" : : "r"(m)); }
#else
typedef int FpMode;
#define FP_FLUSH 0
static inline FpMode fp_get(void) { return 0; }
static inline void fp_set(FpMode m) { (void)m; }
#endif

static inline FpMode flush_subnormals(void) {
    FpMode old = fp_get();
    fp_set(old | FP_FLUSH);
    return old;
}

/* The calling thread's floating-point control word (MXCSR, FPCR), and whether this build can flush. */
int64_t ibhebb_fp_mode(void) { return (int64_t)fp_get(); }
int64_t ibhebb_flushes(void) { return FP_FLUSH != 0; }

/* -- the barrier of the threads that share a replica ---------------------------------------------
 * Spin for a few microseconds (the partner is usually a little behind), then sleep: with more
 * runnable threads than cores the partner may be descheduled for a whole time slice, and a
 * spinning (or sched_yield-ing) waiter would keep it off the core. */
typedef struct {
    atomic_int arrived, phase, sleepers;
} Barrier;

#define BARRIER_SPINS 4000

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__SSE__)
    _mm_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

static void barrier_sleep(atomic_int *phase, int seen) {
#ifdef __linux__
    syscall(SYS_futex, (int *)phase, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
#else
    (void)phase; (void)seen;
    sched_yield();
#endif
}

static void barrier_wake(atomic_int *phase) {
#ifdef __linux__
    syscall(SYS_futex, (int *)phase, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#else
    (void)phase;
#endif
}

/* Wait until n threads have arrived. */
static void barrier_wait(Barrier *b, int64_t n) {
    int phase = atomic_load(&b->phase);
    if (atomic_fetch_add(&b->arrived, 1) == n - 1) {
        atomic_store(&b->arrived, 0);
        atomic_fetch_add(&b->phase, 1);
        if (atomic_load(&b->sleepers) > 0) barrier_wake(&b->phase);
        return;
    }
    for (int spins = 0; spins < BARRIER_SPINS; spins++) {
        if (atomic_load_explicit(&b->phase, memory_order_acquire) != phase) return;
        cpu_relax();
    }
    atomic_fetch_add(&b->sleepers, 1);
    while (atomic_load(&b->phase) == phase) barrier_sleep(&b->phase, phase);
    atomic_fetch_sub(&b->sleepers, 1);
}

typedef struct {
    int64_t M, S, K, U;
    const real **xrow, **yrow; /* S rows: the M past samples, then the chunk's */
    real *kxb, *kyb;           /* K x M: kernel of sample M+k with the M before it */
    real *sig;                 /* K x N: s (paper, first-term) or row N-1 of H(Kx - gamma Ky)H (exact) */
    double *p1, *p2;           /* U: (beta1^t, beta2^t) after each update */
    real *shared_a;            /* the parts of one replica: the first layer's preactivation, assembled */
    real *shared_wx;           /* the parts of one replica: W h of the first layer at the next update */
    real *fm_s, *fm_scale;     /* features memory, K each: a sample's surprise, the scale of its readouts */
    Barrier barrier;
    atomic_long failed;
} Work;

/* -- small vector helpers ------------------------------------------------------------------ */

static inline real dot(const real *restrict a, const real *restrict b, int64_t n) {
    real acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < n; j++) acc += a[j] * b[j];
    return acc;
}

/* A vector of 64 bytes of reals (GCC and clang vector extensions; split into smaller registers where there are none). */
typedef real vreal __attribute__((vector_size(64)));
#define VL ((int64_t)(sizeof(vreal) / sizeof(real)))

static inline __attribute__((always_inline)) vreal vload(const real *p) {
    vreal v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* w . h summed in four vectors (four sums in flight), then lane by lane, in the source's order; one instance of
 * machine code (never inlined), so that the first layer's drive has the same bits wherever it is summed: in the
 * forward pass, or in the optimiser's pass right after the row's step (update()). */
static __attribute__((noinline)) real row_dot(const real *restrict w, const real *restrict h, int64_t n) {
    vreal a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    int64_t j = 0;
    for (; j + 4 * VL <= n; j += 4 * VL) {
        a0 += vload(w + j) * vload(h + j);
        a1 += vload(w + j + VL) * vload(h + j + VL);
        a2 += vload(w + j + 2 * VL) * vload(h + j + 2 * VL);
        a3 += vload(w + j + 3 * VL) * vload(h + j + 3 * VL);
    }
    for (; j + VL <= n; j += VL) a0 += vload(w + j) * vload(h + j);
    vreal v = (a0 + a1) + (a2 + a3);
    real acc = 0;
    for (int64_t q = 0; q < VL; q++) acc += v[q];
    for (; j < n; j++) acc += w[j] * h[j];
    return acc;
}

/* out[i] = W_i . h for the rows i in [i0, i1) of W (rows x n): four rows at a time, each summed in its own vector
 * (four sums in flight, h read once per four rows), then lane by lane.  The order is the source's (no reduction
 * for the compiler to reorder), and a row is always summed in its group of four (rows 4g .. 4g + 3; past the last
 * row, the last row again) at the same place: its bits do not depend on [i0, i1), so threads that share a replica
 * get one thread's drive whatever rows each owns. */
static void rows_dot(const real *restrict W, int64_t rows, int64_t n, const real *restrict h, real *restrict out,
                     int64_t i0, int64_t i1) {
    for (int64_t g = i0 - i0 % 4; g < i1; g += 4) {
        const real *w[4];
        for (int64_t q = 0; q < 4; q++) w[q] = W + (g + q < rows ? g + q : rows - 1) * n;
        vreal a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        int64_t j = 0;
        for (; j + VL <= n; j += VL) {
            vreal hj = vload(h + j);
            a0 += vload(w[0] + j) * hj;
            a1 += vload(w[1] + j) * hj;
            a2 += vload(w[2] + j) * hj;
            a3 += vload(w[3] + j) * hj;
        }
        real a[4] = {0, 0, 0, 0};
        for (int64_t q = 0; q < VL; q++) {
            a[0] += a0[q];
            a[1] += a1[q];
            a[2] += a2[q];
            a[3] += a3[q];
        }
        for (; j < n; j++)
            for (int64_t q = 0; q < 4; q++) a[q] += w[q][j] * h[j];
        for (int64_t q = 0; q < 4; q++)
            if (g + q >= i0 && g + q < i1) out[g + q] = a[q];
    }
}

static inline real sqdist(const real *restrict a, const real *restrict b, int64_t n) {
    real acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < n; j++) {
        real d = a[j] - b[j];
        acc += d * d;
    }
    return acc;
}

static inline real gauss(real sq, double sigma, int64_t d) {
    return (real)exp(-(double)(sq / (real)(2.0 * sigma * sigma * (double)d)));
}

/* -- the features memory ------------------------------------------------------------------- */

/* phi = [cos(v Omega), sin(v Omega)] / sqrt(M) of v (d), with Omega transposed: omt (M, d). */
static void fourier(const real *omt, int64_t M, const real *v, int64_t d, real *phi) {
    real root = (real)sqrt((double)M);
    for (int64_t m = 0; m < M; m++) {
        real p = dot(omt + m * d, v, d);
        phi[m] = cos(p) / root;
        phi[M + m] = sin(p) / root;
    }
}

/* phi of an input x (d) that is mostly zeros (an image), with Omega as it is: om (d, M); p (M) is scratch.
 * v Omega as a sum of the rows of the nonzero inputs, as for the reservoir's input drive. */
static void fourier_sparse(const real *om, int64_t M, const real *v, int64_t d, real *phi, real *p) {
    real root = (real)sqrt((double)M);
    memset(p, 0, sizeof(real) * M);
    for (int64_t i = 0; i < d; i++) {
        real vi = v[i];
        if (vi == 0) continue;
        const real *row = om + i * M;
#pragma omp simd
        for (int64_t m = 0; m < M; m++) p[m] += vi * row[m];
    }
    for (int64_t m = 0; m < M; m++) {
        phi[m] = cos(p[m]) / root;
        phi[M + m] = sin(p[m]) / root;
    }
}

/* One step of the S-stage cascade of n traces t (S, n) (stride `stride` between stages), input f (n):
 * every stage from the values before the step (functional.traces.cascade_push_). */
static inline void cascade(real *t, int64_t S, int64_t stride, int64_t n, const real *f, real fscale, real lam) {
    real om = 1 - lam;
    for (int64_t st = S - 1; st >= 1; st--) {
        real *a = t + st * stride;
        const real *b = t + (st - 1) * stride;
#pragma omp simd
        for (int64_t j = 0; j < n; j++) a[j] = a[j] * lam + om * b[j];
    }
#pragma omp simd
    for (int64_t j = 0; j < n; j++) t[j] = t[j] * lam + om * (fscale * f[j]);
}

/* The shared traces through the chunk: each sample's surprise and readout scale against its past, then its push. */
static int features_begin(const Problem *P, Work *w) {
    int64_t K = w->K, M = w->M, N = P->window, D = P->fm_features, S = P->fm_stages;
    int64_t dx = P->dims[0], C = P->dims[P->n_hidden + 1];
    w->fm_s = malloc(sizeof(real) * (K + 1));
    w->fm_scale = malloc(sizeof(real) * (K + 1));
    real *px = malloc(sizeof(real) * D), *py = malloc(sizeof(real) * (C + 1)), *pm = malloc(sizeof(real) * D);
    if (!w->fm_s || !w->fm_scale || !px || !py || !pm) { free(px); free(py); free(pm); return 1; }
    real lam = (real)P->fm_lam, one = 1;
    double e = exp(-1.0 / (P->sigma_y * P->sigma_y * (double)C));
    real ey = (real)sqrt(e), ny = (real)sqrt(1.0 - e);
    for (int64_t k = 0; k < K; k++) {
        const real *x = w->xrow[M + k], *y = w->yrow[M + k];
        fourier_sparse(P->fm_omega_t[0], D / 2, x, dx, px, pm);
        py[0] = ey;
        for (int64_t c = 0; c < C; c++) py[c + 1] = ny * y[c];
        real mass = 0, mx = 0, my = 0;
        for (int64_t st = 0; st < S; st++) mass += (real)P->fm_coef[st] * P->fm_t1[st];
        real scale = mass > 0 ? (real)((double)(N - 1) / (double)N) / mass : 0;
        for (int64_t st = 0; st < S; st++) {
            real c = (real)P->fm_coef[st];
            mx += c * dot(px, P->fm_tx + st * D, D);
            my += c * dot(py, P->fm_ty + st * (C + 1), C + 1);
        }
        real base = (real)(1.0 - 1.0 / (double)N);
        w->fm_s[k] = (base - scale * mx) - (real)P->gamma * (base - scale * my);
        w->fm_scale[k] = scale;
        cascade(P->fm_t1, S, 1, 1, &one, 1, lam);
        cascade(P->fm_tx, S, D, D, px, 1, lam);
        cascade(P->fm_ty, S, C + 1, C + 1, py, 1, lam);
    }
    free(px);
    free(py);
    free(pm);
    return 0;
}

/* One row i of a layer's fast weights, all S stages (stride apart): each stage's readout tmp[st] += phi_i F_st, then
 * (push) F_st <- lam F_st + (1 - lam) F_{st-1} (F_0 from phi_i u), from the values before it.  S and push are
 * constants at each call (the switch below), so the stage loops unroll and the row vectorises. */
static inline __attribute__((always_inline)) void fast_row(real *F, int64_t stride, int64_t k, real ph, const real *u,
                                                           real *tmp, real lam, const int S, const int push) {
    real om = 1 - lam;
#pragma omp simd
    for (int64_t j = 0; j < k; j++) {
        real f[3];
        for (int st = 0; st < S; st++) {
            f[st] = F[st * stride + j];
            tmp[st * k + j] += ph * f[st];
        }
        if (push) {
            for (int st = S - 1; st >= 1; st--) F[st * stride + j] = f[st] * lam + om * f[st - 1];
            F[j] = f[0] * lam + om * (ph * u[j]);
        }
    }
}

/* xi (d) of hidden layer l of replica rep from its fast weights, and the sample (outputs z0, surprise s0) joins them:
 * one pass over the matrices, each element read for the readout before it is updated.  Only at the sample's last
 * update (push): a leaky network's earlier updates only read (the z of the push is the last update's).  phi (D),
 * u (2d+2) and tmp (S (2d+2)) are scratch. */
static void features_xi_push(const Problem *P, int64_t l, int64_t rep, const real *z0, real s0, real scale, int push,
                             real *phi, real *u, real *tmp, real *xi) {
    int64_t d = P->dims[l + 1], D = P->fm_features, S = P->fm_stages, k = 2 * d + 2, stride = P->replicas * D * k;
    real lam = (real)P->fm_lam;
    fourier(P->fm_omega_t[l + 1], D / 2, z0, d, phi);
    u[0] = 1;
    u[d + 1] = s0;
    for (int64_t i = 0; i < d; i++) { u[1 + i] = z0[i]; u[d + 2 + i] = s0 * z0[i]; }
    memset(tmp, 0, sizeof(real) * S * k);
    real *F = P->fm_fast[l] + rep * D * k;
    for (int64_t i = 0; i < D; i++) {
        real *row = F + i * k;
        switch (S + 4 * push) {
        case 1: fast_row(row, stride, k, phi[i], u, tmp, lam, 1, 0); break;
        case 2: fast_row(row, stride, k, phi[i], u, tmp, lam, 2, 0); break;
        case 3: fast_row(row, stride, k, phi[i], u, tmp, lam, 3, 0); break;
        case 5: fast_row(row, stride, k, phi[i], u, tmp, lam, 1, 1); break;
        case 6: fast_row(row, stride, k, phi[i], u, tmp, lam, 2, 1); break;
        default: fast_row(row, stride, k, phi[i], u, tmp, lam, 3, 1); break;
        }
    }
    real *r = tmp; /* r = sum_st c_st tmp_st, into tmp's first row */
    for (int64_t j = 0; j < k; j++) {
        real v = 0;
        for (int64_t st = 0; st < S; st++) v += (real)P->fm_coef[st] * tmp[st * k + j];
        r[j] = v;
    }
    real coef = (real)(2.0 / (P->sigma_z * P->sigma_z * (double)d) / (double)((P->window - 1) * (P->window - 1)));
    real m = scale * r[0], ms = scale * r[d + 1];
    for (int64_t i = 0; i < d; i++) {
        real v = s0 * (z0[i] * m - scale * r[1 + i]);
        if (P->variant == XI_PAPER) v = v + (z0[i] * ms - scale * r[d + 2 + i]);
        xi[i] = coef * v;
    }
}

/* -- the shared part of a chunk ------------------------------------------------------------ */

/* k(v_hi, v_lo) of two window entries (sequence positions), hi > lo. */
static inline real kval(const Work *w, const real *band, const real *past, int64_t hi, int64_t lo) {
    int64_t M = w->M;
    if (hi == lo) return 1;
    if (hi < lo) { int64_t t = hi; hi = lo; lo = t; }
    if (hi >= M) return band[(hi - M) * M + (lo - hi + M)];
    return past[hi * M + lo];
}

int ibhebb_begin(Problem *P) {
    int64_t N = P->window, M = N - 1, K = P->n_samples, S = M + K, U = K * P->steps;
    int64_t dx = P->dims[0], C = P->dims[P->n_hidden + 1];
    Work *w = calloc(1, sizeof(Work));
    if (!w) return 1;
    w->M = M; w->S = S; w->K = K; w->U = U;
    w->xrow = malloc(sizeof(real *) * S);
    w->yrow = malloc(sizeof(real *) * S);
    w->kxb = malloc(sizeof(real) * (K * M + 1));
    w->kyb = malloc(sizeof(real) * (K * M + 1));
    w->sig = malloc(sizeof(real) * (K * N + 1));
    w->p1 = malloc(sizeof(double) * (U + 1));
    w->p2 = malloc(sizeof(double) * (U + 1));
    w->shared_a = malloc(sizeof(real) * (P->dims[1] + 1));
    w->shared_wx = malloc(sizeof(real) * (P->dims[1] + 1));
    if (!w->shared_a || !w->shared_wx || !w->xrow || !w->yrow || !w->kxb || !w->kyb || !w->sig || !w->p1 || !w->p2) return 1;
    for (int64_t q = 0; q < M; q++) {
        w->xrow[q] = P->past_x + q * dx;
        w->yrow[q] = P->past_y + q * C;
    }
    for (int64_t k = 0; k < K; k++) {
        w->xrow[M + k] = P->x_all + P->order[k] * dx;
        w->yrow[M + k] = P->y_all + P->order[k] * C;
    }
    for (int64_t k = 0; k < K; k++) {
        int64_t t = M + k;
        for (int64_t q = 0; q < M; q++) {
            int64_t p = t - M + q;
            w->kxb[k * M + q] = gauss(sqdist(w->xrow[p], w->xrow[t], dx), P->sigma_x, dx);
            w->kyb[k * M + q] = gauss(sqdist(w->yrow[p], w->yrow[t], C), P->sigma_y, C);
        }
    }
    real *kx = malloc(sizeof(real) * N * N), *ky = malloc(sizeof(real) * N * N);
    if (!kx || !ky) return 1;
    real g = (real)P->gamma;
    for (int64_t k = 0; k < K; k++) {
        int64_t t0 = k; /* the window of sample M+k starts at position k */
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < N; j++) {
                kx[i * N + j] = kval(w, w->kxb, P->kx, t0 + i, t0 + j);
                ky[i * N + j] = kval(w, w->kyb, P->ky, t0 + i, t0 + j);
            }
        real *s = w->sig + k * N;
        if (P->variant == XI_EXACT) {
            real total = 0, last = 0;
            for (int64_t i = 0; i < N; i++) {
                real rowsum = 0;
                for (int64_t j = 0; j < N; j++) rowsum += kx[i * N + j] - g * ky[i * N + j];
                total += rowsum;
                if (i == N - 1) last = rowsum / (real)N;
            }
            total = total / (real)(N * N);
            for (int64_t j = 0; j < N; j++) {
                real colsum = 0;
                for (int64_t i = 0; i < N; i++) colsum += kx[i * N + j] - g * ky[i * N + j];
                real d = kx[(N - 1) * N + j] - g * ky[(N - 1) * N + j];
                s[j] = d - last - colsum / (real)N + total;
            }
        } else {
            for (int64_t i = 0; i < N; i++) {
                real sx = 0, sy = 0;
                for (int64_t j = 0; j < N; j++) { sx += kx[i * N + j]; sy += ky[i * N + j]; }
                s[i] = (1 - sx / (real)N) - g * (1 - sy / (real)N);
            }
        }
    }
    free(kx);
    free(ky);
    if (P->fm_features && features_begin(P, w)) return 1;
    double p1 = P->power1, p2 = P->power2;
    for (int64_t u = 0; u < U; u++) {
        p1 *= P->beta1;
        p2 *= P->beta2;
        w->p1[u] = p1;
        w->p2[u] = p2;
    }
    P->work = w;
    return 0;
}

/* Write the window (last M samples, their kernels) and the step count back; free the chunk's data. */
int ibhebb_end(Problem *P) {
    Work *w = P->work;
    int64_t M = w->M, S = w->S, dx = P->dims[0], C = P->dims[P->n_hidden + 1];
    if (M > 0) {
        real *nx = malloc(sizeof(real) * M * dx), *ny = malloc(sizeof(real) * M * C);
        real *nkx = malloc(sizeof(real) * M * M), *nky = malloc(sizeof(real) * M * M);
        if (!nx || !ny || !nkx || !nky) return 1;
        for (int64_t q = 0; q < M; q++) {
            memcpy(nx + q * dx, w->xrow[S - M + q], sizeof(real) * dx);
            memcpy(ny + q * C, w->yrow[S - M + q], sizeof(real) * C);
            for (int64_t j = 0; j < M; j++) {
                nkx[q * M + j] = kval(w, w->kxb, P->kx, S - M + q, S - M + j);
                nky[q * M + j] = kval(w, w->kyb, P->ky, S - M + q, S - M + j);
            }
        }
        memcpy(P->past_x, nx, sizeof(real) * M * dx);
        memcpy(P->past_y, ny, sizeof(real) * M * C);
        memcpy(P->kx, nkx, sizeof(real) * M * M);
        memcpy(P->ky, nky, sizeof(real) * M * M);
        free(nx); free(ny); free(nkx); free(nky);
    }
    if (w->U > 0) {
        P->power1 = w->p1[w->U - 1];
        P->power2 = w->p2[w->U - 1];
    }
    P->step += (double)w->U;
    free(w->xrow); free(w->yrow); free(w->kxb); free(w->kyb); free(w->sig); free(w->p1); free(w->p2); free(w->shared_a); free(w->shared_wx);
    free(w->fm_s); free(w->fm_scale);
    free(w);
    P->work = NULL;
    return 0;
}

/* -- one replica ----------------------------------------------------------------------------- */

typedef struct {
    real *a[MAXL], *r[MAXL], *z[MAXL], *u[MAXL], *delta[MAXL];
    real *spk[MAXL], *pspk[MAXL];           /* spiking: a layer's spikes (the next one's input); the same when recomputing */
    int64_t *refr[MAXL], *prefr[MAXL];      /* spiking: refractory steps left */
    const real *hin[MAXL];                  /* spiking: the input each layer saw at this update */
    real *h0;                               /* spiking: the input's spikes (an encoding) */
    int32_t *h0_idx; real *h0_val;          /* spiking: the nonzero input spikes (index, value) */
    real *pwx;                              /* recompute: W x of the first layer for a past input */
    real *wx;                               /* W h of the first layer at the next update, from the optimiser's pass */
    int wx_ready;                           /* whether wx (split: the Work's shared_wx) holds it */
    real *zseq[MAXL];       /* buffer: S x d_l, the window's outputs then the chunk's */
    real *pz[MAXL], *pu[MAXL], *pa[MAXL], *pr[MAXL]; /* recompute: M x d_l past outputs; potentials, scratch */
    real *alpha, *xi, *logits, *dout, *gw, *gb;
    real *res_xi[MAXL], *res_in, *res_drive_in, *res_drive; /* reservoir: its xi per layer; input, drives (n) */
    real *fm_phi[MAXL], *fm_r, *fm_tmp;                     /* features memory: phi_z(z^l) (D); readouts (2 dmax + 2) */
    double *stats;                                          /* L x 6: n, sum a, sum b, sum a^2, sum b^2, sum ab */
} Scratch;

typedef struct {
    real decay, one_m_b1, b2, one_m_b2, inv_bias2_sqrt, step_size, eps, lr, wd, momentum;
} OptConst;

static OptConst opt_const(const Problem *P, const Work *w, int64_t pi, int64_t u) {
    OptConst c;
    double lr = P->lr[pi], wd = P->wd[pi];
    c.decay = (real)(1.0 - lr * wd);
    c.one_m_b1 = (real)(1.0 - P->beta1);
    c.b2 = (real)P->beta2;
    c.one_m_b2 = (real)(1.0 - P->beta2);
    c.inv_bias2_sqrt = (real)(1.0 / sqrt(1.0 - w->p2[u]));
    c.step_size = (real)(lr / (1.0 - w->p1[u]));
    c.eps = (real)P->eps;
    c.lr = (real)lr;
    c.wd = (real)wd;
    c.momentum = (real)P->momentum;
    return c;
}

/* One optimiser step of n elements; the gradient is g[j], or (d * h[j]) * sc when g is NULL. */
static void opt_step(int64_t kind, const OptConst *c, real *restrict p, real *restrict m, real *restrict v,
                     const real *restrict g, real d, const real *restrict h, real sc, int64_t n) {
    if (kind == OPT_ADAMW || kind == OPT_ADAM) {
        int adamw = kind == OPT_ADAMW;
#pragma omp simd
        for (int64_t j = 0; j < n; j++) {
            real gj = g ? g[j] : (d * h[j]) * sc;
            real pj = p[j];
            if (adamw) pj = pj * c->decay;
            else gj = gj + c->wd * pj;
            real mj = m[j] + c->one_m_b1 * (gj - m[j]);
            real vj = v[j] * c->b2 + c->one_m_b2 * gj * gj;
            m[j] = mj;
            v[j] = vj;
            p[j] = pj - mj / (sqrt(vj) * c->inv_bias2_sqrt + c->eps) * c->step_size;
        }
    } else if (m) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) {
            real gj = g ? g[j] : (d * h[j]) * sc;
            real bj = m[j] * c->momentum + (gj + c->wd * p[j]);
            m[j] = bj;
            p[j] = p[j] - c->lr * bj;
        }
    } else {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) {
            real gj = g ? g[j] : (d * h[j]) * sc;
            p[j] = p[j] - c->lr * (gj + c->wd * p[j]);
        }
    }
}

static inline real act(real a, int64_t kind) {
    switch (kind) {
    case ACT_RELU: return a > 0 ? a : 0;
    case ACT_TANH: return (real)tanh(a);
    case ACT_SIGMOID: return (real)(1.0 / (1.0 + exp(-(double)a)));
    default: return a;
    }
}

/* Rows [i0, i1) of a = u + leak (W h + b - u) (leaky) or W h + b; wx: W h when already known, else NULL. */
static void layer_drive(const Problem *P, int64_t l, int64_t rep, const real *h, const real *u, const real *wx, real *a,
                        int64_t i0, int64_t i1) {
    int64_t din = P->dims[l], dout = P->dims[l + 1];
    const real *W = P->weight[l] + rep * dout * din;
    const real *b = P->has_bias ? P->bias[l] + rep * dout : NULL;
    real leak = (real)P->leak;
    if (!wx) { /* W h into a first, then a in place */
        if (l == 0) for (int64_t i = i0; i < i1; i++) a[i] = row_dot(W + i * din, h, din);
        else rows_dot(W, dout, din, h, a, i0, i1);
        wx = a;
    }
    for (int64_t i = i0; i < i1; i++) {
        real drive = wx[i];
        if (b) drive = drive + b[i];
        a[i] = P->leak > 0 ? u[i] + leak * (drive - u[i]) : drive;
    }
}

/* z = LN(r) (or r) of a layer of d units. */
static void normalise(const Problem *P, int64_t d, const real *r, real *z) {
    if (!P->layernorm) {
        memcpy(z, r, sizeof(real) * d);
        return;
    }
    real mean = 0, var = 0;
    for (int64_t i = 0; i < d; i++) mean += r[i];
    mean = mean / (real)d;
    for (int64_t i = 0; i < d; i++) { real c = r[i] - mean; z[i] = c; var += c * c; }
    var = var / (real)d;
    real inv = (real)(1.0 / sqrt((double)(var + (real)P->ln_eps)));
    for (int64_t i = 0; i < d; i++) z[i] = z[i] * inv;
}

/* r = act(a), z = LN(r) (or r) of a layer of d units. */
static void layer_output(const Problem *P, int64_t d, const real *a, real *r, real *z) {
    for (int64_t i = 0; i < d; i++) r[i] = act(a[i], P->activation);
    normalise(P, d, r, z);
}

/* The first of `rows` rows that part `part` of `parts` owns. */
static inline int64_t part_row(int64_t rows, int64_t part, int64_t parts) { return rows * part / parts; }

/* -- spiking layers ---------------------------------------------------------------------------- */

/* kappa = d r_t / d s_t of time step t (1-based): 1/t (spike count per step) or dt/tau_syn (trace). */
static inline double spike_kappa(const Problem *P, int64_t t) {
    return P->spk_readout == SPZ_COUNT ? 1.0 / (double)t : P->spk_kappa;
}

/* g[i] = sum over the n active inputs a of W[i, idx[a]] val[a]: the drive of spike input (the zeros skipped),
 * eight rows at a time so that eight sums are in flight. */
static void sparse_drive(const real *restrict W, int64_t din, int64_t dout, const int32_t *restrict idx,
                         const real *restrict val, int64_t n, real *restrict g) {
    int64_t i = 0;
    for (; i + 8 <= dout; i += 8) {
        const real *w = W + i * din;
        real acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int64_t a = 0; a < n; a++) {
            int64_t j = idx[a];
            real v = val[a];
            for (int64_t q = 0; q < 8; q++) acc[q] += w[q * din + j] * v;
        }
        for (int64_t q = 0; q < 8; q++) g[i + q] = acc[q];
    }
    for (; i < dout; i++) {
        real acc = 0;
        for (int64_t a = 0; a < n; a++) acc += W[i * din + idx[a]] * val[a];
        g[i] = acc;
    }
}

/* Rows [i0, i1) of g = W h + b, the drive of spiking layer l of replica rep; wx: W h when already known; idx: when
 * not NULL, h's n nonzero entries (their values in val), the only ones the sum takes. */
static void spiking_drive(const Problem *P, int64_t l, int64_t rep, const real *h, const real *wx, const int32_t *idx,
                          const real *val, int64_t n, real *g, int64_t i0, int64_t i1) {
    int64_t din = P->dims[l], dout = P->dims[l + 1];
    const real *W = P->weight[l] + rep * dout * din;
    const real *b = P->has_bias ? P->bias[l] + rep * dout : NULL;
    if (wx) memcpy(g + i0, wx + i0, sizeof(real) * (i1 - i0));
    else if (idx) sparse_drive(W + i0 * din, din, i1 - i0, idx, val, n, g + i0);
    else if (l == 0) for (int64_t i = i0; i < i1; i++) g[i] = row_dot(W + i * din, h, din);
    else rows_dot(W, dout, din, h, g, i0, i1);
    if (b) for (int64_t i = i0; i < i1; i++) g[i] = g[i] + b[i];
}

/* Time step t of LIF layer l given its drive in g: v, refr, r in place; spikes sp, their derivative in g,
 * z = LN(r).  noise: the layer's uniforms (escape noise) or NULL. */
static void spiking_fire(const Problem *P, int64_t l, int64_t t, real *v, int64_t *refr, real *g, real *r, real *z,
                         real *sp, const real *noise) {
    int64_t dout = P->dims[l + 1];
    real leak = (real)P->leak, thr = (real)P->spk_threshold, k = (real)P->spk_slope, width = (real)P->spk_width;
    real kappa = (real)spike_kappa(P, t), pik = (real)(3.14159265358979323846 * P->spk_slope);
    if (P->spk_firing == FIRE_SURROGATE && P->spk_refractory == 0) { /* the same arithmetic without the branches */
        int fast = P->spk_surrogate == SURR_FAST_SIGMOID, subtract = P->spk_reset != RESET_ZERO;
#pragma omp simd
        for (int64_t i = 0; i < dout; i++) {
            real vp = v[i] + leak * (g[i] - v[i]);
            real x = vp - thr, q = fast ? 1 + k * fabs(x) : pik * x / 2;
            real grad = fast ? 1 / (q * q) : (k / 2) / (1 + q * q), si = (real)(x > 0);
            sp[i] = si;
            g[i] = grad;
            r[i] = r[i] + kappa * (si - r[i]);
            v[i] = subtract ? vp - thr * si : vp * (1 - si);
        }
        normalise(P, dout, r, z);
        return;
    }
    for (int64_t i = 0; i < dout; i++) {
        real drive = g[i];
        int active = refr[i] == 0;
        real vp = active ? v[i] + leak * (drive - v[i]) : v[i];
        real x = vp - thr, fire, grad;
        if (P->spk_firing == FIRE_SURROGATE) {
            fire = (real)(x > 0);
            if (P->spk_surrogate == SURR_FAST_SIGMOID) {
                real q = 1 + k * fabs(x);
                grad = 1 / (q * q);
            } else {
                real q = pik * x / 2;
                grad = (k / 2) / (1 + q * q);
            }
        } else if (P->spk_escape == ESC_SIGMOID) {
            real f = 1 / (1 + exp(-(x / width)));
            fire = (real)(noise[i] < f);
            grad = f * (1 - f) / width;
        } else {
            real q = x / width;
            real f = (real)exp((double)(q < 0 ? q : 0));
            fire = (real)(noise[i] < f);
            grad = x < 0 ? f / width : 0;
        }
        real si = active ? fire : 0;
        sp[i] = si;
        g[i] = active ? grad : 0;
        r[i] = r[i] + kappa * (si - r[i]);
        v[i] = P->spk_reset == RESET_ZERO ? vp * (1 - si) : vp - thr * si;
        refr[i] = si > 0 ? P->spk_refractory : (refr[i] > 0 ? refr[i] - 1 : 0);
    }
    normalise(P, dout, r, z);
}

/* The row of spk_noise of replica rep, chunk sample k, time step t (0-based). */
static inline const real *noise_row(const Problem *P, const Work *w, int64_t rep, int64_t k, int64_t t) {
    return P->spk_noise ? P->spk_noise + ((rep * w->K + k) * P->steps + t) * P->spk_stride : NULL;
}

/* The first layer sums only its active inputs when fewer than 1 in SPARSE_BELOW spike (MNIST pixel intensities:
 * about 1 in 8; at 19 in 20 the gather was 15 % slower per step than the dense dot). */
#define SPARSE_BELOW 4

/* Time step t (0-based) of all hidden layers for chunk sample k at input x (currents or encoded spikes); when
 * `parts` threads share the replica, each sums its rows of the first layer's drive and everyone the rest. */
static void spiking_forward(const Problem *P, Work *w, Scratch *s, int64_t rep, int64_t k, int64_t t, const real *x,
                            const real *wx, int64_t part, int64_t parts) {
    const real *u = noise_row(P, w, rep, k, t);
    const real *h = x, *eta = u ? u + P->spk_in : NULL;
    int64_t n = 0;
    if (P->spk_in) { /* the input's spikes 1[u < |q|] sign(q), q the signed probability; the nonzero ones listed */
        const real *q = P->spk_prob + k * P->spk_in;
        for (int64_t j = 0; j < P->spk_in; j++) {
            real qj = q[j], sj = u[j] < fabs(qj) ? (real)((qj > 0) - (qj < 0)) : 0;
            s->h0[j] = sj;
            s->h0_idx[n] = (int32_t)j; /* branch-free: the slot is kept only if the input spiked */
            s->h0_val[n] = sj;
            n += sj != 0;
        }
        h = s->h0;
    }
    for (int64_t l = 0; l < P->n_hidden; l++) {
        int64_t d = P->dims[l + 1];
        s->hin[l] = h;
        int sparse = l == 0 && P->spk_in && n * SPARSE_BELOW < P->spk_in; /* dense spikes: the SIMD dot is faster */
        const int32_t *idx = sparse ? s->h0_idx : NULL;
        if (l == 0 && parts > 1 && !wx) {
            spiking_drive(P, 0, rep, h, NULL, idx, s->h0_val, n, w->shared_a, part_row(d, part, parts), part_row(d, part + 1, parts));
            barrier_wait(&w->barrier, parts);
            memcpy(s->a[0], w->shared_a, sizeof(real) * d);
        } else {
            spiking_drive(P, l, rep, h, l ? NULL : wx, idx, s->h0_val, n, s->a[l], 0, d);
        }
        spiking_fire(P, l, t + 1, s->u[l], s->refr[l], s->a[l], s->r[l], s->z[l], s->spk[l], P->spk_firing == FIRE_ESCAPE ? eta : NULL);
        if (eta) eta += d;
        h = s->spk[l];
    }
}

/* z = LN(act(a)) of one layer. */
static void layer_forward(const Problem *P, int64_t l, int64_t rep, const real *h, const real *u, const real *wx, real *a,
                          real *r, real *z) {
    layer_drive(P, l, rep, h, u, wx, a, 0, P->dims[l + 1]);
    layer_output(P, P->dims[l + 1], a, r, z);
}

/* The hidden outputs of past inputs with the current weights, T steps from rest (the recompute memory); the first
 * layer's W x is the same at every step, so it is summed once per input. */
static void represent_past(const Problem *P, const Work *w, Scratch *s, int64_t rep, int64_t t) {
    int64_t M = w->M, T = P->steps, d0 = P->dims[0], d1 = P->dims[1];
    const real *W0 = P->weight[0] + rep * d1 * d0;
    for (int64_t q = 0; q < M; q++) {
        const real *x = w->xrow[t - M + q];
        rows_dot(W0, d1, d0, x, s->pwx, 0, d1);
        if (P->spiking) { /* currents and a deterministic threshold only (no noise to replay) */
            for (int64_t l = 0; l < P->n_hidden; l++) {
                int64_t d = P->dims[l + 1];
                memset(s->pu[l], 0, sizeof(real) * d);
                memset(s->pr[l], 0, sizeof(real) * d);
                memset(s->prefr[l], 0, sizeof(int64_t) * d);
            }
            for (int64_t step = 0; step < T; step++) {
                const real *h = x;
                for (int64_t l = 0; l < P->n_hidden; l++) {
                    int64_t d = P->dims[l + 1];
                    spiking_drive(P, l, rep, h, l ? NULL : s->pwx, NULL, NULL, 0, s->pa[l], 0, d);
                    spiking_fire(P, l, step + 1, s->pu[l], s->prefr[l], s->pa[l], s->pr[l], s->pz[l] + q * d, s->pspk[l], NULL);
                    h = s->pspk[l];
                }
            }
            continue;
        }
        for (int64_t l = 0; l < P->n_hidden; l++) memset(s->pu[l], 0, sizeof(real) * P->dims[l + 1]);
        for (int64_t step = 0; step < T; step++) {
            const real *h = x;
            for (int64_t l = 0; l < P->n_hidden; l++) {
                int64_t d = P->dims[l + 1];
                real *zq = s->pz[l] + q * d;
                layer_forward(P, l, rep, h, s->pu[l], l ? NULL : s->pwx, s->pa[l], s->pr[l], zq);
                memcpy(s->pu[l], s->pa[l], sizeof(real) * d);
                h = zq;
            }
        }
    }
}

static inline const real *past_row(const Problem *P, const Scratch *s, int64_t l, int64_t t, int64_t M, int64_t q) {
    int64_t d = P->dims[l + 1];
    return P->recompute ? s->pz[l] + q * d : s->zseq[l] + (t - M + q) * d;
}

/* The reservoir memory: advance replica rep's bank res_steps Euler steps with r_i = [x; y; z^l], read xi^l out.
 *   u <- u + leak (gain W_r r + W_in r_i + W_fb r_o - u),  r = tanh(u),  r_o = W_out r,  xi^l = r_o[:d_l] / scale_l */
static void reservoir_xi(const Problem *P, Scratch *s, int64_t rep, const real *x, const real *y) {
    int64_t L = P->n_hidden, R = P->replicas, n = P->res_units, nin = P->res_in, m = P->res_out;
    int64_t dx = P->dims[0], C = P->dims[L + 1];
    real leak = (real)P->res_leak, gain = (real)P->res_gain;
    for (int64_t g = 0; g < L; g++) {
        int64_t d = P->dims[g + 1];
        real *u = P->res_u + (g * R + rep) * n, *r = P->res_r + (g * R + rep) * n, *ro = P->res_ro + (g * R + rep) * m;
        const real *WiT = P->res_w_in_t + g * nin * n;
        const real *Wf = P->res_w_fb + g * n * m, *Wo = P->res_readout + g * m * n;
        const int64_t *start = P->res_rec_start + g * (n + 1);
        const int32_t *col = P->res_rec_col;
        const real *val = P->res_rec_val;
        memset(s->res_in, 0, sizeof(real) * nin);
        memcpy(s->res_in, x, sizeof(real) * dx);
        memcpy(s->res_in + dx, y, sizeof(real) * C);
        memcpy(s->res_in + dx + C, s->z[g], sizeof(real) * d);
        real *din = s->res_drive_in; /* W_in r_i as a sum over the nonzero inputs (most of an image is 0) */
        memset(din, 0, sizeof(real) * n);
        for (int64_t j = 0; j < nin; j++) {
            real v = s->res_in[j];
            if (v == 0) continue;
            const real *column = WiT + j * n;
#pragma omp simd
            for (int64_t i = 0; i < n; i++) din[i] += column[i] * v;
        }
        for (int64_t step = 0; step < P->res_steps; step++) {
            for (int64_t i = 0; i < n; i++) {
                real v = 0;
                int64_t k1 = start[i + 1];
#pragma omp simd reduction(+ : v)
                for (int64_t k = start[i]; k < k1; k++) v += val[k] * r[col[k]];
                if (gain != 1) v = v * gain;
                v = v + din[i];
                if (P->res_feedback) v = v + dot(Wf + i * m, ro, m);
                s->res_drive[i] = v;
            }
            for (int64_t i = 0; i < n; i++) {
                u[i] = u[i] + leak * (s->res_drive[i] - u[i]);
                r[i] = tanh(u[i]);
            }
            rows_dot(Wo, m, n, r, ro, 0, m);
        }
        for (int64_t i = 0; i < d; i++) s->res_xi[g][i] = ro[i] / P->res_scale[g];
    }
}

/* One update of replica rep for the sample at sequence position t (its u-th update of the chunk),
 * or this thread's part of it when `parts` threads share the replica. */
static void update(const Problem *P, Work *w, Scratch *s, int64_t rep, int64_t t, int64_t u, int64_t part, int64_t parts) {
    int64_t L = P->n_hidden, N = P->window, M = w->M, k = t - M, C = P->dims[L + 1];
    const real *x = w->xrow[t];
    int64_t ts = u - k * P->steps; /* the time step within the sample */
    real sc = P->spiking ? (real)(spike_kappa(P, ts + 1) * P->leak) : P->leak > 0 ? (real)P->leak : 1;
    int64_t r0 = part_row(P->dims[1], part, parts), r1 = part_row(P->dims[1], part + 1, parts);
    real *wxbuf = parts > 1 ? w->shared_wx : s->wx; /* split: every part writes its rows, then reads them all */
    const real *wx = s->wx_ready ? wxbuf : NULL;
    /* the first layer's input at the next update where it is known now (currents: the same sample's at the next
     * step, or the next sample's): its W h then comes from the optimiser's pass */
    const real *xnext = NULL;
    if (!(P->spiking && P->spk_in)) xnext = ts + 1 < P->steps ? x : k + 1 < w->K ? w->xrow[t + 1] : NULL;
    if (P->spiking) {
        spiking_forward(P, w, s, rep, k, ts, x, wx, part, parts);
    } else if (parts > 1 && !wx) { /* each part its rows of the first layer, then everyone the whole vector */
        layer_drive(P, 0, rep, x, s->u[0], NULL, w->shared_a, r0, r1);
        barrier_wait(&w->barrier, parts);
        memcpy(s->a[0], w->shared_a, sizeof(real) * P->dims[1]);
        layer_output(P, P->dims[1], s->a[0], s->r[0], s->z[0]);
    }
    if (!P->spiking)
        for (int64_t l = parts > 1 && !wx ? 1 : 0; l < L; l++)
            layer_forward(P, l, rep, l ? s->z[l - 1] : x, s->u[l], l ? NULL : wx, s->a[l], s->r[l], s->z[l]);
    s->wx_ready = 0;
    if (P->recompute) represent_past(P, w, s, rep, t);
    if (P->res_units) reservoir_xi(P, s, rep, x, w->yrow[t]);

    /* xi of each hidden layer, pulled back to its preactivation */
    const real *sig = w->sig + k * N;
    real norm = (real)(1.0 / (double)((N - 1) * (N - 1)));
    for (int64_t l = 0; l < L; l++) {
        int64_t d = P->dims[l + 1];
        const real *z0 = s->z[l];
        real coef = (real)(2.0 / (P->sigma_z * P->sigma_z * (double)d));
        real *xi = s->xi;
        memset(xi, 0, sizeof(real) * d);
        if (P->fm_features) {
            features_xi_push(P, l, rep, z0, w->fm_s[k], w->fm_scale[k], ts == P->steps - 1, s->fm_phi[l], s->fm_r, s->fm_tmp, xi);
        } else if (P->variant == XI_EXACT) {
            for (int64_t q = 0; q < M; q++) {
                const real *zp = past_row(P, s, l, t, M, q);
                real kz = coef * gauss(sqdist(z0, zp, d), P->sigma_z, d);
                for (int64_t i = 0; i < d; i++) xi[i] += sig[q] * (kz * (z0[i] - zp[i]));
            }
            for (int64_t i = 0; i < d; i++) xi[i] = -norm * xi[i];
        } else {
            real *abar = s->alpha; /* sum over p of alpha_p, then the s-weighted sum */
            memset(abar, 0, sizeof(real) * d);
            for (int64_t q = 0; q < M; q++) {
                const real *zp = past_row(P, s, l, t, M, q);
                real kz = coef * gauss(sqdist(z0, zp, d), P->sigma_z, d);
                for (int64_t i = 0; i < d; i++) {
                    real al = kz * (z0[i] - zp[i]);
                    abar[i] += al;
                    xi[i] += sig[q] * al;
                }
            }
            real s0 = sig[N - 1];
            for (int64_t i = 0; i < d; i++) {
                real v = s0 * (abar[i] / (real)N);
                if (P->variant == XI_PAPER) v = v + xi[i] / (real)N;
                xi[i] = norm * v;
            }
        }
        if (P->res_units) { /* use the reservoir's xi; keep score of how well it tracks the true one */
            const real *rx = s->res_xi[l];
            double *st = s->stats + 6 * l;
            for (int64_t i = 0; i < d; i++) {
                double ra = rx[i], tb = xi[i];
                st[0] += 1; st[1] += ra; st[2] += tb; st[3] += ra * ra; st[4] += tb * tb; st[5] += ra * tb;
                xi[i] = rx[i];
            }
        }
        real *cot = s->delta[l];
        const real *a = s->a[l], *r = s->r[l];
        if (P->layernorm) {
            real mean = 0, var = 0, mc = 0, mcz = 0;
            for (int64_t i = 0; i < d; i++) mean += r[i];
            mean = mean / (real)d;
            for (int64_t i = 0; i < d; i++) { real dd = r[i] - mean; var += dd * dd; }
            var = var / (real)d;
            real inv = (real)(1.0 / sqrt((double)(var + (real)P->ln_eps)));
            for (int64_t i = 0; i < d; i++) { mc += xi[i]; mcz += xi[i] * z0[i]; }
            mc = mc / (real)d;
            mcz = mcz / (real)d;
            for (int64_t i = 0; i < d; i++) cot[i] = inv * (xi[i] - mc - z0[i] * mcz);
        } else {
            memcpy(cot, xi, sizeof(real) * d);
        }
        for (int64_t i = 0; i < d; i++) {
            switch (P->activation) {
            case ACT_RELU: cot[i] = cot[i] * (real)(a[i] > 0); break;
            case ACT_TANH: cot[i] = cot[i] * (1 - r[i] * r[i]); break;
            case ACT_SIGMOID: cot[i] = cot[i] * r[i] * (1 - r[i]); break;
            default: break;
            }
        }
        if (P->spiking)
            for (int64_t i = 0; i < d; i++) cot[i] = cot[i] * a[i]; /* a: the spike's derivative */
    }

    /* readout: softmax cross-entropy over the window of the last hidden layer */
    int64_t dL = P->dims[L];
    const real *Wo = P->weight[L] + rep * C * dL;
    const real *bo = P->has_bias ? P->bias[L] + rep * C : NULL;
    memset(s->gw, 0, sizeof(real) * C * dL);
    memset(s->gb, 0, sizeof(real) * C);
    real nread = P->fm_features ? 1 : (real)N; /* the features memory's readout sees the current sample only */
    for (int64_t p = P->fm_features ? N - 1 : 0; p < N; p++) {
        const real *hp = p < M ? past_row(P, s, L - 1, t, M, p) : s->z[L - 1];
        const real *yp = w->yrow[t - M + p];
        real *lg = s->logits, mx = -INFINITY, sum = 0;
        rows_dot(Wo, C, dL, hp, lg, 0, C);
        for (int64_t c = 0; c < C; c++) {
            if (bo) lg[c] = lg[c] + bo[c];
            if (lg[c] > mx) mx = lg[c];
        }
        for (int64_t c = 0; c < C; c++) { lg[c] = (real)exp((double)(lg[c] - mx)); sum += lg[c]; }
        for (int64_t c = 0; c < C; c++) {
            real dc = (lg[c] / sum - yp[c]) / nread;
            s->gb[c] += dc;
            real *row = s->gw + c * dL;
            for (int64_t j = 0; j < dL; j++) row[j] += dc * hp[j];
        }
    }

    /* one optimiser step of every parameter: the parts split the hidden layers' rows, part 0 does the rest */
    if (parts > 1) barrier_wait(&w->barrier, parts); /* nobody reads a weight any more */
    for (int64_t l = 0; l <= L; l++) {
        if (part > 0 && l == L) break;
        int64_t din = P->dims[l], dout = P->dims[l + 1];
        int64_t pw = P->has_bias ? 2 * l : l, pb = 2 * l + 1;
        OptConst cw = opt_const(P, w, pw, u);
        real *W = P->weight[l] + rep * dout * din;
        real *m1 = P->moment1[pw] ? P->moment1[pw] + rep * dout * din : NULL;
        real *m2 = P->moment2[pw] ? P->moment2[pw] + rep * dout * din : NULL;
        if (l < L) {
            const real *h = P->spiking ? s->hin[l] : l ? s->z[l - 1] : x;
            const real *hn = l == 0 ? xnext : NULL;
            for (int64_t i = part_row(dout, part, parts); i < part_row(dout, part + 1, parts); i++) {
                opt_step(P->optim, &cw, W + i * din, m1 ? m1 + i * din : NULL, m2 ? m2 + i * din : NULL, NULL,
                         s->delta[l][i], h, sc, din);
                if (hn) wxbuf[i] = row_dot(W + i * din, hn, din); /* the row is still in the L1 cache */
            }
            if (hn) s->wx_ready = 1;
        } else {
            opt_step(P->optim, &cw, W, m1, m2, s->gw, 0, NULL, 1, dout * din);
        }
        if (P->has_bias && part == 0) {
            OptConst cb = opt_const(P, w, pb, u);
            real *b = P->bias[l] + rep * dout;
            real *b1 = P->moment1[pb] ? P->moment1[pb] + rep * dout : NULL;
            real *b2 = P->moment2[pb] ? P->moment2[pb] + rep * dout : NULL;
            if (l < L) {
                real *g = s->xi; /* free again: delta scaled like the weight gradient */
                for (int64_t i = 0; i < dout; i++) g[i] = s->delta[l][i] * sc;
                opt_step(P->optim, &cb, b, b1, b2, g, 0, NULL, 1, dout);
            } else {
                opt_step(P->optim, &cb, b, b1, b2, s->gb, 0, NULL, 1, dout);
            }
        }
    }
    if (parts > 1) barrier_wait(&w->barrier, parts); /* every weight is updated before the next forward pass */
}

/* Zeroed and 64-byte aligned: a vectorised sum's order depends on its operands' alignment, so
 * scratch memory must not land wherever a thread's allocator puts it (that broke reproducibility). */
static void *alloc_real(int64_t n) {
    size_t bytes = ((size_t)(n > 0 ? n : 1) * sizeof(real) + 63) / 64 * 64;
    void *p = aligned_alloc(64, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

static void free_scratch(Scratch *s, int64_t L) {
    for (int64_t l = 0; l < L; l++) {
        free(s->a[l]); free(s->r[l]); free(s->z[l]); free(s->u[l]); free(s->delta[l]);
        free(s->spk[l]); free(s->pspk[l]); free(s->refr[l]); free(s->prefr[l]);
        free(s->zseq[l]); free(s->pz[l]); free(s->pu[l]); free(s->pa[l]); free(s->pr[l]); free(s->res_xi[l]);
        free(s->fm_phi[l]);
    }
    free(s->fm_r); free(s->fm_tmp);
    free(s->res_in); free(s->res_drive_in); free(s->res_drive); free(s->h0); free(s->h0_idx); free(s->h0_val);
    free(s->pwx); free(s->wx); free(s->alpha); free(s->xi); free(s->logits); free(s->dout); free(s->gw); free(s->gb);
}

/* 0 when every buffer was allocated. */
static int alloc_scratch(const Problem *P, const Work *w, Scratch *s, double *stats) {
    int64_t L = P->n_hidden, M = w->M, S = w->S, N = P->window, C = P->dims[L + 1];
    int64_t dmax = 1;
    for (int64_t l = 1; l <= L + 1; l++) if (P->dims[l] > dmax) dmax = P->dims[l];
    memset(s, 0, sizeof *s);
    int fail = 0;
    for (int64_t l = 0; l < L; l++) {
        int64_t d = P->dims[l + 1];
        fail |= !(s->a[l] = alloc_real(d)) | !(s->r[l] = alloc_real(d)) | !(s->z[l] = alloc_real(d));
        fail |= !(s->u[l] = alloc_real(d)) | !(s->delta[l] = alloc_real(d));
        if (P->spiking) {
            fail |= !(s->spk[l] = alloc_real(d)) | !(s->refr[l] = calloc((size_t)d, sizeof(int64_t)));
            if (P->recompute) fail |= !(s->pspk[l] = alloc_real(d)) | !(s->prefr[l] = calloc((size_t)d, sizeof(int64_t)));
        }
        if (P->recompute) {
            fail |= !(s->pz[l] = alloc_real(M * d)) | !(s->pu[l] = alloc_real(d)) | !(s->pa[l] = alloc_real(d)) | !(s->pr[l] = alloc_real(d));
        } else {
            fail |= !(s->zseq[l] = alloc_real(S * d));
        }
    }
    if (P->recompute) fail |= !(s->pwx = alloc_real(P->dims[1]));
    fail |= !(s->wx = alloc_real(P->dims[1]));
    if (P->spiking) {
        fail |= !(s->h0 = alloc_real(P->dims[0])) | !(s->h0_val = alloc_real(P->dims[0]));
        fail |= !(s->h0_idx = calloc((size_t)P->dims[0], sizeof(int32_t)));
    }
    fail |= !(s->alpha = alloc_real(dmax)) | !(s->xi = alloc_real(dmax)) | !(s->logits = alloc_real(C));
    fail |= !(s->dout = alloc_real(N * C)) | !(s->gw = alloc_real(C * P->dims[L])) | !(s->gb = alloc_real(C));
    s->stats = stats;
    if (P->res_units) {
        for (int64_t l = 0; l < L; l++) fail |= !(s->res_xi[l] = alloc_real(P->dims[l + 1]));
        fail |= !(s->res_in = alloc_real(P->res_in)) | !(s->res_drive_in = alloc_real(P->res_units)) | !(s->res_drive = alloc_real(P->res_units));
    }
    if (P->fm_features) {
        for (int64_t l = 0; l < L; l++) fail |= !(s->fm_phi[l] = alloc_real(P->fm_features));
        fail |= !(s->fm_r = alloc_real(2 * dmax + 2)) | !(s->fm_tmp = alloc_real(3 * (2 * dmax + 2)));
    }
    return fail;
}

/* Replica rep over the whole chunk (this thread's part of it). */
static void train_replica(const Problem *P, Work *w, Scratch *s, int64_t rep, int64_t part, int64_t parts) {
    int64_t L = P->n_hidden, M = w->M, S = w->S, K = w->K, T = P->steps;
    s->wx_ready = 0;
    if (!P->recompute)
        for (int64_t l = 0; l < L; l++)
            memcpy(s->zseq[l], P->past_z[l] + rep * M * P->dims[l + 1], sizeof(real) * M * P->dims[l + 1]);
    for (int64_t k = 0; k < K; k++) {
        int64_t t = M + k;
        for (int64_t l = 0; l < L; l++) memset(s->u[l], 0, sizeof(real) * P->dims[l + 1]);
        if (P->spiking) /* every sample starts from rest: potential, readout, refractory count */
            for (int64_t l = 0; l < L; l++) {
                memset(s->r[l], 0, sizeof(real) * P->dims[l + 1]);
                memset(s->refr[l], 0, sizeof(int64_t) * P->dims[l + 1]);
            }
        for (int64_t step = 0; step < T; step++) {
            update(P, w, s, rep, t, k * T + step, part, parts);
            if (T > 1 && !P->spiking)
                for (int64_t l = 0; l < L; l++) memcpy(s->u[l], s->a[l], sizeof(real) * P->dims[l + 1]);
        }
        if (!P->recompute)
            for (int64_t l = 0; l < L; l++)
                memcpy(s->zseq[l] + t * P->dims[l + 1], s->z[l], sizeof(real) * P->dims[l + 1]);
    }
    if (!P->recompute && part == 0)
        for (int64_t l = 0; l < L; l++)
            memcpy(P->past_z[l] + rep * M * P->dims[l + 1], s->zseq[l] + (S - M) * P->dims[l + 1], sizeof(real) * M * P->dims[l + 1]);
}

int ibhebb_replicas(Problem *P, int64_t r0, int64_t r1, double *stats) {
    FpMode mode = flush_subnormals();
    Work *w = P->work;
    Scratch s;
    int fail = alloc_scratch(P, w, &s, stats);
    if (!fail)
        for (int64_t rep = r0; rep < r1; rep++) train_replica(P, w, &s, rep, 0, 1);
    free_scratch(&s, P->n_hidden);
    fp_set(mode);
    return fail;
}

/* Part `part` of P->parts of replica rep (one thread each; the reservoir memory does not split). */
int ibhebb_part(Problem *P, int64_t rep, int64_t part, double *stats) {
    FpMode mode = flush_subnormals();
    Work *w = P->work;
    Scratch s;
    if (alloc_scratch(P, w, &s, part == 0 ? stats : NULL)) atomic_store(&w->failed, 1);
    barrier_wait(&w->barrier, P->parts); /* all or none: a part that could not start must not leave the others waiting */
    int fail = (int)atomic_load(&w->failed);
    if (!fail) train_replica(P, w, &s, rep, part, P->parts);
    free_scratch(&s, P->n_hidden);
    fp_set(mode);
    return fail;
}

/* What the Python binding checks its ctypes mirror of Problem against. */
int64_t ibhebb_problem_size(void) { return (int64_t)sizeof(Problem); }
int64_t ibhebb_real_size(void) { return (int64_t)sizeof(real); }
