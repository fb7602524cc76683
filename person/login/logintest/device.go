package logintest

import (
	"crypto/rand"
	"net/http"
	"net/url"
	"time"
)

// deviceInterval is the polling interval the provider asks for, the
// shortest RFC 8628 can express.
const deviceInterval = time.Second

// decision is the person's answer to a device sign-in.
type decision int

const (
	pending decision = iota
	approved
	denied
)

// deviceAuth is one device sign-in in progress.
type deviceAuth struct {
	decision  decision
	user      user
	expires   time.Time
	pendings  int       // authorization_pending answers given
	notBefore time.Time // after a slow_down, polls before this get slow_down again
	interval  time.Duration
}

// serveDeviceAuthorization starts a device sign-in. The verification URI
// is not served: tests play the person with ApproveDevice and DenyDevice.
func (p *Provider) serveDeviceAuthorization(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "unreadable form: "+err.Error())
		return
	}
	if r.PostForm.Get("client_id") != clientID {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "unknown client_id")
		return
	}
	deviceCode, userCode := randomString(), newUserCode()
	p.mu.Lock()
	p.devices[deviceCode] = &deviceAuth{
		decision: p.decision,
		user:     p.user,
		expires:  time.Now().Add(p.opts.deviceCodeTTL),
		interval: deviceInterval,
	}
	p.decision = pending
	p.mu.Unlock()
	verify := p.URL + "/device"
	writeJSON(w, http.StatusOK, map[string]any{
		"device_code":               deviceCode,
		"user_code":                 userCode,
		"verification_uri":          verify,
		"verification_uri_complete": verify + "?" + url.Values{"user_code": {userCode}}.Encode(),
		"expires_in":                int64(p.opts.deviceCodeTTL / time.Second),
		"interval":                  int64(deviceInterval / time.Second),
	})
}

// newUserCode returns a code like BDFG-HJKL, from letters that are hard to
// confuse when typed.
func newUserCode() string {
	const letters = "BCDFGHJKLMNPQRSTVWXZ"
	b := make([]byte, 9)
	rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	b[4] = '-'
	return string(b)
}

// pollDevice serves grant_type=urn:ietf:params:oauth:grant-type:device_code.
func (p *Provider) pollDevice(w http.ResponseWriter, r *http.Request) {
	u, errCode := p.poll(r.PostForm.Get("device_code"), time.Now())
	if errCode != "" {
		oauthError(w, http.StatusBadRequest, errCode, "")
		return
	}
	p.issueTokens(w, u, "")
}

// poll decides the answer to one poll: the user to issue tokens for, or an
// RFC 8628 error code. A device code stops working once it is answered
// with tokens, access_denied or expired_token.
func (p *Provider) poll(code string, now time.Time) (user, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d, ok := p.devices[code]
	switch {
	case !ok:
		return user{}, "invalid_grant"
	case now.After(d.expires):
		delete(p.devices, code)
		return user{}, "expired_token"
	case now.Before(d.notBefore), p.opts.slowDown && d.notBefore.IsZero():
		p.slowDowns++
		d.interval += 5 * time.Second
		d.notBefore = now.Add(d.interval)
		return user{}, "slow_down"
	}
	if d.decision == pending && p.opts.autoApprove && d.pendings >= p.opts.pendingPolls {
		d.decision, d.user = approved, p.user
	}
	switch d.decision {
	case approved:
		delete(p.devices, code)
		return d.user, ""
	case denied:
		delete(p.devices, code)
		return user{}, "access_denied"
	}
	d.pendings++
	return user{}, "authorization_pending"
}

// ApproveDevice approves the pending device sign-ins for the current user.
// With none pending, it approves the next one to start, so a test may call
// it before the client asks for a device code.
func (p *Provider) ApproveDevice() { p.resolve(approved) }

// DenyDevice denies the pending device sign-ins, or the next one to start
// when none is pending.
func (p *Provider) DenyDevice() { p.resolve(denied) }

func (p *Provider) resolve(to decision) {
	p.mu.Lock()
	defer p.mu.Unlock()
	found := false
	for _, d := range p.devices {
		if d.decision == pending {
			d.decision, d.user = to, p.user
			found = true
		}
	}
	if !found {
		p.decision = to
	}
}
