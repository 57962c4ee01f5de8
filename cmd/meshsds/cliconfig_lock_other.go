//go:build !unix

package main

import "time"

// lockDir does not lock where flock is missing: concurrent "meshsds config"
// commands may then lose one another's change.
func lockDir(string, time.Duration) (func(), error) { return func() {}, nil }
