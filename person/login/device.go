package login

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/oauth2"
)

// Device runs the device authorization grant (RFC 8628) for machines
// without a browser: it prints where to sign in and the code to enter
// there, then polls the identity provider, as fast as it allows, until the
// person approves or denies, the code expires, or ctx ends. It returns the
// ID token.
func Device(ctx context.Context, c Config) (idToken string, err error) {
	ctx, p, err := setup(ctx, &c)
	if err != nil {
		return "", err
	}
	if p.DeviceAuthorizeURL == "" {
		return "", errors.New("login: this identity provider does not offer the device flow; use the browser flow")
	}
	oc := oauthConfig(&c, p, "")
	da, err := oc.DeviceAuth(ctx)
	if err != nil {
		return "", fmt.Errorf("login: starting the device sign-in: %w; check writ's client ID and that the client may use the device flow", err)
	}
	showDeviceCode(&c, da)
	tok, err := oc.DeviceAccessToken(ctx, da)
	if err != nil {
		return "", deviceError(ctx, err)
	}
	return idTokenOf(tok)
}

// showDeviceCode tells the person where to go and what code to enter.
func showDeviceCode(c *Config, da *oauth2.DeviceAuthResponse) {
	fmt.Fprintf(c.Out, "To sign in, open %s on any device and enter the code:\n\n  %s\n\n", da.VerificationURI, da.UserCode)
	if da.VerificationURIComplete != "" {
		fmt.Fprintf(c.Out, "Or open this URL, which fills in the code for you:\n\n  %s\n\n", da.VerificationURIComplete)
	}
	fmt.Fprintln(c.Out, "Waiting for you to finish signing in...")
}

// deviceError explains why polling for the token stopped. The polling
// context also ends when the device code expires, which must read as
// expiry rather than as the caller giving up.
func deviceError(ctx context.Context, err error) error {
	var re *oauth2.RetrieveError
	switch {
	case errors.As(err, &re) && re.ErrorCode == "access_denied":
		return errors.New("login: the sign-in was denied at the identity provider; if that was not you, tell your administrators, otherwise sign in again and approve it")
	case errors.As(err, &re) && re.ErrorCode == "expired_token",
		ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
		return errors.New("login: the device code expired before the sign-in was approved; sign in again and enter the new code sooner")
	case ctx.Err() != nil:
		return fmt.Errorf("login: gave up waiting for the device sign-in: %w; sign in again and finish it on the other device", ctx.Err())
	}
	return fmt.Errorf("login: waiting for the device sign-in: %w; sign in again", err)
}
