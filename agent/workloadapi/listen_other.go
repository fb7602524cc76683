//go:build !unix

package workloadapi

// checkSocketDir has no owner or mode to check where there are no unix
// permissions.
func checkSocketDir(string) error { return nil }
