// Package review models access requests and the rules that review them.
//
// Any identity (a person, an agent, a workload) may ask, as itself, to open
// a drafted task or to join an open task with named grants
// ("write:db/prod/payments"). The request carries its chain: the requester
// first, then whom it acts for. Review rules, read from a YAML file by
// ParseRules, say who must approve; Evaluate decides from the reviews so
// far. The package has no storage, no network and no clock of its own:
// the server stores requests and reviews, and passes the time in.
//
// Rules file:
//
//	rules:
//	  - name: staging-read-by-agents        # tried first
//	    match: {actions: [read], resources: [db/staging/**], requester_kind: [agent]}
//	    auto_approve: {within_hours: {days: [mon, tue, wed, thu, fri], from: "07:00", to: "20:00"}}
//	    max_ttl: 1h
//	  - name: prod-write
//	    match: {actions: [write], resources: [db/prod/**]}
//	    require:                             # every group must be met
//	      - {name: people, from: ["spiffe://example.org/person/**"], count: 2}
//	      - {name: security, from: ["spiffe://example.org/person/example.com/sam", "spiffe://example.org/agent/sec-bot"], count: 1}
//	    deny_if:                             # any one denies
//	      - {requester_kind: [workload]}
//	      - {outside_hours: {days: [mon, tue, wed, thu, fri], from: "08:00", to: "18:00", zone: Europe/Paris}}
//	    max_ttl: 4h                          # default 8h
//	    pending_ttl: 2h                      # default 24h
//	    access_clock: first_use              # default approval: when the access time starts
//	    dual_control: {watchers: ["spiffe://example.org/person/**"], count: 1, on_leave: pause, heartbeat: 2s}
//
// Conditions (deny_if items, auto_approve) are deliberately few:
// requester_kind, requester (ID patterns), acting_for_person (true/false),
// within_hours, outside_hours and ttl_over; every field given must hold.
// dual_control is parsed and validated here; DualControl.Present counts the
// watchers present the way approvals are counted (chains disjoint from the
// requester's, one per root principal), and the server keeps the sessions
// and enforces it.
//
// Invariants:
//
//   - Rules are tried in file order and the first that applies decides
//     (Select): a rule applies when every privilege asked for is covered
//     by its actions and resources and the requester matches, and, for an
//     auto-approving rule, its auto_approve holds. A request no rule
//     covers is refused (ErrNoRule): nobody could approve it.
//   - A rule either requires reviewers or approves automatically, never
//     both; the parser refuses a rule with both or neither.
//   - Unknown keys, anchors, aliases and values out of bounds are refused
//     with the key's path and line; nothing is returned from a file with
//     any problem.
//   - Never the requester: the identity that asked cannot review.
//   - Chains are disjoint: no identity of a reviewer's chain may be in the
//     requester's chain, so an agent acting for alice cannot review
//     alice's request, and alice cannot review her agent's request made
//     for her.
//   - Approvals are counted by root principal, the last identity of the
//     reviewer's chain: bob and an agent acting for bob count once. An
//     agent acting for nobody is its own principal and approves as itself
//     where a group names it.
//   - A group counts the distinct principals it names that approved; a
//     request is approved when every group has its count. A principal
//     named by two groups counts in both.
//   - A review from someone eligible for no group counts for nothing,
//     approval or denial; any eligible reviewer's denial ends the request.
//   - Reviews are taken in the order made; the request is approved at the
//     approval that meets the last group, and a review made after that or
//     after the request expired changes nothing.
//   - Conditions are judged at the request's creation time, so an outcome
//     does not change with the hour it is looked at.
//   - A request leaves pending once, to approved, denied, cancelled or
//     expired, and never changes again.
package review
