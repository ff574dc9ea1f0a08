/* ublk_ctrl.c — /dev/ublk-control commands over io_uring URING_CMD. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "log.h"
#include "ublk_ctrl.h"

/* The ioctl-encoded forms (UBLK_U_CMD_*, UBLK_U_IO_*) that 6.1's header
 * lacks: the same opcode number wrapped in _IOWR('u', nr, payload). */
static uint32_t ctrl_opcode(const struct ublk_ctrl *c, uint32_t op)
{
	if (!c->ioctl_encode)
		return op;
	/* The uapi encodes the pure queries as _IOR and the kernel compares
	 * some opcodes (GET_FEATURES) whole, so the direction must match. */
	switch (op) {
	case UBLK_CMD_GET_QUEUE_AFFINITY:
	case UBLK_CMD_GET_DEV_INFO:
	case UBLK_CMD_GET_PARAMS:
	case UBLK_CMD_GET_FEATURES:
		return _IOR('u', op, struct ublksrv_ctrl_cmd);
	default:
		return _IOWR('u', op, struct ublksrv_ctrl_cmd);
	}
}

uint32_t ublk_io_opcode(int ioctl_encode, uint32_t op)
{
	if (!ioctl_encode)
		return op;
	return _IOWR('u', op, struct ublksrv_io_cmd);
}

static const char *ctrl_name(uint32_t op)
{
	switch (op) {
	case UBLK_CMD_GET_DEV_INFO: return "GET_DEV_INFO";
	case UBLK_CMD_ADD_DEV: return "ADD_DEV";
	case UBLK_CMD_DEL_DEV: return "DEL_DEV";
	case UBLK_CMD_START_DEV: return "START_DEV";
	case UBLK_CMD_STOP_DEV: return "STOP_DEV";
	case UBLK_CMD_SET_PARAMS: return "SET_PARAMS";
	case UBLK_CMD_START_USER_RECOVERY: return "START_USER_RECOVERY";
	case UBLK_CMD_END_USER_RECOVERY: return "END_USER_RECOVERY";
	case UBLK_CMD_GET_FEATURES: return "GET_FEATURES";
	default: return "?";
	}
}

/* One synchronous command: the control ring is used by one thread at a
 * time and never has more than one command in flight. */
static int ctrl_cmd(struct ublk_ctrl *c, uint32_t op, uint32_t dev_id,
		    void *buf, uint16_t len, uint64_t data0)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&c->ring);
	struct io_uring_cqe *cqe;
	struct ublksrv_ctrl_cmd cmd = {
		.dev_id = dev_id,
		.queue_id = (uint16_t)-1,
		.len = len,
		.addr = (uint64_t)(uintptr_t)buf,
		.data = { data0, 0 },
	};
	int ret;

	if (!sqe)
		return -EBUSY;
	memset(sqe, 0, 2 * sizeof(*sqe)); /* SQE128: the command lives in the tail */
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = c->fd;
	sqe->cmd_op = ctrl_opcode(c, op);
	memcpy(sqe->cmd, &cmd, sizeof(cmd));

	ret = io_uring_submit_and_wait(&c->ring, 1);
	if (ret < 0)
		return ret;
	ret = io_uring_wait_cqe(&c->ring, &cqe);
	if (ret < 0)
		return ret;
	ret = cqe->res;
	io_uring_cqe_seen(&c->ring, cqe);
	if (ret < 0)
		log_debug("ublk %u: %s: %s", dev_id, ctrl_name(op), strerror(-ret));
	return ret;
}

int ublk_ctrl_open(struct ublk_ctrl *c)
{
	uint64_t features = 0;
	int ret;

	memset(c, 0, sizeof(*c));
	c->fd = open(UBLK_CONTROL_PATH, O_RDWR | O_CLOEXEC);
	if (c->fd < 0)
		return -errno;
	ret = io_uring_queue_init(4, &c->ring, IORING_SETUP_SQE128);
	if (ret < 0) {
		log_err("%s: io_uring with SQE128: %s (needs Linux 5.19+)",
			UBLK_CONTROL_PATH, strerror(-ret));
		close(c->fd);
		c->fd = -1;
		return ret;
	}
	/* GET_FEATURES exists only ioctl-encoded (6.5+); a kernel that
	 * answers it takes ioctl-encoded commands everywhere, and may have
	 * the legacy opcodes compiled out, so prefer that encoding. */
	c->ioctl_encode = 1;
	ret = -EOPNOTSUPP;
	if (!getenv("FARMEM_UBLK_LEGACY")) /* tests: force the 6.1 opcodes */
		ret = ctrl_cmd(c, UBLK_CMD_GET_FEATURES, (uint32_t)-1, &features,
			       sizeof(features), 0);
	if (ret < 0) {
		c->ioctl_encode = 0;
		features = 0;
	}
	c->features = features;
	log_debug("ublk: %s encoding, features 0x%llx",
		  c->ioctl_encode ? "ioctl" : "legacy", (unsigned long long)features);
	return 0;
}

void ublk_ctrl_close(struct ublk_ctrl *c)
{
	if (c->fd < 0)
		return;
	io_uring_queue_exit(&c->ring);
	close(c->fd);
	c->fd = -1;
}

int ublk_ctrl_add_dev(struct ublk_ctrl *c, struct ublksrv_ctrl_dev_info *info)
{
	return ctrl_cmd(c, UBLK_CMD_ADD_DEV, info->dev_id, info, sizeof(*info), 0);
}

int ublk_ctrl_set_params(struct ublk_ctrl *c, uint32_t dev_id, struct ublk_params *p)
{
	p->len = sizeof(*p);
	return ctrl_cmd(c, UBLK_CMD_SET_PARAMS, dev_id, p, sizeof(*p), 0);
}

int ublk_ctrl_start_dev(struct ublk_ctrl *c, uint32_t dev_id, int daemon_pid)
{
	return ctrl_cmd(c, UBLK_CMD_START_DEV, dev_id, NULL, 0, (uint64_t)daemon_pid);
}

int ublk_ctrl_stop_dev(struct ublk_ctrl *c, uint32_t dev_id)
{
	return ctrl_cmd(c, UBLK_CMD_STOP_DEV, dev_id, NULL, 0, 0);
}

int ublk_ctrl_del_dev(struct ublk_ctrl *c, uint32_t dev_id)
{
	return ctrl_cmd(c, UBLK_CMD_DEL_DEV, dev_id, NULL, 0, 0);
}

int ublk_ctrl_get_info(struct ublk_ctrl *c, uint32_t dev_id, struct ublksrv_ctrl_dev_info *info)
{
	memset(info, 0, sizeof(*info));
	return ctrl_cmd(c, UBLK_CMD_GET_DEV_INFO, dev_id, info, sizeof(*info), 0);
}

int ublk_ctrl_start_recovery(struct ublk_ctrl *c, uint32_t dev_id)
{
	return ctrl_cmd(c, UBLK_CMD_START_USER_RECOVERY, dev_id, NULL, 0, 0);
}

int ublk_ctrl_end_recovery(struct ublk_ctrl *c, uint32_t dev_id, int daemon_pid)
{
	return ctrl_cmd(c, UBLK_CMD_END_USER_RECOVERY, dev_id, NULL, 0, (uint64_t)daemon_pid);
}
