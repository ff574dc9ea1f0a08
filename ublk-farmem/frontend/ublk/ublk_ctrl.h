/* ublk_ctrl.h — commands to /dev/ublk-control (io_uring URING_CMD, SQE128).
 *
 * Works against the 6.1 uapi header Debian 12 ships and newer kernels:
 * at open we ask for UBLK_U_CMD_GET_FEATURES (6.5+); when the kernel
 * answers, every command (control and per-queue I/O) is sent in the
 * ioctl encoding (UBLK_F_CMD_IOCTL_ENCODE), otherwise in the plain 6.1
 * opcodes.  Every function returns 0 (or a count) or a negative errno.
 */
#ifndef FARMEM_UBLK_CTRL_H
#define FARMEM_UBLK_CTRL_H

#include <stdint.h>
#include <liburing.h>
#include <linux/ublk_cmd.h>

/* Bits newer than the 6.1 header; values from the kernel's uapi, which
 * never reuses a bit, so defining them here is safe on every kernel. */
#ifndef UBLK_F_USER_RECOVERY
#define UBLK_F_USER_RECOVERY          (1ULL << 3)
#endif
#ifndef UBLK_F_USER_RECOVERY_REISSUE
#define UBLK_F_USER_RECOVERY_REISSUE  (1ULL << 4)
#endif
#ifndef UBLK_F_CMD_IOCTL_ENCODE
#define UBLK_F_CMD_IOCTL_ENCODE       (1ULL << 6)
#endif
#ifndef UBLK_F_USER_COPY
#define UBLK_F_USER_COPY              (1ULL << 7)
#endif
/* Where a request's data sits for pread/pwrite on /dev/ublkcN in user
 * copy mode: the offset encodes the queue and the tag (6.5+ uapi). */
#ifndef UBLK_TAG_OFF
#define UBLK_IO_BUF_BITS              25
#define UBLK_TAG_OFF                  UBLK_IO_BUF_BITS
#define UBLK_TAG_BITS                 16
#define UBLK_QID_OFF                  (UBLK_TAG_OFF + UBLK_TAG_BITS)
#endif
#ifndef UBLK_CMD_GET_FEATURES
#define UBLK_CMD_GET_FEATURES         0x13
#endif
#ifndef UBLK_S_DEV_QUIESCED
#define UBLK_S_DEV_QUIESCED           2
#endif

#define UBLK_CONTROL_PATH "/dev/ublk-control"

struct ublk_ctrl {
	int fd;
	struct io_uring ring;
	int ioctl_encode;      /* 1: kernel takes UBLK_U_* ioctl-encoded opcodes */
	uint64_t features;     /* from GET_FEATURES, 0 on kernels without it */
};

/* -ENOENT when ublk_drv is not loaded. */
int ublk_ctrl_open(struct ublk_ctrl *c);
void ublk_ctrl_close(struct ublk_ctrl *c);

/* info->dev_id = -1 picks a free id; on success info holds the kernel's view. */
int ublk_ctrl_add_dev(struct ublk_ctrl *c, struct ublksrv_ctrl_dev_info *info);
int ublk_ctrl_set_params(struct ublk_ctrl *c, uint32_t dev_id, struct ublk_params *p);
/* START_DEV and END_USER_RECOVERY wait in the kernel until every queue
 * has fetched all its tags: call them after the queue threads started. */
int ublk_ctrl_start_dev(struct ublk_ctrl *c, uint32_t dev_id, int daemon_pid);
int ublk_ctrl_stop_dev(struct ublk_ctrl *c, uint32_t dev_id);
int ublk_ctrl_del_dev(struct ublk_ctrl *c, uint32_t dev_id);
int ublk_ctrl_get_info(struct ublk_ctrl *c, uint32_t dev_id, struct ublksrv_ctrl_dev_info *info);
int ublk_ctrl_start_recovery(struct ublk_ctrl *c, uint32_t dev_id);
int ublk_ctrl_end_recovery(struct ublk_ctrl *c, uint32_t dev_id, int daemon_pid);

/* The opcode to put in an I/O SQE's cmd_op (FETCH / COMMIT_AND_FETCH). */
uint32_t ublk_io_opcode(int ioctl_encode, uint32_t op);

#endif
