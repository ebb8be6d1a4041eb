/* tests/fuzz/fuzz_config.c: the actor-graph config loader (YAML, runtime/config.h) on
 * arbitrary text, through the same buffer entry point exo_config_load reads a file into.
 * Properties: a rejected config has a message; an accepted one writes canonical YAML that
 * parses again and writes the same text (exo_config_write's documented contract). */
#include "fuzz.h"

#include "runtime/config.h"

static char *write_config(const struct exo_config *cfg, size_t *len)
{
  char *buf = NULL;
  FILE *f = open_memstream(&buf, len);
  FUZZ_CHECK(f);
  FUZZ_CHECK(exo_config_write(cfg, f) == 0);
  FUZZ_CHECK(fclose(f) == 0);
  return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static const char *const kinds[] = {"pingpong", "shard-worker", "origin", NULL};
  struct exo_config *cfg = NULL;
  char err[512] = "";
  /* Odd first byte: restrict kinds like `exo-actors check` does; even: accept any. */
  const char *const *k = (size && (data[0] & 1)) ? kinds : NULL;
  int rc = exo_config_parse((const char *)data, size, "fuzz.yaml", k, &cfg, err, sizeof err);
  if (rc < 0) {
    FUZZ_CHECK(cfg == NULL);
    FUZZ_CHECK(rc == -ENOMEM || err[0] != '\0');
    return 0;
  }
  size_t n1 = 0, n2 = 0;
  char *y1 = write_config(cfg, &n1);
  struct exo_config *again = NULL;
  rc = exo_config_parse(y1, n1, "canonical.yaml", k, &again, err, sizeof err);
  if (rc < 0)
    fprintf(stderr, "canonical YAML does not parse: %s\n---\n%s---\n", err, y1);
  FUZZ_CHECK(rc == 0);
  char *y2 = write_config(again, &n2);
  if (n1 != n2 || memcmp(y1, y2, n1))
    fprintf(stderr, "not canonical:\n%s---\n%s---\n", y1, y2);
  FUZZ_CHECK(n1 == n2 && memcmp(y1, y2, n1) == 0);
  free(y1);
  free(y2);
  exo_config_free(again);
  exo_config_free(cfg);
  return 0;
}
