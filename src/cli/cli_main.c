#include "cli.h"

#include <stdio.h>
#include <string.h>

#define VG_VERSION "0.1.0"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: verge <command> [options]\n\n"
            "commands:\n"
            "  init     scaffold a new app in a new directory (verge init NAME)\n"
            "  dev      run the platform locally on N simulated locations, redeploy on save (verge dev --pops 3)\n"
            "  node     run an edge node serving apps (verge node --app DIR --listen ADDR)\n"
            "  check    validate app manifests (verge check DIR...)\n"
            "  test     run an app's test/*.lua against a local node (verge test [DIR])\n"
            "  purge    remove objects from a node's HTTP cache (verge purge --url URL)\n"
            "  control  run the control plane (verge control --data DIR --listen ADDR)\n"
            "  versions list an app's versions on the control plane (verge versions [APP])\n"
            "  token    create, list and revoke API tokens (verge token create NAME --scope S)\n"
            "  bundle   write an app directory as a deterministic bundle (verge bundle DIR -o FILE)\n"
            "  deploy   bundle, upload and roll out an app to every node (verge deploy [DIR] --wait)\n"
            "  rollback make an app's previous version live again at once (verge rollback APP)\n"
            "  status   apps x nodes: versions, health (verge status)\n"
            "  trace    find a trace on the nodes and draw its waterfall (verge trace ID)\n"
            "  top      apps x locations, live: rps, p50/p99, 5xx rate, cache hit ratio (verge top --nats URL)\n"
            "  logs     recent and live log lines of every node, merged (verge logs -f --filter 'status>=500')\n"
            "  placement where the scheduler runs an app and why (verge placement APP | explain APP LOC | plan DIR)\n"
            "  sim      simulate the scheduler at internet scale (verge sim --locations 10000 --apps 1000)\n"
            "  version  print the version\n\n"
            "'verge <command> --help' describes a command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "init") == 0)
        return vg_cli_init(argc - 1, argv + 1);
    if (strcmp(cmd, "dev") == 0)
        return vg_cli_dev(argc - 1, argv + 1);
    if (strcmp(cmd, "node") == 0)
        return vg_cli_node(argc - 1, argv + 1);
    if (strcmp(cmd, "check") == 0)
        return vg_cli_check(argc - 1, argv + 1);
    if (strcmp(cmd, "test") == 0)
        return vg_cli_test(argc - 1, argv + 1);
    if (strcmp(cmd, "purge") == 0)
        return vg_cli_purge(argc - 1, argv + 1);
    if (strcmp(cmd, "control") == 0)
        return vg_cli_control(argc - 1, argv + 1);
    if (strcmp(cmd, "versions") == 0)
        return vg_cli_versions(argc - 1, argv + 1);
    if (strcmp(cmd, "token") == 0)
        return vg_cli_token(argc - 1, argv + 1);
    if (strcmp(cmd, "bundle") == 0)
        return vg_cli_bundle(argc - 1, argv + 1);
    if (strcmp(cmd, "deploy") == 0)
        return vg_cli_deploy(argc - 1, argv + 1);
    if (strcmp(cmd, "rollback") == 0)
        return vg_cli_rollback(argc - 1, argv + 1);
    if (strcmp(cmd, "status") == 0)
        return vg_cli_status(argc - 1, argv + 1);
    if (strcmp(cmd, "trace") == 0)
        return vg_cli_trace(argc - 1, argv + 1);
    if (strcmp(cmd, "logs") == 0)
        return vg_cli_logs(argc - 1, argv + 1);
    if (strcmp(cmd, "top") == 0)
        return vg_cli_top(argc - 1, argv + 1);
    if (strcmp(cmd, "sim") == 0)
        return vg_cli_sim(argc - 1, argv + 1);
    if (strcmp(cmd, "placement") == 0)
        return vg_cli_placement(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("verge %s\n", VG_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "verge: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
