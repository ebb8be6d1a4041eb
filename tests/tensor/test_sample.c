/* tests/tensor/test_sample.c: token selection against hand-computed small cases:
 * greedy ties, penalties (repetition over the whole history, presence/frequency over
 * generated ids only), temperature, top-k, top-p, min-p, and the keyed generator
 * (same key same draw, draws follow the distribution, keys do not collide by symmetry). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/sample.h"
#include "tests/test.h"

static struct exo_sampler *g_s;

static void test_greedy_ties(void)
{
  struct exo_sample_params p;
  exo_sample_params_default(&p);
  float logits[5] = {1.0f, 3.0f, -2.0f, 3.0f, 0.0f};
  int32_t id = -1;
  CHECK_INT_EQ(exo_sampler_sample(g_s, &p, logits, NULL, 0, 0, 7, 0, &id), 0);
  CHECK_INT_EQ(id, 1); /* first of the two maxima, like torch.argmax */
  /* The seed does not matter for greedy. */
  p.seed = 99;
  float l2[5] = {1.0f, 3.0f, -2.0f, 3.0f, 0.0f};
  CHECK_INT_EQ(exo_sampler_sample(g_s, &p, l2, NULL, 0, 0, 8, 3, &id), 0);
  CHECK_INT_EQ(id, 1);
}

static void test_penalties(void)
{
  struct exo_sample_params p;
  exo_sample_params_default(&p);
  p.repetition_penalty = 2.0f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  float logits[5] = {2.0f, -1.0f, 0.5f, 3.0f, 1.0f};
  /* history: prompt [3], generated [0, 1, 0] */
  const int32_t hist[4] = {3, 0, 1, 0};
  const int32_t *ids;
  const float *probs;
  int n;
  CHECK_INT_EQ(exo_sampler_distribution(g_s, &p, logits, hist, 4, 1, &ids, &probs, &n), 0);
  CHECK_NEAR(logits[0], 2.0 / 2 - 0.5 - 0.25 * 2, 1e-7); /* 0 */
  CHECK_NEAR(logits[1], -1.0 * 2 - 0.5 - 0.25 * 1, 1e-7); /* -2.75 */
  CHECK_NEAR(logits[2], 0.5, 0.0);                        /* unseen */
  CHECK_NEAR(logits[3], 3.0 / 2, 1e-7); /* prompt: repetition only, no presence */
  CHECK_NEAR(logits[4], 1.0, 0.0);
  CHECK_INT_EQ(n, 1);
  CHECK_INT_EQ(ids[0], 3); /* greedy after penalties: 1.5 beats 1.0 */
  /* The work arrays are clean again: the same call with no history changes nothing. */
  float l2[5] = {2.0f, -1.0f, 0.5f, 3.0f, 1.0f};
  CHECK_INT_EQ(exo_sampler_distribution(g_s, &p, l2, hist, 0, 0, &ids, &probs, &n), 0);
  CHECK(l2[0] == 2.0f && l2[1] == -1.0f && l2[3] == 3.0f);
  /* Bad history ids and a prompt longer than the history are refused. */
  const int32_t bad[2] = {0, 5};
  CHECK_INT_EQ(exo_sampler_distribution(g_s, &p, l2, bad, 2, 0, &ids, &probs, &n), -EINVAL);
  CHECK_INT_EQ(exo_sampler_distribution(g_s, &p, l2, hist, 2, 3, &ids, &probs, &n), -EINVAL);
}

