/* main.c — farmem-blk: dispatch to a subcommand. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "daemon/daemon.h"
#include "log.h"

#ifndef FARMEM_VERSION
#define FARMEM_VERSION "0.0.0"
#endif

static const struct {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *help;
} commands[] = {
	{ "add", cmd_add, "create a ublk (or NBD) swap device backed by memservers" },
	{ "del", cmd_del, "remove a device and give its remote memory back" },
	{ "list", cmd_list, "list devices (--json)" },
	{ "status", cmd_status, "pages, compression, servers and errors of a device (--json)" },
	{ "recover", cmd_recover, "attach a new daemon to a device whose daemon died" },
	{ "serve", cmd_serve, "export the store over NBD in the foreground" },
	{ "offload", cmd_offload, "move cgroups' cold memory to swap before pressure" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: farmem-blk COMMAND [OPTIONS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].help);
	fprintf(f, "\n'farmem-blk COMMAND --help' describes each command.\n");
}

int main(int argc, char **argv)
{
	log_init("farmem-blk", LOG_LVL_INFO);
	daemon_small_thread_stacks();   /* daemon.h says why: before any thread */
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("farmem-blk %s\n", FARMEM_VERSION);
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].run(argc - 1, argv + 1);
	fprintf(stderr, "farmem-blk: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
