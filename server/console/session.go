package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	// sessionCookie holds only a random session id. The __Host- prefix
	// makes browsers refuse it unless Secure, host-only and on path /.
	sessionCookie = "__Host-writ-session"
	// loginCookie ties a sign-in in progress to the browser that began
	// it. It must survive the identity provider's cross-site redirect
	// back, so it is SameSite=Lax; the session cookie is Strict.
	loginCookie = "__Host-writ-login"
	// loginTTL bounds how long a sign-in may take at the provider.
	loginTTL = 10 * time.Minute
	// maxPendingLogins bounds sign-ins in progress: anyone may start one.
	maxPendingLogins = 1024
)

// session is one person signed in to the console.
type session struct {
	id      string
	person  spiffeid.ID
	csrf    string
	created time.Time
	seen    time.Time
}

// pendingLogin is a sign-in sent to the identity provider and not back yet.
type pendingLogin struct {
	verifier string
	started  time.Time
}

// sessions keeps sessions on the server, so that signing out or a timeout
// ends them for good: the cookie is only a pointer.
type sessions struct {
	idle, ttl time.Duration
	max       int
	now       func() time.Time

	mu      sync.Mutex
	byID    map[string]*session
	pending map[string]pendingLogin
}

func newSessions(idle, ttl time.Duration, max int, now func() time.Time) *sessions {
	return &sessions{idle: idle, ttl: ttl, max: max, now: now, byID: map[string]*session{}, pending: map[string]pendingLogin{}}
}

// randomID returns 256 unguessable bits, base64url encoded.
func randomID() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// live reports whether se is within both its idle and absolute timeouts.
func (ss *sessions) live(se *session, now time.Time) bool {
	return now.Sub(se.seen) < ss.idle && now.Sub(se.created) < ss.ttl
}

// start makes a session for person. At the bound, the session least
// recently used gives way: a full table must not lock everyone out.
func (ss *sessions) start(person spiffeid.ID) *session {
	now := ss.now()
	se := &session{id: randomID(), person: person, csrf: randomID(), created: now, seen: now}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for id, o := range ss.byID {
		if !ss.live(o, now) {
			delete(ss.byID, id)
		}
	}
	for len(ss.byID) >= ss.max {
		var oldest *session
		for _, o := range ss.byID {
			if oldest == nil || o.seen.Before(oldest.seen) {
				oldest = o
			}
		}
		delete(ss.byID, oldest.id)
	}
	ss.byID[se.id] = se
	return se
}

// get returns the live session the request's cookie names, and marks it used.
func (ss *sessions) get(r *http.Request) *session {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil
	}
	now := ss.now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	se := ss.byID[c.Value]
	if se == nil {
		return nil
	}
	if !ss.live(se, now) {
		delete(ss.byID, se.id)
		return nil
	}
	se.seen = now
	cp := *se
	return &cp
}

// end removes a session.
func (ss *sessions) end(id string) {
	ss.mu.Lock()
	delete(ss.byID, id)
	ss.mu.Unlock()
}

// count is the number of sessions held, live or not yet swept.
func (ss *sessions) count() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.byID)
}

// beginLogin records a sign-in's PKCE verifier under a fresh state.
func (ss *sessions) beginLogin(verifier string) string {
	state := randomID()
	now := ss.now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for k, p := range ss.pending {
		if now.Sub(p.started) >= loginTTL {
			delete(ss.pending, k)
		}
	}
	for len(ss.pending) >= maxPendingLogins {
		var oldest string
		for k, p := range ss.pending {
			if oldest == "" || p.started.Before(ss.pending[oldest].started) {
				oldest = k
			}
		}
		delete(ss.pending, oldest)
	}
	ss.pending[state] = pendingLogin{verifier: verifier, started: now}
	return state
}

// finishLogin takes the sign-in for state, once: a replayed callback finds nothing.
func (ss *sessions) finishLogin(state string) (pendingLogin, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	p, ok := ss.pending[state]
	delete(ss.pending, state)
	if !ok || ss.now().Sub(p.started) >= loginTTL {
		return pendingLogin{}, false
	}
	return p, true
}

// validCSRF checks a form's token against the session's synchronizer token.
func validCSRF(se *session, token string) bool {
	return se != nil && token != "" && subtle.ConstantTimeCompare([]byte(se.csrf), []byte(token)) == 1
}

func setCookie(w http.ResponseWriter, name, value string, sameSite http.SameSite, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", Secure: true, HttpOnly: true, SameSite: sameSite, MaxAge: maxAge})
}
