package pgtest

import (
	"os/exec"
	"syscall"
)

// setProcAttr makes cmd run as u (nil: as ourselves) and be killed when the
// test process dies, so that a crashed or killed test leaves no postgres
// behind. The child sets the death signal after changing user, which would
// otherwise clear it.
func setProcAttr(cmd *exec.Cmd, u *osUser) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if u != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: u.uid, Gid: u.gid}
	}
	return nil
}
