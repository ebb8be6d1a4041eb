/* tests/test.h: the one tiny harness every test program uses.
 * A test program is a main() that calls EXO_RUN(case) for each case; a case is a
 * void function that records failures with the CHECK macros and never aborts, so
 * one broken case does not hide the others. main returns exo_test_result(). */
#ifndef EXO_TESTS_TEST_H
#define EXO_TESTS_TEST_H

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static int exo_test_failures_total;
static int exo_test_failures_case;
static int exo_test_cases_failed;
static int exo_test_cases_run;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      exo_test_failures_case++;                                                \
    }                                                                          \
  } while (0)

#define CHECK_INT_EQ(a, b)                                                    \
  do {                                                                        \
    long long va_ = (long long)(a), vb_ = (long long)(b);                     \
    if (va_ != vb_) {                                                         \
      fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld vs %lld)\n",       \
              __FILE__, __LINE__, #a, #b, va_, vb_);                          \
      exo_test_failures_case++;                                               \
    }                                                                         \
  } while (0)

#define CHECK_STR_CONTAINS(hay, needle)                                        \
  do {                                                                         \
    const char *h_ = (hay), *n_ = (needle);                                    \
    if (!h_ || !strstr(h_, n_)) {                                              \
      fprintf(stderr, "%s:%d: CHECK failed: \"%s\" does not contain \"%s\"\n", \
              __FILE__, __LINE__, h_ ? h_ : "(null)", n_);                     \
      exo_test_failures_case++;                                                \
    }                                                                          \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                                 \
  do {                                                                        \
    double va_ = (double)(a), vb_ = (double)(b);                              \
    if (!(fabs(va_ - vb_) <= (tol))) {                                        \
      fprintf(stderr, "%s:%d: CHECK failed: |%s - %s| <= %g (%.9g vs %.9g)\n", \
              __FILE__, __LINE__, #a, #b, (double)(tol), va_, vb_);           \
      exo_test_failures_case++;                                               \
    }                                                                         \
  } while (0)

#define EXO_RUN(fn)                                                    \
  do {                                                                 \
    exo_test_failures_case = 0;                                        \
    exo_test_cases_run++;                                              \
    fn();                                                              \
    if (exo_test_failures_case) {                                      \
      exo_test_cases_failed++;                                         \
      exo_test_failures_total += exo_test_failures_case;               \
      fprintf(stderr, "FAIL %s (%d checks)\n", #fn, exo_test_failures_case); \
    } else {                                                           \
      fprintf(stderr, "ok   %s\n", #fn);                               \
    }                                                                  \
  } while (0)

static inline int exo_test_result(void)
{
  fprintf(stderr, "%d cases, %d failed\n", exo_test_cases_run, exo_test_cases_failed);
  return exo_test_cases_failed ? 1 : 0;
}

#endif
