//go:build !linux

package pgtest

import (
	"errors"
	"os/exec"
)

// setProcAttr runs cmd as ourselves; there is no parent-death signal here,
// and running postgres as another user (needed only as root) is supported
// on Linux only.
func setProcAttr(_ *exec.Cmd, u *osUser) error {
	if u != nil {
		return errors.New("postgres refuses to run as root, and running it as another user is only supported on Linux: run the tests as a regular user")
	}
	return nil
}
