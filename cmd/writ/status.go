package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	writv1 "writ.dev/writ/api/writ/v1"
)

// runStatus runs `writ status [flags]`.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("writ status", "Show the server's trust domain, version, store and CA expiry.",
		"writ status [--json]")
	asJSON := c.fs.Bool("json", false, "print the status as JSON")
	socket := c.socketFlag()
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	cl, err := dial(*socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	st, err := cl.status.GetStatus(ctx, &writv1.GetStatusRequest{})
	if err != nil {
		return cl.explain(err)
	}
	if *asJSON {
		return writeJSONLine(stdout, st)
	}
	caExpiry := formatUnix(st.GetCaNotAfter())
	if st.GetCaNotAfter() != 0 {
		left := time.Until(time.Unix(st.GetCaNotAfter(), 0)).Round(time.Second)
		if left > 0 {
			caExpiry += " (in " + formatSeconds(int64(left/time.Second)) + ")"
		} else {
			caExpiry += " (EXPIRED)"
		}
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Socket:\t%s\n", cl.socket)
	fmt.Fprintf(tw, "Trust domain:\t%s\n", st.GetTrustDomain())
	fmt.Fprintf(tw, "Server ID:\t%s\n", st.GetServerId())
	fmt.Fprintf(tw, "Version:\t%s\n", st.GetVersion())
	fmt.Fprintf(tw, "Store:\t%s\n", st.GetStoreEngine())
	fmt.Fprintf(tw, "Revision:\t%d\n", st.GetRevision())
	fmt.Fprintf(tw, "CA expires:\t%s\n", caExpiry)
	return tw.Flush()
}
