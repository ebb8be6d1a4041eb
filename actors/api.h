/* actors/api.h: the `api` actor kind (OpenAI-compatible HTTP on evhttp, docs/API.md) and
 * the pieces its files share: request parsing and response JSON (api_openai.c), chat
 * templates (api_template.c), stop strings (api_stop.c) and the embedded page
 * (api_page.c). Those pieces are pure functions of their inputs: they must not touch
 * sockets, actors or the clock, so tests and the fuzz harness call them directly. */
#ifndef EXO_ACTORS_API_H
#define EXO_ACTORS_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "runtime/actor.h"
#include "tensor/sample.h"

extern const struct exo_actor_kind exo_api_kind;

#define EXO_API_MAX_STOP 4u          /* stop strings per request (OpenAI's limit) */
#define EXO_API_MAX_STOP_BYTES 256u  /* bytes per stop string */
#define EXO_API_MAX_MESSAGES 1024u   /* chat messages per request */
#define EXO_API_MAX_TOP_LOGPROBS 20u /* == EXO_REQ_MAX_TOP_LOGPROBS */

/* ---- errors (OpenAI shape: {"error":{"message","type","param","code"}}) ---- */
struct exo_api_error {
  int status;        /* HTTP status: 400, 401, 404, 413, 429, 500, 503 ... */
  const char *type;  /* "invalid_request_error", "authentication_error", "server_error" */
  char param[64];    /* the offending field ("messages[2].role"), "" for none */
  const char *code;  /* "invalid_type", "context_length_exceeded", ... or NULL */
  char message[320];
};
/* Fills e; returns -EINVAL so parsers can `return exo_api_fail(...)`. */
int exo_api_fail(struct exo_api_error *e, int status, const char *type, const char *param,
                 const char *code, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* New JSON body for e (caller json_decref's); NULL on ENOMEM. */
json_t *exo_api_error_json(const struct exo_api_error *e);

/* ---- requests ---- */
enum exo_api_endpoint { EXO_API_CHAT = 0, EXO_API_COMPLETIONS = 1 };

enum exo_api_role {
  EXO_API_ROLE_SYSTEM = 0,
  EXO_API_ROLE_USER,
  EXO_API_ROLE_ASSISTANT,
  EXO_API_ROLE_DEVELOPER, /* rendered as "system" (OpenAI's newer name for it) */
  EXO_API_ROLE_TOOL,
};
const char *exo_api_role_name(enum exo_api_role r); /* as the template writes it */

struct exo_api_message {
  enum exo_api_role role;
  char *content; /* UTF-8, NUL-terminated (text parts joined); owned */
  size_t len;
};

/* Limits the node applies while parsing (from the actor's options). */
struct exo_api_limits {
  uint32_t max_tokens;        /* cap on max_tokens; also the default */
  uint32_t context;           /* context window: prompt + generation */
  int32_t vocab_size;         /* prompt token ids must be below it */
};

struct exo_api_request {
  enum exo_api_endpoint endpoint;
  char model[128];
  /* chat */
  struct exo_api_message *messages;
  size_t n_messages;
  /* completions: text, or ids when given as an array of integers */
  char *prompt;
  size_t prompt_len;
  int32_t *prompt_ids;
  size_t n_prompt_ids;
  bool has_prompt_ids;
  /* generation */
  struct exo_sample_params sp;
  uint32_t max_tokens;  /* 0: not given (fill from the context window) */
  bool stream, include_usage;
  bool logprobs;         /* chat: logprobs true; completions: logprobs given (N) */
  uint32_t top_logprobs; /* 0..20 */
  char *stop[EXO_API_MAX_STOP];
  size_t n_stop;
};

/* Parses and validates body (len bytes, any content) for endpoint. Returns 0 (req filled;
 * release with exo_api_request_fini), or -EINVAL with e filled (status 400/404), or
 * -ENOMEM. Unknown fields are ignored; null counts as absent. */
int exo_api_request_parse(const char *body, size_t len, enum exo_api_endpoint endpoint,
                          const struct exo_api_limits *lim, const char *model_id,
                          struct exo_api_request *req, struct exo_api_error *e);
void exo_api_request_fini(struct exo_api_request *req); /* zeroes; NULL ok */

/* ---- responses (OpenAI shapes; every builder returns a new reference or NULL on ENOMEM) */
struct exo_api_reply {
  enum exo_api_endpoint endpoint;
  const char *id;    /* "chatcmpl-..." / "cmpl-..." */
  int64_t created;   /* unix seconds */
  const char *model;
  const char *text;  /* UTF-8; NULL in a chunk: no content key */
  size_t len;
  const char *finish; /* "stop" | "length" | ... or NULL (null in JSON) */
  json_t *logprobs;   /* borrowed; NULL: null */
  uint32_t prompt_tokens, completion_tokens;
};
json_t *exo_api_usage_json(uint32_t prompt, uint32_t completion);
json_t *exo_api_response_json(const struct exo_api_reply *r);
/* A streamed chunk: role adds delta.role (chat's first chunk); usage_null adds
 * "usage":null (stream_options.include_usage). */
json_t *exo_api_chunk_json(const struct exo_api_reply *r, bool role, bool usage_null);
json_t *exo_api_usage_chunk_json(const struct exo_api_reply *r); /* choices [] + usage */

/* Logprobs: one token's text (decoded alone, lossy) and logprob. */
struct exo_api_token_text {
  const char *text;
  size_t len;
  float logprob;
};
json_t *exo_api_logprobs_new(enum exo_api_endpoint ep); /* empty chat / completions shape */
json_t *exo_api_logprob_entry_json(const struct exo_api_token_text *tok,
                                   const struct exo_api_token_text *top, size_t n_top);
/* Appends one generated token to lp (from exo_api_logprobs_new). 0 or -ENOMEM. */
int exo_api_logprobs_append(json_t *lp, enum exo_api_endpoint ep,
                            const struct exo_api_token_text *tok,
                            const struct exo_api_token_text *top, size_t n_top,
                            size_t text_offset);

/* ---- chat templates ---- */
enum exo_api_template {
  EXO_API_TEMPLATE_NONE = 0, /* the model has none we can render: chat is refused */
  EXO_API_TEMPLATE_CHATML,   /* <|im_start|>role\ncontent<|im_end|>\n ... */
  EXO_API_TEMPLATE_LLAMA3,   /* <|begin_of_text|><|start_header_id|>role<|end_header_id|>\n\n */
};
const char *exo_api_template_name(enum exo_api_template t); /* "chatml", "llama3", "none" */
/* "chatml" | "llama3" -> 0; else -EINVAL. */
int exo_api_template_parse(const char *name, enum exo_api_template *out);
/* Recognizes the family of a Jinja chat_template string. Returns 0 with *out, or -ENOTSUP
 * with err saying what the template is and why it is refused. */
int exo_api_template_detect(const char *jinja, enum exo_api_template *out, char *err,
                            size_t errlen);
/* Reads dir/tokenizer_config.json's chat_template (and bos_token) and detects it.
 * -ENOENT: no file or no chat_template; -ENOTSUP: unsupported; -EINVAL: bad JSON. err
 * says which. *bos (caller frees, may be NULL) gets bos_token when present. */
int exo_api_template_load(const char *dir, enum exo_api_template *out, char **bos, char *err,
                          size_t errlen);
/* Renders messages with add_generation_prompt; *text caller frees. bos: the Llama-3
 * bos_token ("<|begin_of_text|>" when NULL). 0 or -ENOMEM. */
int exo_api_template_render(enum exo_api_template t, const char *bos,
                            const struct exo_api_message *msgs, size_t n, char **text,
                            size_t *len);

/* ---- stop strings across token boundaries ---- */
/* Holds back the longest tail of the text so far that could begin a stop string, so a
 * stop string is never emitted even when it arrives split over several tokens. */
struct exo_api_stop {
  const char *const *stop; /* borrowed */
  size_t n_stop;
  size_t max_len;
  char held[EXO_API_MAX_STOP_BYTES];
  size_t n_held;
  bool matched;
};
void exo_api_stop_init(struct exo_api_stop *s, const char *const *stop, size_t n_stop);
/* Feeds text[0..len); appends what may be emitted to *out (realloc'd buffer, *out_len
 * grows; caller frees). Returns 1 when a stop string matched (everything before it was
 * emitted; later calls emit nothing), 0 otherwise, -ENOMEM. */
int exo_api_stop_feed(struct exo_api_stop *s, const char *text, size_t len, char **out,
                      size_t *out_len);
/* End of generation: appends the held tail (no stop matched). 0 or -ENOMEM. */
int exo_api_stop_flush(struct exo_api_stop *s, char **out, size_t *out_len);

/* ---- the page ---- */
extern const unsigned char *const exo_api_page_html; /* actors/web/index.html */
extern const size_t exo_api_page_html_len;

#endif
