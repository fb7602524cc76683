package webhook_test

import (
	"context"
	"io"
	"log"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"writ.dev/writ/api/webhook"
)

// A receiver that is a SPIFFE workload verifies deliveries with the bundle
// from its Workload API and acts on each event once.
func ExampleVerify() {
	ctx := context.Background()
	source, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer source.Close()
	// The URL exactly as the writ server's webhooks[].url names it.
	const self = "https://hooks.example.com/writ"
	var replays webhook.Replays
	http.HandleFunc("POST /writ", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, webhook.MaxBodyBytes+1))
		if err != nil {
			http.Error(w, "read error", http.StatusBadRequest)
			return
		}
		now := time.Now()
		ev, err := webhook.Verify(body, source, self, now)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		if replays.Seen(ev, now) {
			// Handled already: 2xx, or the server retries.
			w.WriteHeader(http.StatusNoContent)
			return
		}
		log.Printf("request event %s %s from %s: %s", ev.ID, ev.Type, ev.Issuer, ev.Request)
		w.WriteHeader(http.StatusNoContent)
	})
}
