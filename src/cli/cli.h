/* cli: the verge subcommands. */
#ifndef VG_CLI_H
#define VG_CLI_H

int vg_cli_node(int argc, char **argv);
int vg_cli_check(int argc, char **argv);
int vg_cli_test(int argc, char **argv);
int vg_cli_purge(int argc, char **argv);
int vg_cli_control(int argc, char **argv);
int vg_cli_versions(int argc, char **argv);
int vg_cli_token(int argc, char **argv);
int vg_cli_bundle(int argc, char **argv);
int vg_cli_deploy(int argc, char **argv);
int vg_cli_rollback(int argc, char **argv);
int vg_cli_status(int argc, char **argv);
int vg_cli_trace(int argc, char **argv);
int vg_cli_logs(int argc, char **argv);
int vg_cli_top(int argc, char **argv);
int vg_cli_dev(int argc, char **argv);
int vg_cli_init(int argc, char **argv);
int vg_cli_sim(int argc, char **argv);
int vg_cli_placement(int argc, char **argv);

#endif
