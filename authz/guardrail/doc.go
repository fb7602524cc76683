// Package guardrail evaluates writ's guardrails: Cedar policies that bound
// what any task may grant and what any request may do.
//
// A guardrail sees one identity of a request's chain (or a grant being
// made) as a Cedar request over three entity types:
//
//   - writ::Identity::"spiffe://td/path", with attributes kind ("person",
//     "agent", "node" or "workload"), trust_domain and path;
//   - writ::Action::"read", with no parents;
//   - writ::Resource::"db/prod/payments", whose parents are its prefixes
//     (writ::Resource::"db/prod" and writ::Resource::"db"), so that
//     `resource in writ::Resource::"db/prod"` covers everything under it.
//
// The context record carries time (a Cedar datetime), hour (0-23, UTC),
// weekday ("mon".."sun"), source_ip (an ipaddr, only when the source
// address parses), facts (a record of attestation facts), chain_kinds (the
// set of kinds in the chain), person_in_chain, chain_length, task ("" when
// there is none), granting (true when a task is granting the action
// rather than using it) and, when the request carries them (an MCP tool
// call's, say), arguments: a record of the JSON object's values (see
// ParseArguments), so `context has arguments && context.arguments has repo
// && context.arguments.repo == "acme/prod"` reads a tool call's repo.
//
// # Decisions
//
// Guardrails bound privileges; they do not grant them. A set made only of
// forbid policies therefore allows every request no forbid matches: the
// privileges themselves come from tasks. Once a set holds any permit
// policy, Cedar's default-deny applies: a request that no permit matches
// is denied. Forbid always wins.
//
// Evaluation follows Cedar: a policy whose condition fails to evaluate
// (for example, it reads context.source_ip on a request without a valid
// source address) is skipped and reported in Decision.Errors. Write
// conditions such as `context has source_ip && ...` to make the intent
// explicit, and treat a decision with errors as a sign the guardrail needs
// fixing.
//
// # Index
//
// A Set indexes its policies by the action and resource constraints in
// their scopes, so a decision evaluates only the policies that could match
// the request's action and resource; with a thousand policies over
// distinct resources and actions, a decision costs about as much as with a
// handful.
package guardrail
