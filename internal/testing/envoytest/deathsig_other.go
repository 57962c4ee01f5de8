//go:build !linux

package envoytest

import "os/exec"

// setDeathSignal is a no-op where the platform has no parent-death signal.
func setDeathSignal(*exec.Cmd) {}
