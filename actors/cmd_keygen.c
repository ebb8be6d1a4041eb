/* actors/cmd_keygen.c: `exo-actors keygen [--force] FILE`: writes a fresh cluster key
 * (runtime/auth.h format, mode 0600) and prints its public fingerprint. Must not
 * print the key itself, and never overwrites a file unless --force is given. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "actors/commands.h"
#include "runtime/auth.h"

static void keygen_usage(FILE *out)
{
  fprintf(out, "usage: exo-actors keygen [--force] FILE\n\n"
               "Writes a new random cluster key to FILE (mode 0600). Copy the same file to\n"
               "every node and name it in each node's config as `key: FILE`; frames between\n"
               "nodes are then authenticated (docs/SECURITY.md). An existing FILE is kept\n"
               "unless --force replaces it.\n");
}

int exo_cmd_keygen(int argc, char **argv)
{
  bool force = false;
  const char *path = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      keygen_usage(stdout);
      return 0;
    }
    if (!strcmp(argv[i], "--force") || !strcmp(argv[i], "-f")) {
      force = true;
    } else if (argv[i][0] == '-' && argv[i][1]) {
      fprintf(stderr, "keygen: unknown option '%s'\n\n", argv[i]);
      keygen_usage(stderr);
      return 2;
    } else if (path) {
      fprintf(stderr, "keygen: one FILE only (got '%s' and '%s')\n\n", path, argv[i]);
      keygen_usage(stderr);
      return 2;
    } else {
      path = argv[i];
    }
  }
  if (!path) {
    keygen_usage(stderr);
    return 2;
  }
  char err[512];
  if (exo_auth_keygen(path, force, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  struct exo_auth *auth = NULL;
  if (exo_auth_load(path, &auth, err, sizeof err) < 0) { /* read back what we wrote */
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  char fp[17];
  exo_auth_fingerprint(auth, fp);
  exo_auth_free(auth);
  printf("wrote cluster key %s (fingerprint %s)\n", path, fp);
  return 0;
}
