package audit

import "fmt"

// Event types: the contract between the code that writes events and every
// reader of the log (the inventory, a SIEM's rules). Writers and readers
// name these constants rather than spelling the strings again, so a type
// cannot drift on one side only. README.md lists each with what it records;
// TestEventTypesAreTheContract keeps the list and the constants in step.
const (
	EventEntryCreate = "entry.create"
	EventEntryUpdate = "entry.update"
	EventEntryDelete = "entry.delete"

	EventLockCreate = "lock.create"
	EventLockDelete = "lock.delete"

	EventSVIDX509Mint    = "svid.x509.mint"
	EventSVIDJWTMint     = "svid.jwt.mint"
	EventSVIDX509Refused = "svid.x509.refused"
	EventSVIDJWTRefused  = "svid.jwt.refused"

	EventCAX509Prepare  = "ca.x509.prepare"
	EventCAX509Activate = "ca.x509.activate"
	EventCAX509Taint    = "ca.x509.taint"
	EventCAX509Revoke   = "ca.x509.revoke"
	EventCAX509Publish  = "ca.x509.publish"
	EventCAJWTPrepare   = "ca.jwt.prepare"
	EventCAJWTActivate  = "ca.jwt.activate"
	EventCAJWTTaint     = "ca.jwt.taint"
	EventCAJWTRevoke    = "ca.jwt.revoke"
	EventCAJWTPublish   = "ca.jwt.publish"

	EventAuditKeyPublish = "audit.key.publish"

	EventAgentJoin            = "agent.join"
	EventAgentJoinRefused     = "agent.join.refused"
	EventAgentRenew           = "agent.renew"
	EventAgentClone           = "agent.clone"
	EventAgentCertificateUse  = "agent.certificate.use"
	EventAgentTokenCreate     = "agent.token.create"
	EventPersonLogin          = "person.login"
	EventPersonLoginRefused   = "person.login.refused"
	EventDelegationIssue      = "delegation.issue"
	EventDelegationRefused    = "delegation.refused"
	EventDelegationKeyPublish = "delegation.key.publish"

	EventTaskCreate          = "task.create"
	EventTaskMemberAdd       = "task.member.add"
	EventTaskGrantAdd        = "task.grant.add"
	EventTaskOpen            = "task.open"
	EventTaskClose           = "task.close"
	EventStandingGrantPut    = "grant.standing.put"
	EventStandingGrantDelete = "grant.standing.delete"

	EventRequestCreate      = "request.create"
	EventRequestReview      = "request.review"
	EventRequestAutoApprove = "request.approve.auto"
	EventRequestApprove     = "request.approve"
	EventRequestDeny        = "request.deny"
	EventRequestCancel      = "request.cancel"
	EventRequestExpire      = "request.expire"
	// EventRequestEffect records what an approved request made real (the
	// task opened, the grants added), or why it could not.
	EventRequestEffect = "request.effect"
	// EventRequestFirstUse records that access approved under an
	// access_clock: first_use rule was first used, which starts its time.
	EventRequestFirstUse = "request.first.use"
	// EventTaskDualEnd records that a task's watched grants ended, with its
	// dual control, because too few watchers remained (on_leave:
	// terminate) while other grants of the task go on.
	EventTaskDualEnd      = "task.dual.end"
	EventReviewRulesApply = "review.rules.apply"

	EventDecision = "decision"

	// EventRefusalSummary counts the refusals of unauthenticated callers
	// (failed joins and sign-ins) from one source over one interval; the
	// first refusal of an interval is also recorded on its own. The same
	// event counts the requests of one authenticated caller (its SPIFFE ID
	// is the source) turned away by limits.requests_per_identity, none of
	// which is recorded on its own.
	EventRefusalSummary = "refusal.summary"

	// EventStoreBackup records that an administrator took a backup of the
	// store: a copy of the whole store left the server.
	EventStoreBackup = "store.backup"

	// Watch sessions of dual-controlled tasks: a watcher joined, left (its
	// stream ended), or was lost (its heartbeats stopped and the session
	// lapsed).
	EventWatchJoin  = "watch.join"
	EventWatchLeave = "watch.leave"
	EventWatchLost  = "watch.lost"

	// The web console: a person signed in (with the ID token, used once),
	// was refused, or signed out. What they do there is recorded by the
	// services they act through, as for any caller.
	EventConsoleSignIn        = "console.signin"
	EventConsoleSignInRefused = "console.signin.refused"
	EventConsoleSignOut       = "console.signout"
)

// Kinds of SVID and of signing authority, as the event types name them.
const (
	KindX509 = "x509"
	KindJWT  = "jwt"
)

// SVIDEvents maps an SVID kind (KindX509, KindJWT) to the types of its
// issuance and refusal events. Any other kind gives "", which Encode
// refuses, so a new kind cannot be logged under a type no reader knows.
func SVIDEvents(kind string) (mint, refused string) {
	switch kind {
	case KindX509:
		return EventSVIDX509Mint, EventSVIDX509Refused
	case KindJWT:
		return EventSVIDJWTMint, EventSVIDJWTRefused
	}
	return "", ""
}

// CAStep is one step in the life of a signing authority; each has an
// event type per kind of authority.
type CAStep int

const (
	CAPrepare  CAStep = iota + 1 // a successor is made
	CAActivate                   // it starts signing
	CATaint                      // holders of what it signed renew early
	CARevoke                     // it leaves the bundle
	CAPublish                    // it is recorded in the store again at start
)

// caEvents holds the event type of each step, per kind of authority.
var caEvents = map[string]map[CAStep]string{
	KindX509: {CAPrepare: EventCAX509Prepare, CAActivate: EventCAX509Activate, CATaint: EventCAX509Taint, CARevoke: EventCAX509Revoke, CAPublish: EventCAX509Publish},
	KindJWT:  {CAPrepare: EventCAJWTPrepare, CAActivate: EventCAJWTActivate, CATaint: EventCAJWTTaint, CARevoke: EventCAJWTRevoke, CAPublish: EventCAJWTPublish},
}

// CAEvent maps an authority kind (KindX509: the X.509 CA, KindJWT: the
// JWT signing key) and a step to its event type. An unknown kind or step
// gives "", which Encode refuses.
func CAEvent(kind string, step CAStep) string {
	return caEvents[kind][step]
}

// String names the step in errors and logs.
func (s CAStep) String() string {
	switch s {
	case CAPrepare:
		return "prepare"
	case CAActivate:
		return "activate"
	case CATaint:
		return "taint"
	case CARevoke:
		return "revoke"
	case CAPublish:
		return "publish"
	}
	return fmt.Sprintf("CAStep(%d)", int(s))
}
