/* blk_config.h — the device options shared by `farmem-blk serve` and `add`.
 *
 * One table of keys serves the config file (/etc/farmem/farmem.conf,
 * sections [device] and [serve]) and the command line: the file is read
 * first (--config FILE, else the default file when it exists), then every
 * flag overrides its key, then blk_config_finish() checks the whole and
 * fills a struct store_config.  Errors name the file or flag, the key and
 * the value ("--replicas: 3 replicas need at least 3 servers, got 2").
 *
 * [swap] (priority, discard) belongs to the farmem-swap@ helper: we only
 * check it, so one file serves both.  [offload] is kept as text here and
 * checked by `farmem-blk offload` (cli_offload.c).
 *
 * Meaning of queues/depth by frontend:
 *   ublk: hardware queues (one thread and one store queue each) and tags
 *         per queue;
 *   nbd:  concurrent NBD connections and worker contexts per connection
 *         (one store queue each), so the store gets queues * depth queues.
 * Unset, queues is one per online CPU (blk_default_queues()), and for
 * serve no more than keeps queues * depth within the store's queues;
 * depth is 64 for ublk, 16 for serve.
 */
#ifndef FARMEM_BLK_CONFIG_H
#define FARMEM_BLK_CONFIG_H

#include <getopt.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>

#include "frontend/frontend.h"
#include "parse.h"
#include "store/store.h"

#define BLK_CONFIG_DEFAULT_FILE "/etc/farmem/farmem.conf"
#define BLK_CONFIG_ERR_LEN 512
#define BLK_SERVERS_TEXT_MAX 4096

enum blk_command { BLK_CMD_SERVE, BLK_CMD_ADD };

/* Default queues (ublk) or connections (nbd) never exceed this, however
 * many CPUs: past it the memservers' links, not the queues, limit. */
#define BLK_DEFAULT_QUEUES_MAX 8

/* Raw settings as text/numbers, exactly as the file and flags gave them.
 * Filled by the key table; checked as a whole by blk_config_finish(). */
struct blk_settings {
	char servers[BLK_SERVERS_TEXT_MAX];   /* "tcp://h:p,tcp://h:p" */
	char secret_file[PATH_MAX];
	char key_file[PATH_MAX];              /* a client key file (else the secret) */
	uint64_t size;
	uint64_t replicas;                    /* 0: default */
	char compress[16];                    /* zstd | lz4 | none */
	int64_t level;                        /* 0: codec default */
	uint64_t queues;                      /* 0: frontend default */
	uint64_t depth;                       /* 0: frontend default */
	uint64_t segment_size;                /* 0: store default */
	uint64_t timeout_ms;                  /* 0: store default */
	char uuid[64];                        /* empty: generated */
	char state_dir[PATH_MAX];
	char frontend[16];                    /* ublk | nbd; empty: by command */
	char nbd[256];                        /* [serve] nbd: unix:/path | tcp://h:p */
	char tls_psk[PATH_MAX];               /* [serve] tls-psk: username:hexkey file */
	char tls_cert[PATH_MAX];              /* [serve] tls-cert, tls-key: x509 PEM */
	char tls_key[PATH_MAX];
	uint64_t handshake_timeout_ms;        /* [serve] whole handshake */
	uint64_t idle_timeout_ms;             /* [serve] after GO; 0: none */
	int insecure;                         /* [serve] tcp:// beyond loopback, no TLS */
	char metrics[300];                    /* HOST:PORT for Prometheus; "" = off */
	int64_t swap_priority;                /* [swap] priority (farmem-swap reads it) */
	char swap_discard[16];                /* [swap] discard: pages|once|both|none */
	char encrypt[24];                     /* auto | aes256gcm | xchacha20poly1305 | none */
	/* [offload], read as text; `farmem-blk offload` checks them. */
	char offload_cgroup[BLK_SERVERS_TEXT_MAX];  /* comma-separated paths */
	char offload_cgroup_root[PATH_MAX];
	char offload_interval[32];
	char offload_pressure[32];
	char offload_max_step[32];
	char offload_min[32];
	char offload_metrics[300];
};

/* The checked result. */
struct blk_config {
	enum blk_command command;
	char config_file[PATH_MAX];           /* file actually read, or "" */
	struct blk_settings set;              /* raw values (for messages, `status`) */
	struct store_config store;            /* ready for store_open(); its
					       * state_path points into this
					       * struct (at state_path[]) */
	char state_path[PATH_MAX];            /* "" when no state dir */
	enum blk_frontend frontend;
	int queues;                           /* resolved (see header comment) */
	int depth;
	struct fm_addr nbd;                   /* serve: where to listen */
	char uuid_text[37];
	int uuid_generated;                   /* 1: no --uuid/config uuid given */
	uint32_t from_flags;                  /* internal: which keys came from flags */
};

/* Extra command-specific flags a caller (e.g. `add`) wants parsed along
 * with the shared ones.  Option .val values must be >= 0x1000 to stay
 * clear of the shared ones.  handle() returns 0 or -EINVAL (writing err). */
struct blk_extra_opts {
	const struct option *opts;            /* terminated by a zero entry */
	const char *usage;                    /* lines appended to --help */
	int (*handle)(void *arg, int val, const char *optarg_text,
		      char *err, size_t errlen);
	void *arg;
};

/* Parse argv (argv[0] = the command name, as cmd_serve() gets it):
 * defaults, then config file, then flags, then blk_config_finish().
 * Returns 0 with *cfg ready and *first_arg = index of the first
 * positional argument; 1 when --help was printed (exit 0); -EINVAL or
 * another -errno with err set (exit 2 for usage errors, 1 otherwise).
 * extra may be NULL.  Loads the key file (fm_keyfile_load) or the secret
 * file (fm_secret_load), which acts as the cluster's own identity. */
int blk_config_parse(int argc, char **argv, enum blk_command command,
		     const struct blk_extra_opts *extra, struct blk_config *cfg,
		     int *first_arg, char *err, size_t errlen);

/* The pieces, for callers and unit tests that need them separately. */
void blk_config_defaults(struct blk_config *cfg, enum blk_command command);
/* Read a config file into cfg->set.  -ENOENT when missing. */
int blk_config_load_file(struct blk_config *cfg, const char *file,
			 char *err, size_t errlen);
/* Apply one flag by key name ("device:size"); origin is "--size". */
int blk_config_set(struct blk_config *cfg, const char *key, const char *value,
		   const char *origin, char *err, size_t errlen);
/* Validate cfg->set and fill the rest of cfg.  load_secret 0 skips
 * reading the key or secret file (unit tests, --check-config of a file
 * alone). */
int blk_config_finish(struct blk_config *cfg, int load_secret,
		      char *err, size_t errlen);

/* The settings as a [device] config file that blk_config_load_file()
 * reads back the same (the device record `add` leaves for `recover`,
 * `status` and `del`).  Returns malloc'd text, NULL without memory. */
char *blk_settings_text(const struct blk_settings *set);

void blk_config_usage(FILE *f, enum blk_command command,
		      const struct blk_extra_opts *extra);

const char *blk_compress_name(enum store_compress c);
/* The level the codec uses: the configured one, or its default for 0. */
int blk_compress_level(const struct blk_config *cfg);

/* One per online CPU, 1..BLK_DEFAULT_QUEUES_MAX: the queues default. */
int blk_default_queues(void);

#endif
