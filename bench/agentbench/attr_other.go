//go:build !linux

package main

import "syscall"

// childAttr: only Linux offers a parent-death signal; elsewhere the
// deferred stop is the only cleanup.
func childAttr() *syscall.SysProcAttr { return nil }
