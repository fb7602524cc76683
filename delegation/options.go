package delegation

import (
	"fmt"
	"time"
)

const (
	// DefaultMaxTTL is the longest a token lives unless WithMaxTTL says
	// otherwise: long enough for one step of an agent's task, short
	// enough that a token outliving its purpose soon expires.
	DefaultMaxTTL = 5 * time.Minute
	// DefaultLeeway is the clock skew a Verifier tolerates on "nbf" and
	// "iat" unless WithLeeway says otherwise; "exp" gets none.
	DefaultLeeway = 30 * time.Second
	// DefaultMaxChain is the longest actor chain unless WithMaxChain says
	// otherwise. Every hop is an agent acting for an agent; a long chain
	// is more often a loop than a plan.
	DefaultMaxChain = 3
)

// Option configures a Signer or a Verifier. An option that means nothing
// to one of them (WithLeeway for a Signer, WithMaxTTL for a Verifier) is
// refused by its constructor rather than ignored, so a misplaced setting
// is noticed.
type Option struct {
	name     string
	signer   func(*Signer) error
	verifier func(*Verifier) error
}

// WithClock sets where the current time comes from; the default is
// time.Now.
func WithClock(now func() time.Time) Option {
	check := func() error {
		if now == nil {
			return fmt.Errorf("WithClock: clock is nil")
		}
		return nil
	}
	return Option{
		name:     "WithClock",
		signer:   func(s *Signer) error { s.now = now; return check() },
		verifier: func(v *Verifier) error { v.now = now; return check() },
	}
}

// WithMaxTTL sets the longest lifetime a Signer issues (DefaultMaxTTL
// unless set).
func WithMaxTTL(d time.Duration) Option {
	return Option{
		name: "WithMaxTTL",
		signer: func(s *Signer) error {
			if d <= 0 {
				return fmt.Errorf("WithMaxTTL: %s is not positive", d)
			}
			s.maxTTL = d
			return nil
		},
	}
}

// WithLeeway sets the clock skew a Verifier tolerates on "nbf" and "iat"
// (DefaultLeeway unless set). It never extends "exp": a token is refused
// from its expiry on.
func WithLeeway(d time.Duration) Option {
	return Option{
		name: "WithLeeway",
		verifier: func(v *Verifier) error {
			if d < 0 {
				return fmt.Errorf("WithLeeway: %s is negative", d)
			}
			v.leeway = d
			return nil
		},
	}
}

// WithMaxChain sets the most actors a token may name (DefaultMaxChain
// unless set), for a Signer and a Verifier alike.
func WithMaxChain(n int) Option {
	check := func() error {
		if n < 1 {
			return fmt.Errorf("WithMaxChain: %d is less than 1: a delegation token always names its actor", n)
		}
		return nil
	}
	return Option{
		name:     "WithMaxChain",
		signer:   func(s *Signer) error { s.maxChain = n; return check() },
		verifier: func(v *Verifier) error { v.maxChain = n; return check() },
	}
}

func applySigner(s *Signer, opts []Option) error {
	for _, o := range opts {
		if o.signer == nil {
			return fmt.Errorf("option %s does not apply to a Signer", o.name)
		}
		if err := o.signer(s); err != nil {
			return err
		}
	}
	return nil
}

func applyVerifier(v *Verifier, opts []Option) error {
	for _, o := range opts {
		if o.verifier == nil {
			return fmt.Errorf("option %s does not apply to a Verifier", o.name)
		}
		if err := o.verifier(v); err != nil {
			return err
		}
	}
	return nil
}
