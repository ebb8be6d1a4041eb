/* tests/fuzz/replay.c: a main() for builds without libFuzzer: feeds every file of the
 * directories (or files) named on the command line to LLVMFuzzerTestOneInput once, in
 * name order, so the committed corpus (seeds plus every crash ever found) is a
 * regression test under any compiler's sanitizers. Fails when no input was found. */
#include "fuzz.h"

#include <dirent.h>
#include <sys/stat.h>

static int run_file(const char *path)
{
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "replay: %s: cannot open\n", path);
    return -1;
  }
  uint8_t *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len == cap) {
      cap = cap ? 2 * cap : 4096;
      uint8_t *nb = realloc(buf, cap);
      if (!nb) {
        free(buf);
        fclose(f);
        return -1;
      }
      buf = nb;
    }
    size_t r = fread(buf + len, 1, cap - len, f);
    if (r == 0)
      break;
    len += r;
  }
  fclose(f);
  /* An exact-size copy, so ASan sees reads one past the input as overflows. */
  uint8_t *exact = malloc(len ? len : 1);
  if (!exact) {
    free(buf);
    return -1;
  }
  if (len)
    memcpy(exact, buf, len);
  free(buf);
  LLVMFuzzerTestOneInput(exact, len);
  free(exact);
  return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
  return strcmp((*a)->d_name, (*b)->d_name);
}

int main(int argc, char **argv)
{
  size_t ran = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) < 0) {
      fprintf(stderr, "replay: %s: no such file or directory\n", argv[i]);
      return 1;
    }
    if (!S_ISDIR(st.st_mode)) {
      if (run_file(argv[i]) < 0)
        return 1;
      ran++;
      continue;
    }
    struct dirent **ents = NULL;
    int n = scandir(argv[i], &ents, NULL, by_name);
    if (n < 0) {
      fprintf(stderr, "replay: %s: cannot list\n", argv[i]);
      return 1;
    }
    int bad = 0;
    for (int k = 0; k < n; k++) {
      char path[4096];
      snprintf(path, sizeof path, "%s/%s", argv[i], ents[k]->d_name);
      if (!bad && ents[k]->d_name[0] != '.' && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
        if (run_file(path) < 0)
          bad = 1;
        else
          ran++;
      }
      free(ents[k]);
    }
    free(ents);
    if (bad)
      return 1;
  }
  printf("replay: %zu inputs, no crash\n", ran);
  return ran ? 0 : 1;
}
