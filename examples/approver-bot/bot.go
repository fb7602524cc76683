package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	writv1 "writ.dev/writ/api/writ/v1"
)

// policy is the bot's own rule, on top of writ's review rules: writ decides
// whether the bot's approval counts (its rules must name the bot in a
// group); the bot decides whether to give it.
type policy struct {
	// td is the trust domain requesters must belong to.
	td spiffeid.TrustDomain
	// resources are the patterns a read may touch: "staging/**" matches
	// everything under staging/, anything else matches itself.
	resources []string
}

// decide says whether the bot approves r, and why. It approves a request to
// join a task with read-only grants on the allowed resources, asked by an
// agent of the trust domain for itself with a reason; it leaves every
// other request to people.
func (p policy) decide(r *writv1.AccessRequest) (bool, string) {
	if r.GetState() != "pending" {
		return false, "not pending"
	}
	if r.GetKind() != "join" || len(r.GetAsks()) == 0 {
		return false, "only joins with named grants are judged here"
	}
	if len(r.GetChain()) != 1 {
		return false, "the requester acts for someone: people decide"
	}
	requester, err := spiffeid.FromString(r.GetChain()[0])
	if err != nil || !requester.MemberOf(p.td) || !strings.HasPrefix(requester.Path(), "/agent/") {
		return false, "the requester is not an agent of " + p.td.String()
	}
	if strings.TrimSpace(r.GetReason()) == "" {
		return false, "no reason given"
	}
	for _, ask := range r.GetAsks() {
		action, resource, ok := strings.Cut(ask, ":")
		if !ok || action != "read" {
			return false, fmt.Sprintf("%s is not a read", ask)
		}
		if !p.allows(resource) {
			return false, fmt.Sprintf("%s is outside %s", resource, strings.Join(p.resources, ", "))
		}
	}
	return true, fmt.Sprintf("approver-bot: read-only on %s by an agent: %s", strings.Join(p.resources, ", "), r.GetReason())
}

func (p policy) allows(resource string) bool {
	for _, pat := range p.resources {
		if prefix, ok := strings.CutSuffix(pat, "/**"); ok {
			if strings.HasPrefix(resource, prefix+"/") {
				return true
			}
		} else if resource == pat {
			return true
		}
	}
	return false
}

// maxRemembered bounds the requests the bot remembers approving.
const maxRemembered = 10_000

// bot watches pending requests and approves those its policy allows.
type bot struct {
	policy  policy
	watch   writv1.RequestWatchServiceClient
	reviews writv1.ReviewServiceClient
	log     *slog.Logger
	// approved remembers requests already approved: an approval that leaves
	// a request pending (other groups still to approve) comes back as a
	// change, and approving again would only add reviews.
	approved map[string]bool
	// cursor is the last store revision seen: a new watch resumes there.
	cursor int64
}

func newBot(cc grpc.ClientConnInterface, p policy, log *slog.Logger) *bot {
	return &bot{policy: p, watch: writv1.NewRequestWatchServiceClient(cc), reviews: writv1.NewReviewServiceClient(cc),
		log: log, approved: map[string]bool{}}
}

// run watches until ctx ends, resuming after every broken stream.
func (b *bot) run(ctx context.Context) error {
	wait := time.Second
	for {
		err := b.watchOnce(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b.log.Warn("watch ended; resuming", "after_revision", b.cursor, "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 30*time.Second)
	}
}

func (b *bot) watchOnce(ctx context.Context) error {
	stream, err := b.watch.WatchRequests(ctx, &writv1.WatchRequestsRequest{AfterRevision: b.cursor, States: []string{"pending"}})
	if err != nil {
		return err
	}
	for {
		ch, err := stream.Recv()
		if err != nil {
			return err
		}
		b.cursor = max(b.cursor, ch.GetRevision())
		if ch.GetCaughtUp() {
			b.log.Info("watching requests", "revision", b.cursor)
			continue
		}
		b.handle(ctx, ch.GetRequest())
	}
}

func (b *bot) handle(ctx context.Context, r *writv1.AccessRequest) {
	if b.approved[r.GetId()] {
		return
	}
	ok, why := b.policy.decide(r)
	if !ok {
		b.log.Info("left for people", "request", r.GetId(), "why", why)
		return
	}
	d, err := b.reviews.Approve(ctx, &writv1.ReviewAccessRequest{Id: r.GetId(), Reason: why})
	if err != nil {
		// Not eligible under writ's rules, or decided meanwhile: writ's word stands.
		b.log.Warn("approval refused", "request", r.GetId(), "err", err)
		return
	}
	if len(b.approved) >= maxRemembered {
		clear(b.approved)
	}
	b.approved[r.GetId()] = true
	b.log.Info("approved", "request", r.GetId(), "state", d.GetRequest().GetState(), "why", d.GetWhy())
}
