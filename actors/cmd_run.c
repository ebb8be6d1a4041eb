/* actors/cmd_run.c: `exo-actors run CONFIG`: serves as one node of a cluster: the node
 * and actors of the config (kinds from actors/kinds.c), until SIGINT or SIGTERM, then a
 * clean stop (actors' stop handlers, loops joined, everything freed; exit 0).
 * Prints "ready node N on ADDR" on stdout once started (scripts wait for it). Must not
 * do work of its own: everything happens in the node's actors. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "actors/announce.h"
#include "actors/cluster.h"
#include "actors/commands.h"
#include "actors/kinds.h"
#include "runtime/config.h"
#include "runtime/log.h"
#include "runtime/node.h"

static void run_usage(FILE *out)
{
  fprintf(out, "usage: exo-actors run CONFIG\n\n"
               "Runs the node the config describes (docs/CONFIG.md) until SIGINT or SIGTERM.\n"
               "Actor kinds:");
  for (const char *const *k = exo_kind_names; *k; k++)
    fprintf(out, " %s", *k);
  fputc('\n', out);
}

int exo_cmd_run(int argc, char **argv)
{
  if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
    run_usage(stdout);
    return 0;
  }
  if (argc != 2) {
    run_usage(stderr);
    return 2;
  }
  /* Block the stop signals before any thread exists, so every loop thread inherits the
   * mask and sigwait below is the only receiver. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);

  char err[1024] = "";
  struct exo_config *cfg = NULL;
  struct exo_node *node = NULL;
  int status = 1;
  (void)exo_log_init_from_env();
  int rc = exo_config_load(argv[1], exo_kind_names, &cfg, err, sizeof err);
  if (rc) {
    fprintf(stderr, "exo-actors run: %s\n", err);
    goto out;
  }
  if (cfg->node_id_auto) { /* kept beside the config, so a restart keeps its id */
    char path[4096];
    uint64_t id = 0;
    snprintf(path, sizeof path, "%s.node-id", argv[1]);
    if ((rc = exo_node_id_load_or_create(path, &id, err, sizeof err))) {
      fprintf(stderr, "exo-actors run: %s\n", err);
      goto out;
    }
    cfg->node_id = (uint32_t)id;
  }
  if (cfg->log_level) {
    enum exo_log_level lv;
    if (exo_log_level_parse(cfg->log_level, &lv) == 0)
      exo_log_set_level(lv);
  }
  if ((rc = exo_node_new(cfg, exo_kinds, &node, err, sizeof err))) {
    fprintf(stderr, "exo-actors run: %s: %s\n", argv[1], err);
    goto out;
  }
  /* the control actors share what they learn through it (actors/cluster.h) */
  if (!exo_cluster_of(node)) {
    fprintf(stderr, "exo-actors run: out of memory\n");
    goto out;
  }
  if ((rc = exo_node_start(node, err, sizeof err))) {
    fprintf(stderr, "exo-actors run: %s: start: %s\n", argv[1], err);
    goto out;
  }
  printf("ready node %u on %s\n", cfg->node_id, cfg->listen ? cfg->listen : "(no listen)");
  fflush(stdout);
  int sig = 0;
  while (sigwait(&set, &sig) != 0)
    ;
  exo_log(EXO_LOG_INFO, NULL, NULL, "node %u: %s, stopping", cfg->node_id, strsignal(sig));
  status = 0;
out:
  exo_node_free(node); /* stops and joins */
  exo_config_free(cfg);
  return status;
}
