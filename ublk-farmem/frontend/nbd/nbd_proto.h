/* nbd_proto.h — the NBD wire protocol constants we speak (newstyle fixed
 * handshake, simple replies), from the protocol document of the NBD
 * project (doc/proto.md).  All integers on the wire are big-endian. */
#ifndef FARMEM_NBD_PROTO_H
#define FARMEM_NBD_PROTO_H

#include <stdint.h>

/* Handshake. */
#define NBD_MAGIC               0x4e42444d41474943ull   /* "NBDMAGIC" */
#define NBD_IHAVEOPT            0x49484156454f5054ull   /* "IHAVEOPT" */
#define NBD_REP_MAGIC           0x0003e889045565a9ull

#define NBD_FLAG_FIXED_NEWSTYLE (1u << 0)   /* server handshake flags */
#define NBD_FLAG_NO_ZEROES      (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0) /* client flags */
#define NBD_FLAG_C_NO_ZEROES    (1u << 1)

#define NBD_OPT_EXPORT_NAME     1
#define NBD_OPT_ABORT           2
#define NBD_OPT_LIST            3
#define NBD_OPT_STARTTLS        5
#define NBD_OPT_INFO            6
#define NBD_OPT_GO              7
#define NBD_OPT_STRUCTURED_REPLY 8

#define NBD_REP_ACK             1u
#define NBD_REP_SERVER          2u
#define NBD_REP_INFO            3u
#define NBD_REP_ERR_UNSUP       0x80000001u
#define NBD_REP_ERR_POLICY      0x80000002u
#define NBD_REP_ERR_INVALID     0x80000003u
#define NBD_REP_ERR_TLS_REQD    0x80000005u
#define NBD_REP_ERR_UNKNOWN     0x80000006u
#define NBD_REP_ERR_SHUTDOWN    0x80000007u
#define NBD_REP_ERR_TOO_BIG     0x80000009u

#define NBD_INFO_EXPORT         0
#define NBD_INFO_NAME           1
#define NBD_INFO_DESCRIPTION    2
#define NBD_INFO_BLOCK_SIZE     3

/* Transmission flags (per export). */
#define NBD_FLAG_HAS_FLAGS      (1u << 0)
#define NBD_FLAG_READ_ONLY      (1u << 1)
#define NBD_FLAG_SEND_FLUSH     (1u << 2)
#define NBD_FLAG_SEND_FUA       (1u << 3)
#define NBD_FLAG_SEND_TRIM      (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_CAN_MULTI_CONN (1u << 8)

/* Transmission. */
#define NBD_REQUEST_MAGIC       0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC  0x67446698u
#define NBD_REQUEST_SIZE        28
#define NBD_REPLY_SIZE          16

#define NBD_CMD_READ            0
#define NBD_CMD_WRITE           1
#define NBD_CMD_DISC            2
#define NBD_CMD_FLUSH           3
#define NBD_CMD_TRIM            4
#define NBD_CMD_WRITE_ZEROES    6

#define NBD_CMD_FLAG_FUA        (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE    (1u << 1)

/* Error values on the wire (the spec fixes these numbers). */
#define NBD_EPERM               1
#define NBD_EIO                 5
#define NBD_ENOMEM              12
#define NBD_EINVAL              22
#define NBD_ENOSPC              28
#define NBD_EOVERFLOW           75
#define NBD_ENOTSUP             95
#define NBD_ESHUTDOWN           108

/* Limits we impose before reading anything the client sends. */
#define NBD_OPT_MAX_LEN         8192        /* option payload; names are <= 4096 */
#define NBD_MAX_STRING          4096
#define NBD_DISCARD_MAX         (32u << 20) /* oversized write payload we still
					     * drain to answer EINVAL; beyond: close */

static inline void nbd_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void nbd_put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i)); }
static inline void nbd_put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i)); }
static inline uint16_t nbd_get16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t nbd_get32(const uint8_t *p) { uint32_t v = 0; for (int i = 0; i < 4; i++) v = (v << 8) | p[i]; return v; }
static inline uint64_t nbd_get64(const uint8_t *p) { uint64_t v = 0; for (int i = 0; i < 8; i++) v = (v << 8) | p[i]; return v; }

#endif
