package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"writ.dev/writ/agent/output"
)

// runFetch is a Workload API client: it asks the local agent, as any
// workload would, through go-spiffe's own client.
func runFetch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("writ fetch",
		"Fetch this process's identity from the SPIFFE Workload API, as any workload would: the\n"+
			"X.509-SVIDs, the bundle, and a JWT-SVID for --jwt-audience. The agent decides what this\n"+
			"process gets from the kernel's account of it (uid, gid, executable ...).",
		"writ fetch [--endpoint unix:///path/agent.sock] [--out DIR] [--jwt-audience AUD]")
	endpoint := c.fs.String("endpoint", "", "Workload API `address` (default $SPIFFE_ENDPOINT_SOCKET, else the socket of a running 'writ dev')")
	out := c.fs.String("out", "", "write the first SVID, its key and the bundle to `directory` (svid.pem, svid.key, bundle.pem, and jwt-AUDIENCE.token with --jwt-audience), the files 'writ agent --out' writes")
	aud := c.fs.String("jwt-audience", "", "also fetch a JWT-SVID for this `audience`: printed, and written with --out")
	timeout := c.fs.Duration("timeout", 10*time.Second, "how long to wait for the agent")
	socketOwner := c.fs.String("socket-owner", os.Getenv(socketOwnerEnv), "further `uids` (or user names, comma-separated) trusted to own the socket's directory when it sits in a directory anyone can write to, like /tmp")
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	addr := *endpoint
	if addr == "" {
		addr = os.Getenv("SPIFFE_ENDPOINT_SOCKET")
	}
	if addr == "" {
		// Where writ dev listens by default, found by the rule it uses.
		dev := devSocketPath()
		if fi, err := os.Stat(dev); err != nil || fi.Mode()&os.ModeSocket == 0 {
			return c.usageError("no Workload API address: pass --endpoint unix:///path/agent.sock or set SPIFFE_ENDPOINT_SOCKET (writ dev prints it); no writ dev socket at %s", dev)
		}
		addr = "unix://" + dev
	}
	owners, err := parseOwners(*socketOwner)
	if err != nil {
		return c.usageError("%v", err)
	}
	if err := checkEndpointDir(addr, os.Geteuid(), owners); err != nil {
		return err
	}
	opts := []workloadapi.ClientOption{workloadapi.WithAddr(addr)}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	x, err := workloadapi.FetchX509Context(ctx, opts...)
	if err != nil {
		return fmt.Errorf("fetching from the Workload API: %w (is the agent running, and is there a rule for this process?)", err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SPIFFE ID\tEXPIRES\tHINT")
	for _, s := range x.SVIDs {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.ID, s.Certificates[0].NotAfter.UTC().Format(time.RFC3339), s.Hint)
	}
	tw.Flush()
	var jwts []output.JWT
	if *aud != "" {
		j, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: *aud}, opts...)
		if err != nil {
			return fmt.Errorf("fetching a JWT-SVID: %w", err)
		}
		fmt.Fprintf(stdout, "\nJWT-SVID for %s (expires %s):\n%s\n", *aud, j.Expiry.UTC().Format(time.RFC3339), j.Marshal())
		jwts = append(jwts, output.JWT{Audience: *aud, Token: j.Marshal()})
	}
	if *out == "" || len(x.SVIDs) == 0 {
		return nil
	}
	svid := x.SVIDs[0]
	b, err := x.Bundles.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
	if err != nil {
		return err
	}
	w, err := output.New(output.Options{Dir: *out})
	if err != nil {
		return err
	}
	if _, err := w.Write(ctx, output.Material{Chain: svid.Certificates, Key: svid.PrivateKey, Bundle: b.X509Authorities(), JWTs: jwts}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s to %s\n", svid.ID, w.Dir())
	return nil
}