static void test_temperature_topk(void)
{
  struct exo_sample_params p;
  exo_sample_params_default(&p);
  const int32_t *ids;
  const float *probs;
  int n;
  /* T = 0.5 on [0, ln 2]: [0, 2 ln 2] -> probs 1/5, 4/5 (others at -inf-ish). */
  p.temperature = 0.5f;
  float l1[5] = {0.0f, (float)M_LN2, -1e30f, -1e30f, -1e30f};
  CHECK_INT_EQ(exo_sampler_distribution(g_s, &p, l1, NULL, 0, 0, &ids, &probs, &n), 0);
  CHECK_INT_EQ(ids[0], 1);
  CHECK_NEAR(probs[0], 0.8, 1e-6);
  CHECK_INT_EQ(ids[1], 0);
  CHECK_NEAR(probs[1], 0.2, 1e-6);
  /* top-k 2 of [1, 2, 3, 0, 2]: ids 2 then 1 (tie with 4 goes to the lower id). */
  p.temperature = 1.0f;
  p.top_k = 2;
  float l2[5] = {1.0f, 2.0f, 3.0f, 0.0f, 2.0f};
  CHECK_INT_EQ(exo_sampler_distribution(g_s, &p, l2, NULL, 0, 0, &ids, &probs, &n), 0);
  CHECK_INT_EQ(n, 2);
  CHECK_INT_EQ(ids[0], 2);
  CHECK_INT_EQ(ids[1], 1);
  CHECK_NEAR(probs[0], 1.0 / (1.0 + exp(-1.0)), 1e-6);
  CHECK_NEAR(probs[1], exp(-1.0) / (1.0 + exp(-1.0)), 1e-6);
}

static void set_probs(float *l, const double *pr, int n)
{
  for (int i = 0; i < n; i++)
    l[i] = (float)log(pr[i]);
}

static void test_top_p_min_p(void)
{
  struct exo_sample_params p;
  exo_sample_params_default(&p);
  p.temperature = 1.0f;
  const double pr[5] = {0.05, 0.5, 0.15, 0.3, 0.0001};
  float l[5];
  const int32_t *ids;
  const float *probs;
  int n;
  /* top-p 0.7: mass before id 1 is 0 < 0.7, before id 3 is 0.5 < 0.7, before id 2 is
   * 0.8: stop. Survivors 1, 3 renormalized: 0.5/0.8, 0.3/0.8. */
  p.top_p = 0.7f;
  set_probs(l, pr, 5);
  CHECK_INT_EQ(exo_sampler_distribution(g_s, &p, l, NULL, 0, 0, &ids, &probs, &n), 0);
  CHECK_INT_EQ(n, 2);
  CHECK(ids[0] == 1 && ids[1] == 3);
  CHECK_NEAR(probs[0], 0.625, 1e-5);
  CHECK_NEAR(probs[1], 0.375, 1e-5);
  /* top-p 0.1 keeps only the most likely. */
  p.top_p = 0.1f;
  set_probs(l, pr, 5);
  CHECK_INT_EQ(exo_sampler_distribution(g_s, &p, l, NULL, 0, 0, &ids, &probs, &n), 0);
  CHECK_INT_EQ(n, 1);
  CHECK_INT_EQ(ids[0], 1);
  /* min-p 0.25: floor 0.125 keeps 0.5, 0.3, 0.15 -> / 0.95. */
  p.top_p = 1.0f;
  p.min_p = 0.25f;
  set_probs(l, pr, 5);
  CHECK_INT_EQ(exo_sampler_distribution(g_s, &p, l, NULL, 0, 0, &ids, &probs, &n), 0);
  CHECK_INT_EQ(n, 3);
  CHECK(ids[0] == 1 && ids[1] == 3 && ids[2] == 2);
  CHECK_NEAR(probs[0], 0.5 / 0.95, 1e-5);
  CHECK_NEAR(probs[2], 0.15 / 0.95, 1e-5);
  /* min-p after top-k 2: only 1 and 3 remain. */
  p.top_k = 2;
  set_probs(l, pr, 5);
  CHECK_INT_EQ(exo_sampler_distribution(g_s, &p, l, NULL, 0, 0, &ids, &probs, &n), 0);
  CHECK_INT_EQ(n, 2);
  CHECK_NEAR(probs[0], 0.625, 1e-5);
}

