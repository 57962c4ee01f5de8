package envoytest

import (
	"os/exec"
	"syscall"
)

// setDeathSignal kills the child when the test process dies, so that a
// crashed or killed test leaves no Envoy behind.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
