/* tensor/sample.c: token selection. Order of operations (as HF's logits processors):
 * penalties -> (greedy stops here) -> temperature -> sort -> top-k -> softmax -> top-p
 * -> min-p -> renormalize -> inverse-CDF draw with the keyed uniform.
 * No global state: the only randomness is exo_sample_uniform of the caller's key. */
#include "common/err.h"
#include "tensor/sample.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct exo_sampler {
  int vocab;
  int32_t *ids;     /* (vocab) candidate ids, sorted by logit descending */
  float *probs;     /* (vocab) their probabilities */
  int32_t *counts;  /* (vocab) generated occurrences; all zero between calls */
  uint8_t *seen;    /* (vocab) 1 if in history; all zero between calls */
};

void exo_sample_params_default(struct exo_sample_params *p)
{
  memset(p, 0, sizeof *p);
  p->top_p = 1.0f;
  p->repetition_penalty = 1.0f;
}

int exo_sample_params_check(const struct exo_sample_params *p, char *err, size_t errlen)
{
  if (!isfinite(p->temperature) || p->temperature < 0.0f) {
    exo_errf(err, errlen, "temperature: expected a finite number >= 0, got %g",
                   (double)p->temperature);
    return -EINVAL;
  }
  if (p->top_k < 0) {
    exo_errf(err, errlen, "top_k: expected >= 0, got %d", p->top_k);
    return -EINVAL;
  }
  if (!(p->top_p > 0.0f && p->top_p <= 1.0f)) {
    exo_errf(err, errlen, "top_p: expected a number in (0, 1], got %g", (double)p->top_p);
    return -EINVAL;
  }
  if (!(p->min_p >= 0.0f && p->min_p <= 1.0f)) {
    exo_errf(err, errlen, "min_p: expected a number in [0, 1], got %g", (double)p->min_p);
    return -EINVAL;
  }
  if (!(p->repetition_penalty > 0.0f) || !isfinite(p->repetition_penalty)) {
    exo_errf(err, errlen, "repetition_penalty: expected a finite number > 0, got %g",
                   (double)p->repetition_penalty);
    return -EINVAL;
  }
  if (!isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty)) {
    exo_errf(err, errlen, "presence/frequency penalty: expected finite numbers");
    return -EINVAL;
  }
  return 0;
}

