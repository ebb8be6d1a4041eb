/* runtime/supervisor.c: restart intensity window and strategy (see supervisor.h). Must
 * not touch actors or loops. The window is a ring of the last `intensity` restart times:
 * a restart is allowed when the oldest of them is older than period_ms. */
#include "runtime/supervisor.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#define SUPERVISOR_MAX_INTENSITY 1024u

struct exo_supervisor {
  struct exo_supervision_config cfg;
  pthread_mutex_t mu;
  uint64_t *ring; /* (intensity) restart times, ms; valid entries: n */
  uint32_t head, n;
  bool escalated;
};

int exo_supervisor_new(const struct exo_supervision_config *cfg, struct exo_supervisor **out)
{
  *out = NULL;
  if (cfg->intensity > SUPERVISOR_MAX_INTENSITY || cfg->strategy > EXO_SUPERVISION_REST_FOR_ONE)
    return -EINVAL;
  struct exo_supervisor *sup = calloc(1, sizeof *sup);
  if (!sup)
    return -ENOMEM;
  sup->cfg = *cfg;
  sup->ring = calloc(cfg->intensity ? cfg->intensity : 1, sizeof *sup->ring);
  if (!sup->ring) {
    free(sup);
    return -ENOMEM;
  }
  pthread_mutex_init(&sup->mu, NULL);
  *out = sup;
  return 0;
}

void exo_supervisor_free(struct exo_supervisor *sup)
{
  if (!sup)
    return;
  pthread_mutex_destroy(&sup->mu);
  free(sup->ring);
  free(sup);
}

enum exo_supervisor_decision exo_supervisor_failure(struct exo_supervisor *sup, uint64_t now_ms,
                                                    uint32_t *in_window)
{
  pthread_mutex_lock(&sup->mu);
  uint32_t cap = sup->cfg.intensity;
  /* Forget restarts that left the window (the ring is in time order from head). */
  while (sup->n > 0 && now_ms - sup->ring[sup->head] >= sup->cfg.period_ms) {
    sup->head = (sup->head + 1) % cap;
    sup->n--;
  }
  enum exo_supervisor_decision d;
  if (sup->escalated || sup->n >= cap) {
    sup->escalated = true;
    d = EXO_SUPERVISOR_ESCALATE;
  } else {
    sup->ring[(sup->head + sup->n) % cap] = now_ms;
    sup->n++;
    d = EXO_SUPERVISOR_RESTART;
  }
  if (in_window)
    *in_window = sup->n;
  pthread_mutex_unlock(&sup->mu);
  return d;
}

enum exo_supervision_strategy exo_supervisor_strategy(const struct exo_supervisor *sup)
{
  return sup->cfg.strategy;
}

const struct exo_supervision_config *exo_supervisor_config(const struct exo_supervisor *sup)
{
  return &sup->cfg;
}

uint64_t exo_supervisor_now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
