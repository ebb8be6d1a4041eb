/* actors/api_template.c: chat templates. We do not run Jinja: a model's chat_template is
 * recognized as one of the families we render natively (ChatML, Llama-3), by the markers
 * its text must contain, and anything else is refused with a reason (the config's
 * `template` option overrides detection). Renderings follow those templates with
 * add_generation_prompt = true. Must not tokenize or know HTTP. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "actors/api.h"
#include "common/err.h"

const char *exo_api_role_name(enum exo_api_role r)
{
  switch (r) {
  case EXO_API_ROLE_SYSTEM:
  case EXO_API_ROLE_DEVELOPER:
    return "system";
  case EXO_API_ROLE_USER:
    return "user";
  case EXO_API_ROLE_ASSISTANT:
    return "assistant";
  case EXO_API_ROLE_TOOL:
    return "tool";
  }
  return "user";
}

const char *exo_api_template_name(enum exo_api_template t)
{
  switch (t) {
  case EXO_API_TEMPLATE_CHATML:
    return "chatml";
  case EXO_API_TEMPLATE_LLAMA3:
    return "llama3";
  case EXO_API_TEMPLATE_NONE:
    break;
  }
  return "none";
}

int exo_api_template_parse(const char *name, enum exo_api_template *out)
{
  if (!strcmp(name, "chatml"))
    *out = EXO_API_TEMPLATE_CHATML;
  else if (!strcmp(name, "llama3"))
    *out = EXO_API_TEMPLATE_LLAMA3;
  else
    return -EINVAL;
  return 0;
}

int exo_api_template_detect(const char *jinja, enum exo_api_template *out, char *err,
                            size_t errlen)
{
  bool chatml = strstr(jinja, "<|im_start|>") && strstr(jinja, "<|im_end|>");
  bool llama3 = strstr(jinja, "<|start_header_id|>") && strstr(jinja, "<|end_header_id|>") &&
                strstr(jinja, "<|eot_id|>");
  /* Templates of those families that add content of their own (tools, default system
   * prompts, dates) would render differently from our native form: refuse them. */
  static const char *const extras[] = {"Cutting Knowledge Date", "tools", "You are a helpful",
                                       "You are Qwen", NULL};
  if (chatml == llama3) {
    exo_errf(err, errlen,
             "chat_template is not a ChatML or Llama-3 template (%s); set the api actor's "
             "`template` option (chatml | llama3) or use /v1/completions",
             chatml ? "markers of both" : "no <|im_start|> or <|start_header_id|> markers");
    return -ENOTSUP;
  }
  for (size_t i = 0; extras[i]; i++)
    if (strstr(jinja, extras[i])) {
      exo_errf(err, errlen,
               "chat_template is %s-like but adds content we do not render (\"%s\"); set the "
               "api actor's `template` option to render the plain form",
               chatml ? "ChatML" : "Llama-3", extras[i]);
      return -ENOTSUP;
    }
  *out = chatml ? EXO_API_TEMPLATE_CHATML : EXO_API_TEMPLATE_LLAMA3;
  return 0;
}

int exo_api_template_load(const char *dir, enum exo_api_template *out, char **bos, char *err,
                          size_t errlen)
{
  char path[4096];
  json_error_t je;
  if (bos)
    *bos = NULL;
  snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
  json_t *root = json_load_file(path, 0, &je);
  if (!root) {
    exo_errf(err, errlen, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    return je.line < 0 ? -ENOENT : -EINVAL;
  }
  int rc;
  json_t *t = json_object_get(root, "chat_template");
  if (!json_is_string(t)) {
    exo_errf(err, errlen, "%s: no chat_template string (a list of named templates is not "
             "supported)", path);
    rc = -ENOENT;
    goto out;
  }
  if ((rc = exo_api_template_detect(json_string_value(t), out, err, errlen)))
    goto out;
  json_t *b = json_object_get(root, "bos_token");
  if (bos && json_is_string(b) && !(*bos = strdup(json_string_value(b))))
    rc = -ENOMEM;
out:
  json_decref(root);
  return rc;
}

struct sbuf {
  char *p;
  size_t n, cap;
  bool oom;
};

static void put(struct sbuf *b, const char *s, size_t n)
{
  if (b->oom)
    return;
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + n + 1)
      cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) {
      b->oom = true;
      return;
    }
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = '\0';
}

static void puts_(struct sbuf *b, const char *s)
{
  put(b, s, strlen(s));
}

/* Jinja's `| trim` (Python str.strip()) on ASCII whitespace. */
static void put_trimmed(struct sbuf *b, const char *s, size_t n)
{
  while (n && strchr(" \t\n\r\v\f", s[0]))
    s++, n--;
  while (n && strchr(" \t\n\r\v\f", s[n - 1]))
    n--;
  put(b, s, n);
}

int exo_api_template_render(enum exo_api_template t, const char *bos,
                            const struct exo_api_message *msgs, size_t n, char **text,
                            size_t *len)
{
  struct sbuf b = {0};
  put(&b, "", 0);
  switch (t) {
  case EXO_API_TEMPLATE_CHATML:
    for (size_t i = 0; i < n; i++) {
      puts_(&b, "<|im_start|>");
      puts_(&b, exo_api_role_name(msgs[i].role));
      puts_(&b, "\n");
      put(&b, msgs[i].content, msgs[i].len);
      puts_(&b, "<|im_end|>\n");
    }
    puts_(&b, "<|im_start|>assistant\n");
    break;
  case EXO_API_TEMPLATE_LLAMA3:
    puts_(&b, bos ? bos : "<|begin_of_text|>");
    for (size_t i = 0; i < n; i++) {
      puts_(&b, "<|start_header_id|>");
      puts_(&b, exo_api_role_name(msgs[i].role));
      puts_(&b, "<|end_header_id|>\n\n");
      put_trimmed(&b, msgs[i].content, msgs[i].len);
      puts_(&b, "<|eot_id|>");
    }
    puts_(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    break;
  case EXO_API_TEMPLATE_NONE:
    free(b.p);
    return -ENOTSUP;
  }
  if (b.oom) {
    free(b.p);
    return -ENOMEM;
  }
  *text = b.p;
  *len = b.n;
  return 0;
}
