/* tensor/ops.c: kernels of the forward pass. Matrix products go to tensor/matmul.c
 * (our kernels and OpenBLAS); everything else is plain loops the compiler can
 * vectorize. No allocation and no global state, so any thread may call any of these. */
#include "tensor/ops.h"

#include <errno.h>
#include <math.h>

#include "tensor/matmul.h"

int exo_matmul(float *y, const float *x, int n, const struct exo_weight *w, const float *bias,
               int accumulate)
{
  /* Any stored dtype; buffers for half/quantized weights are allocated per call here
   * (the forward pass reserves a workspace and calls exo_matmul_ex instead). */
  return exo_matmul_ex(NULL, y, x, n, w, bias, accumulate);
}

void exo_rmsnorm(float *out, const float *x, const float *weight, int n_rows, int dim, float eps)
{
  for (int r = 0; r < n_rows; r++) {
    const float *xr = x + (size_t)r * dim;
    float *o = out + (size_t)r * dim;
    double ss = 0.0;
    for (int i = 0; i < dim; i++)
      ss += (double)xr[i] * xr[i];
    /* HF: x * rsqrt(mean + eps) in f32, then weight * that. */
    const float scale = (float)(1.0 / sqrt(ss / dim + eps));
    for (int i = 0; i < dim; i++)
      o[i] = weight[i] * (xr[i] * scale);
  }
}

int exo_rope_inv_freq(const struct exo_model_config *cfg, float *inv_freq)
{
  const int hd = cfg->head_dim;
  if (hd <= 0 || hd % 2 || !(cfg->rope_theta > 0.0f))
    return -EINVAL;
  /* As HF does it, all in f32: 1 / theta ** (float(2j) / hd). The last bit matters
   * little for accuracy but makes our angles the reference's angles. */
  for (int j = 0; j < hd / 2; j++)
    inv_freq[j] = 1.0f / powf(cfg->rope_theta, (float)(2 * j) / (float)hd);
  switch (cfg->rope_scaling) {
  case EXO_ROPE_SCALING_NONE:
    return 0;
  case EXO_ROPE_SCALING_LINEAR:
    /* HF divides positions by factor; dividing the frequency is the same angle. */
    if (!(cfg->rope_factor > 0.0f))
      return -EINVAL;
    for (int j = 0; j < hd / 2; j++)
      inv_freq[j] = inv_freq[j] / cfg->rope_factor;
    return 0;
  case EXO_ROPE_SCALING_LLAMA3: {
    const double factor = cfg->rope_factor, lo = cfg->rope_low_freq_factor,
                 hi = cfg->rope_high_freq_factor, old = cfg->rope_original_max_position;
    if (!(factor > 0.0) || !(lo > 0.0) || !(hi > lo) || !(old > 0.0))
      return -EINVAL;
    const double lo_wavelen = old / lo, hi_wavelen = old / hi;
    for (int j = 0; j < hd / 2; j++) {
      const double f = inv_freq[j], wavelen = 2.0 * M_PI / f;
      double g;
      if (wavelen < hi_wavelen)
        g = f; /* high frequencies: untouched */
      else if (wavelen > lo_wavelen)
        g = f / factor; /* low frequencies: fully scaled */
      else {
        const double smooth = (old / wavelen - lo) / (hi - lo);
        g = (1.0 - smooth) * f / factor + smooth * f;
      }
      inv_freq[j] = (float)g;
    }
    return 0;
  }
  }
  return -EINVAL;
}

void exo_rope_apply(float *x, int n_heads, int head_dim, int pos, const float *inv_freq)
{
  const int half = head_dim / 2;
  for (int j = 0; j < half; j++) {
    /* HF forms the angle as an f32 product, then cos/sin of it. */
    const float a = (float)pos * inv_freq[j];
    const float c = (float)cos((double)a), s = (float)sin((double)a);
    for (int h = 0; h < n_heads; h++) {
      float *u = x + (size_t)h * head_dim;
      const float u0 = u[j], u1 = u[j + half];
      u[j] = u0 * c - u1 * s;
      u[j + half] = u1 * c + u0 * s;
    }
  }
}

void exo_softmax(float *x, int n)
{
  float max = x[0];
  for (int i = 1; i < n; i++)
    if (x[i] > max)
      max = x[i];
  double sum = 0.0;
  for (int i = 0; i < n; i++) {
    x[i] = expf(x[i] - max);
    sum += x[i];
  }
  const float inv = (float)(1.0 / sum);
  for (int i = 0; i < n; i++)
    x[i] *= inv;
}

void exo_silu_mul(float *gate, const float *up, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    const float g = gate[i];
    gate[i] = g / (1.0f + expf(-g)) * up[i];
  }
}
