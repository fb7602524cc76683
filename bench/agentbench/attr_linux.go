package main

import "syscall"

// childAttr has the kernel kill the server and agent if this program dies
// without cleaning up (kill -9, a panic), so no run leaves them behind.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
