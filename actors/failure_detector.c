/* actors/failure_detector.c: phi-accrual failure detection (see failure_detector.h).
 * Must stay free of clocks and allocation: the health-monitor calls it once per peer per
 * tick, on its loop, and tests drive it with synthetic timestamps. */
#include "actors/failure_detector.h"

#include <math.h>
#include <string.h>

void exo_failure_detector_init(struct exo_failure_detector *fd, uint64_t interval_us,
                               uint64_t max_silence_us)
{
  memset(fd, 0, sizeof *fd);
  fd->interval_us = interval_us;
  fd->max_silence_us = max_silence_us;
  fd->min_stddev_us = interval_us / 4;
  fd->phi_threshold = 8.0;
}

void exo_failure_detector_heartbeat(struct exo_failure_detector *fd, uint64_t now_us)
{
  if (fd->last_us && now_us > fd->last_us) {
    fd->samples[fd->next] = now_us - fd->last_us;
    fd->next = (fd->next + 1) % EXO_FD_WINDOW;
    if (fd->n_samples < EXO_FD_WINDOW)
      fd->n_samples++;
  }
  if (now_us > fd->last_us)
    fd->last_us = now_us;
}

double exo_failure_detector_phi(const struct exo_failure_detector *fd, uint64_t now_us)
{
  if (!fd->last_us || now_us <= fd->last_us)
    return 0.0;
  /* Until there is history, assume the configured interval. */
  double mean = (double)fd->interval_us, var = 0.0;
  if (fd->n_samples > 0) {
    double sum = 0.0;
    for (unsigned i = 0; i < fd->n_samples; i++)
      sum += (double)fd->samples[i];
    mean = sum / fd->n_samples;
    for (unsigned i = 0; i < fd->n_samples; i++) {
      double d = (double)fd->samples[i] - mean;
      var += d * d;
    }
    var /= fd->n_samples;
  }
  double stddev = sqrt(var);
  if (stddev < (double)fd->min_stddev_us)
    stddev = (double)fd->min_stddev_us;
  double elapsed = (double)(now_us - fd->last_us);
  /* P(a heartbeat arrives later than elapsed) under a normal model of the intervals. */
  double p_later = 0.5 * erfc((elapsed - mean) / (stddev * sqrt(2.0)));
  if (p_later < 1e-300)
    return 300.0;
  return -log10(p_later);
}

int exo_failure_detector_suspect(const struct exo_failure_detector *fd, uint64_t now_us)
{
  if (!fd->last_us)
    return 0;
  if (now_us > fd->last_us && now_us - fd->last_us >= fd->max_silence_us)
    return 1;
  return exo_failure_detector_phi(fd, now_us) > fd->phi_threshold;
}
