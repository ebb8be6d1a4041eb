/* tests/actors/test_failure_detector.c: a silent peer is suspected within 500 ms, a
 * regular or mildly jittery one never is, and a returning peer is trusted again. */
#include <stdint.h>

#include "actors/failure_detector.h"
#include "tests/test.h"

#define MS 1000ull

static uint64_t first_suspect_after(struct exo_failure_detector *fd, uint64_t from)
{
  for (uint64_t t = from; t < from + 10000 * MS; t += MS)
    if (exo_failure_detector_suspect(fd, t))
      return t - fd->last_us;
  return UINT64_MAX;
}

static void silent_peer_suspected_within_500ms(void)
{
  struct exo_failure_detector fd;
  exo_failure_detector_init(&fd, 100 * MS, 450 * MS);
  uint64_t t = 1 * MS;
  for (int i = 0; i < 50; i++, t += 100 * MS)
    exo_failure_detector_heartbeat(&fd, t);
  uint64_t after = first_suspect_after(&fd, fd.last_us);
  CHECK(after <= 500 * MS);
  CHECK(after >= 150 * MS); /* not trigger-happy after one missed beat */
}

static void jittery_peer_not_suspected(void)
{
  struct exo_failure_detector fd;
  exo_failure_detector_init(&fd, 100 * MS, 450 * MS);
  uint64_t t = 1 * MS, x = 12345;
  for (int i = 0; i < 500; i++) {
    exo_failure_detector_heartbeat(&fd, t);
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    uint64_t jitter = (x >> 33) % (60 * MS); /* 70-130 ms intervals */
    uint64_t next = t + 70 * MS + jitter;
    for (uint64_t probe = t + 10 * MS; probe < next; probe += 10 * MS)
      CHECK(!exo_failure_detector_suspect(&fd, probe));
    t = next;
  }
}

static void no_history_and_rejoin(void)
{
  struct exo_failure_detector fd;
  exo_failure_detector_init(&fd, 100 * MS, 450 * MS);
  CHECK(!exo_failure_detector_suspect(&fd, 10000 * MS)); /* never heard: not ours to judge */
  exo_failure_detector_heartbeat(&fd, 1000 * MS);
  CHECK(exo_failure_detector_suspect(&fd, 1500 * MS));
  exo_failure_detector_heartbeat(&fd, 5000 * MS); /* it came back */
  CHECK(!exo_failure_detector_suspect(&fd, 5050 * MS));
  CHECK(exo_failure_detector_phi(&fd, 5050 * MS) < 8.0);
}

int main(void)
{
  EXO_RUN(silent_peer_suspected_within_500ms);
  EXO_RUN(jittery_peer_not_suspected);
  EXO_RUN(no_history_and_rejoin);
  return exo_test_result();
}
