/* tests/tensor/test_generate_cli.c: `exo-actors generate` as a process (integration).
 * Greedy ids from --prompt-ids (and --prompt text) must equal greedy.ids of each
 * fixture's reference.json (read here, never typed in); streamed text must equal HF's
 * decode of them; bad flags must exit 2 with a message naming the flag. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/test.h"

static char g_exe[1024];
static char g_fixtures[1024];

struct run_result {
  int status; /* exit code, or -1 */
  char out[8192];
  char err[8192];
};

/* Runs argv with stdout and stderr captured (stderr through a temp file, so a single
 * pipe can never deadlock). */
static void run(char *const argv[], struct run_result *r)
{
  memset(r, 0, sizeof *r);
  r->status = -1;
  char errpath[] = "/tmp/exo-gen-test-XXXXXX";
  int efd = mkstemp(errpath);
  int p[2];
  if (efd < 0 || pipe(p))
    return;
  unlink(errpath);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(p[1], 1);
    dup2(efd, 2);
    close(p[0]);
    close(p[1]);
    execv(argv[0], argv);
    _exit(127);
  }
  close(p[1]);
  size_t n = 0;
  ssize_t k;
  while ((k = read(p[0], r->out + n, sizeof r->out - 1 - n)) > 0)
    n += (size_t)k;
  close(p[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  lseek(efd, 0, SEEK_SET);
  k = read(efd, r->err, sizeof r->err - 1);
  (void)k;
  close(efd);
}

/* "a,b,c" and "a b c" forms of a JSON int array. */
static void join_ids(json_t *arr, char sep, char *out, size_t cap)
{
  size_t n = 0;
  out[0] = '\0';
  for (size_t i = 0; i < json_array_size(arr) && n + 24 < cap; i++) {
    if (i)
      out[n++] = sep;
    n += (size_t)snprintf(out + n, cap - n, "%lld",
                          (long long)json_integer_value(json_array_get(arr, i)));
  }
}

static json_t *load_ref(const char *model)
{
  char path[1200];
  snprintf(path, sizeof path, "%s/%s/reference.json", g_fixtures, model);
  json_error_t e;
  json_t *j = json_load_file(path, 0, &e);
  if (!j)
    fprintf(stderr, "%s:%d: %s\n", path, e.line, e.text);
  return j;
}

static void greedy_ids_case(const char *model)
{
  json_t *ref = load_ref(model);
  CHECK(ref != NULL);
  if (!ref)
    return;
  json_t *g = json_object_get(ref, "greedy");
  json_t *prompt = json_object_get(g, "prompt_ids"), *want = json_object_get(g, "new_ids");
  CHECK(json_array_size(prompt) > 0 && json_array_size(want) == 24);
  char dir[1200], ids_arg[1024], want_line[1024], ntok[16];
  snprintf(dir, sizeof dir, "%s/%s", g_fixtures, model);
  join_ids(prompt, ',', ids_arg, sizeof ids_arg);
  join_ids(want, ' ', want_line, sizeof want_line);
  snprintf(ntok, sizeof ntok, "%zu", json_array_size(want));
  strcat(want_line, "\n");
  struct run_result r;
  char *argv[] = {g_exe, "generate", "--model", dir, "--prompt-ids", ids_arg, "--max-tokens",
                  ntok, "--temperature", "0", "--ids", NULL};
  run(argv, &r);
  CHECK_INT_EQ(r.status, 0);
  if (strcmp(r.out, want_line))
    fprintf(stderr, "%s: got '%s' want '%s' (stderr: %s)\n", model, r.out, want_line, r.err);
  CHECK(strcmp(r.out, want_line) == 0);
  CHECK_STR_CONTAINS(r.err, "decode: 23 tokens");

  /* Text mode: the streamed text is HF's decode of the same ids. */
  json_t *dec = json_object_get(g, "decoded_new");
  char *argv2[] = {g_exe, "generate", "--model", dir, "--prompt-ids", ids_arg, "--max-tokens",
                   ntok, NULL};
  run(argv2, &r);
  CHECK_INT_EQ(r.status, 0);
  char want_text[1024];
  snprintf(want_text, sizeof want_text, "%s\n", json_string_value(dec) ? json_string_value(dec) : "?");
  if (strcmp(r.out, want_text))
    fprintf(stderr, "%s: text got '%s' want '%s' (stderr: %s)\n", model, r.out, want_text, r.err);
  CHECK(strcmp(r.out, want_text) == 0);
  CHECK_STR_CONTAINS(r.err, "prefill: 7 tokens");
  json_decref(ref);
}

static void test_greedy_llama(void) { greedy_ids_case("tiny-llama"); }
static void test_greedy_qwen2(void) { greedy_ids_case("tiny-qwen2"); }

/* --prompt TEXT goes through the tokenizer: s1's text gives s1's ids, so the same
 * greedy continuation. */
static void test_prompt_text(void)
{
  json_t *ref = load_ref("tiny-llama");
  CHECK(ref != NULL);
  if (!ref)
    return;
  json_t *seqs = json_object_get(ref, "sequences"), *s1 = json_array_get(seqs, 1);
  json_t *want = json_object_get(json_object_get(ref, "greedy"), "new_ids");
  const char *text = json_string_value(json_object_get(s1, "decoded"));
  CHECK(text != NULL);
  char dir[1200], want_line[1024];
  snprintf(dir, sizeof dir, "%s/tiny-llama", g_fixtures);
  join_ids(want, ' ', want_line, sizeof want_line);
  strcat(want_line, "\n");
  struct run_result r;
  char *argv[] = {g_exe, "generate", "--model", dir, "--prompt", (char *)(text ? text : ""),
                  "--max-tokens", "24", "--ids", NULL};
  run(argv, &r);
  CHECK_INT_EQ(r.status, 0);
  CHECK(strcmp(r.out, want_line) == 0);
  json_decref(ref);
}

/* Seeded sampling: the same seed gives the same ids, another seed other ids. */
static void test_seeded(void)
{
  char dir[1200];
  snprintf(dir, sizeof dir, "%s/tiny-llama", g_fixtures);
  struct run_result a, b, c;
  char *argv[] = {g_exe, "generate", "--model", dir, "--prompt-ids", "508,51,258",
                  "--max-tokens", "16", "--temperature", "1.0", "--top-p", "0.95",
                  "--top-k", "50", "--seed", "7", "--ids", NULL};
  run(argv, &a);
  run(argv, &b);
  argv[15] = "8";
  run(argv, &c);
  CHECK_INT_EQ(a.status, 0);
  CHECK(a.out[0] && strcmp(a.out, b.out) == 0);
  CHECK(strcmp(a.out, c.out) != 0);
}

static void expect_usage_error(char **argv, const char *msg)
{
  struct run_result r;
  run(argv, &r);
  CHECK_INT_EQ(r.status, 2);
  CHECK_STR_CONTAINS(r.err, msg);
  CHECK(r.out[0] == '\0');
}

static void test_bad_flags(void)
{
  char dir[1200];
  snprintf(dir, sizeof dir, "%s/tiny-llama", g_fixtures);
  char *a1[] = {g_exe, "generate", "--model", dir, "--prompt-ids", "1,2", "--max-tokens", "abc", NULL};
  expect_usage_error(a1, "--max-tokens: expected a positive integer, got 'abc'");
  char *a2[] = {g_exe, "generate", "--model", dir, "--prompt-ids", "1,,2", NULL};
  expect_usage_error(a2, "--prompt-ids: expected comma-separated non-negative integers, got '1,,2'");
  char *a3[] = {g_exe, "generate", "--model", dir, "--prompt-ids", "1", "--temperature", "-1", NULL};
  expect_usage_error(a3, "--temperature: expected a number >= 0, got '-1'");
  char *a4[] = {g_exe, "generate", "--model", dir, "--prompt-ids", "1", "--top-p", "0", NULL};
  expect_usage_error(a4, "--top-p: expected a number in (0, 1], got '0'");
  char *a5[] = {g_exe, "generate", "--model", dir, "--prompt-ids", "1", "--bogus", NULL};
  expect_usage_error(a5, "unknown option '--bogus'");
  char *a6[] = {g_exe, "generate", "--model", dir, NULL};
  expect_usage_error(a6, "give exactly one of --prompt TEXT or --prompt-ids");
  char *a7[] = {g_exe, "generate", "--model", dir, "--prompt-ids", "1", "--max-tokens", NULL};
  expect_usage_error(a7, "--max-tokens: missing value");
  char *a8[] = {g_exe, "generate", "--model", dir, "--prompt-ids", "1", "--seed", "-4", NULL};
  expect_usage_error(a8, "--seed: expected a non-negative integer");
  /* Runtime errors: exit 1 with the reason. */
  struct run_result r;
  char *a9[] = {g_exe, "generate", "--model", dir, "--prompt-ids", "1,512", "--ids", NULL};
  run(a9, &r);
  CHECK_INT_EQ(r.status, 1);
  CHECK_STR_CONTAINS(r.err, "prompt id 512 (item 2) outside the vocabulary [0, 512)");
  char *a10[] = {g_exe, "generate", "--model", "/nonexistent-model", "--prompt-ids", "1", NULL};
  run(a10, &r);
  CHECK_INT_EQ(r.status, 1);
  CHECK_STR_CONTAINS(r.err, "cannot load model");
}

int main(void)
{
  const char *build = getenv("EXO_BUILD_ROOT"), *fx = getenv("EXO_FIXTURES");
  if (!build || !fx) {
    fprintf(stderr, "EXO_BUILD_ROOT and EXO_FIXTURES must be set (meson test does)\n");
    return 1;
  }
  snprintf(g_exe, sizeof g_exe, "%s/actors/exo-actors", build);
  snprintf(g_fixtures, sizeof g_fixtures, "%s", fx);
  EXO_RUN(test_greedy_llama);
  EXO_RUN(test_greedy_qwen2);
  EXO_RUN(test_prompt_text);
  EXO_RUN(test_seeded);
  EXO_RUN(test_bad_flags);
  return exo_test_result();
}
