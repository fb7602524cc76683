package server

import (
	"context"
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
)

// Caller is who is on the other end of an RPC, as the transport proved it:
// either a local process by peer credentials, or a remote holder of an
// X.509-SVID verified against the trust bundle during the mTLS handshake.
type Caller struct {
	// Local is set for callers on the admin socket.
	Local *PeerCred
	// ID is set for remote callers.
	ID spiffeid.ID
}

func (c Caller) String() string {
	if c.Local != nil {
		return fmt.Sprintf("local uid %d (pid %d)", c.Local.UID, c.Local.PID)
	}
	if !c.ID.IsZero() {
		return c.ID.String()
	}
	return "an anonymous caller (no client certificate; present an X.509-SVID)"
}

// Actor is how the caller is named in audit events: "uid:N" for a local
// administrator, the SPIFFE ID for a remote caller, "anonymous" for one
// without a certificate (a joining agent, whose token the event names). Unlike String it leaves
// out what changes between calls (the pid), so events group by who acted.
func (c Caller) Actor() string {
	switch {
	case c.Local != nil:
		return fmt.Sprintf("uid:%d", c.Local.UID)
	case c.ID.IsZero():
		return "anonymous"
	}
	return c.ID.String()
}

type callerKey struct{}

// CallerFrom returns the authenticated caller of an RPC.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// rule decides whether a caller may invoke a method. It returns nil to allow
// or an error that tells the caller why not.
type rule func(s *Server, c Caller) error

// admin allows only local callers whose uid is in admin_uids. No SVID, however
// valid, confers administrative power: remote administration will be a task.
func admin(s *Server, c Caller) error {
	if c.Local == nil {
		return fmt.Errorf("%s may not call this: it is for local administrators on the admin socket", c)
	}
	if !slices.Contains(s.cfg.AdminUIDs, c.Local.UID) {
		return fmt.Errorf("uid %d is not an administrator: allowed uids are %v (config admin_uids)", c.Local.UID, s.cfg.AdminUIDs)
	}
	return nil
}

// adminOrMember allows local administrators and any holder of an SVID of
// this trust domain: resource servers asking for decisions.
func adminOrMember(s *Server, c Caller) error {
	if c.Local != nil {
		return admin(s, c)
	}
	if !isMember(s.td, c.ID) {
		return fmt.Errorf("%s is not a member of trust domain %s", c, s.td)
	}
	return nil
}

// member allows any holder of an SVID of this trust domain, and no local
// caller: for what only a workload (a resource server) has use of.
func member(s *Server, c Caller) error {
	if !isMember(s.td, c.ID) {
		return fmt.Errorf("%s is not a workload of trust domain %s: connect over mTLS with an X.509-SVID", c, s.td)
	}
	return nil
}

// anyone allows every caller, even one without a client certificate: for
// what is public (the trust bundle) or carries its own proof (a join token).
func anyone(*Server, Caller) error { return nil }

// agent allows members of the trust domain through to the agent RPCs,
// which then admit only known agents presenting their current certificate
// (authenticateAgent).
func agent(s *Server, c Caller) error {
	if !isMember(s.td, c.ID) {
		return fmt.Errorf("%s is not an agent of trust domain %s", c, s.td)
	}
	return nil
}

