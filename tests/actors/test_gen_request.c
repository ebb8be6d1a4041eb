/* tests/actors/test_gen_request.c: the client protocol codecs (actors/gen_request.h):
 * SUBMIT and EVENT round trips, and every malformed payload refused with the field named. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "actors/gen_request.h"
#include "runtime/actor.h"
#include "tests/test.h"

static void submit_round_trip(void)
{
  int32_t prompt[] = {1, 5, 99, 0};
  struct exo_req_submit s = {.max_tokens = 7, .flags = EXO_REQ_F_LOGPROBS, .top_logprobs = 3,
                             .prompt = prompt, .n_prompt = 4};
  exo_sample_params_default(&s.sp);
  s.sp.temperature = 0.7f;
  s.sp.top_k = 40;
  s.sp.seed = 0x1234567890ull;
  void *buf = NULL;
  size_t len = 0;
  char err[256] = "";
  CHECK_INT_EQ(exo_req_submit_encode(&s, &buf, &len, err, sizeof err), 0);
  CHECK_INT_EQ(len, EXO_REQ_SUBMIT_HEAD + 16);
  struct exo_req_submit d;
  int32_t *ids = NULL;
  CHECK_INT_EQ(exo_req_submit_decode(buf, len, &d, &ids, err, sizeof err), 0);
  CHECK_INT_EQ(d.max_tokens, 7);
  CHECK_INT_EQ(d.flags, EXO_REQ_F_LOGPROBS);
  CHECK_INT_EQ(d.top_logprobs, 3);
  CHECK_INT_EQ(d.sp.top_k, 40);
  CHECK(d.sp.temperature == 0.7f);
  CHECK(d.sp.seed == 0x1234567890ull);
  CHECK_INT_EQ(d.n_prompt, 4);
  for (int i = 0; ids && i < 4; i++)
    CHECK_INT_EQ(ids[i], prompt[i]);
  free(ids);
  /* malformed: each refused, naming what is wrong */
  uint8_t *p = buf;
  CHECK_INT_EQ(exo_req_submit_decode(buf, 10, &d, &ids, err, sizeof err), -EPROTO);
  CHECK_STR_CONTAINS(err, "shorter than its");
  CHECK_INT_EQ(exo_req_submit_decode(buf, len - 4, &d, &ids, err, sizeof err), -EPROTO);
  CHECK_STR_CONTAINS(err, "n_prompt 4 does not match");
  p[EXO_REQ_SUBMIT_HEAD + 8] = 0xff, p[EXO_REQ_SUBMIT_HEAD + 11] = 0xff; /* id -> negative */
  CHECK_INT_EQ(exo_req_submit_decode(buf, len, &d, &ids, err, sizeof err), -EPROTO);
  CHECK_STR_CONTAINS(err, "prompt[2]: negative token id");
  CHECK(ids == NULL);
  p[44] = 21; /* top_logprobs past 20 */
  CHECK_INT_EQ(exo_req_submit_decode(buf, len, &d, &ids, err, sizeof err), -EPROTO);
  CHECK_STR_CONTAINS(err, "top_logprobs");
  exo_msg_free(buf);
  /* the encoder checks too */
  s.max_tokens = 0;
  CHECK_INT_EQ(exo_req_submit_encode(&s, &buf, &len, err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "max_tokens");
  s.max_tokens = 1;
  s.sp.temperature = -1;
  CHECK_INT_EQ(exo_req_submit_encode(&s, &buf, &len, err, sizeof err), -EINVAL);
}

static void event_round_trip(void)
{
  struct exo_req_event e = {.token = 42, .flags = EXO_REQ_EV_TOKEN | EXO_REQ_EV_FINAL,
                            .index = 9, .finish = EXO_REQ_FINISH_STOP, .logprob = -0.25f,
                            .n_top = 2, .top = {{42, -0.25f}, {7, -2.5f}}, .n_stages = 2,
                            .stages = {{1, 10, 20}, {2, 30, 40}}, .step_ns = 1000,
                            .to_origin_ns = 50, .prompt_tokens = 12, .attempts = 2};
  snprintf(e.msg, sizeof e.msg, "done");
  void *buf = NULL;
  size_t len = 0;
  CHECK_INT_EQ(exo_req_event_encode(&e, &buf, &len), 0);
  struct exo_req_event d;
  char err[256] = "";
  CHECK_INT_EQ(exo_req_event_decode(buf, len, &d, err, sizeof err), 0);
  CHECK_INT_EQ(d.token, 42);
  CHECK_INT_EQ(d.index, 9);
  CHECK_INT_EQ(d.finish, EXO_REQ_FINISH_STOP);
  CHECK_INT_EQ(d.n_top, 2);
  CHECK_INT_EQ(d.top[1].id, 7);
  CHECK(d.top[1].logprob == -2.5f);
  CHECK_INT_EQ(d.n_stages, 2);
  CHECK_INT_EQ(d.stages[1].node, 2);
  CHECK_INT_EQ(d.stages[1].compute_ns, 40);
  CHECK_INT_EQ(d.attempts, 2);
  CHECK_INT_EQ(d.prompt_tokens, 12);
  CHECK(!strcmp(d.msg, "done"));
  CHECK(!strcmp(exo_req_finish_name(d.finish), "stop"));
  uint8_t *p = buf;
  CHECK_INT_EQ(exo_req_event_decode(buf, len - 1, &d, err, sizeof err), -EPROTO);
  CHECK_STR_CONTAINS(err, "do not match");
  p[12] = 0; /* FINAL without a finish reason */
  CHECK_INT_EQ(exo_req_event_decode(buf, len, &d, err, sizeof err), -EPROTO);
  CHECK_STR_CONTAINS(err, "finish 0 does not match flags");
  p[12] = 1;
  p[4] |= 0x80; /* unknown flag */
  CHECK_INT_EQ(exo_req_event_decode(buf, len, &d, err, sizeof err), -EPROTO);
  CHECK_STR_CONTAINS(err, "unknown flags");
  exo_msg_free(buf);
}

int main(void)
{
  EXO_RUN(submit_round_trip);
  EXO_RUN(event_round_trip);
  return exo_test_result();
}
