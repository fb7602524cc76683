// Command approver-bot is an example approver agent for writ: it takes its
// identity from the SPIFFE Workload API, watches access requests over mTLS
// and approves, as itself, the ones its own rule allows (read-only requests
// on staging by agents, with a reason). Every other request is left to
// people. writ's review rules still decide whether its approval counts.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"writ.dev/writ/identity"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("approver-bot", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	server := flag.String("server", "", "the writ server's listen address, HOST:PORT")
	socket := flag.String("socket", os.Getenv("SPIFFE_ENDPOINT_SOCKET"), "the Workload API socket, unix:///PATH (default $SPIFFE_ENDPOINT_SOCKET)")
	resources := flag.String("resources", "staging/**", "comma-separated resource patterns a read may touch; PATH/** matches everything under PATH")
	flag.Parse()
	if *server == "" || *socket == "" {
		return errors.New("give --server HOST:PORT and --socket unix:///PATH (or set SPIFFE_ENDPOINT_SOCKET)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The source keeps the SVID and bundle fresh as the agent rotates them.
	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(*socket)))
	if err != nil {
		return fmt.Errorf("workload API: %w", err)
	}
	defer source.Close()
	svid, err := source.GetX509SVID()
	if err != nil {
		return fmt.Errorf("workload API: %w", err)
	}
	td := svid.ID.TrustDomain()
	cc, err := grpc.NewClient(*server, grpc.WithTransportCredentials(credentials.NewTLS(
		tlsconfig.MTLSClientConfig(source, source, serverAuthorizer(td)))))
	if err != nil {
		return err
	}
	defer cc.Close()
	log.Info("approving as", "spiffe_id", svid.ID.String(), "server", *server)
	p := policy{td: td, resources: strings.Split(*resources, ",")}
	return newBot(cc, p, log).run(ctx)
}

// serverAuthorizer accepts only the trust domain's writ servers.
func serverAuthorizer(td spiffeid.TrustDomain) tlsconfig.Authorizer {
	return tlsconfig.AdaptMatcher(func(id spiffeid.ID) error {
		if !id.MemberOf(td) || !identity.IsServerID(id) {
			return fmt.Errorf("%s is not a writ server of %s", id, td)
		}
		return nil
	})
}
