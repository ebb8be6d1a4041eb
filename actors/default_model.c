/* actors/default_model.c: finds models/demo (see default_model.h). No side effects. */
#include "actors/default_model.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tensor/gguf.h"
#include "tensor/tokenizer.h"

static int has_config(const char *path)
{
  char cfg[PATH_MAX + 16];
  int n = snprintf(cfg, sizeof cfg, "%s/config.json", path);
  return n > 0 && (size_t)n < sizeof cfg && access(cfg, R_OK) == 0;
}

int exo_default_model_dir(char *out, size_t outlen)
{
  if (has_config("models/demo")) {
    snprintf(out, outlen, "models/demo");
    return 0;
  }
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0)
    return -ENOENT;
  exe[n] = '\0';
  char *slash = strrchr(exe, '/');
  if (!slash)
    return -ENOENT;
  *slash = '\0';
  static const char *rel[] = {"../../models/demo", "../models/demo", "models/demo"};
  for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
    if ((size_t)snprintf(out, outlen, "%s/%s", exe, rel[i]) < outlen && has_config(out))
      return 0;
  }
  return -ENOENT;
}

void exo_model_id(const char *dir, char *out, size_t outlen)
{
  char def[4096];
  if (!dir && exo_default_model_dir(def, sizeof def) == 0)
    dir = def;
  if (!dir) {
    snprintf(out, outlen, "none");
    return;
  }
  size_t n = strlen(dir);
  while (n > 1 && dir[n - 1] == '/')
    n--;
  size_t b = n;
  while (b > 0 && dir[b - 1] != '/')
    b--;
  snprintf(out, outlen, "%.*s", (int)(n - b), dir + b);
}

int exo_model_tokenizer_load(const char *path, struct exo_tokenizer **out, char *err,
                             size_t errlen)
{
  struct stat sb;
  if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode))
    return exo_tokenizer_load_gguf(path, out, err, errlen);
  char tj[4200];
  if ((size_t)snprintf(tj, sizeof tj, "%s/tokenizer.json", path) >= sizeof tj) {
    snprintf(err, errlen, "%s: path too long", path);
    return -ENAMETOOLONG;
  }
  return exo_tokenizer_load(tj, out, err, errlen);
}
