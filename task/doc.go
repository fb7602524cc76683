// Package task models writ's tasks: the only place privileges live.
//
// A task ("deploy 4.2 to prod", "answer the CEO's question about payroll")
// names who works on it (Members: people, their devices, CI runners, AI
// agents, as SPIFFE ID patterns) and what each of them may do (Grants:
// actions on resources, each given to named members). Opening the task makes
// exactly those grants live; closing it, or its deadline passing, takes them
// all away. Nobody holds a privilege outside a task, except workloads, which
// may hold StandingGrants for deterministic service-to-service access.
//
// The package has no storage and no network: it validates tasks, moves them
// through their states and matches patterns. Package authz decides requests
// over a snapshot of them.
package task
