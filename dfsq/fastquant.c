/* Fused DFSQ activation fake-quantization for CPU float32 tensors (see dfsq/fastquant.py).
 *
 * Bit-identical to the torch reference in dfsq/quantize.py by construction: every operation is one correctly
 * rounded IEEE float32 operation in the reference's order (compiled with -ffp-contract=off and without
 * -ffast-math, so no FMA contraction and no reassociation):
 *   d = x - mean;  v = d / scale;  code = #{j : mid[j] < v};  xq = points[code] * scale + mean.
 * The per-channel mean stays with torch (its summation order); the max |x - mean| is exact in any order.
 */
#include <math.h>
#include <stdint.h>

/* For the (n, c) planes p0 <= p < p1 of `hw` floats each: maxabs[p] = max |x - mean[p]| (NaN if any is NaN).
 * Callers split the planes over threads (ctypes releases the GIL). */
void dfsq_maxabs(const float *x, const float *mean, float *maxabs, int64_t p0, int64_t p1, int64_t hw)
{
    for (int64_t p = p0; p < p1; p++) {
        const float *xp = x + p * hw;
        const float m = mean[p];
        float best = 0.0f;
        int nan = 0;
        for (int64_t i = 0; i < hw; i++) {
            float a = fabsf(xp[i] - m);
            nan |= a != a;
            best = a > best ? a : best;
        }
        maxabs[p] = nan ? NAN : best;
    }
}

/* Planes p0 <= p < p1; plane p = n * channels + c uses mid[c, 0 .. k-2] (ascending) and points[c, 0 .. k-1],
 * k = 2^bits. The code is the count of midpoints strictly below v (torch.searchsorted side='left'): up to 16
 * points by counting over a block of values (the compiler vectorizes it), above by a branch-free binary search of
 * `bits` steps. A NaN v compares false everywhere and takes code 0 (its xq is NaN anyway). */
#define BLOCK 512
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
__attribute__((target_clones("avx2", "default")))
#endif
void dfsq_fake_quant(const float *x, const float *mean, const float *scale, const float *mid, const float *points,
                     float *out, int64_t p0, int64_t p1, int64_t channels, int64_t hw, int bits)
{
    const int64_t k = (int64_t)1 << bits;
    float v[BLOCK];
    int32_t code[BLOCK];
    for (int64_t p = p0; p < p1; p++) {
        const int64_t c = p % channels;
        const float *xp = x + p * hw;
        float *op = out + p * hw;
        const float *md = mid + c * (k - 1);
        const float *pt = points + c * k;
        const float m = mean[p], s = scale[p];
        for (int64_t i0 = 0; i0 < hw; i0 += BLOCK) {
            const int n = (int)(hw - i0 < BLOCK ? hw - i0 : BLOCK);
            for (int i = 0; i < n; i++)
                v[i] = (xp[i0 + i] - m) / s;
            if (bits <= 4) {
                for (int i = 0; i < n; i++)
                    code[i] = 0;
                for (int64_t j = 0; j < k - 1; j++) {
                    const float mj = md[j];
                    for (int i = 0; i < n; i++)
                        code[i] += mj < v[i];
                }
            } else {
                for (int i = 0; i < n; i++) {
                    int32_t cd = 0;
                    for (int32_t step = (int32_t)(k >> 1); step > 0; step >>= 1)
                        cd += (md[cd + step - 1] < v[i]) ? step : 0;
                    code[i] = cd;
                }
            }
            for (int i = 0; i < n; i++) {
                const float q = pt[code[i]] * s;
                op[i0 + i] = q + m;
            }
        }
    }
}

/* Min-Max / uniform fake-quantization of planes p0 <= p < p1 (plane p = n * channels + c), as the torch path of
 * QuantConv.quantize_act: q = clamp(round_half_even(x / step[c]) + zero[c], 0, qmax); out = (q - zero[c]) * step[c].
 * nearbyintf under the default rounding mode rounds half to even, as torch.round; the clamp keeps NaN. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
__attribute__((target_clones("avx2", "default")))
#endif
void dfsq_uniform_fake_quant(const float *x, const float *step, const float *zero, float *out, int64_t p0,
                             int64_t p1, int64_t channels, int64_t hw, float qmax)
{
    for (int64_t p = p0; p < p1; p++) {
        const int64_t c = p % channels;
        const float *xp = x + p * hw;
        float *op = out + p * hw;
        const float s = step[c], z = zero[c];
        for (int64_t i = 0; i < hw; i++) {
            float q = nearbyintf(xp[i] / s) + z;
            q = q < 0.0f ? 0.0f : (q > qmax ? qmax : q);
            op[i] = (q - z) * s;
        }
    }
}
