/* tests/runtime/test_check.c: `exo-actors check` run as a process: the example configs
 * pass (exit 0, graph printed), a bad file fails (exit 1) with file:line:col on stderr.
 * Owns only process-level behaviour; the loader's cases live in test_config.c. */
#include "tests/test.h"

#include <stdlib.h>
#include <sys/wait.h>

/* Runs the binary with args, output (stdout+stderr) into out; returns the exit status. */
static int run_check(const char *args, char *out, size_t size)
{
  const char *build = getenv("EXO_BUILD_ROOT"), *src = getenv("EXO_SOURCE_ROOT");
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "cd '%s' && '%s/actors/exo-actors' check %s 2>&1", src ? src : ".",
           build ? build : "build", args);
  FILE *p = popen(cmd, "r");
  if (!p)
    return -1;
  size_t n = fread(out, 1, size - 1, p);
  out[n] = 0;
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_examples_pass(void)
{
  static char out[65536];
  const char *files[] = {"examples/pingpong.yaml", "examples/pingpong-a.yaml",
                         "examples/pingpong-b.yaml"};
  for (size_t i = 0; i < 3; i++) {
    CHECK_INT_EQ(run_check(files[i], out, sizeof out), 0);
    CHECK_STR_CONTAINS(out, ": ok, ");
    CHECK_STR_CONTAINS(out, "kind: pingpong");
  }
  CHECK_INT_EQ(run_check("examples/pingpong-a.yaml examples/pingpong-b.yaml", out, sizeof out), 0);
  CHECK_STR_CONTAINS(out, "listen: tcp://127.0.0.1:7102");
  CHECK_STR_CONTAINS(out, "peer_node: 2");
}

static void test_bad_file_fails_with_position(void)
{
  static char out[65536];
  CHECK_INT_EQ(run_check("tests/runtime/configs/unknown_kind.yaml", out, sizeof out), 1);
  CHECK_STR_CONTAINS(out, "tests/runtime/configs/unknown_kind.yaml:5:11: actors[0].kind: "
                          "unknown actor kind 'pinpong'");
  /* One bad file among good ones still fails the run, and the good one is printed. */
  CHECK_INT_EQ(
      run_check("examples/pingpong.yaml tests/runtime/configs/syntax.yaml", out, sizeof out), 1);
  CHECK_STR_CONTAINS(out, "examples/pingpong.yaml: ok");
  CHECK_STR_CONTAINS(out, "syntax.yaml:4:7: did not find expected ',' or ']'");
  CHECK_INT_EQ(run_check("", out, sizeof out), 2);
  CHECK_STR_CONTAINS(out, "usage: exo-actors check");
  CHECK_INT_EQ(run_check("/nonexistent.yaml", out, sizeof out), 1);
  CHECK_STR_CONTAINS(out, "/nonexistent.yaml: No such file");
}

int main(void)
{
  EXO_RUN(test_examples_pass);
  EXO_RUN(test_bad_file_fails_with_position);
  return exo_test_result();
}