/* splitmix64's finalizer: a bijection with full avalanche. */
static uint64_t exo_sample_mix(uint64_t z)
{
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t exo_sample_hash(uint64_t seed, uint64_t request_id, int64_t position)
{
  /* Chained so that no two key fields can cancel each other (a plain xor of the three
   * would map (s, r, p) and (r, s, p) to the same value). */
  const uint64_t golden = 0x9e3779b97f4a7c15ull;
  uint64_t h = exo_sample_mix(seed + golden);
  h = exo_sample_mix(h ^ (request_id + 2 * golden));
  h = exo_sample_mix(h ^ ((uint64_t)position + 3 * golden));
  return h;
}

double exo_sample_uniform(uint64_t seed, uint64_t request_id, int64_t position)
{
  return (double)(exo_sample_hash(seed, request_id, position) >> 11) * 0x1.0p-53;
}

int exo_sampler_new(int vocab_size, struct exo_sampler **out)
{
  *out = NULL;
  if (vocab_size <= 0)
    return -EINVAL;
  struct exo_sampler *s = calloc(1, sizeof *s);
  if (!s)
    return -ENOMEM;
  s->vocab = vocab_size;
  s->ids = malloc((size_t)vocab_size * sizeof *s->ids);
  s->probs = malloc((size_t)vocab_size * sizeof *s->probs);
  s->counts = calloc((size_t)vocab_size, sizeof *s->counts);
  s->seen = calloc((size_t)vocab_size, 1);
  if (!s->ids || !s->probs || !s->counts || !s->seen) {
    exo_sampler_free(s);
    return -ENOMEM;
  }
  *out = s;
  return 0;
}

void exo_sampler_free(struct exo_sampler *s)
{
  if (!s)
    return;
  free(s->ids);
  free(s->probs);
  free(s->counts);
  free(s->seen);
  free(s);
}

static void exo_sample_penalize(struct exo_sampler *s, const struct exo_sample_params *p,
                                float *logits, const int32_t *history, size_t n_history,
                                size_t n_prompt)
{
  if (p->repetition_penalty != 1.0f) {
    for (size_t i = 0; i < n_history; i++) {
      const int32_t id = history[i];
      if (s->seen[id])
        continue; /* once per distinct token, as HF's gather/scatter does */
      s->seen[id] = 1;
      logits[id] = logits[id] > 0.0f ? logits[id] / p->repetition_penalty
                                     : logits[id] * p->repetition_penalty;
    }
    for (size_t i = 0; i < n_history; i++)
      s->seen[history[i]] = 0;
  }
  if (p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f) {
    for (size_t i = n_prompt; i < n_history; i++)
      s->counts[history[i]]++;
    for (size_t i = n_prompt; i < n_history; i++) {
      const int32_t id = history[i];
      if (!s->counts[id])
        continue; /* already applied for this id */
      logits[id] -= p->presence_penalty + p->frequency_penalty * (float)s->counts[id];
      s->counts[id] = 0;
    }
  }
}

/* qsort_r comparator: logits descending, then id ascending (a total order, so equal
 * logits sort the same everywhere). */
static int exo_sample_cmp(const void *a, const void *b, void *ctx)
{
  const float *logits = ctx;
  const int32_t ia = *(const int32_t *)a, ib = *(const int32_t *)b;
  const float la = logits[ia], lb = logits[ib];
  if (la != lb)
    return la > lb ? -1 : 1;
  return ia < ib ? -1 : ia > ib;
}

int exo_sampler_distribution(struct exo_sampler *s, const struct exo_sample_params *p,
                             float *logits, const int32_t *history, size_t n_history,
                             size_t n_prompt, const int32_t **ids, const float **probs, int *n)
{
  *n = 0;
  if (exo_sample_params_check(p, NULL, 0) || n_prompt > n_history)
    return -EINVAL;
  for (size_t i = 0; i < n_history; i++)
    if (history[i] < 0 || history[i] >= s->vocab)
      return -EINVAL;
  exo_sample_penalize(s, p, logits, history, n_history, n_prompt);

  if (p->temperature <= 0.0f) {
    int best = 0;
    for (int i = 1; i < s->vocab; i++)
      if (logits[i] > logits[best])
        best = i;
    s->ids[0] = best;
    s->probs[0] = 1.0f;
    *ids = s->ids;
    *probs = s->probs;
    *n = 1;
    return 0;
  }

  const float inv_t = 1.0f / p->temperature;
  for (int i = 0; i < s->vocab; i++) {
    logits[i] *= inv_t;
    s->ids[i] = i;
  }
  qsort_r(s->ids, (size_t)s->vocab, sizeof *s->ids, exo_sample_cmp, logits);

  int m = s->vocab;
  if (p->top_k > 0 && p->top_k < m)
    m = p->top_k;
  /* Softmax over the survivors; ids[0] holds the max. */
  const float max = logits[s->ids[0]];
  double sum = 0.0;
  for (int i = 0; i < m; i++) {
    s->probs[i] = expf(logits[s->ids[i]] - max);
    sum += s->probs[i];
  }
  for (int i = 0; i < m; i++)
    s->probs[i] = (float)(s->probs[i] / sum);
  if (p->top_p < 1.0f) {
    /* Keep token i while the mass before it is still short of top_p. */
    double cum = 0.0;
    int keep = 0;
    while (keep < m && cum < p->top_p)
      cum += s->probs[keep++];
    m = keep;
  }
  if (p->min_p > 0.0f) {
    const float floor = p->min_p * s->probs[0];
    int keep = 1;
    while (keep < m && s->probs[keep] >= floor)
      keep++;
    m = keep;
  }
  sum = 0.0;
  for (int i = 0; i < m; i++)
    sum += s->probs[i];
  for (int i = 0; i < m; i++)
    s->probs[i] = (float)(s->probs[i] / sum);
  *ids = s->ids;
  *probs = s->probs;
  *n = m;
  return 0;
}

int exo_sampler_sample(struct exo_sampler *s, const struct exo_sample_params *p, float *logits,
                       const int32_t *history, size_t n_history, size_t n_prompt,
                       uint64_t request_id, int64_t position, int32_t *out)
{
  const int32_t *ids;
  const float *probs;
  int n;
  int rc = exo_sampler_distribution(s, p, logits, history, n_history, n_prompt, &ids, &probs, &n);
  if (rc)
    return rc;
  if (n == 1) {
    *out = ids[0];
    return 0;
  }
  const double u = exo_sample_uniform(p->seed, request_id, position);
  double cum = 0.0;
  for (int i = 0; i < n; i++) {
    cum += probs[i];
    if (u < cum) {
      *out = ids[i];
      return 0;
    }
  }
  *out = ids[n - 1]; /* rounding left cum a hair under 1 */
  return 0;
}
