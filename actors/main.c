/* actors/main.c: the exo-actors binary's entry point. It owns only the dispatch
 * from a subcommand name to its function; every subcommand lives in its own file
 * (actors/cmd_*.c) and must not rely on anything main sets up. */
#include <stdio.h>
#include <string.h>

#include "actors/commands.h"

struct exo_command {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
};

static const struct exo_command exo_commands[] = {
  /* one line per subcommand; keep in sync with commands.h and meson.build */
  {"check", exo_cmd_check, "validate actor-graph configs and print the resolved graph"},
  {"generate", exo_cmd_generate, "generate text with a whole model on this node"},
  {"run", exo_cmd_run, "serve as one node of a cluster from a config file"},
  {"keygen", exo_cmd_keygen, "write a new cluster key file (authenticated clusters)"},
  {"make-model", exo_cmd_make_model, "write a seeded random model directory (tests, benchmarks)"},
  {"convert", exo_cmd_convert, "rewrite a model directory as GGUF or as safetensors of another dtype"},
};

static void exo_print_usage(FILE *out)
{
  fprintf(out, "usage: exo-actors COMMAND [ARGS]\n\ncommands:\n");
  for (size_t i = 0; i < sizeof exo_commands / sizeof exo_commands[0]; i++)
    fprintf(out, "  %-10s %s\n", exo_commands[i].name, exo_commands[i].summary);
  fprintf(out, "\n'exo-actors COMMAND --help' describes one command.\n");
}

int main(int argc, char **argv)
{
  if (argc < 2) {
    exo_print_usage(stderr);
    return 2;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    exo_print_usage(stdout);
    return 0;
  }
  for (size_t i = 0; i < sizeof exo_commands / sizeof exo_commands[0]; i++)
    if (!strcmp(argv[1], exo_commands[i].name))
      return exo_commands[i].run(argc - 1, argv + 1);
  fprintf(stderr, "exo-actors: unknown command '%s'\n\n", argv[1]);
  exo_print_usage(stderr);
  return 2;
}
