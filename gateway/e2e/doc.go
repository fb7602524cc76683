// Package e2e holds the gateway's end-to-end tests: a real writ server,
// a gateway core connected to it with its own SVID, the MCP and HTTP front
// ends in front of real upstreams, and callers using the official MCP SDK
// and net/http with their SVIDs and delegation tokens from the server's
// token endpoint. It has no code of its own.
package e2e
