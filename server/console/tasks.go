package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	writv1 "writ.dev/writ/api/writ/v1"
)

func (c *Console) tasksPage(w http.ResponseWriter, r *http.Request) {
	p := &page{Title: "Tasks", Nav: "tasks"}
	code := http.StatusOK
	ctx, err := c.as(r, writv1.TaskService_ListTasks_FullMethodName)
	if err == nil {
		var list *writv1.ListTasksResponse
		if list, err = c.cfg.Services.Tasks.ListTasks(ctx, &writv1.ListTasksRequest{}); err == nil {
			p.Data = list.GetTasks()
		}
	}
	if err != nil {
		code, p.Error = refusal(err)
	}
	c.render(w, r, code, "tasks", p)
}

func (c *Console) taskPage(w http.ResponseWriter, r *http.Request) {
	c.showTask(w, r, http.StatusOK, "", "")
}

func (c *Console) showTask(w http.ResponseWriter, r *http.Request, code int, notice, errMsg string) {
	p := &page{Title: "Task", Nav: "tasks", Notice: notice, Error: errMsg}
	ctx, err := c.as(r, writv1.TaskService_GetTask_FullMethodName)
	if err == nil {
		var t *writv1.Task
		if t, err = c.cfg.Services.Tasks.GetTask(ctx, &writv1.GetTaskRequest{Id: r.PathValue("id")}); err == nil {
			p.Title, p.Data = "Task "+t.GetId(), t
		}
	}
	if err != nil && p.Error == "" {
		code, p.Error = refusal(err)
	}
	c.render(w, r, code, "task", p)
}

// closeTask closes a task as the person, by the task service's own rule.
func (c *Console) closeTask(w http.ResponseWriter, r *http.Request) {
	ctx, err := c.as(r, writv1.TaskService_CloseTask_FullMethodName)
	if err == nil {
		_, err = c.cfg.Services.Tasks.CloseTask(ctx, &writv1.TaskTransitionRequest{Id: r.PathValue("id")})
	}
	if err != nil {
		code, msg := refusal(err)
		c.showTask(w, r, code, "", msg)
		return
	}
	c.showTask(w, r, http.StatusOK, "The task is closed: its grants are no longer live.", "")
}

func (c *Console) watchPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "watch", &page{Title: "Watching task " + r.PathValue("id"), Nav: "tasks", Data: r.PathValue("id")})
}

// watchEvents holds the person's watch session for as long as the page
// keeps this event stream open and beats: it runs the watch service's own
// WatchTask, and each heartbeat the page posts (every half heartbeat
// interval) is a heartbeat on that session. When the tab closes the stream
// drops and the session ends, as a killed 'writ watch' does; when the page
// stops beating without closing (a sleeping laptop, a dead network), the
// session lapses after two heartbeat intervals, as a hung one does.
func (c *Console) watchEvents(w http.ResponseWriter, r *http.Request) {
	ctx, err := c.as(r, writv1.WatchService_WatchTask_FullMethodName)
	if err != nil {
		_, msg := refusal(err)
		http.Error(w, msg, http.StatusForbidden)
		return
	}
	st := &watchStream{ctx: ctx, task: r.PathValue("id"), person: sessionFrom(r.Context()).person, beats: make(chan struct{}, 1)}
	id, ok := c.watches.add(st)
	if !ok {
		http.Error(w, "too many watch pages are open on this server: close one and reload", http.StatusServiceUnavailable)
		return
	}
	defer c.watches.remove(id)
	ev, err := newEventStream(w)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	st.ev = ev
	if err := ev.send("hello", map[string]string{"watch": id}); err != nil {
		return
	}
	err = c.cfg.Services.Watch.WatchTask(st)
	if r.Context().Err() == nil {
		_, msg := refusal(err)
		if err == nil {
			msg = "the watch session ended"
		}
		_ = ev.send("end", map[string]string{"message": msg})
	}
}

// watchBeat is a heartbeat from a watch page, for the stream it holds.
func (c *Console) watchBeat(w http.ResponseWriter, r *http.Request) {
	st := c.watches.get(r.PostForm.Get("watch"))
	if st == nil || st.person != sessionFrom(r.Context()).person {
		http.Error(w, "no such watch session on this page: reload it to watch again", http.StatusNotFound)
		return
	}
	select {
	case st.beats <- struct{}{}:
	default: // a beat is already waiting
	}
	w.WriteHeader(http.StatusNoContent)
}

// maxWatchPages bounds the watch pages open on one server.
const maxWatchPages = 4096

// watchRegistry finds the stream a page's heartbeat is for.
type watchRegistry struct {
	mu sync.Mutex
	m  map[string]*watchStream
}

func (wr *watchRegistry) add(st *watchStream) (string, bool) {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	if wr.m == nil {
		wr.m = map[string]*watchStream{}
	}
	if len(wr.m) >= maxWatchPages {
		return "", false
	}
	id := randomID()
	wr.m[id] = st
	return id, true
}

func (wr *watchRegistry) get(id string) *watchStream {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	return wr.m[id]
}

func (wr *watchRegistry) remove(id string) {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	delete(wr.m, id)
}

// watchStream is WatchTask's side of the stream: the first message names
// the task, and each heartbeat the page posts is the next.
type watchStream struct {
	grpc.ServerStream
	ctx    context.Context
	task   string
	person spiffeid.ID
	ev     *eventStream
	beats  chan struct{}

	mu      sync.Mutex
	started bool
}

func (s *watchStream) Context() context.Context { return s.ctx }

func (s *watchStream) Recv() (*writv1.WatchTaskRequest, error) {
	s.mu.Lock()
	first := !s.started
	s.started = true
	s.mu.Unlock()
	if first {
		return &writv1.WatchTaskRequest{TaskId: s.task}, nil
	}
	select {
	case <-s.ctx.Done():
		return nil, io.EOF
	case <-s.beats:
		return &writv1.WatchTaskRequest{}, nil
	}
}

func (s *watchStream) Send(st *writv1.WatchTaskStatus) error {
	return s.ev.send("status", map[string]any{
		"task": st.GetTaskId(), "present": st.GetPresent(), "count": st.GetCount(), "live": st.GetLive(),
		"heartbeat_seconds": st.GetHeartbeatSeconds(), "on_leave": st.GetOnLeave(),
	})
}

func (s *watchStream) SetHeader(metadata.MD) error  { return nil }
func (s *watchStream) SendHeader(metadata.MD) error { return nil }
func (s *watchStream) SetTrailer(metadata.MD)       {}

// eventStream writes server-sent events. Each write has its own deadline
// (the listener's write timeout would cut a long stream), so a page that
// stopped reading ends the stream instead of holding it.
type eventStream struct {
	mu sync.Mutex
	w  http.ResponseWriter
	rc *http.ResponseController
	id int
}

// eventWriteTimeout bounds one event's write to a slow or gone browser.
const eventWriteTimeout = 10 * time.Second

func newEventStream(w http.ResponseWriter) (*eventStream, error) {
	rc := http.NewResponseController(w)
	if err := rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return nil, err
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return nil, fmt.Errorf("console: event stream: %w", err)
	}
	return &eventStream{w: w, rc: rc}, nil
}

func (e *eventStream) send(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	_ = e.rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout))
	e.id++
	if _, err := fmt.Fprintf(e.w, "id: %s\nevent: %s\ndata: %s\n\n", strconv.Itoa(e.id), name, b); err != nil {
		return err
	}
	return e.rc.Flush()
}