// methodRules names who may call each RPC. A method missing here is refused:
// new RPCs are closed until someone decides who may call them.
var methodRules = map[string]rule{
	writv1.EntryService_CreateEntries_FullMethodName:         admin,
	writv1.EntryService_UpdateEntry_FullMethodName:           admin,
	writv1.EntryService_DeleteEntry_FullMethodName:           admin,
	writv1.EntryService_GetEntry_FullMethodName:              admin,
	writv1.EntryService_ListEntries_FullMethodName:           admin,
	writv1.SVIDService_MintX509SVID_FullMethodName:           admin,
	writv1.SVIDService_MintJWTSVID_FullMethodName:            admin,
	writv1.BundleService_GetBundle_FullMethodName:            anyone,
	writv1.StatusService_GetStatus_FullMethodName:            admin,
	writv1.LockService_CreateLock_FullMethodName:             admin,
	writv1.LockService_DeleteLock_FullMethodName:             admin,
	writv1.LockService_ListLocks_FullMethodName:              admin,
	writv1.AuditService_ReadEvents_FullMethodName:            adminOrGranted(ActionRead, ResourceAudit),
	writv1.AuditService_GetCheckpoints_FullMethodName:        adminOrGranted(ActionRead, ResourceAudit),
	writv1.AuditService_ReadHashes_FullMethodName:            adminOrGranted(ActionRead, ResourceAudit),
	writv1.AuditService_SignCheckpoint_FullMethodName:        admin,
	writv1.CAService_ListAuthorities_FullMethodName:          admin,
	writv1.CAService_PrepareAuthority_FullMethodName:         admin,
	writv1.CAService_ActivateAuthority_FullMethodName:        admin,
	writv1.CAService_TaintAuthority_FullMethodName:           admin,
	writv1.CAService_RevokeAuthority_FullMethodName:          admin,
	writv1.TokenService_CreateJoinToken_FullMethodName:       admin,
	writv1.AgentService_Join_FullMethodName:                  anyone,
	writv1.AgentService_JoinWithCertificate_FullMethodName:   anyone,
	writv1.PersonService_GetLoginConfig_FullMethodName:       anyone,
	writv1.PersonService_Login_FullMethodName:                anyone,
	writv1.TaskService_CreateTask_FullMethodName:             admin,
	writv1.TaskService_GetTask_FullMethodName:                adminOrGranted(ActionRead, ResourceTasks),
	writv1.TaskService_ListTasks_FullMethodName:              adminOrGranted(ActionRead, ResourceTasks),
	writv1.TaskService_AddMembers_FullMethodName:             admin,
	writv1.TaskService_AddGrant_FullMethodName:               admin,
	writv1.TaskService_OpenTask_FullMethodName:               admin,
	writv1.TaskService_CloseTask_FullMethodName:              adminOrGranted(ActionClose, ResourceTasks),
	writv1.TaskService_PutStandingGrant_FullMethodName:       admin,
	writv1.TaskService_DeleteStandingGrant_FullMethodName:    admin,
	writv1.TaskService_ListStandingGrants_FullMethodName:     adminOrGranted(ActionRead, ResourceTasks),
	writv1.DecisionService_Check_FullMethodName:              adminOrMember,
	writv1.InventoryService_GetInventory_FullMethodName:      adminOrGranted(ActionRead, ResourceInventory),
	writv1.AgentService_RenewAgent_FullMethodName:            agent,
	writv1.AgentService_Sync_FullMethodName:                  agent,
	writv1.AgentService_MintWorkloadX509SVIDs_FullMethodName: agent,
	writv1.AgentService_MintWorkloadJWTSVID_FullMethodName:   agent,
	writv1.StoreService_Backup_FullMethodName:                admin,
	// Any identity asks and reviews as itself; the handlers judge the
	// caller's chain (a local administrator only dry-runs requests).
	writv1.RequestService_CreateRequest_FullMethodName: adminOrMember,
	writv1.RequestService_ListRequests_FullMethodName:  adminOrMember,
	writv1.RequestService_GetRequest_FullMethodName:    adminOrMember,
	writv1.RequestService_CancelRequest_FullMethodName: adminOrMember,
	writv1.ReviewService_GetRules_FullMethodName:       adminOrMember,
	writv1.ReviewService_Approve_FullMethodName:        adminOrMember,
	writv1.ReviewService_Deny_FullMethodName:           adminOrMember,
	writv1.ReviewService_ApplyRules_FullMethodName:     admin,
	// Reviewers need to find requests: any member may watch them.
	writv1.RequestWatchService_WatchRequests_FullMethodName: adminOrMember,
	writv1.WatchService_WatchTask_FullMethodName:            adminOrMember,

	// Resource servers that cache decisions follow their changes; they
	// hold an SVID.
	writv1.DecisionService_WatchDecisions_FullMethodName: member,
}

// callerFromPeer reads the caller proved by the transport.
func callerFromPeer(ctx context.Context) (Caller, error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return Caller{}, status.Error(codes.Unauthenticated, "no transport credentials")
	}
	switch ai := p.AuthInfo.(type) {
	case PeerCred:
		return Caller{Local: &ai}, nil
	case credentials.TLSInfo:
		certs := ai.State.PeerCertificates
		if len(certs) == 0 {
			// Anonymous: only methods open to anyone will take it.
			return Caller{}, nil
		}
		id, err := x509svid.IDFromCert(certs[0])
		if err != nil {
			return Caller{}, status.Errorf(codes.Unauthenticated, "client certificate is not an X.509-SVID: %v", err)
		}
		return Caller{ID: id}, nil
	default:
		return Caller{}, status.Errorf(codes.Unauthenticated, "unsupported transport %q", p.AuthInfo.AuthType())
	}
}

func (s *Server) authorize(ctx context.Context, method string) (context.Context, error) {
	r, ok := methodRules[method]
	if !ok {
		return nil, status.Errorf(codes.PermissionDenied, "%s has no access rule and is refused", method)
	}
	c, err := callerFromPeer(ctx)
	if err != nil {
		return nil, err
	}
	if err := r(s, c); err != nil {
		s.log.Warn("denied", "method", method, "caller", c.String(), "reason", err)
		return nil, status.Error(codes.PermissionDenied, err.Error())
	}
	return context.WithValue(ctx, callerKey{}, c), nil
}

func (s *Server) unaryAuthz(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := s.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (s *Server) streamAuthz(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := s.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, &authedStream{ServerStream: ss, ctx: ctx})
}

type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (a *authedStream) Context() context.Context { return a.ctx }
