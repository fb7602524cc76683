package server

import "writ.dev/writ/internal/peercred"

// PeerCred is the kernel's account of the process at the other end of the
// admin socket (SO_PEERCRED). It cannot be forged by the caller, which is
// why the admin socket trusts it instead of any token.
type PeerCred = peercred.Cred