static void test_keyed_rng(void)
{
  /* Same key, same value; each field of the key matters; no symmetry collisions. */
  CHECK(exo_sample_hash(1, 2, 3) == exo_sample_hash(1, 2, 3));
  CHECK(exo_sample_hash(1, 2, 3) != exo_sample_hash(2, 1, 3));
  CHECK(exo_sample_hash(1, 2, 3) != exo_sample_hash(1, 3, 2));
  CHECK(exo_sample_hash(1, 2, 3) != exo_sample_hash(1, 2, 4));
  CHECK(exo_sample_hash(0, 0, 0) != 0);
  double sum = 0.0;
  for (int i = 0; i < 10000; i++) {
    double u = exo_sample_uniform(42, 7, i);
    CHECK(u >= 0.0 && u < 1.0);
    sum += u;
  }
  CHECK_NEAR(sum / 10000, 0.5, 0.02);

  /* Draws follow the distribution: probs 0.2 / 0.8 over 20000 positions. */
  struct exo_sample_params p;
  exo_sample_params_default(&p);
  p.temperature = 1.0f;
  p.seed = 1234;
  int ones = 0;
  int32_t first[50];
  for (int pos = 0; pos < 20000; pos++) {
    float l[5] = {0.0f, (float)log(4.0), -1e30f, -1e30f, -1e30f};
    int32_t id = -1;
    CHECK_INT_EQ(exo_sampler_sample(g_s, &p, l, NULL, 0, 0, 9, pos, &id), 0);
    ones += id == 1;
    if (pos < 50)
      first[pos] = id;
  }
  CHECK_NEAR(ones / 20000.0, 0.8, 0.015);
  /* A retried step (same seed, request, position) draws the same token; another
   * request or seed draws a different sequence. */
  int same = 1, other_req = 1, other_seed = 1;
  for (int pos = 0; pos < 50; pos++) {
    float l[5] = {0.0f, (float)log(4.0), -1e30f, -1e30f, -1e30f};
    int32_t id = -1;
    exo_sampler_sample(g_s, &p, l, NULL, 0, 0, 9, pos, &id);
    same &= id == first[pos];
    float l2[5] = {0.0f, (float)log(4.0), -1e30f, -1e30f, -1e30f};
    exo_sampler_sample(g_s, &p, l2, NULL, 0, 0, 10, pos, &id);
    other_req &= id == first[pos];
    struct exo_sample_params q = p;
    q.seed = 1235;
    float l3[5] = {0.0f, (float)log(4.0), -1e30f, -1e30f, -1e30f};
    exo_sampler_sample(g_s, &q, l3, NULL, 0, 0, 9, pos, &id);
    other_seed &= id == first[pos];
  }
  CHECK(same);
  CHECK(!other_req);
  CHECK(!other_seed);
}

static void test_params_check(void)
{
  struct exo_sample_params p;
  char err[160];
  exo_sample_params_default(&p);
  CHECK_INT_EQ(exo_sample_params_check(&p, err, sizeof err), 0);
  p.temperature = -1.0f;
  CHECK_INT_EQ(exo_sample_params_check(&p, err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "temperature: expected a finite number >= 0, got -1");
  exo_sample_params_default(&p);
  p.top_p = 0.0f;
  CHECK_INT_EQ(exo_sample_params_check(&p, err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "top_p: expected a number in (0, 1], got 0");
  exo_sample_params_default(&p);
  p.top_k = -3;
  CHECK_INT_EQ(exo_sample_params_check(&p, err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "top_k");
  exo_sample_params_default(&p);
  p.min_p = 1.5f;
  CHECK_INT_EQ(exo_sample_params_check(&p, err, sizeof err), -EINVAL);
  exo_sample_params_default(&p);
  p.repetition_penalty = 0.0f;
  CHECK_INT_EQ(exo_sample_params_check(&p, err, sizeof err), -EINVAL);
  exo_sample_params_default(&p);
  p.frequency_penalty = NAN;
  CHECK_INT_EQ(exo_sample_params_check(&p, err, sizeof err), -EINVAL);
  struct exo_sampler *s = (struct exo_sampler *)1;
  CHECK_INT_EQ(exo_sampler_new(0, &s), -EINVAL);
  CHECK(s == NULL);
  exo_sampler_free(NULL);
}

int main(void)
{
  if (exo_sampler_new(5, &g_s))
    return 1;
  EXO_RUN(test_greedy_ties);
  EXO_RUN(test_penalties);
  EXO_RUN(test_temperature_topk);
  EXO_RUN(test_top_p_min_p);
  EXO_RUN(test_keyed_rng);
  EXO_RUN(test_params_check);
  exo_sampler_free(g_s);
  return exo_test_result();
}
