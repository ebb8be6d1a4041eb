/* tensor/ops.h: the numeric kernels of the forward pass: RMSNorm, RoPE (HF rotate_half
 * layout; default, linear and llama3 frequency scaling), softmax, SiLU-gating and the
 * matrix product y = x . W^T (tensor/matmul.c). Pure functions over caller buffers: no
 * allocation, no state, nothing about models beyond the exo_weight view. */
#ifndef EXO_TENSOR_OPS_H
#define EXO_TENSOR_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/model.h"

/* y[n, w->rows] = x[n, w->cols] . W^T (+ bias[w->rows] when bias != NULL).
 * accumulate != 0 adds the product to y instead (residual connections).
 * W may be any stored dtype (tensor/matmul.h). Returns 0, -ENOTSUP (dtype or shape the
 * kernels do not take), -ENOMEM. */
int exo_matmul(float *y, const float *x, int n, const struct exo_weight *w, const float *bias,
               int accumulate);

/* out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, for n_rows rows of dim floats.
 * out may equal x. */
void exo_rmsnorm(float *out, const float *x, const float *weight, int n_rows, int dim, float eps);

/* Fills inv_freq[head_dim / 2] as HF computes it (float32 frequencies), with the
 * config's scaling (none, linear, llama3) applied. Returns 0 or -EINVAL (odd head_dim,
 * bad scaling parameters). */
int exo_rope_inv_freq(const struct exo_model_config *cfg, float *inv_freq);

/* Rotates n_heads heads of head_dim floats in place for position pos: pairs
 * (j, j + head_dim/2), angle pos * inv_freq[j] (rotate_half, not interleaved). */
void exo_rope_apply(float *x, int n_heads, int head_dim, int pos, const float *inv_freq);

/* In-place softmax over n floats, max-subtracted, f32 (sum in double). */
void exo_softmax(float *x, int n);

/* gate[i] = silu(gate[i]) * up[i], silu(g) = g * sigmoid(g). */
void exo_silu_mul(float *gate, const float *up, size_t n);

#endif
