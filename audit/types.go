package audit

// Event types: the contract between the code that writes events and every
// reader of the log (the inventory, a SIEM's rules). Writers and readers
// name these constants rather than spelling the strings again, so a type
// cannot drift on one side only.
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

	EventDecision = "decision"
)
