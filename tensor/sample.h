/* tensor/sample.h: picking the next token from logits: greedy, temperature, top-k,
 * top-p, min-p, repetition / presence / frequency penalties. Randomness is a pure
 * function of (seed, request id, position), so a retried step (another node, a replay
 * after a failure) draws the same token. Knows nothing of actors or models. */
#ifndef EXO_TENSOR_SAMPLE_H
#define EXO_TENSOR_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

struct exo_sample_params {
  float temperature;        /* <= 0: greedy (argmax after penalties, lowest id on ties) */
  int top_k;                /* 0: off; else keep the k most likely */
  float top_p;              /* >= 1: off; else the smallest set whose mass reaches top_p */
  float min_p;              /* 0: off; else drop p < min_p * p_max */
  float repetition_penalty; /* 1: off; HF: over the whole history, a seen token's
                               logit is divided by it when positive, multiplied when not */
  float presence_penalty;   /* 0: off; OpenAI: minus this once per generated token seen */
  float frequency_penalty;  /* 0: off; OpenAI: minus this per generated occurrence */
  uint64_t seed;
};

/* Greedy, every filter and penalty off, seed 0. */
void exo_sample_params_default(struct exo_sample_params *p);
/* Returns 0 or -EINVAL naming the bad field and its value in err. */
int exo_sample_params_check(const struct exo_sample_params *p, char *err, size_t errlen);

/* The counter-based generator: a 64-bit hash of the key, and a uniform double in [0, 1)
 * made from it. Same key, same value, on every machine. */
uint64_t exo_sample_hash(uint64_t seed, uint64_t request_id, int64_t position);
double exo_sample_uniform(uint64_t seed, uint64_t request_id, int64_t position);

struct exo_sampler; /* work buffers for one vocabulary size; one per thread */

int exo_sampler_new(int vocab_size, struct exo_sampler **out); /* 0, -EINVAL, -ENOMEM */
void exo_sampler_free(struct exo_sampler *s);                  /* NULL ok */

/* The distribution a sample is drawn from. logits[vocab] is modified in place
 * (penalties, temperature). history[n_history] are the ids so far; the repetition
 * penalty looks at all of them, presence and frequency only at history[n_prompt..]
 * (the generated ones). On return ids[n] / probs[n] (owned by s, valid until the next
 * call) list the surviving tokens, most likely first, probs summing to 1; greedy gives
 * one token with probability 1. Returns 0 or -EINVAL (a history id outside the vocab,
 * bad params). */
int exo_sampler_distribution(struct exo_sampler *s, const struct exo_sample_params *p,
                             float *logits, const int32_t *history, size_t n_history,
                             size_t n_prompt, const int32_t **ids, const float **probs, int *n);

/* Draws the token for (p->seed, request_id, position) from that distribution into *out.
 * Same returns as exo_sampler_distribution. */
int exo_sampler_sample(struct exo_sampler *s, const struct exo_sample_params *p, float *logits,
                       const int32_t *history, size_t n_history, size_t n_prompt,
                       uint64_t request_id, int64_t position, int32_t *out);

#endif
