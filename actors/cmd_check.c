/* actors/cmd_check.c: `exo-actors check CONFIG...`: validates actor-graph configs and
 * prints each resolved graph as canonical YAML (stdout, exit 0); the first error of a
 * file goes to stderr as "file:line:col: message" (exit 1). Owns the table of actor kinds
 * the binary knows; must not start loops, sockets or actors. */
#include <stdio.h>
#include <string.h>

#include "actors/commands.h"
#include "actors/kinds.h"
#include "runtime/config.h"

/* The node binary's kinds (actors/kinds.c) plus the examples' own (examples/pingpong.c),
 * whose configs `check` validates too. */
#define CHECK_MAX_KINDS 64
static void check_kinds(const char **out)
{
  size_t n = 0;
  for (const char *const *k = exo_kind_names; *k && n < CHECK_MAX_KINDS - 2; k++)
    out[n++] = *k;
  out[n++] = "pingpong";
  out[n] = NULL;
}

static void check_usage(FILE *out, const char *const *exo_check_kinds)
{
  fprintf(out, "usage: exo-actors check CONFIG...\n\n"
               "Validates each actor-graph config (docs/CONFIG.md) and prints the resolved\n"
               "graph. Errors go to stderr as file:line:col: message; exit status 1.\n"
               "Known actor kinds:");
  for (const char *const *k = exo_check_kinds; *k; k++)
    fprintf(out, " %s", *k);
  fputc('\n', out);
}

int exo_cmd_check(int argc, char **argv)
{
  const char *exo_check_kinds[CHECK_MAX_KINDS];
  check_kinds(exo_check_kinds);
  if (argc < 2) {
    check_usage(stderr, exo_check_kinds);
    return 2;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    check_usage(stdout, exo_check_kinds);
    return 0;
  }
  int status = 0;
  for (int i = 1; i < argc; i++) {
    struct exo_config *cfg = NULL;
    char err[1024];
    if (exo_config_load(argv[i], exo_check_kinds, &cfg, err, sizeof err) < 0) {
      fprintf(stderr, "%s\n", err);
      status = 1;
      continue;
    }
    printf("# %s: ok, %zu actor%s on %u loop%s\n", argv[i], cfg->n_actors,
           cfg->n_actors == 1 ? "" : "s", cfg->loops, cfg->loops == 1 ? "" : "s");
    if (exo_config_write(cfg, stdout) < 0)
      status = 1;
    if (i + 1 < argc)
      printf("---\n");
    exo_config_free(cfg);
  }
  if (fflush(stdout) != 0)
    status = 1;
  return status;
}
