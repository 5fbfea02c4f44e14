/* hypura command-line: one file per command, each `int hy_cmd_NAME(int argc,
 * char **argv)` with argv[0] == the command name; returns the process exit code.
 * Commands print results on stdout (JSON with --json) and diagnostics on stderr. */
#ifndef HY_CLI_H
#define HY_CLI_H

int hy_cmd_inspect(int argc, char **argv);
int hy_cmd_profile(int argc, char **argv);
int hy_cmd_iobench(int argc, char **argv);
int hy_cmd_run(int argc, char **argv);
int hy_cmd_estimate(int argc, char **argv);
int hy_cmd_serve(int argc, char **argv);
int hy_cmd_bench(int argc, char **argv);
int hy_cmd_optimize(int argc, char **argv);

#endif
